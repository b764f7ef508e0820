//! `GET /metrics`: the server's [`Metrics`](crate::metrics::Metrics) in the Prometheus text
//! format, to the clients `http.metrics` allows. docs/DEPLOYMENT.md lists every metric.
//!
//! `"loopback"` (the default) serves only clients on a loopback address — the client's address
//! as [`client_address`] resolves it, so behind a trusted proxy it is the visitor's, not the
//! proxy's — and tells anyone else 403 with a reason; `"all"` serves everyone; `"off"` answers
//! 404 as for any path the server does not have, since there is nothing to ask permission for.

use std::net::SocketAddr;

use actix_web::{web::Data, HttpRequest, HttpResponse};
use prometheus::TEXT_FORMAT;

use super::{client_address, health::plain, Web};
use crate::config::MetricsAccess;

/// What a request for `/metrics` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Metrics,
    Forbidden,
    NotFound,
}

/// Who gets the metrics under `access`: `client` is the request's client address, if known.
fn answer(access: MetricsAccess, client: Option<SocketAddr>) -> Answer {
    match access {
        MetricsAccess::Off => Answer::NotFound,
        MetricsAccess::All => Answer::Metrics,
        // An IPv4 client of a dual-stack listener arrives as ::ffff:127.0.0.1.
        MetricsAccess::Loopback
            if client.is_some_and(|client| client.ip().to_canonical().is_loopback()) =>
        {
            Answer::Metrics
        }
        MetricsAccess::Loopback => Answer::Forbidden,
    }
}

pub(crate) async fn metrics(web: Data<Web>, req: HttpRequest) -> HttpResponse {
    match answer(web.http.metrics, client_address(&web, &req)) {
        Answer::Metrics => HttpResponse::Ok()
            .content_type(TEXT_FORMAT)
            .insert_header(("cache-control", "no-store"))
            .body(web.metrics.render()),
        Answer::Forbidden => plain(
            HttpResponse::Forbidden(),
            "metrics are served to loopback clients only (http.metrics)",
        ),
        Answer::NotFound => HttpResponse::NotFound().finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(address: &str) -> Option<SocketAddr> {
        Some(address.parse().expect("a socket address"))
    }

    #[test]
    fn loopback_serves_only_loopback_clients() {
        let access = MetricsAccess::Loopback;
        for client in [
            "127.0.0.1:5000",
            "127.8.9.10:1",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert_eq!(answer(access, at(client)), Answer::Metrics, "{client}");
        }
        for client in [
            "10.0.0.7:5000",
            "192.168.1.2:80",
            "[2001:db8::1]:443",
            "[::ffff:10.0.0.1]:1",
        ] {
            assert_eq!(answer(access, at(client)), Answer::Forbidden, "{client}");
        }
        assert_eq!(answer(access, None), Answer::Forbidden, "an unknown client");
    }

    #[test]
    fn all_serves_everyone_and_off_no_one() {
        for client in [at("127.0.0.1:1"), at("203.0.113.9:1"), None] {
            assert_eq!(answer(MetricsAccess::All, client), Answer::Metrics);
            assert_eq!(answer(MetricsAccess::Off, client), Answer::NotFound);
        }
    }
}
