//! The L7 counts on hand-made events: exact counters, histogram buckets
//! and label values, their exposition, and their bounds.

use std::collections::HashMap;

use flowd_common::{DIR_INGRESS, ipv4_mapped, proto::ip};

use super::*;
use crate::export::{
    aggregate::AggConfig,
    l7signals::{
        L7Signals,
        tests::{T0, dns, event, http, key, tls},
    },
    metrics::{Format, Snapshot, encode},
};

fn metrics() -> L7Metrics {
    let a = AggConfig::default();
    L7Metrics::new(
        PeerGroups::new(&a.peer_groups, &a.peer_unmatched),
        L7Signals::default(),
    )
}

fn names() -> HashMap<u32, String> {
    HashMap::from([(2, "veth0".to_owned())])
}

/// A DNS query that came in from 10.0.0.5 (this host serves), answered
/// after `latency_ns`.
fn served_dns(latency_ns: u64) -> L7Event {
    let mut k = key(ip::UDP, [10, 0, 0, 5], [198, 18, 0, 2], 53);
    k.direction = DIR_INGRESS;
    event(
        k,
        Some(latency_ns),
        Detail::Dns(crate::l7::DnsInfo {
            id: 9,
            qname: Some("served.example".into()),
            rcode: Some(0),
            ..Default::default()
        }),
    )
}

/// Events with every rcode, status class and version worth a label.
fn mixed() -> Vec<L7Event> {
    let mut v: Vec<L7Event> = [
        Some(0),
        Some(0),
        Some(3),
        Some(2),
        Some(5),
        Some(9),
        Some(12),
    ]
    .into_iter()
    .map(|rc| dns(1, "a.example", rc))
    .collect();
    v.push(dns(1, "unanswered.example", None));
    v.push(served_dns(200_000));
    for st in [
        Some(200),
        Some(204),
        Some(301),
        Some(404),
        Some(503),
        Some(99),
        Some(600),
        None,
    ] {
        v.push(http(1, 80, "www.example", st));
    }
    for ver in [
        Some(0x0304),
        Some(0x0303),
        None,
        Some(0x7f1c),
        Some(0x0301),
        Some(0x0300),
        Some(0x0302),
    ] {
        v.push(tls(1, 443, Some("www.example"), ver));
    }
    // An interface without a name (gone before the drain).
    let mut gone = dns(1, "b.example", Some(0));
    gone.key.ifindex = 9;
    v.push(gone);
    v
}

#[test]
fn counts_by_rcode_class_version_and_kind() {
    let mut m = metrics();
    m.observe(&mixed(), &names(), T0);
    let s = m.snapshot(&L7Stats::default(), 3, 1);
    let v = |dev: &str, l: &str| (dev.to_owned(), l.to_owned());
    assert_eq!(
        s.dns_responses,
        BTreeMap::from([
            (v("if9", "noerror"), 1),
            (v("veth0", "12"), 1),
            (v("veth0", "noerror"), 3),
            (v("veth0", "notauth"), 1),
            (v("veth0", "nxdomain"), 1),
            (v("veth0", "refused"), 1),
            (v("veth0", "servfail"), 1),
        ])
    );
    let dv = |l: &'static str| ("veth0".to_owned(), l);
    assert_eq!(
        s.http_responses,
        BTreeMap::from([
            (dv("2xx"), 2),
            (dv("3xx"), 1),
            (dv("4xx"), 1),
            (dv("5xx"), 1),
            (dv("other"), 2),
        ])
    );
    assert_eq!(
        s.tls_handshakes,
        BTreeMap::from([
            (dv("1.0"), 1),
            (dv("1.1"), 1),
            (dv("1.2"), 1),
            (dv("1.3"), 1),
            (dv("none"), 1),
            (dv("other"), 1),
            (dv("ssl3"), 1),
        ])
    );
    assert_eq!(
        s.events,
        BTreeMap::from([
            (("if9".to_owned(), "dns"), 1),
            (dv("dns"), 9),
            (dv("http"), 8),
            (dv("tls"), 7),
        ])
    );
    // DNS latency: the seven answered queries that went out to 198.18.0.53
    // (benchmark), 1 ms each; the one served to 10.0.0.5 (private), 200 µs.
    assert_eq!(
        s.dns_latency.keys().cloned().collect::<Vec<_>>(),
        [
            v("if9", "benchmark"),
            v("veth0", "benchmark"),
            v("veth0", "private")
        ]
    );
    let out = &s.dns_latency[&v("veth0", "benchmark")];
    assert_eq!(out.count, 7);
    assert!((out.sum - 0.007).abs() < 1e-12, "{}", out.sum);
    let cum = |h: &HistogramSnapshot, le: f64| h.buckets.iter().find(|(b, _)| *b == le).unwrap().1;
    assert_eq!(cum(out, 0.0005), 0);
    assert_eq!(cum(out, 0.001), 7, "1 ms is in le=0.001");
    let served = &s.dns_latency[&v("veth0", "private")];
    assert_eq!(
        (served.count, cum(served, 0.0001), cum(served, 0.00025)),
        (1, 0, 1)
    );
    // HTTP latency: the seven answered requests, 2 ms each.
    let h = &s.http_latency[&v("veth0", "benchmark")];
    assert_eq!((h.count, cum(h, 0.001), cum(h, 0.0025)), (7, 0, 7));
    assert_eq!(s.http_latency.len(), 1);
    assert_eq!((s.pending, s.reassembling), (3, 1));
}

