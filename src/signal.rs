//! Shutdown on SIGINT or SIGTERM; SIGHUP reloads the TLS certificate and the registered names,
//! and never kills the server.

use std::{future::Future, io, sync::Arc};

use log::{info, warn};
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::Notify,
};

use crate::tls::Certificates;

/// Exit status when a second signal cuts the graceful shutdown short.
const FORCED_EXIT_CODE: i32 = 130;

/// Installs the SIGINT, SIGTERM and SIGHUP handlers now — before the server says it is
/// listening, so that no signal can arrive unhandled — and returns a future that completes at
/// the first SIGINT or SIGTERM. From then on, a second one exits the process at once, for an
/// operator who will not wait for the graceful shutdown.
///
/// SIGHUP, whose default action would end the process without a word (a closed terminal, or an
/// operator asking for a reload out of habit), reloads `tls` — the certificate and key, so that
/// a renewed certificate (certbot's deploy hook, say) serves new connections without a restart;
/// a file that does not load is a warning and the old certificate stays. Without TLS there is
/// nothing to reload, and the signal is only logged. Each SIGHUP also notifies `hangup`, which
/// the server takes as the word to read the registered names again (an account the operator
/// removed logs its user out at once). Must be called inside an actix system.
pub fn shutdown_requested(
    tls: Option<Arc<Certificates>>,
    hangup: Arc<Notify>,
) -> io::Result<impl Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut signalled = signal(SignalKind::hangup())?;
    actix_rt::spawn(async move {
        while signalled.recv().await.is_some() {
            hangup.notify_one();
            match &tls {
                None => info!("SIGHUP received: reading the registered names again (other settings are read at start; restart to change them)"),
                Some(certificates) => match certificates.reload() {
                    Ok(()) => info!(
                        "SIGHUP received: reloaded the TLS certificate from {}",
                        certificates.cert_path().display()
                    ),
                    Err(error) => warn!(
                        "SIGHUP received: kept the old TLS certificate: {error}"
                    ),
                },
            }
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
