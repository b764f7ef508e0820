//! What a run measured: one flat JSON object for scripts (`--json`), a table for people.
//!
//! Flat on purpose: `jq .msgs_per_s` or a shell `grep` reads any figure without knowing the
//! nesting, and fields that do not apply to a mode are left out rather than zeroed.

use std::{
    fmt::{self, Write as _},
    time::Duration,
};

use serde::{ser::SerializeMap, Serialize, Serializer};

use super::{
    stats::CpuUse, storm::StormReport, traffic::Grouping, Options, Pacing, TrafficOptions,
};

/// Which workload a report is about: its `mode` key and the first row of its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    Pairs,
    Room,
    Churn,
    Idle,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Pairs => "pairs",
            Mode::Room => "room",
            Mode::Churn => "churn",
            Mode::Idle => "idle",
        })
    }
}

/// Everything a run reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// The server address measured.
    pub(crate) server: String,
    /// The run prefix in every name (`bench{run}-{i}`).
    pub(crate) run: String,
    /// Runtime threads the tool used.
    pub(crate) threads: usize,
    /// Connections held at once (churn: concurrent workers).
    pub(crate) connections: usize,
    /// Seconds the measured phase took (connecting excluded, except for churn where connecting
    /// is the workload).
    pub(crate) elapsed_s: f64,
    /// The server's CPU use over the whole run, in % of one core (needs `--server-pid`).
    pub(crate) server_cpu_pct: Option<f64>,
    /// The tool's own CPU use over the whole run, in % of one core: if it nears 100 % with one
    /// thread, the tool, not the server, is the bottleneck.
    pub(crate) bench_cpu_pct: f64,
    /// What the workload itself measured; it also says which workload ran.
    pub(crate) figures: Figures,
    /// What the password-guessing storm beside it was answered (`--storm`).
    pub(crate) storm: Option<StormReport>,
}

/// What a workload hands back, before the run-wide facts (server, run, CPU) are added.
pub(crate) struct Measured {
    /// See [`Report::connections`].
    pub(crate) connections: usize,
    /// See [`Report::elapsed_s`].
    pub(crate) elapsed: Duration,
    pub(crate) figures: Figures,
}

/// The figures of one workload. Untagged: in the JSON their keys sit beside the common ones.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(crate) enum Figures {
    /// pairs or room, as the grouping in [`TrafficReport::offered`] says.
    Traffic(TrafficReport),
    Churn(ChurnReport),
    Idle(IdleReport),
}

impl Figures {
    fn mode(&self) -> Mode {
        match self {
            Figures::Traffic(t) => match t.offered.grouping {
                Grouping::Pairs { .. } => Mode::Pairs,
                Grouping::Rooms { .. } => Mode::Room,
            },
            Figures::Churn(_) => Mode::Churn,
            Figures::Idle(_) => Mode::Idle,
        }
    }
}

/// pairs and room.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TrafficReport {
    /// The load asked for; see [`Offered`] for its keys.
    #[serde(flatten)]
    pub(crate) offered: Offered,
    /// Messages written (a room message counts once however many receive it).
    pub(crate) sent: u64,
    /// Receptions due: `sent × (group_size − 1)`.
    pub(crate) expected: u64,
    /// Receptions seen before the deadline.
    pub(crate) delivered: u64,
    /// `expected − delivered`.
    pub(crate) lost: u64,
    /// Receptions whose sequence number was lower than the next one due from that sender:
    /// overtaken by a later message, or duplicates.
    pub(crate) out_of_order: u64,
    /// Receptions whose sequence number was higher than the next one due from that sender:
    /// the ones skipped were lost or come later (then also counted in `out_of_order`).
    pub(crate) gaps: u64,
    /// Connections the server closed during the run.
    pub(crate) disconnected: u64,
    /// Server lines the tool did not expect (errors other than `rate-limited`, foreign
    /// messages).
    pub(crate) unexpected: u64,
    /// `error|rate-limited|…` lines: the server's flood control refused that many lines (and
    /// the run stopped sending at the first). Each refused message also counts as lost.
    pub(crate) rate_limited: u64,
    /// Receptions per second, from the first send to the last arrival.
    pub(crate) msgs_per_s: f64,
    pub(crate) latency_p50_ms: f64,
    pub(crate) latency_p99_ms: f64,
    pub(crate) latency_p999_ms: f64,
    pub(crate) latency_max_ms: f64,
    pub(crate) latency_mean_ms: f64,
}