#[test]
fn label_names() {
    assert_eq!(rcode_label(0), "noerror");
    assert_eq!(rcode_label(3), "nxdomain");
    assert_eq!(rcode_label(15), "15");
    assert_eq!(status_class(100), "1xx");
    assert_eq!(status_class(599), "5xx");
    assert_eq!(status_class(0), "other");
    assert_eq!(tls_version_label(Some(0x0304)), "1.3");
    assert_eq!(tls_version_label(Some(0xfefd)), "other");
}

fn lines_of<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(family) && !l.starts_with('#'))
        .collect()
}

#[test]
fn exposition_of_the_l7_families() {
    let mut m = metrics();
    m.observe(&mixed(), &names(), T0);
    let engine = L7Stats {
        packets: 40,
        unrecognised: 2,
        dns_parse_errors: 4,
        http_truncated: 1,
        reasm_gap: 5,
        reasm_evicted: 6,
        dns_unmatched_responses: 7,
        unanswered: 8,
        pending_evicted: 9,
        ..L7Stats::default()
    };
    let snap = Snapshot {
        l7_metrics: Some(m.snapshot(&engine, 3, 1)),
        ..Snapshot::default()
    };
    let text = encode(snap, Format::Text004);
    for line in [
        "flowd_l7_events_total{device=\"veth0\",kind=\"dns\"} 9",
        "flowd_dns_responses_total{device=\"veth0\",rcode=\"nxdomain\"} 1",
        "flowd_dns_latency_seconds_bucket{le=\"0.001\",device=\"veth0\",peer=\"benchmark\"} 7",
        "flowd_dns_latency_seconds_count{device=\"veth0\",peer=\"private\"} 1",
        "flowd_http_responses_total{device=\"veth0\",class=\"other\"} 2",
        "flowd_http_latency_seconds_bucket{le=\"+Inf\",device=\"veth0\",peer=\"benchmark\"} 7",
        "flowd_tls_handshakes_total{device=\"veth0\",version=\"1.3\"} 1",
        "flowd_l7_signals_total{signal=\"dns_nxdomain\"} 1",
        "flowd_l7_signals_total{signal=\"http_on_443\"} 0",
        "flowd_l7_suspects{signal=\"dns_nxdomain\"} 0",
        "flowd_l7_suspects_flagged_total{signal=\"tls_unusual_port\"} 0",
        "flowd_l7_signal_state_dropped_total{table=\"clients\"} 0",
        "flowd_l7_packets_total 40",
        "flowd_l7_unrecognised_packets_total 2",
        "flowd_l7_parse_errors_total{kind=\"dns\"} 4",
        "flowd_l7_truncated_total{kind=\"http\"} 1",
        "flowd_l7_reassembly_dropped_total{reason=\"gap\"} 5",
        "flowd_l7_reassembly_dropped_total{reason=\"evicted\"} 6",
        "flowd_l7_unmatched_responses_total{kind=\"dns\"} 7",
        "flowd_l7_unanswered_requests_total{reason=\"timeout\"} 8",
        "flowd_l7_unanswered_requests_total{reason=\"evicted\"} 9",
        "flowd_l7_pending_requests 3",
        "flowd_l7_reassembly_buffers 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert_eq!(lines_of(&text, "flowd_dns_responses_total").len(), 7);
    assert_eq!(lines_of(&text, "flowd_l7_signals_total").len(), 5);
    // With the L7 selection off, none of them.
    let off = encode(Snapshot::default(), Format::Text004);
    for family in [
        "flowd_l7_events",
        "flowd_dns_",
        "flowd_tls_",
        "flowd_l7_packets",
    ] {
        assert!(!off.contains(family), "{family} without L7");
    }
}

/// 12,000 clients querying 12,000 names, with every rcode: the families
/// keep one series per rcode, the signal detector its client bound.
#[test]
fn names_and_clients_do_not_make_series() {
    let mut m = metrics();
    let events: Vec<L7Event> = (0..12_000u32)
        .map(|i| {
            let mut e = dns(1, &format!("n{i}.example"), Some((i % 16) as u8));
            e.key.src = ipv4_mapped([10, 1, (i >> 8) as u8, i as u8]);
            e
        })
        .collect();
    m.observe(&events, &names(), T0);
    let s = m.snapshot(&L7Stats::default(), 0, 0);
    assert_eq!(s.dns_responses.len(), 16);
    assert!(s.dns_responses.values().all(|n| *n == 750));
    assert_eq!(s.dns_latency.len(), 1);
    // 750 NXDOMAIN from 750 clients: each under the threshold.
    assert_eq!(s.signals.events[0], 750);
    assert_eq!(s.signals.suspects, [0; 5]);
    let text = encode(
        Snapshot {
            l7_metrics: Some(s),
            ..Snapshot::default()
        },
        Format::Text004,
    );
    assert_eq!(lines_of(&text, "flowd_dns_responses_total").len(), 16);
    assert_eq!(lines_of(&text, "flowd_dns_latency_seconds").len(), 19);
}

/// 12,000 clients with one NXDOMAIN each against the bound of 10,000: the
/// first eviction comes with client 10,001 and drops 1,001 (down to nine
/// tenths with it), the second with client 11,002 (1,001 again).
#[test]
fn signal_clients_are_bounded() {
    let mut m = metrics();
    let events: Vec<L7Event> = (0..12_000u32)
        .map(|i| {
            let mut e = dns(1, "x.example", Some(3));
            e.key.src = ipv4_mapped([10, 2, (i >> 8) as u8, i as u8]);
            e
        })
        .collect();
    m.observe(&events, &names(), T0);
    let s = m.snapshot(&L7Stats::default(), 0, 0);
    assert_eq!(s.signals.events[0], 12_000);
    assert_eq!(s.signals.dropped, [2_002, 0, 0]);
}
