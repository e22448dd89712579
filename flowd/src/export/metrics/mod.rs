//! Prometheus exposition, built at scrape time from a [`Snapshot`] through a
//! custom `prometheus-client` collector.
//!
//! Each source builds its own families: [`traffic`] (interface totals,
//! where packets are lost, traffic by group), [`flows`] (the flow table,
//! the top-flows window), [`tcp_signals`], [`scans`], [`l7`] and [`health`] (the
//! programs, drains, IPFIX, the process, the series budget). [`family`] is
//! the plan of one family and its encoding; this module orders the
//! families, applies the series budget and writes the two text formats.
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
//! - AF_XDP capture (only with AF_XDP interfaces, see [`afxdp`]):
//!   `flowd_af_xdp_frames_total`, `flowd_af_xdp_bytes_total`,
//!   `flowd_af_xdp_no_socket_frames_total`, `flowd_af_xdp_parsed_frames_total`,
//!   `flowd_af_xdp_parse_failed_frames_total` `{device,queue}`,
//!   `flowd_af_xdp_socket_dropped_frames_total{device,queue,reason}`,
//!   `flowd_af_xdp_fill_ring_empty_total`, `flowd_af_xdp_mode{device,queue,mode}`.
//! - Application-layer names by traffic (with the L7 path on, see
//!   [`l7_top`]): `flowd_l7_name_bytes_total{kind,name}`, the K DNS query
//!   names, HTTP hosts and TLS SNIs with the most bytes and `other`.
//! - Host socket overflows and softnet, from flowd's network namespace
//!   (see [`host`]): `flowd_udp_rcvbuf_errors_total{ip_version}`,
//!   `flowd_tcp_listen_overflows_total`, `flowd_tcp_listen_drops_total`,
//!   `flowd_tcp_backlog_drops_total`, `flowd_softnet_dropped_total{cpu}`,
//!   `flowd_softnet_time_squeeze_total{cpu}`,
//!   `flowd_host_stats_read_errors_total{file}`.
//! - Scans: `flowd_scan_suspects`, `flowd_scan_suspects_flagged_total`.
//! - The application layer, when the L7 selection is on ([`l7`]):
//!   `flowd_l7_events_total{device,kind}`,
//!   `flowd_dns_responses_total{device,rcode}`,
//!   `flowd_http_responses_total{device,class}`,
//!   `flowd_tls_handshakes_total{device,version}`,
//!   `flowd_dns_latency_seconds`, `flowd_http_latency_seconds`
//!   `{device,peer}`; the signals `flowd_l7_signals_total{signal}`,
//!   `flowd_l7_suspects{signal}`, `flowd_l7_suspects_flagged_total{signal}`,
//!   `flowd_l7_signal_state_dropped_total{table}`; the engine's
//!   `flowd_l7_packets_total`, `flowd_l7_unrecognised_packets_total`,
//!   `flowd_l7_parse_errors_total{kind}`, `flowd_l7_truncated_total{kind}`,
//!   `flowd_l7_retransmitted_segments_total`,
//!   `flowd_l7_reassembly_dropped_total{reason}`,
//!   `flowd_l7_unmatched_responses_total{kind}`,
//!   `flowd_l7_unanswered_requests_total{reason}`,
//!   `flowd_l7_pending_requests`, `flowd_l7_reassembly_buffers`.
//! - IPFIX export (when a collector is set): `flowd_ipfix_messages_total`,
//!   `flowd_ipfix_records_total`, `flowd_ipfix_records_dropped_total`,
//!   `flowd_ipfix_send_errors_total`.
//! - JSON-lines records (when configured): `flowd_records_written_total{sink}`,
//!   `flowd_records_dropped_total{sink,reason}` (see [`super::records`]).
//! - HTTP: `flowd_http_connections`, `flowd_http_connections_max`,
//!   `flowd_http_connections_rejected_total`, `flowd_http_accept_errors_total`.
//! - Flow table: `flowd_flows_active`, `flowd_flows_max`,
//!   `flowd_flows_started_total`, `flowd_flows_ended_total{reason}`.
//! - Self: `flowd_program_attached{device,hook,mode}` (hook `xdp` and
//!   `tc_egress`, or `af_xdp` alone for an AF_XDP device),
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

mod afxdp;
mod drops;
mod family;
mod flows;
mod health;
mod host;
mod l7;
pub mod l7_top;
mod scans;
mod snapshot;
mod tcp_signals;
mod traffic;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, text},
    registry::Registry,
};

pub use self::{
    afxdp::AfXdpQueueSnapshot,
    drops::{KernelDropSnapshot, KernelDrops},
    snapshot::{HttpSnapshot, IfaceSnapshot, Snapshot, TopTcp},
};
use self::{
    family::{Family, series},
    health::SELF_SERIES,
};
use super::budget;
pub use super::histogram::HistogramSnapshot;

/// The families whose series the configuration makes, not the traffic, in
/// the order the exposition has always had (sources interleave).
fn fixed_families(s: &Snapshot) -> Vec<Family> {
    let mut out = Vec::new();
    traffic::interfaces(s, &mut out);
    health::attached(s, &mut out);
    afxdp::families(s, &mut out);
    drops::families(s, &mut out);
    host::families(s, &mut out);
    flows::active(s, &mut out);
    scans::families(s, &mut out);
    health::ipfix(s, &mut out);
    health::http(s, &mut out);
    health::records(s, &mut out);
    flows::table(s, &mut out);
    health::drains(s, &mut out);
    tcp_signals::families(s, &mut out);
    health::drain_errors(s, &mut out);
    flows::window(&s.groups, &mut out);
    l7::families(s, &mut out);
    health::process(s, &mut out);
    health::build_info(&mut out);
    out
}

/// Every family of one scrape, within the series budget. Records the
/// scrape's folds in the aggregates' shared fold state.
fn families(s: &Snapshot) -> Vec<Family> {
    let g = &s.groups;
    let mut out = fixed_families(s);
    let plan = budget::plan(g, series(&out) + SELF_SERIES);
    g.folds.request(&plan.folded_groups);
    let totals = g.folds.add_folded(plan.folded);
    out.extend(traffic::group_families(g, &plan));
    out.extend(flows::top_families(g, &plan));
    let room = g.series_budget.saturating_sub(series(&out) + SELF_SERIES);
    out.extend(flows::top_tcp_families(g, &plan, &s.top_tcp, room));
    if let Some(names) = &s.l7_names {
        let room = g.series_budget.saturating_sub(series(&out) + SELF_SERIES);
        out.extend(l7_top::families(names, room));
    }
    let n = series(&out) + SELF_SERIES;
    out.extend(health::self_families(
        g.series_budget,
        n,
        plan.folded,
        totals,
    ));
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
