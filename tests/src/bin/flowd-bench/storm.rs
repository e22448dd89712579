//! Part 8: new-flow storm. TCP SYNs with a random source port and random
//! low 16 bits of the source address (198.18.0.0/16) per packet, as in a SYN
//! flood, paced at rising rates from namespace `a` into the flowd daemon in
//! `b` with its defaults (65,536 flows per generation, drain every second, early at 50 % fill).
//! The frames carry a destination MAC nobody has, so `b`'s stack drops them
//! right after XDP (no replies to the random sources). Per rate: are the
//! totals exact, how much went into the overflow bucket instead of a flow.

use std::{thread, time::Duration};

use anyhow::ensure;
use flowd_common::{DEFAULT_FLOW_CAPACITY, counter};
use flowd_tests::{Flowd, metric, packet::syn_frame};

use super::{
    Plan, Targets,
    bed::{self, Generator, Pair},
    proc_cpu_ns, sep, summarize,
};

/// The daemon's counters that matter here.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    received: f64,
    overflow: f64,
    map_full: f64,
    started: f64,
    drained: f64,
    early: f64,
    active: f64,
}

fn counters(d: &Flowd, dev: &str) -> anyhow::Result<Counters> {
    let m = bed::metrics(d)?;
    let get = |name: &str, labels: &[(&str, &str)]| metric(&m, name, labels).unwrap_or(f64::NAN);
    let rx = [("device", dev), ("direction", "receive")];
    Ok(Counters {
        received: get("flowd_receive_packets_total", &[("device", dev)]),
        overflow: get("flowd_overflow_packets_total", &rx),
        map_full: get(
            "flowd_flow_lost_packets_total",
            &[
                ("device", dev),
                ("direction", "receive"),
                ("reason", counter::NAMES[counter::LOSS_MAP_FULL]),
            ],
        ),
        started: get("flowd_flows_started_total", &[]),
        drained: get("flowd_drained_entries_total", &[]),
        early: get("flowd_drains_early_total", &[]),
        active: get("flowd_flows_active", &[]),
    })
}

struct Row {
    rate: u32,
    sent: u64,
    achieved: f64,
    received: u64,
    counted: f64,
    overflow: f64,
    map_full: f64,
    started: f64,
    drained: f64,
    early: f64,
    cpu_ms: f64,
}

