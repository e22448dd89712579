//! Part 2: live overhead on a veth pair. A live-frame XDP generator in
//! namespace `a` transmits 60-byte UDP frames to namespace `b`, whose
//! stack delivers them to a bound UDP socket (never read: the socket drops
//! them once its buffer is full). Receiver configurations, interleaved:
//! nothing attached, an empty XDP program (`XDP_PASS`), flowd's programs.
//! Then, with kernel.bpf_stats_enabled on for that run only, the kernel's own
//! run time per packet of flowd's and the empty program.

use std::{
    net::UdpSocket,
    os::fd::{AsFd, OwnedFd},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use flowd_common::{DEFAULT_FLOW_CAPACITY, DIR_INGRESS, counter};
use flowd_tests::{LinkStats, in_ns, packet::udp_frame};

use super::{
    Plan, Targets,
    bed::{Generator, Pair},
    raw::{self, BPF_F_XDP_HAS_FRAGS, BPF_PROG_TYPE_XDP, XDP_PASS},
    sep, summarize,
};
use flowd::loader::{Datapath, XdpAttachMode};

const TARGET_RATIO: f64 = 0.90;
const DPORT: u16 = 9000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Config {
    Nothing,
    EmptyXdp,
    Flowd,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Self::Nothing => "no XDP program (GRO path into the stack)",
            Self::EmptyXdp => "empty XDP program (`XDP_PASS`, frags flag as flowd's)",
            Self::Flowd => "flowd (XDP ingress + TC egress attached, RTT on)",
        }
    }
}

/// The receiver side: flowd loaded (attached on demand), an empty XDP
/// program (linked on demand), the UDP socket the stack delivers to.
struct Receiver {
    dp: Datapath,
    ifindex_b: u32,
    slot: u32,
    empty: OwnedFd,
    empty_link: Option<OwnedFd>,
    _socket: UdpSocket,
}

impl Receiver {
    fn new(pair: &Pair) -> anyhow::Result<Self> {
        let (if_b, ip_b) = (pair.if_b.clone(), pair.ip_b.clone());
        let (dp, ifindex_b, slot, socket) = in_ns(&pair.b.name, move || {
            let mut dp = Datapath::load(DEFAULT_FLOW_CAPACITY).context("loading flowd")?;
            dp.attach(&if_b, Some(XdpAttachMode::Native))?;
            let (ifindex, slot) = dp
                .interfaces
                .values()
                .next()
                .map(|a| (a.ifindex, a.slot))
                .context("attached interface missing")?;
            dp.detach(ifindex);
            let s = UdpSocket::bind((ip_b.as_str(), DPORT)).context("binding the receiver")?;
            Ok((dp, ifindex, slot, s))
        })?;
        // With the frags flag, as flowd's XDP program (`#[xdp(frags)]`), so
        // both take the same attach and run path on the veth.
        let empty = raw::load_prog(
            BPF_PROG_TYPE_XDP,
            &raw::ret_insns(XDP_PASS as i32),
            BPF_F_XDP_HAS_FRAGS,
            "bench_xdp_pass",
        )?;
        Ok(Self {
            dp,
            ifindex_b,
            slot,
            empty,
            empty_link: None,
            _socket: socket,
        })
    }

