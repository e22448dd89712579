//! The application layer live (issue 12, "Tests / Live"): real servers
//! (Python's http.server, dnsmasq, openssl s_server) and clients (curl,
//! dig, openssl s_client) in the test's namespaces, flowd on the server's
//! interface with `--l7-log`. Each request, query and handshake gives
//! exactly one event with the fields the client and server agree on; a
//! capture of the same traffic on the same interface, replayed with
//! `flowd replay --l7-log`, gives the same events (see
//! `flowd_tests::l7::assert_replay_equals_live` for the keys that depend on
//! the capture point). Bad input: `l7_bad_input.rs`.

use std::path::Path;

use crate::l7_scenarios::{
    DNS_QUERIES, TLS_HANDSHAKES, assert_events, assert_ja4_shaped, dns_queries, dnsmasq, http_link,
    http_requests, http_server, tls_handshakes, tls_servers, tls_want,
};
use flowd::export::l7stats::{rcode_label, status_class, tls_version_label};
use flowd_tests::{
    Flowd, Link, TempDir,
    l7::{
        Capture, assert_family, assert_replay_equals_live, by_tuple, events_by, events_settled,
        read_events, replay_events, replay_metrics,
    },
    metric, wait,
};

/// flowd on `link.b`'s end with the event log at `log`.
fn flowd_l7(link: &Link, log: &Path) -> Flowd {
    Flowd::start(
        &link.b,
        &[
            "--iface",
            &link.if_b,
            "--drain-interval-ms",
            "100",
            "--l7-log",
            log.to_str().expect("UTF-8 path"),
        ],
    )
}

/// Packets with application metadata the programs skipped, by direction
/// and reason, from one scrape.
fn skipped(text: &str, dev: &str, dir: &str, reason: &str) -> Option<f64> {
    metric(
        text,
        "flowd_l7_skipped_total",
        &[("device", dev), ("direction", dir), ("reason", reason)],
    )
}

// ---------------------------------------------------------------- HTTP

/// Nine requests to `python3 -m http.server` (HTTP/1.1, keep-alive) on a
/// link with a 500-byte MTU: 448 payload bytes per segment, below the
/// 512-byte snap length, so a long request spans whole segments. Three
/// share one connection; one has a 1200-byte URL (its Host header is in its
/// third segment: reassembled from the continuation segments); one a
/// 3000-byte cookie (seven segments: the event comes from the first four,
/// the rest is counted as `continuation_limit`).
#[test]
fn http_server_and_curl_one_event_per_request() {
    let link = http_link();
    let dir = TempDir::new("flowdt-l7http");
    let live = dir.path().join("live.jsonl");
    let mut flowd = flowd_l7(&link, &live);
    let cap = Capture::start(&link.b, &link.if_b, dir.path(), "http");
    let _server = http_server(&link, dir.path());
    let run = http_requests(&link, &link.if_b);
    let (want, curl_ms, n) = (run.want, run.curl_ms, run.n);
    let events = events_settled(&live, n);
    assert_events(&events, &want);
    // Latency: from the request's first segment to the status line, within
    // what curl measured for the whole transfer (connect included).
    for (port, reqs) in by_tuple(&events) {
        for (i, e) in reqs.iter().enumerate() {
            let ms = e["http_latency_ms"].as_f64().expect("http_latency_ms");
            let curl = curl_ms[&(port.2 as u16, i)];
            assert!(
                ms > 0.0 && ms <= curl,
                "{e}: latency {ms} ms, curl {curl} ms"
            );
        }
    }
    // The 3000-byte cookie's request was the only one with more segments
    // than the continuation covers; nothing else was skipped.
    let text = wait::scrape(&link.b, &flowd);
    let dev = link.if_b.as_str();
    assert_eq!(
        skipped(&text, dev, "receive", "continuation_limit"),
        Some(1.0)
    );
    assert_eq!(
        skipped(&text, dev, "transmit", "continuation_limit"),
        Some(0.0)
    );
    for dir in ["receive", "transmit"] {
        for reason in ["ring_full", "budget"] {
            assert_eq!(
                skipped(&text, dev, dir, reason),
                Some(0.0),
                "{dir} {reason}"
            );
        }
    }
    // A clean stop emits nothing more: every request had its response.
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    assert_eq!(read_events(&live), events);

    let capture = cap.stop();
    let replayed = replay_events(&capture, &dir.path().join("replay.jsonl"));
    assert_replay_equals_live(&events, &replayed, &link.if_b, &capture);
    // Responses by status class, as curl saw them, live and replayed.
    let classes = events_by(&want, "http_status", |s| status_class(s as u16).to_owned());
    assert_eq!(classes.values().sum::<u64>(), n as u64);
    let replayed = replay_metrics(&capture, dir.path());
    assert_family(
        &text,
        &replayed,
        "flowd_http_responses_total",
        "class",
        &classes,
        Some("flowd_http_latency_seconds"),
    );
}

