//! What one scrape shows: the daemon fills a [`Snapshot`] under its lock
//! and the exporter encodes it outside.

use flowd_common::IfaceCounters;

use crate::export::{
    aggregate::AggSnapshot, histogram::HistogramSnapshot, ipfix::IpfixStats, process::ProcessStats,
    tcp::TcpSnapshot,
};

/// One monitored interface as the exporter sees it.
#[derive(Debug, Clone)]
pub struct IfaceSnapshot {
    pub device: String,
    pub rx: IfaceCounters,
    pub tx: IfaceCounters,
    /// `Some("native" | "generic")` while XDP is attached (for an AF_XDP
    /// device: its `flowd_afxdp` program).
    pub xdp_mode: Option<&'static str>,
    pub tc_attached: bool,
    /// Selected for AF_XDP capture (`[af_xdp]`): its one program is the
    /// `af_xdp` hook; it has no in-kernel XDP or TC egress program.
    pub af_xdp: bool,
    /// Link speed in bits per second, when known.
    pub speed_bps: Option<u64>,
}

/// What one scrape shows; taken under the daemon's lock, encoded outside it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub ifaces: Vec<IfaceSnapshot>,
    pub flows_active: u64,
    pub flows_max: u64,
    pub flows_started: u64,
    /// (end reason, flows ended for it)
    pub flows_ended: Vec<(&'static str, u64)>,
    pub flow_map_capacity: u64,
    pub drains: u64,
    /// Drains started early because the flow map reached the fill threshold.
    pub drains_early: u64,
    /// Entries in the generation map being written, at the last check.
    pub flow_map_fill: u64,
    pub drained_entries: u64,
    pub last_drain_entries: u64,
    pub drain_errors: u64,
    /// Duration of each drain (flip, wait, read and delete), seconds.
    pub drain_seconds: HistogramSnapshot,
    pub groups: AggSnapshot,
    /// The exporting process (none: the `process_*` families are left out).
    pub process: Option<ProcessStats>,
    /// Sources flagged as scanning right now, and flagged since start.
    pub scan_suspects: u64,
    pub scan_flagged: u64,
    /// The IPFIX exporter's counters, when one is configured.
    pub ipfix: Option<IpfixStats>,
    /// The JSON-lines records sink's counters, when one is configured.
    pub records: Option<crate::export::records::RecordStats>,
    pub tcp: TcpSnapshot,
    /// TCP details of each of `groups.top`, when it is a TCP flow.
    pub top_tcp: Vec<Option<TopTcp>>,
    /// The HTTP server's connections.
    pub http: HttpSnapshot,
    /// Application-layer names by traffic, with the L7 path on.
    pub l7_names: Option<super::l7_top::NamesSnapshot>,
    /// The application layer's counts and signals, when the L7 selection is on.
    pub l7_metrics: Option<crate::export::l7stats::L7Snapshot>,
    /// AF_XDP capture, per device and RX queue (empty: none).
    pub afxdp: Vec<super::afxdp::AfXdpQueueSnapshot>,
    /// Kernel drop reasons, when the tracer runs.
    pub kernel_drops: Option<super::drops::KernelDrops>,
    /// The host's socket overflow and softnet counters, read at scrape
    /// (none: the families are left out).
    pub host: Option<crate::export::hoststats::HostStats>,
}

/// The HTTP server's connection counters (see [`crate::listen::ConnStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpSnapshot {
    pub open: u64,
    pub max: u64,
    pub rejected: u64,
    pub accept_errors: u64,
}

/// TCP details of a top flow, from the flow table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopTcp {
    /// Minimum and smoothed RTT of its connection, ns, when sampled.
    pub rtt: Option<(u64, u64)>,
    /// Segments and retransmitted segments in its current record.
    pub segments: u64,
    pub retransmitted: u64,
}
