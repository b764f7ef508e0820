//! Protocol v1, row by row, against an in-process server over real loopback sockets.
//!
//! Most tests run the server on the test's own thread under paused time (protocol rows do not
//! depend on threads, and the close linger at shutdown then costs no wall time); the ordering
//! tests and the shutdown test run it on two worker threads, as in production.

mod common;

use common::{settings, settings_without_flood_control, settings_without_presence, TestServer};

#[actix::test]
async fn login_lists_peers_oldest_first_and_tells_everyone_else() {
    let server = TestServer::start_paused(settings()).await;
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]).await;
    let mut carol = server.login("carol").await;
    carol.expect("login|alice").await;
    carol.expect("login|bob").await;
    alice.expect("login|carol").await;
    bob.expect("login|carol").await;
    carol.expect_nothing_pending().await;
    server.shutdown().await;
}

#[actix::test]
async fn names_are_validated_and_unique_ignoring_case() {
    let server = TestServer::start_paused(settings()).await;
    let mut alice = server.login("Alice").await;
    let mut other = server.connect().await;
    for bad in ["al ice", "émile", &"x".repeat(33)] {
        other.send(&format!("login|{bad}")).await;
        other.expect(&format!("error|bad-name|{bad}")).await;
    }
    // A `|` after the name starts a password: a login to the account "a", which (without a
    // store) does not exist. The password is never echoed.
    other.send("login|a|b").await;
    other.expect("error|bad-password|a").await;
    other.send("login|al ice|pw").await;
    other.expect("error|bad-name|al ice").await;
    other.send("login|aLICE").await;
    other.expect("error|name-taken|aLICE").await;
    // Still usable after refusals.
    other.send(&format!("login|{}", "y".repeat(32))).await;
    other.expect(&format!("ok|login|{}", "y".repeat(32))).await;
    other.expect("login|Alice").await;
    other.send("login|zed").await;
    other
        .expect(&format!("error|already-logged-in|{}", "y".repeat(32)))
        .await;
    alice.send("login|Alice").await;
    alice.expect(&format!("login|{}", "y".repeat(32))).await;
    alice.expect("error|already-logged-in|Alice").await;
    server.shutdown().await;
}

#[actix::test]
async fn only_login_ping_pong_and_exit_work_before_login() {
    let server = TestServer::start_paused(settings()).await;
    let mut anon = server.connect().await;
    for (line, verb) in [
        ("talk|bob|hi", "talk"),
        ("who", "who"),
        ("join|rust", "join"),
        ("leave|rust", "leave"),
        ("say|rust|hi", "say"),
        ("rooms", "rooms"),
    ] {
        anon.send(line).await;
        anon.expect(&format!("error|not-logged-in|{verb}")).await;
    }
    anon.send("pong").await;
    anon.send("ping").await;
    anon.expect("pong").await;
    anon.send("exit").await;
    assert_eq!(anon.expect_closed().await, ["bye"]);
    server.shutdown().await;
}

#[actix::test]
async fn talk_delivers_to_the_named_user_only_and_replies_nothing() {
    let server = TestServer::start_paused(settings()).await;
    let [mut alice, mut bob, mut carol] = server.login_all(["alice", "bob", "carol"]).await;

    alice.send("talk|BOB|hi | there, bob").await;
    alice.expect_nothing_pending().await;
    bob.expect("talk|alice|hi | there, bob").await;
    bob.expect_nothing_pending().await;
    carol.expect_nothing_pending().await;

    alice.send("talk|dave|anyone?").await;
    alice.expect("error|no-such-user|dave").await;
    alice.send("talk|not a name|x").await;
    alice.expect("error|no-such-user|not a name").await;
    server.shutdown().await;
}

#[actix::test]
async fn direct_messages_arrive_in_order() {
    let server = TestServer::start(settings_without_flood_control()).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    bob.expect("login|alice").await;
    let count = 2000;
    let mut burst = String::new();
    for i in 0..count {
        burst.push_str(&format!("talk|bob|message {i}\n"));
    }
    alice.send_raw(burst.as_bytes()).await;
    for i in 0..count {
        bob.expect(&format!("talk|alice|message {i}")).await;
    }
    alice.expect("login|bob").await;
    alice.expect_nothing_pending().await;
    server.shutdown().await;
}

