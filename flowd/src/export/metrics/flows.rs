//! The flow table (active, bound, started and ended flows) and the
//! top-flows window: its gauges, the K heaviest flows and their TCP details.

use super::{
    Snapshot, TopTcp,
    family::{Family, Num, Value, dir_label, labels, one},
};
use crate::{
    export::{
        aggregate::AggSnapshot,
        budget::Plan,
        groups::{OTHER, proto_label},
    },
    record::addr,
};

pub(super) fn active(s: &Snapshot, out: &mut Vec<Family>) {
    out.push(Family::gauge(
        "flowd_flows_active",
        "Flows in the flow table.",
        one(s.flows_active),
    ));
}

pub(super) fn table(s: &Snapshot, out: &mut Vec<Family>) {
    out.push(Family::gauge(
        "flowd_flows_max",
        "Bound of the flow table; beyond it the longest-idle flows are evicted.",
        one(s.flows_max),
    ));
    out.push(Family::counter(
        "flowd_flows_started",
        "Flows that entered the flow table.",
        one(s.flows_started),
    ));
    out.push(Family::counter(
        "flowd_flows_ended",
        "Flow records ended, by reason (idle, active, end-of-flow, forced, evicted).",
        s.flows_ended
            .iter()
            .map(|(r, n)| (labels([("reason", r)]), Num::U(*n)))
            .collect(),
    ));
}

/// The window's own gauges: K, its length, its flows and what overflowed it.
pub(super) fn window(g: &AggSnapshot, out: &mut Vec<Family>) {
    out.push(Family::gauge(
        "flowd_top_flows_max",
        "K: flows exported one by one in flowd_top_flow_window_bytes/packets.",
        one(g.top_k as u64),
    ));
    out.push(Family::gauge(
        "flowd_top_flows_window_seconds",
        "Length of the window the top flows are ranked and measured over.",
        vec![(Vec::new(), Num::F(g.window_seconds))],
    ));
    out.push(Family::gauge(
        "flowd_top_window_flows",
        "Flows with traffic in the window.",
        one(g.window_flows as u64),
    ));
    out.push(Family::gauge(
        "flowd_top_window_flows_max",
        "Most flows the window tracks.",
        one(g.window_max_flows as u64),
    ));
    out.push(Family::counter(
        "flowd_top_window_overflow_deltas",
        "Flow deltas the full window could not track; their traffic is in the other series only.",
        one(g.window_overflow_deltas),
    ));
}

/// The top-flow families: window gauges of the K heaviest flows and `other`.
pub(super) fn top_families(g: &AggSnapshot, plan: &Plan) -> Vec<Family> {
    let (mut packets, mut bytes) = (Vec::new(), Vec::new());
    let mut rest: Vec<_> = g.sides.iter().map(|s| s.window).collect();
    for (k, c) in &g.top[..plan.top_shown] {
        let s = &g.sides[usize::from(k.side)];
        rest[usize::from(k.side)].sub(*c);
        let l = labels([
            ("device", &s.device),
            ("direction", dir_label(s.direction)),
            ("proto", &proto_label(k.proto)),
            ("src", &addr(&k.src).to_string()),
            ("dst", &addr(&k.dst).to_string()),
            ("sport", &k.sport.to_string()),
            ("dport", &k.dport.to_string()),
        ]);
        packets.push((l.clone(), Num::U(c.packets)));
        bytes.push((l, Num::U(c.bytes)));
    }
    for (s, c) in g.sides.iter().zip(rest) {
        let l = labels([
            ("device", &s.device),
            ("direction", dir_label(s.direction)),
            ("proto", OTHER),
            ("src", OTHER),
            ("dst", OTHER),
            ("sport", OTHER),
            ("dport", OTHER),
        ]);
        packets.push((l.clone(), Num::U(c.packets)));
        bytes.push((l, Num::U(c.bytes)));
    }
    vec![
        Family::gauge(
            "flowd_top_flow_window_bytes",
            "Bytes of the flow in the window, for the K flows with the most; the other series holds the rest of the device's window.",
            bytes,
        ),
        Family::gauge(
            "flowd_top_flow_window_packets",
            "Packets of the flow in the window, for the K flows with the most bytes; the other series holds the rest.",
            packets,
        ),
    ]
}

/// TCP details of the shown top TCP flows, in at most `room` series (what
/// the budget has left): retransmitted and total segments of the flow's
/// record, and its connection's minimum and smoothed RTT when sampled.
pub(super) fn top_tcp_families(
    g: &AggSnapshot,
    plan: &Plan,
    top: &[Option<TopTcp>],
    room: usize,
) -> Vec<Family> {
    let (mut rtt, mut retrans, mut segs) = (Vec::new(), Vec::new(), Vec::new());
    let mut used = 0;
    for (i, (k, _)) in g.top[..plan.top_shown].iter().enumerate() {
        let Some(Some(t)) = top.get(i) else {
            continue;
        };
        let need = 2 + if t.rtt.is_some() { 2 } else { 0 };
        if used + need > room {
            break;
        }
        used += need;
        let s = &g.sides[usize::from(k.side)];
        let (src, dst) = (addr(&k.src).to_string(), addr(&k.dst).to_string());
        let (sport, dport) = (k.sport.to_string(), k.dport.to_string());
        let base = |extra: Option<&str>| {
            let mut l = labels([
                ("device", &s.device),
                ("direction", dir_label(s.direction)),
                ("proto", &proto_label(k.proto)),
                ("src", &src),
                ("dst", &dst),
                ("sport", &sport),
                ("dport", &dport),
            ]);
            if let Some(stat) = extra {
                l.push(("stat", Value(stat.to_owned())));
            }
            l
        };
        segs.push((base(None), Num::U(t.segments)));
        retrans.push((base(None), Num::U(t.retransmitted)));
        if let Some((min, srtt)) = t.rtt {
            rtt.push((base(Some("min")), Num::F(min as f64 / 1e9)));
            rtt.push((base(Some("smoothed")), Num::F(srtt as f64 / 1e9)));
        }
    }
    vec![
        Family::gauge(
            "flowd_top_flow_rtt_seconds",
            "RTT of a top TCP flow's connection: stat=min (its own minimum) and stat=smoothed (RFC 6298 SRTT); smoothed minus min is its queueing delay.",
            rtt,
        ),
        Family::gauge(
            "flowd_top_flow_tcp_segments",
            "TCP segments of a top flow's current record.",
            segs,
        ),
        Family::gauge(
            "flowd_top_flow_tcp_retransmitted_segments",
            "Retransmitted TCP segments of a top flow's current record (ratio: over flowd_top_flow_tcp_segments).",
            retrans,
        ),
    ]
}
