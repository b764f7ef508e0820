//! What an operator meets in the first hour: the server's `--help`, its advice when the
//! descriptor limit is too low for `server.max_connections`, and the systemd unit and config in
//! `deploy/`.

mod common;

use std::{
    io::{ErrorKind, Read},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use actor_chat::config::Settings;
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

/// A file of the repository.
fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// Where the README's install commands put the binary and the config, as the unit names them.
const EXEC_START: &str =
    "ExecStart=/usr/local/bin/actor-chat-server --config /etc/actor-chat/actor-chat.toml";

#[test]
fn the_deploy_config_listens_everywhere_and_the_unit_fits_it() {
    let settings = Settings::load_from(
        Some(&repo_file("deploy/actor-chat.toml")),
        std::iter::empty(),
    )
    .expect("deploy/actor-chat.toml is a valid config");
    assert_eq!(
        settings.bind(),
        Some(SocketAddr::from(([0, 0, 0, 0], 9999)))
    );

    let unit = read("deploy/actor-chat.service");
    let limit: usize = unit
        .lines()
        .find_map(|line| line.strip_prefix("LimitNOFILE="))
        .and_then(|limit| limit.trim().parse().ok())
        .expect("the unit sets LimitNOFILE= to a number");
    // The server's own rule (it warns below it): a descriptor per connection, and 64 more.
    assert!(
        limit >= settings.max_connections() + 64,
        "LimitNOFILE={limit} for server.max_connections = {}",
        settings.max_connections()
    );
    for line in [
        EXEC_START,
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line:?} in the unit");
    }

    // The README installs the files where the unit looks for them.
    let readme = read("README.md");
    for needle in [
        "deploy/actor-chat.service /etc/systemd/system/",
        "deploy/actor-chat.toml /etc/actor-chat/actor-chat.toml",
        "/usr/local/bin/",
        "systemctl daemon-reload",
        "systemctl enable --now actor-chat",
    ] {
        assert!(readme.contains(needle), "{needle:?} in README.md");
    }
}

/// Set by .ci/run, which installs systemd-analyze: there, its absence fails the test.
const REQUIRE_SYSTEMD_ANALYZE: &str = "ACTOR_CHAT_REQUIRE_SYSTEMD_ANALYZE";

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(output) if output.status.success() => {}
        Err(error) if error.kind() == ErrorKind::NotFound => {
            assert!(
                std::env::var_os(REQUIRE_SYSTEMD_ANALYZE).is_none(),
                "systemd-analyze not found, and {REQUIRE_SYSTEMD_ANALYZE} is set"
            );
            println!("skipped: systemd-analyze not found");
            return;
        }
        other => panic!("systemd-analyze --version: {other:?}"),
    }
    // verify insists that ExecStart's program exists: a copy of the unit runs the binary this
    // build made, on the repository's deploy config, and is otherwise the same.
    let unit = read("deploy/actor-chat.service");
    assert!(unit.contains(EXEC_START), "{EXEC_START:?} in the unit");
    let copy = unit.replace(
        EXEC_START,
        &format!(
            "ExecStart={} --config {}",
            env!("CARGO_BIN_EXE_actor-chat-server"),
            repo_file("deploy/actor-chat.toml").display()
        ),
    );
    let dir = std::env::temp_dir().join(format!("actor-chat-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("actor-chat.service");
    std::fs::write(&path, copy).expect("write the unit's copy");
    let (code, stdout, stderr) = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, Some(0), "systemd-analyze verify: {stdout}{stderr}");
    // Unknown keys and bad values are only warnings: any word about the unit is a failure.
    assert!(
        !stderr.contains("actor-chat.service"),
        "systemd-analyze verify: {stderr}"
    );
}
