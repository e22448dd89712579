//! Unit tests of the flow table: single behaviours, the slab and wheel's
//! invariants, and random traffic against an independent reference model.

use flowd_common::{FlowCounts, proto::tcp};

use super::{flow::SEC, slab::TICK_SHIFT, *};

mod basics {
    use super::*;

    fn delta(packets: u64, bytes: u64, first: u64, last: u64, flags: u16) -> FlowStats {
        FlowStats {
            counts: FlowCounts {
                packets,
                bytes,
                syn: u32::from(flags & tcp::SYN != 0),
                fin: 0,
                rst: 0,
                tcp_flags: flags,
                ..Default::default()
            },
            first_seen_ns: first,
            last_seen_ns: last,
            ..Default::default()
        }
    }

    #[test]
    fn deltas_accumulate() {
        let mut t = FlowTable::default();
        let k = FlowKey {
            ifindex: 3,
            proto: 6,
            sport: 1000,
            dport: 80,
            ..Default::default()
        };
        t.apply(&k, &delta(2, 120, 10, 20, tcp::SYN), TimeBase::Capture);
        t.apply(&k, &delta(3, 4500, 30, 25, tcp::ACK), TimeBase::Capture);
        let f = t.get(&k).unwrap();
        assert_eq!((f.counts.packets, f.counts.bytes), (5, 4620));
        assert_eq!((f.first_ns, f.last_ns), (10, 30));
        assert_eq!(f.counts.tcp_flags, tcp::SYN | tcp::ACK);
        assert_eq!(f.counts.syn, 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn handshake_and_close_is_sf_from_both_sides() {
        let mut t = FlowTable::default();
        let a = FlowKey {
            ifindex: 2,
            direction: 0,
            proto: 6,
            src: [1; 16],
            dst: [2; 16],
            sport: 40000,
            dport: 80,
            ..Default::default()
        };
        let b = FlowKey {
            direction: 1,
            src: a.dst,
            dst: a.src,
            sport: a.dport,
            dport: a.sport,
            ..a
        };
        let mut syn = delta(3, 180, 100, 300, tcp::SYN | tcp::FIN | tcp::ACK);
        syn.counts.fin = 1;
        let mut synack = delta(2, 120, 150, 310, tcp::SYN | tcp::FIN | tcp::ACK);
        synack.counts.fin = 1;
        t.apply(&a, &syn, TimeBase::Capture);
        assert_eq!(t.conn_state(&a), Some("SH"));
        t.apply(&b, &synack, TimeBase::Capture);
        assert_eq!(t.conn_state(&a), Some("SF"));
        assert_eq!(t.conn_state(&b), Some("SF"));
        assert_eq!(t.reverse(&a).map(|f| f.key), Some(b));
    }

    fn udp(port: u16) -> FlowKey {
        FlowKey {
            proto: 17,
            sport: port,
            dport: 53,
            ..Default::default()
        }
    }

    #[test]
    fn idle_flows_end_and_active_ones_restart() {
        let mut t = FlowTable::new(TableConfig {
            idle_timeout_ns: 10,
            active_timeout_ns: 100,
            tcp_close_grace_ns: 5,
            max_flows: 10,
        });
        t.apply(&udp(1), &delta(1, 100, 0, 0, 0), TimeBase::Capture);
        t.apply(&udp(2), &delta(1, 100, 0, 0, 0), TimeBase::Capture);
        t.apply(&udp(2), &delta(1, 100, 95, 95, 0), TimeBase::Capture);
        let ended = t.expire(100);
        assert_eq!(ended.len(), 2);
        let by_port = |p| ended.iter().find(|e| e.flow.key.sport == p).unwrap();
        assert_eq!(by_port(1).reason, EndReason::Idle);
        assert_eq!(by_port(2).reason, EndReason::Active);
        assert_eq!(by_port(2).flow.counts.packets, 2);
        // The active flow goes on with a fresh record.
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&udp(2)).unwrap().counts.packets, 0);
        assert_eq!(t.stats().started, 2);
        assert_eq!(t.stats().ended, [1, 1, 0, 0, 0]);
    }

