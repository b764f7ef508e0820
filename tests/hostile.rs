//! Hostile clients: what one client sends must not forge lines in another's reader, nor flood
//! the server unseen, nor hold connection slots it does not use.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{build, builder, settings_without_presence, TestServer};

#[actix::test]
async fn a_text_that_would_read_as_several_lines_is_refused_and_relays_nothing() {
    let server = TestServer::start_paused(settings_without_presence()).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    for client in [&mut alice, &mut bob] {
        client.send("join|lobby").await;
        client.expect("ok|join|lobby").await;
        client.recv().await; // members
    }
    alice.expect("join|lobby|bob").await;
    // Each of these is a line end to some common reader (Python's makefile and splitlines,
    // Java's and .NET's readLine).
    for forged in [
        "hi\rsay|lobby|admin|!op mallory\rlogout|alice",
        "a\u{b}b",
        "a\u{c}b",
        "a\u{1e}b",
        "a\u{85}b",
        "a\u{2028}b",
        "a\u{2029}b",
        "a\u{0}b",
        "a\u{7f}b",
    ] {
        alice.send(&format!("say|lobby|{forged}")).await;
        alice.expect("error|bad-text|say").await;
        alice.send(&format!("talk|bob|{forged}")).await;
        alice.expect("error|bad-text|talk").await;
    }
    // A tab, and text in any script, are fine.
    alice.send("say|lobby|tab\there — ü 日本").await;
    bob.expect("say|lobby|alice|tab\there — ü 日本").await;
    bob.expect_nothing_pending().await;
    server.shutdown().await;
}

/// A client flooding with `payload`, 100 times a second: the server must end it with
/// `bye|flood`, while it only ever answers lines.
async fn flood_with(payload: &'static [u8]) -> Vec<String> {
    let settings = build(
        builder()
            .set("server.presence", "none")
            .set("limits.lines_per_sec", 2)
            .set("limits.burst", 2)
            .set("limits.max_line_bytes", 64),
    );
    let server = TestServer::start_paused(settings).await;
    let flooder = server.login("flooder").await;
    let (mut lines, mut writer) = flooder.split();
    let flooding = actix_rt::spawn(async move {
        // At most 30 s of virtual time.
        for _ in 0..3000 {
            if writer.try_send_raw(payload).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let received = lines.expect_closed().await;
    flooding.abort();
    server.shutdown().await;
    received
}

#[actix::test]
async fn a_stream_of_empty_lines_is_a_flood() {
    let received = flood_with(&[b'\n'; 100]).await;
    assert_eq!(received, ["bye|flood"]);
}

#[actix::test]
async fn an_endless_line_is_a_flood() {
    let received = flood_with(&[b'x'; 1000]).await;
    assert_eq!(received, ["error|line-too-long|64", "bye|flood"]);
}

fn from(ip: [u8; 4]) -> SocketAddr {
    SocketAddr::from((ip, 40000))
}

#[actix::test]
async fn one_address_may_hold_only_so_many_connections() {
    let settings = build(
        builder()
            .set("server.presence", "none")
            .set("limits.max_connections_per_ip", 2)
            .set("limits.exempt_networks", "10.9.0.0/16"),
    );
    let server = TestServer::start_paused(settings).await;
    let mut first = server.connect_from(from([10, 0, 0, 1]));
    let mut second = server.connect_from(from([10, 0, 0, 1]));
    let mut third = server.connect_from(from([10, 0, 0, 1]));
    assert_eq!(third.expect_closed().await, ["bye|too-many-connections"]);
    // Another address is not affected, nor is an exempt network.
    let mut other = server.connect_from(from([10, 0, 0, 2]));
    other.expect_nothing_pending().await;
    let mut exempt: Vec<_> = (0..5)
        .map(|_| server.connect_from(from([10, 9, 1, 1])))
        .collect();
    for client in &mut exempt {
        client.expect_nothing_pending().await;
    }
    second.expect_nothing_pending().await;
    // A connection that ends gives its address's slot back; each refusal is a turn of the
    // server's loop, so a bounded number of attempts is enough.
    first.send("exit").await;
    assert_eq!(first.expect_closed().await, ["bye"]);
    drop(first);
    let mut admitted = None;
    for _ in 0..100 {
        let mut next = server.connect_from(from([10, 0, 0, 1]));
        next.send("ping").await;
        match next.recv().await.as_str() {
            "pong" => {
                admitted = Some(next);
                break;
            }
            "bye|too-many-connections" => {}
            other => panic!("unexpected {other}"),
        }
    }
    let mut again = admitted.expect("the address's slot comes back");
    again.send("login|again").await;
    again.expect("ok|login|again").await;
    server.shutdown().await;
}

#[actix::test]
async fn past_the_pending_limit_the_oldest_connection_not_logged_in_is_closed() {
    let settings = build(
        builder()
            .set("server.presence", "none")
            .set("limits.max_pending_logins", 2),
    );
    let server = TestServer::start_paused(settings).await;
    // Logged in, alice no longer counts.
    let mut alice = server.login("alice").await;
    let mut oldest = server.connect().await;
    let mut older = server.connect().await;
    // Each is known to the server once it has answered.
    oldest.expect_nothing_pending().await;
    older.expect_nothing_pending().await;
    let mut newest = server.connect().await;
    assert_eq!(oldest.expect_closed().await, ["bye|timeout"]);
    older.send("login|older").await;
    older.expect("ok|login|older").await;
    newest.send("login|newest").await;
    newest.expect("ok|login|newest").await;
    alice.expect_nothing_pending().await;
    server.shutdown().await;
}
