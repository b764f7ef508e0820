//! Accepting connections and running the server until shutdown.
//!
//! [`run`] starts one worker arbiter (one thread) per core and spreads sessions over them, so
//! every core serves connections while the user map stays single-owner in the [`ChatServer`].
//! The `ChatServer` and the acceptor live on the first worker rather than on threads of their
//! own: every message between threads costs a wake-up (an `eventfd` write, a context switch,
//! another `epoll_wait`), and this way a connection accepted onto the first worker logs in and
//! out without leaving its thread, and beside the workers only the main thread is left, waiting
//! for signals. (With two workers that cut the CPU spent per login by about a fifth; see
//! docs/PERFORMANCE.md.)
//!
//! A semaphore caps live connections; shutdown stops the acceptor, then cancels a token every
//! session watches, then waits, bounded, for them all to finish.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::{self, IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use ipnet::IpNet;

use actix::prelude::*;
use log::{debug, info, warn};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream},
    net::{TcpListener, TcpStream},
    sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore},
    time::{sleep, timeout},
};
use tokio_util::sync::CancellationToken;

pub use crate::connection::Security;

use crate::{
    accounts::{hashing::HashPool, throttle::Throttle},
    actors::{
        chat_server::{RefreshAccounts, Stopping},
        session::PendingLogins,
        ChatServer, Session, SessionContext,
    },
    codec::{ByeReason, Event},
    config::Settings,
    connection::{InMemory, Transport},
    metrics::{Departure, Metrics, OpenConnection},
    outbox::{self, Budget},
    store::StoreHandle,
    tls::{Certificates, TlsTransport},
    web::{self, HttpListener},
};

/// Longest pause between accept attempts while the process is out of file descriptors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// How long a refused connection is given to read its `bye|server-full` (or
/// `bye|too-many-connections`).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Refused connections being told why at once; past this, more are closed without a word, so
/// a connection storm cannot turn refusals into a descriptor leak of their own.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// Serves `listeners` until `shutdown` completes, then says `bye|shutdown` to every client and
/// waits up to `server.shutdown_grace_secs` for their connections to close.
///
/// Must be called inside an actix `System`. Fails if a listener cannot be moved to the
/// worker that accepts on it (after shutting down whatever had started).
pub async fn run(
    settings: Settings,
    store: Option<StoreHandle>,
    listeners: Listeners,
    shutdown: impl Future,
    hangup: Arc<Notify>,
) -> io::Result<()> {
    let server = Server::start_with_store(settings, Placement::Workers, store);
    let chat = server.chat.clone();
    actix_rt::spawn(async move {
        loop {
            hangup.notified().await;
            chat.do_send(RefreshAccounts);
        }
    });
    let accepted = server.serve(listeners, shutdown).await;
    server.shutdown().await;
    accepted
}

/// What a server accepts on: plain TCP, TLS, HTTP (at least one, for it to be any use).
#[derive(Default)]
pub struct Listeners {
    /// Plain-text connections (`server.bind`).
    pub plain: Option<TcpListener>,
    /// TLS connections (`tls.bind`), with the certificate they are served with.
    pub tls: Option<(TcpListener, Arc<Certificates>)>,
    /// HTTP or HTTPS (`http.bind`): the web client, health probes and WebSockets. It serves
    /// until [`Server::shutdown`] has closed the sessions, so that `/readyz` can say 503.
    pub http: Option<HttpListener>,
}

/// A running chat server: the `ChatServer`, the workers and the connection slots, ready to be
/// handed connections — by [`Server::accept`] from a TCP listener, or one by one in memory
/// ([`Server::connect_in_memory`]). Must be used inside an actix `System`.
pub struct Server {
    gate: Arc<Gate>,
    chat: Addr<ChatServer>,
    /// Cancelled at shutdown; every session watches it.
    stop: CancellationToken,
    /// The worker threads, when the server has its own.
    threads: Vec<Arbiter>,
    grace: Duration,
    /// Where delivered messages are kept, if anywhere; flushed at shutdown.
    store: Option<StoreHandle>,
    /// What `/metrics` shows; this server's own, shared with every piece that counts.
    metrics: Arc<Metrics>,
    /// The HTTP listener, while it runs.
    http: Mutex<Option<web::Running>>,
}

impl Server {
    /// Starts the `ChatServer` and, with [`Placement::Workers`], the worker threads, keeping
    /// nothing (whatever `store.url` says: opening a store is [`StoreHandle::start`]'s job).
    pub fn start(settings: Settings, placement: Placement) -> Server {
        Self::start_with_store(settings, placement, None)
    }