    #[test]
    fn full_table_evicts_the_longest_idle() {
        let mut t = FlowTable::new(TableConfig {
            max_flows: 3,
            ..TableConfig::default()
        });
        for (p, last) in [(1, 30), (2, 10), (3, 20)] {
            t.apply(&udp(p), &delta(1, 60, last, last, 0), TimeBase::Capture);
        }
        t.apply(&udp(4), &delta(1, 60, 40, 40, 0), TimeBase::Capture);
        assert_eq!(t.len(), 3);
        assert!(t.get(&udp(2)).is_none(), "port 2 was idle the longest");
        let ended = t.expire(41);
        assert_eq!(ended.len(), 1);
        assert_eq!(
            (ended[0].flow.key.sport, ended[0].reason),
            (2, EndReason::Evicted)
        );
        let all = t.end_all();
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|e| e.reason == EndReason::Forced));
    }

    #[test]
    fn closed_tcp_ends_after_the_grace_period() {
        let mut t = FlowTable::new(TableConfig {
            tcp_close_grace_ns: 5,
            ..TableConfig::default()
        });
        let a = FlowKey {
            proto: 6,
            src: [1; 16],
            dst: [2; 16],
            sport: 1,
            dport: 2,
            ..Default::default()
        };
        let b = FlowKey {
            direction: 1,
            src: a.dst,
            dst: a.src,
            sport: 2,
            dport: 1,
            ..a
        };
        let mut d = delta(3, 180, 10, 20, tcp::SYN | tcp::FIN);
        d.counts.fin = 1;
        t.apply(&a, &d, TimeBase::Capture);
        t.apply(&b, &d, TimeBase::Capture);
        assert!(t.expire(22).is_empty(), "still within the grace period");
        let ended = t.expire(25);
        assert_eq!(ended.len(), 2);
        assert!(
            ended
                .iter()
                .all(|e| e.reason == EndReason::EndOfFlow && e.state == Some("SF"))
        );
    }

    #[test]
    fn counted_flags_are_ored_back() {
        let mut t = FlowTable::default();
        let k = FlowKey::default();
        let mut d = delta(1, 60, 1, 1, 0);
        d.counts.rst = 1;
        t.apply(&k, &d, TimeBase::Capture);
        assert_eq!(t.get(&k).unwrap().counts.tcp_flags, tcp::RST);
    }
}

mod slab {
    use super::{super::reference::RefTable, *};

    fn udp(port: u16) -> FlowKey {
        FlowKey {
            proto: 17,
            sport: port,
            dport: 53,
            ..Default::default()
        }
    }

    fn at(t: u64) -> FlowStats {
        FlowStats {
            counts: FlowCounts {
                packets: 1,
                bytes: 100,
                ..Default::default()
            },
            first_seen_ns: t,
            last_seen_ns: t,
            ..Default::default()
        }
    }

    /// Every live slot is indexed under its key, and nothing else is.
    fn check(t: &FlowTable) {
        let live: Vec<u32> = t.live_slots().collect();
        assert_eq!(live.len(), t.len());
        assert_eq!(t.index.len(), t.len());
        for s in live {
            assert_eq!(t.slot(&t.flows[s as usize].key), Some(s));
        }
        let mut free = 0;
        let mut s = t.free;
        while s != NIL {
            assert_eq!(t.mark(s) & LIVE, 0);
            free += 1;
            s = t.links[s as usize].next;
        }
        assert_eq!(free + t.len(), t.flows.len());
        // Every live flow is in exactly one bucket.
        let mut linked = 0;
        for &head in &t.wheel {
            let mut s = head;
            while s != NIL {
                assert_ne!(t.mark(s) & LIVE, 0);
                linked += 1;
                s = t.links[s as usize].next;
            }
        }
        assert_eq!(linked, t.len());
    }

