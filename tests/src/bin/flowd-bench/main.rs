//! `flowd-bench`: the measurements behind BENCHMARKS.md. `cargo xtask bench`
//! builds the release `flowd` and this binary and runs
//! `flowd-bench --flowd target/release/flowd ARGS`. It measures the flowd
//! library's parts directly and runs the `flowd` binary given for the
//! daemon and replay; its namespaces, veth pair, bpffs and daemon control
//! are the e2e harness's (`flowd_tests`).
//!
//! 1. Per-packet cost: the real XDP and TC programs against empty ones
//!    (loaded here with a raw `BPF_PROG_LOAD`), through `BPF_PROG_TEST_RUN`,
//!    interleaved, on the existing-flow and the new-flow path, with the RTT
//!    signals on (the default) and off.
//! 2. Live overhead on a veth pair between two network namespaces: the
//!    packet rate a live-frame XDP generator reaches into the receiver's
//!    stack with flowd attached, with an empty XDP program and with nothing;
//!    the kernel's own run time per packet; flowd's count against what was sent.
//! 3. The usual alternatives on the same traffic: Scapy `sniff(prn=...)`
//!    and a tshark live capture against the flowd daemon, at paced rates.
//! 4. Drain: `Datapath::drain_all`, the batch syscall and a key-by-key loop,
//!    wall and CPU time, for 10k, 100k and 1M flows.
//! 5. Memory: the daemon's flow table per active flow, the kernel maps per
//!    configured capacity, per-CPU against shared hash.
//! 6. Scrape: `/metrics` snapshot + encoding with 100k active flows.
//! 7. Offline: `flowd replay` against tshark and Scapy on one large capture.
//! 8. New-flow storm: random-source SYNs at rising rates into the daemon
//!    with the default capacity and drain interval: exact totals, and where
//!    the overflow bucket starts to fill.
//! 9. Application layer (issue 12), kernel side: per-packet cost with the
//!    L7 selection off and on, for packets it does not take and for those
//!    it copies; the live veth rate of HTTP frames.
//! 10. Application layer, user space: the L7 engine's events/s; `flowd
//!     replay --l7-log` against tshark's fields.
//! 11. AF_XDP capture: the daemon with `--af-xdp` on the veth's receiving
//!     end at rising paced rates: counted, parsed and lost frames per rate.
//!
//! Every namespace, link, mount and process it creates is removed by a guard
//! (also on error); traffic only flows between its own namespaces, on
//! 198.18.0.0/15. BENCHMARKS.md explains the method and the results.

mod afxdp;
mod alternatives;
mod bed;
mod drain;
mod l7;
mod l7_user;
mod live;
mod memory;
mod offline;
mod packet;
mod raw;
mod scrape;
mod storm;

use std::{fmt::Write as _, path::PathBuf, process::ExitCode, time::Instant};

use clap::Parser;

/// Measure flowd: the numbers behind BENCHMARKS.md (as root).
#[derive(Debug, Clone, Parser)]
#[command(name = "flowd-bench")]
struct BenchArgs {
    /// The flowd binary to run as the daemon and for replay (`cargo xtask
    /// bench` passes target/release/flowd).
    #[arg(long, value_name = "PATH")]
    flowd: PathBuf,
    /// Fewer rounds, repeats, rates and repetitions (about 4 minutes instead of about 15).
    #[arg(long)]
    quick: bool,
    /// Run only these parts (1 per packet, 2 live veth, 3 alternatives,
    /// 4 drain, 5 memory, 6 scrape, 7 offline, 8 new-flow storm, 9 application
    /// layer in the kernel, 10 application layer in user space, 11 AF_XDP),
    /// e.g. `--only 2,3`.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u8).range(1..=11))]
    only: Vec<u8>,
}

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    if !args.flowd.is_file() {
        eprintln!(
            "flowd-bench: {} is not a file (build it: cargo build --release -p flowd)",
            args.flowd.display()
        );
        return ExitCode::FAILURE;
    }
    let flowd = std::fs::canonicalize(&args.flowd).unwrap_or_else(|_| args.flowd.clone());
    flowd_tests::use_flowd_bin(flowd);
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowd-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How much of everything a run does.
struct Plan {
    /// Interleaved rounds of the per-packet measurements.
    rounds: usize,
    /// `BPF_PROG_TEST_RUN` repeat on the existing-flow path.
    repeat: u32,
    /// Distinct flows per new-flow pass (one test run each).
    new_flows: u32,
    /// (flows, repetitions) of the drain measurements.
    drains: &'static [(u32, usize)],
    /// Frames per live-frame generator call on the veth pair, and repetitions.
    live_frames: u32,
    live_reps: usize,
    /// Packet rates (per second) of the alternatives, seconds per burst,
    /// bursts per tool session.
    alt_rates: &'static [u32],
    alt_secs: f64,
    alt_reps: usize,
    /// Flow-table sizes for the memory measurement, repetitions.
    mem_flows: &'static [u32],
    mem_reps: usize,
    /// Configured flow capacities for the kernel map memory.
    capacities: &'static [u32],
    scrape_reps: usize,
    /// Repetitions of flowd replay / tshark / Scapy on the offline capture.
    offline_reps: [usize; 3],
    /// Copies of the capture set merged into the offline capture.
    offline_copies: usize,
    /// New-flow rates (per second) of the storm, seconds per rate.
    storm_rates: &'static [u32],
    storm_secs: f64,
}

