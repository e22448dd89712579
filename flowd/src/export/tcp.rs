//! TCP health and connection outcomes by device, direction and peer group:
//! the congestion and security signals the alert rules stand on.
//!
//! Every label value comes from configuration (devices, peer groups) or a
//! fixed vocabulary (directions, conn_state, ECN codepoints), so these
//! families stay bounded whatever the traffic.

use std::collections::BTreeMap;

use flowd_common::{DIR_INGRESS, FlowKey, FlowStats, proto};

use super::{groups::PeerGroups, histogram::HistogramSnapshot};
use crate::flowtable::Ended;

/// RTT histogram buckets: 50 µs to 5 s.
pub const RTT_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// Counters of one (device, direction, peer group).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpCounts {
    pub segments: u64,
    pub retransmitted: u64,
    /// Segments with SYN and without ACK (connection attempts).
    pub syn: u64,
    /// Segments with SYN and ACK (answers to attempts).
    pub synack: u64,
    pub rst: u64,
    pub zero_window: u64,
}

/// ECN codepoints and DSCP of IP packets (all protocols) by device and direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpCounts {
    pub ect0: u64,
    pub ect1: u64,
    pub ce: u64,
}

/// Key of the per-group counters: device, direction (`receive`/`transmit`), peer group.
pub type GroupKey = (String, &'static str, String);

/// What the exporter shows.
#[derive(Debug, Clone, Default)]
pub struct TcpSnapshot {
    pub tcp: BTreeMap<GroupKey, TcpCounts>,
    pub ip: BTreeMap<(String, &'static str), IpCounts>,
    /// (device, direction, DSCP class) -> packets.
    pub dscp: BTreeMap<(String, &'static str, &'static str), u64>,
    /// (device, peer group, conn_state) -> connections ended.
    pub connections: BTreeMap<(String, String, &'static str), u64>,
    /// (device, peer group) -> RTT samples, seconds.
    pub rtt: BTreeMap<(String, String), HistogramSnapshot>,
    /// (device, peer group) -> RTT above the flow's own minimum, seconds.
    pub queueing: BTreeMap<(String, String), HistogramSnapshot>,
    pub rtt_samples: u64,
}

/// The signals, fed with drained deltas and ended connections.
#[derive(Debug)]
pub struct TcpSignals {
    peers: PeerGroups,
    snap: TcpSnapshot,
}

pub fn direction_label(key: &FlowKey) -> &'static str {
    proto::direction_label(key.direction)
}

impl TcpSignals {
    pub fn new(peers: PeerGroups) -> Self {
        Self {
            peers,
            snap: TcpSnapshot::default(),
        }
    }

    /// The remote end's peer group: the source of what is received, the
    /// destination of what is sent.
    fn peer(&self, key: &FlowKey) -> String {
        let remote = if key.direction == DIR_INGRESS {
            &key.src
        } else {
            &key.dst
        };
        self.peers.names()[self.peers.group(remote)].clone()
    }

    /// Adds one drained delta.
    pub fn absorb(&mut self, key: &FlowKey, d: &FlowStats, device: &str) {
        // The kernel keeps each flow's latest DSCP: the delta's packets go there.
        *self
            .snap
            .dscp
            .entry((
                device.to_owned(),
                direction_label(key),
                dscp_class(d.counts.dscp),
            ))
            .or_default() += d.counts.packets;
        if d.counts.ce + d.counts.ect0 + d.counts.ect1 > 0 {
            let ip = self
                .snap
                .ip
                .entry((device.to_owned(), direction_label(key)))
                .or_default();
            ip.ce += u64::from(d.counts.ce);
            ip.ect0 += u64::from(d.counts.ect0);
            ip.ect1 += u64::from(d.counts.ect1);
        }
        if key.proto != proto::ip::TCP {
            return;
        }
        let k = (device.to_owned(), direction_label(key), self.peer(key));
        let c = self.snap.tcp.entry(k).or_default();
        c.segments += d.counts.packets;
        // The kernel counts every SYN, and those with ACK separately.
        c.syn += u64::from(d.counts.syn.saturating_sub(d.counts.synack));
        c.synack += u64::from(d.counts.synack);
        c.rst += u64::from(d.counts.rst);
        c.retransmitted += u64::from(d.counts.retrans);
        c.zero_window += u64::from(d.counts.zero_window);
    }

    /// Counts an ended connection once (its originator's record).
    pub fn connection(&mut self, e: &Ended, device: &str) {
        let (Some(state), true) = (e.state, e.originator) else {
            return;
        };
        let peer = self.peer(&e.flow.key);
        *self
            .snap
            .connections
            .entry((device.to_owned(), peer, state))
            .or_default() += 1;
    }

    /// One RTT sample of a flow on `device`, in nanoseconds, and how far
    /// it is above the flow's minimum RTT (queueing delay), when known.
    pub fn rtt(&mut self, key: &FlowKey, device: &str, rtt_ns: u64, flow_min_ns: Option<u64>) {
        let peer = self.peer(key);
        let k = (device.to_owned(), peer);
        self.snap
            .rtt
            .entry(k.clone())
            .or_insert_with(|| HistogramSnapshot::with_bounds(&RTT_BUCKETS))
            .observe(rtt_ns as f64 / 1e9);
        if let Some(min) = flow_min_ns {
            self.snap
                .queueing
                .entry(k)
                .or_insert_with(|| HistogramSnapshot::with_bounds(&RTT_BUCKETS))
                .observe(rtt_ns.saturating_sub(min) as f64 / 1e9);
        }
        self.snap.rtt_samples += 1;
    }

    pub fn snapshot(&self) -> TcpSnapshot {
        self.snap.clone()
    }
}

/// The DSCP class name (RFC 4594 / RFC 2474 / RFC 5865 code points).
pub fn dscp_class(dscp: u8) -> &'static str {
    match dscp {
        0 => "cs0",
        8 => "cs1",
        16 => "cs2",
        24 => "cs3",
        32 => "cs4",
        40 => "cs5",
        48 => "cs6",
        56 => "cs7",
        10 => "af11",
        12 => "af12",
        14 => "af13",
        18 => "af21",
        20 => "af22",
        22 => "af23",
        26 => "af31",
        28 => "af32",
        30 => "af33",
        34 => "af41",
        36 => "af42",
        38 => "af43",
        44 => "va",
        46 => "ef",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dscp_classes() {
        assert_eq!(dscp_class(46), "ef");
        assert_eq!(dscp_class(0), "cs0");
        assert_eq!(dscp_class(34), "af41");
        assert_eq!(dscp_class(63), "other");
    }
}