#[actix::test]
async fn a_name_taken_over_by_a_new_connection_gets_the_messages_meant_for_it() {
    let server = TestServer::start(settings()).await;
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]).await;
    alice.send("talk|bob|first").await;
    bob.expect("talk|alice|first").await;

    bob.send("exit").await;
    assert_eq!(bob.expect_closed().await, ["bye"]);
    alice.expect("logout|bob").await;
    // Alice remembers the old connection; it must not swallow the message silently.
    alice.send("talk|bob|into the void").await;
    alice.expect("error|no-such-user|bob").await;

    let mut new_bob = server.login("bob").await;
    new_bob.expect("login|alice").await;
    alice.expect("login|bob").await;
    alice.send("talk|bob|second").await;
    new_bob.expect("talk|alice|second").await;
    server.shutdown().await;
}

#[actix::test]
async fn who_lists_everyone_sorted_ignoring_case() {
    let server = TestServer::start_paused(settings_without_presence()).await;
    let mut zed = server.login("zed").await;
    let _bob = server.login("Bob").await;
    let _alice = server.login("alice").await;
    zed.send("who").await;
    zed.expect("users|alice,Bob,zed").await;
    server.shutdown().await;
}

#[actix::test]
async fn rooms_join_say_leave_and_vanish_when_empty() {
    let server = TestServer::start_paused(settings_without_presence()).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;

    alice.send("join|Rust").await;
    alice.expect("ok|join|Rust").await;
    alice.expect("members|Rust|alice").await;
    bob.send("join|rust").await;
    bob.expect("ok|join|Rust").await;
    bob.expect("members|Rust|alice,bob").await;
    alice.expect("join|Rust|bob").await;
    bob.send("join|RUST").await;
    bob.expect("error|already-in-room|RUST").await;
    bob.send("join|bad room").await;
    bob.expect("error|bad-name|bad room").await;

    alice.send("say|rust|hello | all").await;
    alice.expect_nothing_pending().await;
    bob.expect("say|Rust|alice|hello | all").await;
    carol.send("say|rust|let me in").await;
    carol.expect("error|not-in-room|rust").await;
    carol.send("leave|rust").await;
    carol.expect("error|not-in-room|rust").await;

    carol.send("join|go").await;
    carol.expect("ok|join|go").await;
    carol.expect("members|go|carol").await;
    carol.send("rooms").await;
    carol.expect("rooms|go,Rust").await;

    bob.send("leave|rust").await;
    bob.expect("ok|leave|Rust").await;
    alice.expect("leave|Rust|bob").await;
    alice.send("leave|rust").await;
    alice.expect("ok|leave|Rust").await;
    alice.send("rooms").await;
    alice.expect("rooms|go").await;
    carol.send("leave|go").await;
    carol.expect("ok|leave|go").await;
    carol.send("rooms").await;
    carol.expect("rooms|").await;
    bob.expect_nothing_pending().await;
    server.shutdown().await;
}

#[actix::test]
async fn names_lists_a_rooms_members_to_members_and_others_alike() {
    let server = TestServer::start_paused(settings_without_presence()).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("Bob").await;
    alice.send("join|Rust").await;
    alice.expect("ok|join|Rust").await;
    alice.expect("members|Rust|alice").await;
    bob.send("join|rust").await;
    bob.expect("ok|join|Rust").await;
    bob.expect("members|Rust|alice,Bob").await;
    alice.expect("join|Rust|Bob").await;
    let mut carol = server.login("carol").await;
    // Not a member, any case: the room's own spelling comes back.
    carol.send("names|RUST").await;
    carol.expect("members|Rust|alice,Bob").await;
    alice.send("names|rust").await;
    alice.expect("members|Rust|alice,Bob").await;
    // A room that does not exist, or could not.
    carol.send("names|go").await;
    carol.expect("error|no-such-room|go").await;
    carol.send("names|not a room").await;
    carol.expect("error|no-such-room|not a room").await;
    carol.send("names").await;
    carol.expect("error|bad-arguments|names").await;
    let mut anon = server.connect().await;
    anon.send("names|rust").await;
    anon.expect("error|not-logged-in|names").await;
    bob.expect_nothing_pending().await;
    server.shutdown().await;
}

