//! Shutdown on SIGINT or SIGTERM.

use std::{future::Future, io};

use log::warn;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Exit status when a second signal cuts the graceful shutdown short.
const FORCED_EXIT_CODE: i32 = 130;

/// Installs the SIGINT and SIGTERM handlers now — before the server says it is listening, so
/// that no signal can arrive unhandled — and returns a future that completes at the first of
/// them. From then on, a second one exits the process at once, for an operator who will not
/// wait for the graceful shutdown. Must be called inside a tokio runtime.
pub fn shutdown_requested() -> io::Result<impl Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
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