    #[test]
    fn removed_slots_are_reused_and_the_index_stays_consistent() {
        let mut t = FlowTable::new(TableConfig {
            idle_timeout_ns: 10 * SEC,
            ..TableConfig::default()
        });
        for p in 0..1000 {
            t.apply(&udp(p), &at(u64::from(p % 2) * 5 * SEC), TimeBase::Capture);
        }
        check(&t);
        // The 500 even ports were last seen at 0: idle at 10 s.
        let ended = t.expire(10 * SEC);
        assert_eq!(ended.len(), 500);
        assert!(ended.iter().all(|e| e.flow.key.sport % 2 == 0));
        assert!(ended.iter().all(|e| e.reason == EndReason::Idle));
        check(&t);
        for p in 1000..1500 {
            t.apply(&udp(p), &at(11 * SEC), TimeBase::Capture);
        }
        assert_eq!(t.flows.len(), 1000, "new flows took the freed slots");
        assert_eq!(t.len(), 1000);
        check(&t);
        for p in (1..1000).step_by(2).chain(1000..1500) {
            assert_eq!(t.get(&udp(p)).map(|f| f.counts.packets), Some(1));
        }
        assert!(t.get(&udp(0)).is_none());
        assert_eq!(t.stats().started, 1500);
        assert_eq!(t.stats().ended, [500, 0, 0, 0, 0]);
    }

    #[test]
    fn flows_end_in_the_expire_of_their_deadline_and_not_before() {
        let mut t = FlowTable::new(TableConfig {
            idle_timeout_ns: 60 * SEC,
            ..TableConfig::default()
        });
        for p in 0..100u16 {
            t.apply(&udp(p), &at(u64::from(p) * SEC), TimeBase::Capture);
        }
        for now in 60..160u64 {
            let ended = t.expire(now * SEC + SEC / 2);
            let ports: Vec<u16> = ended.iter().map(|e| e.flow.key.sport).collect();
            assert_eq!(ports, vec![(now - 60) as u16], "at {now} s");
            check(&t);
        }
        assert!(t.is_empty());
    }

    #[test]
    fn eviction_takes_the_longest_idle_ties_by_key_with_exact_counters() {
        let mut t = FlowTable::new(TableConfig {
            idle_timeout_ns: 500 * SEC,
            active_timeout_ns: 3000 * SEC,
            max_flows: 640,
            ..TableConfig::default()
        });
        // 640 flows, last seen at 1000 s minus (port / 4) seconds: four per second.
        for p in 0..640u16 {
            t.apply(
                &udp(p),
                &at((1000 - u64::from(p / 4)) * SEC),
                TimeBase::Capture,
            );
        }
        t.expire(1000 * SEC);
        t.apply(&udp(9999), &at(1001 * SEC), TimeBase::Capture);
        assert_eq!(t.len(), 631, "1/64 of 640 made room");
        let ended = t.expire(1001 * SEC);
        let ports: Vec<u16> = ended.iter().map(|e| e.flow.key.sport).collect();
        // The oldest first: 636..=639 (last seen at 841 s), 632..=635 (842 s),
        // then two of the four at 843 s, the smallest keys.
        assert_eq!(ports, [636, 637, 638, 639, 632, 633, 634, 635, 628, 629]);
        assert!(ended.iter().all(|e| e.reason == EndReason::Evicted));
        assert_eq!(t.stats().started, 641);
        assert_eq!(t.stats().ended, [0, 0, 0, 0, 10]);
        check(&t);
    }