#[actix::test]
async fn exit_says_bye_closes_and_tells_rooms_and_everyone() {
    let server = TestServer::start_paused(settings()).await;
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]).await;
    for client in [&mut alice, &mut bob] {
        client.send("join|rust").await;
        client.expect("ok|join|rust").await;
        client.recv().await; // members
    }
    alice.expect("join|rust|bob").await;

    bob.send("exit").await;
    assert_eq!(bob.expect_closed().await, ["bye"]);
    alice.expect("leave|rust|bob").await;
    alice.expect("logout|bob").await;
    alice.send("who").await;
    alice.expect("users|alice").await;
    server.shutdown().await;
}

#[actix::test]
async fn a_dropped_connection_is_a_disconnect() {
    let server = TestServer::start_paused(settings()).await;
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]).await;
    bob.send("join|rust").await;
    bob.expect("ok|join|rust").await;
    alice.send("join|rust").await;
    alice.expect("ok|join|rust").await;
    alice.expect("members|rust|alice,bob").await;
    drop(bob);
    alice.expect("leave|rust|bob").await;
    alice.expect("logout|bob").await;
    server.shutdown().await;
}

#[actix::test]
async fn bad_lines_get_one_error_each_and_the_connection_stays_usable() {
    let server = TestServer::start_paused(settings()).await;
    let mut alice = server.login("alice").await;
    alice.send("dance|now").await;
    alice.expect("error|unknown-command|dance").await;
    alice.send("WHO").await;
    alice.expect("error|unknown-command|WHO").await;
    for (line, verb) in [
        ("talk|bob", "talk"),
        ("talk|bob|", "talk"),
        ("say|rust", "say"),
        ("join", "join"),
        ("login", "login"),
        ("who|extra", "who"),
    ] {
        alice.send(line).await;
        alice.expect(&format!("error|bad-arguments|{verb}")).await;
    }
    alice.send_raw(b"talk|bob|\xff\xfe\n").await;
    alice.expect("error|bad-encoding|").await;
    // Over-long, in pieces, followed by a good line in the same write.
    alice.send_raw(&[b'x'; 3000]).await;
    alice.send_raw(&[b'y'; 3000]).await;
    alice.send_raw(b"\nwho\r\n\n\r\n").await;
    alice.expect("error|line-too-long|4096").await;
    alice.expect("users|alice").await;
    // Exactly at the limit is fine.
    let at_limit = format!("talk|alice|{}", "z".repeat(4096 - "talk|alice|".len()));
    alice.send(&at_limit).await;
    alice
        .expect(&format!("talk|alice|{}", "z".repeat(4096 - 11)))
        .await;
    alice.expect_nothing_pending().await;
    server.shutdown().await;
}

#[actix::test]
async fn presence_none_sends_no_login_or_logout_notices() {
    let server = TestServer::start_paused(settings_without_presence()).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    bob.expect_nothing_pending().await;
    alice.expect_nothing_pending().await;
    bob.send("exit").await;
    assert_eq!(bob.expect_closed().await, ["bye"]);
    alice.send("who").await;
    alice.expect("users|alice").await;
    server.shutdown().await;
}

#[actix::test]
async fn shutdown_says_bye_to_everyone_and_closes() {
    let server = TestServer::start(settings_without_presence()).await;
    let mut alice = server.login("alice").await;
    let mut anon = server.connect().await;
    anon.expect_nothing_pending().await;
    server.shutdown().await;
    assert_eq!(alice.expect_closed().await, ["bye|shutdown"]);
    assert_eq!(anon.expect_closed().await, ["bye|shutdown"]);
}