    /// As [`Server::start`], handing every delivered message to `store`.
    pub fn start_with_store(
        settings: Settings,
        placement: Placement,
        store: Option<StoreHandle>,
    ) -> Server {
        let threads: Vec<Arbiter> = match placement {
            Placement::Workers => (0..settings.server.workers.get())
                .map(|_| Arbiter::new())
                .collect(),
            Placement::CurrentThread => Vec::new(),
        };
        let workers: Vec<ArbiterHandle> = match placement {
            Placement::Workers => threads.iter().map(Arbiter::handle).collect(),
            Placement::CurrentThread => vec![Arbiter::current()],
        };
        let hashing = Arc::new(HashPool::per_core());
        // Without a store there are no accounts, and nothing for the time of an answer to tell.
        if store.is_some() {
            hashing.warm_up();
        }
        let metrics = Arc::new(Metrics::new(store.as_ref()));
        let chat_settings = settings.clone();
        let chat_store = store.clone();
        let chat_metrics = metrics.clone();
        let chat = ChatServer::start_in_arbiter(&workers[0], move |_| {
            ChatServer::new(&chat_settings, chat_store, chat_metrics)
        });
        let stop = CancellationToken::new();
        let grace = settings.server.shutdown_grace;
        let max_connections = settings.server.max_connections;
        let gate = Gate {
            slots: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            per_address: Arc::new(PerAddress {
                max: settings.limits.max_connections_per_ip,
                exempt: settings.limits.exempt_networks.clone(),
                open: Mutex::new(HashMap::new()),
            }),
            workers,
            context: Arc::new(SessionContext {
                server: chat.clone(),
                outbound: Arc::new(outbox::Limits {
                    cap: settings.limits.max_outbound_bytes,
                    grace: settings.limits.slow_reader_grace,
                    budget: Budget::new(settings.limits.max_total_outbound_bytes),
                    metrics: metrics.clone(),
                }),
                pending: PendingLogins::new(settings.limits.max_pending_logins),
                settings,
                shutdown: stop.clone(),
                store: store.clone(),
                metrics: metrics.clone(),
                hashing,
                throttle: Arc::new(Throttle::new()),
            }),
            next_conn: AtomicU64::new(0),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT)),
        };
        Server {
            gate: Arc::new(gate),
            chat,
            stop,
            threads,
            grace,
            store,
            metrics,
            http: Mutex::new(None),
        }
    }

    /// The server's metrics in the Prometheus text format (version 0.0.4): what `GET /metrics`
    /// answers, for an embedding program or a test to read without HTTP.
    /// docs/DEPLOYMENT.md lists every metric.
    pub fn metrics_text(&self) -> String {
        self.metrics.render()
    }

    /// Accepts plain TCP on `listener` until `until` completes or accepting fails (see
    /// [`Server::serve`]).
    pub async fn accept(&self, listener: TcpListener, until: impl Future) -> io::Result<()> {
        let listeners = Listeners {
            plain: Some(listener),
            ..Listeners::default()
        };
        self.serve(listeners, until).await
    }

    /// Accepts on `listeners` (on the first worker) until `until` completes or accepting on
    /// one of them fails, then closes them all. The sessions go on until [`Server::shutdown`].
    pub async fn serve(&self, listeners: Listeners, until: impl Future) -> io::Result<()> {
        if let Some(http) = listeners.http {
            self.serve_http(http)?;
        }
        let stop_accepting = CancellationToken::new();
        let (ended, mut acceptor_ended) = mpsc::unbounded_channel();
        let mut acceptors = 0;
        let plain = listeners.plain.map(|listener| (listener, None));
        let tls = listeners
            .tls
            .map(|(listener, certificates)| (listener, Some(certificates)));
        for (listener, tls) in plain.into_iter().chain(tls) {
            // Leave this thread's reactor; the accepting worker registers it with its own.
            let listener = match listener.into_std() {
                Ok(listener) => listener,
                Err(error) => {
                    stop_accepting.cancel();
                    return Err(error);
                }
            };
            let acceptor = Acceptor {
                gate: self.gate.clone(),
                tls,
            };
            let accepting = acceptor.serve(listener, stop_accepting.clone());
            let ended = ended.clone();
            self.gate.workers[0].spawn(async move {
                let _ = ended.send(accepting.await);
            });
            acceptors += 1;
        }
        drop(ended);
        let mut result = Ok(());
        tokio::select! {
            _ = until => {}
            end = acceptor_ended.recv() => {
                acceptors -= 1;
                // The acceptor's task only ends without a word if it panicked or its arbiter
                // died.
                result = end.unwrap_or_else(|| Err(io::Error::other("the acceptor stopped unexpectedly")));
            }
        }
        stop_accepting.cancel();
        for _ in 0..acceptors {
            match acceptor_ended.recv().await {
                Some(Ok(())) => {}
                Some(Err(error)) if result.is_ok() => result = Err(error),
                Some(Err(_)) => {}
                None if result.is_ok() => {
                    result = Err(io::Error::other("the acceptor stopped unexpectedly"))
                }
                None => {}
            }
        }
        result
    }

    /// Starts the HTTP listener (see [`crate::web`]), on actix-web's own worker threads.
    fn serve_http(&self, listener: HttpListener) -> io::Result<()> {
        let context = &self.gate.context;
        let settings = &context.settings;
        let Some(http) = settings.http.clone() else {
            return Err(io::Error::other(
                "an HTTP listener needs http.bind to be set in the settings",
            ));
        };
        let state = web::Web {
            gate: self.gate.clone(),
            secure: listener.tls.is_some(),
            http,
            stop: self.stop.clone(),
            store: self.store.clone(),
            max_line_bytes: settings.limits.max_line_bytes,
            metrics: self.metrics.clone(),
        };
        let limits = web::Limits {
            workers: settings.server.workers.get(),
            grace: self.grace,
            unacknowledged: settings.heartbeat.timeout,
        };
        let running = web::start(listener, state, limits)?;
        *self.http.lock().unwrap_or_else(PoisonError::into_inner) = Some(running);
        Ok(())
    }

    /// Serves one connection over an in-memory pipe, as if `peer` had connected, and returns
    /// the client's end: the whole server without a socket, for tests under paused time
    /// (a socket's readiness comes from the kernel, which a paused clock does not wait for;
    /// a pipe wakes its reader directly) and for embedding. `buffer` bytes may be in flight
    /// each way. A full server answers `bye|server-full` on it, as on TCP.
    pub fn connect_in_memory(&self, peer: SocketAddr, buffer: usize) -> DuplexStream {
        self.connect_in_memory_with(peer, buffer, Security::Plain)
    }

    /// As [`Server::connect_in_memory`], the pipe standing in for a transport of the given
    /// `security` (a TLS connection, say, for the rules about passwords).
    pub fn connect_in_memory_with(
        &self,
        peer: SocketAddr,
        buffer: usize,
        security: Security,
    ) -> DuplexStream {
        let (client, server) = tokio::io::duplex(buffer);
        match self.gate.slot(peer) {
            Ok(slot) => self.gate.admit(
                InMemory {
                    stream: server,
                    security,
                },
                peer,
                slot,
            ),
            Err(reason) => self.gate.refuse(server, peer, reason),
        }
        client
    }

    /// Reads the registered names from the store again now rather than at the next periodic
    /// refresh (SIGHUP does this): users logged in to an account that is gone are logged out.
    pub fn refresh_accounts(&self) {
        self.chat.do_send(RefreshAccounts);
    }

    /// Says `bye|shutdown` to every client and waits up to `server.shutdown_grace_secs` for
    /// their connections to close, then stops the worker threads. Call it once the listener is
    /// closed (after [`Server::accept`] returns), so that no connection arrives after it.
    pub async fn shutdown(&self) {
        let gate = &self.gate;
        info!("shutting down: closing {}", connections(gate.live()));
        self.chat.do_send(Stopping);
        self.stop.cancel();
        // Every live session holds one permit; all of them back means all sessions are done.
        let all = u32::try_from(gate.max_connections).unwrap_or(u32::MAX);
        match timeout(self.grace, gate.slots.acquire_many(all)).await {
            Ok(_) => info!("all connections closed"),
            Err(_) => warn!(
                "{} still open after {:?}; closing them",
                connections(gate.live()),
                self.grace
            ),
        }
        // Every session is done: what they delivered is queued; write it before leaving.
        if let Some(store) = &self.store {
            store.stop(self.grace).await;
        }
        // Last: until now `/readyz` has been saying 503 and `/ws` refusing.
        let http = self
            .http
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(http) = http {
            http.stop().await;
        }
        for thread in &self.threads {
            thread.stop();
        }
    }
}

