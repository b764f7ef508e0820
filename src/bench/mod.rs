//! The load generator behind `actor-chat-bench`: drives a running server over loopback and
//! measures it.
//!
//! Four workloads ([`Workload`]):
//!
//! * **pairs** — clients in pairs send each other direct messages (`talk`);
//! * **room** — rooms of members who each `say` lines that fan out to the rest of the room;
//! * **churn** — workers loop connect → login → exit, for the login rate;
//! * **idle** — many logged-in connections held open, for the server's memory per connection.
//!
//! pairs and room share one engine (`traffic`): a pair is a "room" of two whose transport is
//! `talk` instead of `say`. Every message carries its send time and a per-sender sequence number
//! in its text, so the receiving side (the same process) measures latency and notices loss or
//! reordering without any bookkeeping per message.
//!
//! The generator shares a small box with the server it measures, so it is built to be cheap per
//! message: one task reads and one writes per connection, each wake-up writes a whole batch in
//! one syscall from a reused buffer, lines are framed by the project's own [`LineCodec`]
//! (no allocation per line), latencies go into a few shared HDR histograms, and the runtime is
//! single-threaded unless `--threads` says otherwise.
//!
//! Everything is bounded: only loopback servers are accepted ([`resolve_server`]), every phase
//! runs against one global deadline ([`Options::timeout`]), and what has not arrived by then is
//! counted as lost.
//!
//! [`LineCodec`]: crate::codec::LineCodec

mod churn;
mod idle;
mod net;
mod progress;
mod report;
mod stats;
mod storm;
mod traffic;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

pub use net::{BenchTls, Transport};
pub use report::Report;
pub use stats::{cpu_time, rss_kib};

use report::Measured;
use traffic::Grouping;

/// Longest `--timeout`, `--duration` or `--settle`: a day is more than any run needs, and the
/// bound keeps every deadline computed from them far from `Instant`'s limits.
pub(crate) const MAX_SECONDS: Duration = Duration::from_secs(24 * 60 * 60);

/// Highest open-loop `--rate`, messages per second: far beyond what one box sustains, low
/// enough that pacing arithmetic stays exact.
pub(crate) const MAX_RATE: f64 = 10_000_000.0;

/// Where and how to run, common to every workload.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server; must be a loopback address (see [`resolve_server`]).
    pub server: SocketAddr,
    /// Global deadline for the whole run, connecting included. Whatever has not arrived by then
    /// counts as lost, so a stalled server cannot hang the tool.
    pub timeout: Duration,
    /// Runtime threads. 1 (the default) runs everything on the calling thread, so the tool takes
    /// one core and leaves the rest to the server.
    pub threads: usize,
    /// The server's process id, to report its CPU use (pairs, room) and memory (idle, required).
    pub server_pid: Option<u32>,
    /// How many connections may be opening at once: enough to connect thousands of clients in
    /// a second, few enough never to overflow the server's listen backlog.
    pub connect_concurrency: usize,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Prefix of every user and room name; distinct per run so two runs never collide.
    pub run_id: String,
    /// Plain TCP, TLS (`--tls`) or WebSocket (`--ws`).
    pub transport: net::Transport,
    /// What to do.
    pub workload: Workload,
    /// Password guessers hammering the server while a pairs or room workload runs (`--storm`),
    /// each from a loopback address of its own; 0 for none.
    pub storm: usize,
}

/// One of the four workloads.
#[derive(Debug, Clone)]
pub enum Workload {
    /// `clients` clients in pairs exchanging direct messages.
    Pairs {
        /// Number of clients; must be even.
        clients: usize,
        /// Message pacing and size.
        traffic: TrafficOptions,
    },
    /// `rooms` rooms of `members` members each saying lines to their room.
    Room {
        /// Number of rooms.
        rooms: usize,
        /// Members per room, at least 2 (a lone member has nobody to deliver to).
        members: usize,
        /// Message pacing and size.
        traffic: TrafficOptions,
    },
    /// `workers` loops of connect → login → exit (waiting for `bye`) for `duration`.
    Churn {
        /// Concurrent connect/login/exit loops.
        workers: usize,
        /// How long to keep looping.
        duration: Duration,
    },
    /// Hold `clients` logged-in connections and measure the server's RSS per connection.
    Idle {
        /// Connections to hold.
        clients: usize,
        /// Pause between the last login and the second RSS reading, so the server's allocator
        /// and queues have settled.
        settle: Duration,
    },
}

/// Pacing and size of the messaging workloads.
#[derive(Debug, Clone, Copy)]
pub struct TrafficOptions {
    /// When senders send.
    pub pacing: Pacing,
    /// Padding bytes added to each message text, to vary the message size.
    pub size: usize,
}

