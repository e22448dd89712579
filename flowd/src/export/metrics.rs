//! Prometheus exposition, built at scrape time from a [`Snapshot`] through a
//! custom `prometheus-client` collector.
//!
//! Families (counters get `_total` from the client; `direction` is
//! `receive` or `transmit`):
//!
//! - Exact interface totals: `flowd_receive_packets_total`,
//!   `flowd_receive_bytes_total`, `flowd_transmit_packets_total`,
//!   `flowd_transmit_bytes_total` `{device}`.
//! - Where information can be lost: `flowd_parse_outcome_packets_total`
//!   `{device,direction,outcome}`, `flowd_overflow_packets_total`,
//!   `flowd_overflow_bytes_total`, `flowd_flow_insert_races_total`,
//!   `flowd_fragment_map_failures_total` `{device,direction}`,
//!   `flowd_flow_lost_packets_total` `{device,direction,reason}`.
//! - Traffic by bounded groups, cumulative counters of the packets and bytes
//!   that were counted in a flow (overflow and non-IP packets are in none):
//!   - `flowd_proto_packets_total`, `flowd_proto_bytes_total`
//!     `{device,direction,proto}`: `tcp`, `udp`, `icmp`, `icmpv6`, `sctp`,
//!     `gre`, `esp`, `igmp`, `other`;
//!   - `flowd_service_packets_total`, `flowd_service_bytes_total`
//!     `{device,direction,service}`: from the port map, the lower of the
//!     flow's two ports that is in it (`dns`, `http`, `https`, `ssh`, ...),
//!     else `other`;
//!   - `flowd_peer_packets_total`, `flowd_peer_bytes_total`
//!     `{device,direction,peer}`: the CIDR group (longest prefix) of the
//!     remote address, the source on receive and the destination on
//!     transmit (`private`, `loopback`, `link-local`, `multicast`,
//!     `benchmark`, ..., else `public`).
//!
//!   Each family sums to the flow traffic of its device and direction.
//!   A group the series budget folds moves into `other` for good.
//! - Top flows, gauges of the recent window (`flowd_top_flows_window_seconds`):
//!   `flowd_top_flow_window_bytes`, `flowd_top_flow_window_packets`
//!   `{device,direction,proto,src,dst,sport,dport}` for the K flows
//!   (`flowd_top_flows_max`) with the most bytes in the window, plus per
//!   device and direction one series whose flow labels are all `other`:
//!   everything else in the window. The series of a device and direction
//!   sum to its traffic in the window. A flow that enters the top appears
//!   with its bytes in the whole window; one that leaves it simply stops
//!   being exported (its bytes move to `other`): these are gauges, so no
//!   counter resets. Use them to find heavy flows, the group counters for
//!   rates. `flowd_top_window_flows` (of at most `flowd_top_window_flows_max`)
//!   are in the window; `flowd_top_window_overflow_deltas_total` counts
//!   deltas of flows a full window could not track (in `other` only).
//! - Scans: `flowd_scan_suspects`, `flowd_scan_suspects_flagged_total`.
//! - IPFIX export (when a collector is set): `flowd_ipfix_messages_total`,
//!   `flowd_ipfix_records_total`, `flowd_ipfix_records_dropped_total`,
//!   `flowd_ipfix_send_errors_total`.
//! - Flow table: `flowd_flows_active`, `flowd_flows_max`,
//!   `flowd_flows_started_total`, `flowd_flows_ended_total{reason}`.
//! - Self: `flowd_program_attached{device,hook,mode}`,
//!   `flowd_flow_map_capacity_entries`, `flowd_flow_map_fill_entries`,
//!   `flowd_drains_total`, `flowd_drains_early_total`,
//!   `flowd_drained_entries_total`, `flowd_last_drain_entries`,
//!   `flowd_drain_duration_seconds` (histogram), `flowd_drain_errors_total`,
//!   `flowd_build_info{version,abi}`, the standard `process_*` metrics.
//! - Series budget (see [`super::budget`]): `flowd_series_budget`,
//!   `flowd_scrape_series` (samples in this scrape, itself included),
//!   `flowd_scrape_series_folded{reason}` (series folded into `other` in
//!   this scrape: `top_k` for window flows beyond K, `budget` for groups
//!   and top flows the budget cut) and `flowd_series_folded_total{reason}`
//!   (the same, summed over scrapes).

