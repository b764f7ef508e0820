//! The server's metrics (`Server::metrics_text`, and `GET /metrics` over HTTP), read back with
//! an independent Prometheus text-format parser (prometheus-parse) and checked to move by
//! exactly what each action causes. Most tests run under paused time on one thread through
//! in-memory pipes, where every count a client's read depends on is in place when it reads; the
//! store's and the HTTP tests run over loopback sockets on two workers. Nothing sleeps to
//! synchronise; every read has a timeout.

mod common;

use std::{io, net::SocketAddr, time::Duration};

use actor_chat::server::{Placement, Server};
use common::{build, builder, settings_without_presence, Client, TestServer, READ_TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use prometheus_parse::{Sample, Scrape, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};
use tokio_tungstenite::{client_async, tungstenite::Message};

/// One scrape, parsed.
struct Metrics(Scrape);

impl Metrics {
    fn of(server: &TestServer) -> Metrics {
        Metrics::parse(&server.metrics_text())
    }

    fn parse(text: &str) -> Metrics {
        let lines = text.lines().map(|line| io::Result::Ok(line.to_owned()));
        Metrics(Scrape::parse(lines).expect("the metrics parse"))
    }

    /// The value of the counter or gauge `name` with exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.find(name, labels).value {
            Value::Counter(value) | Value::Gauge(value) => value,
            ref other => panic!("{name}{labels:?} is not a counter or a gauge: {other:?}"),
        }
    }

    /// How many observations the histogram `name` holds for `labels` (its `+Inf` bucket).
    fn observations(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match &self.find(name, labels).value {
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|bucket| bucket.less_than == f64::INFINITY)
                .map(|bucket| bucket.count)
                .expect("a +Inf bucket"),
            other => panic!("{name}{labels:?} is not a histogram: {other:?}"),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.0.samples.iter().any(|sample| sample.metric == name)
    }

    fn find(&self, name: &str, labels: &[(&str, &str)]) -> &Sample {
        self.0
            .samples
            .iter()
            .find(|sample| {
                sample.metric == name
                    && sample.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(key, value)| sample.labels.get(key) == Some(value))
            })
            .unwrap_or_else(|| panic!("no {name}{labels:?} in the scrape"))
    }
}

/// How much `name{labels}` moved from `before` to `after`.
fn moved(before: &Metrics, after: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.get(name, labels) - before.get(name, labels)
}

const LOGINS: &str = "actor_chat_logins_total";
const LOGIN_FAILURES: &str = "actor_chat_login_failures_total";
const USERS: &str = "actor_chat_users";
const ROOMS: &str = "actor_chat_rooms";
const RECEIVED: &str = "actor_chat_lines_received_total";
const SENT: &str = "actor_chat_events_sent_total";
const REFUSALS: &str = "actor_chat_refusals_total";
const DISCONNECTS: &str = "actor_chat_disconnects_total";
const OPEN: &str = "actor_chat_connections_open";
const DELIVERY: &str = "actor_chat_delivery_seconds";

