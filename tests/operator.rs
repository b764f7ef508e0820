//! What an operator meets in the first hour: the server's `--help`, its advice when the
//! descriptor limit is too low for `server.max_connections`, and the systemd unit in `deploy/`.

mod common;

use std::{
    io::Read,
    net::TcpListener,
    process::{Command, Stdio},
};

use common::process::{wait_with_deadline, ServerProcess, PROCESS_TIMEOUT};

/// The package description, which every binary's `--help` used to print as its first line.
const PACKAGE_DESCRIPTION: &str = env!("CARGO_PKG_DESCRIPTION");

/// Runs `command` to its end (killing it past [`PROCESS_TIMEOUT`]) and returns its exit code,
/// stdout and stderr.
fn run(command: &mut Command) -> (Option<i32>, String, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    let status = wait_with_deadline(&mut child, PROCESS_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    // The child has exited, so both pipes end; what they hold is small.
    let mut stdout = String::new();
    let mut stderr = String::new();
    let _ = child
        .stdout
        .take()
        .map(|mut out| out.read_to_string(&mut stdout));
    let _ = child
        .stderr
        .take()
        .map(|mut err| err.read_to_string(&mut stderr));
    let status = status
        .unwrap_or_else(|| panic!("{command:?} ran longer than {PROCESS_TIMEOUT:?}: {stderr}"));
    (status.code(), stdout, stderr)
}

#[test]
fn server_help_says_what_it_is_its_defaults_and_exit_codes() {
    let (code, help, _) = run(Command::new(env!("CARGO_BIN_EXE_actor-chat-server")).arg("--help"));
    assert_eq!(code, Some(0));
    let first = help.lines().next().unwrap_or_default();
    assert!(first.starts_with("actor-chat-server: "), "{help}");
    assert!(!help.contains(PACKAGE_DESCRIPTION), "{help}");
    for needle in [
        "--config <PATH>",
        "without --config, the built-in defaults apply",
        "CHAT__SECTION__KEY",
        "listens on 127.0.0.1:9999",
        "Exit status:",
        "  0    stopped cleanly",
        "  1    cannot listen",
        "  2    bad configuration",
        "  130  a second SIGINT or SIGTERM",
    ] {
        assert!(help.contains(needle), "{needle:?} in:\n{help}");
    }

    // The short help names the binary and its address too.
    let (code, short, _) = run(Command::new(env!("CARGO_BIN_EXE_actor-chat-server")).arg("-h"));
    assert_eq!(code, Some(0));
    assert!(short.starts_with("actor-chat-server: "), "{short}");
    assert!(short.contains("127.0.0.1:9999"), "{short}");
    assert!(!short.contains(PACKAGE_DESCRIPTION), "{short}");
}

#[test]
fn too_few_descriptors_for_max_connections_says_what_to_do() {
    // An address already taken, so that the server stops (exit 1, "cannot listen") right after
    // the start-up checks instead of running.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let mut command = ServerProcess::command("config/bench.toml");
    command.env("CHAT__SERVER__BIND", &addr);
    // SAFETY: setrlimit is async-signal-safe, as pre_exec requires (the rlimit crate's wrapper
    // only allocates for a resource the platform lacks, which NOFILE is not).
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| rlimit::setrlimit(rlimit::Resource::NOFILE, 1000, 1000));
    }
    let (code, _, log) = run(&mut command);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains(&format!("cannot listen on {addr}")), "{log}");
    // config/bench.toml: server.max_connections = 20000.
    let warning = log
        .lines()
        .find(|line| line.contains("file descriptors available"))
        .unwrap_or_else(|| panic!("no descriptor warning in:\n{log}"));
    for needle in [
        "only 1000 file descriptors available; server.max_connections is 20000",
        "at least 20064",
        "`ulimit -n 20064`",
        "LimitNOFILE=20064",
        "lower server.max_connections to 936",
    ] {
        assert!(warning.contains(needle), "{needle:?} in {warning}");
    }
}