use std::fmt::Write as _;

use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, text,
    },
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use flowd_common::{DIR_EGRESS, DIR_INGRESS, IfaceCounters, counter};

use super::{
    aggregate::{AggSnapshot, Dim, FoldReason},
    budget::{self, Plan},
    groups::{OTHER, proto_label},
    ipfix::IpfixStats,
    process::ProcessStats,
    tcp::TcpSnapshot,
};
use crate::record::addr;

/// One monitored interface as the exporter sees it.
#[derive(Debug, Clone)]
pub struct IfaceSnapshot {
    pub device: String,
    pub rx: IfaceCounters,
    pub tx: IfaceCounters,
    /// `Some("native" | "generic")` while XDP is attached.
    pub xdp_mode: Option<&'static str>,
    pub tc_attached: bool,
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
    pub tcp: TcpSnapshot,
    /// TCP details of each of `groups.top`, when it is a TCP flow.
    pub top_tcp: Vec<Option<TopTcp>>,
    /// The HTTP server's connections.
    pub http: HttpSnapshot,
}

/// The HTTP server's connection counters (see [`crate::listen::ConnStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpSnapshot {
    pub open: u64,
    pub max: u64,
    pub rejected: u64,
    pub accept_errors: u64,
}

/// The HTTP server's connection families.
fn http_families(s: &Snapshot, out: &mut Vec<Family>) {
    let h = &s.http;
    out.push(Family::gauge(
        "flowd_http_connections",
        "HTTP connections open now.",
        one(h.open),
    ));
    out.push(Family::gauge(
        "flowd_http_connections_max",
        "HTTP connections allowed at once (web.max_connections); more are closed when accepted.",
        one(h.max),
    ));
    out.push(Family::counter(
        "flowd_http_connections_rejected",
        "HTTP connections closed at once because web.max_connections were open.",
        one(h.rejected),
    ));
    out.push(Family::counter(
        "flowd_http_accept_errors",
        "Failed accepts of HTTP connections (e.g. out of file descriptors).",
        one(h.accept_errors),
    ));
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

/// RTT histogram buckets: 50 µs to 5 s.
pub const RTT_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// The congestion and security families (see [`super::tcp`]).
fn tcp_families(s: &Snapshot, out: &mut Vec<Family>) {
    out.push(Family::gauge(
        "flowd_interface_speed_bytes_per_second",
        "Link speed (sysfs, or [interface_speeds] in the config), in bytes per second: utilization is rate(flowd_receive_bytes_total) over this.",
        s.ifaces
            .iter()
            .filter_map(|i| i.speed_bps.map(|v| (labels([("device", &i.device)]), Num::U(v / 8))))
            .collect(),
    ));
    let t = &s.tcp;
    let per = |f: &dyn Fn(&super::tcp::TcpCounts) -> u64| -> Vec<(Labels, Num)> {
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
            (|c| c.segments) as fn(&super::tcp::TcpCounts) -> u64,
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

/// A histogram as collected: cumulative bucket counts by upper bound.
#[derive(Debug, Clone, Default)]
pub struct HistogramSnapshot {
    pub sum: f64,
    pub count: u64,
    /// (upper bound, cumulative count), ascending; +Inf is implied by `count`.
    pub buckets: Vec<(f64, u64)>,
}

impl HistogramSnapshot {
    /// An empty histogram with these upper bounds.
    pub fn with_bounds(bounds: &[f64]) -> Self {
        Self {
            sum: 0.0,
            count: 0,
            buckets: bounds.iter().map(|b| (*b, 0)).collect(),
        }
    }

    pub fn observe(&mut self, v: f64) {
        self.sum += v;
        self.count += 1;
        for (bound, n) in &mut self.buckets {
            if v <= *bound {
                *n += 1;
            }
        }
    }
}

/// A label value, escaped as the exposition formats require when written.
#[derive(Debug, Clone)]
struct Value(String);

impl EncodeLabelValue for Value {
    fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => e.write_str("\\\\")?,
                '"' => e.write_str("\\\"")?,
                '\n' => e.write_str("\\n")?,
                c => e.write_char(c)?,
            }
        }
        Ok(())
    }
}

