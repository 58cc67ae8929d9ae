//! The dashboard: a page served at `/ui/` (`/` redirects there) that explores what this server
//! serves, built on the TypeScript client. Its built files (`ui/`, made from
//! `clients/typescript/examples/dashboard` and committed, so a build needs no Node.js) are
//! embedded in the binary; this module only serves them. It knows nothing of sessions: the page
//! speaks to `/v1/ws` and `/v1/stats` like any other client.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use rust_embed::RustEmbed;

/// The built page, embedded at compile time (also in debug builds: `debug-embed`).
#[derive(RustEmbed)]
#[folder = "ui/"]
struct Assets;

/// What the page may load: its own files, and the server's WebSocket and HTTP endpoints.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; \
     img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";

/// `/` and `/ui` redirect to `/ui/`, which serves `index.html`; `/ui/<file>` serves the file.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/ui/") }))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route(
            "/ui/{*file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
}

/// One embedded file with its content type, or 404.
fn asset(file: &str) -> Response {
    let Some(content) = Assets::get(file) else {
        return (StatusCode::NOT_FOUND, "no such file in the dashboard\n").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, content_type(file)),
            // The files change with the binary, which the browser cannot tell: revalidate.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        content.data,
    )
        .into_response()
}

fn content_type(file: &str) -> &'static str {
    match file.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_embedded() {
        let index = Assets::get("index.html").expect("ui/index.html is embedded");
        let html = String::from_utf8_lossy(&index.data);
        assert!(html.contains("dashboard.js"), "{html}");
        assert!(Assets::get("dashboard.js").is_some());
        assert!(Assets::get("dashboard.css").is_some());
        assert_eq!(content_type("a/b.js"), "text/javascript; charset=utf-8");
    }
}
