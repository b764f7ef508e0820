//! The web client: three files built into the binary (`web/index.html`, `web/app.js`,
//! `web/style.css`), so there is nothing to deploy beside it.
//!
//! Every answer carries a strict Content-Security-Policy: scripts, styles and connections only
//! from the page's own origin (WebSockets included), no inline script or style, no plugin, no
//! framing; with `X-Content-Type-Options: nosniff` so that a file is only ever what its type
//! says. The client inserts every server string as text; the policy is the second wall.

use actix_web::{guard, web, HttpResponse};

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");

/// The policy every file is served with.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `/` (and `/index.html`), `/app.js`, `/style.css`; `GET` or `HEAD` (actix-web leaves the
/// body out of an answer to `HEAD`).
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/", get_or_head().to(index))
        .route("/index.html", get_or_head().to(index))
        .route("/app.js", get_or_head().to(app_js))
        .route("/style.css", get_or_head().to(style_css));
}

fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

async fn index() -> HttpResponse {
    file("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> HttpResponse {
    file("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> HttpResponse {
    file("text/css; charset=utf-8", STYLE_CSS)
}

fn file(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("content-security-policy", CONTENT_SECURITY_POLICY))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("referrer-policy", "no-referrer"))
        // The files change with the binary: a browser asks again (and gets them anew) after an
        // upgrade rather than mixing an old script with a new server.
        .insert_header(("cache-control", "no-cache"))
        .body(body)
}