type Labels = Vec<(&'static str, Value)>;

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs
        .into_iter()
        .map(|(k, v)| (k, Value(v.to_owned())))
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Num {
    U(u64),
    F(f64),
}

#[derive(Debug)]
enum Body {
    Counter(Vec<(Labels, Num)>),
    Gauge(Vec<(Labels, Num)>),
    Histogram(Vec<(Labels, HistogramSnapshot)>),
    Info(Labels),
}

/// One metric family, planned before anything is written so the scrape
/// can count its series.
#[derive(Debug)]
struct Family {
    /// Without `_total` for counters and `_info` for info: the client adds them.
    name: &'static str,
    help: &'static str,
    body: Body,
}

impl Family {
    fn counter(name: &'static str, help: &'static str, samples: Vec<(Labels, Num)>) -> Self {
        Self {
            name,
            help,
            body: Body::Counter(samples),
        }
    }

    fn gauge(name: &'static str, help: &'static str, samples: Vec<(Labels, Num)>) -> Self {
        Self {
            name,
            help,
            body: Body::Gauge(samples),
        }
    }

    /// Samples (lines) this family writes.
    fn series(&self) -> usize {
        match &self.body {
            Body::Counter(s) | Body::Gauge(s) => s.len(),
            // Finite buckets, +Inf, _sum and _count.
            Body::Histogram(hs) => hs.iter().map(|(_, h)| h.buckets.len() + 3).sum(),
            Body::Info(_) => 1,
        }
    }

    fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        match &self.body {
            Body::Counter(samples) => {
                let mut m =
                    enc.encode_descriptor(self.name, self.help, None, MetricType::Counter)?;
                let put = |m: MetricEncoder<'_>, v: &Num| match v {
                    Num::U(v) => ConstCounter::new(*v).encode(m),
                    Num::F(v) => ConstCounter::new(*v).encode(m),
                };
                match samples.as_slice() {
                    // No `{}` after an unlabelled sample.
                    [(l, v)] if l.is_empty() => put(m, v)?,
                    _ => {
                        for (l, v) in samples {
                            put(m.encode_family(l)?, v)?;
                        }
                    }
                }
            }
            Body::Gauge(samples) => {
                let mut m = enc.encode_descriptor(self.name, self.help, None, MetricType::Gauge)?;
                let put = |m: MetricEncoder<'_>, v: &Num| match v {
                    Num::U(v) => ConstGauge::new(*v).encode(m),
                    Num::F(v) => ConstGauge::new(*v).encode(m),
                };
                match samples.as_slice() {
                    [(l, v)] if l.is_empty() => put(m, v)?,
                    _ => {
                        for (l, v) in samples {
                            put(m.encode_family(l)?, v)?;
                        }
                    }
                }
            }
            Body::Histogram(hs) => {
                let mut m =
                    enc.encode_descriptor(self.name, self.help, None, MetricType::Histogram)?;
                for (l, h) in hs {
                    // The client wants per-bucket counts and accumulates them
                    // itself; f64::MAX is how it spells the +Inf bucket.
                    let mut prev = 0;
                    let mut buckets: Vec<(f64, u64)> = h
                        .buckets
                        .iter()
                        .map(|(b, cum)| {
                            let n = cum.saturating_sub(prev);
                            prev = *cum;
                            (*b, n)
                        })
                        .collect();
                    buckets.push((f64::MAX, h.count.saturating_sub(prev)));
                    if l.is_empty() {
                        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                            h.sum, h.count, &buckets, None,
                        )?;
                    } else {
                        m.encode_family(l)?
                            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                                h.sum, h.count, &buckets, None,
                            )?;
                    }
                }
            }
            Body::Info(l) => {
                let mut m = enc.encode_descriptor(self.name, self.help, None, MetricType::Info)?;
                m.encode_info(l)?;
            }
        }
        Ok(())
    }
}

