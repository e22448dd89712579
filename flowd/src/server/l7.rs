//! `GET /api/v1/l7`: the most recent application-layer events, newest
//! first, as a JSON array of the event log's objects (issue 12), from a
//! ring of `[l7] recent_events`.
//!
//! - `kind`: `dns`, `http` or `tls` (default: every kind);
//! - `limit`: events at most, 1 to [`MAX_RECENT_EVENTS`] (default 100).
//!
//! A bad value or an unknown parameter is answered 400 naming the
//! parameter and what it accepts; with the application layer off
//! (`[l7] enabled = false`, `--no-l7`) the answer is 404, saying so.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{
    config_l7::MAX_RECENT_EVENTS,
    l7::L7Kind,
    state::{Shared, lock},
};

/// Events per answer unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/l7", get(recent))
        .with_state(shared)
}

/// The parameters: which kind (`None`: all) and how many.
fn parse(params: &[(String, String)]) -> Result<(Option<L7Kind>, usize), String> {
    let (mut kind, mut limit) = (None, DEFAULT_LIMIT);
    let mut given: Vec<&str> = Vec::new();
    for (k, v) in params {
        if given.contains(&k.as_str()) {
            return Err(format!("{k} is given more than once"));
        }
        match k.as_str() {
            "kind" => {
                kind = Some(match v.as_str() {
                    "dns" => L7Kind::Dns,
                    "http" => L7Kind::Http,
                    "tls" => L7Kind::Tls,
                    _ => return Err(format!("kind must be dns, http or tls (got {v:?})")),
                });
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_RECENT_EVENTS).contains(n))
                    .ok_or_else(|| {
                        format!("limit must be a number from 1 to {MAX_RECENT_EVENTS} (got {v:?})")
                    })?;
            }
            _ => return Err(format!("unknown parameter {k:?}; accepted: kind, limit")),
        }
        given.push(k);
    }
    Ok((kind, limit))
}

async fn recent(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let (kind, limit) = match parse(&params) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let body = match lock(&shared.l7).as_ref() {
        Some(live) => live.recent.newest_json(kind, limit),
        None => {
            return (
                StatusCode::NOT_FOUND,
                "the application layer is off ([l7] enabled = false or --no-l7)\n",
            )
                .into_response();
        }
    };
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Result<(Option<L7Kind>, usize), String> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        parse(&v)
    }

    #[test]
    fn parameters_and_what_a_bad_one_is_told() {
        assert_eq!(p(&[]), Ok((None, 100)));
        assert_eq!(
            p(&[("kind", "dns"), ("limit", "7")]),
            Ok((Some(L7Kind::Dns), 7))
        );
        assert_eq!(p(&[("kind", "http")]), Ok((Some(L7Kind::Http), 100)));
        assert_eq!(
            p(&[("kind", "tls"), ("limit", "65536")]),
            Ok((Some(L7Kind::Tls), 65536))
        );
        for (k, v, says) in [
            ("kind", "DNS", "kind must be dns, http or tls (got \"DNS\")"),
            ("kind", "", "kind must be dns, http or tls (got \"\")"),
            (
                "limit",
                "0",
                "limit must be a number from 1 to 65536 (got \"0\")",
            ),
            (
                "limit",
                "65537",
                "limit must be a number from 1 to 65536 (got \"65537\")",
            ),
            (
                "limit",
                "-1",
                "limit must be a number from 1 to 65536 (got \"-1\")",
            ),
            (
                "limt",
                "5",
                "unknown parameter \"limt\"; accepted: kind, limit",
            ),
        ] {
            assert_eq!(p(&[(k, v)]).unwrap_err(), says, "{k}={v}");
        }
        assert_eq!(
            p(&[("kind", "dns"), ("kind", "tls")]).unwrap_err(),
            "kind is given more than once"
        );
    }
}
