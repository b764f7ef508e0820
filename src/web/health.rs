//! `GET /healthz` and `GET /readyz`, for load balancers and orchestrators: 200 or 503 with a
//! one-line reason, as plain text.

use std::time::Duration;

use actix_web::{web::Data, HttpResponse};

use super::Web;

/// Longest `/readyz` waits for the store to answer; a store slower than this is as good as
/// unreachable to a probe.
const STORE_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The process is up and serving HTTP: 200 `ok` whenever it can answer at all.
pub(crate) async fn healthz() -> HttpResponse {
    plain(HttpResponse::Ok(), "ok")
}

/// Ready for users: accepting connections (not shutting down) and, when a store is
/// configured, the store answering within [`STORE_PING_TIMEOUT`] (the question waits behind
/// the messages queued for writing, so a writer that far behind counts as unreachable).
/// Otherwise 503 with the reason.
pub(crate) async fn readyz(web: Data<Web>) -> HttpResponse {
    if web.stop.is_cancelled() {
        return plain(HttpResponse::ServiceUnavailable(), "shutting down");
    }
    if let Some(store) = &web.store {
        if let Err(error) = store.ping(STORE_PING_TIMEOUT).await {
            log::debug!("readyz: the store does not answer: {error}");
            return plain(HttpResponse::ServiceUnavailable(), "store unreachable");
        }
    }
    plain(HttpResponse::Ok(), "ready")
}

/// A one-line plain-text answer.
pub(crate) fn plain(mut response: actix_web::HttpResponseBuilder, line: &str) -> HttpResponse {
    response
        .content_type("text/plain; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .body(format!("{line}\n"))
}