fn one(v: u64) -> Vec<(Labels, Num)> {
    vec![(Vec::new(), Num::U(v))]
}

fn dir_label(direction: u8) -> &'static str {
    flowd_common::proto::direction_label(direction)
}

/// The families whose series the configuration makes, not the traffic.
fn fixed_families(s: &Snapshot) -> Vec<Family> {
    let mut out = Vec::new();
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

    let mut attached = Vec::new();
    for i in &s.ifaces {
        attached.push((
            labels([
                ("device", &i.device),
                ("hook", "xdp"),
                ("mode", i.xdp_mode.unwrap_or("none")),
            ]),
            Num::U(u64::from(i.xdp_mode.is_some())),
        ));
        attached.push((
            labels([("device", &i.device), ("hook", "tc_egress"), ("mode", "tc")]),
            Num::U(u64::from(i.tc_attached)),
        ));
    }
    out.push(Family::gauge(
        "flowd_program_attached",
        "1 when the program is attached to the device and hook.",
        attached,
    ));
    out.push(Family::gauge(
        "flowd_flows_active",
        "Flows in the flow table.",
        one(s.flows_active),
    ));
    out.push(Family::gauge(
        "flowd_scan_suspects",
        "Sources whose failed connection attempts crossed the scan thresholds (see /api/v1/suspects).",
        one(s.scan_suspects),
    ));
    out.push(Family::counter(
        "flowd_scan_suspects_flagged",
        "Sources flagged as scanning since start.",
        one(s.scan_flagged),
    ));
    if let Some(x) = &s.ipfix {
        for (name, help, v) in [
            (
                "flowd_ipfix_messages",
                "IPFIX messages sent to the collector.",
                x.messages,
            ),
            (
                "flowd_ipfix_records",
                "IPFIX data records sent (one per ended flow record).",
                x.records,
            ),
            (
                "flowd_ipfix_records_dropped",
                "IPFIX data records in messages the socket refused.",
                x.records_dropped,
            ),
            (
                "flowd_ipfix_send_errors",
                "IPFIX messages the socket refused (collector down, no route).",
                x.send_errors,
            ),
        ] {
            out.push(Family::counter(name, help, one(v)));
        }
    }
    http_families(s, &mut out);
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
    out.push(Family::gauge(
        "flowd_flow_map_capacity_entries",
        "Capacity of each flow generation map.",
        one(s.flow_map_capacity),
    ));
    out.push(Family::counter(
        "flowd_drains",
        "Drains of the flow maps.",
        one(s.drains),
    ));
    out.push(Family::counter(
        "flowd_drains_early",
        "Drains started before the interval because the flow map being written reached drain_at_fill_percent of its capacity (a burst of new flows).",
        one(s.drains_early),
    ));
    out.push(Family::gauge(
        "flowd_flow_map_fill_entries",
        "Flows in the kernel flow map being written (checked every 20 ms); at flowd_flow_map_capacity_entries new flows overflow.",
        one(s.flow_map_fill),
    ));
    out.push(Family::counter(
        "flowd_drained_entries",
        "Flow map entries read and deleted by drains.",
        one(s.drained_entries),
    ));
    out.push(Family::gauge(
        "flowd_last_drain_entries",
        "Entries the last drain read (fill of one generation).",
        one(s.last_drain_entries),
    ));
    out.push(Family {
        name: "flowd_drain_duration_seconds",
        help: "Time one drain took: flip, wait for programs, read and delete.",
        body: Body::Histogram(vec![(Vec::new(), s.drain_seconds.clone())]),
    });
    tcp_families(s, &mut out);
    out.push(Family::counter(
        "flowd_drain_errors",
        "Drains that failed.",
        one(s.drain_errors),
    ));

    let g = &s.groups;
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

    if let Some(p) = &s.process {
        out.push(Family::counter(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            vec![(Vec::new(), Num::F(p.cpu_seconds))],
        ));
        out.push(Family::gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            one(p.resident_memory_bytes),
        ));
        out.push(Family::gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            one(p.virtual_memory_bytes),
        ));
        out.push(Family::gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            vec![(Vec::new(), Num::F(p.start_time_seconds))],
        ));
        out.push(Family::gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            one(p.open_fds),
        ));
        out.push(Family::gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            one(p.max_fds),
        ));
    }
    out.push(Family {
        name: "flowd_build",
        help: "flowd build information.",
        body: Body::Info(labels([
            ("version", env!("CARGO_PKG_VERSION")),
            ("abi", &flowd_common::ABI_VERSION.to_string()),
        ])),
    });
    out
}

