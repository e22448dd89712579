//! The application layer's Prometheus counts (issue 12): DNS responses by
//! rcode, HTTP responses by status class, TLS handshakes by negotiated
//! version, events by kind, and DNS and HTTP latency histograms per device
//! and peer group; fed with every drain's [`L7Event`]s, with the security
//! signals ([`super::l7signals`]) beside them.
//!
//! Every label value is a device, a configured peer group or a closed set
//! (rcodes are 4 bits, status classes and versions are named or `other`),
//! so these families stay bounded whatever the traffic.

use std::collections::{BTreeMap, HashMap};

use flowd_common::{DIR_INGRESS, FlowKey};

use super::{
    groups::PeerGroups,
    histogram::HistogramSnapshot,
    l7signals::{L7Signals, SignalSnapshot},
};
use crate::{
    l7::{L7Event, L7Stats, event::Detail},
    scan::Suspect,
};

/// Latency buckets, seconds: 100 µs (a resolver on the LAN) to 10 s (a
/// slow web application).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A DNS rcode as a label value: its RFC 1035/2136 name, else its number
/// (the header field is 4 bits: at most 16 values).
pub fn rcode_label(rcode: u8) -> String {
    match rcode {
        0 => "noerror".into(),
        1 => "formerr".into(),
        2 => "servfail".into(),
        3 => "nxdomain".into(),
        4 => "notimp".into(),
        5 => "refused".into(),
        6 => "yxdomain".into(),
        7 => "yxrrset".into(),
        8 => "nxrrset".into(),
        9 => "notauth".into(),
        10 => "notzone".into(),
        n => n.to_string(),
    }
}

/// An HTTP status as its class, `other` outside 100-599.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// A negotiated TLS version as a label value; `none` when no ServerHello
/// came (the handshake did not get that far).
pub fn tls_version_label(version: Option<u16>) -> &'static str {
    match version {
        None => "none",
        Some(0x0300) => "ssl3",
        Some(0x0301) => "1.0",
        Some(0x0302) => "1.1",
        Some(0x0303) => "1.2",
        Some(0x0304) => "1.3",
        Some(_) => "other",
    }
}

/// (device, peer group) of the latency histograms.
pub type PeerKey = (String, String);

/// What the exporter shows of the application layer.
#[derive(Debug, Clone, Default)]
pub struct L7Snapshot {
    /// (device, kind) -> events.
    pub events: BTreeMap<(String, &'static str), u64>,
    /// (device, rcode label) -> DNS responses.
    pub dns_responses: BTreeMap<(String, String), u64>,
    pub dns_latency: BTreeMap<PeerKey, HistogramSnapshot>,
    /// (device, status class) -> HTTP responses.
    pub http_responses: BTreeMap<(String, &'static str), u64>,
    pub http_latency: BTreeMap<PeerKey, HistogramSnapshot>,
    /// (device, negotiated version) -> TLS handshakes (ClientHellos).
    pub tls_handshakes: BTreeMap<(String, &'static str), u64>,
    pub signals: SignalSnapshot,
    /// The engine's own counters, and what it holds now.
    pub engine: L7Stats,
    pub pending: u64,
    pub reassembling: u64,
}

/// The aggregator the drain feeds.
#[derive(Debug)]
pub struct L7Metrics {
    peers: PeerGroups,
    snap: L7Snapshot,
    signals: L7Signals,
}

impl L7Metrics {
    pub fn new(peers: PeerGroups, signals: L7Signals) -> Self {
        Self {
            peers,
            snap: L7Snapshot::default(),
            signals,
        }
    }

    /// The remote end's peer group: the request's source when the request
    /// came in (this host serves), its destination when it went out.
    fn peer(&self, key: &FlowKey, direction: u8) -> String {
        let remote = if direction == DIR_INGRESS {
            &key.src
        } else {
            &key.dst
        };
        self.peers.names()[self.peers.group(remote)].clone()
    }

    /// Counts one drain's events; `names` names the devices by ifindex,
    /// `now_ns` (wall clock) moves the signals' window.
    pub fn observe(&mut self, events: &[L7Event], names: &HashMap<u32, String>, now_ns: u64) {
        for e in events {
            let device = names
                .get(&e.key.ifindex)
                .cloned()
                .unwrap_or_else(|| format!("if{}", e.key.ifindex));
            *self
                .snap
                .events
                .entry((device.clone(), e.kind().as_str()))
                .or_default() += 1;
            let latency = |m: &mut BTreeMap<PeerKey, HistogramSnapshot>, peer: String| {
                if let Some(ns) = e.latency_ns {
                    m.entry((device.clone(), peer))
                        .or_insert_with(|| HistogramSnapshot::with_bounds(&LATENCY_BUCKETS))
                        .observe(ns as f64 / 1e9);
                }
            };
            match &e.detail {
                Detail::Dns(d) => {
                    if let Some(rc) = d.rcode {
                        *self
                            .snap
                            .dns_responses
                            .entry((device.clone(), rcode_label(rc)))
                            .or_default() += 1;
                        let peer = self.peer(&e.key, e.direction);
                        latency(&mut self.snap.dns_latency, peer);
                    }
                }
                Detail::Http(h) => {
                    if let Some(st) = h.status {
                        *self
                            .snap
                            .http_responses
                            .entry((device.clone(), status_class(st)))
                            .or_default() += 1;
                        let peer = self.peer(&e.key, e.direction);
                        latency(&mut self.snap.http_latency, peer);
                    }
                }
                Detail::Tls(t) => {
                    *self
                        .snap
                        .tls_handshakes
                        .entry((device.clone(), tls_version_label(t.version)))
                        .or_default() += 1;
                }
            }
        }
        self.signals.observe(events, now_ns);
    }

    /// The counts, with the engine's counters and occupancy.
    pub fn snapshot(&self, engine: &L7Stats, pending: usize, reassembling: usize) -> L7Snapshot {
        let mut s = self.snap.clone();
        s.signals = self.signals.snapshot();
        s.engine = *engine;
        s.pending = pending as u64;
        s.reassembling = reassembling as u64;
        s
    }

    /// The application-layer suspects now.
    pub fn suspects(&self) -> Vec<Suspect> {
        self.signals.suspects()
    }
}

#[cfg(test)]
#[path = "l7stats_tests.rs"]
mod tests;