/// The load a messaging run was asked to offer: who sends to whom, when, and how big.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Offered {
    pub(crate) grouping: Grouping,
    pub(crate) traffic: TrafficOptions,
}

/// Keys, in this order:
///
/// * `pacing`: `closed` (window per sender) or `open` (fixed rate);
/// * `groups`: pairs or rooms; `group_size`: members of each (2 for pairs);
/// * closed loop: `messages_per_sender`, messages each sender sends, and `window`, most
///   messages in flight per sender;
/// * open loop: `rate`, offered messages per second, all senders together, and `duration_s`,
///   seconds of sending;
/// * `size`: padding bytes per message text.
///
/// Written out rather than derived so that the pacing's kind comes first and only the
/// parameters of that kind follow, without storing the kind twice.
impl Serialize for Offered {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("pacing", &self.traffic.pacing.kind())?;
        map.serialize_entry("groups", &self.grouping.groups())?;
        map.serialize_entry("group_size", &self.grouping.size())?;
        match self.traffic.pacing {
            Pacing::Closed { messages, window } => {
                map.serialize_entry("messages_per_sender", &messages)?;
                map.serialize_entry("window", &window)?;
            }
            Pacing::Open { rate, duration } => {
                map.serialize_entry("rate", &rate)?;
                map.serialize_entry("duration_s", &duration.as_secs_f64())?;
            }
        }
        map.serialize_entry("size", &self.traffic.size)?;
        map.end()
    }
}

/// churn.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ChurnReport {
    pub(crate) workers: usize,
    pub(crate) duration_s: f64,
    /// Completed connect → login → exit → `bye` cycles.
    pub(crate) logins: u64,
    /// Cycles cut short: the server closed without `bye`, or the deadline passed.
    pub(crate) incomplete: u64,
    pub(crate) logins_per_s: f64,
    /// From starting to connect to `ok|login`.
    pub(crate) login_p50_ms: f64,
    pub(crate) login_p99_ms: f64,
    pub(crate) login_max_ms: f64,
}

/// idle.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IdleReport {
    /// Seconds to open and log in every connection.
    pub(crate) connect_s: f64,
    pub(crate) logins_per_s: f64,
    pub(crate) settle_s: f64,
    /// Server RSS before the first connection.
    pub(crate) rss_before_kib: u64,
    /// Server RSS with every connection logged in, after settling.
    pub(crate) rss_after_kib: u64,
    /// `(after − before) / connections`.
    pub(crate) rss_per_conn_bytes: f64,
    pub(crate) rss_per_conn_kib: f64,
    /// Connections the server closed while they were held (should be 0).
    pub(crate) closed: u64,
}

impl Report {
    /// A workload's figures with the facts of the run around them.
    pub(crate) fn new(options: &Options, measured: Measured, cpu: CpuUse) -> Report {
        Report {
            server: options.server.to_string(),
            run: options.run_id.clone(),
            threads: options.threads,
            connections: measured.connections,
            elapsed_s: measured.elapsed.as_secs_f64(),
            server_cpu_pct: cpu.server_pct,
            bench_cpu_pct: cpu.bench_pct,
            figures: measured.figures,
            storm: None,
        }
    }

    /// The report with the storm's figures beside the workload's.
    pub(crate) fn with_storm(self, storm: Option<StormReport>) -> Report {
        Report { storm, ..self }
    }

    /// Whether the run met the bar: no loss, no reordering, no connection closed by the server,
    /// no line refused or unexpected. (Gaps need no check of their own: each one is a loss
    /// or a later out-of-order reception.)
    pub fn passed(&self) -> bool {
        match &self.figures {
            Figures::Traffic(t) => {
                t.lost == 0
                    && t.out_of_order == 0
                    && t.disconnected == 0
                    && t.unexpected == 0
                    && t.rate_limited == 0
            }
            Figures::Churn(c) => c.incomplete == 0,
            Figures::Idle(i) => i.closed == 0,
        }
    }