/// When the senders of a messaging workload send: the two ways of offering load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// Each sender sends `messages`, keeping at most `window` of them sent but not yet received
    /// by everyone they are for. A reception frees a slot, so the offered load adapts to what
    /// the server sustains: for throughput.
    Closed { messages: u64, window: u64 },
    /// All senders together send `rate` messages per second for `duration`, whatever the
    /// server does: for latency at a fixed load.
    Open { rate: f64, duration: Duration },
}

impl Pacing {
    /// Which of the two it is, as the report names it.
    pub(crate) fn kind(&self) -> Loop {
        match self {
            Pacing::Closed { .. } => Loop::Closed,
            Pacing::Open { .. } => Loop::Open,
        }
    }
}

/// Closed or open loop, without the parameters: what readers need to know (only closed-loop
/// writers wait for credit) and what the report's `pacing` key says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Loop {
    Closed,
    Open,
}

/// Why a run could not be carried out; each message is one sentence meant for the user.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The `--server` value is not an address.
    #[error("`{0}` is not an IP address and port such as 127.0.0.1:9999")]
    BadAddress(String),
    /// The server address is not loopback: the tool only measures servers on this machine.
    #[error("refusing to load {0}: actor-chat-bench only talks to loopback servers (127.0.0.0/8 or ::1)")]
    NotLoopback(SocketAddr),
    /// Options that make no sense together.
    #[error("{0}")]
    Usage(String),
    /// Nothing accepts connections at the address.
    #[error("cannot connect to {addr}: {source}; is actor-chat-server running there?")]
    Unreachable {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The server answered a login with an error.
    #[error("the server refused the login of {name}: {reply}")]
    LoginRefused { name: String, reply: String },
    /// The server closed a connection before its login completed.
    #[error("the server closed the connection of {name} before it was logged in{reason}")]
    ClosedDuringLogin { name: String, reason: String },
    /// The global deadline passed before the workload could even start.
    #[error("the deadline (--timeout) passed with only {done} of {wanted} connections logged in")]
    ConnectTimeout { done: usize, wanted: usize },
    /// `--server-pid` does not name a readable process.
    #[error(
        "cannot read the memory of process {pid} from /proc: {source}; is --server-pid right?"
    )]
    ServerPid { pid: u32, source: std::io::Error },
    /// Any other I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        source: std::io::Error,
    },
}

/// Parses a `--server` value and checks that it is a loopback address.
///
/// Accepts `IP:PORT` (`[::1]:PORT` for IPv6) and `localhost:PORT`. Host names other than
/// `localhost` are not resolved: the check must hold for the address actually connected to, and
/// it is made before any connection is attempted.
pub fn resolve_server(text: &str) -> Result<SocketAddr, BenchError> {
    let addr = match text.strip_prefix("localhost:") {
        Some(port) => port
            .parse::<u16>()
            .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
            .map_err(|_| BenchError::BadAddress(text.to_owned()))?,
        None => text
            .parse::<SocketAddr>()
            .map_err(|_| BenchError::BadAddress(text.to_owned()))?,
    };
    if !addr.ip().is_loopback() {
        return Err(BenchError::NotLoopback(addr));
    }
    Ok(addr)
}

/// What every name of run `run` starts with (users, rooms, churn's names).
fn name_prefix(run: &str) -> String {
    format!("bench{run}-")
}

/// A user name of run `run`.
fn user_name(run: &str, index: usize) -> String {
    format!("{}{index}", name_prefix(run))
}

/// A run prefix that differs between runs: the process id mixed with the clock, in base 36.
///
/// Names are unique case-insensitively on the server, so a second run against the same server
/// (or a leftover connection of a killed run) must not reuse the first run's names.
pub fn default_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
        .unwrap_or(0);
    let mut n = (u64::from(std::process::id()) << 20 ^ nanos) % 36u64.pow(5);
    let mut id = String::with_capacity(5);
    for _ in 0..5 {
        let digit = (n % 36) as u32;
        id.push(char::from_digit(digit, 36).unwrap_or('0'));
        n /= 36;
    }
    id
}

