//! Measuring: message stamps, latency histograms, and the server's CPU and memory from /proc.

use std::{
    fmt::Write as _,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

/// Highest latency the histograms resolve, in microseconds (an hour); longer ones saturate.
const MAX_MICROS: u64 = 3_600_000_000;

/// Microseconds since a run-wide epoch: the clock that send stamps and arrivals share. Senders
/// and receivers are in the same process, so one monotonic clock serves both ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    pub(crate) fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// Writes a message text: `STAMP SEQ` then, if asked, a space and `padding`.
///
/// Into a reused `String`, so sending allocates nothing per message.
pub(crate) fn write_text(out: &mut String, stamp_us: u64, seq: u64, padding: &str) {
    out.clear();
    // Writing into a String cannot fail.
    let _ = write!(out, "{stamp_us} {seq}");
    if !padding.is_empty() {
        out.push(' ');
        out.push_str(padding);
    }
}

/// Reads `(stamp, seq)` back from a message text; `None` for anything the tool did not send.
pub(crate) fn parse_text(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.splitn(3, ' ');
    let stamp = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    Some((stamp, seq))
}

/// Latency histograms shared by many reader tasks.
///
/// One histogram per connection would cost tens of kilobytes each (too much for thousands of
/// connections); one for all would be contended on a multi-threaded runtime. A few shards,
/// locked once per read batch, are both small and uncontended.
pub(crate) struct Latency {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Latency {
    pub(crate) fn new(shards: usize) -> Latency {
        Latency {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        }
    }

    /// The shard for connection `index`, locked.
    pub(crate) fn shard(&self, index: usize) -> MutexGuard<'_, Histogram<u64>> {
        self.shards[index % self.shards.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// All shards merged.
    pub(crate) fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            // Same bounds on both sides, so adding cannot fail.
            let _ = all.add(&*shard);
        }
        all
    }
}

/// A histogram of microseconds from 1 µs to an hour at 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // Constant bounds that satisfy hdrhistogram's rules (low >= 1, high >= 2 * low,
    // sigfig <= 5): construction cannot fail.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant histogram bounds are valid")
}

/// Latency figures in milliseconds, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) mean_ms: f64,
}

impl Percentiles {
    pub(crate) fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1000.0,
        }
    }
}

/// CPU time used so far by this process and, if known, by the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    pub(crate) own: Duration,
    pub(crate) server: Option<Duration>,
}

impl CpuSample {
    pub(crate) fn take(server_pid: Option<u32>) -> CpuSample {
        CpuSample {
            own: cpu_time("self").unwrap_or_default(),
            server: server_pid.and_then(|pid| cpu_time(&pid.to_string())),
        }
    }
}

/// CPU used between two samples, in % of one core.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuUse {
    pub(crate) bench_pct: f64,
    /// `None` without `--server-pid`, or if the server could not be read both times.
    pub(crate) server_pct: Option<f64>,
}

impl CpuUse {
    pub(crate) fn between(before: CpuSample, after: CpuSample, wall: Duration) -> CpuUse {
        // Tick-rounded readings from /proc: a later one is never meant to be smaller, but a
        // subtraction that could panic on it is not worth the risk.
        let used = |before: Duration, after: Duration| percent(after.saturating_sub(before), wall);
        CpuUse {
            bench_pct: used(before.own, after.own),
            server_pct: before
                .server
                .zip(after.server)
                .map(|(before, after)| used(before, after)),
        }
    }
}

/// `used` as a percentage of one core over `wall`.
fn percent(used: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        0.0
    } else {
        used.as_secs_f64() / wall.as_secs_f64() * 100.0
    }
}

/// User plus system CPU time a process has used so far, from `/proc/PID/stat`; `pid` is a
/// process id or `self`. `None` if the process is gone or the line does not parse.
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; every field after its `)` is numeric.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = if per_second > 0 {
        per_second as f64
    } else {
        100.0
    };
    Some(Duration::from_secs_f64(total as f64 / per_second))
}

/// A process's resident set size in KiB, from the `VmRSS` line of `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no VmRSS line (is it a kernel thread?)",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_round_trip_with_and_without_padding() {
        let mut text = String::new();
        write_text(&mut text, 123_456, 7, "");
        assert_eq!(text, "123456 7");
        assert_eq!(parse_text(&text), Some((123_456, 7)));
        write_text(&mut text, 1, 2, "xxxx");
        assert_eq!(text, "1 2 xxxx");
        assert_eq!(parse_text(&text), Some((1, 2)));
        assert_eq!(parse_text("hello there"), None);
        assert_eq!(parse_text("12"), None);
    }

    #[test]
    fn percentiles_come_out_in_milliseconds() {
        let latency = Latency::new(3);
        for (i, micros) in [1000u64, 2000, 3000, 4000].into_iter().enumerate() {
            let _ = latency.shard(i).record(micros);
        }
        let p = Percentiles::of(&latency.merged());
        assert!((p.max_ms - 4.0).abs() < 0.01, "{p:?}");
        assert!((p.p50_ms - 2.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn reads_own_cpu_and_memory() {
        assert!(rss_kib(std::process::id()).is_ok_and(|kib| kib > 0));
        assert!(cpu_time("self").is_some());
    }
}
