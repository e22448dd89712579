//! The HTTP endpoints: `/metrics`, `/api/v1/flows`, `/api/v1/suspects`,
//! `/healthz`, `/readyz`.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::{
    daemon::Shared,
    export::{
        metrics::{self, Format},
        process::ProcessStats,
    },
};

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/api/v1/flows", get(flows))
        .route("/api/v1/suspects", get(suspects))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/", get(index))
        .with_state(shared)
}

async fn scrape(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = tokio::task::spawn_blocking(move || {
        let mut s = shared.snapshot();
        s.process = ProcessStats::read_self();
        metrics::encode(s, format)
    })
    .await
    .unwrap_or_default();
    ([(header::CONTENT_TYPE, format.content_type())], body)
}

async fn flows(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let flows = tokio::task::spawn_blocking(move || shared.flows_json())
        .await
        .unwrap_or_default();
    Json(flows)
}

async fn suspects(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.suspects())
}

async fn ready(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: programs not attached\n",
        )
    }
}

async fn index() -> impl IntoResponse {
    "flowd: /metrics /api/v1/flows /api/v1/suspects /healthz /readyz\n"
}
