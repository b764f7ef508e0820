//! What a run measured: one flat JSON object for scripts (`--json`), a table for people.
//!
//! Flat on purpose: `jq .msgs_per_s` or a shell `grep` reads any figure without knowing the
//! nesting, and fields that do not apply to a mode are left out rather than zeroed.

use std::fmt::{self, Write as _};

use serde::Serialize;

/// Everything a run reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `pairs`, `room`, `churn` or `idle`.
    pub mode: &'static str,
    /// The server address measured.
    pub server: String,
    /// The run prefix in every name (`bench{run}-{i}`).
    pub run: String,
    /// Runtime threads the tool used.
    pub threads: usize,
    /// Connections held at once (churn: concurrent workers).
    pub connections: usize,
    /// Seconds the measured phase took (connecting excluded, except for churn where connecting
    /// is the workload).
    pub elapsed_s: f64,
    /// The server's CPU use over the whole run, in % of one core (needs `--server-pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_pct: Option<f64>,
    /// The tool's own CPU use over the whole run, in % of one core: if it nears 100 % with one
    /// thread, the tool, not the server, is the bottleneck.
    pub bench_cpu_pct: f64,
    #[serde(flatten)]
    pub traffic: Option<TrafficReport>,
    #[serde(flatten)]
    pub churn: Option<ChurnReport>,
    #[serde(flatten)]
    pub idle: Option<IdleReport>,
}

/// pairs and room.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrafficReport {
    /// `closed` (window per sender) or `open` (fixed rate).
    pub pacing: &'static str,
    /// Pairs or rooms.
    pub groups: usize,
    /// Members of each (2 for pairs).
    pub group_size: usize,
    /// Closed loop: messages each sender sends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_per_sender: Option<u64>,
    /// Closed loop: most messages in flight per sender.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<u64>,
    /// Open loop: offered messages per second, all senders together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Open loop: seconds of sending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Padding bytes per message text.
    pub size: usize,
    /// Messages written (a room message counts once however many receive it).
    pub sent: u64,
    /// Receptions due: `sent × (group_size − 1)`.
    pub expected: u64,
    /// Receptions seen before the deadline.
    pub delivered: u64,
    /// `expected − delivered`.
    pub lost: u64,
    /// Receptions whose sequence number was lower than the next one due from that sender:
    /// overtaken by a later message, or duplicates.
    pub out_of_order: u64,
    /// Receptions whose sequence number was higher than the next one due from that sender:
    /// the ones skipped were lost or come later (then also counted in `out_of_order`).
    pub gaps: u64,
    /// Connections the server closed during the run.
    pub disconnected: u64,
    /// Server lines the tool did not expect (errors, foreign messages).
    pub unexpected: u64,
    /// Receptions per second, from the first send to the last arrival.
    pub msgs_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_p999_ms: f64,
    pub latency_max_ms: f64,
    pub latency_mean_ms: f64,
}

/// churn.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChurnReport {
    pub workers: usize,
    pub duration_s: f64,
    /// Completed connect → login → exit → `bye` cycles.
    pub logins: u64,
    /// Cycles cut short: the server closed without `bye`, or the deadline passed.
    pub incomplete: u64,
    pub logins_per_s: f64,
    /// From starting to connect to `ok|login`.
    pub login_p50_ms: f64,
    pub login_p99_ms: f64,
    pub login_max_ms: f64,
}

/// idle.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IdleReport {
    /// Seconds to open and log in every connection.
    pub connect_s: f64,
    pub logins_per_s: f64,
    pub settle_s: f64,
    /// Server RSS before the first connection.
    pub rss_before_kib: u64,
    /// Server RSS with every connection logged in, after settling.
    pub rss_after_kib: u64,
    /// `(after − before) / connections`.
    pub rss_per_conn_bytes: f64,
    pub rss_per_conn_kib: f64,
    /// Connections the server closed while they were held (should be 0).
    pub closed: u64,
}

impl Report {
    /// Whether the run met the bar: no loss, no reordering, no connection closed by the server,
    /// no line the tool did not expect. (Gaps need no check of their own: each one is a loss
    /// or a later out-of-order reception.)
    pub fn passed(&self) -> bool {
        let traffic_ok = self.traffic.as_ref().is_none_or(|t| {
            t.lost == 0 && t.out_of_order == 0 && t.disconnected == 0 && t.unexpected == 0
        });
        let churn_ok = self.churn.as_ref().is_none_or(|c| c.incomplete == 0);
        let idle_ok = self.idle.as_ref().is_none_or(|i| i.closed == 0);
        traffic_ok && churn_ok && idle_ok
    }

