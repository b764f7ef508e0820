//! `actor-chat-server account …`, the operator's commands, run as binaries on a SQLite store in
//! a temporary folder with the password piped in; and a running server that logs out the user
//! of an account removed under it (on SIGHUP).

mod common;

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

use common::{process::ServerProcess, temp::TempDir, Client};

/// Runs `actor-chat-server --config config/default.toml account ARGS` on the store at `url`,
/// with `stdin` piped in.
fn account(url: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_actor-chat-server"))
        .arg("--config")
        .arg(format!(
            "{}/config/default.toml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg("account")
        .args(args)
        .env("CHAT__STORE__URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server binary");
    let mut input = child.stdin.take().expect("stdin is piped");
    input
        .write_all(stdin.as_bytes())
        .expect("write the password");
    drop(input);
    child.wait_with_output().expect("the command ends")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end().to_owned()
}

#[test]
fn the_account_commands_add_list_change_and_remove() {
    let dir = TempDir::new("commands");
    let url = dir.url();

    let added = account(&url, &["add", "Alice"], "correct horse\n");
    assert!(added.status.success(), "{}", text(&added.stderr));
    assert_eq!(text(&added.stdout), "registered Alice");
    let again = account(&url, &["add", "alice"], "another one\n");
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        text(&again.stderr),
        "actor-chat-server: the name alice is registered already"
    );
    let weak = account(&url, &["add", "bob"], "short\n");
    assert_eq!(weak.status.code(), Some(1));
    assert_eq!(
        text(&weak.stderr),
        "actor-chat-server: that password will not do: a password needs at least 8 bytes"
    );
    let bad = account(&url, &["add", "bad name"], "correct horse\n");
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("is not a valid name"),
        "{}",
        text(&bad.stderr)
    );
    let empty = account(&url, &["add", "bob"], "");
    assert_eq!(empty.status.code(), Some(1));
    assert_eq!(
        text(&empty.stderr),
        "actor-chat-server: no password on stdin; nothing was changed"
    );
    assert!(account(&url, &["add", "bob"], "battery staple\r\n")
        .status
        .success());

    let listed = account(&url, &["list"], "");
    assert!(listed.status.success());
    let names: Vec<String> = text(&listed.stdout)
        .lines()
        .map(|line| line.split('\t').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["Alice", "bob"]);
    assert!(
        text(&listed.stdout).lines().all(|line| line.ends_with('Z')),
        "{}",
        text(&listed.stdout)
    );

    let changed = account(&url, &["passwd", "ALICE"], "new password\n");
    assert!(changed.status.success(), "{}", text(&changed.stderr));
    assert_eq!(text(&changed.stdout), "changed the password of ALICE");
    let missing = account(&url, &["passwd", "carol"], "new password\n");
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        text(&missing.stderr),
        "actor-chat-server: there is no account carol"
    );

    let removed = account(&url, &["remove", "bob"], "");
    assert!(removed.status.success());
    assert!(text(&removed.stdout).starts_with("removed the account bob;"));
    let gone = account(&url, &["remove", "bob"], "");
    assert_eq!(gone.status.code(), Some(1));
    let listed = account(&url, &["list"], "");
    assert_eq!(text(&listed.stdout).lines().count(), 1);

    // Nothing ever printed a password.
    for output in [&added, &again, &weak, &changed, &removed] {
        let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
        assert!(
            !all.contains("horse") && !all.contains("new password"),
            "{all}"
        );
    }
}

#[test]
fn without_a_store_the_account_commands_say_why_and_exit_2() {
    let output = account("", &["list"], "");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).starts_with("actor-chat-server: accounts are kept in the store"),
        "{}",
        text(&output.stderr)
    );
}

#[actix::test]
async fn a_running_server_logs_out_the_user_of_an_account_removed_under_it() {
    let dir = TempDir::new("running");
    let url = dir.url();
    assert!(account(&url, &["add", "alice"], "correct horse\n")
        .status
        .success());
    let mut server = ServerProcess::spawn(ServerProcess::with_store("config/default.toml", &url));
    let mut alice = Client::connect(server.addr).await;
    alice.send("login|alice").await;
    alice.expect("error|password-required|alice").await;
    alice.send("login|alice|correct horse").await;
    alice.expect("ok|login|alice").await;
    // A login to an account is followed by what it missed: nothing here.
    alice.expect("end|missed|0").await;

    assert!(account(&url, &["remove", "alice"], "").status.success());
    server.signal(libc::SIGHUP);
    assert_eq!(alice.expect_closed().await, ["bye|account-removed"]);
    server
        .wait_for_log("the account alice no longer exists")
        .expect("the log says why");
    let mut bob = Client::connect(server.addr).await;
    bob.send("login|alice").await;
    bob.expect("ok|login|alice").await;
}

#[test]
fn a_server_in_accounts_mode_without_a_store_refuses_to_start() {
    let mut command = ServerProcess::command("config/default.toml");
    command
        .env("CHAT__AUTH__MODE", "accounts")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let output = command.output().expect("run the server binary");
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output.stderr),
        "actor-chat-server: auth.mode must be \"open\" when store.url is \"\": accounts are \
         kept in the store"
    );
}
