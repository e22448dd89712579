//! Part 9: AF_XDP capture (issue 13). The daemon captures `b`'s end of the
//! veth pair with `--af-xdp` (veth: copy mode, one RX queue, one worker);
//! the live-frame generator sends one 60-byte UDP flow at rising paced
//! rates. Per rate: frames the kernel counted, parsed by the worker and
//! lost by the socket (which must add up exactly), and the worker's CPU.

use std::{thread, time::Duration};

use anyhow::ensure;
use flowd_tests::{Flowd, metric, packet::udp_frame};

use super::{
    Plan, Targets,
    bed::{self, Generator, Pair},
    proc_cpu_ns,
};

/// (kernel frames, parsed, socket drops + parse failures, no socket,
/// ring full, fill ring empty).
fn counts(d: &Flowd, dev: &str) -> anyhow::Result<(f64, f64, f64, f64, f64, f64)> {
    let m = bed::metrics(d)?;
    let q = [("device", dev), ("queue", "0")];
    let get = |name: &str, l: &[(&str, &str)]| metric(&m, name, l).unwrap_or(f64::NAN);
    let dropped: f64 = ["dropped", "ring_full", "invalid_desc"]
        .iter()
        .map(|r| {
            get(
                "flowd_af_xdp_socket_dropped_frames_total",
                &[q[0], q[1], ("reason", r)],
            )
        })
        .sum();
    Ok((
        get("flowd_af_xdp_frames_total", &q),
        get("flowd_af_xdp_parsed_frames_total", &q),
        dropped + get("flowd_af_xdp_parse_failed_frames_total", &q),
        get("flowd_af_xdp_no_socket_frames_total", &q),
        get(
            "flowd_af_xdp_socket_dropped_frames_total",
            &[q[0], q[1], ("reason", "ring_full")],
        ),
        get("flowd_af_xdp_fill_ring_empty_total", &q),
    ))
}

pub(super) fn run(plan: &Plan, targets: &mut Targets) -> anyhow::Result<()> {
    println!("## 9. AF_XDP capture (veth, copy mode, one worker, rings of 16384)\n");
    let pair = Pair::new()?;
    // The largest rings: the worker shares its CPU with everything else
    // on this host, and a ring is how long it may be away.
    let tmp = flowd_tests::TempDir::try_new("flowd-bench-afxdp")?;
    let cfg = tmp.path().join("flowd.toml");
    std::fs::write(&cfg, "[af_xdp]\nring_size = 16384\n")?;
    let cfg = cfg.to_string_lossy().into_owned();
    let d = Flowd::try_start_env(
        &pair.b,
        &["--af-xdp", &pair.if_b, "--config", &cfg],
        &[("FLOWD_LOG", "warn")],
    )?;
    let gen_ = Generator::fixed(&pair, udp_frame(&pair.ends, 43_000, 9))?;
    let rates: &[u64] = if plan.rounds <= 5 {
        &[250_000, 500_000, 1_000_000, 2_000_000]
    } else {
        &[250_000, 500_000, 1_000_000, 1_500_000, 2_000_000, 3_000_000]
    };
    let secs = 2.0;
    println!(
        "| rate offered (frames/s) | sent | achieved (frames/s) | kernel counted | parsed | lost | parsed/s | daemon CPU per parsed frame |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut best_lossless = 0.0f64;
    let mut best_parsed = 0.0f64;
    for &rate in rates {
        let before = counts(&d, &pair.if_b)?;
        let cpu0 = proc_cpu_ns(d.pid()).unwrap_or(0);
        let (sent, wall) = gen_.paced(rate, secs)?;
        // Let the worker empty its ring and the counters settle.
        thread::sleep(Duration::from_millis(500));
        let after = counts(&d, &pair.if_b)?;
        let cpu = proc_cpu_ns(d.pid()).unwrap_or(0).saturating_sub(cpu0) as f64;
        let kernel = after.0 - before.0;
        let parsed = after.1 - after.1.min(before.1);
        let lost = after.2 - before.2;
        let no_socket = after.3 - before.3;
        ensure!(
            kernel == parsed + lost + no_socket,
            "AF_XDP counts do not add up at {rate}/s: kernel {kernel} != parsed {parsed} + lost {lost} + no socket {no_socket}"
        );
        let achieved = sent as f64 / wall.as_secs_f64();
        let parsed_rate = parsed / wall.as_secs_f64();
        println!(
            "| {rate} | {sent} | {achieved:.0} | {kernel:.0} | {parsed:.0} | {lost:.0} ({:.0} / {:.0}) | {parsed_rate:.0} | {:.0} ns |",
            after.4 - before.4,
            after.5 - before.5,
            cpu / parsed.max(1.0)
        );
        if lost == 0.0 && kernel == sent as f64 {
            best_lossless = best_lossless.max(achieved);
        }
        best_parsed = best_parsed.max(parsed_rate);
    }
    println!();
    targets.add(
        "AF_XDP, one worker in copy mode: frames/s with exact counts and no loss",
        "≥ 2 Mpps",
        format!(
            "{:.2} Mpps without loss; {:.2} Mpps parsed at most",
            best_lossless / 1e6,
            best_parsed / 1e6
        ),
        best_lossless >= 2e6,
    );
    Ok(())
}
