//! `/ui`: the operators' dashboard, a static page embedded in the binary that uses only the
//! public API (REST with the operator's key, and the event WebSocket).

use poem::http::StatusCode;
use poem::web::Path;
use poem::{Endpoint, IntoResponse, Response, Route, handler};

/// The page's files, compiled into the binary: no build step, no CDN.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("assets/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("assets/favicon.svg"),
    ),
];

fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => bytes
            .to_vec()
            .with_content_type(*content_type)
            .with_header("cache-control", "no-cache")
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[handler]
fn index() -> Response {
    asset("index.html")
}

#[handler]
fn file(Path(name): Path<String>) -> Response {
    asset(&name)
}

pub fn routes() -> impl Endpoint {
    Route::new().at("/", index).at("/:name", file)
}
