//! The guards that keep one bad client from hurting the others: heartbeats, login deadline,
//! flood control, connection and room limits, slow consumers, framing edge cases.

mod common;

use std::time::Duration;

use actor_chat::config::Settings;
use common::{build, builder, settings, TestServer};

#[actix::test]
async fn silent_clients_are_pinged_then_timed_out() {
    let settings = build(
        builder()
            .set("heartbeat.interval_secs", 0.3)
            .set("heartbeat.timeout_secs", 2.0),
    );
    let server = TestServer::start_paused(settings).await;
    let mut alice = server.login("alice").await;
    alice.expect("ping").await;
    // Any line counts as life: the silence starts over, so the next thing is another ping.
    alice.send("pong").await;
    alice.expect("ping").await;
    // Now stay silent.
    assert_eq!(alice.expect_closed().await, ["bye|timeout"]);
    server.shutdown().await;
}

#[actix::test]
async fn connections_that_do_not_log_in_in_time_are_closed() {
    let settings = build(builder().set("heartbeat.login_timeout_secs", 0.3));
    let server = TestServer::start_paused(settings).await;
    let mut alice = server.login("alice").await;
    let mut anon = server.connect().await;
    assert_eq!(anon.expect_closed().await, ["bye|timeout"]);
    // Past the login deadline, the logged-in connection is still served.
    alice.expect_nothing_pending().await;
    server.shutdown().await;
}

#[actix::test]
async fn lines_over_the_rate_are_refused_not_executed() {
    let settings = build(
        builder()
            .set("limits.lines_per_sec", 1)
            .set("limits.burst", 3),
    );
    // Paused time: the six lines are handled at one instant, however slow the machine.
    let server = TestServer::start_paused(settings).await;
    let mut anon = server.connect().await;
    // Over-long lines count too: they cost the server as much as any other.
    let mut burst = vec![b'x'; 5000];
    burst.extend_from_slice(b"\nping\nping\nping\nwho\nlogin|alice\n");
    anon.send_raw(&burst).await;
    anon.expect("error|line-too-long|4096").await;
    for _ in 0..2 {
        anon.expect("pong").await;
    }
    anon.expect("error|rate-limited|ping").await;
    anon.expect("error|rate-limited|who").await;
    anon.expect("error|rate-limited|login").await;
    server.shutdown().await;
}

