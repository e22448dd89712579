//! `GET /api/v1/flows`: the live flow table as a JSON array of flow
//! records, a page at a time (`?limit=N&cursor=C`) or streamed whole
//! (`?limit=all`), optionally filtered.
//!
//! - `limit`: flows per page, 1 to 10,000 (default 1,000), or `all`: every
//!   matching flow, streamed; one `all` at a time (another one meanwhile is
//!   answered 429 with `Retry-After`).
//! - `cursor`: where the page starts: the `X-Flowd-Next-Cursor` of the
//!   previous page (default 0, the table's start). While there is more,
//!   the answer carries `X-Flowd-Next-Cursor: N` and
//!   `Link: </api/v1/flows?cursor=N&...>; rel="next"` (the same
//!   parameters); the last page has neither. A page may hold fewer than
//!   `limit` flows, even none, and still have a next one. A walk that
//!   follows the cursor sees every flow that lives throughout it exactly
//!   once; flows that start or end meanwhile may or may not show.
//! - filters, all that are given must match: `src=IP`, `dst=IP`,
//!   `port=N` (source or destination, of protocols with ports),
//!   `proto=tcp|udp|icmp|icmpv6|...|N`, `device=NAME`. A bad value is
//!   answered 400 naming the parameter and what it accepts, and so is an
//!   unknown parameter.
//!
//! The table lock is taken for at most [`CHUNK_FLOWS`] flows (and
//! [`crate::state::CHUNK_SLOTS`] slots) at a time, the flows are copied
//! out, and encoding happens after it is released. Memory per request is
//! bounded: a page holds at most `limit` copied flows and their encoded
//! records (about 0.5 MB per 1,000 flows: about 5 MB at `limit=10000`);
//! a full dump holds one chunk of 1,000 copied flows, the chunk being
//! encoded and at most [`QUEUED_CHUNKS`] encoded chunks waiting for the
//! connection (about 2 MB), whatever the size of the table.

