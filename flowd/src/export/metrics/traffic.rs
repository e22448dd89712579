//! Traffic: the exact interface totals, where packets can be lost (parse
//! outcomes, overflow, failed updates), and the flows' packets and bytes by
//! protocol, service and peer group.

use flowd_common::{DIR_EGRESS, DIR_INGRESS, counter};

use super::{
    IfaceSnapshot, Snapshot,
    family::{Family, Labels, Num, Value, dir_label, labels},
};
use crate::export::{
    aggregate::{AggSnapshot, Counts, Dim},
    budget::Plan,
    groups::OTHER,
};

/// Interface totals and the families that say where packets were lost.
pub(super) fn interfaces(s: &Snapshot, out: &mut Vec<Family>) {
    let per = |f: &dyn Fn(&IfaceSnapshot) -> u64| -> Vec<(Labels, Num)> {
        s.ifaces
            .iter()
            .map(|i| (labels([("device", &i.device)]), Num::U(f(i))))
            .collect()
    };
    out.push(Family::counter(
        "flowd_receive_packets",
        "Packets received on the interface (exact, XDP ingress).",
        per(&|i| i.rx.c[counter::PACKETS]),
    ));
    out.push(Family::counter(
        "flowd_receive_bytes",
        "Bytes received on the interface, frame length as on the wire without FCS.",
        per(&|i| i.rx.c[counter::BYTES]),
    ));
    out.push(Family::counter(
        "flowd_transmit_packets",
        "Packets transmitted on the interface (exact, TC egress; GSO buffers count their segments).",
        per(&|i| i.tx.c[counter::PACKETS]),
    ));
    out.push(Family::counter(
        "flowd_transmit_bytes",
        "Bytes transmitted on the interface, frame length as on the wire without FCS.",
        per(&|i| i.tx.c[counter::BYTES]),
    ));

    let mut outcomes = Vec::new();
    let mut overflow_packets = Vec::new();
    let mut overflow_bytes = Vec::new();
    let mut lost = Vec::new();
    let mut races = Vec::new();
    let mut frag_fail = Vec::new();
    let mut rtt_lost = Vec::new();
    let mut l7_skipped = Vec::new();
    for i in &s.ifaces {
        for (dir, c) in [(DIR_INGRESS, &i.rx), (DIR_EGRESS, &i.tx)] {
            let dir = dir_label(dir);
            let l = |extra: Option<(&'static str, &str)>| {
                let mut v = labels([("device", &i.device), ("direction", dir)]);
                if let Some((k, val)) = extra {
                    v.push((k, Value(val.to_owned())));
                }
                v
            };
            for o in counter::OUTCOMES {
                outcomes.push((l(Some(("outcome", counter::NAMES[o]))), Num::U(c.c[o])));
            }
            overflow_packets.push((l(None), Num::U(c.c[counter::OVERFLOW_PACKETS])));
            overflow_bytes.push((l(None), Num::U(c.c[counter::OVERFLOW_BYTES])));
            for r in [counter::LOSS_MAP_FULL, counter::LOSS_INSERT_FAILED] {
                lost.push((l(Some(("reason", counter::NAMES[r]))), Num::U(c.c[r])));
            }
            races.push((l(None), Num::U(c.c[counter::INSERT_RACE])));
            frag_fail.push((l(None), Num::U(c.c[counter::FRAG_MAP_FAILED])));
            rtt_lost.push((l(None), Num::U(c.c[counter::RTT_RING_FULL])));
            for r in [
                counter::L7_RING_FULL,
                counter::L7_BUDGET,
                counter::L7_CONTINUATION_LIMIT,
            ] {
                let reason = counter::NAMES[r].trim_start_matches("l7_");
                l7_skipped.push((l(Some(("reason", reason))), Num::U(c.c[r])));
            }
        }
    }
    out.push(Family::counter(
        "flowd_parse_outcome_packets",
        "Packets by parse outcome; every packet has exactly one outcome.",
        outcomes,
    ));
    out.push(Family::counter(
        "flowd_overflow_packets",
        "Packets counted in the interface totals but in no flow (flow map full or insert failed).",
        overflow_packets,
    ));
    out.push(Family::counter(
        "flowd_overflow_bytes",
        "Bytes counted in the interface totals but in no flow.",
        overflow_bytes,
    ));
    out.push(Family::counter(
        "flowd_flow_lost_packets",
        "Packets whose flow update failed, by reason.",
        lost,
    ));
    out.push(Family::counter(
        "flowd_flow_insert_races",
        "New flows inserted by two CPUs at once (recovered, not lost).",
        races,
    ));
    out.push(Family::counter(
        "flowd_fragment_map_failures",
        "First fragments whose ports could not be remembered for later fragments.",
        frag_fail,
    ));
    out.push(Family::counter(
        "flowd_rtt_samples_lost",
        "RTT samples the programs could not hand to user space because their ring was full.",
        rtt_lost,
    ));
    out.push(Family::counter(
        "flowd_l7_skipped",
        "Packets with application metadata not copied to user space, by reason: ring_full, budget (the per-second copy budget), continuation_limit (a request's continuation segments were spent and more followed).",
        l7_skipped,
    ));
}

/// The group families: cumulative packets and bytes by proto, service and peer.
pub(super) fn group_families(g: &AggSnapshot, plan: &Plan) -> Vec<Family> {
    const NAMES: [[(&str, &str); 2]; 3] = [
        [
            ("flowd_proto_packets", "Packets of flows by IP protocol."),
            ("flowd_proto_bytes", "Bytes of flows by IP protocol."),
        ],
        [
            (
                "flowd_service_packets",
                "Packets of flows by service: the lower of the two ports that is in the port map.",
            ),
            (
                "flowd_service_bytes",
                "Bytes of flows by service: the lower of the two ports that is in the port map.",
            ),
        ],
        [
            (
                "flowd_peer_packets",
                "Packets of flows by CIDR group of the remote address (source on receive, destination on transmit).",
            ),
            (
                "flowd_peer_bytes",
                "Bytes of flows by CIDR group of the remote address (source on receive, destination on transmit).",
            ),
        ],
    ];
    let mut out = Vec::new();
    for dim in Dim::ALL {
        let names = &g.names[dim as usize];
        let (mut packets, mut bytes) = (Vec::new(), Vec::new());
        let mut push = |side: usize, group: &str, c: Counts| {
            let s = &g.sides[side];
            let l = labels([
                ("device", &s.device),
                ("direction", dir_label(s.direction)),
                (dim.label(), group),
            ]);
            packets.push((l.clone(), Num::U(c.packets)));
            bytes.push((l, Num::U(c.bytes)));
        };
        // Shown groups are in group order: by side, then dimension, then group.
        let mut shown = plan
            .shown_groups
            .iter()
            .map(|i| g.groups[*i])
            .filter(|(id, _)| id.dim == dim)
            .peekable();
        for side in 0..g.sides.len() {
            while let Some((id, c)) = shown.next_if(|(id, _)| usize::from(id.side) == side) {
                push(side, &names[usize::from(id.group)], c);
            }
            push(side, OTHER, plan.others[side][dim as usize]);
        }
        let [(pn, ph), (bn, bh)] = NAMES[dim as usize];
        out.push(Family::counter(pn, ph, packets));
        out.push(Family::counter(bn, bh, bytes));
    }
    out
}