    #[test]
    fn a_count_that_would_overflow_starts_a_new_record() {
        let mut t = FlowTable::default();
        let k = udp(1);
        let mut d = at(SEC);
        d.counts.ce = u32::MAX - 1;
        t.apply(&k, &d, TimeBase::Capture);
        let mut d = at(2 * SEC);
        d.counts.ce = 3;
        t.apply(&k, &d, TimeBase::Capture);
        let f = t.get(&k).unwrap();
        assert_eq!((f.counts.ce, f.counts.packets, f.first_ns), (3, 1, 2 * SEC));
        let ended = t.expire(2 * SEC);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].reason, EndReason::Active);
        assert_eq!(
            (ended[0].flow.counts.ce, ended[0].flow.counts.packets),
            (u32::MAX - 1, 1)
        );
        check(&t);
    }

    #[test]
    fn the_scan_detector_gets_each_flow_once_when_old_enough() {
        let mut t = FlowTable::new(TableConfig {
            idle_timeout_ns: 1000 * SEC,
            active_timeout_ns: 100 * SEC,
            ..TableConfig::default()
        });
        for p in 0..10 {
            t.apply(&udp(p), &at(u64::from(p) * SEC), TimeBase::Capture);
        }
        assert_eq!(t.take_settled(5 * SEC, 2 * SEC).len(), 4, "ports 0..=3");
        assert_eq!(t.take_settled(5 * SEC, 2 * SEC).len(), 0);
        // A record restarted by the active timeout is the same flow.
        assert_eq!(t.expire(150 * SEC).len(), 10, "all restarted");
        assert_eq!(t.take_settled(400 * SEC, 2 * SEC).len(), 6);
        // A new flow in a reused slot is judged again.
        assert_eq!(t.expire(2000 * SEC).len(), 10);
        t.apply(&udp(0), &at(2000 * SEC), TimeBase::Capture);
        let keys = |v: Vec<&Flow>| v.into_iter().map(|f| f.key).collect::<Vec<_>>();
        assert_eq!(keys(t.take_settled(2010 * SEC, 2 * SEC)), vec![udp(0)]);
        // In the order they entered the table: a flow waits behind a younger
        // one until that one is old enough too (at most `age_ns` longer).
        t.apply(&udp(1), &at(2030 * SEC), TimeBase::Capture);
        t.apply(&udp(2), &at(2020 * SEC), TimeBase::Capture);
        assert_eq!(keys(t.take_settled(2031 * SEC, 2 * SEC)), vec![]);
        assert_eq!(
            keys(t.take_settled(2032 * SEC, 2 * SEC)),
            vec![udp(1), udp(2)]
        );
    }

    /// Random traffic (TCP and UDP, both directions, FIN/RST, a small
    /// table) through both tables: the same records end, for the same
    /// reasons, with the same counts, at the same `expire`.
    #[test]
    fn matches_the_reference_table() {
        matches_the_reference_with(20 * SEC);
    }

    /// An idle timeout longer than one turn of the wheel: eviction takes
    /// the longest-idle flows from the candidate queue of a full scan.
    #[test]
    fn matches_the_reference_table_with_an_idle_timeout_beyond_the_wheel() {
        matches_the_reference_with(3 * (WHEEL << TICK_SHIFT) / 2);
    }

    /// The candidate queue's own cases, against the reference: a candidate
    /// seen again but still among the oldest goes back in order, one seen
    /// again later than the bound leaves, and a new flow older than the
    /// bound (a late drain) makes the next eviction scan again.
    #[test]
    fn eviction_candidates_stay_exact_when_flows_change() {
        let config = TableConfig {
            idle_timeout_ns: 2 * (WHEEL << TICK_SHIFT),
            active_timeout_ns: 2 * (WHEEL << TICK_SHIFT),
            tcp_close_grace_ns: SEC,
            max_flows: 64,
        };
        let mut t = FlowTable::new(config);
        let mut r = RefTable {
            config,
            ..RefTable::default()
        };
        const NONE: [u16; 0] = [];
        let base = 1_000 * SEC;
        let both = |t: &mut FlowTable, r: &mut RefTable, key: FlowKey, last: u64| {
            let mut d = at(base + last);
            d.first_seen_ns = base;
            t.apply(&key, &d, TimeBase::Capture);
            r.apply(&key, &d);
            let now = base + 1_000 * SEC;
            let (mut got, mut want) = (t.expire(now), r.expire(now));
            got.sort_by_key(|e| e.flow.key);
            want.sort_by_key(|e| e.flow.key);
            assert_eq!(got, want);
            got.into_iter()
                .map(|e| e.flow.key.sport)
                .collect::<Vec<_>>()
        };
        for p in 1..=64 {
            assert_eq!(both(&mut t, &mut r, udp(p), u64::from(p) * SEC), NONE);
        }
        // Full: one eviction (64 / 64) takes port 1; the scan queued 1..=8.
        assert_eq!(both(&mut t, &mut r, udp(65), 65 * SEC), vec![1]);
        assert_eq!(t.evict_bound.map(|b| b.1.sport), Some(8));
        // Port 2 seen again at 5.5 s: still a candidate, behind 3, 4 and 5.
        assert_eq!(both(&mut t, &mut r, udp(2), 5 * SEC + SEC / 2), NONE);
        // Port 3 seen again at 100 s: no longer one.
        assert_eq!(both(&mut t, &mut r, udp(3), 100 * SEC), NONE);
        assert_eq!(both(&mut t, &mut r, udp(66), 66 * SEC), vec![4]);
        assert_eq!(both(&mut t, &mut r, udp(67), 67 * SEC), vec![5]);
        assert_eq!(both(&mut t, &mut r, udp(68), 68 * SEC), vec![2]);
        // A new flow older than every candidate: the queue goes, and the
        // eviction after the next new flow finds it by a scan.
        assert_eq!(both(&mut t, &mut r, udp(69), SEC / 2), vec![6]);
        assert!(t.evict_bound.is_none());
        assert_eq!(both(&mut t, &mut r, udp(70), 70 * SEC), vec![69]);
        assert_eq!(both(&mut t, &mut r, udp(71), 71 * SEC), vec![7]);
    }

    fn matches_the_reference_with(idle_timeout_ns: u64) {
        let config = TableConfig {
            idle_timeout_ns,
            active_timeout_ns: 45 * SEC,
            tcp_close_grace_ns: 3 * SEC,
            max_flows: 300,
        };
        let mut t = FlowTable::new(config);
        let mut r = RefTable {
            config,
            ..RefTable::default()
        };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut now = 1_000 * SEC;
        for round in 0..400 {
            for _ in 0..rand(60) {
                // Half the deltas on a few hot hosts (their flows live long).
                let hosts = if rand(2) == 0 { 3 } else { 40 };
                let (a, b) = (rand(hosts) as u8, rand(hosts) as u8);
                // Clients on low and on ephemeral ports (the originator
                // of a connection without SYNs differs).
                let client = if rand(2) == 0 { 1000 } else { 40000 };
                let (sp, dp) = (client + rand(3) as u16, 80 + rand(2) as u16);
                let proto = if rand(3) == 0 { 17 } else { 6 };
                let fwd = rand(2) == 0;
                let key = FlowKey {
                    direction: u8::from(!fwd),
                    proto,
                    src: [if fwd { a } else { b }; 16],
                    dst: [if fwd { b } else { a }; 16],
                    sport: if fwd { sp } else { dp },
                    dport: if fwd { dp } else { sp },
                    ..Default::default()
                };
                let first = now.saturating_sub(rand(2 * SEC));
                let mut d = at(first);
                d.last_seen_ns = first + rand(SEC);
                d.counts.packets = 1 + rand(3);
                d.counts.syn = u32::from(rand(4) == 0);
                d.counts.fin = u32::from(rand(8) == 0);
                d.counts.rst = u32::from(rand(30) == 0);
                t.apply(&key, &d, TimeBase::Capture);
                r.apply(&key, &d);
            }
            now += rand(3 * SEC);
            let mut got = t.expire(now);
            let mut want = r.expire(now);
            for e in got.iter_mut().chain(want.iter_mut()) {
                if e.reason == EndReason::Active {
                    (e.state, e.originator) = (None, false);
                }
            }
            let order = |e: &Ended| (e.flow.key, e.reason, e.flow.first_ns);
            got.sort_by_key(order);
            want.sort_by_key(order);
            assert_eq!(got, want, "round {round}");
            assert_eq!(t.stats(), r.stats, "round {round}");
            assert_eq!(t.len(), r.flows.len());
            check(&t);
        }
        let ended = r.stats.ended;
        let forced = EndReason::Forced as usize;
        // Idle needs the clock to pass the idle timeout, which the long one
        // never does here.
        let idle = EndReason::Idle as usize;
        let beyond = idle_timeout_ns >= WHEEL << TICK_SHIFT;
        assert!(
            (0..5).all(|i| i == forced || (beyond && i == idle) || ended[i] > 0),
            "every reason but forced: {ended:?}"
        );
        // Shutdown in chunks of 7: the same records, states and originators
        // as computing every state before removing anything.
        let mut got = Vec::new();
        let mut chunks = 0;
        t.end_all_in_chunks(7, |c| {
            assert!(c.len() <= 7 + 1, "a chunk, at most one connection over");
            chunks += 1;
            got.extend(c);
        });
        let mut want = r.end_all();
        assert!(chunks > 1 && !want.is_empty());
        let order = |e: &Ended| (e.flow.key, e.flow.first_ns);
        got.sort_by_key(order);
        want.sort_by_key(order);
        assert_eq!(got, want);
        assert_eq!(t.stats(), r.stats);
        assert_eq!(t.len(), 0);
        check(&t);
    }
}