    /// The report as one JSON line, with `passed` (see [`Report::passed`]) added.
    pub fn to_json(&self) -> serde_json::Result<String> {
        #[derive(Serialize)]
        struct WithVerdict<'a> {
            #[serde(flatten)]
            report: &'a Report,
            passed: bool,
        }
        serde_json::to_string(&WithVerdict {
            report: self,
            passed: self.passed(),
        })
    }

    /// The summary table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = Table::default();
        out.row("mode", self.mode);
        out.row("server", format!("{} (run {})", self.server, self.run));
        if let Some(t) = &self.traffic {
            let shape = match self.mode {
                "pairs" => format!("{} clients in {} pairs", self.connections, t.groups),
                _ => format!("{} rooms of {} members", t.groups, t.group_size),
            };
            out.row("shape", shape);
            let pacing = match (t.rate, t.window, t.messages_per_sender) {
                (Some(rate), _, _) => format!(
                    "open loop, {} msgs/s offered for {:.1} s",
                    thousands(rate),
                    t.duration_s.unwrap_or(0.0)
                ),
                (None, Some(window), Some(messages)) => {
                    format!("closed loop, {messages} msgs per sender, window {window}")
                }
                _ => "closed loop".to_owned(),
            };
            out.row("pacing", format!("{pacing}, {} padding bytes", t.size));
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
        if let Some(c) = &self.churn {
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
        if let Some(i) = &self.idle {
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
        out.row("result", if self.passed() { "ok" } else { "FAILED" });
        out.0
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

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.8), "1,234,568");
    }

    #[test]
    fn json_is_flat_and_omits_other_modes() {
        let report = Report {
            mode: "pairs",
            traffic: Some(TrafficReport {
                lost: 3,
                ..TrafficReport::default()
            }),
            ..Report::default()
        };
        assert!(!report.passed());
        let json = serde_json::to_value(&report).expect("serializable");
        assert_eq!(json["mode"], "pairs");
        assert_eq!(json["lost"], 3);
        assert!(json.get("logins").is_none());
        assert!(json.get("server_cpu_pct").is_none());
        assert!(report.table().contains("FAILED"));
    }

    #[test]
    fn any_traffic_anomaly_fails_the_run() {
        let with = |change: fn(&mut TrafficReport)| {
            let mut traffic = TrafficReport::default();
            change(&mut traffic);
            Report {
                traffic: Some(traffic),
                ..Report::default()
            }
            .passed()
        };
        assert!(with(|_| {}));
        assert!(!with(|t| t.lost = 1));
        assert!(!with(|t| t.out_of_order = 1));
        assert!(!with(|t| t.disconnected = 1));
        assert!(!with(|t| t.unexpected = 1));
    }
}

/// The exact table and JSON of one report of each kind, as the tool printed them before its
/// code was split into steps: people and scripts read these, so a refactor must not change them.
#[cfg(test)]
mod golden {
    use super::*;

    fn traffic(rooms: bool, open: bool) -> Report {
        Report {
            mode: if rooms { "room" } else { "pairs" },
            server: "127.0.0.1:9".to_owned(),
            run: "abc".to_owned(),
            threads: if open { 2 } else { 1 },
            connections: 8,
            elapsed_s: 1.23456,
            server_cpu_pct: open.then_some(57.4),
            bench_cpu_pct: 12.6,
            traffic: Some(TrafficReport {
                pacing: if open { "open" } else { "closed" },
                groups: if rooms { 2 } else { 4 },
                group_size: if rooms { 4 } else { 2 },
                messages_per_sender: (!open).then_some(100),
                window: (!open).then_some(16),
                rate: open.then_some(12345.6),
                duration_s: open.then_some(2.5),
                size: 32,
                sent: 800,
                expected: 2400,
                delivered: if open { 2390 } else { 2400 },
                lost: if open { 10 } else { 0 },
                out_of_order: if open { 2 } else { 0 },
                gaps: if open { 3 } else { 0 },
                disconnected: if open { 1 } else { 0 },
                unexpected: 0,
                msgs_per_s: 1944.01,
                latency_p50_ms: 0.1234,
                latency_p99_ms: 1.5,
                latency_p999_ms: 2.25,
                latency_max_ms: 10.0,
                latency_mean_ms: 0.2,
            }),
            ..Report::default()
        }
    }

    fn churn() -> Report {
        Report {
            mode: "churn",
            server: "127.0.0.1:9".to_owned(),
            run: "abc".to_owned(),
            threads: 1,
            connections: 2,
            elapsed_s: 0.3004,
            bench_cpu_pct: 40.0,
            churn: Some(ChurnReport {
                workers: 2,
                duration_s: 0.3,
                logins: 1321,
                incomplete: 1,
                logins_per_s: 4400.4,
                login_p50_ms: 0.229,
                login_p99_ms: 0.911,
                login_max_ms: 5.903,
            }),
            ..Report::default()
        }
    }

    fn idle() -> Report {
        Report {
            mode: "idle",
            server: "127.0.0.1:9".to_owned(),
            run: "abc".to_owned(),
            threads: 1,
            connections: 100,
            elapsed_s: 0.113,
            server_cpu_pct: Some(8.8),
            bench_cpu_pct: 0.0,
            idle: Some(IdleReport {
                connect_s: 0.0105,
                logins_per_s: 9493.3,
                settle_s: 0.1,
                rss_before_kib: 5100,
                rss_after_kib: 5360,
                rss_per_conn_bytes: 2662.4,
                rss_per_conn_kib: 2.6,
                closed: 0,
            }),
            ..Report::default()
        }
    }

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
                    "\"unexpected\":0,\"msgs_per_s\":1944.01,\"latency_p50_ms\":0.1234,",
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
                    "\"unexpected\":0,\"msgs_per_s\":1944.01,\"latency_p50_ms\":0.1234,",
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