impl Options {
    /// Rejects option combinations that cannot run, before anything connects.
    fn validate(&self) -> Result<(), BenchError> {
        at_most_a_day(self.timeout, "--timeout")?;
        if self.threads == 0 {
            return usage("--threads must be at least 1");
        }
        if self.connect_concurrency == 0 {
            return usage("--concurrency must be at least 1");
        }
        if !is_valid_run_id(&self.run_id) {
            return usage("--run-id must be 1 to 8 letters, digits, `_` or `.`");
        }
        if self.storm > 0 {
            if !matches!(
                self.workload,
                Workload::Pairs { .. } | Workload::Room { .. }
            ) {
                return usage("--storm goes with pairs or room");
            }
            if !matches!(self.transport, net::Transport::Tcp) {
                return usage("--storm guesses over plain TCP: leave out --tls and --ws");
            }
            if self.storm > storm::MAX_GUESSERS {
                return usage(&format!("--storm must be at most {}", storm::MAX_GUESSERS));
            }
        }
        self.workload.validate(self.server_pid)
    }
}

impl Workload {
    /// Rejects a workload that cannot run; idle also needs the server's pid.
    fn validate(&self, server_pid: Option<u32>) -> Result<(), BenchError> {
        match self {
            Workload::Pairs { clients, traffic } => {
                if *clients < 2 || clients % 2 != 0 {
                    return usage("pairs needs an even number of clients, at least 2");
                }
                traffic.pacing.validate()
            }
            Workload::Room {
                rooms,
                members,
                traffic,
            } => {
                if *rooms == 0 || *members < 2 {
                    return usage("room needs at least one room of at least 2 members");
                }
                traffic.pacing.validate()
            }
            Workload::Churn { workers, duration } => {
                if *workers == 0 || duration.is_zero() {
                    return usage("churn needs at least one worker and a positive --duration");
                }
                at_most_a_day(*duration, "--duration")
            }
            Workload::Idle { clients, settle } => {
                if *clients == 0 {
                    return usage("idle needs at least one client");
                }
                if server_pid.is_none() {
                    return usage("idle needs --server-pid to read the server's memory");
                }
                at_most_a_day(*settle, "--settle")
            }
        }
    }
}

impl Pacing {
    /// Rejects a rate or duration whose pacing arithmetic could overflow, and a window that
    /// would never let a message out.
    fn validate(&self) -> Result<(), BenchError> {
        match *self {
            Pacing::Open { rate, .. } if !(rate > 0.0 && rate <= MAX_RATE) => usage(&format!(
                "--rate must be more than 0 and at most {MAX_RATE} messages per second"
            )),
            Pacing::Open { duration, .. } if duration.is_zero() => {
                usage("--duration must be positive")
            }
            Pacing::Open { duration, .. } => at_most_a_day(duration, "--duration"),
            Pacing::Closed { window: 0, .. } => usage("--window must be at least 1"),
            Pacing::Closed { .. } => Ok(()),
        }
    }
}

/// A [`BenchError::Usage`] with `message`.
fn usage(message: &str) -> Result<(), BenchError> {
    Err(BenchError::Usage(message.to_owned()))
}

/// Refuses a `flag` longer than [`MAX_SECONDS`].
fn at_most_a_day(value: Duration, flag: &str) -> Result<(), BenchError> {
    if value > MAX_SECONDS {
        usage(&format!(
            "{flag} must be at most {} seconds (one day)",
            MAX_SECONDS.as_secs()
        ))
    } else {
        Ok(())
    }
}

/// Whether `id` can prefix every name: at most 8 characters so `bench{id}-{i}` stays a valid
/// name, and no `-`, which separates the prefix from the index.
fn is_valid_run_id(id: &str) -> bool {
    id.len() <= 8 && crate::codec::is_valid_name(id) && !id.contains('-')
}

/// Runs the workload to completion (or to the deadline) and reports what it measured.
///
/// Builds its own tokio runtime: current-thread for `threads == 1`, multi-threaded otherwise.
pub fn run(options: Options) -> Result<Report, BenchError> {
    options.validate()?;
    // Thousands of connections need thousands of descriptors; the usual soft limit is 1024.
    // Failing to raise it is not fatal: small runs fit, and a large one reports the error.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = runtime(options.threads).map_err(|source| BenchError::Io {
        context: "cannot start the runtime",
        source,
    })?;
    runtime.block_on(run_async(options))
}

/// A current-thread runtime for one thread (the tool then takes a single core), a
/// multi-threaded one otherwise.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// `wait` after `from`, but never after `deadline` (nor past the end of time).
fn not_after(
    from: tokio::time::Instant,
    wait: Duration,
    deadline: tokio::time::Instant,
) -> tokio::time::Instant {
    from.checked_add(wait)
        .map_or(deadline, |end| end.min(deadline))
}

