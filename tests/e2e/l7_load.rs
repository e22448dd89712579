//! The L7 ring under load: more selected packets within one drain
//! interval than the ring holds (about 7,000 samples) are all parsed, none
//! skipped as `ring_full`, because the daemon reads the ring at every fill
//! check (20 ms), not only at the drain. The queries are paced over about
//! 2 s (5,000/s): a reader at the drain alone (every 10 s here) loses
//! about 3,000 of them, while a daemon slowed by a loaded test host still
//! reads the ring many times in 2 s.

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use flowd_tests::{Flowd, Link, TempDir, l7::read_events, metric, wait};

/// Queries in the burst: more than the ring's ~7,000 samples, fewer than
/// the per-CPU copy budget (20,000 a second).
const QUERIES: u16 = 10_000;

fn query(id: u16) -> Vec<u8> {
    let mut m = Vec::new();
    for v in [id, 0x0100, 1, 0, 0, 0] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    for label in [format!("q{id}").as_str(), "burst", "l7", "test"] {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

#[test]
fn a_burst_larger_than_the_ring_within_one_drain_is_not_skipped() {
    let link = Link::new();
    let dir = TempDir::new("flowdt-l7load");
    let log = dir.path().join("l7.jsonl");
    // One drain in 10 s: without reads between drains the burst would
    // overrun the ring.
    let mut flowd = Flowd::start(
        &link.b,
        &[
            "--iface",
            &link.if_b,
            "--drain-interval-ms",
            "10000",
            "--l7-log",
            log.to_str().unwrap(),
        ],
    );
    let dst: SocketAddr = format!("{}:53", link.ip_b).parse().unwrap();
    // A bound socket that is never read: the queries only need to arrive.
    let _sink = link.b.run(move || UdpSocket::bind(dst).expect("bind :53"));
    let src: SocketAddr = format!("{}:40053", link.ip_a).parse().unwrap();
    let tx = link.a.run(move || UdpSocket::bind(src).expect("bind"));
    let start = Instant::now();
    for id in 0..QUERIES {
        tx.send_to(&query(id), dst).expect("send");
        if id % 500 == 499 {
            // 500 queries per 100 ms.
            let due = start + Duration::from_millis(u64::from(id / 500 + 1) * 100);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
    let text = wait::metric_reaches(
        &link.b,
        &flowd,
        "flowd_l7_packets_total",
        &[],
        f64::from(QUERIES),
    );
    assert_eq!(
        metric(&text, "flowd_l7_packets_total", &[]),
        Some(f64::from(QUERIES))
    );
    for reason in ["ring_full", "budget", "continuation_limit"] {
        assert_eq!(
            metric(
                &text,
                "flowd_l7_skipped_total",
                &[
                    ("device", &link.if_b),
                    ("direction", "receive"),
                    ("reason", reason)
                ]
            ),
            Some(0.0),
            "{reason}"
        );
    }
    // Unanswered, the queries become events at the stop's flush.
    assert_eq!(flowd.stop(), Some(0));
    let events = read_events(&log);
    assert_eq!(events.len(), usize::from(QUERIES));
    let mut ids: Vec<u64> = events
        .iter()
        .map(|e| {
            assert_eq!(e["kind"], "dns");
            assert_eq!(e["dns_qname"], format!("q{}.burst.l7.test", e["dns_id"]));
            e["dns_id"].as_u64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..u64::from(QUERIES)).collect::<Vec<_>>());
}
