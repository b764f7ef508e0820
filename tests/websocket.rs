//! The HTTP side against an in-process server on `127.0.0.1:0`: WebSockets (`/ws`) with a real
//! client (tokio-tungstenite), the web client's files, the health probes, and the client's
//! address behind a proxy. Every read has a timeout.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{build, builder, Client, TestServer, READ_TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};
use tokio_tungstenite::{
    client_async,
    tungstenite::{
        client::IntoClientRequest,
        protocol::{frame::coding::CloseCode, CloseFrame},
        Error as WsError, Message,
    },
    WebSocketStream,
};

/// Test settings with the HTTP listener on an ephemeral loopback port.
fn web() -> actor_chat::config::SettingsBuilder {
    builder().set("http.bind", "127.0.0.1:0")
}

/// A WebSocket client speaking the line protocol, one text frame per line.
struct Ws {
    stream: WebSocketStream<TcpStream>,
}

/// How a WebSocket connection ended, as the client saw it.
#[derive(Debug, PartialEq)]
struct Ended {
    /// Text frames before the end.
    lines: Vec<String>,
    /// The close frame's code, if a close frame came.
    close: Option<CloseCode>,
}

impl Ws {
    /// Connects to `/ws` at `addr` with these extra request headers (an `Origin`, a
    /// `X-Forwarded-For`); the handshake's error (a 403, say) if it is refused.
    async fn try_connect(addr: SocketAddr, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
        let mut request = format!("ws://{addr}/ws")
            .into_client_request()
            .expect("a valid request");
        for (name, value) in headers {
            request.headers_mut().insert(
                http_name(name),
                value.parse().expect("a valid header value"),
            );
        }
        let tcp = timeout(READ_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let (stream, _) = timeout(READ_TIMEOUT, client_async(request, tcp))
            .await
            .expect("the handshake in time")?;
        Ok(Ws { stream })
    }

    async fn connect(addr: SocketAddr) -> Ws {
        Self::try_connect(addr, &[]).await.expect("the upgrade")
    }

    /// Connects and logs in as `name`, consuming `ok|login|NAME`.
    async fn login(addr: SocketAddr, name: &str) -> Ws {
        let mut ws = Self::connect(addr).await;
        ws.send(&format!("login|{name}")).await;
        ws.expect(&format!("ok|login|{name}")).await;
        ws
    }

    async fn send_message(&mut self, message: Message) {
        timeout(READ_TIMEOUT, self.stream.send(message))
            .await
            .expect("send within the timeout")
            .expect("send");
    }

    /// Sends one line as one text frame.
    async fn send(&mut self, line: &str) {
        self.send_message(Message::text(line)).await;
    }

    /// The next frame other than ping and pong (answered by the library), or `None` at the end.
    async fn next(&mut self) -> Option<Message> {
        loop {
            let message = timeout(READ_TIMEOUT, self.stream.next())
                .await
                .expect("a frame (or the end) within the read timeout");
            match message {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return Some(message),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next text frame; fails the test on anything else.
    async fn recv(&mut self) -> String {
        match self.next().await {
            Some(Message::Text(text)) => text.as_str().to_owned(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    async fn expect(&mut self, line: &str) {
        assert_eq!(self.recv().await, line);
    }

    /// Proves nothing else was queued: the answer to `ping` comes next.
    async fn expect_nothing_pending(&mut self) {
        self.send("ping").await;
        self.expect("pong").await;
    }

    /// Reads to the end: the text frames, then the close frame's code.
    async fn expect_closed(&mut self) -> Ended {
        let mut lines = Vec::new();
        loop {
            match self.next().await {
                Some(Message::Text(text)) => lines.push(text.as_str().to_owned()),
                Some(Message::Close(frame)) => {
                    // The library answers the close; the stream then ends.
                    while self.next().await.is_some() {}
                    return Ended {
                        lines,
                        close: frame.map(|frame: CloseFrame| frame.code),
                    };
                }
                Some(other) => panic!("unexpected frame {other:?}"),
                None => return Ended { lines, close: None },
            }
        }
    }
}

fn http_name(name: &str) -> tokio_tungstenite::tungstenite::http::HeaderName {
    name.parse().expect("a valid header name")
}

/// The status code of a refused handshake.
fn refused_status(result: Result<Ws, WsError>) -> u16 {
    match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, the upgrade succeeded"),
    }
}

/// One plain HTTP/1.1 GET; the status, the headers (lower-case names) and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    let mut stream = timeout(READ_TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
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
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

#[actix::test]
async fn every_protocol_row_works_over_a_websocket() {
    let server = TestServer::start(build(web())).await;
    let http = server.http_addr();
    let mut alice = Ws::login(http, "alice").await;
    let mut bob = Ws::login(http, "bob").await;
    // login: the peer list, and a notice to everyone else.
    bob.expect("login|alice").await;
    alice.expect("login|bob").await;
    // talk: to the named user only, nothing back.
    alice.send("talk|bob|hi | there").await;
    bob.expect("talk|alice|hi | there").await;
    alice.expect_nothing_pending().await;
    alice.send("talk|dave|anyone?").await;
    alice.expect("error|no-such-user|dave").await;
    // who
    alice.send("who").await;
    alice.expect("users|alice,bob").await;
    // join, names, say, rooms, leave
    alice.send("join|rust").await;
    alice.expect("ok|join|rust").await;
    alice.expect("members|rust|alice").await;
    bob.send("join|rust").await;
    bob.expect("ok|join|rust").await;
    bob.expect("members|rust|alice,bob").await;
    alice.expect("join|rust|bob").await;
    bob.send("say|rust|hello, room").await;
    alice.expect("say|rust|bob|hello, room").await;
    bob.expect_nothing_pending().await;
    alice.send("names|rust").await;
    alice.expect("members|rust|alice,bob").await;
    alice.send("names|nowhere").await;
    alice.expect("error|no-such-room|nowhere").await;
    alice.send("rooms").await;
    alice.expect("rooms|rust").await;
    bob.send("leave|rust").await;
    bob.expect("ok|leave|rust").await;
    alice.expect("leave|rust|bob").await;
    // history, without a store
    alice.send("history|#rust|5").await;
    alice.expect("error|no-history|#rust").await;
    // ping / pong, mistakes
    alice.send("pong").await;
    alice.send("ping").await;
    alice.expect("pong").await;
    alice.send("dance").await;
    alice.expect("error|unknown-command|dance").await;
    alice.send("login|alice").await;
    alice.expect("error|already-logged-in|alice").await;
    alice.send(&"x".repeat(5000)).await;
    alice.expect("error|line-too-long|4096").await;
    // exit: bye, then a close frame; the others hear of it.
    bob.send("exit").await;
    let ended = bob.expect_closed().await;
    assert_eq!(ended.lines, ["bye"]);
    assert_eq!(ended.close, Some(CloseCode::Normal));
    alice.expect("logout|bob").await;
    alice.expect_nothing_pending().await;
    server.shutdown().await;
}

#[actix::test]
async fn before_login_only_login_ping_pong_and_exit_work() {
    let server = TestServer::start(build(web())).await;
    let mut anon = Ws::connect(server.http_addr()).await;
    anon.send("who").await;
    anon.expect("error|not-logged-in|who").await;
    anon.send("login|not a name").await;
    anon.expect("error|bad-name|not a name").await;
    anon.send("ping").await;
    anon.expect("pong").await;
    anon.send("exit").await;
    assert_eq!(anon.expect_closed().await.lines, ["bye"]);
    server.shutdown().await;
}

#[actix::test]
async fn a_websocket_user_and_a_tcp_user_chat_both_ways() {
    let server = TestServer::start(build(web())).await;
    let mut web_user = Ws::login(server.http_addr(), "wendy").await;
    let mut tcp_user = Client::login(server.addr(), "tom").await;
    tcp_user.expect("login|wendy").await;
    web_user.expect("login|tom").await;
    web_user.send("talk|tom|from the browser").await;
    tcp_user.expect("talk|wendy|from the browser").await;
    tcp_user.send("talk|wendy|from the terminal").await;
    web_user.expect("talk|tom|from the terminal").await;
    web_user.send("join|lobby").await;
    web_user.expect("ok|join|lobby").await;
    web_user.expect("members|lobby|wendy").await;
    tcp_user.send("join|lobby").await;
    tcp_user.expect("ok|join|lobby").await;
    tcp_user.expect("members|lobby|tom,wendy").await;
    web_user.expect("join|lobby|tom").await;
    tcp_user.send("say|lobby|hi all").await;
    web_user.expect("say|lobby|tom|hi all").await;
    web_user.send("say|lobby|hello tom").await;
    tcp_user.expect("say|lobby|wendy|hello tom").await;
    web_user.expect_nothing_pending().await;
    tcp_user.expect_nothing_pending().await;
    server.shutdown().await;
}

#[actix::test]
async fn a_binary_frame_gets_bad_encoding_and_a_frame_carries_one_line_only() {
    let server = TestServer::start(build(web())).await;
    let http = server.http_addr();
    let mut alice = Ws::login(http, "alice").await;
    let mut bob = Ws::login(http, "bob").await;
    bob.expect("login|alice").await;
    alice.expect("login|bob").await;
    alice.send_message(Message::binary(b"who".to_vec())).await;
    alice.expect("error|bad-encoding|").await;
    // The connection lives on.
    alice.send("who").await;
    alice.expect("users|alice,bob").await;
    // A newline cannot smuggle a second command in, nor forge a line at the recipient's.
    alice.send("talk|bob|hi\nexit").await;
    alice.expect("error|bad-text|talk").await;
    alice.send("who\nexit").await;
    assert!(
        alice.recv().await.starts_with("error|unknown-command|who"),
        "the frame is one (unknown) command"
    );
    // One trailing line ending is forgiven.
    alice.send("talk|bob|with a newline\r\n").await;
    bob.expect("talk|alice|with a newline").await;
    alice.expect_nothing_pending().await;
    bob.expect_nothing_pending().await;
    server.shutdown().await;
}

#[actix::test]
async fn a_websocket_that_never_reads_is_cut_off_and_nobody_else_is() {
    // A small cap and grace, room for it in the list rule, flood control off.
    let settings = build(
        web()
            .set("server.max_connections", 16)
            .set("server.max_rooms", 16)
            .set("server.presence", "none")
            .set("limits.max_outbound_bytes", 64 * 1024)
            .set("limits.slow_reader_grace_secs", 0.5)
            .set("limits.lines_per_sec", 0),
    );
    let server = TestServer::start(settings).await;
    let http = server.http_addr();
    let mut sleeper = Ws::login(http, "sleeper").await;
    sleeper.send("join|flood").await;
    sleeper.expect("ok|join|flood").await;
    sleeper.expect("members|flood|sleeper").await;
    let mut reader = Ws::login(http, "reader").await;
    reader.send("join|flood").await;
    reader.expect("ok|join|flood").await;
    reader.expect("members|flood|reader,sleeper").await;
    let mut sender = Client::login(server.addr(), "sender").await;
    sender.send("join|flood").await;
    sender.expect("ok|join|flood").await;
    sender.expect("members|flood|reader,sender,sleeper").await;
    reader.expect("join|flood|sender").await;

    // Until the sleeper is cut off: every buffer between its outbox and its socket fills, then
    // its outbox passes the cap, then its grace runs out. How many lines that takes depends on
    // how fast the server moves them (a fixed flood can end within the grace period), so the
    // flood goes on until the reader sees the sleeper leave — or fails the test at a bound far
    // past every buffer (and past the total budget, which would cut the sleeper anyway).
    let text = "z".repeat(4000);
    let left = std::cell::Cell::new(false);
    let sent = std::cell::Cell::new(0usize);
    let flood = async {
        while !left.get() {
            let first = sent.get();
            assert!(first < 100_000, "the sleeper was never cut off");
            let mut burst = String::new();
            for i in first..first + 100 {
                burst.push_str(&format!("say|flood|{i} {text}\n"));
            }
            // Counted before the write, so the reader never stops short of a burst.
            sent.set(first + 100);
            sender.send_raw(burst.as_bytes()).await;
        }
    };
    let read_all = async {
        let mut i = 0;
        while !left.get() || i < sent.get() {
            let line = reader.recv().await;
            if line == "leave|flood|sleeper" && !left.get() {
                left.set(true);
                continue;
            }
            assert_eq!(line, format!("say|flood|sender|{i} {text}"));
            i += 1;
        }
    };
    tokio::join!(flood, read_all);
    // What the sleeper finally reads ends with the close, far short of the flood.
    let ended = sleeper.expect_closed().await;
    assert!(
        ended.lines.len() < sent.get() / 2,
        "{} of {} lines",
        ended.lines.len(),
        sent.get()
    );
    // The reader got every line, and the sender is still served; the sleeper is gone.
    sender.expect("leave|flood|sleeper").await;
    sender.send("names|flood").await;
    sender.expect("members|flood|reader,sender").await;
    reader.expect_nothing_pending().await;
    server.shutdown().await;
}

#[actix::test]
async fn an_origin_other_than_the_page_is_refused_with_403() {
    let server = TestServer::start(build(web())).await;
    let http = server.http_addr();
    let evil = Ws::try_connect(http, &[("origin", "https://evil.example")]).await;
    assert_eq!(refused_status(evil), 403);
    let other_port = Ws::try_connect(http, &[("origin", "http://127.0.0.1:1")]).await;
    assert_eq!(refused_status(other_port), 403);
    // The page's own origin (the request's Host, over http), and no Origin at all.
    let own = format!("http://{http}");
    let mut page = Ws::try_connect(http, &[("origin", &own)])
        .await
        .expect("the page's own origin is accepted");
    page.send("ping").await;
    page.expect("pong").await;
    let mut bot = Ws::connect(http).await;
    bot.send("ping").await;
    bot.expect("pong").await;
    server.shutdown().await;
}

#[actix::test]
async fn allowed_origins_replace_the_page_s_own() {
    let settings = build(web().set("http.allowed_origins", "https://chat.example.org"));
    let server = TestServer::start(settings).await;
    let http = server.http_addr();
    let mut listed = Ws::try_connect(http, &[("origin", "https://Chat.Example.org:443")])
        .await
        .expect("a listed origin is accepted");
    listed.send("ping").await;
    listed.expect("pong").await;
    let own = format!("http://{http}");
    assert_eq!(
        refused_status(Ws::try_connect(http, &[("origin", &own)]).await),
        403
    );
    server.shutdown().await;
}

#[actix::test]
async fn shutdown_says_bye_shutdown_then_sends_a_close_frame() {
    let mut server = TestServer::start(build(web())).await;
    let mut alice = Ws::login(server.http_addr(), "alice").await;
    alice.expect_nothing_pending().await;
    server.begin_shutdown();
    let ended = alice.expect_closed().await;
    assert_eq!(ended.lines, ["bye|shutdown"]);
    assert_eq!(ended.close, Some(CloseCode::Normal));
    server.shutdown().await;
}

#[actix::test]
async fn max_connections_counts_websocket_connections() {
    let server = TestServer::start(build(web().set("server.max_connections", 2))).await;
    let http = server.http_addr();
    let _tcp = Client::login(server.addr(), "tom").await;
    let _web = Ws::login(http, "wendy").await;
    // Full: a third WebSocket is told so, then closed; so is a third TCP connection.
    let mut third = Ws::connect(http).await;
    let ended = third.expect_closed().await;
    assert_eq!(ended.lines, ["bye|server-full"]);
    let mut tcp = Client::connect(server.addr()).await;
    assert_eq!(tcp.expect_closed().await, ["bye|server-full"]);
    server.shutdown().await;
}

#[actix::test]
async fn the_web_client_is_served_with_a_strict_policy() {
    let server = TestServer::start(build(web())).await;
    let http = server.http_addr();
    for (path, content_type, file) in [
        ("/", "text/html", include_str!("../web/index.html")),
        ("/app.js", "text/javascript", include_str!("../web/app.js")),
        ("/style.css", "text/css", include_str!("../web/style.css")),
    ] {
        let (status, headers, body) = get(http, path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(body, file, "{path}");
        let served_type = header(&headers, "content-type").unwrap_or_default();
        assert!(
            served_type.starts_with(content_type),
            "{path}: {served_type}"
        );
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
        let policy = header(&headers, "content-security-policy").unwrap_or_default();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
    }
    let (status, _, _) = get(http, "/nothing-here").await;
    assert_eq!(status, 404);
    server.shutdown().await;
}

#[actix::test]
async fn healthz_and_readyz_answer_and_readyz_says_when_shutting_down() {
    let mut server = TestServer::start(build(web().set("server.shutdown_grace_secs", 10))).await;
    let http = server.http_addr();
    assert_eq!(get(http, "/healthz").await.2, "ok\n");
    let (status, _, body) = get(http, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    // A client that reads nothing holds the shutdown in its grace period (it never answers
    // the close), long enough to look.
    let mut stuck = Ws::login(http, "stuck").await;
    stuck.expect_nothing_pending().await;
    server.begin_shutdown();
    let mut answers = Vec::new();
    for _ in 0..200 {
        let (status, _, body) = get(http, "/readyz").await;
        answers.push((status, body.clone()));
        if status == 503 {
            break;
        }
    }
    assert_eq!(
        answers.last(),
        Some(&(503, "shutting down\n".to_owned())),
        "{answers:?}"
    );
    assert_eq!(get(http, "/healthz").await.0, 200, "still serving");
    assert_eq!(
        refused_status(Ws::try_connect(http, &[]).await),
        503,
        "no new sessions"
    );
    drop(stuck);
    server.shutdown().await;
}

#[actix::test]
async fn readyz_says_so_when_the_store_is_unreachable() {
    let dir = std::env::temp_dir().join(format!("actor-chat-web-readyz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = dir.join("chat.db");
    let settings = build(web().set("store.url", format!("sqlite://{}", db.display())));
    let server = TestServer::start_with_store(settings).await;
    let http = server.http_addr();
    let (status, _, body) = get(http, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    // Someone takes the table away.
    let store = actor_chat::store::Store::open_sqlite(&db)
        .await
        .expect("open the same file");
    if let actor_chat::store::Store::Sqlite(pool) = &store {
        sqlx_rename(pool).await;
    }
    store.close().await;
    let (status, _, body) = get(http, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "store unreachable\n"));
    assert_eq!(get(http, "/healthz").await.0, 200);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn sqlx_rename(pool: &sqlx::SqlitePool) {
    sqlx::query("ALTER TABLE messages RENAME TO messages_gone")
        .execute(pool)
        .await
        .expect("rename the table");
}

/// With one connection per address and loopback not exempt, which address the gate counted
/// shows in whether a second connection is let in.
fn one_per_address() -> actor_chat::config::SettingsBuilder {
    web()
        .set("limits.max_connections_per_ip", 1)
        .set("limits.exempt_networks", "")
}

#[actix::test]
async fn x_forwarded_for_from_a_trusted_proxy_names_the_client() {
    let server = TestServer::start(build(one_per_address())).await;
    let http = server.http_addr();
    let mut first = Ws::try_connect(http, &[("x-forwarded-for", "198.51.100.1")])
        .await
        .expect("upgrade");
    first.expect_nothing_pending().await;
    let mut second = Ws::try_connect(http, &[("x-forwarded-for", "198.51.100.2, 127.0.0.1")])
        .await
        .expect("upgrade");
    second.expect_nothing_pending().await;
    let mut again = Ws::try_connect(http, &[("forwarded", "for=198.51.100.1")])
        .await
        .expect("upgrade");
    assert_eq!(
        again.expect_closed().await.lines,
        ["bye|too-many-connections"]
    );
    server.shutdown().await;
}

#[actix::test]
async fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let settings = build(one_per_address().set("http.trusted_proxies", "10.0.0.0/8"));
    let server = TestServer::start(settings).await;
    let http = server.http_addr();
    let mut first = Ws::try_connect(http, &[("x-forwarded-for", "198.51.100.1")])
        .await
        .expect("upgrade");
    first.expect_nothing_pending().await;
    // Another "client" by its header, but the same peer: 127.0.0.1 already has its one.
    let mut second = Ws::try_connect(http, &[("x-forwarded-for", "198.51.100.2")])
        .await
        .expect("upgrade");
    assert_eq!(
        second.expect_closed().await.lines,
        ["bye|too-many-connections"]
    );
    server.shutdown().await;
}

#[actix::test]
async fn a_websocket_ping_is_answered_and_a_pong_is_a_sign_of_life() {
    let settings = build(
        web()
            .set("heartbeat.interval_secs", 0.5)
            .set("heartbeat.timeout_secs", 2),
    );
    let server = TestServer::start(settings).await;
    let mut alice = Ws::login(server.http_addr(), "alice").await;
    alice
        .send_message(Message::Ping(b"hello".to_vec().into()))
        .await;
    let pong = timeout(READ_TIMEOUT, alice.stream.next())
        .await
        .expect("a frame in time");
    assert!(
        matches!(&pong, Some(Ok(Message::Pong(bytes))) if bytes.as_ref() == b"hello"),
        "{pong:?}"
    );
    // The protocol's ping comes with a WebSocket ping; the library's automatic pong (sent as it
    // reads) keeps the session alive through several timeouts without a `pong` line.
    let mut pings = 0;
    // Longer than the heartbeat timeout: without the pongs counting, the session would end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(3.5);
    while tokio::time::Instant::now() < deadline {
        match timeout(Duration::from_secs(2), alice.stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.as_str() == "ping" => pings += 1,
            Ok(Some(Ok(Message::Ping(_)))) => {
                // Flush the automatic pong.
                let _ = alice.stream.flush().await;
            }
            Ok(Some(Ok(other))) => panic!("unexpected {other:?}"),
            Ok(Some(Err(error))) => panic!("the connection failed: {error}"),
            Ok(None) => panic!("closed: the WebSocket pongs did not count"),
            Err(_) => {}
        }
    }
    assert!(pings >= 2, "{pings} pings");
    alice.expect_nothing_pending().await;
    server.shutdown().await;
}

/// A self-signed certificate for `localhost` written to `dir`; the paths of the pair.
fn write_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).expect("a temporary folder");
    let (cert, key) =
        actor_chat::tls::self_signed(&["localhost".to_owned()]).expect("a certificate");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert).expect("write the certificate");
    std::fs::write(&key_path, key).expect("write the key");
    (cert_path, key_path)
}

/// A `wss://` connection to `addr` trusting only the certificate in `ca`; the handshake's
/// error (TLS or WebSocket) if it fails.
async fn wss_connect(
    addr: SocketAddr,
    ca: &std::path::Path,
    origin: &str,
) -> Result<WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>, String> {
    let config = actor_chat::tls::client_config(Some(ca)).map_err(|e| e.to_string())?;
    let connector = actor_chat::tls::connector(config);
    let tcp = timeout(READ_TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let name = actor_chat::tls::server_name("localhost").expect("a name");
    let tls = timeout(READ_TIMEOUT, connector.connect(name, tcp))
        .await
        .expect("the TLS handshake in time")
        .map_err(|error| error.to_string())?;
    let mut request = format!("wss://localhost:{}/ws", addr.port())
        .into_client_request()
        .expect("a valid request");
    request
        .headers_mut()
        .insert(http_name("origin"), origin.parse().expect("a header value"));
    let (stream, _) = timeout(READ_TIMEOUT, client_async(request, tls))
        .await
        .expect("the upgrade in time")
        .map_err(|error| error.to_string())?;
    Ok(stream)
}

#[actix::test]
async fn https_serves_wss_with_the_tls_certificate_and_its_reloads() {
    let dir = std::env::temp_dir().join(format!("actor-chat-web-https-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (cert, key) = write_certificate(&dir);
    let settings = build(
        web()
            .set("http.tls", true)
            .set("tls.bind", "127.0.0.1:0")
            .set("tls.cert", cert.display())
            .set("tls.key", key.display()),
    );
    let server = TestServer::start(settings).await;
    let http = server.http_addr();
    // The page's own origin is now https://.
    let own = format!("https://localhost:{}", http.port());
    let mut alice = wss_connect(http, &cert, &own).await.expect("wss works");
    alice
        .send(Message::text("login|alice"))
        .await
        .expect("send");
    let reply = timeout(READ_TIMEOUT, alice.next())
        .await
        .expect("a reply in time");
    assert!(
        matches!(&reply, Some(Ok(Message::Text(text))) if text.as_str() == "ok|login|alice"),
        "{reply:?}"
    );
    let insecure = format!("http://localhost:{}", http.port());
    let refused = wss_connect(http, &cert, &insecure)
        .await
        .err()
        .unwrap_or_default();
    assert!(refused.contains("403"), "{refused}");

    // A new certificate in the same files, reloaded (as on SIGHUP): new connections get it.
    let old = dir.join("old.pem");
    std::fs::rename(&cert, &old).expect("keep the old certificate");
    write_certificate(&dir);
    server.certificates().reload().expect("the new pair loads");
    let stale = wss_connect(http, &old, &own)
        .await
        .err()
        .unwrap_or_default();
    assert!(!stale.is_empty(), "the old certificate is no longer served");
    let mut bob = wss_connect(http, &cert, &own)
        .await
        .expect("the new one is");
    bob.send(Message::text("ping")).await.expect("send");
    let reply = timeout(READ_TIMEOUT, bob.next())
        .await
        .expect("a reply in time");
    assert!(
        matches!(&reply, Some(Ok(Message::Text(text))) if text.as_str() == "pong"),
        "{reply:?}"
    );
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The server binary as an operator runs it: `http listening on ADDR` in the log, the probes,
/// a WebSocket user and a TCP user, and SIGTERM ending the WebSocket with `bye|shutdown` and a
/// close frame.
#[actix::test]
async fn the_server_binary_serves_http_and_says_where() {
    use common::process::ServerProcess;
    let mut command = ServerProcess::command("config/default.toml");
    command.env("CHAT__HTTP__BIND", "127.0.0.1:0");
    let mut server = ServerProcess::spawn(command);
    let line = server
        .wait_for_log("http listening on ")
        .expect("the server logs its HTTP address");
    let http: SocketAddr = line
        .rsplit("listening on ")
        .next()
        .and_then(|addr| addr.trim().parse().ok())
        .expect("an address after 'http listening on'");
    assert_eq!(get(http, "/healthz").await.2, "ok\n");
    assert_eq!(get(http, "/readyz").await.0, 200);
    let mut web_user = Ws::login(http, "wendy").await;
    let mut tcp_user = Client::login(server.addr, "tom").await;
    tcp_user.expect("login|wendy").await;
    web_user.expect("login|tom").await;
    web_user.send("talk|tom|hello from the page").await;
    tcp_user.expect("talk|wendy|hello from the page").await;
    server.signal(libc::SIGTERM);
    let ended = web_user.expect_closed().await;
    assert_eq!(ended.lines, ["bye|shutdown"]);
    assert_eq!(ended.close, Some(CloseCode::Normal));
    assert_eq!(tcp_user.expect_closed().await, ["bye|shutdown"]);
    let status = server.wait_exit().expect("the server exits in time");
    assert_eq!(status.code(), Some(0));
}

#[actix::test]
async fn fragmented_messages_are_one_line_and_an_oversized_frame_closes() {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    };
    let fragment = |data: &str, opcode: Data, last: bool| {
        Message::Frame(Frame::message(
            data.as_bytes().to_vec(),
            OpCode::Data(opcode),
            last,
        ))
    };
    let server = TestServer::start(build(web())).await;
    let http = server.http_addr();
    let mut alice = Ws::login(http, "alice").await;
    let mut bob = Ws::login(http, "bob").await;
    bob.expect("login|alice").await;
    alice.expect("login|bob").await;
    // A text message in three fragments is one line.
    alice
        .send_message(fragment("talk|bob|in ", Data::Text, false))
        .await;
    alice
        .send_message(fragment("three ", Data::Continue, false))
        .await;
    alice
        .send_message(fragment("parts", Data::Continue, true))
        .await;
    bob.expect("talk|alice|in three parts").await;
    // A fragmented binary message is one binary message.
    alice
        .send_message(fragment("who", Data::Binary, false))
        .await;
    alice
        .send_message(fragment("who", Data::Continue, true))
        .await;
    alice.expect("error|bad-encoding|").await;
    alice.expect_nothing_pending().await;
    // Past 64 KiB (4 × 4096 is less), a frame closes the connection: too big (1009).
    alice.send(&"x".repeat(70_000)).await;
    let ended = alice.expect_closed().await;
    assert_eq!(ended.close, Some(CloseCode::Size), "{ended:?}");
    bob.expect("logout|alice").await;
    server.shutdown().await;
}

/// Behind a proxy that ends TLS, the connection is encrypted as far as the network goes: a
/// trusted proxy's `X-Forwarded-Proto: https` lets passwords through where plain HTTP from
/// another machine gets `tls-required`.
#[actix::test]
async fn a_trusted_proxy_saying_https_makes_the_websocket_encrypted() {
    let server = TestServer::start(build(web())).await;
    let http = server.http_addr();
    let mut plain = Ws::try_connect(http, &[("x-forwarded-for", "198.51.100.9")])
        .await
        .expect("upgrade");
    plain.send("login|alice|correct horse").await;
    plain.expect("error|tls-required|login").await;
    let mut proxied = Ws::try_connect(
        http,
        &[
            ("x-forwarded-for", "198.51.100.9"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await
    .expect("upgrade");
    proxied.send("login|alice|correct horse").await;
    let answer = proxied.recv().await;
    assert_ne!(answer, "error|tls-required|login");
    server.shutdown().await;
}