use std::{
    borrow::Cow,
    collections::HashMap,
    convert::Infallible,
    fmt::Write as _,
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Query, State},
    http::{HeaderName, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use flowd_common::proto::ip;
use tokio::sync::{Semaphore, mpsc};

use crate::{
    flowtable::{Flow, FlowFilter},
    record,
    state::{CHUNK_FLOWS, Shared},
};

/// Flows per page unless `limit` says otherwise.
pub(crate) const DEFAULT_LIMIT: usize = 1000;
/// The largest page.
pub(crate) const MAX_LIMIT: usize = 10_000;
/// Encoded chunks of a full dump waiting for the connection.
pub(crate) const QUEUED_CHUNKS: usize = 2;
/// What a second concurrent full dump is told to wait, in seconds.
const RETRY_AFTER_S: u32 = 5;
const PARAMS: &str = "limit, cursor, src, dst, port, proto, device";
const NEXT_CURSOR: HeaderName = HeaderName::from_static("x-flowd-next-cursor");

#[derive(Clone)]
struct FlowsApi {
    shared: Arc<Shared>,
    /// One permit: the full dump under way.
    dump: Arc<Semaphore>,
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/flows", get(flows))
        .with_state(FlowsApi {
            shared,
            dump: Arc::new(Semaphore::new(1)),
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Page(usize),
    All,
}

/// A parsed request, the device still a name.
#[derive(Debug)]
struct Listing {
    limit: Limit,
    cursor: u32,
    filter: FlowFilter,
    device: Option<String>,
    /// The parameters as given, but `cursor`: the next page's link repeats them.
    params: Vec<(String, String)>,
}

fn parse(params: Vec<(String, String)>) -> Result<Listing, String> {
    let mut l = Listing {
        limit: Limit::Page(DEFAULT_LIMIT),
        cursor: 0,
        filter: FlowFilter::default(),
        device: None,
        params: Vec::new(),
    };
    let mut given: Vec<&str> = Vec::new();
    for (k, v) in &params {
        if given.contains(&k.as_str()) {
            return Err(format!("{k} is given more than once"));
        }
        match k.as_str() {
            "limit" => {
                l.limit = match v.as_str() {
                    "all" => Limit::All,
                    n => n
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .map(Limit::Page)
                        .ok_or_else(|| {
                            format!(
                                "limit must be a number from 1 to {MAX_LIMIT} or `all` (got {v:?})"
                            )
                        })?,
                };
            }
            "cursor" => {
                l.cursor = v.parse().ok().filter(|c| *c < 1 << 31).ok_or_else(|| {
                    format!("cursor must be the X-Flowd-Next-Cursor of a previous page, a number from 0 to 2147483647 (got {v:?})")
                })?;
            }
            "src" | "dst" => {
                let a: IpAddr = v
                    .parse()
                    .map_err(|_| format!("{k} must be an IPv4 or IPv6 address (got {v:?})"))?;
                let a = match a {
                    IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                    IpAddr::V6(a) => a.octets(),
                };
                *(if k == "src" {
                    &mut l.filter.src
                } else {
                    &mut l.filter.dst
                }) = Some(a);
            }
            "port" => {
                l.filter.port =
                    Some(v.parse().map_err(|_| {
                        format!("port must be a number from 0 to 65535 (got {v:?})")
                    })?);
            }
            "proto" => {
                let by_name = ip::NAMES
                    .iter()
                    .find(|(_, n)| n.eq_ignore_ascii_case(v))
                    .map(|(p, _)| *p);
                l.filter.proto = Some(match (by_name, v.parse::<u8>()) {
                    (Some(p), _) | (None, Ok(p)) => p,
                    _ => {
                        let names: Vec<&str> = ip::NAMES.iter().map(|(_, n)| *n).collect();
                        return Err(format!(
                            "proto must be a protocol name ({}) or a number from 0 to 255 (got {v:?})",
                            names.join(", ")
                        ));
                    }
                });
            }
            "device" => {
                if v.is_empty() || v.len() > 15 {
                    return Err(format!(
                        "device must be an interface name of 1 to 15 bytes (got {v:?})"
                    ));
                }
                l.device = Some(v.clone());
            }
            _ => return Err(format!("unknown parameter {k:?}; accepted: {PARAMS}")),
        }
        given.push(k);
    }
    l.params = params.into_iter().filter(|(k, _)| k != "cursor").collect();
    Ok(l)
}

/// The ifindexes a device name stands for: the interfaces of that name in
/// this run, or `ifN` for an ifindex without a name (as records show it).
fn ifindexes(name: &str, names: &HashMap<u32, String>) -> Vec<u32> {
    let mut out: Vec<u32> = names
        .iter()
        .filter(|(_, n)| *n == name)
        .map(|(i, _)| *i)
        .collect();
    if let Some(i) = name.strip_prefix("if").and_then(|n| n.parse().ok())
        && !names.contains_key(&i)
    {
        out.push(i);
    }
    out
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{msg}\n")).into_response()
}

/// The flow list; see the module documentation for the parameters and the
/// paging headers. The table lock is never held while encoding, and memory
/// per request is bounded whatever the table's size: a page holds at most
/// `limit` (10,000) copied flows and their encoded records (about 0.5 MB
/// per 1,000 flows), a full dump about 2 MB (one chunk of 1,000 copied
/// flows, its encoding, and [`QUEUED_CHUNKS`] encoded chunks queued).
async fn flows(
    State(api): State<FlowsApi>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let mut l = match parse(params) {
        Ok(l) => l,
        Err(e) => return bad_request(e),
    };
    let names = api.shared.device_names();
    if let Some(d) = &l.device {
        l.filter.ifindex = Some(ifindexes(d, &names));
    }
    match l.limit {
        Limit::Page(n) => page(api.shared, l, n, names).await,
        Limit::All => dump(api, l, names),
    }
}

async fn page(
    shared: Arc<Shared>,
    l: Listing,
    limit: usize,
    names: HashMap<u32, String>,
) -> Response {
    let (filter, cursor) = (l.filter, l.cursor);
    let done = tokio::task::spawn_blocking(move || {
        let chunk = shared.flows_chunk(&filter, cursor, limit);
        // The lock is released: encode.
        let mut body = Vec::with_capacity(512 * chunk.flows.len() + 2);
        body.push(b'[');
        encode(&mut body, &chunk.flows, &names, true);
        body.push(b']');
        (body, chunk.next)
    })
    .await;
    let Ok((body, next)) = done else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut resp = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(n) = next {
        let h = resp.headers_mut();
        h.insert(NEXT_CURSOR, n.into());
        if let Ok(v) = next_link(n, &l.params).parse() {
            h.insert(header::LINK, v);
        }
    }
    resp
}

/// `</api/v1/flows?cursor=N&...>; rel="next"`, with the request's other
/// parameters.
fn next_link(cursor: u32, params: &[(String, String)]) -> String {
    let mut s = format!("</api/v1/flows?cursor={cursor}");
    for (k, v) in params {
        s.push('&');
        percent_encode(&mut s, k);
        s.push('=');
        percent_encode(&mut s, v);
    }
    s.push_str(">; rel=\"next\"");
    s
}

fn percent_encode(out: &mut String, v: &str) {
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Appends the flows' records to a JSON array's body, comma-separated
/// (`first`: no comma before the first one).
fn encode(
    out: &mut Vec<u8>,
    flows: &[(Flow, Option<&'static str>)],
    names: &HashMap<u32, String>,
    mut first: bool,
) {
    for (f, state) in flows {
        if !first {
            out.push(b',');
        }
        first = false;
        let dev = names
            .get(&f.key.ifindex)
            .map_or_else(|| Cow::Owned(format!("if{}", f.key.ifindex)), Cow::from);
        let mut v = record::flow_json(f, &dev);
        if let Some(state) = state {
            v["state"] = (*state).into();
        }
        serde_json::to_writer(&mut *out, &v).expect("a JSON value encodes into a Vec");
    }
}

/// `?limit=all`: every matching flow, streamed. A blocking task copies
/// [`CHUNK_FLOWS`] flows at a time out of the table, encodes them with the
/// lock released, and hands the bytes to the connection through a channel
/// of [`QUEUED_CHUNKS`]: it waits while the client reads slowly, and stops
/// when the client goes away.
fn dump(api: FlowsApi, l: Listing, names: HashMap<u32, String>) -> Response {
    let Ok(permit) = Arc::clone(&api.dump).try_acquire_owned() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, RETRY_AFTER_S.to_string())],
            "another full dump (?limit=all) is under way and only one runs at a time: \
             retry later, or read the flows a page at a time (?limit=N&cursor=C)\n",
        )
            .into_response();
    };
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUED_CHUNKS);
    let (shared, filter) = (api.shared, l.filter);
    let mut cursor = l.cursor;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut buf = vec![b'['];
        let mut first = true;
        loop {
            let chunk = shared.flows_chunk(&filter, cursor, CHUNK_FLOWS);
            encode(&mut buf, &chunk.flows, &names, first);
            first &= chunk.flows.is_empty();
            drop(chunk.flows);
            if chunk.next.is_none() {
                buf.push(b']');
            }
            if !buf.is_empty()
                && tx
                    .blocking_send(Bytes::from(std::mem::take(&mut buf)))
                    .is_err()
            {
                return; // The client went away.
            }
            match chunk.next {
                Some(n) => cursor = n,
                None => return,
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(Chunks(rx)),
    )
        .into_response()
}

/// The encoded chunks of a full dump as a body stream.
struct Chunks(mpsc::Receiver<Bytes>);

impl futures_core::Stream for Chunks {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|c| c.map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &[(&str, &str)]) -> Result<Listing, String> {
        parse(
            q.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn parameters_parse_and_bad_ones_are_named() {
        let l = p(&[]).unwrap();
        assert_eq!((l.limit, l.cursor), (Limit::Page(DEFAULT_LIMIT), 0));
        assert_eq!(l.filter, FlowFilter::default());
        let l = p(&[
            ("limit", "all"),
            ("cursor", "77"),
            ("src", "198.18.0.1"),
            ("dst", "fd00::2"),
            ("port", "53"),
            ("proto", "UDP"),
            ("device", "eth0"),
        ])
        .unwrap();
        assert_eq!((l.limit, l.cursor), (Limit::All, 77));
        let mut v4 = [0u8; 16];
        v4[10..].copy_from_slice(&[0xff, 0xff, 198, 18, 0, 1]);
        assert_eq!(l.filter.src, Some(v4));
        assert_eq!(l.filter.dst.unwrap()[0], 0xfd);
        assert_eq!((l.filter.port, l.filter.proto), (Some(53), Some(ip::UDP)));
        assert_eq!(l.device.as_deref(), Some("eth0"));
        assert_eq!(l.params.len(), 6, "all but the cursor");
        assert_eq!(
            p(&[("proto", "58")]).unwrap().filter.proto,
            Some(ip::ICMPV6)
        );
        assert_eq!(
            p(&[("proto", "icmpv6")]).unwrap().filter.proto,
            Some(ip::ICMPV6)
        );
        assert_eq!(p(&[("limit", "10000")]).unwrap().limit, Limit::Page(10_000));
        for (k, v, says) in [
            (
                "limit",
                "0",
                "limit must be a number from 1 to 10000 or `all`",
            ),
            ("limit", "10001", "limit must be"),
            ("limit", "many", "limit must be"),
            ("cursor", "-1", "cursor must be"),
            ("cursor", "2147483648", "cursor must be"),
            ("src", "198.18.0", "src must be an IPv4 or IPv6 address"),
            ("dst", "host", "dst must be an IPv4 or IPv6 address"),
            ("port", "65536", "port must be a number from 0 to 65535"),
            ("proto", "tcpx", "proto must be a protocol name (icmp, "),
            ("proto", "256", "proto must be"),
            ("device", "", "device must be an interface name"),
            ("device", "a-very-long-name-indeed", "device must be"),
            ("unit", "x", "unknown parameter \"unit\"; accepted: limit,"),
        ] {
            let e = p(&[(k, v)]).unwrap_err();
            assert!(e.starts_with(says), "{k}={v}: {e}");
        }
        let e = p(&[("port", "1"), ("port", "2")]).unwrap_err();
        assert_eq!(e, "port is given more than once");
    }

    #[test]
    fn the_next_link_repeats_the_parameters() {
        let params = vec![
            ("limit".to_owned(), "50".to_owned()),
            ("dst".to_owned(), "fd00::1".to_owned()),
        ];
        assert_eq!(
            next_link(4096, &params),
            "</api/v1/flows?cursor=4096&limit=50&dst=fd00%3A%3A1>; rel=\"next\""
        );
    }

    #[test]
    fn devices_resolve_by_name_or_ifindex() {
        let names = HashMap::from([
            (2, "eth0".to_owned()),
            (5, "eth0".to_owned()),
            (3, "if9".to_owned()),
        ]);
        let mut got = ifindexes("eth0", &names);
        got.sort_unstable();
        assert_eq!(got, vec![2, 5]);
        assert_eq!(ifindexes("if7", &names), vec![7]);
        assert_eq!(
            ifindexes("if2", &names),
            Vec::<u32>::new(),
            "ifindex 2 has a name"
        );
        assert_eq!(ifindexes("if9", &names), vec![3, 9]);
        assert!(ifindexes("wlan0", &names).is_empty());
    }
}
