//! `actor-chat-client` on a pseudo-terminal, as a person at a keyboard runs it: rustyline owns
//! the terminal, and what arrives on it is checked by what a peer receives and by what the
//! terminal shows. Every wait is bounded; nothing sleeps to synchronise.

#![cfg(unix)]

mod common;

use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::OwnedFd,
    process::{Child, Command},
    sync::mpsc,
    time::Instant,
};

use common::{
    process::{wait_with_deadline, ServerProcess, PROCESS_TIMEOUT},
    screen::Screen,
};
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
    /// What the client has written to the terminal.
    screen: Screen,
}

impl TerminalClient {
    fn start(server: SocketAddr, name: &str) -> TerminalClient {
        Self::start_with(server, name, |_| {})
    }

    /// [`TerminalClient::start`], with `adjust` changing the command first (its environment).
    fn start_with(
        server: SocketAddr,
        name: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> TerminalClient {
        let size = Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(&size, None).expect("open a pseudo-terminal");
        let slave_end = |what| pty.slave.try_clone().expect(what);
        let mut command = Command::new(env!("CARGO_BIN_EXE_actor-chat-client"));
        command
            .args([name, "--server", &server.to_string()])
            // A terminal rustyline drives in raw mode, whatever the test runner's TERM is.
            .env("TERM", "xterm");
        adjust(&mut command);
        let child = command
            .stdin(slave_end("slave for stdin"))
            .stdout(slave_end("slave for stdout"))
            .stderr(slave_end("slave for stderr"))
            .spawn()
            .expect("start the client binary");
        let keys = File::from(pty.master);
        let screen = Screen::read(keys.try_clone().expect("a second handle on the master"));
        TerminalClient {
            child,
            keys,
            slave: pty.slave,
            screen,
        }
    }

    /// Reads the terminal until `text` appears after what earlier waits found; fails the test
    /// if it does not within [`PROCESS_TIMEOUT`].
    fn wait_for(&mut self, text: &str) {
        self.wait_for_after(text);
    }

    /// [`TerminalClient::wait_for`], returning what the terminal showed between the end of
    /// the previous wait and `text`.
    fn wait_for_after(&mut self, text: &str) -> String {
        self.screen.wait_for(text)
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

    /// Whether anything the terminal has shown so far (read by earlier waits, or waiting to
    /// be read) contains `text`.
    fn screen_shows(&mut self, text: &str) -> bool {
        self.screen.shows(text)
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

    /// The next line that is not a `ping` (which is answered), within [`PROCESS_TIMEOUT`].
    fn next_line(&mut self) -> String {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let left = left.max(std::time::Duration::from_millis(1));
            self.stream
                .set_read_timeout(Some(left))
                .expect("set a read timeout");
            match self.lines.next() {
                Some(Ok(line)) if line == "ping" => self.send("pong"),
                Some(Ok(line)) => return line,
                other => panic!("no line came (got {other:?})"),
            }
        }
    }

    /// Expects these lines next, in this order, with nothing between them.
    fn expect_next(&mut self, expected: &[&str]) {
        let got: Vec<String> = expected.iter().map(|_| self.next_line()).collect();
        assert_eq!(got, expected);
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
    // bob is the only one online, so plain lines go to him, as the prompt shows.
    alice.wait_for("* bob is online");
    bob.expect("login|alice");
    alice.wait_for("bob> ");

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

/// The server ending the session while the user is at the prompt, in a way the client does
/// not come back from (`bye|flood`): the pending `readline` must give the terminal back, and
/// the client says why and exits 1.
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
        stream.write_all(b"bye|flood\n")?;
        Ok(vec![login])
    });

    let mut alice = TerminalClient::start(addr, "alice");
    alice.wait_for("* logged in as alice");
    alice.wait_for("<bob> last words");
    alice.wait_for_prompt();
    go.send(()).expect("the scripted server is waiting");

    alice.wait_for("* server closed the connection: flood");
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

/// A scripted server's end of one connection; every read has a timeout.
struct Scripted {
    stream: TcpStream,
    lines: std::io::Lines<BufReader<TcpStream>>,
}

impl Scripted {
    fn accept(listener: &TcpListener) -> std::io::Result<Scripted> {
        let (stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(PROCESS_TIMEOUT))?;
        let lines = BufReader::new(stream.try_clone()?).lines();
        Ok(Scripted { stream, lines })
    }

    fn line(&mut self) -> std::io::Result<String> {
        self.lines.next().unwrap_or(Ok(String::new()))
    }

    fn send(&mut self, lines: &str) -> std::io::Result<()> {
        self.stream.write_all(format!("{lines}\n").as_bytes())
    }
}

/// bob online, and alice at a terminal whose plain lines go to him.
fn alice_and_bob(server: &ServerProcess) -> (TerminalClient, Peer) {
    let mut bob = Peer::login(server.addr, "bob");
    let mut alice = TerminalClient::start(server.addr, "alice");
    alice.wait_for("* logged in as alice");
    alice.wait_for("* bob is online");
    bob.expect("login|alice");
    alice.wait_for("bob> ");
    (alice, bob)
}

/// A bracketed paste reaches the client as one line with line breaks inside. Sent as it was,
/// `hello⏎join|secret` put `join|secret` on the wire as a command of its own: each pasted line
/// must be its own message, to the same place.
#[test]
fn a_bracketed_paste_of_several_lines_is_one_message_per_line() {
    let server = ServerProcess::start("config/default.toml");
    let (mut alice, mut bob) = alice_and_bob(&server);

    alice.paste("\x1b[200~hello\njoin|secret\x1b[201~\r");
    bob.expect_next(&["talk|alice|hello", "talk|alice|join|secret"]);
    alice.paste("\x1b[200~p1 first\r\np2 second\x1b[201~\r");
    bob.expect_next(&["talk|alice|p1 first", "talk|alice|p2 second"]);
    alice.paste("\x1b[200~/msg bob a\nb\x1b[201~\r");
    bob.expect_next(&["talk|alice|a", "talk|alice|b"]);
    // alice never joined #secret: there is no such room.
    bob.send("names|secret");
    bob.expect_next(&["error|no-such-room|secret"]);

    alice.paste("/quit\r");
    assert_eq!(alice.exit_code(), Some(0));
}

/// Keys pasted without bracket marking (`tmux send-keys -l $'line1\nline2\nline3\n'`) are
/// several lines in one read: each is sent, in order, once. With rustyline dropping its read
/// buffer at the end of each `readline`, only `line1` arrived.
#[test]
fn lines_pasted_without_brackets_are_each_sent_once_in_order() {
    let server = ServerProcess::start("config/default.toml");
    let (mut alice, mut bob) = alice_and_bob(&server);

    alice.paste("line1\nline2\nline3\n");
    bob.expect_next(&["talk|alice|line1", "talk|alice|line2", "talk|alice|line3"]);
    alice.paste("/msg bob end\r");
    bob.expect_next(&["talk|alice|end"]);
    // A command in the paste takes effect before the next line is read: `/to` is answered
    // first, so the line after it goes to the room.
    bob.send("join|Rust");
    bob.expect_next(&["ok|join|Rust", "members|Rust|bob"]);
    alice.paste("/join rust\n/to #rust\nhello room\n");
    bob.expect_next(&["join|Rust|alice", "say|Rust|alice|hello room"]);
    alice.wait_for("#Rust> ");

    alice.paste("/quit\r");
    assert_eq!(alice.exit_code(), Some(0));
}

/// The prompt shows where plain lines go, and changes while a line is being typed when an
/// event changes that; the typed text stays.
#[test]
fn the_prompt_shows_the_target_and_keeps_it_true() {
    let server = ServerProcess::start("config/default.toml");
    let mut alice = TerminalClient::start(server.addr, "alice");
    alice.wait_for("* logged in as alice");
    alice.wait_for_prompt();
    alice.paste("hel");
    alice.wait_for("hel");

    let mut bob = Peer::login(server.addr, "bob");
    alice.wait_for("* bob is online");
    alice.wait_for("bob> hel");
    alice.paste("lo\r");
    bob.expect("talk|alice|hello");

    // Used now: carol logging in does not take it.
    let carol = Peer::login(server.addr, "carol");
    alice.wait_for("* carol is online");
    alice.paste("again\r");
    bob.expect_next(&["login|carol", "talk|alice|again"]);

    // bob leaving clears it, and says so.
    drop(bob);
    alice.wait_for("* bob left");
    alice.wait_for("* plain lines go to no one now: choose with /to NAME or /to #ROOM");
    let mut new_bob = Peer::login(server.addr, "bob");
    alice.wait_for("* bob is online");
    alice.paste("anyone?\r");
    alice.wait_for("! no one to talk to yet: use /to NAME or /msg NAME TEXT");
    alice.paste("/msg bob marker\r");
    new_bob.expect("talk|alice|marker");
    drop(carol);

    alice.paste("/quit\r");
    assert_eq!(alice.exit_code(), Some(0));
}

/// Ctrl-C on a half-typed line clears it, as in a shell; on an empty line it leaves.
#[test]
fn ctrl_c_clears_the_line_and_on_an_empty_line_quits() {
    let server = ServerProcess::start("config/default.toml");
    let (mut alice, mut bob) = alice_and_bob(&server);

    alice.paste("half-typed\x03");
    alice.paste("hello\r");
    bob.expect_next(&["talk|alice|hello"]);

    // The prompt of the next `readline`, drawn after the line as typed: a prompt found
    // earlier (the one redrawn after the first Ctrl-C) could be matched while the client is
    // between two `readline`s, where the terminal is not in raw mode and a Ctrl-C is a SIGINT
    // the client ignores, so the key would be lost.
    alice.wait_for("hello");
    alice.wait_for_prompt();
    alice.paste("\x03");
    assert_eq!(alice.exit_code(), Some(0));
    assert!(
        alice.is_cooked(),
        "the client left the terminal in raw mode"
    );
    bob.expect_next(&["logout|alice"]);
}

/// `HH:MM` for a moment `offset` seconds east of UTC.
fn clock(at: std::time::SystemTime, offset: u64) -> String {
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + offset;
    format!("{:02}:{:02}", secs / 3600 % 24, secs / 60 % 60)
}

/// On a terminal, incoming lines carry the local time they arrived.
#[test]
fn incoming_lines_on_a_terminal_carry_the_local_time() {
    let server = ServerProcess::start("config/default.toml");
    let mut bob = Peer::login(server.addr, "bob");
    // A POSIX TZ string: 5 h 30 min east of UTC, whatever this machine's own zone is.
    let mut alice = TerminalClient::start_with(server.addr, "alice", |command| {
        command.env("TZ", "IST-5:30");
    });
    alice.wait_for("* logged in as alice");
    alice.wait_for("* bob is online");
    bob.expect("login|alice");

    let before = std::time::SystemTime::now();
    bob.send("talk|alice|hi");
    let shown = alice.wait_for_after("<bob> hi");
    let after = std::time::SystemTime::now();
    let stamps = [clock(before, 19_800), clock(after, 19_800)];
    assert!(
        stamps
            .iter()
            .any(|stamp| shown.ends_with(&format!("[{stamp}] "))),
        "expected one of {stamps:?} before the line, got {shown:?}"
    );
    alice.paste("/quit\r");
    assert_eq!(alice.exit_code(), Some(0));
}

/// After `bye|shutdown` or a lost connection, the terminal client waits (1 s), connects and
/// logs in again, and rejoins its rooms; a login refused on the way back ends it with one
/// sentence and exit 1. (The first wait is a real second: the test pays it twice.)
#[test]
fn the_terminal_client_reconnects_and_rejoins_its_rooms() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("bound address");
    let (go, next) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || -> std::io::Result<Vec<String>> {
        let mut heard = Vec::new();
        // The first connection: a login and a join, then the server shuts down.
        let mut first = Scripted::accept(&listener)?;
        heard.push(first.line()?);
        first.send("ok|login|alice")?;
        heard.push(first.line()?);
        first.send("ok|join|rust\nmembers|rust|alice")?;
        let _ = next.recv_timeout(PROCESS_TIMEOUT);
        first.send("bye|shutdown")?;
        drop(first);
        // The client comes back on its own, logs in and rejoins; then the connection is lost.
        let mut second = Scripted::accept(&listener)?;
        heard.push(second.line()?);
        second.send("ok|login|alice")?;
        heard.push(second.line()?);
        second.send("ok|join|Rust\nmembers|Rust|alice,bob")?;
        let _ = next.recv_timeout(PROCESS_TIMEOUT);
        drop(second);
        // Meanwhile someone took the name.
        let mut third = Scripted::accept(&listener)?;
        heard.push(third.line()?);
        third.send("error|name-taken|alice")?;
        Ok(heard)
    });