// ---------------------------------------------------------------- DNS

/// dnsmasq answering A and AAAA for some names, NXDOMAIN under
/// `nx.l7.test`, queried with dig over UDP and TCP, IPv4 and IPv6; two
/// queries share one TCP connection. Every query gives one event with its
/// name, type, ID, rcode and answers as dig saw them.
#[test]
fn dns_dnsmasq_and_dig_one_event_per_query() {
    let link = Link::dual_stack();
    link.no_offloads();
    let dir = TempDir::new("flowdt-l7dns");
    let live = dir.path().join("live.jsonl");
    let mut flowd = flowd_l7(&link, &live);
    let cap = Capture::start(&link.b, &link.if_b, dir.path(), "dns");
    let _dnsmasq = dnsmasq(&link, dir.path());
    let (want, dig_ms) = dns_queries(&link, &link.if_b);
    let events = events_settled(&live, DNS_QUERIES);
    assert_events(&events, &want);
    // Latency: from the query to the response on the server's interface,
    // within the run of the dig that sent it. (Not within dig's own "Query
    // time": dig stamps a query once its send callback runs, and on a busy
    // host that was 2 ms after the query had crossed the interface: dig
    // said 0 ms where flowd and the capture both said 2.1 ms.)
    for e in &events {
        let ms = e["dns_latency_ms"].as_f64().expect("dns_latency_ms");
        let dig = dig_ms[&(e["sport"].as_u64().unwrap() as u16)];
        assert!(
            ms > 0.0 && ms <= dig,
            "{e}: latency {ms} ms, the dig run {dig} ms"
        );
    }
    let text = wait::scrape(&link.b, &flowd);
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    assert_eq!(read_events(&live), events);

    let capture = cap.stop();
    let replayed = replay_events(&capture, &dir.path().join("replay.jsonl"));
    assert_replay_equals_live(&events, &replayed, &link.if_b, &capture);
    // Responses by rcode, as dig saw them, live and replayed.
    let rcodes = events_by(&want, "dns_rcode", |r| rcode_label(r as u8));
    assert_eq!(rcodes.values().sum::<u64>(), DNS_QUERIES as u64);
    let replayed = replay_metrics(&capture, dir.path());
    assert_family(
        &text,
        &replayed,
        "flowd_dns_responses_total",
        "rcode",
        &rcodes,
        Some("flowd_dns_latency_seconds"),
    );
}

// ---------------------------------------------------------------- TLS

/// openssl s_server (TLS 1.2 and 1.3, one cipher each) on 443 over IPv4
/// and 8443 over IPv6, s_client with and without `-servername` and
/// `-alpn`, `-tls1_2`, `-tls1_3` or both: one event per handshake with the
/// SNI, ALPN and versions offered, the negotiated version and cipher, and
/// the JA4 tshark's dissection of the same ClientHello gives.
#[test]
fn tls_openssl_server_and_client_one_event_per_handshake() {
    let link = Link::dual_stack();
    link.no_offloads();
    let dir = TempDir::new("flowdt-l7tls");
    let live = dir.path().join("live.jsonl");
    let mut flowd = flowd_l7(&link, &live);
    let cap = Capture::start(&link.b, &link.if_b, dir.path(), "tls");
    let servers = tls_servers(&link, dir.path());
    let expected = tls_handshakes(&link, &link.if_b);
    let events = events_settled(&live, TLS_HANDSHAKES);
    assert_ja4_shaped(&events);
    let text = wait::scrape(&link.b, &flowd);
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    assert_eq!(read_events(&live), events);
    drop(servers);
    let capture = cap.stop();

    let want = tls_want(expected, &capture);
    assert_events(&events, &want);
    let replayed = replay_events(&capture, &dir.path().join("replay.jsonl"));
    assert_replay_equals_live(&events, &replayed, &link.if_b, &capture);
    // Handshakes by the version s_client negotiated, live and replayed.
    let versions = events_by(&want, "tls_version", |v| {
        tls_version_label(Some(v as u16)).to_owned()
    });
    assert_eq!(versions.values().sum::<u64>(), TLS_HANDSHAKES as u64);
    let replayed = replay_metrics(&capture, dir.path());
    assert_family(
        &text,
        &replayed,
        "flowd_tls_handshakes_total",
        "version",
        &versions,
        None,
    );
}
