//! `--storm N`: a password-guessing storm beside a pairs or room workload, to show what it
//! costs everyone else.
//!
//! Each of the N guessers connects from a loopback address of its own (`127.0.0.2`,
//! `127.0.0.3`, …, when the server is on IPv4), so the server's per-address throttle sees N
//! attackers rather than one. It first tries to `register` a name of its own (with a store that
//! makes a real account, whose password it then never gives again; without one it guesses at a
//! name nobody has, which the server checks and throttles exactly alike), then sends
//! `login|NAME|WRONG` again as soon as each answer arrives, until the workload is over. The
//! workload starts only when every guesser is ready, and the report counts the answers given
//! while it ran: `bad-password` (a hash was computed) and `rate-limited` (refused by the
//! throttle or a full hashing queue).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};

use serde::Serialize;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpSocket,
    },
    sync::mpsc,
    task::JoinSet,
    time::timeout_at,
};
use tokio_util::sync::CancellationToken;

use super::{name_prefix, BenchError};

/// Most guessers: one loopback address each, within 127.0.0.2–127.0.250.254.
pub(crate) const MAX_GUESSERS: usize = 250 * 253;

/// The password a guesser registers with, and the one it then guesses with.
const RIGHT: &str = "storm-right-password";
const WRONG: &str = "storm-wrong-password";

/// Answers counted while the workload ran.
#[derive(Default)]
struct Counts {
    attempts: AtomicU64,
    bad_password: AtomicU64,
    rate_limited: AtomicU64,
    other: AtomicU64,
    reconnects: AtomicU64,
}

impl Counts {
    fn snapshot(&self) -> [u64; 5] {
        [
            &self.attempts,
            &self.bad_password,
            &self.rate_limited,
            &self.other,
            &self.reconnects,
        ]
        .map(|count| count.load(Ordering::Relaxed))
    }
}

/// What the storm did while the workload ran; in the JSON beside the workload's keys.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StormReport {
    /// Guessers.
    pub(crate) storm_clients: usize,
    /// Guesses answered.
    pub(crate) storm_answers: u64,
    /// Answered `bad-password`: each cost the server a hash.
    pub(crate) storm_bad_password: u64,
    /// Answered `rate-limited`: refused without a hash.
    pub(crate) storm_rate_limited: u64,
    /// Answered anything else (the report shows it: the storm was not what it meant to be).
    pub(crate) storm_other: u64,
    /// Connections the server closed under a guesser, which opened another.
    pub(crate) storm_reconnects: u64,
    /// Answers per second.
    pub(crate) storm_answers_per_s: f64,
}

/// The running storm.
pub(crate) struct Storm {
    clients: usize,
    counts: Arc<Counts>,
    /// The counts when the workload started.
    start: [u64; 5],
    started: Instant,
    stop: CancellationToken,
    guessers: JoinSet<()>,
}

impl Storm {
    /// Starts `clients` guessers against `server` and returns once every one of them has
    /// registered (or found it cannot) and is guessing.
    pub(crate) async fn start(
        server: SocketAddr,
        clients: usize,
        run: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Storm, BenchError> {
        let counts = Arc::new(Counts::default());
        let stop = CancellationToken::new();
        let (ready, mut readies) = mpsc::channel(clients.max(1));
        let mut guessers = JoinSet::new();
        for index in 0..clients {
            let guesser = Guesser {
                server,
                source: source_address(server, index),
                name: format!("{}s{index}", name_prefix(run)),
                counts: counts.clone(),
                deadline,
            };
            let (ready, stop) = (ready.clone(), stop.clone());
            guessers.spawn(async move {
                let outcome = guesser.run(&ready, stop).await;
                // Only reached when the guesser fails before it is ready, or stops.
                if let Err(error) = outcome {
                    let _ = ready.send(Err(error)).await;
                }
            });
        }
        drop(ready);
        for _ in 0..clients {
            match timeout_at(deadline, readies.recv()).await {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(error))) => {
                    stop.cancel();
                    return Err(error);
                }
                Ok(None) | Err(_) => {
                    stop.cancel();
                    return Err(BenchError::Usage(
                        "the storm's guessers were not ready before --timeout".to_owned(),
                    ));
                }
            }
        }
        Ok(Storm {
            clients,
            start: counts.snapshot(),
            counts,
            started: Instant::now(),
            stop,
            guessers,
        })
    }

    /// Stops the guessers and reports what they were answered since the workload started.
    pub(crate) async fn stop(mut self) -> StormReport {
        let end = self.counts.snapshot();
        let elapsed = self.started.elapsed();
        self.stop.cancel();
        while self.guessers.join_next().await.is_some() {}
        let [answers, bad_password, rate_limited, other, reconnects] =
            std::array::from_fn(|i| end[i].saturating_sub(self.start[i]));
        StormReport {
            storm_clients: self.clients,
            storm_answers: answers,
            storm_bad_password: bad_password,
            storm_rate_limited: rate_limited,
            storm_other: other,
            storm_reconnects: reconnects,
            storm_answers_per_s: answers as f64 / elapsed.as_secs_f64().max(1e-9),
        }
    }
}