    /// What a run the server rate-limited should tell its user, if it was: how many lines
    /// were refused, and what to do about it. The table shows it; with `--json`, stderr does.
    pub fn rate_limit_note(&self) -> Option<String> {
        match &self.figures {
            Figures::Traffic(t) if t.rate_limited > 0 => Some(format!(
                "{} line{} refused by the server's flood control (error|rate-limited), so the \
                 run stopped: start the server with --config config/bench.toml, which turns \
                 flood control off",
                t.rate_limited,
                if t.rate_limited == 1 { "" } else { "s" },
            )),
            _ => None,
        }
    }

    /// The report as one JSON line: the common keys, the workload's, then `passed` (see
    /// [`Report::passed`]).
    pub fn to_json(&self) -> serde_json::Result<String> {
        /// The JSON object, key by key in the order printed.
        #[derive(Serialize)]
        struct Json<'a> {
            /// `pairs`, `room`, `churn` or `idle`.
            mode: Mode,
            server: &'a str,
            run: &'a str,
            threads: usize,
            connections: usize,
            elapsed_s: f64,
            #[serde(skip_serializing_if = "Option::is_none")]
            server_cpu_pct: Option<f64>,
            bench_cpu_pct: f64,
            #[serde(flatten)]
            figures: &'a Figures,
            #[serde(flatten)]
            storm: &'a Option<StormReport>,
            passed: bool,
        }
        serde_json::to_string(&Json {
            mode: self.figures.mode(),
            server: &self.server,
            run: &self.run,
            threads: self.threads,
            connections: self.connections,
            elapsed_s: self.elapsed_s,
            server_cpu_pct: self.server_cpu_pct,
            bench_cpu_pct: self.bench_cpu_pct,
            figures: &self.figures,
            storm: &self.storm,
            passed: self.passed(),
        })
    }

    /// The summary table printed at the end of a run: what ran where, the workload's own
    /// rows, then what it cost and the verdict.
    pub fn table(&self) -> String {
        let mut out = Table::default();
        out.row("mode", self.figures.mode());
        out.row("server", format!("{} (run {})", self.server, self.run));
        match &self.figures {
            Figures::Traffic(t) => self.traffic_rows(&mut out, t),
            Figures::Churn(c) => self.churn_rows(&mut out, c),
            Figures::Idle(i) => self.idle_rows(&mut out, i),
        }
        if let Some(storm) = &self.storm {
            storm_rows(&mut out, storm);
        }
        self.cpu_rows(&mut out);
        out.row("result", if self.passed() { "ok" } else { "FAILED" });
        out.0
    }

    /// pairs and room: the load asked for, what became of it, how fast and how late.
    fn traffic_rows(&self, out: &mut Table, t: &TrafficReport) {
        out.row("shape", t.offered.grouping.describe(self.connections));
        out.row(
            "pacing",
            format!(
                "{}, {} padding bytes",
                describe_pacing(&t.offered.traffic.pacing),
                t.offered.traffic.size
            ),
        );
        out.row(
            "delivered",
            format!("{} of {} expected", t.delivered, t.expected),
        );
        out.row(
            "lost",
            format!(
                "{} (out of order {}, gaps {})",
                t.lost, t.out_of_order, t.gaps
            ),
        );
        // Only when something went wrong: a clean run's table stays short.
        if let Some(note) = self.rate_limit_note() {
            out.row("rate-limited", note);
        }
        if t.disconnected > 0 || t.unexpected > 0 {
            out.row(
                "anomalies",
                format!(
                    "{} disconnected, {} unexpected lines",
                    t.disconnected, t.unexpected
                ),
            );
        }
        out.row("elapsed", format!("{:.3} s", self.elapsed_s));
        out.row("throughput", format!("{} msgs/s", thousands(t.msgs_per_s)));
        out.row(
            "latency",
            millis(&[
                ("p50", t.latency_p50_ms),
                ("p99", t.latency_p99_ms),
                ("p99.9", t.latency_p999_ms),
                ("max", t.latency_max_ms),
            ]),
        );
    }

    /// churn: how many cycles completed, at what rate, and how long a login took.
    fn churn_rows(&self, out: &mut Table, c: &ChurnReport) {
        out.row("workers", c.workers);
        out.row("logins", format!("{} in {:.2} s", c.logins, self.elapsed_s));
        if c.incomplete > 0 {
            out.row("incomplete", format!("{} cycles", c.incomplete));
        }
        out.row("rate", format!("{} logins/s", thousands(c.logins_per_s)));
        out.row(
            "login time",
            millis(&[
                ("p50", c.login_p50_ms),
                ("p99", c.login_p99_ms),
                ("max", c.login_max_ms),
            ]),
        );
    }

    /// idle: how the connections were opened and what holding them cost the server.
    fn idle_rows(&self, out: &mut Table, i: &IdleReport) {
        out.row("connections", format!("{} held", self.connections));
        out.row(
            "connecting",
            format!(
                "{:.2} s ({} logins/s)",
                i.connect_s,
                thousands(i.logins_per_s)
            ),
        );
        out.row(
            "server RSS",
            format!(
                "{} KiB before, {} KiB after {:.1} s settling",
                i.rss_before_kib, i.rss_after_kib, i.settle_s
            ),
        );
        out.row(
            "per conn",
            format!(
                "{:.0} bytes ({:.2} KiB)",
                i.rss_per_conn_bytes, i.rss_per_conn_kib
            ),
        );
        if i.closed > 0 {
            out.row("closed", format!("{} by the server", i.closed));
        }
    }

    /// What the run cost: the server's CPU (if its pid was given) and the tool's own.
    fn cpu_rows(&self, out: &mut Table) {
        if let Some(cpu) = self.server_cpu_pct {
            out.row("server CPU", format!("{cpu:.0} % of a core"));
        }
        out.row(
            "bench CPU",
            format!(
                "{:.0} % of a core ({} thread{})",
                self.bench_cpu_pct,
                self.threads,
                if self.threads == 1 { "" } else { "s" }
            ),
        );
    }
}

