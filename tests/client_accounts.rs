//! The client binary with accounts, against the server binary keeping its accounts in a SQLite
//! file in a temporary folder: `--password-stdin`, a wrong or missing password (one sentence,
//! exit status 1), and `/register` and `/passwd` with their passwords piped in.

mod common;

use common::temp::TempDir;

use std::{
    io::{Read, Write},
    process::{Command, Output, Stdio},
};

use common::{
    process::{wait_with_deadline, ServerProcess, PROCESS_TIMEOUT},
    Client,
};

fn server(dir: &TempDir) -> ServerProcess {
    let mut command = ServerProcess::with_store("config/default.toml", &dir.url());
    command.env("CHAT__SERVER__PRESENCE", "none");
    ServerProcess::spawn(command)
}

/// Registers `name` over a raw connection and logs out again.
async fn register(server: &ServerProcess, name: &str, password: &str) {
    let mut client = Client::connect(server.addr).await;
    client.send(&format!("register|{name}|{password}")).await;
    client.expect(&format!("ok|login|{name}")).await;
    client.send("exit").await;
    assert_eq!(client.expect_closed().await, ["bye"]);
}

/// Runs the client as `name` with `args`, `stdin` piped in whole; bounded in time.
fn run_client(server: &ServerProcess, name: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_actor-chat-client"))
        .args([name, "--server", &server.addr.to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client binary");
    let mut input = child.stdin.take().expect("stdin is piped");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    // The output is a few lines: it fits in the pipes while we wait.
    let status = wait_with_deadline(&mut child, PROCESS_TIMEOUT).expect("the client finishes");
    let read = |pipe: Option<&mut dyn Read>| {
        let mut bytes = Vec::new();
        if let Some(pipe) = pipe {
            pipe.read_to_end(&mut bytes)
                .expect("read the client's output");
        }
        bytes
    };
    let stdout = read(child.stdout.as_mut().map(|p| p as &mut dyn Read));
    let stderr = read(child.stderr.as_mut().map(|p| p as &mut dyn Read));
    Output {
        status,
        stdout,
        stderr,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end().to_owned()
}

#[actix::test]
async fn password_stdin_logs_in_to_the_account_and_the_rest_of_stdin_is_chat() {
    let dir = TempDir::new("stdin");
    let server = server(&dir);
    register(&server, "alice", "correct horse").await;
    let output = run_client(
        &server,
        "alice",
        &["--password-stdin"],
        "correct horse\n/who\n",
    );
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["* logged in as alice", "users: alice"]
    );
    assert!(!stdout.contains("horse"));
}

#[actix::test]
async fn a_wrong_or_missing_password_is_one_sentence_and_exit_1() {
    let dir = TempDir::new("wrong");
    let server = server(&dir);
    register(&server, "alice", "correct horse").await;

    let output = run_client(
        &server,
        "alice",
        &["--password-stdin"],
        "wrong horse\n/who\n",
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stderr), "wrong password for \"alice\"");
    assert_eq!(text(&output.stdout), "");

    // Piped, with no password given: nothing to ask on.
    let output = run_client(&server, "alice", &[], "/who\n");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr),
        "the name \"alice\" is registered and needs its password: give it with \
         --password-stdin, or run the client on a terminal to be asked for it"
    );

    let output = run_client(&server, "alice", &["--password-stdin"], "");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr),
        "--password-stdin: no password on the first line of stdin"
    );
}

#[actix::test]
async fn register_and_passwd_take_their_passwords_from_the_lines_after_them() {
    let dir = TempDir::new("register");
    let server = server(&dir);
    let output = run_client(
        &server,
        "carol",
        &[],
        "/register\nfirst password\nfirst password\n\
         /passwd\nfirst password\nsecond password\nsecond password\n\
         /passwd\nfirst password\nthird password\nthird passwordd\n",
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    // The client's own note does not wait for the server's answers to the lines before it.
    let stdout = text(&output.stdout);
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "! the two passwords differ: nothing was sent",
            "* logged in as carol",
            "* logged in as carol",
            "* your password is changed",
        ]
    );
    assert!(!stdout.contains("password\n") && !stdout.contains("second"));

    let mut raw = Client::connect(server.addr).await;
    raw.send("login|carol").await;
    raw.expect("error|password-required|carol").await;
    raw.send("login|carol|second password").await;
    raw.expect("ok|login|carol").await;
}

/// The client on a pseudo-terminal that is its controlling terminal (as in a real session), so
/// that its password prompts, which read /dev/tty without echo, have one.
#[cfg(unix)]
mod on_a_terminal {
    use std::{fs::File, io::Write, os::unix::process::CommandExt, process::Command};

    use nix::pty::{openpty, Winsize};

    use super::{register, server, TempDir};
    use crate::common::{
        process::{wait_with_deadline, PROCESS_TIMEOUT},
        screen::Screen,
    };

    /// The terminal, and where keys are typed into it.
    struct Terminal {
        keys: File,
        screen: Screen,
    }

    impl Terminal {
        fn wait_for(&mut self, text: &str) -> String {
            self.screen.wait_for(text)
        }

        fn type_keys(&mut self, keys: &str) {
            self.keys.write_all(keys.as_bytes()).expect("type");
        }
    }

    #[actix::test]
    async fn the_password_is_asked_for_without_echo_and_so_are_passwd_s() {
        let dir = TempDir::new("terminal");
        let server = server(&dir);
        register(&server, "alice", "correct horse").await;

        let size = Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(&size, None).expect("open a pseudo-terminal");
        let slave = |what| pty.slave.try_clone().expect(what);
        let mut command = Command::new(env!("CARGO_BIN_EXE_actor-chat-client"));
        command
            .args(["alice", "--server", &server.addr.to_string()])
            .env("TERM", "xterm")
            .stdin(slave("stdin"))
            .stdout(slave("stdout"))
            .stderr(slave("stderr"));
        // SAFETY: only async-signal-safe calls between fork and exec: a new session, with
        // the pseudo-terminal on stdin as its controlling terminal.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().expect("start the client binary");
        drop(pty.slave);
        let keys = File::from(pty.master);
        let screen = Screen::read(keys.try_clone().expect("a second handle"));
        let mut terminal = Terminal { keys, screen };

        terminal.wait_for("Password for alice: ");
        terminal.type_keys("correct horse\r");
        terminal.wait_for("* logged in as alice");
        terminal.wait_for("> ");
        terminal.type_keys("/passwd\r");
        terminal.wait_for("Current password: ");
        terminal.type_keys("correct horse\r");
        terminal.wait_for("New password: ");
        terminal.type_keys("battery staple\r");
        terminal.wait_for("The same again: ");
        terminal.type_keys("battery staple\r");
        terminal.wait_for("* your password is changed");
        terminal.wait_for("> ");
        terminal.type_keys("/quit\r");
        let status = wait_with_deadline(&mut child, PROCESS_TIMEOUT).expect("the client exits");
        assert!(status.success(), "{status:?}");
        let all = terminal.screen.shown();
        assert!(
            !all.contains("horse") && !all.contains("battery"),
            "a password was echoed: {all:?}"
        );
    }
}
