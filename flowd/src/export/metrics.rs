//! Prometheus exposition, built at scrape time from a [`Snapshot`] through a
//! custom `prometheus-client` collector.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, text},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use flowd_common::{IfaceCounters, counter};

/// One monitored interface as the exporter sees it.
#[derive(Debug, Clone)]
pub struct IfaceSnapshot {
    pub device: String,
    pub rx: IfaceCounters,
    pub tx: IfaceCounters,
    /// `Some("native" | "generic")` while XDP is attached.
    pub xdp_mode: Option<&'static str>,
    pub tc_attached: bool,
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
    pub drained_entries: u64,
    pub last_drain_entries: u64,
    pub drain_errors: u64,
    /// Duration of each drain (flip, wait, read and delete), seconds.
    pub drain_seconds: HistogramSnapshot,
    pub groups: crate::export::aggregate::AggSnapshot,
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

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
struct SnapshotCollector(Snapshot);

fn counter_family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge_family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn dev(d: &str) -> Labels {
    vec![("device", d.to_owned())]
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let per = |f: &dyn Fn(&IfaceSnapshot) -> u64| -> Vec<(Labels, u64)> {
            s.ifaces.iter().map(|i| (dev(&i.device), f(i))).collect()
        };
        counter_family(
            &mut enc,
            "flowd_receive_packets",
            "Packets received on the interface (exact, XDP ingress).",
            &per(&|i| i.rx.c[counter::PACKETS]),
        )?;
        counter_family(
            &mut enc,
            "flowd_receive_bytes",
            "Bytes received on the interface, frame length as on the wire without FCS.",
            &per(&|i| i.rx.c[counter::BYTES]),
        )?;
        counter_family(
            &mut enc,
            "flowd_transmit_packets",
            "Packets transmitted on the interface (exact, TC egress; GSO buffers count their segments).",
            &per(&|i| i.tx.c[counter::PACKETS]),
        )?;
        counter_family(
            &mut enc,
            "flowd_transmit_bytes",
            "Bytes transmitted on the interface, frame length as on the wire without FCS.",
            &per(&|i| i.tx.c[counter::BYTES]),
        )?;

        let mut outcomes = Vec::new();
        let mut overflow_packets = Vec::new();
        let mut overflow_bytes = Vec::new();
        let mut lost = Vec::new();
        let mut races = Vec::new();
        let mut frag_fail = Vec::new();
        for i in &s.ifaces {
            for (dir, c) in [("receive", &i.rx), ("transmit", &i.tx)] {
                let l = |extra: Option<(&'static str, &str)>| {
                    let mut v = vec![("device", i.device.clone()), ("direction", dir.to_owned())];
                    if let Some((k, val)) = extra {
                        v.push((k, val.to_owned()));
                    }
                    v
                };
                for o in counter::OUTCOMES {
                    outcomes.push((l(Some(("outcome", counter::NAMES[o]))), c.c[o]));
                }
                overflow_packets.push((l(None), c.c[counter::OVERFLOW_PACKETS]));
                overflow_bytes.push((l(None), c.c[counter::OVERFLOW_BYTES]));
                for r in [counter::LOSS_MAP_FULL, counter::LOSS_INSERT_FAILED] {
                    lost.push((l(Some(("reason", counter::NAMES[r]))), c.c[r]));
                }
                races.push((l(None), c.c[counter::INSERT_RACE]));
                frag_fail.push((l(None), c.c[counter::FRAG_MAP_FAILED]));
            }
        }
        counter_family(
            &mut enc,
            "flowd_parse_outcome_packets",
            "Packets by parse outcome; every packet has exactly one outcome.",
            &outcomes,
        )?;
        counter_family(
            &mut enc,
            "flowd_overflow_packets",
            "Packets counted in the interface totals but in no flow (flow map full or insert failed).",
            &overflow_packets,
        )?;
        counter_family(
            &mut enc,
            "flowd_overflow_bytes",
            "Bytes counted in the interface totals but in no flow.",
            &overflow_bytes,
        )?;
        counter_family(
            &mut enc,
            "flowd_flow_lost_packets",
            "Packets whose flow update failed, by reason.",
            &lost,
        )?;
        counter_family(
            &mut enc,
            "flowd_flow_insert_races",
            "New flows inserted by two CPUs at once (recovered, not lost).",
            &races,
        )?;
        counter_family(
            &mut enc,
            "flowd_fragment_map_failures",
            "First fragments whose ports could not be remembered for later fragments.",
            &frag_fail,
        )?;

        let mut attached = Vec::new();
        for i in &s.ifaces {
            attached.push((
                vec![
                    ("device", i.device.clone()),
                    ("hook", "xdp".into()),
                    ("mode", i.xdp_mode.unwrap_or("none").into()),
                ],
                i64::from(i.xdp_mode.is_some()),
            ));
            attached.push((
                vec![
                    ("device", i.device.clone()),
                    ("hook", "tc_egress".into()),
                    ("mode", "tc".into()),
                ],
                i64::from(i.tc_attached),
            ));
        }
        gauge_family(
            &mut enc,
            "flowd_program_attached",
            "1 when the program is attached to the device and hook.",
            &attached,
        )?;
        gauge_family(
            &mut enc,
            "flowd_flows_active",
            "Flows in the flow table.",
            &[(vec![], s.flows_active as i64)],
        )?;
        gauge_family(
            &mut enc,
            "flowd_flows_max",
            "Bound of the flow table; beyond it the longest-idle flows are evicted.",
            &[(vec![], s.flows_max as i64)],
        )?;
        counter_family(
            &mut enc,
            "flowd_flows_started",
            "Flows that entered the flow table.",
            &[(vec![], s.flows_started)],
        )?;
        let ended: Vec<(Labels, u64)> = s
            .flows_ended
            .iter()
            .map(|(r, n)| (vec![("reason", (*r).to_owned())], *n))
            .collect();
        counter_family(
            &mut enc,
            "flowd_flows_ended",
            "Flow records ended, by reason (idle, active, end-of-flow, forced, evicted).",
            &ended,
        )?;
        gauge_family(
            &mut enc,
            "flowd_flow_map_capacity_entries",
            "Capacity of each flow generation map.",
            &[(vec![], s.flow_map_capacity as i64)],
        )?;
        counter_family(
            &mut enc,
            "flowd_drains",
            "Drains of the flow maps.",
            &[(vec![], s.drains)],
        )?;
        counter_family(
            &mut enc,
            "flowd_drained_entries",
            "Flow map entries read and deleted by drains.",
            &[(vec![], s.drained_entries)],
        )?;
        gauge_family(
            &mut enc,
            "flowd_last_drain_entries",
            "Entries the last drain read (fill of one generation).",
            &[(vec![], s.last_drain_entries as i64)],
        )?;
        {
            let h = &s.drain_seconds;
            let mut buckets = h.buckets.clone();
            buckets.push((f64::INFINITY, h.count));
            let mut m = enc.encode_descriptor(
                "flowd_drain_duration_seconds",
                "Time one drain took: flip, wait for programs, read and delete.",
                None,
                MetricType::Histogram,
            )?;
            m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                h.sum, h.count, &buckets, None,
            )?;
        }
        counter_family(
            &mut enc,
            "flowd_drain_errors",
            "Drains that failed.",
            &[(vec![], s.drain_errors)],
        )?;
        let mut info = enc.encode_descriptor(
            "flowd_build",
            "flowd build information.",
            None,
            MetricType::Info,
        )?;
        let labels = vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("abi", flowd_common::ABI_VERSION.to_string()),
        ];
        info.encode_info(&labels)?;
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
    registry.register_collector(Box::new(SnapshotCollector(snapshot)));
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
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let mut rx = IfaceCounters::default();
        rx.c[counter::PACKETS] = 1000;
        rx.c[counter::BYTES] = 142_000;
        rx.c[counter::OUT_FLOW] = 1000;
        Snapshot {
            ifaces: vec![IfaceSnapshot {
                device: "veth0".into(),
                rx,
                tx: IfaceCounters::default(),
                xdp_mode: Some("native"),
                tc_attached: true,
            }],
            flows_active: 3,
            flow_map_capacity: 65536,
            ..Default::default()
        }
    }

    #[test]
    fn text004_names_counters_with_total() {
        let t = encode(sample(), Format::Text004);
        assert!(
            t.contains("# TYPE flowd_receive_packets_total counter\n"),
            "{t}"
        );
        assert!(
            t.contains("flowd_receive_packets_total{device=\"veth0\"} 1000\n"),
            "{t}"
        );
        assert!(
            t.contains("flowd_receive_bytes_total{device=\"veth0\"} 142000\n"),
            "{t}"
        );
        assert!(t.contains("# TYPE flowd_build_info gauge\n"), "{t}");
        assert!(!t.contains("# EOF"));
    }

    #[test]
    fn openmetrics_ends_with_eof() {
        let t = encode(sample(), Format::OpenMetrics);
        assert!(t.ends_with("# EOF\n"), "{t}");
        assert!(t.contains("# TYPE flowd_receive_packets counter\n"), "{t}");
    }
}
