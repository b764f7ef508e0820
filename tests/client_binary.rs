//! The two binaries together, as a person uses them: a server, and two `actor-chat-client`
//! processes driven through piped stdin, checked by what each prints.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{self, Receiver},
};

use common::process::{wait_with_deadline, ServerProcess, PROCESS_TIMEOUT};

/// A running client whose stdout is read line by line.
struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
}

/// The client binary, logging in as `name` to `server`.
fn client(name: &str, server: SocketAddr) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_actor-chat-client"));
    command.args([name, "--server", &server.to_string()]);
    command
}

/// Runs a client that must fail at once; returns what it printed on stderr.
fn run_and_fail(name: &str, server: SocketAddr) -> String {
    let output = client(name, server)
        .stdin(Stdio::null())
        .output()
        .expect("run the client");
    assert_eq!(output.status.code(), Some(1));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

impl ClientProcess {
    fn start(server: SocketAddr, name: &str) -> ClientProcess {
        let mut child = client(name, server)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the client binary");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        ClientProcess {
            child,
            stdin,
            stdout: received,
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to the client");
        stdin.flush().expect("flush");
    }

    /// Reads printed lines until `expected`, failing on a timeout or end of output.
    fn expect(&self, expected: &str) {
        let mut seen = Vec::new();
        loop {
            match self.stdout.recv_timeout(PROCESS_TIMEOUT) {
                Ok(line) if line == expected => return,
                Ok(line) => seen.push(line),
                Err(_) => panic!("never printed {expected:?}; printed {seen:?}"),
            }
        }
    }

    /// Closes stdin: end of input, which makes the client say `exit`.
    fn end_input(&mut self) {
        drop(self.stdin.take());
    }

    /// Closes stdin (end of input) and returns the exit code.
    fn finish(mut self) -> Option<i32> {
        self.end_input();
        match wait_with_deadline(&mut self.child, PROCESS_TIMEOUT) {
            Some(status) => status.code(),
            None => panic!("the client did not exit after end of input"),
        }
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_clients_chat_directly_and_in_a_room_and_leave() {
    let server = ServerProcess::start("config/default.toml");
    let mut bob = ClientProcess::start(server.addr, "bob");
    bob.expect("* logged in as bob");
    let mut alice = ClientProcess::start(server.addr, "alice");
    alice.expect("* logged in as alice");
    alice.expect("* bob is online");
    bob.expect("* alice is online");

    // As in the original, a plain line goes to whoever came online last.
    alice.type_line("hello bob");
    bob.expect("<alice> hello bob");
    bob.type_line("/msg alice hi | alice");
    alice.expect("<bob> hi | alice");

    bob.type_line("/join #rust");
    bob.expect("* you joined #rust (members: bob)");
    alice.type_line("/join rust");
    alice.expect("* you joined #rust (members: alice, bob)");
    bob.expect("* alice joined #rust");
    alice.type_line("/to #rust");
    alice.type_line("hello room");
    bob.expect("[#rust] <alice> hello room");
    bob.type_line("/who");
    bob.expect("users: alice, bob");
    bob.type_line("/msg carol are you there?");
    bob.expect("! no such user: carol");

    // End of input: the client says exit, waits for bye, and exits 0.
    assert_eq!(alice.finish(), Some(0));
    bob.expect("* alice left #rust");
    bob.expect("* alice left");
    assert_eq!(bob.finish(), Some(0));
}

#[test]
fn piped_input_goes_to_the_peer_announced_at_login() {
    let server = ServerProcess::start("config/default.toml");
    let alice = ClientProcess::start(server.addr, "alice");
    alice.expect("* logged in as alice");
    // The peer list arrives with the login reply and the typed line right after; whichever the
    // client sees first must not matter. Repeated because losing that race is not certain.
    for i in 0..10 {
        let bob = format!("bob{i}");
        let mut client = ClientProcess::start(server.addr, &bob);
        client.type_line("hello alice");
        assert_eq!(client.finish(), Some(0), "{bob} did not leave cleanly");
        alice.expect(&format!("<{bob}> hello alice"));
        // Gone from the online list before the next one logs in, so alice stays the only
        // (hence the default) peer.
        alice.expect(&format!("* {bob} left"));
    }
}

#[test]
fn a_taken_name_or_a_missing_server_is_one_sentence_and_exit_1() {
    let server = ServerProcess::start("config/default.toml");
    let bob = ClientProcess::start(server.addr, "bob");
    bob.expect("* logged in as bob");

    let stderr = run_and_fail("BOB", server.addr);
    assert_eq!(stderr.trim(), "the name \"BOB\" is already taken");

    // A port nobody listens on: bind one, note it, close it.
    let free = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = free.local_addr().expect("address");
    drop(free);
    let stderr = run_and_fail("alice", addr);
    assert!(
        stderr.starts_with(&format!("cannot connect to {addr}")),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"));
    drop(bob);
}

/// A `bye|REASON` that answers our `exit` is not a goodbye: the server closed on its own (here,
/// shutting down) and may have dropped what we sent, so the client says why and exits 1. A
/// scripted server makes the otherwise narrow race certain.
#[test]
fn a_quit_answered_by_a_server_side_close_says_why_and_exits_1() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("bound address");
    let server = std::thread::spawn(move || -> std::io::Result<Vec<String>> {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(PROCESS_TIMEOUT))?;
        let mut lines = BufReader::new(stream.try_clone()?).lines();
        let mut heard = Vec::new();
        for answer in ["ok|login|alice\n", "bye|shutdown\n"] {
            heard.push(lines.next().unwrap_or(Ok(String::new()))?);
            stream.write_all(answer.as_bytes())?;
        }
        Ok(heard)
    });

    let mut alice = ClientProcess::start(addr, "alice");
    alice.expect("* logged in as alice");
    alice.end_input();
    alice.expect("* server closed the connection: shutdown");
    assert_eq!(alice.finish(), Some(1));
    let heard = server
        .join()
        .expect("the scripted server")
        .expect("its socket");
    assert_eq!(heard, ["login|alice", "exit"]);
}

/// The case, piped: alice talks to bob, carol logs in, and alice's next plain line
/// still goes to bob. When bob logs out the target is cleared, and a newcomer who takes the
/// name does not get alice's next plain line.
#[test]
fn a_used_target_survives_logins_and_is_cleared_when_it_logs_out() {
    let server = ServerProcess::start("config/default.toml");
    let bob = ClientProcess::start(server.addr, "bob");
    bob.expect("* logged in as bob");
    let mut alice = ClientProcess::start(server.addr, "alice");
    alice.expect("* bob is online");
    alice.type_line("hello bob");
    bob.expect("<alice> hello bob");

    let mut carol = ClientProcess::start(server.addr, "carol");
    carol.expect("* logged in as carol");
    alice.expect("* carol is online");
    alice.type_line("still you?");
    bob.expect("<alice> still you?");
    // carol got nothing from alice: her first line from alice is this one.
    alice.type_line("/msg carol marker");
    carol.expect("<alice> marker");
    carol.end_input();

    assert_eq!(bob.finish(), Some(0));
    alice.expect("* bob left");
    alice.expect("* plain lines go to no one now: choose with /to NAME or /to #ROOM");
    let new_bob = ClientProcess::start(server.addr, "bob");
    new_bob.expect("* logged in as bob");
    alice.expect("* bob is online");
    alice.type_line("are you still there?");
    alice.expect("! no one to talk to yet: use /to NAME or /msg NAME TEXT");
    alice.type_line("/msg bob marker");
    new_bob.expect("<alice> marker");
    drop(new_bob);
    assert_eq!(alice.finish(), Some(0));
}

/// `/to` asks the server: a user who is not online is refused at once, and a room is shown
/// (and talked to) in its own spelling.
#[test]
fn to_checks_with_the_server_and_uses_its_spelling() {
    let server = ServerProcess::start("config/default.toml");
    let mut bob = ClientProcess::start(server.addr, "bob");
    bob.expect("* logged in as bob");
    bob.type_line("/join Rust");
    bob.expect("* you joined #Rust (members: bob)");
    let mut alice = ClientProcess::start(server.addr, "alice");
    alice.expect("* logged in as alice");

    alice.type_line("/to carol");
    alice.expect("! carol is not online (/who lists who is)");
    alice.type_line("/to #rust");
    alice.expect("! you are not in #Rust: /join Rust first");
    alice.type_line("/to #go");
    alice.expect("! there is no room #go");
    alice.type_line("/join rust");
    alice.expect("* you joined #Rust (members: alice, bob)");
    // The line right after `/to` waits for its answer, so it goes to the room.
    alice.type_line("/to #rust");
    alice.type_line("hello room");
    alice.expect("* talking to #Rust");
    bob.expect("[#Rust] <alice> hello room");
    alice.type_line("/to BOB");
    alice.expect("* talking to bob");
    alice.type_line("/to");
    alice.expect("* plain lines go to bob");
    assert_eq!(alice.finish(), Some(0));
    assert_eq!(bob.finish(), Some(0));
}

#[test]
fn names_lists_a_rooms_members() {
    let server = ServerProcess::start("config/default.toml");
    let mut bob = ClientProcess::start(server.addr, "bob");
    bob.type_line("/join Rust");
    bob.expect("* you joined #Rust (members: bob)");
    let mut alice = ClientProcess::start(server.addr, "alice");
    alice.expect("* logged in as alice");
    // Members and others alike may ask.
    alice.type_line("/names rust");
    alice.expect("* members of #Rust: bob");
    alice.type_line("/join #RUST");
    alice.expect("* you joined #Rust (members: alice, bob)");
    alice.type_line("/names #rust");
    alice.expect("* members of #Rust: alice, bob");
    alice.type_line("/names go");
    alice.expect("! there is no room #go");
    alice.type_line("/join bad name");
    alice.expect(
        "! \"bad name\" is not a valid room name: it contains a space (use 1 to 32 of A-Z a-z 0-9 _ . -)",
    );
    assert_eq!(alice.finish(), Some(0));
    assert_eq!(bob.finish(), Some(0));
}

/// Piped mode is for scripts: a lost connection ends the client with exit 1, and it does not
/// come back on its own.
#[test]
fn piped_mode_does_not_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("bound address");
    let mut alice = ClientProcess::start(addr, "alice");
    {
        let (mut stream, _) = listener.accept().expect("the client connects");
        stream
            .set_read_timeout(Some(PROCESS_TIMEOUT))
            .expect("set a read timeout");
        let mut lines = BufReader::new(stream.try_clone().expect("clone")).lines();
        assert_eq!(
            lines.next().and_then(Result::ok).as_deref(),
            Some("login|alice")
        );
        stream
            .write_all(b"ok|login|alice\n")
            .expect("answer the login");
        alice.expect("* logged in as alice");
        // The connection ends here, without a goodbye.
    }
    match wait_with_deadline(&mut alice.child, PROCESS_TIMEOUT) {
        Some(status) => assert_eq!(status.code(), Some(1)),
        None => panic!("the client did not exit after losing the connection"),
    }
    listener.set_nonblocking(true).expect("non-blocking");
    assert!(
        listener.accept().is_err(),
        "the piped client connected again"
    );
}

#[test]
fn help_says_what_the_client_is_and_its_defaults() {
    let output = Command::new(env!("CARGO_BIN_EXE_actor-chat-client"))
        .arg("--help")
        .output()
        .expect("run the client binary");
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.starts_with("actor-chat-client: the terminal client"),
        "{help}"
    );
    assert!(help.contains("--server 127.0.0.1:9999"), "{help}");
    assert!(help.contains("Exit status"), "{help}");
    assert!(!help.contains(env!("CARGO_PKG_DESCRIPTION")), "{help}");
}