/// Where the sessions, the `ChatServer` and the acceptor run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On `server.workers` worker threads of their own, the `ChatServer` and the acceptor on
    /// the first: the production layout.
    Workers,
    /// All on the caller's own arbiter, one thread: time is then the caller's to control
    /// (`tokio::time::pause()`), which is what the guards' tests need.
    CurrentThread,
}

/// Admission: where every connection, whatever its transport, becomes a session. It counts
/// connections against `server.max_connections` and, per client address, against
/// `limits.max_connections_per_ip`, numbers them, and deals them out to the workers in turn. A
/// new transport's listener uses it as the TCP acceptor below does (see [`crate::connection`]).
///
/// The `peer` a transport hands in is *the* address of the client, used for these limits and
/// the log: a transport that learns the real client address (a WebSocket behind a trusted
/// proxy) passes that one here, and nothing else needs to know.
pub(crate) struct Gate {
    slots: Arc<Semaphore>,
    max_connections: usize,
    per_address: Arc<PerAddress>,
    workers: Vec<ArbiterHandle>,
    context: Arc<SessionContext>,
    next_conn: AtomicU64,
    refusals: Arc<Semaphore>,
}

/// Connections per client address, for `limits.max_connections_per_ip`.
struct PerAddress {
    max: usize,
    exempt: Vec<IpNet>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    /// Counts one more connection from `ip`, or refuses it; `None` when `ip` is exempt.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Option<AddressSlot>, ByeReason> {
        // An IPv4 client of a dual-stack listener arrives as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        if self.exempt.iter().any(|net| net.contains(&ip)) {
            return Ok(None);
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return Err(ByeReason::TooManyConnections);
        }
        *count += 1;
        Ok(Some(AddressSlot {
            owner: self.clone(),
            ip,
        }))
    }
}

