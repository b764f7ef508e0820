//! `actor-chat-client` on a pseudo-terminal, as a person at a keyboard runs it: rustyline owns
//! the terminal, and what arrives on it is checked by what a peer receives and by what the
//! terminal shows. Every wait is bounded; nothing sleeps to synchronise.

#![cfg(unix)]

mod common;

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::OwnedFd,
    process::{Child, Command},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::Instant,
};

use common::process::{wait_with_deadline, ServerProcess, PROCESS_TIMEOUT};
use nix::{
    pty::{openpty, Winsize},
    sys::termios::{tcgetattr, LocalFlags},
};

/// The client binary with its stdin, stdout and stderr on the slave side of a pseudo-terminal;
/// the test holds the master side, as a terminal emulator would.
struct TerminalClient {
    child: Child,
    /// Where keys are written.
    keys: File,
    /// Kept open to read the terminal's mode after the client exits.
    slave: OwnedFd,
    /// Everything the client has written to the terminal, as read so far.
    screen: Vec<u8>,
    /// How far `wait_for` has looked: each wait finds text that came after the last one.
    seen: usize,
    chunks: Receiver<Vec<u8>>,
}

impl TerminalClient {
    fn start(server: SocketAddr, name: &str) -> TerminalClient {
        let size = Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(&size, None).expect("open a pseudo-terminal");
        let slave_end = |what| pty.slave.try_clone().expect(what);
        let child = Command::new(env!("CARGO_BIN_EXE_actor-chat-client"))
            .args([name, "--server", &server.to_string()])
            // A terminal rustyline drives in raw mode, whatever the test runner's TERM is.
            .env("TERM", "xterm")
            .stdin(slave_end("slave for stdin"))
            .stdout(slave_end("slave for stdout"))
            .stderr(slave_end("slave for stderr"))
            .spawn()
            .expect("start the client binary");
        let keys = File::from(pty.master);
        let mut screen = keys.try_clone().expect("a second handle on the master");
        let (sender, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with an error (EIO) once no one holds the slave side any more.
            while let Ok(n @ 1..) = screen.read(&mut buf) {
                if sender.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        TerminalClient {
            child,
            keys,
            slave: pty.slave,
            screen: Vec::new(),
            seen: 0,
            chunks,
        }
    }

    /// Reads the terminal until `text` appears after what earlier waits found; fails the test
    /// if it does not within [`PROCESS_TIMEOUT`].
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            let unseen = &self.screen[self.seen..];
            if let Some(at) = unseen
                .windows(text.len())
                .position(|window| window == text.as_bytes())
            {
                self.seen += at + text.len();
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.screen.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "the terminal never showed {text:?}; it showed {:?}",
                    String::from_utf8_lossy(&self.screen)
                ),
            }
        }
    }

    /// Waits for the prompt drawn after everything shown so far: rustyline is then reading keys
    /// in raw mode.
    fn wait_for_prompt(&mut self) {
        self.wait_for("> ");
    }

    /// Writes `keys` to the terminal in a single write, as a paste (or a fast typist's burst)
    /// arrives.
    fn paste(&mut self, keys: &str) {
        let written = self
            .keys
            .write(keys.as_bytes())
            .expect("write to the terminal");
        assert_eq!(written, keys.len(), "the keys went in one write");
    }

    /// Waits (bounded) for the client to exit and returns its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        match wait_with_deadline(&mut self.child, PROCESS_TIMEOUT) {
            Some(status) => status.code(),
            None => panic!("the client did not exit"),
        }
    }

    /// Whether the terminal is back in the mode it started in (line editing and echo on), as
    /// rustyline leaves it when `readline` returns.
    fn is_cooked(&self) -> bool {
        let mode = tcgetattr(&self.slave).expect("read the terminal's mode");
        mode.local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO)
    }
}

impl Drop for TerminalClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw protocol peer that answers `ping`; every read has a deadline.
struct Peer {
    stream: TcpStream,
    lines: std::io::Lines<BufReader<TcpStream>>,
}

impl Peer {
    fn login(server: SocketAddr, name: &str) -> Peer {
        let stream = TcpStream::connect(server).expect("connect to the server");
        let reader = stream.try_clone().expect("a second handle on the socket");
        let mut peer = Peer {
            stream,
            lines: BufReader::new(reader).lines(),
        };
        peer.send(&format!("login|{name}"));
        peer.expect(&format!("ok|login|{name}"));
        peer
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stream, "{line}").expect("write to the server");
    }

    /// Reads lines until `expected`, failing if it does not come within [`PROCESS_TIMEOUT`].
    fn expect(&mut self, expected: &str) {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // A zero timeout is refused; the read then fails at once, as it should.
            let left = left.max(std::time::Duration::from_millis(1));
            self.stream
                .set_read_timeout(Some(left))
                .expect("set a read timeout");
            match self.lines.next() {
                Some(Ok(line)) if line == expected => return,
                Some(Ok(line)) if line == "ping" => self.send("pong"),
                Some(Ok(line)) => seen.push(line),
                other => panic!("never received {expected:?} (got {other:?}); received {seen:?}"),
            }
        }
    }
}

/// With rustyline 17, of several keys arriving in one read only the first was handled until
/// the next key press (kkawakam/rustyline#976): a paste showed `> h` and sent nothing.
#[test]
fn a_line_pasted_in_one_write_is_sent_whole() {
    let server = ServerProcess::start("config/default.toml");
    let mut bob = Peer::login(server.addr, "bob");
    let mut alice = TerminalClient::start(server.addr, "alice");
    alice.wait_for("* logged in as alice");
    // bob is the only one online, so plain lines go to him.
    alice.wait_for("* bob is online");
    bob.expect("login|alice");
    alice.wait_for_prompt();

    alice.paste("hello pasted\r");
    // Echoed whole, then sent whole.
    alice.wait_for("hello pasted");
    bob.expect("talk|alice|hello pasted");

    // Leaving from the prompt: `exit`, `bye`, exit 0, and the terminal as it was.
    alice.paste("/quit\r");
    assert_eq!(alice.exit_code(), Some(0));
    assert!(
        alice.is_cooked(),
        "the client left the terminal in raw mode"
    );
    bob.expect("logout|alice");
}

/// The server ending the session while the user is at the prompt: the pending `readline` must
/// give the terminal back, and the client says why and exits 1.
#[test]
fn the_server_closing_the_session_ends_the_prompt_and_restores_the_terminal() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("bound address");
    let (go, close) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || -> std::io::Result<Vec<String>> {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(PROCESS_TIMEOUT))?;
        let mut lines = BufReader::new(stream.try_clone()?).lines();
        let login = lines.next().unwrap_or(Ok(String::new()))?;
        stream.write_all(b"ok|login|alice\ntalk|bob|last words\n")?;
        // Closed once the test has seen the prompt, or when the test gives up.
        let _ = close.recv_timeout(PROCESS_TIMEOUT);
        stream.write_all(b"bye|shutdown\n")?;
        Ok(vec![login])
    });

    let mut alice = TerminalClient::start(addr, "alice");
    alice.wait_for("* logged in as alice");
    alice.wait_for("<bob> last words");
    alice.wait_for_prompt();
    go.send(()).expect("the scripted server is waiting");

    alice.wait_for("* server closed the connection: shutdown");
    assert_eq!(alice.exit_code(), Some(1));
    assert!(
        alice.is_cooked(),
        "the client left the terminal in raw mode"
    );
    let heard = server
        .join()
        .expect("the scripted server")
        .expect("its socket");
    assert_eq!(heard, ["login|alice"]);
}
