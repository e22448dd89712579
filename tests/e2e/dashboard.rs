//! The Grafana dashboard (`deploy/grafana/flowd-dashboard.json`) against a
//! real Prometheus scraping a real flowd: every query parses and runs, every
//! metric it names is one flowd exports, and the panels that the test's
//! traffic feeds show data.

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    thread,
};

use flowd_tests::{Flowd, Link, TempDir, send_udp_on, wait};
use serde_json::Value;

use crate::prometheus::Prometheus;

fn dashboard() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/flowd-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every PromQL expression of the dashboard: panel targets and variable queries.
fn expressions(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap().to_owned(),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            // label_values(SELECTOR, label) -> SELECTOR
            let q = v["query"]["query"].as_str().unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|s| s.rsplit_once(','))
                .map(|(sel, _)| sel.to_owned())
                .unwrap_or_else(|| panic!("variable query {q}"));
            out.push((format!("variable {}", v["name"]), inner));
        }
    }
    out
}

/// The Grafana variables as the dashboard's "All" selects them.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "15s")
        .replace("$instance", ".*")
        .replace("$device", ".*")
}

fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        let boundary = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if boundary && (expr[i..].starts_with("flowd_") || expr[i..].starts_with("process_")) {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(b.len(), |n| i + n);
            names.insert(expr[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// One TCP exchange from `link.a` to `link.b`: `request`, FIN, `reply`.
fn tcp_exchange(link: &Link, port: u16, request: Vec<u8>, reply: Vec<u8>) {
    let addr: SocketAddr = format!("{}:{port}", link.ip_b).parse().unwrap();
    let listener: TcpListener = link.b.run(move || TcpListener::bind(addr).unwrap());
    let (want, answer) = (request.clone(), reply.clone());
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, want);
        s.write_all(&answer).unwrap();
    });
    let mut s: TcpStream = link.a.run(move || TcpStream::connect(addr).unwrap());
    s.write_all(&request).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, reply);
    server.join().unwrap();
}

/// A TLS handshake record: `msg_type`, then `body`.
fn tls_hello(msg_type: u8, body: &[u8]) -> Vec<u8> {
    let n = body.len();
    let mut v = vec![22, 3, 1];
    v.extend_from_slice(&((n + 4) as u16).to_be_bytes());
    v.extend_from_slice(&[msg_type, 0, (n >> 8) as u8, n as u8]);
    v.extend_from_slice(body);
    v
}

/// One DNS query answered, one HTTP request answered and one TLS
/// handshake (ClientHello, ServerHello for TLS 1.2): data for the
/// application-layer panels.
fn l7_traffic(link: &Link) {
    let dst: SocketAddr = format!("{}:53", link.ip_b).parse().unwrap();
    let src: SocketAddr = format!("{}:5300", link.ip_a).parse().unwrap();
    let server: UdpSocket = link.b.run(move || UdpSocket::bind(dst).unwrap());
    let client: UdpSocket = link.a.run(move || UdpSocket::bind(src).unwrap());
    let mut query = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    query.extend_from_slice(b"\x04dash\x02l7\x04test\x00\x00\x01\x00\x01");
    client.send_to(&query, dst).unwrap();
    let mut buf = [0u8; 512];
    server
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], &query[..]);
    let mut resp = query.clone();
    resp[2..4].copy_from_slice(&[0x81, 0x80]);
    resp[7] = 1;
    resp.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 18, 7, 7]);
    server.send_to(&resp, from).unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    assert_eq!(client.recv(&mut buf).unwrap(), resp.len());

    tcp_exchange(
        link,
        80,
        b"GET /dash HTTP/1.1\r\nHost: dash.l7.test\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
    );
    // ClientHello: TLS 1.2, no session ID, one cipher, no compression,
    // no extensions; the ServerHello picks that cipher.
    let mut ch = vec![3, 3];
    ch.extend_from_slice(&[0x11; 32]);
    ch.extend_from_slice(&[0, 0, 2, 0xc0, 0x2f, 1, 0]);
    let mut sh = vec![3, 3];
    sh.extend_from_slice(&[0x22; 32]);
    sh.extend_from_slice(&[0, 0xc0, 0x2f, 0]);
    tcp_exchange(link, 443, tls_hello(1, &ch), tls_hello(2, &sh));
}