    fn set(&mut self, pair: &Pair, c: Config) -> anyhow::Result<()> {
        self.empty_link = None;
        self.dp.detach(self.ifindex_b);
        match c {
            Config::Nothing => {}
            Config::EmptyXdp => {
                let prog = self.empty.try_clone()?;
                let ifindex = self.ifindex_b;
                self.empty_link = Some(in_ns(&pair.b.name, move || {
                    raw::xdp_link(prog.as_fd(), ifindex)
                })?);
            }
            Config::Flowd => {
                // Attaching needs the receiver's namespace (netlink, tcx).
                let (dp, if_b) = (&mut self.dp, &pair.if_b);
                in_ns(&pair.b.name, move || {
                    dp.attach(if_b, Some(XdpAttachMode::Native))?;
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    fn rx_packets(&self) -> anyhow::Result<(u64, u64)> {
        let t = self.dp.totals(self.slot, DIR_INGRESS)?;
        Ok((t.c[counter::PACKETS], t.c[counter::OVERFLOW_PACKETS]))
    }
}

/// One run's outcome.
#[derive(Clone, Copy, Debug)]
struct Run {
    sent: u64,
    wall_s: f64,
    received: u64,
    dropped: u64,
    /// flowd's exact interface total and its per-flow sum (flowd runs only).
    flowd: Option<(u64, u64)>,
}

impl Run {
    fn delivered_mpps(&self) -> f64 {
        self.received as f64 / self.wall_s / 1e6
    }
}

fn one_run(pair: &Pair, rx: &mut Receiver, g: &Generator, frames: u64) -> anyhow::Result<Run> {
    let (b0, a0) = (
        pair.b.try_link_stats(&pair.if_b)?,
        pair.a.try_link_stats(&pair.if_a)?,
    );
    let t0 = rx.rx_packets()?;
    let wall = g.burst(frames)?;
    std::thread::sleep(Duration::from_millis(50));
    let (b1, a1) = (
        pair.b.try_link_stats(&pair.if_b)?,
        pair.a.try_link_stats(&pair.if_a)?,
    );
    let t1 = rx.rx_packets()?;
    let (db, da): (LinkStats, LinkStats) = (b1 - b0, a1 - a0);
    let attached = !rx.dp.interfaces.is_empty();
    let flowd = if attached {
        let mut flow_packets = 0;
        rx.dp.drain_all(|k, v| {
            if k.direction == DIR_INGRESS && k.dport == DPORT {
                flow_packets += v.counts.packets;
            }
        })?;
        ensure!(t1.1 == t0.1, "flowd overflowed during the live run");
        Some((t1.0 - t0.0, flow_packets))
    } else {
        None
    };
    Ok(Run {
        sent: frames,
        wall_s: wall.as_secs_f64(),
        received: db.rx_packets,
        dropped: db.rx_dropped + da.tx_dropped,
        flowd,
    })
}

/// kernel.bpf_stats_enabled as the sysctl shows it.
fn stats_sysctl() -> String {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

pub(super) fn run(plan: &Plan, targets: &mut Targets) -> anyhow::Result<()> {
    let pair = Pair::new()?;
    let mut rx = Receiver::new(&pair)?;
    let g = Generator::fixed(&pair, udp_frame(&pair.ends, 40000, DPORT))?;
    let frames = u64::from(plan.live_frames);
    let configs = [Config::Nothing, Config::EmptyXdp, Config::Flowd];
    // Warm-up: the neighbour and socket paths, the page pool.
    rx.set(&pair, Config::Nothing)?;
    g.burst(200_000)?;
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); configs.len()];
    for rep in 0..plan.live_reps {
        for j in 0..configs.len() {
            let i = (j + rep) % configs.len();
            eprintln!(
                "live veth: {:?}, repetition {}/{}",
                configs[i],
                rep + 1,
                plan.live_reps
            );
            rx.set(&pair, configs[i])?;
            let r = one_run(&pair, &mut rx, &g, frames)?;
            eprintln!(
                "  sent {} in {:.2} s, delivered {} ({:.3} Mpps), dropped {}, flowd {:?}",
                r.sent,
                r.wall_s,
                r.received,
                r.delivered_mpps(),
                r.dropped,
                r.flowd
            );
            runs[i].push(r);
        }
    }

    // The kernel's own per-run cost, with run-time statistics on for this
    // measurement only (they inflate every program's cost).
    let before = stats_sysctl();
    let mut stats_rows = Vec::new();
    for c in [Config::Flowd, Config::EmptyXdp] {
        rx.set(&pair, c)?;
        let prog = match c {
            Config::Flowd => rx.dp.ingress_fd()?.try_clone_to_owned()?,
            _ => rx.empty.try_clone()?,
        };
        let guard = raw::StatsOn::new()?;
        let during = stats_sysctl();
        let (t0, n0) = raw::prog_run_stats(prog.as_fd())?;
        let run = one_run(&pair, &mut rx, &g, frames)?;
        let (t1, n1) = raw::prog_run_stats(prog.as_fd())?;
        drop(guard);
        stats_rows.push((c, run, t1 - t0, n1 - n0, during));
    }
    rx.set(&pair, Config::Nothing)?;
    let after = stats_sysctl();

    println!(
        "## 2. live overhead on veth (60-byte UDP, one flow, {} frames per run from a live-frame XDP generator on one vCPU; median (min–max) of {} runs)\n",
        sep(frames),
        plan.live_reps
    );
    println!(
        "Receiver: native XDP on the veth peer, then the IPv4/UDP stack to a bound, never-read socket. Delivered = the receiver veth's rx_packets.\n"
    );
    println!(
        "| receiver | delivered Mpps | ratio to no XDP | lost (veth drops) | flowd counted = sent | result |"
    );
    println!("|---|---|---|---|---|---|");
    let base = summarize(&runs[0].iter().map(Run::delivered_mpps).collect::<Vec<_>>()).median;
    let mut all_exact = true;
    let mut flowd_ratio = 0.0;
    for (c, rs) in configs.iter().zip(&runs) {
        let mpps = summarize(&rs.iter().map(Run::delivered_mpps).collect::<Vec<_>>());
        let lost: u64 = rs
            .iter()
            .map(|r| r.dropped + r.sent.saturating_sub(r.received))
            .sum();
        let ratio = mpps.median / base;
        let (exact, result) = if *c == Config::Flowd {
            let exact = rs
                .iter()
                .all(|r| r.flowd == Some((r.sent, r.sent)) && r.received == r.sent);
            all_exact &= exact;
            flowd_ratio = ratio;
            let counted: Vec<String> = rs
                .iter()
                .map(|r| {
                    let (t, f) = r.flowd.unwrap_or_default();
                    format!("{}/{}/{}", sep(t), sep(f), sep(r.sent))
                })
                .collect();
            (
                format!(
                    "{} (totals/flow/sent: {})",
                    if exact { "yes" } else { "NO" },
                    counted.join("; ")
                ),
                format!(
                    "{} (≥ {:.0} %)",
                    super::pm(ratio >= TARGET_RATIO),
                    TARGET_RATIO * 100.0
                ),
            )
        } else {
            (String::new(), String::new())
        };
        println!(
            "| {} | {} | {:.2} | {} | {exact} | {result} |",
            c.name(),
            mpps.p(3),
            ratio,
            sep(lost),
        );
    }
    targets.add(
        "live veth packet rate with flowd / without",
        format!("≥ {:.0} %", TARGET_RATIO * 100.0),
        format!("{:.1} %", flowd_ratio * 100.0),
        flowd_ratio >= TARGET_RATIO,
    );
    targets.add(
        "live veth: flowd's totals and flow counts = packets sent",
        "100 %",
        if all_exact {
            "100 %".into()
        } else {
            "not exact".into()
        },
        all_exact,
    );

    println!(
        "\nkernel run time per packet (kernel.bpf_stats_enabled = 1 for these runs only, restored afterwards; it read {before} before, {} during, {after} after):\n",
        stats_rows.first().map_or("?", |r| r.4.as_str())
    );
    println!("| program | run_cnt | run_time_ns / run_cnt | delivered Mpps with stats on |");
    println!("|---|---|---|---|");
    let mut per = Vec::new();
    for (c, run, rt, cnt, _) in &stats_rows {
        let ns = *rt as f64 / (*cnt).max(1) as f64;
        per.push(ns);
        println!(
            "| {} | {} | {:.1} | {:.3} |",
            c.name(),
            sep(*cnt),
            ns,
            run.delivered_mpps()
        );
    }
    if let [f, e] = per[..] {
        println!(
            "\nflowd − empty in the live path (stats on): {:.1} ns per packet; stats add their own two clock reads per run (PERFORMANCE.md: a 65 ns program reads 115–139 ns), so use this as a relative number.",
            f - e
        );
    }
    Ok(())
}
