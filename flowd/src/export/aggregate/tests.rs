use flowd_common::{DIR_EGRESS, FlowCounts, ipv4_mapped};

#[test]
fn window_positions_stay_indexed_after_removals() {
    let key = |p: u16| WinKey {
        side: 0,
        proto: 17,
        src: [1; 16],
        dst: [2; 16],
        sport: p,
        dport: 53,
    };
    let one = |n: u64| {
        let mut s = [Counts::default(); WINDOW_SLOTS];
        s[0] = Counts {
            packets: n,
            bytes: 10 * n,
        };
        s
    };
    let mut w = Window::default();
    for p in 0..1000u16 {
        w.insert(key(p), one(u64::from(p)));
    }
    // Port 0 has zero counts; drop every third port too.
    w.retain(|s| s[0].packets % 3 != 0);
    assert_eq!(w.len(), 666);
    for p in 0..1000u16 {
        match w.get_mut(&key(p)) {
            Some(s) => assert_eq!(s[0].packets, u64::from(p)),
            None => assert_eq!(p % 3, 0),
        }
    }
    w.insert(key(3000), one(7));
    assert_eq!(w.get_mut(&key(3000)).map(|s| s[0].bytes), Some(70));
}

use super::*;
use crate::export::groups::ServiceConfig;

const SEC: u64 = 1_000_000_000;

