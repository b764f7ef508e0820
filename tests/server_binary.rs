//! The server binary as an operator runs it: configuration errors, signals, memory under a
//! slow reader, running out of file descriptors.

mod common;

use std::{process::Command, time::Duration};

use common::{process::ServerProcess, Client};

fn run_to_exit(command: &mut Command) -> (Option<i32>, String) {
    let output = command.output().expect("run the server binary");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_stops_start_up_with_exit_code_2_and_names_the_key() {
    let server = env!("CARGO_BIN_EXE_actor-chat-server");
    let (code, stderr) = run_to_exit(Command::new(server).args(["--config", "/no/such.toml"]));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/no/such.toml"), "{stderr}");

    let (code, stderr) = run_to_exit(
        ServerProcess::command("config/default.toml").env("CHAT__SERVER__WORKERS", "many"),
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("server.workers"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[actix::test]
async fn sigterm_says_bye_to_everyone_and_exits_0() {
    let mut server = ServerProcess::start("config/default.toml");
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(Client::login(server.addr, &format!("user{i}")).await);
    }
    server.signal(libc::SIGTERM);
    for client in &mut clients {
        let lines = client.expect_closed().await;
        assert_eq!(lines.last().map(String::as_str), Some("bye|shutdown"));
    }
    let status = server.wait_exit().expect("exits within the grace period");
    assert_eq!(status.code(), Some(0));
}

#[actix::test]
async fn sighup_is_logged_and_the_server_goes_on() {
    let mut server = ServerProcess::start("config/default.toml");
    let mut alice = Client::login(server.addr, "alice").await;
    server.signal(libc::SIGHUP);
    server
        .wait_for_log("SIGHUP received")
        .expect("SIGHUP is logged");
    alice.expect_nothing_pending().await;
    let mut bob = Client::login(server.addr, "bob").await;
    bob.expect("login|alice").await;
    server.signal(libc::SIGTERM);
    assert_eq!(alice.expect_closed().await, ["login|bob", "bye|shutdown"]);
    let status = server.wait_exit().expect("exits within the grace period");
    assert_eq!(status.code(), Some(0));
}

#[actix::test]
async fn a_second_signal_exits_at_once() {
    let mut command = ServerProcess::command("config/default.toml");
    // A long grace, no flood control and no outbox cap, so nothing but the second signal can
    // end the graceful shutdown within the test's wait.
    command
        .env("CHAT__SERVER__SHUTDOWN_GRACE_SECS", "60")
        .env("CHAT__LIMITS__LINES_PER_SEC", "0")
        .env("CHAT__LIMITS__MAX_OUTBOUND_BYTES", "268435456");
    let mut server = ServerProcess::spawn(command);
    // A client that never reads, with far more queued for it than the kernel's socket buffers
    // hold: its session cannot flush, so the graceful shutdown has to wait for it.
    let stubborn = Client::login(server.addr, "stubborn").await;
    let mut sender = Client::login(server.addr, "sender").await;
    sender.expect("login|stubborn").await;
    let batch = format!("talk|stubborn|{}\n", "m".repeat(4000)).repeat(25);
    for _ in 0..160 {
        sender.send_raw(batch.as_bytes()).await; // 160 × 25 × 4 KB: 16 MB
    }
    // The server answers a client's lines in order: once `pong` comes, every talk was taken.
    sender.expect_nothing_pending().await;

    server.signal(libc::SIGINT);
    server
        .wait_for_log("shutdown requested")
        .expect("the first signal starts a graceful shutdown");
    server.signal(libc::SIGINT);
    let status = server
        .wait_exit()
        .expect("exits long before the grace ends");
    assert_eq!(status.code(), Some(130));
    drop(stubborn);
}

#[actix::test]
async fn memory_stays_flat_while_a_reader_that_never_reads_is_sent_100_mb() {
    let mut command = ServerProcess::command("config/default.toml");
    // Within its grace period a non-reader may owe more than its cap; what bounds memory then
    // is the budget all clients share, here 4 MiB.
    command
        .env("CHAT__LIMITS__LINES_PER_SEC", "0")
        .env("CHAT__LIMITS__MAX_TOTAL_OUTBOUND_BYTES", "4194304");
    let server = ServerProcess::spawn(command);
    let slow = Client::login(server.addr, "slow").await;
    let mut sender = Client::login(server.addr, "sender").await;
    sender.expect("login|slow").await;
    let before = server.rss_kib();

    let (mut lines, mut writer) = sender.split();
    let sending = actix_rt::spawn(async move {
        let line = format!("talk|slow|{}\n", "m".repeat(4000));
        let batch = line.repeat(25);
        for _ in 0..1000 {
            writer.send_raw(batch.as_bytes()).await;
        }
        writer.send("ping").await;
        writer
    });
    let mut peak = before;
    loop {
        peak = peak.max(server.rss_kib());
        match lines.recv().await.as_str() {
            "pong" => break,
            "logout|slow" | "error|no-such-user|slow" => {}
            other => panic!("unexpected line for the sender: {other}"),
        }
    }
    let _writer = sending.await.expect("the sender was never held up");
    let after = server.rss_kib();
    eprintln!("server RSS: before {before} KiB, peak {peak} KiB, after {after} KiB");
    assert!(
        peak < before + 8 * 1024,
        "RSS grew from {before} KiB to {peak} KiB"
    );
    drop(slow);
}

#[actix::test]
async fn running_out_of_file_descriptors_pauses_accepting_without_dying_or_spinning() {
    let mut command = ServerProcess::command("config/default.toml");
    command.env("CHAT__SERVER__PRESENCE", "none");
    // SAFETY: setrlimit is async-signal-safe, as pre_exec requires (the rlimit crate's wrapper
    // only allocates for a resource the platform lacks, which NOFILE is not).
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| rlimit::setrlimit(rlimit::Resource::NOFILE, 48, 48));
    }
    let mut server = ServerProcess::spawn(command);
    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(
            tokio::net::TcpStream::connect(server.addr)
                .await
                .expect("the backlog takes it"),
        );
    }
    server
        .wait_for_log("cannot accept connections")
        .expect("running out of descriptors is logged");
    let cpu_before = server.cpu_time();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_spent = server.cpu_time().saturating_sub(cpu_before);
    // A spinning accept loop would burn a whole core: a full second of CPU in this second.
    assert!(
        cpu_spent < Duration::from_millis(500),
        "{cpu_spent:?} of CPU in one second"
    );

    drop(held);
    let mut alice = Client::login(server.addr, "alice").await;
    alice.expect_nothing_pending().await;
}
