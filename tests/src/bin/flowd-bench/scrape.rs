//! Part 6: `/metrics` at the default series budget with 100k (and 1M)
//! active flows, in-process: the exporter's `Aggregator` and `TcpSignals`
//! absorb one delta per flow (as the drain loop does), then every scrape
//! builds a `Snapshot` (as `Shared::snapshot` does) and encodes it.

use std::time::Instant;

use flowd_common::{
    DEFAULT_FLOW_CAPACITY, DIR_EGRESS, DIR_INGRESS, FlowCounts, FlowKey, FlowStats, IfaceCounters,
    counter, ipv4_mapped,
};

use super::{Plan, Targets, sep, summarize};
use flowd::{
    export::{
        aggregate::{AggConfig, Aggregator},
        groups::PeerGroups,
        metrics::{self, Format, IfaceSnapshot, Snapshot},
        process::ProcessStats,
        tcp::TcpSignals,
    },
    flowtable::EndReason,
};

const TARGET_MS: f64 = 50.0;

/// Synthetic flow `i`: TCP or UDP, to a mix of service ports, from
/// 198.18.0.0/15 or fd00::/8 peers, on two devices, both directions.
fn key(i: u32) -> (FlowKey, &'static str) {
    const PORTS: [u16; 12] = [443, 80, 53, 22, 5432, 6379, 9092, 3306, 123, 8443, 25, 0];
    let port = PORTS[(i % 12) as usize];
    let v6 = i.is_multiple_of(5);
    let a = |n: u32| {
        if v6 {
            let mut x = [0u8; 16];
            x[0] = 0xfd;
            x[12..].copy_from_slice(&n.to_be_bytes());
            x
        } else {
            ipv4_mapped([198, 18 + (n >> 16 & 1) as u8, (n >> 8) as u8, n as u8])
        }
    };
    let k = FlowKey {
        ifindex: 2 + i % 2,
        vlan: 0,
        direction: if i.is_multiple_of(3) {
            DIR_EGRESS
        } else {
            DIR_INGRESS
        },
        proto: if i.is_multiple_of(4) { 17 } else { 6 },
        src: a(i),
        dst: a(i / 7 + 3),
        sport: 1024 + (i % 60_000) as u16,
        dport: if port == 0 {
            30_000 + (i % 20_000) as u16
        } else {
            port
        },
    };
    (k, if i.is_multiple_of(2) { "eth0" } else { "eth1" })
}

fn delta(i: u32) -> FlowStats {
    FlowStats {
        counts: FlowCounts {
            packets: 1 + u64::from(i % 97),
            bytes: 64 * (1 + u64::from(i % 1009)),
            syn: u32::from(i.is_multiple_of(7)),
            synack: u32::from(i.is_multiple_of(14)),
            ..Default::default()
        },
        first_seen_ns: 1,
        last_seen_ns: 2,
        ..Default::default()
    }
}

pub(super) fn run(plan: &Plan, targets: &mut Targets) -> anyhow::Result<()> {
    println!(
        "## 6. scrape: `/metrics` at the default series budget (in-process: snapshot as `Shared::snapshot` builds it, plus `ProcessStats::read_self`, then `metrics::encode`; median (min–max) of {} scrapes)\n",
        plan.scrape_reps
    );
    println!(
        "| active flows | format | snapshot ms | encode ms | total ms | bytes | series | target | result |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in [100_000u32, 1_000_000] {
        let cfg = AggConfig::default();
        let mut agg = Aggregator::new(cfg.clone());
        let mut tcp = TcpSignals::new(PeerGroups::new(&cfg.peer_groups, &cfg.peer_unmatched));
        for i in 0..n {
            let (k, dev) = key(i);
            let d = delta(i);
            agg.absorb(&k, &d, dev);
            tcp.absorb(&k, &d, dev);
        }
        agg.tick(flowd::clock::realtime_ns());
        for format in [Format::Text004, Format::OpenMetrics] {
            let mut snap_ms = Vec::new();
            let mut enc_ms = Vec::new();
            let mut total = Vec::new();
            let mut size = 0;
            let mut series = 0;
            for _ in 0..plan.scrape_reps {
                let t = Instant::now();
                let mut s = Snapshot {
                    flows_active: u64::from(n),
                    flows_max: 1_000_000,
                    flows_started: u64::from(n),
                    flows_ended: EndReason::ALL.iter().map(|r| (r.as_str(), 0)).collect(),
                    flow_map_capacity: u64::from(DEFAULT_FLOW_CAPACITY),
                    ..Snapshot::default()
                };
                for dev in ["eth0", "eth1"] {
                    let mut rx = IfaceCounters::default();
                    rx.c[counter::PACKETS] = u64::from(n) * 50;
                    rx.c[counter::OUT_FLOW] = u64::from(n) * 50;
                    s.ifaces.push(IfaceSnapshot {
                        device: dev.into(),
                        rx,
                        tx: rx,
                        xdp_mode: Some("native"),
                        tc_attached: true,
                        af_xdp: false,
                        speed_bps: Some(10_000_000_000),
                    });
                }
                s.groups = agg.snapshot();
                s.tcp = tcp.snapshot();
                s.process = ProcessStats::read_self();
                let t1 = Instant::now();
                let body = metrics::encode(s, format);
                let t2 = Instant::now();
                size = body.len();
                series = body
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.is_empty())
                    .count();
                snap_ms.push((t1 - t).as_secs_f64() * 1e3);
                enc_ms.push((t2 - t1).as_secs_f64() * 1e3);
                total.push((t2 - t).as_secs_f64() * 1e3);
            }
            let tot = summarize(&total);
            let pass = tot.median <= TARGET_MS;
            let fname = match format {
                Format::Text004 => "text 0.0.4",
                Format::OpenMetrics => "OpenMetrics",
            };
            println!(
                "| {} | {fname} | {} | {} | {} | {} | {} | ≤ {TARGET_MS:.0} ms | {} |",
                sep(u64::from(n)),
                summarize(&snap_ms).p(2),
                summarize(&enc_ms).p(2),
                tot.p(2),
                sep(size as u64),
                sep(series as u64),
                super::pm(pass)
            );
            if n == 100_000 && format == Format::Text004 {
                targets.add(
                    "/metrics at the default budget, 100k active flows (snapshot + encode)",
                    format!("≤ {TARGET_MS:.0} ms"),
                    format!("{:.1} ms", tot.median),
                    pass,
                );
            }
        }
    }
    println!(
        "\nseries budget {} (default), top flows {} (default), window ≤ {} flows: the exposition stays the same size however many flows are active. Part 8 adds an end-to-end GET /metrics against the running daemon.",
        sep(flowd::export::aggregate::DEFAULT_SERIES_BUDGET as u64),
        AggConfig::default().top_flows,
        sep(AggConfig::default().window_max_flows as u64)
    );
    Ok(())
}
