//! Helpers shared by the integration tests: an in-process server (on `127.0.0.1:0`, or reached
//! through in-memory pipes under paused time) and a raw line client whose every read has a
//! timeout.

#![allow(dead_code)] // each test binary uses its own subset

use std::{net::SocketAddr, rc::Rc, sync::Arc, time::Duration};

pub mod accounts;
pub mod process;
pub mod screen;
pub mod temp;

use actor_chat::{
    codec::{Frame, LineCodec},
    config::{Settings, SettingsBuilder},
    server::{Listeners, Placement, Security, Server},
    store::StoreHandle,
    tls::Certificates,
    web::HttpListener,
};
use futures_util::StreamExt;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
    time::timeout,
};

/// Bytes in flight each way on an in-memory connection.
const PIPE_BYTES: usize = 64 * 1024;

/// Generous: a read that takes this long means the line is not coming.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The built-in defaults, bound to an ephemeral loopback port, with two workers so that
/// sessions really are spread over threads, and no store (`store.url = ""`: no test writes a
/// database into the repository; set `store.url` to a temporary file to have one); change more
/// keys with `.set(KEY, VALUE)` and finish with [`build`]. Tests get their settings through the
/// same checks as the server's config.
pub fn builder() -> SettingsBuilder {
    Settings::builder()
        .set("server.bind", "127.0.0.1:0")
        .set("server.workers", 2)
        .set("store.url", "")
        .set("http.bind", "")
}

/// Settings from [`builder`] and the keys a test changed.
pub fn build(builder: SettingsBuilder) -> Settings {
    builder.build().expect("the test's settings are valid")
}

/// Default settings (see [`builder`]).
pub fn settings() -> Settings {
    build(builder())
}

/// [`settings`] with no login/logout notices, so tests see only the lines they cause.
pub fn settings_without_presence() -> Settings {
    build(builder().set("server.presence", "none"))
}

/// [`settings`] with flood control off, for tests that send a lot.
pub fn settings_without_flood_control() -> Settings {
    build(builder().set("limits.lines_per_sec", 0))
}

/// A server running inside the current actix system.
pub struct TestServer {
    server: Rc<Server>,
    /// The TCP address it listens on; `None` when it is reached in memory only.
    addr: Option<SocketAddr>,
    /// The HTTP address, when `http.bind` is set (tests that speak WebSocket set it to
    /// `127.0.0.1:0`; [`builder`] turns it off).
    http: Option<SocketAddr>,
    /// The `[tls]` certificate, when the HTTP listener speaks HTTPS (`http.tls`).
    certificates: Option<Arc<Certificates>>,
    stop: Option<oneshot::Sender<()>>,
    running: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server on its own worker threads and a loopback listener, as in production,
    /// keeping nothing.
    pub async fn start(settings: Settings) -> TestServer {
        Self::start_on(settings, None).await
    }

    /// As [`TestServer::start`], with the store `store.url` names opened first.
    pub async fn start_with_store(settings: Settings) -> TestServer {
        let store = StoreHandle::start(settings.store())
            .await
            .expect("the test's store opens")
            .expect("the test's settings name a store");
        Self::start_on(settings, Some(store)).await
    }