/// Waits, by letting the server's tasks run (bounded, no sleep), until `name{labels}` reads
/// `want`. For what is counted after the client can see its effect (a connection's slot is
/// given back once its session is gone).
async fn until(server: &TestServer, name: &str, labels: &[(&str, &str)], want: f64) {
    for _ in 0..10_000 {
        if Metrics::of(server).get(name, labels) == want {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!(
        "{name}{labels:?} never reached {want}:\n{}",
        server.metrics_text()
    );
}

#[actix::test]
async fn a_login_moves_the_logins_counter_by_exactly_one() {
    let server = TestServer::start_paused(settings_without_presence()).await;
    let before = Metrics::of(&server);
    assert_eq!(before.get(LOGINS, &[]), 0.0);
    assert_eq!(before.get(USERS, &[]), 0.0);
    assert!(!before.has("actor_chat_store_backlog"), "no store here");

    let alice = server.login("alice").await;
    let after = Metrics::of(&server);
    assert_eq!(moved(&before, &after, LOGINS, &[]), 1.0);
    assert_eq!(after.get(USERS, &[]), 1.0);
    assert_eq!(after.get(OPEN, &[("transport", "memory")]), 1.0);
    assert_eq!(
        after.get("actor_chat_connections_total", &[("transport", "memory")]),
        1.0
    );
    assert_eq!(after.get(OPEN, &[("transport", "tcp")]), 0.0);
    assert_eq!(moved(&before, &after, RECEIVED, &[("verb", "login")]), 1.0);
    assert_eq!(moved(&before, &after, SENT, &[("verb", "ok")]), 1.0);
    assert_eq!(
        after.get("actor_chat_received_bytes_total", &[]),
        "login|alice\n".len() as f64
    );
    assert_eq!(
        after.get("actor_chat_sent_bytes_total", &[]),
        "ok|login|alice\n".len() as f64
    );

    let _bob = server.login("bob").await;
    let again = Metrics::of(&server);
    assert_eq!(moved(&after, &again, LOGINS, &[]), 1.0);
    assert_eq!(again.get(USERS, &[]), 2.0);
    assert_eq!(moved(&after, &again, LOGIN_FAILURES, &[]), 0.0);
    drop(alice);
    until(&server, USERS, &[], 1.0).await;
    until(&server, OPEN, &[("transport", "memory")], 1.0).await;
    server.shutdown().await;
}

#[actix::test]
async fn each_server_counts_only_its_own_connections() {
    let first = TestServer::start_paused(settings_without_presence()).await;
    let second = Server::start(settings_without_presence(), Placement::CurrentThread);
    let peer = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut carol = Client::over(second.connect_in_memory(peer, 4096));
    carol.send("login|carol").await;
    carol.expect("ok|login|carol").await;
    let _alice = first.login("alice").await;
    let _bob = first.login("bob").await;
    assert_eq!(Metrics::of(&first).get(LOGINS, &[]), 2.0);
    assert_eq!(Metrics::parse(&second.metrics_text()).get(LOGINS, &[]), 1.0);
    second.shutdown().await;
    first.shutdown().await;
}

#[actix::test]
async fn refusals_count_under_their_error_kind_and_failed_logins_as_failures() {
    let server = TestServer::start_paused(settings_without_presence()).await;
    let mut alice = server.login("alice").await;
    let mut other = server.connect().await;
    let before = Metrics::of(&server);

    other.send("login|alice").await;
    other.expect("error|name-taken|alice").await;
    other.send("login|not valid").await;
    other.expect("error|bad-name|not valid").await;
    alice.send("talk|nobody|hi").await;
    alice.expect("error|no-such-user|nobody").await;
    alice.send("frobnicate").await;
    alice.expect("error|unknown-command|frobnicate").await;
    alice.send("talk|bob").await;
    alice.expect("error|bad-arguments|talk").await;

    let after = Metrics::of(&server);
    assert_eq!(moved(&before, &after, LOGIN_FAILURES, &[]), 2.0);
    assert_eq!(moved(&before, &after, LOGINS, &[]), 0.0);
    for kind in [
        "name-taken",
        "bad-name",
        "no-such-user",
        "unknown-command",
        "bad-arguments",
    ] {
        assert_eq!(
            moved(&before, &after, REFUSALS, &[("kind", kind)]),
            1.0,
            "{kind}"
        );
    }
    assert_eq!(
        moved(&before, &after, REFUSALS, &[("kind", "not-in-room")]),
        0.0
    );
    assert_eq!(moved(&before, &after, SENT, &[("verb", "error")]), 5.0);
    // A line is counted under the verb it started with, valid or not.
    assert_eq!(moved(&before, &after, RECEIVED, &[("verb", "login")]), 2.0);
    assert_eq!(moved(&before, &after, RECEIVED, &[("verb", "talk")]), 2.0);
    assert_eq!(
        moved(&before, &after, RECEIVED, &[("verb", "unknown")]),
        1.0
    );
    server.shutdown().await;
}

#[actix::test]
async fn disconnects_count_under_their_reason() {
    let settings = build(
        builder()
            .set("server.presence", "none")
            .set("server.max_connections", 2)
            .set("heartbeat.login_timeout_secs", 5)
            .set("limits.lines_per_sec", 2)
            .set("limits.burst", 2),
    );
    let server = TestServer::start_paused(settings).await;
    let reason = |metrics: &Metrics, reason| metrics.get(DISCONNECTS, &[("reason", reason)]);
    let start = Metrics::of(&server);
    for name in [
        "exit",
        "peer",
        "timeout",
        "flood",
        "server-full",
        "too-slow",
    ] {
        assert_eq!(reason(&start, name), 0.0, "{name}");
    }

    // exit
    let mut alice = server.login("alice").await;
    alice.send("exit").await;
    assert_eq!(alice.expect_closed().await, ["bye"]);
    assert_eq!(reason(&Metrics::of(&server), "exit"), 1.0);
    drop(alice);
    until(&server, OPEN, &[("transport", "memory")], 0.0).await;

    // The peer closing its side.
    let mut bob = server.login("bob").await;
    bob.shutdown_write().await;
    assert_eq!(bob.expect_closed().await, ["bye"]);
    assert_eq!(reason(&Metrics::of(&server), "peer"), 1.0);
    drop(bob);
    until(&server, OPEN, &[("transport", "memory")], 0.0).await;

    // Full: two open, the third turned away at the door.
    let mut first = server.connect().await;
    let mut second = server.connect().await;
    let mut third = server.connect().await;
    assert_eq!(third.expect_closed().await, ["bye|server-full"]);
    let metrics = Metrics::of(&server);
    assert_eq!(reason(&metrics, "server-full"), 1.0);
    assert_eq!(metrics.get(OPEN, &[("transport", "memory")]), 2.0);

    // No login within the login deadline (both of them).
    assert_eq!(first.expect_closed().await, ["bye|timeout"]);
    assert_eq!(second.expect_closed().await, ["bye|timeout"]);
    assert_eq!(reason(&Metrics::of(&server), "timeout"), 2.0);
    drop((first, second));
    until(&server, OPEN, &[("transport", "memory")], 0.0).await;

    // A flood: 200 lines/s against 2 allowed, until cut off.
    let flooder = server.login("flooder").await;
    let (mut lines, mut writer) = flooder.split();
    let flooding = actix_rt::spawn(async move {
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
    let after = Metrics::of(&server);
    assert_eq!(reason(&after, "flood"), 1.0);
    assert!(after.get(REFUSALS, &[("kind", "rate-limited")]) >= 1.0);
    assert_eq!(reason(&after, "too-slow"), 0.0);
    assert_eq!(reason(&after, "exit"), 1.0);
    assert_eq!(after.get(LOGINS, &[]), 3.0);
    server.shutdown().await;
}

#[actix::test]
async fn events_count_by_verb_and_each_delivered_talk_or_say_is_timed_once() {
    let server = TestServer::start_paused(settings_without_presence()).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let talk = [("verb", "talk")];
    let say = [("verb", "say")];
    let before = Metrics::of(&server);
    assert_eq!(before.observations(DELIVERY, &talk), 0.0);

    // The first goes through the ChatServer to find bob; the others straight to his outbox.
    for i in 0..3 {
        alice.send(&format!("talk|bob|hello {i}")).await;
        bob.expect(&format!("talk|alice|hello {i}")).await;
    }
    let after = Metrics::of(&server);
    assert_eq!(
        after.observations(DELIVERY, &talk) - before.observations(DELIVERY, &talk),
        3.0
    );
    assert_eq!(moved(&before, &after, SENT, &talk), 3.0);
    assert_eq!(moved(&before, &after, RECEIVED, &talk), 3.0);

    // Undelivered: not timed.
    alice.send("talk|nobody|hi").await;
    alice.expect("error|no-such-user|nobody").await;
    assert_eq!(
        Metrics::of(&server).observations(DELIVERY, &talk),
        after.observations(DELIVERY, &talk)
    );

    alice.send("join|lobby").await;
    alice.expect("ok|join|lobby").await;
    alice.expect("members|lobby|alice").await;
    bob.send("join|lobby").await;
    bob.expect("ok|join|lobby").await;
    bob.expect("members|lobby|alice,bob").await;
    alice.expect("join|lobby|bob").await;
    let joined = Metrics::of(&server);
    assert_eq!(joined.get(ROOMS, &[]), 1.0);
    assert_eq!(moved(&after, &joined, SENT, &[("verb", "members")]), 2.0);
    assert_eq!(moved(&after, &joined, SENT, &[("verb", "join")]), 1.0);

    alice.send("say|lobby|hi all").await;
    bob.expect("say|lobby|alice|hi all").await;
    let said = Metrics::of(&server);
    assert_eq!(
        said.observations(DELIVERY, &say) - joined.observations(DELIVERY, &say),
        1.0
    );
    assert_eq!(
        moved(&joined, &said, SENT, &say),
        1.0,
        "one member besides alice"
    );
    assert_eq!(
        said.observations(DELIVERY, &talk),
        after.observations(DELIVERY, &talk)
    );

    alice.send("leave|lobby").await;
    alice.expect("ok|leave|lobby").await;
    bob.expect("leave|lobby|alice").await;
    assert_eq!(Metrics::of(&server).get(ROOMS, &[]), 1.0);
    bob.send("leave|lobby").await;
    bob.expect("ok|leave|lobby").await;
    assert_eq!(Metrics::of(&server).get(ROOMS, &[]), 0.0);
    server.shutdown().await;
}

#[actix::test]
async fn a_server_with_a_store_shows_what_it_wrote() {
    let dir = std::env::temp_dir().join(format!(
        "actor-chat-metrics-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let url = format!("sqlite://{}", dir.join("chat.db").display());
    let settings = build(
        builder()
            .set("server.presence", "none")
            .set("store.url", url),
    );
    let server = TestServer::start_with_store(settings).await;
    let before = Metrics::of(&server);
    assert_eq!(before.get("actor_chat_store_backlog", &[]), 0.0);
    assert_eq!(before.get("actor_chat_store_written_total", &[]), 0.0);

    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    for client in [&mut alice, &mut bob] {
        client.send("join|lobby").await;
        client.expect("ok|join|lobby").await;
        let _members = client.recv().await;
    }
    alice.expect("join|lobby|bob").await;
    alice.send("say|lobby|kept").await;
    bob.expect("say|lobby|alice|kept").await;
    // The store answers `history` after writing everything queued before it.
    alice.send("history|#lobby|10").await;
    let _hist = alice.recv().await;
    alice.expect("end|history|#lobby|1").await;

    let after = Metrics::of(&server);
    assert_eq!(after.get("actor_chat_store_written_total", &[]), 1.0);
    assert_eq!(after.get("actor_chat_store_backlog", &[]), 0.0);
    assert_eq!(after.get("actor_chat_store_dropped_total", &[]), 0.0);
    assert_eq!(after.get(LOGINS, &[]), 2.0);
    assert_eq!(after.get(OPEN, &[("transport", "tcp")]), 2.0);
    assert_eq!(after.observations(DELIVERY, &[("verb", "say")]), 1.0);
    assert_eq!(after.get(SENT, &[("verb", "hist")]), 1.0);
    assert_eq!(after.get(SENT, &[("verb", "end")]), 1.0);

    // A replay of missed messages counts its lines like any other event.
    let mut carol = server.connect().await;
    carol.send("register|carol|correct horse").await;
    carol.expect("ok|login|carol").await;
    carol.send("exit").await;
    assert_eq!(carol.expect_closed().await, ["bye"]);
    alice.send("talk|carol|while you were out").await;
    alice.expect("queued|carol").await;
    let mut carol = server.connect().await;
    carol.send("login|carol|correct horse").await;
    carol.expect("ok|login|carol").await;
    let missed = carol.recv().await;
    assert!(
        missed.starts_with("missed|") && missed.ends_with("|alice|while you were out"),
        "{missed}"
    );
    carol.expect("end|missed|1").await;
    let replayed = Metrics::of(&server);
    assert_eq!(replayed.get(SENT, &[("verb", "missed")]), 1.0);
    assert_eq!(replayed.get(SENT, &[("verb", "end")]), 2.0);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// One HTTP/1.1 GET of `path` with extra `headers`: the status, the content type and the body.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut stream = timeout(READ_TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut response = Vec::new();
    timeout(READ_TIMEOUT, stream.read_to_end(&mut response))
        .await
        .expect("the response in time")
        .expect("read the response");
    let response = String::from_utf8(response).expect("a text response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let content_type = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// Scrapes `/metrics` over HTTP, expecting it to be served.
async fn scrape(addr: SocketAddr) -> Metrics {
    let (status, content_type, body) = get(addr, "/metrics", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/plain; version=0.0.4");
    Metrics::parse(&body)
}

fn web(metrics: &str) -> actor_chat::config::Settings {
    build(
        builder()
            .set("server.presence", "none")
            .set("http.bind", "127.0.0.1:0")
            .set("http.metrics", metrics),
    )
}

#[actix::test]
async fn get_metrics_moves_with_a_login_and_counts_websockets_as_ws() {
    let server = TestServer::start(web("loopback")).await;
    let http = server.http_addr();
    let before = scrape(http).await;
    assert_eq!(before.get(LOGINS, &[]), 0.0);
    assert_eq!(before.get(OPEN, &[("transport", "ws")]), 0.0);

    let _alice = server.login("alice").await;
    let after = scrape(http).await;
    assert_eq!(moved(&before, &after, LOGINS, &[]), 1.0);
    assert_eq!(after.get(OPEN, &[("transport", "tcp")]), 1.0);

    let request = format!("ws://{http}/ws");
    let tcp = timeout(READ_TIMEOUT, TcpStream::connect(http))
        .await
        .expect("connect in time")
        .expect("connect");
    let (mut bob, _) = timeout(READ_TIMEOUT, client_async(request, tcp))
        .await
        .expect("the handshake in time")
        .expect("the upgrade");
    bob.send(Message::text("login|bob"))
        .await
        .expect("send a frame");
    let answer = timeout(READ_TIMEOUT, bob.next())
        .await
        .expect("a frame in time");
    match answer {
        Some(Ok(Message::Text(line))) => assert_eq!(line.as_str(), "ok|login|bob"),
        other => panic!("expected ok|login|bob, got {other:?}"),
    }
    let with_ws = scrape(http).await;
    assert_eq!(moved(&after, &with_ws, LOGINS, &[]), 1.0);
    assert_eq!(with_ws.get(OPEN, &[("transport", "ws")]), 1.0);
    assert_eq!(
        with_ws.get("actor_chat_connections_total", &[("transport", "ws")]),
        1.0
    );
    assert_eq!(with_ws.get(USERS, &[]), 2.0);
    server.shutdown().await;
}

#[actix::test]
async fn a_client_a_trusted_proxy_names_off_this_machine_is_refused_and_off_is_not_found() {
    let server = TestServer::start(web("loopback")).await;
    let http = server.http_addr();
    // The test connects from 127.0.0.1, a trusted proxy by default: the client is the one it
    // names, and that one is not on this machine.
    let forwarded = [("X-Forwarded-For", "203.0.113.9")];
    let (status, _, body) = get(http, "/metrics", &forwarded).await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        "metrics are served to loopback clients only (http.metrics)\n"
    );
    let local = [("X-Forwarded-For", "127.0.0.1")];
    assert_eq!(get(http, "/metrics", &local).await.0, 200);
    server.shutdown().await;

    let open = TestServer::start(web("all")).await;
    let (status, _, body) = get(open.http_addr(), "/metrics", &forwarded).await;
    assert_eq!(status, 200);
    assert_eq!(Metrics::parse(&body).get(LOGINS, &[]), 0.0);
    open.shutdown().await;

    let off = TestServer::start(web("off")).await;
    assert_eq!(get(off.http_addr(), "/metrics", &[]).await.0, 404);
    off.shutdown().await;
}
