//! Read-only views of the shared state: the metrics snapshot, the live
//! view, the flow list and the scan suspects, as the HTTP handlers serve
//! them.

use std::collections::HashMap;

use flowd_common::{DIR_EGRESS, DIR_INGRESS, FlowKey, IfaceCounters, counter};
use serde_json::Value;
use tracing::warn;

use super::{Shared, lock};
use crate::{
    clock,
    export::{
        aggregate::AggSnapshot,
        metrics::{IfaceSnapshot, Snapshot, TopTcp},
        recent,
    },
    flowtable::{EndReason, Flow, FlowFilter},
    interfaces, record,
    scan::Suspect,
};

/// Most flows copied out of the table under one hold of its lock.
pub const CHUNK_FLOWS: usize = 1000;
/// Most slab slots looked at under one hold of the table lock (a selective
/// filter finds few flows in many slots).
pub const CHUNK_SLOTS: usize = 65_536;

/// Flows copied out of the table: each with its connection state.
#[derive(Debug, Default)]
pub struct FlowChunk {
    pub flows: Vec<(Flow, Option<&'static str>)>,
    /// The slot to go on from; `None`: the walk reached the table's end.
    pub next: Option<u32>,
}

impl Shared {
    /// Every interface seen in this run, attached or gone, with its exact
    /// totals; and the flow map capacity.
    fn interfaces(&self) -> (Vec<IfaceSnapshot>, u64) {
        let (speeds, af_xdp) = {
            let c = lock(&self.config);
            (c.interface_speeds.clone(), c.af_xdp.interfaces.clone())
        };
        let dp = lock(&self.dp);
        // Lock order: dp, then afxdp (as in `afxdp()`).
        let captures: HashMap<String, &'static str> = lock(&self.afxdp)
            .iter()
            .map(|c| (c.iface.clone(), c.xdp_mode.as_str()))
            .collect();
        let mut ifaces = Vec::new();
        for (name, slot) in dp.slots() {
            // Captured now, or selected for AF_XDP (gone, or failing to start).
            let capture = captures.get(name).copied();
            let af_xdp = capture.is_some() || interfaces::af_xdp_selects(&af_xdp, name);
            let attached = dp.interfaces.values().find(|a| &a.name == name);
            let rx = dp.totals(*slot, DIR_INGRESS).unwrap_or_else(|e| {
                warn!(iface = name, error = %e, "reading totals failed");
                IfaceCounters::default()
            });
            let tx = dp.totals(*slot, DIR_EGRESS).unwrap_or_default();
            ifaces.push(IfaceSnapshot {
                device: name.clone(),
                rx,
                tx,
                xdp_mode: if af_xdp {
                    capture
                } else {
                    attached
                        .filter(|a| a.xdp_attached())
                        .map(|a| a.xdp_mode.as_str())
                },
                tc_attached: !af_xdp && attached.is_some_and(|a| a.tc_attached()),
                af_xdp,
                speed_bps: speeds
                    .get(name)
                    .copied()
                    .or_else(|| interfaces::speed_bps(name)),
            });
        }
        (ifaces, u64::from(dp.capacity()))
    }

    /// `flowd_af_xdp_*`: every AF_XDP capture's queues.
    fn afxdp(&self) -> Vec<crate::export::metrics::AfXdpQueueSnapshot> {
        let dp = lock(&self.dp);
        lock(&self.afxdp)
            .iter()
            .flat_map(|c| c.metrics(&dp))
            .collect()
    }

    /// `flowd_kernel_drop*`: the drop tracer's counts by device name.
    fn kernel_drops(&self) -> Option<crate::export::metrics::KernelDrops> {
        let dp = lock(&self.dp);
        let tracer = dp.drop_tracer()?;
        let (totals, full) = dp
            .drop_totals()
            .inspect_err(|e| warn!(error = %e, "reading the drop counts failed"))
            .ok()?;
        let by_reason = totals
            .iter()
            .filter_map(|t| {
                let (device, _) = dp.slots().iter().find(|(_, s)| **s == t.slot)?;
                Some(crate::export::metrics::KernelDropSnapshot {
                    device: device.clone(),
                    reason: tracer.reasons.name(t.reason),
                    packets: t.packets,
                    bytes: t.bytes,
                })
            })
            .collect();
        Some(crate::export::metrics::KernelDrops {
            by_reason,
            map_full: full.packets,
        })
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        (s.ifaces, s.flow_map_capacity) = self.interfaces();
        s.afxdp = self.afxdp();
        s.kernel_drops = self.kernel_drops();
        {
            let table = lock(&self.table);
            s.flows_active = table.len() as u64;
            s.flows_max = table.config().max_flows as u64;
            let st = table.stats();
            s.flows_started = st.started;
            let scan = lock(&self.scan);
            s.scan_suspects = scan.suspects().len() as u64;
            s.scan_flagged = scan.flagged_total();
            s.tcp = lock(&self.tcp).snapshot();
            s.flows_ended = EndReason::ALL
                .iter()
                .map(|r| (r.as_str(), st.ended[*r as usize]))
                .collect();
        }
        let d = lock(&self.drain).clone();
        s.drain_seconds = d.seconds;
        s.ipfix = lock(&self.ipfix).as_ref().map(|x| x.stats);
        s.records = lock(&self.records)
            .as_ref()
            .map(crate::export::records::RecordSink::stats);
        s.groups = lock(&self.agg).snapshot();
        s.top_tcp = self.top_tcp(&s.groups);
        s.drains = d.drains;
        s.drains_early = d.early;
        s.flow_map_fill = d.fill;
        s.drained_entries = d.entries;
        s.last_drain_entries = d.last_entries;
        s.drain_errors = d.errors;
        s.http = self.http.snapshot();
        s.l7_names = lock(&self.l7)
            .as_mut()
            .map(|l| l.names.snapshot(s.groups.top_k));
        s.l7_metrics = lock(&self.l7).as_ref().map(|live| {
            let e = &live.engine;
            lock(&self.l7_metrics).snapshot(e.stats(), e.pending(), e.reassembling())
        });
        s
    }