#[actix::test]
async fn a_client_flooding_for_five_seconds_is_disconnected() {
    let settings = build(
        builder()
            .set("limits.lines_per_sec", 2)
            .set("limits.burst", 2),
    );
    // Paused time: the flood's five seconds pass as fast as the lines can be handled.
    let server = TestServer::start_paused(settings).await;
    let mut bystander = server.login("bystander").await;
    let flooder = server.login("flooder").await;
    let (mut lines, mut writer) = flooder.split();
    let flooding = actix_rt::spawn(async move {
        // 200 lines/s, 100 times the allowed rate, for at most 30 s.
        for _ in 0..6000 {
            if writer.try_send_raw(b"ping\n").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let received = lines.expect_closed().await;
    flooding.abort();
    assert_eq!(received.last().map(String::as_str), Some("bye|flood"));
    assert!(received.iter().any(|l| l == "error|rate-limited|ping"));
    bystander.expect("login|flooder").await;
    bystander.expect("logout|flooder").await;
    bystander.expect_nothing_pending().await;
    server.shutdown().await;
}

#[actix::test]
async fn connections_over_the_limit_are_turned_away_until_one_leaves() {
    let settings = build(
        builder()
            .set("server.presence", "none")
            .set("server.max_connections", 2),
    );
    let server = TestServer::start_paused(settings).await;
    let _alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut third = server.connect().await;
    third.send("login|carol").await;
    assert_eq!(third.expect_closed().await, ["bye|server-full"]);

    bob.send("exit").await;
    assert_eq!(bob.expect_closed().await, ["bye"]);
    drop(bob);
    // Bob's slot comes back once his session has fully ended, which takes a few turns of the
    // server's loop after his close; each refused attempt is one, so try a bounded number.
    let mut admitted = None;
    for _ in 0..100 {
        let mut carol = server.connect().await;
        carol.send("login|carol").await;
        match carol.recv().await.as_str() {
            "ok|login|carol" => {
                admitted = Some(carol);
                break;
            }
            "bye|server-full" => {}
            other => panic!("unexpected {other}"),
        }
    }
    let mut carol = admitted.expect("a slot frees up after a client leaves");
    carol.expect_nothing_pending().await;
    server.shutdown().await;
}

#[actix::test]
async fn room_limits_refuse_a_join_past_them_and_free_up_on_leave() {
    let settings = build(
        builder()
            .set("server.presence", "none")
            .set("limits.rooms_per_user", 2)
            .set("server.max_rooms", 3),
    );
    let server = TestServer::start(settings).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;

    for room in ["a", "b"] {
        alice.send(&format!("join|{room}")).await;
        alice.expect(&format!("ok|join|{room}")).await;
        alice.expect(&format!("members|{room}|alice")).await;
    }
    alice.send("join|c").await;
    alice.expect("error|too-many-rooms|c").await;
    // Already being in the room is the better answer, limit or not.
    alice.send("join|A").await;
    alice.expect("error|already-in-room|A").await;

    bob.send("join|c").await;
    bob.expect("ok|join|c").await;
    bob.expect("members|c|bob").await;
    // Three rooms exist: a fourth cannot be made, but an existing one can still be joined.
    bob.send("join|d").await;
    bob.expect("error|too-many-rooms|d").await;
    bob.send("join|a").await;
    bob.expect("ok|join|a").await;
    bob.expect("members|a|alice,bob").await;
    alice.expect("join|a|bob").await;

    // Leaving frees the user's slot; an emptied room frees the server's.
    alice.send("leave|b").await;
    alice.expect("ok|leave|b").await;
    alice.send("join|c").await;
    alice.expect("ok|join|c").await;
    alice.expect("members|c|alice,bob").await;
    bob.expect("join|c|alice").await;
    bob.send("leave|c").await;
    bob.expect("ok|leave|c").await;
    bob.send("join|d").await;
    bob.expect("ok|join|d").await;
    bob.expect("members|d|bob").await;
    alice.expect("leave|c|bob").await;
    alice.send("rooms").await;
    alice.expect("rooms|a,c,d").await;
    alice.expect_nothing_pending().await;
    server.shutdown().await;
}

#[actix::test]
async fn a_reader_that_never_reads_is_cut_off_and_the_sender_is_not_held_up() {
    // A budget far below the 100 MB sent: the never-reader is cut by it however fast the
    // bytes pile up within its grace period (the grace path has tests of its own).
    let settings = build(
        builder()
            .set("limits.lines_per_sec", 0)
            .set("limits.max_total_outbound_bytes", 4 << 20),
    );
    let server = TestServer::start(settings).await;
    let mut slow = server.login("slow").await;
    let mut alice = server.login("alice").await;
    alice.expect("login|slow").await;
    let (mut alice_lines, mut alice_writer) = alice.split();

    // 100 MB in 4000-byte messages, written while Alice's replies are read concurrently.
    let body = "m".repeat(4000 - "talk|slow|".len() - 1);
    let sending = actix_rt::spawn(async move {
        let batch = format!("talk|slow|{body}\n").repeat(25);
        for _ in 0..1000 {
            // Fails the test if Alice's connection does not stay up.
            alice_writer.send_raw(batch.as_bytes()).await;
        }
        alice_writer.send("ping").await;
        alice_writer
    });
    let mut saw_logout = false;
    loop {
        match alice_lines.recv().await.as_str() {
            "logout|slow" => saw_logout = true,
            "error|no-such-user|slow" => {}
            "pong" => break,
            other => panic!("unexpected line for alice: {other}"),
        }
    }
    assert!(saw_logout, "the slow reader was never cut off");
    let _alice_writer = sending.await.expect("sender finished");

    // The slow reader finds some messages, maybe the farewell, then the end of the stream.
    let rest = slow.expect_closed().await;
    assert!(rest.len() < 25_000, "got {} of 25000 messages", rest.len());
    server.shutdown().await;
}

#[actix::test]
async fn a_peer_that_half_closes_gets_its_answers_and_a_clean_close() {
    let server = TestServer::start(settings()).await;
    let mut alice = server.login("alice").await;
    // An unfinished line before end of input is not executed.
    alice.send_raw(b"who\ntalk|alice|unfinish").await;
    alice.shutdown_write().await;
    assert_eq!(alice.expect_closed().await, ["users|alice", "bye"]);
    server.shutdown().await;
}

#[actix::test]
async fn bye_reaches_a_peer_even_with_unread_input_behind_exit() {
    let server = TestServer::start(settings_for_bulk()).await;
    let mut alice = server.connect().await;
    let mut input = b"exit\n".to_vec();
    input.extend(b"ping\n".repeat(20_000));
    alice.send_raw(&input).await;
    assert_eq!(alice.expect_closed().await, ["bye"]);
    server.shutdown().await;
}

#[actix::test]
async fn many_clients_disconnecting_abruptly_leave_a_consistent_user_list() {
    let settings = build(builder().set("limits.lines_per_sec", 0));
    let server = TestServer::start(settings).await;
    let mut watcher = server.login("watcher").await;
    let mut clients = Vec::new();
    for i in 0..50 {
        let mut client = server.login(&format!("user{i}")).await;
        client.send("join|lobby").await;
        while client.recv().await != "ok|join|lobby" {}
        clients.push(client);
    }
    // Drop every odd one without a word.
    let mut kept: Vec<_> = clients.into_iter().step_by(2).collect();
    // The watcher is told of each departure; once all 25 are in, `who` must be exact.
    let mut gone = 0;
    while gone < 25 {
        if watcher.recv().await.starts_with("logout|") {
            gone += 1;
        }
    }
    let mut expected: Vec<String> = (0..50)
        .step_by(2)
        .map(|i| format!("user{i}"))
        .chain(["watcher".to_owned()])
        .collect();
    expected.sort();
    watcher.send("who").await;
    let users = loop {
        let line = watcher.recv().await;
        if line.starts_with("users|") {
            break line;
        }
    };
    assert_eq!(users, format!("users|{}", expected.join(",")));
    for client in &mut kept {
        client.send("ping").await;
        while client.recv().await != "pong" {}
    }
    server.shutdown().await;
}

/// Flood control off and no presence notices, for tests that send a lot.
fn settings_for_bulk() -> Settings {
    build(
        builder()
            .set("limits.lines_per_sec", 0)
            .set("server.presence", "none"),
    )
}
