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
    time::{timeout_at, Instant},
};

use super::{
    name_prefix, net,
    progress::Progress,
    report::{ChurnReport, Report},
    stats::{new_histogram, Percentiles},
    BenchError, Options,
};
use crate::codec::Request;

/// Runs `workers` loops until `duration` has passed (or the global deadline).
pub async fn run(
    options: &Options,
    workers: usize,
    duration: Duration,
    deadline: Instant,
) -> Result<Report, BenchError> {
    let start = Instant::now();
    let stop = super::not_after(start, duration, deadline);
    let logins = Arc::new(AtomicU64::new(0));
    let incomplete = Arc::new(AtomicU64::new(0));
    let _bar = {
        let logins = logins.clone();
        let total = duration.as_millis() as u64;
        Progress::start(options.progress, "churning", total, move || {
            let done = logins.load(Ordering::Relaxed);
            (start.elapsed().as_millis() as u64, format!("{done} logins"))
        })
    };
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let cycle = Cycle {
                addr: options.server,
                prefix: format!("{}{worker}.", name_prefix(&options.run_id)),
                stop,
                deadline,
                logins: logins.clone(),
                incomplete: incomplete.clone(),
            };
            tokio::spawn(cycle.run())
        })
        .collect();
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
    if let Some(error) = first_error {
        return Err(error);
    }
    let elapsed = start.elapsed();
    let logins = logins.load(Ordering::Acquire);
    let latency = Percentiles::of(&latency);
    Ok(Report {
        mode: "churn",
        connections: workers,
        elapsed_s: elapsed.as_secs_f64(),
        churn: Some(ChurnReport {
            workers,
            duration_s: duration.as_secs_f64(),
            logins,
            incomplete: incomplete.load(Ordering::Acquire),
            logins_per_s: logins as f64 / elapsed.as_secs_f64(),
            login_p50_ms: latency.p50_ms,
            login_p99_ms: latency.p99_ms,
            login_max_ms: latency.max_ms,
        }),
        ..Report::default()
    })
}

/// One worker's loop.
struct Cycle {
    addr: std::net::SocketAddr,
    /// `bench{run}-{worker}.`; the cycle number completes the name.
    prefix: String,
    stop: Instant,
    deadline: Instant,
    logins: Arc<AtomicU64>,
    incomplete: Arc<AtomicU64>,
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
            let Ok(conn) = timeout_at(self.deadline, net::handshake(self.addr, &name, None)).await
            else {
                break; // the global deadline passed mid-login
            };
            let mut conn = conn?;
            latency.saturating_record((began.elapsed().as_micros() as u64).max(1));
            if self.finish(&mut conn, &exit).await {
                self.logins.fetch_add(1, Ordering::Relaxed);
            } else {
                self.incomplete.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(latency)
    }

    /// Sends `exit` and reads until the server closes; true if `bye` came first.
    async fn finish(&self, conn: &mut net::Conn, exit: &[u8]) -> bool {
        if conn.write.write_all(exit).await.is_err() {
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