/// Walking the table a page at a time: each flow that lives throughout a
/// walk is seen exactly once, whatever comes and goes between pages.
mod pages {
    use std::collections::HashMap;

    use super::*;

    fn key(i: u32) -> FlowKey {
        let mut src = [0u8; 16];
        src[10] = 0xff;
        src[11] = 0xff;
        src[12..].copy_from_slice(&[198, 18, (i >> 8) as u8, i as u8]);
        FlowKey {
            ifindex: 2 + i % 2,
            proto: if i.is_multiple_of(3) {
                ip::TCP
            } else {
                ip::UDP
            },
            src,
            dst: [7; 16],
            sport: 1000 + (i % 50) as u16,
            dport: 80,
            ..Default::default()
        }
    }

    fn add(t: &mut FlowTable, k: &FlowKey) {
        let d = FlowStats {
            counts: FlowCounts {
                packets: 1,
                bytes: 100,
                ..Default::default()
            },
            first_seen_ns: SEC,
            last_seen_ns: SEC,
            ..Default::default()
        };
        t.apply(k, &d, TimeBase::Capture);
    }

    fn drop_flow(t: &mut FlowTable, k: &FlowKey) {
        let s = t.slot(k).expect("live");
        t.remove(s);
    }

    /// Follows the cursor from 0; `between` runs after every page.
    fn walk(
        t: &mut FlowTable,
        limit: usize,
        max_slots: usize,
        filter: &FlowFilter,
        mut between: impl FnMut(&mut FlowTable, usize),
    ) -> Vec<FlowKey> {
        let mut seen = Vec::new();
        let mut cursor = 0;
        for n in 0.. {
            let p = t.page(cursor, limit, max_slots, filter);
            assert!(p.flows.len() <= limit);
            seen.extend(p.flows.iter().map(|f| f.key));
            let Some(next) = p.next else { break };
            assert!(next > cursor, "the cursor moves forward");
            assert!(next as usize <= cursor as usize + max_slots);
            cursor = next;
            between(t, n);
        }
        seen
    }