const QUICK: Plan = Plan {
    rounds: 5,
    repeat: 1_000_000,
    new_flows: 60_000,
    drains: &[(10_000, 5), (100_000, 5), (1_000_000, 3)],
    live_frames: 2_000_000,
    live_reps: 3,
    alt_rates: &[1_000, 10_000, 100_000],
    alt_secs: 1.0,
    alt_reps: 3,
    mem_flows: &[100_000, 1_000_000],
    mem_reps: 3,
    capacities: &[65_536, 262_144, 1_048_576],
    scrape_reps: 5,
    offline_reps: [3, 3, 1],
    offline_copies: 2,
    storm_rates: &[25_000, 75_000, 150_000, 300_000, 500_000, 1_000_000],
    storm_secs: 3.0,
};

const FULL: Plan = Plan {
    rounds: 7,
    repeat: 5_000_000,
    new_flows: 60_000,
    drains: &[(10_000, 11), (100_000, 11), (1_000_000, 5)],
    live_frames: 8_000_000,
    live_reps: 5,
    alt_rates: &[1_000, 5_000, 10_000, 100_000, 500_000],
    alt_secs: 3.0,
    alt_reps: 3,
    mem_flows: &[100_000, 1_000_000],
    mem_reps: 5,
    capacities: &[65_536, 262_144, 1_048_576, 4_194_304],
    scrape_reps: 11,
    offline_reps: [5, 5, 3],
    offline_copies: 2,
    storm_rates: &[
        10_000, 25_000, 50_000, 75_000, 100_000, 150_000, 200_000, 300_000, 400_000, 500_000,
        750_000, 1_000_000,
    ],
    storm_secs: 6.0,
};

fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let plan = if args.quick { &QUICK } else { &FULL };
    let want = |part: u8| args.only.is_empty() || args.only.contains(&part);
    let started = Instant::now();
    let mut out = String::new();
    machine(&mut out);
    let _ = writeln!(
        out,
        "mode: {} (per packet: rounds {}, repeat {}, new flows per pass {})\n",
        if args.quick { "--quick" } else { "full" },
        plan.rounds,
        plan.repeat,
        plan.new_flows
    );
    print!("{out}");

    let mut targets = Targets::default();
    let mut failed = Vec::new();
    let mut section = |part: u8, f: &mut dyn FnMut(&mut Targets) -> anyhow::Result<()>| {
        if !want(part) {
            return;
        }
        let t = Instant::now();
        let (busy0, all0) = cpu_ticks();
        let own0 = rusage_ns(libc::RUSAGE_SELF) + children_cpu_ns();
        if let Err(e) = f(&mut targets) {
            // One part failing (a tool missing, say) does not stop the others.
            println!("\n**part {part} failed: {e:#}**\n");
            eprintln!("part {part} failed: {e:#}");
            failed.push(part);
        }
        let (busy1, all1) = cpu_ticks();
        let own = (rusage_ns(libc::RUSAGE_SELF) + children_cpu_ns() - own0) as f64;
        let wall = t.elapsed().as_secs_f64();
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        eprintln!("part {part} took {wall:.1} s");
        println!(
            "\n(part {part}: {wall:.1} s; CPUs busy {:.0} % of the time, this bench and its children {:.0} % (of {ncpu} vCPUs); load average {})\n",
            100.0 * (busy1 - busy0) as f64 / (all1 - all0).max(1) as f64,
            100.0 * own / 1e9 / wall / ncpu,
            loadavg()
        );
    };
    section(1, &mut |t| packet::run(plan, t));
    section(2, &mut |t| live::run(plan, t));
    section(3, &mut |t| alternatives::run(plan, t));
    section(4, &mut |t| drain::run(plan, t));
    section(5, &mut |t| memory::run(plan, t));
    section(6, &mut |t| scrape::run(plan, t));
    section(7, &mut |t| offline::run(plan, t));
    section(8, &mut |t| storm::run(plan, t));
    section(9, &mut |t| l7::run_kernel(plan, t));
    section(10, &mut |t| l7_user::run_user(plan, t));
    section(11, &mut |t| afxdp::run(plan, t));
    targets.print();
    println!(
        "\ntotal time: {:.1} s; load average at the end: {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    anyhow::ensure!(failed.is_empty(), "parts {failed:?} failed (see above)");
    Ok(())
}