/// `--storm`: how many guessers, and what their guesses were answered while the workload ran.
fn storm_rows(out: &mut Table, storm: &StormReport) {
    out.row(
        "storm",
        format!(
            "{} guessers, {} answers ({}/s): {} bad-password, {} rate-limited, {} other; {} \
             reconnects",
            storm.storm_clients,
            storm.storm_answers,
            thousands(storm.storm_answers_per_s),
            storm.storm_bad_password,
            storm.storm_rate_limited,
            storm.storm_other,
            storm.storm_reconnects
        ),
    );
}

/// `closed loop, 100 msgs per sender, window 16` or `open loop, 2,000 msgs/s offered for 5.0 s`.
fn describe_pacing(pacing: &Pacing) -> String {
    match *pacing {
        Pacing::Open { rate, duration } => format!(
            "open loop, {} msgs/s offered for {:.1} s",
            thousands(rate),
            duration.as_secs_f64()
        ),
        Pacing::Closed { messages, window } => {
            format!("closed loop, {messages} msgs per sender, window {window}")
        }
    }
}

/// `p50 1.234 ms   p99 …`: labelled durations in milliseconds.
fn millis(figures: &[(&str, f64)]) -> String {
    figures
        .iter()
        .map(|(label, ms)| format!("{label} {ms:.3} ms"))
        .collect::<Vec<_>>()
        .join("   ")
}

/// Rows of `key value`, the keys in one column.
#[derive(Default)]
struct Table(String);

impl Table {
    fn row(&mut self, key: &str, value: impl fmt::Display) {
        // Writing into a String cannot fail.
        let _ = writeln!(self.0, "{key:<12} {value}");
    }
}

