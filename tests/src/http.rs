//! Talking to a running flowd: HTTP GETs, the Prometheus exposition, the
//! JSON API and the JSON-lines records it writes.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use crate::{Flowd, Netns};

/// A plain HTTP/1.0 GET.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Parses a Prometheus text exposition into (name{labels}, value) pairs.
pub fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// The value of the one sample whose name is `name` and whose labels include
/// every `(label, value)` in `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse_metrics(text).into_iter().find_map(|(k, v)| {
        let (n, rest) = k.split_once('{').unwrap_or((&k, ""));
        if n != name {
            return None;
        }
        labels
            .iter()
            .all(|(l, val)| rest.contains(&format!("{l}=\"{val}\"")))
            .then_some(v)
    })
}

/// Every flow from `/api/v1/flows` (the full dump, `?limit=all`) as JSON objects.
pub fn api_flows(ns: &Netns, flowd: &Flowd) -> Vec<serde_json::Value> {
    let (status, body) = ns
        .http_get(flowd.listen, "/api/v1/flows?limit=all")
        .expect("GET /api/v1/flows?limit=all");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("flows JSON")
}

/// The flows matching every `(key, value)` given (values compared as text).
pub fn find_flows<'a>(
    flows: &'a [serde_json::Value],
    want: &[(&str, &str)],
) -> Vec<&'a serde_json::Value> {
    flows
        .iter()
        .filter(|f| {
            want.iter().all(|(k, v)| match &f[*k] {
                serde_json::Value::String(s) => s == v,
                other => other.to_string().as_str() == *v,
            })
        })
        .collect()
}

/// Flow records of a JSON-lines file (none if it does not exist yet).
pub fn read_records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}
