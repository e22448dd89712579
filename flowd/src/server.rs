//! The HTTP endpoints: `/metrics`, `/api/v1/flows`, `/api/v1/top`,
//! `/api/v1/suspects`, `/api/v1/l7`, `/healthz`, `/readyz`.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::{
    export::{
        metrics::{self, Format},
        process::ProcessStats,
    },
    state::Shared,
};

mod flows;
mod l7;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/api/v1/top", get(top))
        .route("/api/v1/suspects", get(suspects))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/", get(index))
        .with_state(Arc::clone(&shared))
        .merge(l7::router(Arc::clone(&shared)))
        .merge(flows::router(shared))
}

/// The host counters' reader, one for all scrapes (it counts failed reads).
static HOST: std::sync::LazyLock<crate::export::hoststats::HostReader> =
    std::sync::LazyLock::new(crate::export::hoststats::HostReader::proc);

async fn scrape(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = tokio::task::spawn_blocking(move || {
        let mut s = shared.snapshot();
        s.process = ProcessStats::read_self();
        s.host = Some(HOST.read());
        metrics::encode(s, format)
    })
    .await
    .unwrap_or_default();
    ([(header::CONTENT_TYPE, format.content_type())], body)
}

#[derive(Debug, serde::Deserialize)]
struct TopParams {
    seconds: Option<f64>,
    limit: Option<usize>,
}

/// The live view: `?seconds=S` (0 < S <= 10, default 2) and `?limit=N`
/// (1 to 1000, default 20).
async fn top(
    State(shared): State<Arc<Shared>>,
    Query(p): Query<TopParams>,
) -> axum::response::Response {
    let seconds = p.seconds.unwrap_or(2.0);
    let limit = p.limit.unwrap_or(20);
    let max = crate::export::recent::HISTORY.as_secs_f64();
    if !(seconds > 0.0 && seconds <= max && (1..=1000).contains(&limit)) {
        return (
            StatusCode::BAD_REQUEST,
            format!("seconds must be in (0, {max}] and limit in 1..=1000 (got seconds={seconds}, limit={limit})\n"),
        )
            .into_response();
    }
    let body = tokio::task::spawn_blocking(move || shared.top_json(seconds, limit))
        .await
        .unwrap_or_default();
    Json(body).into_response()
}

async fn suspects(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.suspects())
}

async fn ready(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.is_ready() {
        return (StatusCode::OK, "ready\n".to_owned());
    }
    let missing = shared.unattached();
    let why = if missing.is_empty() {
        "programs not attached yet".to_owned()
    } else {
        format!("no program on {}", missing.join(", "))
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {why}\n"),
    )
}

async fn index() -> impl IntoResponse {
    "flowd: /metrics /api/v1/flows /api/v1/top /api/v1/suspects /api/v1/l7 /healthz /readyz\n"
}