    #[test]
    fn a_still_table_is_seen_once_in_slot_order() {
        let mut t = FlowTable::default();
        for i in 0..100 {
            add(&mut t, &key(i));
        }
        // Holes in the slab.
        for i in (0..100).step_by(7) {
            drop_flow(&mut t, &key(i));
        }
        let all: Vec<FlowKey> = t.iter().map(|f| f.key).collect();
        for (limit, slots) in [(1, 1), (7, 1000), (10, 3), (1000, 1000), (30, 100)] {
            let got = walk(&mut t, limit, slots, &FlowFilter::default(), |_, _| {});
            assert_eq!(got, all, "limit {limit}, slots {slots}");
        }
        // Past the end: nothing, and no next page.
        let p = t.page(10_000, 10, 10, &FlowFilter::default());
        assert!(p.flows.is_empty() && p.next.is_none());
        let p = t.page(0, 1000, 1000, &FlowFilter::default());
        assert_eq!(p.flows.len(), all.len());
        assert_eq!(p.next, None);
    }

    #[test]
    fn the_slot_budget_bounds_a_selective_page() {
        let mut t = FlowTable::default();
        for i in 0..1000 {
            add(&mut t, &key(i));
        }
        let none = FlowFilter {
            proto: Some(ip::ICMP),
            ..Default::default()
        };
        let p = t.page(100, 10, 64, &none);
        assert!(p.flows.is_empty());
        assert_eq!(p.next, Some(164));
        // The last flow is found from any cursor before it.
        let last = FlowFilter {
            src: Some(key(999).src),
            ..Default::default()
        };
        let got = walk(&mut t, 5, 64, &last, |_, _| {});
        assert_eq!(got, vec![key(999)]);
    }