/// One connection counted against its address; uncounted when dropped.
struct AddressSlot {
    owner: Arc<PerAddress>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .owner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What a live connection holds for its lifetime: its place in `server.max_connections` and,
/// unless its address is exempt, in its address's count.
pub(crate) struct Slot {
    _connection: OwnedSemaphorePermit,
    _address: Option<AddressSlot>,
    /// Counted among the open connections of its transport once admitted.
    _open: Option<OpenConnection>,
}

impl Gate {
    /// A connection slot for a client at `peer`, or why there is none (`server-full`,
    /// `too-many-connections`).
    /// A refusal counts as a disconnect with that reason.
    pub(crate) fn slot(&self, peer: SocketAddr) -> Result<Slot, ByeReason> {
        let slot = self.per_address.admit(peer.ip()).and_then(|address| {
            let connection = self.slots.clone().try_acquire_owned();
            Ok(Slot {
                _connection: connection.map_err(|_| ByeReason::ServerFull)?,
                _address: address,
                _open: None,
            })
        });
        if let Err(reason) = slot {
            self.context.metrics.departed(Departure::Bye(reason));
        }
        slot
    }

    /// Connections being served now.
    fn live(&self) -> usize {
        self.max_connections - self.slots.available_permits()
    }

    /// Starts a session over `transport` on the next worker; it holds `slot` for its lifetime.
    pub(crate) fn admit<T: Transport + Send>(&self, transport: T, peer: SocketAddr, slot: Slot) {
        let (conn, slot) = self.number::<T>(slot);
        let worker = &self.workers[conn as usize % self.workers.len()];
        let context = self.context.clone();
        // The transport is opened on the worker (its socket joins that thread's reactor), so
        // its future need not be `Send`: only the closure that starts it crosses threads.
        worker.spawn_fn(move || {
            actix_rt::spawn(Session::serve(transport, conn, peer, context, slot));
        });
    }

    /// Starts a session over `transport` on the current thread, which must be an actix arbiter;
    /// it holds `slot` for its lifetime. For a transport that cannot leave the thread that
    /// holds it: a WebSocket, served on the HTTP worker that holds its connection, where its
    /// frames reach the session without crossing threads (see [`crate::web::ws`]). The HTTP
    /// workers take connections in turn, so these sessions are spread over them as well.
    pub(crate) fn admit_here<T: Transport>(&self, transport: T, peer: SocketAddr, slot: Slot) {
        let (conn, slot) = self.number::<T>(slot);
        let context = self.context.clone();
        actix_rt::spawn(Session::serve(transport, conn, peer, context, slot));
    }

