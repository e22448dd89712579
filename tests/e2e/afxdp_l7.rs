//! The application layer through AF_XDP (issue 13, "The application layer
//! through this path"): real servers and clients as in `l7.rs`, on a link
//! whose frames (both directions) are mirrored with `tc mirred` onto a
//! second veth pair, the SPAN port; flowd captures the mirror's far end
//! through AF_XDP with `--l7-log`. The workers' frames go through the
//! replay driver, whose selection feeds the same engine as the in-kernel
//! path: each request gives exactly one event with the same fields as in
//! `l7.rs` (the device is the mirror port, where every frame is received).

use std::{net::SocketAddr, path::Path};

use crate::l7_scenarios::{
    DNS_QUERIES, TLS_HANDSHAKES, assert_events, assert_ja4_shaped, client, dns_queries, dnsmasq,
    http_link, http_requests, http_server, parse_dig, spawn_dnsmasq, tls_handshakes, tls_servers,
    tls_want,
};
use flowd_tests::{
    Flowd, Link, TempDir,
    l7::{Capture, events_settled, read_events},
    metric, wait,
};

/// A mirror port in `link.b`'s namespace: every frame `link.if_b`
/// receives or sends is copied (tc `mirred egress mirror`) to one end of a
/// new veth pair; the other end, returned, receives them all. (`u32 match
/// u32 0 0`, not `matchall`: this kernel has no `cls_matchall`.)
fn mirror(link: &Link) -> String {
    let tag = flowd_tests::unique_tag();
    let (m_a, m_b) = (format!("ma{tag}"), format!("mb{tag}"));
    let b = &link.b;
    b.exec(&[
        "ip", "link", "add", &m_a, "type", "veth", "peer", "name", &m_b,
    ]);
    for ifc in [&m_a, &m_b] {
        let key = format!("net.ipv6.conf.{ifc}.disable_ipv6=1");
        b.exec(&["sysctl", "-qw", &key]);
        b.exec(&["ip", "link", "set", ifc, "up"]);
    }
    b.exec(&["tc", "qdisc", "add", "dev", &link.if_b, "clsact"]);
    for hook in ["ingress", "egress"] {
        b.exec(&[
            "tc", "filter", "add", "dev", &link.if_b, hook, "protocol", "all", "u32", "match",
            "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", &m_a,
        ]);
    }
    m_b
}

/// flowd capturing `port` through AF_XDP, the event log at `log`.
fn flowd_afxdp_l7(link: &Link, port: &str, log: &Path) -> Flowd {
    Flowd::start(
        &link.b,
        &[
            "--af-xdp",
            port,
            "--drain-interval-ms",
            "100",
            "--l7-log",
            log.to_str().expect("UTF-8 path"),
        ],
    )
}