    async fn start_on(settings: Settings, store: Option<StoreHandle>) -> TestServer {
        let listener = TcpListener::bind(settings.bind().expect("the tests listen on plain TCP"))
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let mut listeners = Listeners {
            plain: Some(listener),
            ..Listeners::default()
        };
        let mut http = None;
        let mut certificates = None;
        if let Some(http_settings) = settings.http() {
            let listener = TcpListener::bind(http_settings.bind())
                .await
                .expect("bind the HTTP listener");
            http = Some(listener.local_addr().expect("bound address"));
            if http_settings.tls() {
                let tls = settings.tls().expect("http.tls needs [tls]");
                certificates = Some(Certificates::load(tls).expect("the test's certificate loads"));
            }
            listeners.http = Some(HttpListener {
                listener,
                tls: certificates.clone(),
            });
        }
        let server = Rc::new(Server::start_with_store(
            settings,
            Placement::Workers,
            store,
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let running = actix_rt::spawn({
            let server = server.clone();
            async move {
                server
                    .serve(listeners, stopped)
                    .await
                    .expect("the server takes over its listeners");
                server.shutdown().await;
            }
        });
        TestServer {
            server,
            addr: Some(addr),
            http,
            certificates,
            stop: Some(stop),
            running,
        }
    }

    /// Pauses this test's clock and starts a server that runs on the test's own thread and is
    /// reached through in-memory pipes, so time is the test's: a heartbeat passes as soon as
    /// nothing else is left to do, deterministically and without waiting. Every timer — the
    /// server's and the test's read timeouts alike — then runs on virtual time. (Not over
    /// sockets: a paused clock jumps ahead whenever the thread would wait, even for bytes the
    /// kernel is about to deliver.)
    pub async fn start_paused(settings: Settings) -> TestServer {
        tokio::time::pause();
        let server = Rc::new(Server::start(settings, Placement::CurrentThread));
        TestServer::in_memory(server)
    }

    /// The server's metrics in the Prometheus text format ([`Server::metrics_text`]).
    pub fn metrics_text(&self) -> String {
        self.server.metrics_text()
    }

    /// A server with the store `store.url` names, on the test's own thread and reached through
    /// in-memory pipes (so a client can be given any address, and any security), on the real
    /// clock: the store and the password hashing run on other threads, which a paused clock
    /// would not wait for.
    pub async fn start_in_memory_with_store(settings: Settings) -> TestServer {
        let store = StoreHandle::start(settings.store())
            .await
            .expect("the test's store opens")
            .expect("the test's settings name a store");
        let server = Rc::new(Server::start_with_store(
            settings,
            Placement::CurrentThread,
            Some(store),
        ));
        TestServer::in_memory(server)
    }

    /// Wraps a server on the test's own thread, reached through in-memory pipes, that stops
    /// when the test says so.
    fn in_memory(server: Rc<Server>) -> TestServer {
        let (stop, stopped) = oneshot::channel::<()>();
        let running = actix_rt::spawn({
            let server = server.clone();
            async move {
                let _ = stopped.await;
                server.shutdown().await;
            }
        });
        TestServer {
            server,
            addr: None,
            http: None,
            certificates: None,
            stop: Some(stop),
            running,
        }
    }

    /// Connects an in-memory client that the server takes to be at `peer`, over a transport
    /// of the given `security`.
    pub fn connect_with(&self, peer: SocketAddr, security: Security) -> Client {
        assert!(self.addr.is_none(), "only an in-memory server");
        Client::over(
            self.server
                .connect_in_memory_with(peer, PIPE_BYTES, security),
        )
    }

    /// Has the server read the registered names from its store again (as on SIGHUP).
    pub fn refresh_accounts(&self) {
        self.server.refresh_accounts();
    }

    /// The TCP address of a server from [`TestServer::start`].
    pub fn addr(&self) -> SocketAddr {
        self.addr
            .expect("a paused server has no socket: use connect() or login()")
    }

    /// The HTTP address of a server started with `http.bind` set.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .expect("this server has no HTTP listener: set http.bind = \"127.0.0.1:0\"")
    }

    /// The certificate of a server whose HTTP listener speaks HTTPS, to reload it.
    pub fn certificates(&self) -> &Certificates {
        self.certificates
            .as_deref()
            .expect("this server does not serve HTTPS: set http.tls and [tls]")
    }

    /// Asks the server to start shutting down, without waiting (see [`TestServer::shutdown`]).
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Asks the server to shut down and waits (bounded) until it has.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        timeout(Duration::from_secs(30), &mut self.running)
            .await
            .expect("server stops within 30 s")
            .expect("server task did not panic");
    }

    pub async fn connect(&self) -> Client {
        match self.addr {
            Some(addr) => Client::connect(addr).await,
            None => self.connect_from(SocketAddr::from(([127, 0, 0, 1], 0))),
        }
    }

    /// Connects a paused server's client that the server takes to be at `peer` (in memory:
    /// no packet goes anywhere).
    pub fn connect_from(&self, peer: SocketAddr) -> Client {
        assert!(
            self.addr.is_none(),
            "only a paused (or in-memory) server is reached in memory"
        );
        Client::over(self.server.connect_in_memory(peer, PIPE_BYTES))
    }

    /// Logs in `names` one after another on a server with presence on, consuming every peer
    /// list and online notice, so that a test starts from quiet connections.
    pub async fn login_all<const N: usize>(&self, names: [&str; N]) -> [Client; N] {
        let mut clients: Vec<Client> = Vec::with_capacity(N);
        for name in names {
            let mut client = self.login(name).await;
            for (earlier, peer) in clients.iter_mut().zip(names) {
                client.expect(&format!("login|{peer}")).await;
                earlier.expect(&format!("login|{name}")).await;
            }
            clients.push(client);
        }
        match clients.try_into() {
            Ok(clients) => clients,
            Err(_) => unreachable!("one client per name"),
        }
    }

    /// Connects and logs in as `name`, consuming `ok|login|NAME` (but not the peer list).
    pub async fn login(&self, name: &str) -> Client {
        let mut client = self.connect().await;
        client.log_in(name).await;
        client
    }
}

/// A raw protocol client.
pub struct Client {
    lines: Lines,
    writer: Writer,
}

