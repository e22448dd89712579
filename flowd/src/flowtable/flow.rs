//! One flow record and the table's settings: what a flow holds, why a
//! record ends, the timeouts and bounds, the table's lifetime counters.

use flowd_common::{
    FlowCounts, FlowKey, FlowStats,
    proto::{ip, tcp},
};

use super::FlowL7;
use crate::{clock::TimeBase, connstate::Side};

/// One unidirectional flow, cumulative since it was first seen.
///
/// Per-packet counts other than `packets` are `u32`: the table ends the
/// record (reason `active`) and starts a new one before a count would
/// overflow, so every count stays exact. This keeps the flow at 144 bytes
/// (136 plus the pointer to its application-layer names, see [`FlowL7`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flow {
    pub key: FlowKey,
    /// The kernel's counters, summed over the record (`seq_valid` unused).
    pub counts: FlowCounts,
    /// Unix time, nanoseconds.
    pub first_ns: u64,
    pub last_ns: u64,
    /// RTT seen on this flow (samples closed by its packets), ns.
    pub rtt_min_ns: u64,
    /// Smoothed RTT (RFC 6298 weights), ns.
    pub rtt_srtt_ns: u64,
    /// Saturates at `u32::MAX` (more samples than that leave the RTT as is).
    pub rtt_samples: u32,
    /// Application-layer names of its connection; `None` for most flows.
    pub l7: Option<Box<FlowL7>>,
}

const _: () = assert!(size_of::<Flow>() == 144);

impl Flow {
    pub(super) fn new(key: FlowKey) -> Self {
        Self {
            key,
            first_ns: u64::MAX,
            ..Self::default()
        }
    }

    /// Adds one RTT sample.
    pub fn rtt(&mut self, ns: u64) {
        if self.rtt_samples == u32::MAX {
            return;
        }
        self.rtt_min_ns = if self.rtt_samples == 0 {
            ns
        } else {
            self.rtt_min_ns.min(ns)
        };
        self.rtt_srtt_ns = if self.rtt_samples == 0 {
            ns
        } else {
            (self.rtt_srtt_ns * 7 + ns) / 8
        };
        self.rtt_samples += 1;
    }

    /// Starts a new record for a flow that goes on (active timeout); the
    /// RTT history and the connection's names carry over.
    pub(super) fn restart(&mut self, now_ns: u64) {
        *self = Self {
            first_ns: now_ns,
            last_ns: now_ns,
            rtt_min_ns: self.rtt_min_ns,
            rtt_srtt_ns: self.rtt_srtt_ns,
            l7: self.l7.take(),
            ..Self::new(self.key)
        };
    }

    /// Whether adding `d` would overflow one of the counts.
    pub(super) fn would_overflow(&self, d: &FlowStats) -> bool {
        self.counts.checked_add(&d.counts).is_none()
    }

    /// Adds one drained delta. False, and nothing added, when a count
    /// would overflow (the table checks `would_overflow` first).
    #[must_use]
    pub fn add(&mut self, d: &FlowStats, time: TimeBase) -> bool {
        let Some(mut counts) = self.counts.checked_add(&d.counts) else {
            return false;
        };
        // The kernel ORs flags without atomics; the counted ones are exact.
        for (n, flag) in [
            (d.counts.syn, tcp::SYN),
            (d.counts.fin, tcp::FIN),
            (d.counts.rst, tcp::RST),
        ] {
            if n > 0 {
                counts.tcp_flags |= flag;
            }
        }
        self.counts = counts;
        let first = time.to_unix_ns(d.first_seen_ns);
        // Last-seen comes from a coarser clock than first-seen in the kernel.
        let last = time.to_unix_ns(d.last_seen_ns).max(first);
        self.first_ns = self.first_ns.min(first);
        self.last_ns = self.last_ns.max(last);
        true
    }

    /// Its side of a TCP connection, for the connection state.
    pub(super) fn side(&self) -> Side {
        Side {
            packets: self.counts.packets,
            syn: u64::from(self.counts.syn),
            fin: u64::from(self.counts.fin),
            rst: u64::from(self.counts.rst),
        }
    }

    /// A TCP flow that sent FIN or RST: it may end after the close grace.
    pub(super) fn closing(&self) -> bool {
        self.key.proto == ip::TCP && (self.counts.fin > 0 || self.counts.rst > 0)
    }
}

/// Why a flow record ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndReason {
    /// No packet for the idle timeout.
    Idle,
    /// Active longer than the active timeout: the record ends, the flow
    /// goes on in a new record.
    Active,
    /// TCP closed (FIN both ways or an RST), after a short grace period.
    EndOfFlow,
    /// flowd shut down or the replay ended.
    Forced,
    /// The table was full: the flow idle the longest made room.
    Evicted,
}

impl EndReason {
    pub const ALL: [Self; 5] = [
        Self::Idle,
        Self::Active,
        Self::EndOfFlow,
        Self::Forced,
        Self::Evicted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Active => "active",
            Self::EndOfFlow => "end-of-flow",
            Self::Forced => "forced",
            Self::Evicted => "evicted",
        }
    }
}

/// A flow record that ended, with its connection state (TCP) and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub flow: Flow,
    pub state: Option<&'static str>,
    pub reason: EndReason,
    /// This record is the connection's originator side: count a
    /// connection once, at this record.
    pub originator: bool,
}

/// Timeouts and bounds of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableConfig {
    /// A flow with no packet for this long ends (`idle`).
    pub idle_timeout_ns: u64,
    /// A flow record older than this ends (`active`); the flow continues.
    pub active_timeout_ns: u64,
    /// A closed TCP connection ends this long after its last packet, so the
    /// final ACK still lands in it (`end-of-flow`).
    pub tcp_close_grace_ns: u64,
    /// At most this many flows; beyond it the longest-idle are `evicted`.
    pub max_flows: usize,
}

impl Default for TableConfig {
    /// idle 60 s, active 300 s, TCP close grace 10 s, 1,000,000 flows.
    fn default() -> Self {
        Self {
            idle_timeout_ns: 60 * SEC,
            active_timeout_ns: 300 * SEC,
            tcp_close_grace_ns: 10 * SEC,
            max_flows: 1_000_000,
        }
    }
}

pub(super) const SEC: u64 = 1_000_000_000;

/// Lifetime counters of the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    pub started: u64,
    /// Indexed like [`EndReason::ALL`].
    pub ended: [u64; 5],
}
