//! Helpers shared by the integration tests: an in-process server on `127.0.0.1:0` and a raw
//! line client whose every read has a timeout.

#![allow(dead_code)] // each test binary uses its own subset

use std::{net::SocketAddr, time::Duration};

pub mod process;

use actor_chat::{
    codec::{Frame, LineCodec},
    config::{Settings, SettingsBuilder},
    server::{self, Placement},
};
use futures_util::StreamExt;
use tokio::{
    io::AsyncWriteExt,
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    sync::oneshot,
    task::JoinHandle,
    time::timeout,
};

/// Generous: a read that takes this long means the line is not coming.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The built-in defaults, bound to an ephemeral loopback port, with two workers so that
/// sessions really are spread over threads; change more keys with `.set(KEY, VALUE)` and finish
/// with [`build`]. Tests get their settings through the same checks as the server's config.
pub fn builder() -> SettingsBuilder {
    Settings::builder()
        .set("server.bind", "127.0.0.1:0")
        .set("server.workers", 2)
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
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    running: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server on its own worker threads, as in production.
    pub async fn start(settings: Settings) -> TestServer {
        Self::start_on(settings, Placement::Workers).await
    }

    /// Pauses this test's clock and starts a server whose sessions all run on the test's own
    /// thread, so time is the test's: a 30 s heartbeat passes as soon as nothing else is left
    /// to do, deterministically and without waiting. Every timer — the server's and the test's
    /// read timeouts alike — then runs on virtual time.
    pub async fn start_paused(settings: Settings) -> TestServer {
        tokio::time::pause();
        Self::start_on(settings, Placement::CurrentThread).await
    }

    async fn start_on(settings: Settings, placement: Placement) -> TestServer {
        let listener = TcpListener::bind(settings.bind())
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let running = actix_rt::spawn(async move {
            server::serve(settings, listener, stopped, placement)
                .await
                .expect("the server takes over its listener");
        });
        TestServer {
            addr,
            stop: Some(stop),
            running,
        }
    }

    /// Asks the server to shut down and waits (bounded) until `run` returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        timeout(Duration::from_secs(30), &mut self.running)
            .await
            .expect("server stops within 30 s")
            .expect("server task did not panic");
    }

    pub async fn connect(&self) -> Client {
        Client::connect(self.addr).await
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
        Client::login(self.addr, name).await
    }
}

/// A raw protocol client.
pub struct Client {
    lines: Lines,
    writer: Writer,
}

/// The reading half of a [`Client`].
pub struct Lines {
    reader: tokio_util::codec::FramedRead<OwnedReadHalf, LineCodec>,
}

/// The writing half of a [`Client`].
pub struct Writer {
    writer: OwnedWriteHalf,
}

impl Client {
    /// Connects to `addr` and logs in as `name`, consuming `ok|login|NAME` (but not the peer
    /// list).
    pub async fn login(addr: SocketAddr, name: &str) -> Client {
        let mut client = Client::connect(addr).await;
        client.send(&format!("login|{name}")).await;
        client.expect(&format!("ok|login|{name}")).await;
        client
    }

    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = timeout(READ_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let (reader, writer) = stream.into_split();
        Client {
            lines: Lines {
                reader: tokio_util::codec::FramedRead::new(reader, LineCodec::new(1 << 22)),
            },
            writer: Writer { writer },
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
    /// The next line, or `None` at end of stream.
    pub async fn try_recv(&mut self) -> Option<String> {
        let frame = timeout(READ_TIMEOUT, self.reader.next())
            .await
            .expect("a line (or the end of the stream) within the read timeout")?;
        match frame {
            Ok(Frame::Line(line)) => Some(String::from_utf8(line.to_vec()).expect("utf-8")),
            Ok(Frame::TooLong) => panic!("server sent an over-long line"),
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
