//! flowd's own health: programs attached, the drains, the IPFIX exporter,
//! the process, the build, and the series budget of each scrape.

use super::{
    Snapshot,
    family::{Body, Family, Num, Value, labels, one},
};
use crate::export::aggregate::FoldReason;

/// Whether each program is attached, per device and hook. An AF_XDP
/// device has one hook, `af_xdp` (its redirecting program), so the
/// in-kernel hooks it does not use never read as detached.
pub(super) fn attached(s: &Snapshot, out: &mut Vec<Family>) {
    let mut attached = Vec::new();
    for i in &s.ifaces {
        if i.af_xdp {
            attached.push((
                labels([
                    ("device", &i.device),
                    ("hook", "af_xdp"),
                    ("mode", i.xdp_mode.unwrap_or("none")),
                ]),
                Num::U(u64::from(i.xdp_mode.is_some())),
            ));
            continue;
        }
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
}

/// The IPFIX exporter's counters, when one is configured.
pub(super) fn ipfix(s: &Snapshot, out: &mut Vec<Family>) {
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
}

/// The HTTP server's connections.
pub(super) fn http(s: &Snapshot, out: &mut Vec<Family>) {
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

/// The JSON-lines records sink, when one is configured.
pub(super) fn records(s: &Snapshot, out: &mut Vec<Family>) {
    for (name, help, samples) in s.records.iter().flat_map(|r| r.families()) {
        let samples = samples.into_iter().map(|(l, v)| {
            let l = l.into_iter().map(|(k, v)| (k, Value(v))).collect();
            (l, Num::U(v))
        });
        out.push(Family::counter(name, help, samples.collect()));
    }
}

/// The flow maps and their drains.
pub(super) fn drains(s: &Snapshot, out: &mut Vec<Family>) {
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
}

pub(super) fn drain_errors(s: &Snapshot, out: &mut Vec<Family>) {
    out.push(Family::counter(
        "flowd_drain_errors",
        "Drains that failed.",
        one(s.drain_errors),
    ));
}

/// The standard `process_*` families, when the snapshot has them.
pub(super) fn process(s: &Snapshot, out: &mut Vec<Family>) {
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
}

pub(super) fn build_info(out: &mut Vec<Family>) {
    out.push(Family {
        name: "flowd_build",
        help: "flowd build information.",
        body: Body::Info(labels([
            ("version", env!("CARGO_PKG_VERSION")),
            ("abi", &flowd_common::ABI_VERSION.to_string()),
        ])),
    });
}

/// Series of [`self_families`], known before their values are.
pub(super) const SELF_SERIES: usize = 2 + 2 * FoldReason::ALL.len();

pub(super) fn self_families(
    budget: usize,
    series: usize,
    folded: [u64; 2],
    totals: [u64; 2],
) -> Vec<Family> {
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