// ------------------------------------------------------------ targets

/// PASS/MISS rows, printed together at the end (the bench never fails on a MISS).
#[derive(Default)]
struct Targets {
    rows: Vec<(String, String, String, bool)>,
    /// flowd − empty on the XDP existing-flow path (part 1), ns: part 3's
    /// estimate of flowd's in-kernel CPU.
    flowd_xdp_ns: Option<f64>,
}

impl Targets {
    fn add(
        &mut self,
        what: impl Into<String>,
        target: impl Into<String>,
        measured: String,
        pass: bool,
    ) {
        self.rows.push((what.into(), target.into(), measured, pass));
    }

    fn print(&self) {
        if self.rows.is_empty() {
            return;
        }
        println!("\n## targets\n");
        println!("| what | target | measured (median) | result |");
        println!("|---|---|---|---|");
        for (what, target, measured, pass) in &self.rows {
            println!(
                "| {what} | {target} | {measured} | {} |",
                if *pass { "PASS" } else { "MISS" }
            );
        }
    }
}

// ------------------------------------------------------------ machine

/// 1, 5 and 15 minute load averages: other work on the machine shows here.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine(out: &mut String) {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let stats = read("/proc/sys/kernel/bpf_stats_enabled");
    let mem = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    let _ = writeln!(out, "## machine");
    let _ = writeln!(out, "- nproc: {nproc}");
    let _ = writeln!(
        out,
        "- kernel: {}",
        read("/proc/sys/kernel/osrelease").trim()
    );
    let _ = writeln!(out, "- CPU: {cpu}");
    let _ = writeln!(out, "- memory: {mem}");
    let _ = writeln!(out, "- kernel.bpf_stats_enabled: {}", stats.trim());
    let _ = writeln!(out, "- load average at start: {}", loadavg());
    let _ = writeln!(out, "- {}", offline::describe_captures());
    if stats.trim() != "0" {
        let _ = writeln!(
            out,
            "- WARNING: bpf_stats_enabled is on; it inflates every number below"
        );
    }
}

// ------------------------------------------------------------ statistics

/// Median and range of a sample.
#[derive(Clone, Copy, Debug)]
struct Summary {
    median: f64,
    min: f64,
    max: f64,
}

fn summarize(v: &[f64]) -> Summary {
    if v.is_empty() {
        return Summary {
            median: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        };
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Summary {
        median,
        min: s[0],
        max: s[n - 1],
    }
}

impl Summary {
    /// `median (min–max)` with `p` decimals.
    fn p(self, p: usize) -> String {
        format!("{:.p$} ({:.p$}–{:.p$})", self.median, self.min, self.max)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = if self.max < 100.0 { 1 } else { 0 };
        write!(f, "{:.p$} ({:.p$}–{:.p$})", self.median, self.min, self.max)
    }
}

fn pm(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

/// Thousands separators for counts.
fn sep(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ------------------------------------------------------------ CPU time

/// (busy, total) jiffies of all CPUs from /proc/stat (busy: not idle, not iowait).
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn rusage_ns(who: libc::c_int) -> u64 {
    // SAFETY: an all-zero rusage is valid output space.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer for the call.
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User + system CPU time of the calling thread (getrusage(RUSAGE_THREAD)), ns.
fn thread_cpu_ns() -> u64 {
    rusage_ns(libc::RUSAGE_THREAD)
}

/// User + system CPU time of all waited-for children (getrusage(RUSAGE_CHILDREN)), ns.
fn children_cpu_ns() -> u64 {
    rusage_ns(libc::RUSAGE_CHILDREN)
}

/// utime + stime of a process from `/proc/PID/stat`, ns (clock-tick resolution).
fn proc_cpu_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((utime + stime) * 1_000_000_000 / ticks)
}

/// The PIDs of `pid`'s direct children (`/proc/*/stat` field 4).
fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s[s.rfind(')')? + 1..].to_owned();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// CPU of a process and its children (utime + stime from /proc), ns.
fn tree_cpu_ns(pid: u32) -> u64 {
    proc_cpu_ns(pid).unwrap_or(0)
        + child_pids(pid)
            .into_iter()
            .filter_map(proc_cpu_ns)
            .sum::<u64>()
}

/// Resident set size of this process (VmRSS), bytes.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Gives freed heap memory back to the kernel, so RSS deltas measure what
/// is allocated now.
fn trim_heap() {
    // SAFETY: glibc's malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
}