/// Runs the workload between two CPU readings, so the report can say what the run cost.
async fn run_async(options: Options) -> Result<Report, BenchError> {
    // `validate` bounds the timeout to a day, so this cannot overflow; checked all the same,
    // since a panic would be a worse answer than a sentence.
    let deadline = tokio::time::Instant::now()
        .checked_add(options.timeout)
        .ok_or_else(|| BenchError::Usage("--timeout is too long".to_owned()))?;
    let storm = match options.storm {
        0 => None,
        guessers => {
            Some(storm::Storm::start(options.server, guessers, &options.run_id, deadline).await?)
        }
    };
    let cpu_before = stats::CpuSample::take(options.server_pid);
    let started = Instant::now();
    let measured = run_workload(&options, deadline).await;
    let wall = started.elapsed();
    let cpu_after = stats::CpuSample::take(options.server_pid);
    let storm = match storm {
        Some(storm) => Some(storm.stop().await),
        None => None,
    };
    let cpu = stats::CpuUse::between(cpu_before, cpu_after, wall);
    Ok(Report::new(&options, measured?, cpu).with_storm(storm))
}

/// Hands the workload to the module that runs it.
async fn run_workload(
    options: &Options,
    deadline: tokio::time::Instant,
) -> Result<Measured, BenchError> {
    match &options.workload {
        Workload::Pairs { clients, traffic } => {
            traffic::run(options, Grouping::pairs(*clients), traffic, deadline).await
        }
        Workload::Room {
            rooms,
            members,
            traffic,
        } => {
            let grouping = Grouping::Rooms {
                rooms: *rooms,
                members: *members,
            };
            traffic::run(options, grouping, traffic, deadline).await
        }
        Workload::Churn { workers, duration } => {
            churn::run(options, *workers, *duration, deadline).await
        }
        Workload::Idle { clients, settle } => idle::run(options, *clients, *settle, deadline).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_servers_are_accepted() {
        assert!(resolve_server("127.0.0.1:9999").is_ok());
        assert!(resolve_server("127.3.2.1:1").is_ok());
        assert!(resolve_server("[::1]:9999").is_ok());
        assert_eq!(
            resolve_server("localhost:80").ok(),
            Some(SocketAddr::from(([127, 0, 0, 1], 80)))
        );
        assert!(matches!(
            resolve_server("10.1.2.3:9999"),
            Err(BenchError::NotLoopback(_))
        ));
        assert!(matches!(
            resolve_server("[2001:db8::1]:9999"),
            Err(BenchError::NotLoopback(_))
        ));
        assert!(matches!(
            resolve_server("example.com:9999"),
            Err(BenchError::BadAddress(_))
        ));
        assert!(matches!(
            resolve_server("127.0.0.1"),
            Err(BenchError::BadAddress(_))
        ));
    }

    fn pairs(timeout: Duration, pacing: Pacing) -> Options {
        Options {
            server: SocketAddr::from(([127, 0, 0, 1], 9999)),
            timeout,
            threads: 1,
            server_pid: None,
            connect_concurrency: 1,
            progress: false,
            run_id: "t".to_owned(),
            transport: net::Transport::Tcp,
            workload: Workload::Pairs {
                clients: 2,
                traffic: TrafficOptions { pacing, size: 0 },
            },
            storm: 0,
        }
    }

    #[test]
    fn absurd_times_and_rates_are_refused_before_they_can_overflow() {
        let second = Duration::from_secs(1);
        let open = |rate, duration| Pacing::Open { rate, duration };
        let closed = |window| Pacing::Closed {
            messages: 1,
            window,
        };
        assert!(pairs(MAX_SECONDS, open(MAX_RATE, MAX_SECONDS))
            .validate()
            .is_ok());
        assert!(pairs(second, closed(1)).validate().is_ok());
        for (options, flag) in [
            (
                pairs(Duration::from_secs(10_000_000_000_000_000_000), closed(1)),
                "--timeout",
            ),
            (pairs(second, open(1.0, MAX_SECONDS + second)), "--duration"),
            (pairs(second, open(1.0, Duration::ZERO)), "--duration"),
            (pairs(second, open(MAX_RATE * 2.0, second)), "--rate"),
            (pairs(second, open(0.0, second)), "--rate"),
            (pairs(second, open(f64::NAN, second)), "--rate"),
            (pairs(second, open(f64::INFINITY, second)), "--rate"),
            (pairs(second, closed(0)), "--window"),
        ] {
            let error = options.validate().err().map(|error| error.to_string());
            assert!(
                error.as_deref().is_some_and(|text| text.starts_with(flag)),
                "{flag}: {error:?}"
            );
        }
    }

    #[test]
    fn run_ids_are_short_valid_names() {
        let id = default_run_id();
        assert_eq!(id.len(), 5);
        assert!(crate::codec::is_valid_name(&format!("bench{id}-99999")));
    }
}
