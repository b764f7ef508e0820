//! churn: workers that loop connect → login → exit, for the rate at which the server takes
//! sessions on and off.
//!
//! Every cycle uses a fresh name, so a cycle never waits for the server to forget the previous
//! one; each waits for `bye` and then for the server to close, so the server (not the tool)
//! does the active close and the cycle really is complete.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::{
    io::AsyncWriteExt,
    task::JoinHandle,
    time::{timeout_at, Instant},
};

use super::{
    name_prefix, net,
    progress::Progress,
    report::{ChurnReport, Figures, Measured},
    stats::{new_histogram, Percentiles},
    BenchError, Options,
};
use crate::codec::Request;

/// Cycles counted by every worker.
#[derive(Default)]
struct Counts {
    /// Completed cycles.
    logins: AtomicU64,
    /// Cycles cut short.
    incomplete: AtomicU64,
}

/// Runs `workers` loops until `duration` has passed (or the global deadline).
pub(crate) async fn run(
    options: &Options,
    workers: usize,
    duration: Duration,
    deadline: Instant,
) -> Result<Measured, BenchError> {
    let start = Instant::now();
    let stop = super::not_after(start, duration, deadline);
    let counts = Arc::new(Counts::default());
    let _bar = progress(options.progress, start, duration, &counts);
    let tasks = (0..workers)
        .map(|worker| {
            let cycle = Cycle {
                addr: options.server,
                transport: options.transport.clone(),
                prefix: format!("{}{worker}.", name_prefix(&options.run_id)),
                stop,
                deadline,
                counts: counts.clone(),
            };
            tokio::spawn(cycle.run())
        })
        .collect();
    let latency = join(tasks).await?;
    Ok(measure(
        workers,
        duration,
        start.elapsed(),
        &counts,
        &latency,
    ))
}

/// A bar over the duration (churn's work is bounded by time, not by a count), showing the
/// logins so far.
fn progress(enabled: bool, start: Instant, duration: Duration, counts: &Arc<Counts>) -> Progress {
    let counts = counts.clone();
    let total = duration.as_millis() as u64;
    Progress::start(enabled, "churning", total, move || {
        let done = counts.logins.load(Ordering::Relaxed);
        (start.elapsed().as_millis() as u64, format!("{done} logins"))
    })
}

/// Waits for every worker and merges their login latencies; the first fatal error, if any,
/// is the answer instead.
async fn join(
    tasks: Vec<JoinHandle<Result<Histogram<u64>, BenchError>>>,
) -> Result<Histogram<u64>, BenchError> {
    let mut latency = new_histogram();
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(histogram)) => {
                let _ = latency.add(&histogram);
            }
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            // Workers return rather than panic; a join error means the runtime is going away.
            Err(_) => {}
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(latency),
    }
}

/// The figures of a churn run that took `elapsed`.
fn measure(
    workers: usize,
    duration: Duration,
    elapsed: Duration,
    counts: &Counts,
    latency: &Histogram<u64>,
) -> Measured {
    let logins = counts.logins.load(Ordering::Acquire);
    let latency = Percentiles::of(latency);
    Measured {
        connections: workers,
        elapsed,
        figures: Figures::Churn(ChurnReport {
            workers,
            duration_s: duration.as_secs_f64(),
            logins,
            incomplete: counts.incomplete.load(Ordering::Acquire),
            logins_per_s: logins as f64 / elapsed.as_secs_f64(),
            login_p50_ms: latency.p50_ms,
            login_p99_ms: latency.p99_ms,
            login_max_ms: latency.max_ms,
        }),
    }
}

/// One worker's loop.
struct Cycle {
    addr: std::net::SocketAddr,
    transport: super::net::Transport,
    /// `bench{run}-{worker}.`; the cycle number completes the name.
    prefix: String,
    stop: Instant,
    deadline: Instant,
    counts: Arc<Counts>,
}

impl Cycle {
    /// Loops until `stop`; returns the login latencies (µs) or the first fatal error.
    async fn run(self) -> Result<Histogram<u64>, BenchError> {
        let mut latency = new_histogram();
        let exit = Request::Exit.to_line();
        let mut name = String::with_capacity(self.prefix.len() + 8);
        let mut cycle = 0u64;
        while Instant::now() < self.stop {
            name.clear();
            name.push_str(&self.prefix);
            name.push_str(&cycle.to_string());
            cycle += 1;
            let began = Instant::now();
            let Ok(conn) = timeout_at(
                self.deadline,
                net::handshake(self.addr, &self.transport, &name, None),
            )
            .await
            else {
                break; // the global deadline passed mid-login
            };
            let mut conn = conn?;
            latency.saturating_record((began.elapsed().as_micros() as u64).max(1));
            let counter = if self.finish(&mut conn, &exit).await {
                &self.counts.logins
            } else {
                &self.counts.incomplete
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Ok(latency)
    }

    /// Sends `exit` and reads until the server closes; true if `bye` came first.
    async fn finish(&self, conn: &mut net::Conn, exit: &[u8]) -> bool {
        if conn.write.write_all(exit).await.is_err() || conn.write.flush().await.is_err() {
            return false;
        }
        let mut bye = false;
        loop {
            match timeout_at(self.deadline, conn.next_line()).await {
                Ok(Ok(Some(line))) => bye |= &line[..] == b"bye",
                Ok(Ok(None)) => return bye,
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }
}