/// The reading half of a [`Client`].
pub struct Lines {
    reader: tokio_util::codec::FramedRead<Box<dyn AsyncRead + Unpin>, LineCodec>,
}

/// The writing half of a [`Client`].
pub struct Writer {
    writer: Box<dyn AsyncWrite + Unpin>,
}

impl Client {
    /// Connects to `addr` and logs in as `name`, consuming `ok|login|NAME` (but not the peer
    /// list).
    pub async fn login(addr: SocketAddr, name: &str) -> Client {
        let mut client = Client::connect(addr).await;
        client.log_in(name).await;
        client
    }

    /// Sends `login|NAME` and consumes `ok|login|NAME`.
    async fn log_in(&mut self, name: &str) {
        self.send(&format!("login|{name}")).await;
        self.expect(&format!("ok|login|{name}")).await;
    }

    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = timeout(READ_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        Client::over(stream)
    }

    /// A client over any byte stream.
    pub fn over(stream: impl AsyncRead + AsyncWrite + 'static) -> Client {
        let (reader, writer) = tokio::io::split(stream);
        Client {
            lines: Lines {
                reader: tokio_util::codec::FramedRead::new(
                    Box::new(reader) as Box<dyn AsyncRead + Unpin>,
                    LineCodec::new(1 << 22),
                ),
            },
            writer: Writer {
                writer: Box::new(writer),
            },
        }
    }

    /// For reading and writing from different tasks.
    pub fn split(self) -> (Lines, Writer) {
        (self.lines, self.writer)
    }

    pub async fn send(&mut self, line: &str) {
        self.writer.send(line).await
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.send_raw(bytes).await
    }

    pub async fn shutdown_write(&mut self) {
        self.writer.shutdown().await
    }

    pub async fn try_recv(&mut self) -> Option<String> {
        self.lines.try_recv().await
    }

    pub async fn recv(&mut self) -> String {
        self.lines.recv().await
    }

    pub async fn expect(&mut self, line: &str) {
        self.lines.expect(line).await
    }

    pub async fn expect_closed(&mut self) -> Vec<String> {
        self.lines.expect_closed().await
    }

    /// Proves nothing else was queued for this client: the server answers a client's lines in
    /// order, so the next line after a `ping` must be its `pong`.
    pub async fn expect_nothing_pending(&mut self) {
        self.send("ping").await;
        self.expect("pong").await;
    }
}

impl Writer {
    /// Sends one line; `\n` is added.
    pub async fn send(&mut self, line: &str) {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        self.send_raw(&bytes).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes)
            .await
            .expect("write within the timeout");
    }

    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        timeout(READ_TIMEOUT, self.writer.write_all(bytes))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }

    /// Half-closes: the server sees end of input.
    pub async fn shutdown(&mut self) {
        let _ = self.writer.shutdown().await;
    }
}

impl Lines {
    /// The next line, `Ok(None)` at end of stream, or `Err` if nothing came within `wait`: for
    /// tests that report a silent server rather than fail on it.
    pub async fn recv_within(&mut self, wait: Duration) -> Result<Option<String>, String> {
        match timeout(wait, self.reader.next()).await {
            Err(_) => Err(format!("nothing within {wait:?}")),
            Ok(None) => Ok(None),
            Ok(Some(Ok(Frame::Line(line)))) => {
                Ok(Some(String::from_utf8_lossy(&line).into_owned()))
            }
            Ok(Some(Ok(frame))) => Err(format!("an unexpected frame: {frame:?}")),
            Ok(Some(Err(error))) if error.kind() == std::io::ErrorKind::ConnectionReset => Ok(None),
            Ok(Some(Err(error))) => Err(format!("read failed: {error}")),
        }
    }

    /// The next line, or `None` at end of stream.
    pub async fn try_recv(&mut self) -> Option<String> {
        let frame = timeout(READ_TIMEOUT, self.reader.next())
            .await
            .expect("a line (or the end of the stream) within the read timeout")?;
        match frame {
            Ok(Frame::Line(line)) => Some(String::from_utf8(line.to_vec()).expect("utf-8")),
            Ok(Frame::TooLong) => panic!("server sent an over-long line"),
            Ok(Frame::Skipped) => panic!("server sent an empty line"),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(error) => panic!("read failed: {error}"),
        }
    }

    /// The next line; fails the test at end of stream.
    pub async fn recv(&mut self) -> String {
        self.try_recv()
            .await
            .expect("a line, but the connection closed")
    }

    pub async fn expect(&mut self, line: &str) {
        assert_eq!(self.recv().await, line);
    }

    /// Expects the server to close the connection; returns the lines before the end.
    pub async fn expect_closed(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        while let Some(line) = self.try_recv().await {
            rest.push(line);
        }
        rest
    }
}