    #[test]
    fn flows_living_throughout_are_seen_exactly_once_under_churn() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next_rand = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..20 {
            let mut t = FlowTable::default();
            let mut live: Vec<u32> = (0..500).collect();
            for &i in &live {
                add(&mut t, &key(i));
            }
            // Free some slots first so insertions reuse them.
            for _ in 0..50 {
                let j = (next_rand() % live.len() as u64) as usize;
                drop_flow(&mut t, &key(live.swap_remove(j)));
            }
            let at_start: HashMap<FlowKey, ()> = live.iter().map(|&i| (key(i), ())).collect();
            let mut removed = Vec::new();
            let mut added = Vec::new();
            let mut fresh = 10_000;
            let limit = 1 + round;
            let seen = walk(&mut t, limit, 37, &FlowFilter::default(), |t, _| {
                for _ in 0..(next_rand() % 6) {
                    if live.is_empty() {
                        break;
                    }
                    let j = (next_rand() % live.len() as u64) as usize;
                    let i = live.swap_remove(j);
                    drop_flow(t, &key(i));
                    removed.push(key(i));
                }
                for _ in 0..(next_rand() % 6) {
                    add(t, &key(fresh));
                    added.push(key(fresh));
                    live.push(fresh);
                    fresh += 1;
                }
            });
            let mut count: HashMap<FlowKey, usize> = HashMap::new();
            for k in &seen {
                *count.entry(*k).or_default() += 1;
            }
            assert!(count.values().all(|&n| n == 1), "no flow twice");
            for k in at_start.keys().filter(|k| !removed.contains(k)) {
                assert_eq!(
                    count.get(k),
                    Some(&1),
                    "round {round}: {k:?} lived throughout"
                );
            }
            // Every flow seen lived at some point of the walk.
            assert!(
                seen.iter()
                    .all(|k| at_start.contains_key(k) || added.contains(k)),
                "round {round}"
            );
        }
    }

    #[test]
    fn filters_match_each_field() {
        let mut t = FlowTable::default();
        for i in 0..300 {
            add(&mut t, &key(i));
        }
        let mut count = |f: FlowFilter| walk(&mut t, 13, 50, &f, |_, _| {});
        let got = count(FlowFilter {
            src: Some(key(42).src),
            ..Default::default()
        });
        assert_eq!(got, vec![key(42)]);
        let got = count(FlowFilter {
            dst: Some([7; 16]),
            ..Default::default()
        });
        assert_eq!(got.len(), 300);
        let got = count(FlowFilter {
            dst: Some([8; 16]),
            ..Default::default()
        });
        assert!(got.is_empty());
        let got = count(FlowFilter {
            proto: Some(ip::TCP),
            ..Default::default()
        });
        assert_eq!(got.len(), 100);
        assert!(got.iter().all(|k| k.proto == ip::TCP));
        // Either port: sport 1007 (6 flows) or dport 80 (all).
        let got = count(FlowFilter {
            port: Some(1007),
            ..Default::default()
        });
        assert_eq!(got.len(), 6);
        assert!(got.iter().all(|k| k.sport == 1007));
        let got = count(FlowFilter {
            port: Some(80),
            ..Default::default()
        });
        assert_eq!(got.len(), 300);
        let got = count(FlowFilter {
            ifindex: Some(vec![3]),
            proto: Some(ip::UDP),
            ..Default::default()
        });
        assert_eq!(
            got.len(),
            (0..300).filter(|i| i % 2 == 1 && i % 3 != 0).count()
        );
        let got = count(FlowFilter {
            ifindex: Some(vec![]),
            ..Default::default()
        });
        assert!(got.is_empty());
    }

    #[test]
    fn ports_match_only_protocols_with_ports() {
        let icmp = FlowKey {
            proto: ip::ICMP,
            dport: 8 * 256,
            ..Default::default()
        };
        let f = FlowFilter {
            port: Some(8 * 256),
            ..Default::default()
        };
        assert!(!f.matches(&icmp));
        assert!(f.matches(&FlowKey {
            proto: ip::SCTP,
            sport: 8 * 256,
            ..Default::default()
        }));
    }
}
