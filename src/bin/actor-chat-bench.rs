//! `actor-chat-bench MODE [options]`: load-tests a running actor-chat-server over loopback.
//!
//! Only parses the command line; the work is in [`actor_chat::bench`].

use std::{io::IsTerminal, path::PathBuf, process::ExitCode, time::Duration};

use actor_chat::bench::{self, BenchError, Options, Pacing, TrafficOptions, Workload};
use clap::{Args, Parser, Subcommand};

// The defaults, named once: the options use them, and so does the help's list of modes.
const SERVER: &str = "127.0.0.1:9999";
const TIMEOUT_SECS: f64 = 120.0;
const PAIRS_CLIENTS: usize = 100;
const PAIRS_MESSAGES: u64 = 10_000;
const ROOMS: usize = 10;
const ROOM_MEMBERS: usize = 10;
const ROOM_MESSAGES: u64 = 1_000;
const WINDOW: u64 = 16;
const OPEN_LOOP_SECS: f64 = 5.0;
const CHURN_WORKERS: usize = 8;
const CHURN_SECS: f64 = 5.0;
const IDLE_CLIENTS: usize = 1000;

const ABOUT: &str = "actor-chat-bench: a load generator for an actor-chat-server on this machine \
                     (loopback only)";

const LONG_ABOUT: &str = "actor-chat-bench: a load generator for load-testing an \
actor-chat-server running on this machine. It talks to loopback addresses only (127.0.0.0/8, \
::1) and refuses any other. It measures throughput, latency, login rate and the server's memory \
per connection, prints a table (or one JSON object with --json), and exits 1 if a message was \
lost or reordered, or on any error.\n\
\n\
Run the server on the load-test config, which turns flood control off: \
actor-chat-server --config config/bench.toml. With flood control on (the default config), the \
server rate-limits the load and the run fails.";

/// The modes with their defaults, and an example.
fn after_help() -> String {
    format!(
        "Modes (MODE --help lists each one's options):\n  \
         pairs  clients in pairs sending each other direct messages; by default \
         {PAIRS_CLIENTS} clients, {PAIRS_MESSAGES} messages per sender, {WINDOW} in flight \
         (closed loop), or --rate msgs/s for {OPEN_LOOP_SECS} s (open loop)\n  \
         room   rooms whose members say lines to their room; by default {ROOMS} rooms of \
         {ROOM_MEMBERS}, {ROOM_MESSAGES} lines per member, {WINDOW} in flight\n  \
         churn  loops of connect, login, exit; by default {CHURN_WORKERS} loops for \
         {CHURN_SECS} s\n  \
         idle   logged-in connections held open, for the server's memory per connection; by \
         default {IDLE_CLIENTS} (needs --server-pid)\n\
         \n\
         Defaults for every mode: --server {SERVER}, --timeout {TIMEOUT_SECS} s, --threads 1.\n\
         \n\
         Example:\n  \
         actor-chat-server --config config/bench.toml &\n  \
         actor-chat-bench pairs -n 100 -m 10000 --server-pid $!"
    )
}

#[derive(Parser)]
#[command(version, about = ABOUT, long_about = LONG_ABOUT, after_help = after_help())]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
    /// Server address (IP:PORT or localhost:PORT); loopback only.
    #[arg(long, global = true, default_value = SERVER)]
    server: String,
    /// Seconds before the run stops, whatever it is doing; what has not arrived counts as lost.
    #[arg(long, global = true, default_value_t = TIMEOUT_SECS)]
    timeout: f64,
    /// Runtime threads for the tool (1: everything on one core, leaving the rest to the server).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// The server's process id: report its CPU use; required by idle, for its memory.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Connections being opened at once.
    #[arg(long, global = true, default_value_t = 64)]
    concurrency: usize,
    /// Prefix in every name (`bench{RUN}-{i}`); by default derived from the pid and the clock.
    #[arg(long, global = true)]
    run_id: Option<String>,
    /// Print one JSON object on stdout instead of the table, and no progress bar.
    #[arg(long, global = true)]
    json: bool,
    /// Connect over TLS (to the server's tls.bind port), to compare with plain TCP.
    #[arg(long, global = true)]
    tls: bool,
    /// Connect over a WebSocket (to ws://SERVER/ws, SERVER being the server's http.bind port),
    /// one text frame per line, to compare with plain TCP.
    #[arg(long, global = true, conflicts_with = "tls")]
    ws: bool,
    /// With --tls: trust the certificate(s) in this PEM file (a self-signed server's) instead
    /// of the system's trust store.
    #[arg(long, global = true, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// With pairs or room: N more clients guess passwords (`login|NAME|WRONG`, again as soon as
    /// answered) while the workload runs, each from a loopback address of its own (127.0.0.2
    /// onwards); they first register their names when the server has accounts. Shows what a
    /// login storm costs everyone else.
    #[arg(long, global = true, value_name = "N", default_value_t = 0)]
    storm: usize,
    /// With --tls: the name the server's certificate is checked against.
    #[arg(long, global = true, value_name = "HOST", default_value = "localhost")]
    tls_name: String,
}

