//! idle: hold many logged-in connections and read what they cost the server in memory.
//!
//! The server's RSS is read from /proc before the first connection and again once every
//! connection is logged in and a settle pause has passed; the difference over the count is the
//! figure. Held connections answer the server's `ping`, so a long settle does not get them
//! timed out, and any that the server closes anyway are counted (the run then fails, since the
//! figure would be off).

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};
use std::time::Duration;

use tokio::{
    io::AsyncWriteExt,
    task::JoinHandle,
    time::{sleep_until, Instant},
};

use super::{
    net::{self, Identity},
    report::{Figures, IdleReport, Measured},
    stats::rss_kib,
    user_name, BenchError, Options,
};
use crate::codec::Request;

/// Opens `clients` connections, waits `settle`, and reports the server's RSS per connection.
pub(crate) async fn run(
    options: &Options,
    clients: usize,
    settle: Duration,
    deadline: Instant,
) -> Result<Measured, BenchError> {
    let pid = options
        .server_pid
        .ok_or_else(|| BenchError::Usage("idle needs --server-pid".to_owned()))?;
    let rss_before = server_rss(pid)?;
    let began = Instant::now();
    let who = (0..clients)
        .map(|i| Identity {
            name: user_name(&options.run_id, i),
            room: None,
        })
        .collect();
    let conns = net::connect_with_progress(options, who, deadline).await?;
    let connect_time = began.elapsed();
    let closed = Arc::new(AtomicU64::new(0));
    let keepers = hold(conns, &closed);
    sleep_until(super::not_after(Instant::now(), settle, deadline)).await;
    let rss_after = server_rss(pid)?;
    release(keepers).await;
    let per_conn_bytes = rss_after.saturating_sub(rss_before) as f64 * 1024.0 / clients as f64;
    Ok(Measured {
        connections: clients,
        elapsed: began.elapsed(),
        figures: Figures::Idle(IdleReport {
            connect_s: connect_time.as_secs_f64(),
            logins_per_s: clients as f64 / connect_time.as_secs_f64(),
            settle_s: settle.as_secs_f64(),
            rss_before_kib: rss_before,
            rss_after_kib: rss_after,
            rss_per_conn_bytes: per_conn_bytes,
            rss_per_conn_kib: per_conn_bytes / 1024.0,
            closed: closed.load(Ordering::Acquire),
        }),
    })
}

/// The server's RSS in KiB, or the sentence that says `--server-pid` is wrong.
fn server_rss(pid: u32) -> Result<u64, BenchError> {
    rss_kib(pid).map_err(|source| BenchError::ServerPid { pid, source })
}

/// Keeps every connection open (see [`keep`]), counting in `closed` those the server closes.
fn hold(conns: Vec<net::Conn>, closed: &Arc<AtomicU64>) -> Vec<JoinHandle<()>> {
    conns
        .into_iter()
        .map(|conn| tokio::spawn(keep(conn, closed.clone())))
        .collect()
}

/// Stops holding: the connections close as their tasks end.
async fn release(keepers: Vec<JoinHandle<()>>) {
    for keeper in &keepers {
        keeper.abort();
    }
    for keeper in keepers {
        let _ = keeper.await; // cancelled: returns at once
    }
}

/// Holds one connection open, answering `ping`, until the server closes it or the task is
/// aborted.
async fn keep(mut conn: net::Conn, closed: Arc<AtomicU64>) {
    let pong = Request::Pong.to_line();
    while let Ok(Some(line)) = conn.next_line().await {
        if &line[..] == b"ping"
            && (conn.write.write_all(&pong).await.is_err() || conn.write.flush().await.is_err())
        {
            break;
        }
    }
    closed.fetch_add(1, Ordering::Relaxed);
}
