//! The congestion and security families of the TCP signals (see
//! [`crate::export::tcp`]), with the link speed they are read against.

use super::{
    Snapshot,
    family::{Body, Family, Labels, Num, labels, one},
};
use crate::export::tcp::TcpCounts;

/// The congestion and security families.
pub(super) fn families(s: &Snapshot, out: &mut Vec<Family>) {
    out.push(Family::gauge(
        "flowd_interface_speed_bytes_per_second",
        "Link speed (sysfs, or [interface_speeds] in the config), in bytes per second: utilization is rate(flowd_receive_bytes_total) over this.",
        s.ifaces
            .iter()
            .filter_map(|i| i.speed_bps.map(|v| (labels([("device", &i.device)]), Num::U(v / 8))))
            .collect(),
    ));
    let t = &s.tcp;
    let per = |f: &dyn Fn(&TcpCounts) -> u64| -> Vec<(Labels, Num)> {
        t.tcp
            .iter()
            .map(|((d, dir, p), c)| {
                (
                    labels([("device", d), ("direction", dir), ("peer", p)]),
                    Num::U(f(c)),
                )
            })
            .collect()
    };
    for (name, help, f) in [
        (
            "flowd_tcp_segments",
            "TCP segments, by device, direction and peer group.",
            (|c| c.segments) as fn(&TcpCounts) -> u64,
        ),
        (
            "flowd_tcp_retransmitted_segments",
            "TCP segments carrying data already seen in the flow (retransmissions and reordering).",
            |c| c.retransmitted,
        ),
        (
            "flowd_tcp_syn_packets",
            "TCP segments with SYN and without ACK (connection attempts).",
            |c| c.syn,
        ),
        (
            "flowd_tcp_synack_packets",
            "TCP segments with SYN and ACK (answers to connection attempts).",
            |c| c.synack,
        ),
        ("flowd_tcp_rst_packets", "TCP segments with RST.", |c| c.rst),
        (
            "flowd_tcp_zero_window",
            "TCP segments advertising a zero receive window.",
            |c| c.zero_window,
        ),
    ] {
        out.push(Family::counter(name, help, per(&f)));
    }
    let mut ecn = Vec::new();
    for ((d, dir), c) in &t.ip {
        for (cp, v) in [("ect0", c.ect0), ("ect1", c.ect1), ("ce", c.ce)] {
            ecn.push((
                labels([("device", d), ("direction", dir), ("codepoint", cp)]),
                Num::U(v),
            ));
        }
    }
    out.push(Family::counter(
        "flowd_dscp_packets",
        "IP packets by DSCP class (cs0-cs7, af11-af43, ef, va, other), from each flow's DSCP.",
        t.dscp
            .iter()
            .map(|((d, dir, class), n)| {
                (
                    labels([("device", d), ("direction", dir), ("class", class)]),
                    Num::U(*n),
                )
            })
            .collect(),
    ));
    out.push(Family::counter(
        "flowd_ecn_packets",
        "IP packets by ECN codepoint (ECT(0), ECT(1), CE: Congestion Experienced).",
        ecn,
    ));
    out.push(Family::counter(
        "flowd_tcp_connections",
        "TCP connections ended, by Zeek conn_state (S0 unanswered, REJ rejected, SF normal, ...).",
        t.connections
            .iter()
            .map(|((d, p, st), n)| {
                (
                    labels([("device", d), ("peer", p), ("state", st)]),
                    Num::U(*n),
                )
            })
            .collect(),
    ));
    out.push(Family {
        name: "flowd_tcp_queueing_delay_seconds",
        help: "TCP RTT samples above their flow's own minimum RTT: queueing delay on the path.",
        body: Body::Histogram(
            t.queueing
                .iter()
                .map(|((d, p), h)| (labels([("device", d), ("peer", p)]), h.clone()))
                .collect(),
        ),
    });
    out.push(Family::counter(
        "flowd_tcp_rtt_samples",
        "RTT samples taken (handshakes and TCP timestamp echoes).",
        one(t.rtt_samples),
    ));
    out.push(Family {
        name: "flowd_tcp_rtt_seconds",
        help: "TCP round-trip times seen from this host: handshakes and TCP timestamp echoes.",
        body: Body::Histogram(
            t.rtt
                .iter()
                .map(|((d, p), h)| (labels([("device", d), ("peer", p)]), h.clone()))
                .collect(),
        ),
    });
}