    /// Numbers a new connection and counts it open, as a `T`.
    fn number<T: Transport>(&self, mut slot: Slot) -> (u64, Slot) {
        slot._open = Some(self.context.metrics.connection_opened(T::KIND));
        (self.next_conn.fetch_add(1, Ordering::Relaxed), slot)
    }

    /// Tells a connection why it is refused, on the current thread, unless too many are being
    /// told already (then it is just closed).
    pub(crate) fn refuse<S>(&self, stream: S, peer: SocketAddr, reason: ByeReason)
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        debug!("refusing {peer}: {reason}");
        if let Ok(refusal) = self.refusals.clone().try_acquire_owned() {
            self.context.metrics.event_sent(&Event::Bye(Some(reason)));
            actix_rt::spawn(async move {
                refuse(stream, reason).await;
                drop(refusal);
            });
        }
    }
}

/// Accepts TCP connections and hands them to the [`Gate`]: as they are, or, on the TLS port,
/// wrapped in a [`TlsTransport`] whose handshake happens on the worker that serves it.
struct Acceptor {
    gate: Arc<Gate>,
    /// The certificate, on the TLS port.
    tls: Option<Arc<Certificates>>,
}

impl Acceptor {
    /// Accepts on `listener` until `stop` is cancelled. Must run on the thread whose reactor
    /// is to watch the listener.
    async fn serve(self, listener: net::TcpListener, stop: CancellationToken) -> io::Result<()> {
        let listener = TcpListener::from_std(listener)?;
        tokio::select! {
            () = self.accept_forever(&listener) => {}
            () = stop.cancelled() => {}
        }
        Ok(())
    }

    async fn accept_forever(&self, listener: &TcpListener) {
        let mut backoff = Duration::ZERO;
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    backoff = Duration::ZERO;
                    self.admit(stream, peer);
                }
                // The peer gave up before we accepted (ECONNABORTED and the like): not ours.
                Err(error) if is_peer_error(&error) => debug!("accept failed: {error}"),
                Err(error) => {
                    // Out of file descriptors or memory, or anything else that may well fail
                    // again at once: retrying without a pause would spin. Pause, longer each
                    // time, and say so once per episode rather than per attempt.
                    if backoff.is_zero() {
                        warn!("cannot accept connections: {error}; pausing accepts");
                    }
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                    sleep(backoff).await;
                }
            }
        }
    }

    fn admit(&self, stream: TcpStream, peer: SocketAddr) {
        let slot = match (self.gate.slot(peer), &self.tls) {
            (Ok(slot), _) => slot,
            (Err(reason), None) => return self.gate.refuse(stream, peer, reason),
            // A plain-text `bye` would be noise to a TLS client, and a handshake just to say
            // no would spend what the limit is there to save: the connection is just closed.
            (Err(reason), Some(_)) => return debug!("refusing {peer} (tls): {reason}"),
        };
        // Small lines must not wait for Nagle's algorithm.
        if let Err(error) = stream.set_nodelay(true) {
            debug!("{peer}: cannot set TCP_NODELAY: {error}");
        }
        // Move the socket to a worker thread's own reactor rather than leave it on this one.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => return debug!("{peer}: cannot hand over the socket: {error}"),
        };
        match &self.tls {
            None => self.gate.admit(stream, peer, slot),
            Some(certificates) => {
                debug!("{peer}: accepted on the TLS port");
                let transport = TlsTransport {
                    stream,
                    acceptor: certificates.acceptor(),
                    handshake_timeout: self.gate.context.settings.heartbeat.login_timeout,
                };
                self.gate.admit(transport, peer, slot);
            }
        }
    }
}

/// Tells a connection over the limit why it is being closed. Its input is read and discarded
/// for a moment so that our close does not become a reset that destroys the message.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, reason: ByeReason) {
    let bye = Event::Bye(Some(reason)).to_line();
    let _ = timeout(REFUSAL_LINGER, async {
        stream.write_all(&bye).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 512];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}

/// `1 connection`, `2 connections`.
fn connections(count: usize) -> String {
    match count {
        1 => "1 connection".to_owned(),
        n => format!("{n} connections"),
    }
}

/// An accept error that concerns one connection only (accept(2) lists these as the pending
/// connection's own network errors): the next accept may well succeed at once.
fn is_peer_error(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EPROTO
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::ENETDOWN
                | libc::EPERM
                | libc::ETIMEDOUT
        )
    )
}