#[derive(Subcommand)]
enum Mode {
    /// Clients in pairs sending each other direct messages (talk).
    Pairs {
        /// Clients (even).
        #[arg(short = 'n', long, default_value_t = PAIRS_CLIENTS)]
        clients: usize,
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// Rooms whose members each say lines to their room.
    Room {
        /// Rooms.
        #[arg(short = 'k', long, default_value_t = ROOMS)]
        rooms: usize,
        /// Members per room (at least 2).
        #[arg(short = 'r', long, default_value_t = ROOM_MEMBERS)]
        members: usize,
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// Workers looping connect → login → exit (waiting for bye).
    Churn {
        /// Concurrent loops.
        #[arg(short = 'c', long, default_value_t = CHURN_WORKERS)]
        workers: usize,
        /// Seconds to loop.
        #[arg(short = 'd', long, default_value_t = CHURN_SECS)]
        duration: f64,
    },
    /// Hold logged-in connections and report the server's RSS per connection (needs
    /// --server-pid).
    Idle {
        /// Connections to hold.
        #[arg(short = 'n', long, default_value_t = IDLE_CLIENTS)]
        clients: usize,
        /// Seconds to wait after the last login before reading the server's RSS.
        #[arg(long, default_value_t = 1.0)]
        settle: f64,
    },
}

#[derive(Args)]
struct TrafficArgs {
    /// Messages per sender, closed loop [default: 10000 for pairs, 1000 for room].
    #[arg(short = 'm', long)]
    messages: Option<u64>,
    /// Most messages per sender sent but not yet received (closed loop).
    #[arg(short = 'w', long, default_value_t = WINDOW)]
    window: u64,
    /// Open loop instead: total messages per second, over all senders.
    #[arg(long, conflicts_with = "messages")]
    rate: Option<f64>,
    /// Open loop: seconds of sending.
    #[arg(short = 'd', long, default_value_t = OPEN_LOOP_SECS, requires = "rate")]
    duration: f64,
    /// Padding bytes added to each message text.
    #[arg(long, default_value_t = 32)]
    size: usize,
}

impl TrafficArgs {
    /// `--rate` picks the open loop; without it, `--messages` (or the mode's default) and
    /// `--window` make a closed loop.
    fn options(&self, default_messages: u64) -> Result<TrafficOptions, BenchError> {
        let pacing = match self.rate {
            Some(rate) => Pacing::Open {
                rate,
                duration: seconds(self.duration, "--duration")?,
            },
            None => Pacing::Closed {
                messages: self.messages.unwrap_or(default_messages),
                window: self.window,
            },
        };
        Ok(TrafficOptions {
            pacing,
            size: self.size,
        })
    }
}

fn seconds(value: f64, flag: &str) -> Result<Duration, BenchError> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| BenchError::Usage(format!("{flag} must be a number of seconds, 0 or more")))
}

fn options(cli: Cli) -> Result<Options, BenchError> {
    let transport = match (cli.tls, cli.ws) {
        (true, _) => bench::Transport::Tls(bench::BenchTls::new(cli.ca.as_deref(), &cli.tls_name)?),
        (false, true) => bench::Transport::Ws,
        (false, false) => bench::Transport::Tcp,
    };
    let workload = match cli.mode {
        Mode::Pairs { clients, traffic } => Workload::Pairs {
            clients,
            traffic: traffic.options(PAIRS_MESSAGES)?,
        },
        Mode::Room {
            rooms,
            members,
            traffic,
        } => Workload::Room {
            rooms,
            members,
            traffic: traffic.options(ROOM_MESSAGES)?,
        },
        Mode::Churn { workers, duration } => Workload::Churn {
            workers,
            duration: seconds(duration, "--duration")?,
        },
        Mode::Idle { clients, settle } => Workload::Idle {
            clients,
            settle: seconds(settle, "--settle")?,
        },
    };
    Ok(Options {
        server: bench::resolve_server(&cli.server)?,
        timeout: seconds(cli.timeout, "--timeout")?,
        threads: cli.threads,
        server_pid: cli.server_pid,
        connect_concurrency: cli.concurrency,
        progress: !cli.json && std::io::stderr().is_terminal(),
        run_id: cli.run_id.unwrap_or_else(bench::default_run_id),
        transport,
        workload,
        storm: cli.storm,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let report = match options(cli).and_then(bench::run) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("actor-chat-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        match report.to_json() {
            Ok(line) => println!("{line}"),
            Err(error) => {
                eprintln!("actor-chat-bench: cannot write the report as JSON: {error}");
                return ExitCode::FAILURE;
            }
        }
        // The table carries this note; stdout is for the JSON alone.
        if let Some(note) = report.rate_limit_note() {
            eprintln!("actor-chat-bench: {note}");
        }
    } else {
        print!("{}", report.table());
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