    /// TCP details of each top flow from the flow table: its segments and
    /// retransmissions, and RTT from its own samples or its reverse's
    /// (samples land on the flow whose packet closed them: the ACKs).
    fn top_tcp(&self, g: &AggSnapshot) -> Vec<Option<TopTcp>> {
        let names = lock(&self.names).clone();
        let table = lock(&self.table);
        g.top
            .iter()
            .map(|(k, _)| {
                if k.proto != flowd_common::proto::ip::TCP {
                    return None;
                }
                let side = g.sides.get(usize::from(k.side))?;
                let ifindex = names
                    .iter()
                    .find(|(_, n)| **n == side.device)
                    .map(|(i, _)| *i)?;
                // Top flows merge VLANs; the untagged flow carries the details.
                let key = FlowKey {
                    ifindex,
                    vlan: 0,
                    direction: side.direction,
                    proto: k.proto,
                    src: k.src,
                    dst: k.dst,
                    sport: k.sport,
                    dport: k.dport,
                };
                let f = table.get(&key)?;
                let with = if f.rtt_samples > 0 {
                    Some(f)
                } else {
                    table.reverse(&key).filter(|r| r.rtt_samples > 0)
                };
                Some(TopTcp {
                    rtt: with.map(|f| (f.rtt_min_ns, f.rtt_srtt_ns)),
                    segments: f.counts.packets,
                    retransmitted: u64::from(f.counts.retrans),
                })
            })
            .collect()
    }

    /// The live view: the heaviest flows of the last `seconds` (at most
    /// [`recent::HISTORY`]), with rates, and the interfaces' exact totals.
    pub fn top_json(&self, seconds: f64, limit: usize) -> Value {
        let now = clock::realtime_ns();
        let w = lock(&self.recent).window(now, (seconds * 1e9) as u64, limit);
        let names = lock(&self.names).clone();
        let span_s = w.span_ns as f64 / 1e9;
        let per_s = |n: u64| if span_s > 0.0 { n as f64 / span_s } else { 0.0 };
        let flows: Vec<Value> = w
            .flows
            .iter()
            .map(|(k, packets, bytes)| {
                serde_json::json!({
                    "device": names.get(&k.ifindex).cloned().unwrap_or_else(|| format!("if{}", k.ifindex)),
                    "direction": record::direction(k),
                    "vlan": k.vlan,
                    "src": record::addr(&k.src).to_string(),
                    "dst": record::addr(&k.dst).to_string(),
                    "sport": k.sport,
                    "dport": k.dport,
                    "proto": k.proto,
                    "packets": packets,
                    "bytes": bytes,
                    "packets_per_second": per_s(*packets),
                    "bits_per_second": per_s(*bytes) * 8.0,
                })
            })
            .collect();
        let (ifaces, _) = self.interfaces();
        let flows_active = lock(&self.table).len() as u64;
        let interfaces: Vec<Value> = ifaces
            .iter()
            .map(|i| {
                serde_json::json!({
                    "device": i.device,
                    "receive_packets": i.rx.c[counter::PACKETS],
                    "receive_bytes": i.rx.c[counter::BYTES],
                    "transmit_packets": i.tx.c[counter::PACKETS],
                    "transmit_bytes": i.tx.c[counter::BYTES],
                    "speed_bits_per_second": i.speed_bps,
                })
            })
            .collect();
        serde_json::json!({
            "time": clock::rfc3339_ns(now),
            "seconds": span_s,
            "drains": w.drains,
            "max_flows_per_drain": w.max_flows_per_drain,
            "flows_kept_per_drain": recent::PER_DRAIN,
            "flows_active": flows_active,
            "flows": flows,
            "interfaces": interfaces,
        })
    }

    /// Current scan suspects, most ports first; then the application
    /// layer's, by signal.
    pub fn suspects(&self) -> Vec<Suspect> {
        let mut v = lock(&self.scan).suspects();
        v.extend(lock(&self.l7_metrics).suspects());
        v
    }

    /// Up to `want` flows matching `filter`, from slot `cursor` on, copied
    /// out of the table with their connection state, and the slot to go on
    /// from (`None`: the table's end). The table lock is taken for at most
    /// [`CHUNK_FLOWS`] flows and [`CHUNK_SLOTS`] slots at a time and is
    /// never held while anything is encoded.
    pub fn flows_chunk(&self, filter: &FlowFilter, mut cursor: u32, want: usize) -> FlowChunk {
        let mut flows = Vec::new();
        loop {
            let table = lock(&self.table);
            let room = want.saturating_sub(flows.len()).clamp(1, CHUNK_FLOWS);
            let page = table.page(cursor, room, CHUNK_SLOTS, filter);
            flows.extend(
                page.flows
                    .iter()
                    .map(|f| ((*f).clone(), table.conn_state(&f.key))),
            );
            let next = page.next;
            drop(table);
            match next {
                Some(n) if flows.len() < want => cursor = n,
                next => return FlowChunk { flows, next },
            }
        }
    }

    /// The interface name of every ifindex seen in this run.
    pub fn device_names(&self) -> HashMap<u32, String> {
        lock(&self.names).clone()
    }
}