/// `1234567.8` as `1,234,568`: big rates are easier to read grouped.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of `figures` with zeroed run facts.
    fn report(figures: Figures) -> Report {
        Report {
            server: String::new(),
            run: String::new(),
            threads: 1,
            connections: 0,
            elapsed_s: 0.0,
            server_cpu_pct: None,
            bench_cpu_pct: 0.0,
            storm: None,
            figures,
        }
    }

    /// A pairs run in which nothing went wrong (nor happened).
    fn clean_traffic() -> TrafficReport {
        TrafficReport {
            offered: Offered {
                grouping: Grouping::Pairs { pairs: 1 },
                traffic: TrafficOptions {
                    pacing: Pacing::Closed {
                        messages: 1,
                        window: 1,
                    },
                    size: 0,
                },
            },
            sent: 0,
            expected: 0,
            delivered: 0,
            lost: 0,
            out_of_order: 0,
            gaps: 0,
            disconnected: 0,
            unexpected: 0,
            rate_limited: 0,
            msgs_per_s: 0.0,
            latency_p50_ms: 0.0,
            latency_p99_ms: 0.0,
            latency_p999_ms: 0.0,
            latency_max_ms: 0.0,
            latency_mean_ms: 0.0,
        }
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.8), "1,234,568");
    }

    #[test]
    fn json_is_flat_and_omits_other_modes() {
        let report = report(Figures::Traffic(TrafficReport {
            lost: 3,
            ..clean_traffic()
        }));
        assert!(!report.passed());
        let json: serde_json::Value =
            serde_json::from_str(&report.to_json().expect("serializable")).expect("JSON");
        assert_eq!(json["mode"], "pairs");
        assert_eq!(json["lost"], 3);
        assert_eq!(json["passed"], false);
        assert!(json.get("logins").is_none());
        assert!(json.get("server_cpu_pct").is_none());
        assert!(json.get("rate").is_none());
        assert!(report.table().contains("FAILED"));
    }

    #[test]
    fn any_traffic_anomaly_fails_the_run() {
        let with = |change: fn(&mut TrafficReport)| {
            let mut traffic = clean_traffic();
            change(&mut traffic);
            report(Figures::Traffic(traffic)).passed()
        };
        assert!(with(|_| {}));
        assert!(!with(|t| t.lost = 1));
        assert!(!with(|t| t.out_of_order = 1));
        assert!(!with(|t| t.disconnected = 1));
        assert!(!with(|t| t.unexpected = 1));
        assert!(!with(|t| t.rate_limited = 1));
    }

    #[test]
    fn a_rate_limited_run_says_so_and_what_to_do() {
        let limited = report(Figures::Traffic(TrafficReport {
            sent: 176,
            expected: 176,
            delivered: 16,
            lost: 160,
            rate_limited: 160,
            ..clean_traffic()
        }));
        assert!(!limited.passed());
        let table = limited.table();
        assert!(
            table.contains(concat!(
                "\nrate-limited 160 lines refused by the server's flood control ",
                "(error|rate-limited), so the run stopped: start the server with ",
                "--config config/bench.toml, which turns flood control off\n"
            )),
            "{table}"
        );
        // Refused lines are explained, not unexpected.
        assert!(!table.contains("anomalies"), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&limited.to_json().expect("serializable")).expect("JSON");
        assert_eq!(json["rate_limited"], 160);
        assert_eq!(json["unexpected"], 0);
        // A clean run has neither the note nor the row.
        let clean = report(Figures::Traffic(clean_traffic()));
        assert!(clean.rate_limit_note().is_none());
        assert!(!clean.table().contains("rate-limited"));
    }

    /// A room run (open loop, with trouble) or a pairs run (closed loop, clean).
    fn traffic(rooms: bool, open: bool) -> Report {
        let grouping = if rooms {
            Grouping::Rooms {
                rooms: 2,
                members: 4,
            }
        } else {
            Grouping::Pairs { pairs: 4 }
        };
        let pacing = if open {
            Pacing::Open {
                rate: 12345.6,
                duration: Duration::from_millis(2500),
            }
        } else {
            Pacing::Closed {
                messages: 100,
                window: 16,
            }
        };
        Report {
            server: "127.0.0.1:9".to_owned(),
            run: "abc".to_owned(),
            threads: if open { 2 } else { 1 },
            connections: 8,
            elapsed_s: 1.23456,
            server_cpu_pct: open.then_some(57.4),
            bench_cpu_pct: 12.6,
            storm: None,
            figures: Figures::Traffic(TrafficReport {
                offered: Offered {
                    grouping,
                    traffic: TrafficOptions { pacing, size: 32 },
                },
                sent: 800,
                expected: 2400,
                delivered: if open { 2390 } else { 2400 },
                lost: if open { 10 } else { 0 },
                out_of_order: if open { 2 } else { 0 },
                gaps: if open { 3 } else { 0 },
                disconnected: if open { 1 } else { 0 },
                unexpected: 0,
                rate_limited: 0,
                msgs_per_s: 1944.01,
                latency_p50_ms: 0.1234,
                latency_p99_ms: 1.5,
                latency_p999_ms: 2.25,
                latency_max_ms: 10.0,
                latency_mean_ms: 0.2,
            }),
        }
    }

    fn churn() -> Report {
        Report {
            server: "127.0.0.1:9".to_owned(),
            run: "abc".to_owned(),
            threads: 1,
            connections: 2,
            elapsed_s: 0.3004,
            server_cpu_pct: None,
            bench_cpu_pct: 40.0,
            storm: None,
            figures: Figures::Churn(ChurnReport {
                workers: 2,
                duration_s: 0.3,
                logins: 1321,
                incomplete: 1,
                logins_per_s: 4400.4,
                login_p50_ms: 0.229,
                login_p99_ms: 0.911,
                login_max_ms: 5.903,
            }),
        }
    }

    fn idle() -> Report {
        Report {
            server: "127.0.0.1:9".to_owned(),
            run: "abc".to_owned(),
            threads: 1,
            connections: 100,
            elapsed_s: 0.113,
            server_cpu_pct: Some(8.8),
            bench_cpu_pct: 0.0,
            storm: None,
            figures: Figures::Idle(IdleReport {
                connect_s: 0.0105,
                logins_per_s: 9493.3,
                settle_s: 0.1,
                rss_before_kib: 5100,
                rss_after_kib: 5360,
                rss_per_conn_bytes: 2662.4,
                rss_per_conn_kib: 2.6,
                closed: 0,
            }),
        }
    }

    // The exact table and JSON of one report of each kind, as the tool printed them before its
    // code was split into steps: people and scripts read these, so a refactor must not change
    // them.

    #[test]
    fn tables_are_unchanged() {
        for (report, expected) in [
            (
                traffic(false, false),
                concat!(
                    "mode         pairs\n",
                    "server       127.0.0.1:9 (run abc)\n",
                    "shape        8 clients in 4 pairs\n",
                    "pacing       closed loop, 100 msgs per sender, window 16, 32 padding bytes\n",
                    "delivered    2400 of 2400 expected\n",
                    "lost         0 (out of order 0, gaps 0)\n",
                    "elapsed      1.235 s\n",
                    "throughput   1,944 msgs/s\n",
                    "latency      p50 0.123 ms   p99 1.500 ms   p99.9 2.250 ms   max 10.000 ms\n",
                    "bench CPU    13 % of a core (1 thread)\n",
                    "result       ok\n",
                ),
            ),
            (
                traffic(true, true),
                concat!(
                    "mode         room\n",
                    "server       127.0.0.1:9 (run abc)\n",
                    "shape        2 rooms of 4 members\n",
                    "pacing       open loop, 12,346 msgs/s offered for 2.5 s, 32 padding bytes\n",
                    "delivered    2390 of 2400 expected\n",
                    "lost         10 (out of order 2, gaps 3)\n",
                    "anomalies    1 disconnected, 0 unexpected lines\n",
                    "elapsed      1.235 s\n",
                    "throughput   1,944 msgs/s\n",
                    "latency      p50 0.123 ms   p99 1.500 ms   p99.9 2.250 ms   max 10.000 ms\n",
                    "server CPU   57 % of a core\n",
                    "bench CPU    13 % of a core (2 threads)\n",
                    "result       FAILED\n",
                ),
            ),
            (
                churn(),
                concat!(
                    "mode         churn\n",
                    "server       127.0.0.1:9 (run abc)\n",
                    "workers      2\n",
                    "logins       1321 in 0.30 s\n",
                    "incomplete   1 cycles\n",
                    "rate         4,400 logins/s\n",
                    "login time   p50 0.229 ms   p99 0.911 ms   max 5.903 ms\n",
                    "bench CPU    40 % of a core (1 thread)\n",
                    "result       FAILED\n",
                ),
            ),
            (
                idle(),
                concat!(
                    "mode         idle\n",
                    "server       127.0.0.1:9 (run abc)\n",
                    "connections  100 held\n",
                    "connecting   0.01 s (9,493 logins/s)\n",
                    "server RSS   5100 KiB before, 5360 KiB after 0.1 s settling\n",
                    "per conn     2662 bytes (2.60 KiB)\n",
                    "server CPU   9 % of a core\n",
                    "bench CPU    0 % of a core (1 thread)\n",
                    "result       ok\n",
                ),
            ),
        ] {
            assert_eq!(report.table(), expected);
        }
    }

    #[test]
    fn json_is_unchanged() {
        for (report, expected) in [
            (
                traffic(false, false),
                concat!(
                    "{\"mode\":\"pairs\",\"server\":\"127.0.0.1:9\",\"run\":\"abc\",",
                    "\"threads\":1,\"connections\":8,\"elapsed_s\":1.23456,",
                    "\"bench_cpu_pct\":12.6,\"pacing\":\"closed\",\"groups\":4,",
                    "\"group_size\":2,\"messages_per_sender\":100,\"window\":16,",
                    "\"size\":32,\"sent\":800,\"expected\":2400,\"delivered\":2400,",
                    "\"lost\":0,\"out_of_order\":0,\"gaps\":0,\"disconnected\":0,",
                    "\"unexpected\":0,\"rate_limited\":0,\"msgs_per_s\":1944.01,",
                    "\"latency_p50_ms\":0.1234,",
                    "\"latency_p99_ms\":1.5,\"latency_p999_ms\":2.25,",
                    "\"latency_max_ms\":10.0,\"latency_mean_ms\":0.2,\"passed\":true}",
                ),
            ),
            (
                traffic(true, true),
                concat!(
                    "{\"mode\":\"room\",\"server\":\"127.0.0.1:9\",\"run\":\"abc\",",
                    "\"threads\":2,\"connections\":8,\"elapsed_s\":1.23456,",
                    "\"server_cpu_pct\":57.4,\"bench_cpu_pct\":12.6,\"pacing\":\"open\",",
                    "\"groups\":2,\"group_size\":4,\"rate\":12345.6,\"duration_s\":2.5,",
                    "\"size\":32,\"sent\":800,\"expected\":2400,\"delivered\":2390,",
                    "\"lost\":10,\"out_of_order\":2,\"gaps\":3,\"disconnected\":1,",
                    "\"unexpected\":0,\"rate_limited\":0,\"msgs_per_s\":1944.01,",
                    "\"latency_p50_ms\":0.1234,",
                    "\"latency_p99_ms\":1.5,\"latency_p999_ms\":2.25,",
                    "\"latency_max_ms\":10.0,\"latency_mean_ms\":0.2,\"passed\":false}",
                ),
            ),
            (
                churn(),
                concat!(
                    "{\"mode\":\"churn\",\"server\":\"127.0.0.1:9\",\"run\":\"abc\",",
                    "\"threads\":1,\"connections\":2,\"elapsed_s\":0.3004,",
                    "\"bench_cpu_pct\":40.0,\"workers\":2,\"duration_s\":0.3,",
                    "\"logins\":1321,\"incomplete\":1,\"logins_per_s\":4400.4,",
                    "\"login_p50_ms\":0.229,\"login_p99_ms\":0.911,\"login_max_ms\":5.903,",
                    "\"passed\":false}",
                ),
            ),
            (
                idle(),
                concat!(
                    "{\"mode\":\"idle\",\"server\":\"127.0.0.1:9\",\"run\":\"abc\",",
                    "\"threads\":1,\"connections\":100,\"elapsed_s\":0.113,",
                    "\"server_cpu_pct\":8.8,\"bench_cpu_pct\":0.0,\"connect_s\":0.0105,",
                    "\"logins_per_s\":9493.3,\"settle_s\":0.1,\"rss_before_kib\":5100,",
                    "\"rss_after_kib\":5360,\"rss_per_conn_bytes\":2662.4,",
                    "\"rss_per_conn_kib\":2.6,\"closed\":0,\"passed\":true}",
                ),
            ),
        ] {
            assert_eq!(report.to_json().expect("serializable"), expected);
        }
    }
}