/// Guesser `index`'s own loopback address on an IPv4 server (127.0.0.2 onwards, skipping the
/// network and broadcast-looking ends of each /24); the server's own on IPv6, which has one.
fn source_address(server: SocketAddr, index: usize) -> IpAddr {
    match server {
        SocketAddr::V4(_) => {
            let third = u8::try_from(index / 253).unwrap_or(u8::MAX);
            let fourth = u8::try_from(index % 253 + 2).unwrap_or(u8::MAX);
            IpAddr::V4(Ipv4Addr::new(127, 0, third, fourth))
        }
        SocketAddr::V6(server) => IpAddr::V6(*server.ip()),
    }
}

struct Guesser {
    server: SocketAddr,
    source: IpAddr,
    name: String,
    counts: Arc<Counts>,
    deadline: tokio::time::Instant,
}

/// One connection, read line by line (the storm's few lines need no batching).
struct Line {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
    buffer: String,
}

impl Guesser {
    async fn run(
        &self,
        ready: &mpsc::Sender<Result<(), BenchError>>,
        stop: CancellationToken,
    ) -> Result<(), BenchError> {
        let mut line = self.connect().await?;
        let register = format!("register|{}|{RIGHT}\n", self.name);
        // A full hashing queue says `rate-limited`: ask again (the server holds the connection
        // for a moment after saying so).
        let mut registered = line.ask(&register, self.deadline).await?.map(str::to_owned);
        while registered
            .as_deref()
            .is_some_and(|reply| reply.starts_with("error|rate-limited|"))
        {
            registered = line.ask(&register, self.deadline).await?.map(str::to_owned);
        }
        if registered.is_some_and(|reply| reply.starts_with("ok|login|")) {
            // Leave, so that the account is offline and guessing at it is a real attack.
            line.ask("exit\n", self.deadline).await?;
            line = self.connect().await?;
        }
        let _ = ready.send(Ok(())).await;
        let guess = format!("login|{}|{WRONG}\n", self.name);
        loop {
            let answer = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                answer = line.ask(&guess, self.deadline) => answer,
            };
            match answer {
                Ok(Some(reply)) => {
                    self.counts.attempts.fetch_add(1, Ordering::Relaxed);
                    let count = if reply.starts_with("error|bad-password|") {
                        &self.counts.bad_password
                    } else if reply.starts_with("error|rate-limited|") {
                        &self.counts.rate_limited
                    } else {
                        &self.counts.other
                    };
                    count.fetch_add(1, Ordering::Relaxed);
                }
                // Closed by the server (or failed): another connection, as an attacker would.
                Ok(None) | Err(_) => {
                    self.counts.reconnects.fetch_add(1, Ordering::Relaxed);
                    line = self.connect().await?;
                }
            }
        }
    }

    async fn connect(&self) -> Result<Line, BenchError> {
        let unreachable = |source| BenchError::Unreachable {
            addr: self.server,
            source,
        };
        let socket = match self.source {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(unreachable)?;
        socket
            .bind(SocketAddr::new(self.source, 0))
            .map_err(unreachable)?;
        let stream = timeout_at(self.deadline, socket.connect(self.server))
            .await
            .map_err(|_| unreachable(std::io::ErrorKind::TimedOut.into()))?
            .map_err(unreachable)?;
        let (read, write) = stream.into_split();
        Ok(Line {
            read: BufReader::new(read),
            write,
            buffer: String::new(),
        })
    }
}

impl Line {
    /// Sends `request` and returns the first line of the answer, or `None` if the connection
    /// ends first; an error past `deadline`.
    async fn ask(
        &mut self,
        request: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<&str>, BenchError> {
        let io = |source| BenchError::Io {
            context: "storm connection",
            source,
        };
        timeout_at(deadline, async {
            self.write.write_all(request.as_bytes()).await?;
            self.buffer.clear();
            self.read.read_line(&mut self.buffer).await
        })
        .await
        .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
        .map(|read| (read > 0).then(|| self.buffer.trim_end()))
        .map_err(io)
    }
}