    let mut alice = TerminalClient::start(addr, "alice");
    alice.wait_for("* logged in as alice");
    alice.wait_for_prompt();
    alice.paste("/join rust\r");
    alice.wait_for("* you joined #rust (members: alice)");
    go.send(()).expect("the scripted server is waiting");

    alice.wait_for("* server closed the connection: shutdown");
    alice.wait_for("* reconnecting in 1 s…");
    alice.wait_for("* logged in as alice");
    alice.wait_for("* you joined #Rust (members: alice, bob)");
    go.send(()).expect("the scripted server is waiting");

    alice.wait_for("* reconnecting in 1 s…");
    alice
        .wait_for("could not log in again after reconnecting: the name \"alice\" is already taken");
    assert_eq!(alice.exit_code(), Some(1));
    assert!(
        alice.is_cooked(),
        "the client left the terminal in raw mode"
    );
    let heard = server
        .join()
        .expect("the scripted server")
        .expect("its sockets");
    assert_eq!(
        heard,
        [
            "login|alice",
            "join|rust",
            "login|alice",
            "join|rust",
            "login|alice"
        ]
    );
}

/// A user who asked to leave has left: a `bye|shutdown` in answer to `/quit` is reported (exit
/// 1, since the server may have dropped what was sent last) but not reconnected from.
#[test]
fn a_quit_answered_by_a_shutdown_is_not_reconnected_from() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("bound address");
    let server = std::thread::spawn(move || -> std::io::Result<(Vec<String>, TcpListener)> {
        let mut session = Scripted::accept(&listener)?;
        let mut heard = vec![session.line()?];
        session.send("ok|login|alice")?;
        heard.push(session.line()?);
        session.send("bye|shutdown")?;
        drop(session);
        Ok((heard, listener))
    });

    let mut alice = TerminalClient::start(addr, "alice");
    alice.wait_for("* logged in as alice");
    alice.wait_for_prompt();
    alice.paste("/quit\r");
    alice.wait_for("* server closed the connection: shutdown");
    assert_eq!(alice.exit_code(), Some(1));
    assert!(!alice.screen_shows("reconnecting"), "the client came back");
    let (heard, listener) = server
        .join()
        .expect("the scripted server")
        .expect("its socket");
    assert_eq!(heard, ["login|alice", "exit"]);
    // The client has exited: had it tried to come back, its connection would be waiting.
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the client connected again"
    );
}