/// The nine requests of `l7.rs`'s HTTP test (three on one connection, a
/// 1200-byte URL, a 3000-byte cookie) on the same 500-byte MTU link, seen
/// on the mirror port: one event each, with the same fields.
#[test]
fn afxdp_mirror_http_server_and_curl_one_event_per_request() {
    let link = http_link();
    let port = mirror(&link);
    let dir = TempDir::new("flowdt-afxdp-http");
    let live = dir.path().join("live.jsonl");
    let mut flowd = flowd_afxdp_l7(&link, &port, &live);
    let _server = http_server(&link, dir.path());
    let run = http_requests(&link, &port);
    let (want, n) = (run.want, run.n);
    let events = events_settled(&live, n);
    assert_events(&events, &want);
    for e in &events {
        let ms = e["http_latency_ms"].as_f64().expect("http_latency_ms");
        assert!(ms > 0.0, "{e}");
    }
    let text = wait::scrape(&link.b, &flowd);
    let skipped = |reason| {
        metric(
            &text,
            "flowd_l7_skipped_total",
            &[
                ("device", &port),
                ("direction", "receive"),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(skipped("continuation_limit"), Some(1.0), "{text}");
    assert_eq!(skipped("ring_full"), Some(0.0));
    assert_eq!(skipped("budget"), Some(0.0));
    // Every frame went through the socket and the parser (nothing lost).
    let q0 = [("device", port.as_str()), ("queue", "0")];
    let frames = metric(&text, "flowd_af_xdp_frames_total", &q0).expect("frames");
    assert!(frames > 0.0);
    assert_eq!(
        metric(&text, "flowd_af_xdp_parsed_frames_total", &q0),
        Some(frames)
    );
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    assert_eq!(read_events(&live), events);
}

/// `l7.rs`'s DNS test on the mirror port: dnsmasq queried by dig over UDP
/// and TCP, IPv4 and IPv6 (two queries on one TCP connection); ten
/// queries, ten events with dig's names, types, IDs, rcodes and answers.
#[test]
fn afxdp_mirror_dns_dnsmasq_and_dig_one_event_per_query() {
    let link = Link::dual_stack();
    link.no_offloads();
    let port = mirror(&link);
    let dir = TempDir::new("flowdt-afxdp-dns");
    let live = dir.path().join("live.jsonl");
    let mut flowd = flowd_afxdp_l7(&link, &port, &live);
    let _dnsmasq = dnsmasq(&link, dir.path());
    let (want, _) = dns_queries(&link, &port);
    let events = events_settled(&live, DNS_QUERIES);
    assert_events(&events, &want);
    for e in &events {
        let ms = e["dns_latency_ms"].as_f64().expect("dns_latency_ms");
        assert!(ms > 0.0, "{e}");
    }
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    assert_eq!(read_events(&live), events);
}

/// `l7.rs`'s TLS test on the mirror port: openssl s_server and s_client,
/// TLS 1.2 and 1.3, IPv4 and IPv6, with and without SNI and ALPN; five
/// handshakes, five events with the SNI, ALPN, versions, cipher and the
/// JA4 tshark computes from a capture of the same ClientHellos.
#[test]
fn afxdp_mirror_tls_openssl_server_and_client_one_event_per_handshake() {
    let link = Link::dual_stack();
    link.no_offloads();
    let span = mirror(&link);
    let dir = TempDir::new("flowdt-afxdp-tls");
    let live = dir.path().join("live.jsonl");
    let mut flowd = flowd_afxdp_l7(&link, &span, &live);
    let cap = Capture::start(&link.b, &link.if_b, dir.path(), "tls");
    let servers = tls_servers(&link, dir.path());
    let expected = tls_handshakes(&link, &span);
    let events = events_settled(&live, TLS_HANDSHAKES);
    assert_ja4_shaped(&events);
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    assert_eq!(read_events(&live), events);
    drop(servers);
    let capture = cap.stop();

    let want = tls_want(expected, &capture);
    assert_events(&events, &want);
}

/// The copy budget (`[l7] budget_per_s`, per CPU in the packet path) does
/// not limit AF_XDP frames: the replay driver runs in the worker, on
/// frames user space already holds. With a budget of 2 samples a second,
/// 20 DNS queries in one dig run (40 samples in well under a second):
/// on the source interface, captured in-kernel by the same daemon, the
/// budget skips samples; on the AF_XDP mirror of the same traffic every
/// query gives its event and nothing is skipped.
#[test]
fn afxdp_samples_are_not_limited_by_the_in_kernel_copy_budget() {
    let link = Link::new();
    link.no_offloads();
    let span = mirror(&link);
    let dir = TempDir::new("flowdt-afxdp-budget");
    let live = dir.path().join("live.jsonl");
    let conf = dir.path().join("flowd.toml");
    std::fs::write(&conf, "[l7]\nbudget_per_s = 2\n").unwrap();
    let mut flowd = Flowd::start(
        &link.b,
        &[
            "--config",
            conf.to_str().unwrap(),
            "--af-xdp",
            &span,
            "--iface",
            &link.if_b,
            "--drain-interval-ms",
            "100",
            "--l7-log",
            live.to_str().unwrap(),
        ],
    );
    let _dnsmasq = spawn_dnsmasq(
        &link.b,
        &link.ip_b,
        &["--host-record=www.l7.test,198.18.200.1"],
        &dir.path().join("dnsmasq.log"),
    );
    let server: SocketAddr = format!("{}:53", link.ip_b).parse().unwrap();
    wait::bound(&link.b, "udp", server);
    let at = format!("@{}", link.ip_b);
    let bind = format!("{}#40301", link.ip_a);
    let mut args = vec!["dig", &at, "-b", &bind, "+tries=1", "+time=5"];
    for _ in 0..20 {
        args.extend(["www.l7.test", "A"]);
    }
    let out = client(&link.a, &args);
    let replies = parse_dig(&out);
    assert_eq!(replies.len(), 20, "{out}");
    assert!(replies.iter().all(|r| r.rcode == 0), "{out}");

    // Every query through AF_XDP, in order, with dig's IDs.
    wait::until(
        "20 events from the mirror port",
        wait::DEADLINE,
        || read_events(&live),
        |ev| ev.iter().filter(|e| e["device"] == span.as_str()).count() >= 20,
    );
    let text = wait::scrape(&link.b, &flowd);
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    let events = read_events(&live);
    let ids: Vec<u64> = events
        .iter()
        .filter(|e| e["device"] == span.as_str())
        .map(|e| {
            assert_eq!(
                (
                    e["kind"].as_str(),
                    e["dns_qname"].as_str(),
                    e["dns_rcode"].as_u64()
                ),
                (Some("dns"), Some("www.l7.test"), Some(0)),
                "{e}"
            );
            e["dns_id"].as_u64().unwrap()
        })
        .collect();
    let dig_ids: Vec<u64> = replies.iter().map(|r| r.id).collect();
    assert_eq!(ids, dig_ids);
    let skipped = |dev: &str, dir| {
        metric(
            &text,
            "flowd_l7_skipped_total",
            &[("device", dev), ("direction", dir), ("reason", "budget")],
        )
        .unwrap_or_else(|| panic!("no budget series for {dev} {dir}: {text}"))
    };
    assert_eq!(skipped(&span, "receive"), 0.0, "{text}");
    // The in-kernel capture of the same packets: the budget bit.
    let kernel = skipped(&link.if_b, "receive") + skipped(&link.if_b, "transmit");
    assert!(kernel > 0.0, "in-kernel budget skips: {kernel}\n{text}");
    let in_kernel = events
        .iter()
        .filter(|e| e["device"] == link.if_b.as_str())
        .count();
    assert!(
        in_kernel < 20,
        "{in_kernel} in-kernel events at a budget of 2/s"
    );
}