#[test]
fn every_dashboard_query_runs_against_flowd_metrics() {
    let d = dashboard();
    // Structure Grafana relies on: unique panel ids, a 24-column grid, the datasource variable.
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate panel id in {p}"
        );
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{p}"
        );
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }

    let link = Link::new();
    let dir = TempDir::new("flowdt-dash");
    let l7_log = dir.path().join("l7.jsonl");
    let collector = format!("{}:4739", link.ip_b); // nothing listens: the IPFIX families still exist
    let mut flowd = Flowd::start(
        &link.b,
        &[
            "--iface",
            &link.if_b,
            "--drain-interval-ms",
            "100",
            "--tcp-close-grace",
            "0",
            "--ipfix",
            &collector,
            // The application layer's families (and its panels).
            "--l7-log",
            l7_log.to_str().unwrap(),
        ],
    );
    let prom = Prometheus::start(&link.b, "127.0.0.1:29391".parse().unwrap());

    // Traffic: UDP, and TCP connections with data (RTT samples, segments, outcomes).
    let dst: SocketAddr = format!("{}:7000", link.ip_b).parse().unwrap();
    let src: SocketAddr = format!("{}:7001", link.ip_a).parse().unwrap();
    let _rx: UdpSocket = link.b.run(move || UdpSocket::bind(dst).unwrap());
    let tx: UdpSocket = link.a.run(move || UdpSocket::bind(src).unwrap());
    send_udp_on(&tx, dst, 50, 100);
    let addr: SocketAddr = format!("{}:7100", link.ip_b).parse().unwrap();
    let listener: TcpListener = link.b.run(move || TcpListener::bind(addr).unwrap());
    let server = thread::spawn(move || {
        for _ in 0..3 {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).unwrap();
            s.write_all(b"done").unwrap();
        }
    });
    for _ in 0..3 {
        let mut s: TcpStream = link.a.run(move || TcpStream::connect(addr).unwrap());
        s.write_all(&vec![7u8; 200_000]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        assert_eq!(reply, b"done");
    }
    server.join().unwrap();
    l7_traffic(&link);
    prom.wait_for(&link.b, "sum(flowd_tcp_connections_total)", 30, |v| {
        v >= 3.0
    });
    prom.wait_for(&link.b, "sum(flowd_tcp_rtt_samples_total)", 30, |v| {
        v >= 3.0
    });
    // The one DNS response, HTTP response and TLS 1.2 handshake.
    for (q, want) in [
        (r#"sum(flowd_dns_responses_total{rcode="noerror"})"#, 1.0),
        (r#"sum(flowd_http_responses_total{class="2xx"})"#, 1.0),
        (r#"sum(flowd_tls_handshakes_total{version="1.2"})"#, 1.0),
        ("sum(flowd_dns_latency_seconds_count)", 1.0),
        ("sum(flowd_http_latency_seconds_count)", 1.0),
    ] {
        prom.wait_for(&link.b, q, 30, |v| v == want);
    }
    // Panels the traffic above cannot feed (no ECN, no zero window, no
    // overflow, no scan, no IPFIX collector): their queries must still run.
    let may_be_empty = [
        "ECN CE share",
        "Zero windows",
        "Queueing delay quantiles",
        "Lost to flows (totals stay exact)",
        "Resets",
        "TCP retransmitted share",
        "IPFIX export",
        "Series in a scrape",
    ];
    // The application-layer panels all have data: the traffic above feeds
    // the DNS, HTTP and TLS ones; signals, skips and parse errors are
    // counters that exist at zero.
    // Every other panel shows data once Prometheus has scraped the series
    // the traffic made twice (a rate() needs two samples): wait for that.
    let empty = wait::until(
        "every panel the traffic feeds to show data",
        wait::DEADLINE,
        || {
            let mut empty = Vec::new();
            for (panel, expr) in expressions(&d) {
                let q = substitute(&expr);
                if !may_be_empty.contains(&panel.as_str())
                    && prom.query(&link.b, &q, None).is_empty()
                {
                    empty.push(format!("{panel}: {q}"));
                }
            }
            empty
        },
        Vec::is_empty,
    );
    assert!(empty.is_empty());

    let (status, text) = link
        .b
        .http_get("127.0.0.1:29391".parse().unwrap(), "/metrics")
        .expect("scrape flowd");
    assert_eq!(status, 200);
    let families: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let exported = |name: &str| {
        families.contains(name)
            || ["_total", "_bucket", "_count", "_sum", "_info"]
                .iter()
                .any(|s| name.strip_suffix(s).is_some_and(|f| families.contains(f)))
    };

    // Every query parses and runs (an error panics in `query`), and every
    // metric it names is one flowd exports.
    for (panel, expr) in expressions(&d) {
        for name in metric_names(&expr) {
            assert!(
                exported(&name),
                "panel {panel:?} uses {name}, which flowd does not export; families: {families:?}"
            );
        }
        prom.query(&link.b, &substitute(&expr), None);
    }
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
}
