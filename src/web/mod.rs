//! The HTTP side (`[http]`): the web client (`GET /`), the health probes (`GET /healthz`,
//! `GET /readyz`), the metrics (`GET /metrics`, [`metrics`]) and WebSockets (`GET /ws`), served
//! by actix-web inside the server's own actix system.
//!
//! A WebSocket is one more transport: [`ws`] adapts its frames to the line stream a `Session`
//! reads and writes, and admits it through the same [`Gate`] as TCP and TLS, with the client's
//! address ([`forwarded`]: the peer's, or the one a trusted proxy names). Nothing in the
//! session or the `ChatServer` knows the difference.
//!
//! The listener keeps serving while the server shuts down, so that `/readyz` can say so (503)
//! and new WebSockets are refused; [`crate::server::Server::shutdown`] stops it once every
//! session is closed.

pub(crate) mod forwarded;
mod health;
mod metrics;
mod static_files;
pub(crate) mod ws;

use std::{io, net::SocketAddr, os::fd::AsRawFd, sync::Arc, time::Duration};

use actix_web::{
    dev::{Server as HttpServer, ServerHandle},
    rt::net::TcpStream,
    web::{self, Data},
    App,
};
use log::debug;
use tokio_util::sync::CancellationToken;

use crate::{
    config::HttpSettings, metrics::Metrics, server::Gate, store::StoreHandle, tls::Certificates,
};

/// A bound HTTP listener and, for HTTPS (`http.tls`), the certificate it serves.
pub struct HttpListener {
    /// The bound socket (`http.bind`).
    pub listener: tokio::net::TcpListener,
    /// The `[tls]` certificate, when the listener speaks HTTPS.
    pub tls: Option<Arc<Certificates>>,
}

/// What the request handlers share.
pub(crate) struct Web {
    pub(crate) gate: Arc<Gate>,
    pub(crate) http: HttpSettings,
    /// Whether the listener speaks HTTPS: the scheme of the page's own origin, and what a
    /// WebSocket session reports as [`crate::connection::Transport::security`].
    pub(crate) secure: bool,
    /// Cancelled when the server starts shutting down.
    pub(crate) stop: CancellationToken,
    pub(crate) store: Option<StoreHandle>,
    /// `limits.max_line_bytes`, which sizes the largest WebSocket frame accepted.
    pub(crate) max_line_bytes: usize,
    /// What `/metrics` shows.
    pub(crate) metrics: Arc<Metrics>,
}

/// How the HTTP server was started: its handle, to stop it at the end of the shutdown.
pub(crate) struct Running {
    handle: ServerHandle,
}

impl Running {
    /// Stops the listener and waits (at most `http` workers' shutdown timeout) for its
    /// connections to finish.
    pub(crate) async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// How the HTTP listener runs: actix-web's threads, and the time limits of its connections.
pub(crate) struct Limits {
    /// Worker threads of actix-web's own (`server.workers`).
    pub(crate) workers: usize,
    /// `server.shutdown_grace_secs`: the last flush when the listener stops.
    pub(crate) grace: Duration,
    /// `heartbeat.timeout_secs`: how long a connection's bytes may go unacknowledged.
    pub(crate) unacknowledged: Duration,
}

/// Starts serving `listener` on actix-web's own worker threads (arbiters of the current actix
/// system); the returned handle stops it. Must be called inside an actix `System`.
pub(crate) fn start(listener: HttpListener, web: Web, limits: Limits) -> io::Result<Running> {
    let web = Data::new(web);
    let std_listener = listener.listener.into_std()?;
    let factory = {
        let web = web.clone();
        move || {
            App::new()
                .app_data(web.clone())
                .route("/ws", web::get().to(ws::upgrade))
                .route("/healthz", web::get().to(health::healthz))
                .route("/readyz", web::get().to(health::readyz))
                .route("/metrics", web::get().to(metrics::metrics))
                .configure(static_files::routes)
        }
    };
    let unacknowledged = limits.unacknowledged;
    let server = actix_web::HttpServer::new(factory)
        .workers(limits.workers)
        .disable_signals()
        // Our shutdown closes the sessions first; this only bounds the last flush.
        .shutdown_timeout(limits.grace.as_secs().max(1))
        .on_connect(move |connection, _| on_connect(connection, unacknowledged));
    let server = match listener.tls {
        None => server.listen(std_listener)?,
        Some(certificates) => {
            let config = certificates
                .http_config()
                .map_err(|error| io::Error::other(error.to_string()))?;
            server.listen_rustls_0_23(std_listener, config)?
        }
    };
    let server: HttpServer = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(Running { handle })
}

/// Every new HTTP connection, plain or TLS, before its first request:
///
/// * `TCP_NODELAY`: small WebSocket frames must not wait for Nagle's algorithm;
/// * `TCP_USER_TIMEOUT` of `heartbeat.timeout_secs`: a peer that acknowledges none of our bytes
///   for that long is dropped by the kernel. actix-http has no write timeout of its own, so
///   without it a WebSocket client cut off as too slow that simply never reads again would keep
///   its HTTP connection (a descriptor and actix's write buffer) for ever, out of reach of
///   `server.max_connections`, which counts sessions.
fn on_connect(connection: &dyn std::any::Any, unacknowledged: Duration) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<TcpStream>;
    let stream = match connection.downcast_ref::<TcpStream>() {
        Some(stream) => stream,
        None => match connection.downcast_ref::<Tls>() {
            Some(tls) => (**tls).get_ref().0,
            None => return,
        },
    };
    if let Err(error) = stream.set_nodelay(true) {
        debug!(
            "http: cannot set TCP_NODELAY on fd {}: {error}",
            stream.as_raw_fd()
        );
    }
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(unacknowledged)) {
        debug!(
            "http: cannot set TCP_USER_TIMEOUT on fd {}: {error}",
            stream.as_raw_fd()
        );
    }
}

/// The client's address for a request: see [`forwarded`].
pub(crate) fn client_address(web: &Web, req: &actix_web::HttpRequest) -> Option<SocketAddr> {
    let peer = req.peer_addr()?;
    Some(forwarded::client_address(
        peer,
        req.headers(),
        &web.http.trusted_proxies,
    ))
}