fn key(dir: u8, proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> FlowKey {
    FlowKey {
        ifindex: 7,
        direction: dir,
        proto,
        src: ipv4_mapped(src),
        dst: ipv4_mapped(dst),
        sport,
        dport,
        ..Default::default()
    }
}

fn stats(packets: u64, bytes: u64) -> FlowStats {
    FlowStats {
        counts: FlowCounts {
            packets,
            bytes,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn group(s: &AggSnapshot, side: usize, dim: Dim, name: &str) -> Option<Counts> {
    let names = &s.names[dim as usize];
    if name == OTHER {
        return Some(s.sides[side].others[dim as usize]);
    }
    let gi = names.iter().position(|n| n == name)?;
    s.groups
        .iter()
        .find(|(id, _)| {
            usize::from(id.side) == side && id.dim == dim && usize::from(id.group) == gi
        })
        .map(|(_, c)| *c)
}

#[test]
fn groups_by_proto_service_and_peer_per_side() {
    let mut a = Aggregator::default();
    // In: HTTPS from a public client; out: DNS to a private resolver.
    a.absorb(
        &key(DIR_INGRESS, 6, [8, 8, 8, 8], [10, 0, 0, 1], 51000, 443),
        &stats(10, 1000),
        "eth0",
    );
    a.absorb(
        &key(DIR_EGRESS, 17, [10, 0, 0, 1], [192, 168, 0, 53], 40000, 53),
        &stats(2, 200),
        "eth0",
    );
    a.absorb(
        &key(DIR_INGRESS, 1, [198, 18, 0, 1], [10, 0, 0, 1], 0, 2048),
        &stats(1, 98),
        "eth0",
    );
    a.absorb(
        &key(DIR_INGRESS, 6, [1; 4], [2; 4], 1, 2),
        &stats(0, 0),
        "eth1",
    );
    let s = a.snapshot();
    assert_eq!(s.sides.len(), 2, "an empty delta makes no side");
    let (rx, tx) = (0, 1);
    assert_eq!(s.sides[rx].device, "eth0");
    assert_eq!(s.sides[tx].direction, DIR_EGRESS);
    let c = |p, b| {
        Some(Counts {
            packets: p,
            bytes: b,
        })
    };
    assert_eq!(group(&s, rx, Dim::Proto, "tcp"), c(10, 1000));
    assert_eq!(group(&s, rx, Dim::Proto, "icmp"), c(1, 98));
    assert_eq!(group(&s, rx, Dim::Service, "https"), c(10, 1000));
    assert_eq!(group(&s, rx, Dim::Service, OTHER), c(1, 98));
    assert_eq!(group(&s, rx, Dim::Peer, "public"), c(10, 1000));
    assert_eq!(group(&s, rx, Dim::Peer, "benchmark"), c(1, 98));
    assert_eq!(group(&s, tx, Dim::Proto, "udp"), c(2, 200));
    assert_eq!(group(&s, tx, Dim::Service, "dns"), c(2, 200));
    // Egress: the remote is the destination.
    assert_eq!(group(&s, tx, Dim::Peer, "private"), c(2, 200));
    assert_eq!(group(&s, tx, Dim::Peer, "public"), None);
    assert_eq!(
        s.sides[rx].window,
        Counts {
            packets: 11,
            bytes: 1098
        }
    );
}

#[test]
fn top_flows_rank_by_window_bytes_and_merge_vlans() {
    let mut a = Aggregator::new(AggConfig {
        top_flows: 2,
        ..Default::default()
    });
    a.tick(1000 * SEC);
    let k1 = key(DIR_INGRESS, 17, [1, 1, 1, 1], [2, 2, 2, 2], 1000, 2000);
    let mut k1_vlan = k1;
    k1_vlan.vlan = 5;
    let k2 = key(DIR_INGRESS, 17, [1, 1, 1, 1], [2, 2, 2, 2], 1001, 2000);
    let k3 = key(DIR_INGRESS, 17, [1, 1, 1, 1], [2, 2, 2, 2], 1002, 2000);
    a.absorb(&k1, &stats(1, 100), "d");
    a.absorb(&k1_vlan, &stats(1, 100), "d");
    a.absorb(&k2, &stats(5, 500), "d");
    a.absorb(&k3, &stats(1, 50), "d");
    let s = a.snapshot();
    assert_eq!(s.window_flows, 3);
    let top: Vec<(u16, Counts)> = s.top.iter().map(|(k, c)| (k.sport, *c)).collect();
    assert_eq!(
        top,
        [
            (
                1001,
                Counts {
                    packets: 5,
                    bytes: 500
                }
            ),
            (
                1000,
                Counts {
                    packets: 2,
                    bytes: 200
                }
            )
        ]
    );
    assert_eq!(
        s.sides[0].window,
        Counts {
            packets: 8,
            bytes: 750
        }
    );
}

#[test]
fn window_forgets_one_slot_at_a_time() {
    let mut a = Aggregator::new(AggConfig {
        window: Duration::from_secs(60),
        ..Default::default()
    });
    let k = key(DIR_INGRESS, 6, [1; 4], [2; 4], 1, 2);
    let t0 = 6000 * SEC; // a slot boundary
    a.tick(t0);
    a.absorb(&k, &stats(1, 10), "d");
    a.tick(t0 + 15 * SEC);
    a.absorb(&k, &stats(2, 20), "d");
    a.tick(t0 + 25 * SEC);
    assert_eq!(
        a.snapshot().top[0].1,
        Counts {
            packets: 3,
            bytes: 30
        }
    );
    // The first delta's slot is reused 60 s after it started.
    a.tick(t0 + 59 * SEC);
    assert_eq!(a.snapshot().top[0].1.packets, 3);
    a.tick(t0 + 60 * SEC);
    assert_eq!(
        a.snapshot().top[0].1,
        Counts {
            packets: 2,
            bytes: 20
        }
    );
    assert_eq!(a.snapshot().sides[0].window.packets, 2);
    a.tick(t0 + 70 * SEC);
    let s = a.snapshot();
    assert!(s.top.is_empty());
    assert_eq!(s.window_flows, 0);
    assert_eq!(s.sides[0].window, Counts::default());
    // Cumulative group counters do not forget.
    assert_eq!(group(&s, 0, Dim::Proto, "tcp").unwrap().packets, 3);
    // A jump longer than the window clears it; a step back is harmless.
    a.absorb(&k, &stats(1, 1), "d");
    a.tick(t0 + 10_000 * SEC);
    assert_eq!(a.snapshot().window_flows, 0);
    a.absorb(&k, &stats(1, 1), "d");
    a.tick(t0);
    assert_eq!(a.snapshot().window_flows, 1);
}

#[test]
fn window_is_capped_and_the_rest_is_counted() {
    let mut a = Aggregator::new(AggConfig {
        top_flows: 5,
        window_max_flows: 10,
        ..Default::default()
    });
    for port in 0..100u16 {
        a.absorb(
            &key(DIR_INGRESS, 17, [1; 4], [2; 4], port, 9),
            &stats(1, 60),
            "d",
        );
    }
    let s = a.snapshot();
    assert_eq!(s.window_flows, 10);
    assert_eq!(s.window_overflow_deltas, 90);
    assert_eq!(s.top.len(), 5);
    assert_eq!(
        s.sides[0].window,
        Counts {
            packets: 100,
            bytes: 6000
        }
    );
}

#[test]
fn folds_are_permanent_and_other_keeps_growing() {
    let mut a = Aggregator::default();
    let https = key(DIR_INGRESS, 6, [8; 4], [10, 0, 0, 1], 50000, 443);
    a.absorb(&https, &stats(3, 300), "d");
    let s = a.snapshot();
    let gi = s.names[Dim::Service as usize]
        .iter()
        .position(|n| n == "https")
        .unwrap();
    let id = GroupId {
        side: 0,
        dim: Dim::Service,
        group: gi as u16,
    };
    s.folds.request(&[id]);
    assert_eq!(s.folds.pending(), [id]);
    a.tick(SEC);
    a.absorb(&https, &stats(1, 100), "d");
    let s = a.snapshot();
    assert!(s.folds.pending().is_empty());
    assert_eq!(s.groups_folded, 1);
    assert_eq!(group(&s, 0, Dim::Service, "https"), None);
    assert_eq!(
        group(&s, 0, Dim::Service, OTHER),
        Some(Counts {
            packets: 4,
            bytes: 400
        })
    );
    // Folding twice changes nothing; other dimensions are untouched.
    s.folds.request(&[id]);
    a.tick(2 * SEC);
    assert_eq!(a.snapshot().groups_folded, 1);
    assert_eq!(
        group(&a.snapshot(), 0, Dim::Proto, "tcp"),
        Some(Counts {
            packets: 4,
            bytes: 400
        })
    );
}

#[test]
fn devices_are_bounded() {
    let mut a = Aggregator::default();
    for d in 0..(MAX_DEVICES + 50) {
        a.absorb(
            &key(DIR_INGRESS, 6, [1; 4], [2; 4], 1, 2),
            &stats(1, 1),
            &format!("d{d}"),
        );
    }
    let s = a.snapshot();
    assert_eq!(s.sides.len(), MAX_DEVICES + 1);
    assert_eq!(s.sides.last().unwrap().device, OTHER);
    assert_eq!(s.sides.last().unwrap().window.packets, 50);
}

#[test]
fn default_snapshot_is_a_fresh_aggregators() {
    let (d, f) = (AggSnapshot::default(), Aggregator::default().snapshot());
    assert_eq!(
        (
            d.series_budget,
            d.top_k,
            d.window_seconds,
            d.window_max_flows
        ),
        (
            f.series_budget,
            f.top_k,
            f.window_seconds,
            f.window_max_flows
        )
    );
    assert!(f.sides.is_empty() && f.groups.is_empty() && f.top.is_empty());
}

#[test]
fn config_validation_names_the_key() {
    assert_eq!(AggConfig::default().validate(), Ok(()));
    let e = AggConfig {
        series_budget: 5,
        ..Default::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(e.key, "series_budget");
    assert!(e.to_string().contains("value 5"), "{e}");
    let mut c = AggConfig::default();
    c.services.push(ServiceConfig::new("bad name", &[1]));
    assert_eq!(c.validate().unwrap_err().key, "services");
    let c = AggConfig {
        top_flows: 1000,
        window_max_flows: 10,
        ..Default::default()
    };
    assert_eq!(c.validate().unwrap_err().key, "window_max_flows");
}