pub(super) fn run(plan: &Plan, targets: &mut Targets) -> anyhow::Result<()> {
    let pair = Pair::new()?;
    let daemon = pair.start_daemon(&[])?;
    let g = Generator::random_sources(&pair, syn_frame(&pair.ends_to_nobody(), 0, 80))?;
    let dev = pair.if_b.clone();
    let mut rows = Vec::new();
    for &rate in plan.storm_rates {
        eprintln!("storm: {rate} new flows/s for {} s", plan.storm_secs);
        let c0 = counters(&daemon, &dev)?;
        let b0 = pair.b.try_link_stats(&pair.if_b)?;
        let cpu0 = proc_cpu_ns(daemon.pid()).unwrap_or(0);
        let (sent, wall) = g.paced(u64::from(rate), plan.storm_secs)?;
        // Two drain intervals: everything sent is in the table or the bucket.
        thread::sleep(Duration::from_millis(2500));
        let cpu1 = proc_cpu_ns(daemon.pid()).unwrap_or(0);
        let c1 = counters(&daemon, &dev)?;
        let b1 = pair.b.try_link_stats(&pair.if_b)?;
        rows.push(Row {
            rate,
            sent,
            achieved: sent as f64 / wall.as_secs_f64(),
            received: (b1 - b0).rx_packets,
            counted: c1.received - c0.received,
            overflow: c1.overflow - c0.overflow,
            map_full: c1.map_full - c0.map_full,
            started: c1.started - c0.started,
            drained: c1.drained - c0.drained,
            early: c1.early - c0.early,
            cpu_ms: cpu1.saturating_sub(cpu0) as f64 / 1e6,
        });
    }

    // End-to-end scrape of the daemon holding the storm's flows.
    let after = counters(&daemon, &dev)?;
    let mut lat = Vec::new();
    let mut size = 0;
    for _ in 0..plan.scrape_reps {
        let (status, body, t) = bed::get(&daemon, "/metrics")?;
        ensure!(status == 200, "GET /metrics: {status}");
        size = body.len();
        lat.push(t.as_secs_f64() * 1e3);
    }
    let rss = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    let mut daemon = daemon;
    let (shutdown, peak_rss) = daemon.stop_measured()?;

    println!(
        "## 8. new-flow storm (random-source TCP SYNs, 60 B, {:.0} s per rate, paced in 1 ms slices; `flowd run` defaults: {} flows per generation, drain every 1 s and early at 50 % fill)\n",
        plan.storm_secs,
        sep(u64::from(DEFAULT_FLOW_CAPACITY))
    );
    println!(
        "| new flows/s asked | achieved/s | sent | veth delivered | flowd totals = sent | packets in flows | overflow bucket | new flows in the table | drained entries | early drains | daemon CPU ms | result |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut exact_all = true;
    let mut absorbed = 0u32;
    let mut first_overflow = None;
    for r in &rows {
        let exact = r.counted == r.sent as f64 && r.received == r.sent;
        exact_all &= exact;
        let in_flows = r.counted - r.overflow;
        let clean = r.overflow == 0.0;
        if clean && first_overflow.is_none() {
            absorbed = absorbed.max(r.rate);
        }
        if !clean && first_overflow.is_none() {
            first_overflow = Some(r.rate);
        }
        println!(
            "| {} | {} | {} | {} | {} | {} | {} ({:.1} %; map_full {}) | {} | {} | {} | {:.0} | {} |",
            sep(u64::from(r.rate)),
            sep(r.achieved as u64),
            sep(r.sent),
            sep(r.received),
            if exact { "yes" } else { "NO" },
            sep(in_flows as u64),
            sep(r.overflow as u64),
            100.0 * r.overflow / r.sent.max(1) as f64,
            sep(r.map_full as u64),
            sep(r.started as u64),
            sep(r.drained as u64),
            sep(r.early as u64),
            r.cpu_ms,
            if clean {
                "every packet in a flow"
            } else {
                "overflow (totals still exact)"
            }
        );
    }
    println!(
        "\nsustained new flows/s absorbed with every packet in a flow: {} (highest clean rate below the first overflow); overflow starts at: {}",
        sep(u64::from(absorbed)),
        first_overflow.map_or("not reached".into(), |r| format!(
            "{} /s",
            sep(u64::from(r))
        ))
    );
    targets.add(
        "new-flow storm: flowd's totals = packets sent, at every rate",
        "exact",
        if exact_all {
            "exact".into()
        } else {
            "not exact".into()
        },
        exact_all,
    );

    let l = summarize(&lat);
    println!(
        "\nend-to-end after the storm (`flowd run`, {} active flows in the table, ≤ 100,000 in the top-flows window): GET /metrics over TCP in the namespace: {} ms, {} bytes; daemon VmRSS {:.1} MiB = {:.0} bytes per active flow (everything the process holds, divided by the active flows)",
        sep(after.active as u64),
        l.p(1),
        sep(size as u64),
        rss as f64 / 1048576.0,
        rss as f64 / after.active.max(1.0)
    );
    println!(
        "\nclean shutdown with those flows (SIGTERM: final drain, every flow ended as a record, chunk by chunk): {:.2} s; the daemon's peak RSS over its whole run (ru_maxrss): {:.1} MiB, {:.2}× the VmRSS above",
        shutdown.as_secs_f64(),
        peak_rss as f64 / 1048576.0,
        peak_rss as f64 / rss.max(1) as f64
    );
    Ok(())
}
