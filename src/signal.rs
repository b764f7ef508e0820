//! Shutdown on SIGINT or SIGTERM; SIGHUP is logged and never kills the server.

use std::{future::Future, io};

use log::{info, warn};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Exit status when a second signal cuts the graceful shutdown short.
const FORCED_EXIT_CODE: i32 = 130;

/// Installs the SIGINT, SIGTERM and SIGHUP handlers now — before the server says it is
/// listening, so that no signal can arrive unhandled — and returns a future that completes at
/// the first SIGINT or SIGTERM. From then on, a second one exits the process at once, for an
/// operator who will not wait for the graceful shutdown.
///
/// SIGHUP, whose default action would end the process without a word (a closed terminal, or an
/// operator asking for a reload out of habit), is logged instead; there is nothing to reload
/// yet. Must be called inside an actix system.
pub fn shutdown_requested() -> io::Result<impl Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    actix_rt::spawn(async move {
        while hangup.recv().await.is_some() {
            info!("SIGHUP received: nothing to reload (settings are read at start; restart to change them)");
        }
    });
    Ok(async move {
        either(&mut interrupt, &mut terminate).await;
        warn!("shutdown requested; a second signal exits at once");
        actix_rt::spawn(async move {
            either(&mut interrupt, &mut terminate).await;
            warn!("second signal: exiting now");
            std::process::exit(FORCED_EXIT_CODE);
        });
    })
}

async fn either(interrupt: &mut Signal, terminate: &mut Signal) {
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}
