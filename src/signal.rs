//! Shutdown on SIGINT or SIGTERM.

use log::{error, warn};
use tokio::signal::unix::{signal, SignalKind};

/// Exit status when a second signal cuts the graceful shutdown short.
const FORCED_EXIT_CODE: i32 = 130;

/// Completes at the first SIGINT or SIGTERM. From then on, a second one exits the process at
/// once, for an operator who will not wait for the graceful shutdown.
pub async fn shutdown_requested() {
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(interrupt), Ok(terminate)) => (interrupt, terminate),
        (Err(error), _) | (_, Err(error)) => {
            // Without signal handlers the default action (exit) still applies.
            error!("cannot listen for signals: {error}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    warn!("shutdown requested; a second signal exits at once");
    actix_rt::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        warn!("second signal: exiting now");
        std::process::exit(FORCED_EXIT_CODE);
    });
}