/// Series of [`self_families`], known before their values are.
const SELF_SERIES: usize = 2 + 2 * FoldReason::ALL.len();

fn self_families(budget: usize, series: usize, folded: [u64; 2], totals: [u64; 2]) -> Vec<Family> {
    let by_reason = |v: [u64; 2]| {
        FoldReason::ALL
            .iter()
            .map(|r| (labels([("reason", r.as_str())]), Num::U(v[*r as usize])))
            .collect()
    };
    vec![
        Family::gauge(
            "flowd_series_budget",
            "Most series one scrape may have; beyond it the lowest-volume groups and top flows fold into other.",
            one(budget as u64),
        ),
        Family::gauge(
            "flowd_scrape_series",
            "Samples in this scrape, this one included.",
            one(series as u64),
        ),
        Family::gauge(
            "flowd_scrape_series_folded",
            "Series folded into other in this scrape: top_k for window flows beyond K, budget for groups and top flows the series budget cut.",
            by_reason(folded),
        ),
        Family::counter(
            "flowd_series_folded",
            "Series folded into other, summed over scrapes.",
            by_reason(totals),
        ),
    ]
}

/// The group families: cumulative packets and bytes by proto, service and peer.
fn group_families(g: &AggSnapshot, plan: &Plan) -> Vec<Family> {
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
        let mut push = |side: usize, group: &str, c: super::aggregate::Counts| {
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

/// The top-flow families: window gauges of the K heaviest flows and `other`.
fn top_families(g: &AggSnapshot, plan: &Plan) -> Vec<Family> {
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
fn top_tcp_families(
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

fn series(families: &[Family]) -> usize {
    families.iter().map(Family::series).sum()
}

/// Every family of one scrape, within the series budget. Records the
/// scrape's folds in the aggregates' shared fold state.
fn families(s: &Snapshot) -> Vec<Family> {
    let g = &s.groups;
    let mut out = fixed_families(s);
    let plan = budget::plan(g, series(&out) + SELF_SERIES);
    g.folds.request(&plan.folded_groups);
    let totals = g.folds.add_folded(plan.folded);
    out.extend(group_families(g, &plan));
    out.extend(top_families(g, &plan));
    let room = g.series_budget.saturating_sub(series(&out) + SELF_SERIES);
    out.extend(top_tcp_families(g, &plan, &s.top_tcp, room));
    let n = series(&out) + SELF_SERIES;
    out.extend(self_families(g.series_budget, n, plan.folded, totals));
    out
}

#[derive(Debug)]
struct Exposition(Vec<Family>);

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            f.encode(&mut enc)?;
        }
        Ok(())
    }
}

/// Exposition formats `/metrics` serves, chosen by the `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text004,
}

impl Format {
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Text004,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text004 => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Encodes a snapshot in the requested format.
pub fn encode(snapshot: Snapshot, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition(families(&snapshot))));
    let mut out = String::new();
    text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    match format {
        Format::OpenMetrics => out,
        Format::Text004 => openmetrics_to_text004(&out),
    }
}

/// Prometheus text format 0.0.4 from OpenMetrics text: counters are named
/// with their `_total` suffix in HELP/TYPE, info becomes a gauge, and there
/// is no `# EOF` or `# UNIT`.
fn openmetrics_to_text004(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut kinds = std::collections::HashMap::new();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            kinds.insert(name.to_owned(), kind.to_owned());
        }
    }
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            match kinds.get(name).map(String::as_str) {
                Some("counter") => {
                    out.push_str(&format!("{prefix}{name}_total {tail}\n"));
                }
                Some("info") => {
                    let tail = if prefix == "# TYPE " { "gauge" } else { tail };
                    out.push_str(&format!("{prefix}{name}_info {tail}\n"));
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
