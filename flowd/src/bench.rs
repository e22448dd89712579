//! `flowd bench`: the measurements behind BENCHMARKS.md (run through `cargo xtask bench`).
//!
//! Part 1, per-packet cost: the real XDP and TC programs against empty ones
//! (loaded here with a raw `BPF_PROG_LOAD`), through `BPF_PROG_TEST_RUN`,
//! interleaved, on the existing-flow and the new-flow path. Part 2, drain
//! cost: `Datapath::drain_all` and the batch syscall against a key-by-key
//! loop, for 10k, 100k and 1M flows. BENCHMARKS.md explains the method.

use std::{
    fmt::Write as _,
    io,
    mem::size_of,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    time::Instant,
};

use anyhow::{Context as _, bail, ensure};
use flowd_common::{
    DEFAULT_FLOW_CAPACITY, DIR_EGRESS, DIR_INGRESS, FlowKey, FlowStats, counter, ipv4_mapped, maps,
};

use crate::{
    loader::Datapath,
    sys::{self, TestRunResult},
};

/// Arguments of `flowd bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Fewer rounds and repeats (about 40 s instead of about 4.5 min).
    #[arg(long)]
    pub quick: bool,
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
}

const QUICK: Plan = Plan {
    rounds: 5,
    repeat: 1_000_000,
    new_flows: 60_000,
    drains: &[(10_000, 5), (100_000, 5), (1_000_000, 3)],
};

const FULL: Plan = Plan {
    rounds: 11,
    repeat: 10_000_000,
    new_flows: 60_000,
    drains: &[(10_000, 11), (100_000, 11), (1_000_000, 5)],
};

/// Targets over the empty program, ns per packet.
const TARGET_EXISTING_NS: f64 = 70.0;
const TARGET_NEW_NS: f64 = 250.0;

/// `BPF_PROG_TEST_RUN` verdicts of the programs measured here.
const XDP_PASS: u32 = 2;
const TC_ACT_UNSPEC: u32 = -1i32 as u32;

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let plan = if args.quick { &QUICK } else { &FULL };
    let started = Instant::now();
    let mut out = String::new();
    machine(&mut out);
    let _ = writeln!(
        out,
        "mode: {} (rounds {}, repeat {}, new flows per pass {})\n",
        if args.quick { "--quick" } else { "full" },
        plan.rounds,
        plan.repeat,
        plan.new_flows
    );
    print!("{out}");

    per_packet(plan)?;
    drains(plan)?;
    println!(
        "\ntotal time: {:.1} s; load average at the end: {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    Ok(())
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
    let _ = writeln!(out, "## machine");
    let _ = writeln!(out, "- nproc: {nproc}");
    let _ = writeln!(
        out,
        "- kernel: {}",
        read("/proc/sys/kernel/osrelease").trim()
    );
    let _ = writeln!(out, "- CPU: {cpu}");
    let _ = writeln!(out, "- kernel.bpf_stats_enabled: {}", stats.trim());
    let _ = writeln!(out, "- load average at start: {}", loadavg());
    if stats.trim() != "0" {
        let _ = writeln!(
            out,
            "- WARNING: bpf_stats_enabled is on; it inflates every number below"
        );
    }
}

// ------------------------------------------------------------ frames

/// One benchmark frame and where to write a flow number into it.
struct Kind {
    name: &'static str,
    frame: Vec<u8>,
    sport_off: usize,
    /// A byte of the source address that new flows vary (beyond 65,536).
    src_byte_off: usize,
}

impl Kind {
    /// Gives the frame flow number `i`: a source port and a source address
    /// byte no existing-path frame uses.
    fn set_flow(&self, buf: &mut [u8], i: u32) {
        buf[self.sport_off..self.sport_off + 2].copy_from_slice(&(i as u16).to_be_bytes());
        buf[self.src_byte_off] = 0x80 | (i >> 16) as u8;
    }
}

fn eth(tag: Option<u16>, ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    if let Some(vid) = tag {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// Ethernet (+ tag) + IPv4 + TCP (ACK), padded to `total` bytes.
fn ipv4_tcp(name: &'static str, tag: Option<u16>, total: usize) -> Kind {
    let mut f = eth(tag, 0x0800);
    let l3 = f.len();
    let ip_len = (total - l3) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&[198, 18, 0, 1, 198, 19, 0, 2]);
    let l4 = f.len();
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&443u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    f.resize(total, 0);
    Kind {
        name,
        frame: f,
        sport_off: l4,
        src_byte_off: l3 + 14,
    }
}

/// Ethernet + IPv6 + UDP, padded to `total` bytes.
fn ipv6_udp(name: &'static str, total: usize) -> Kind {
    let mut f = eth(None, 0x86dd);
    let l3 = f.len();
    let payload = (total - l3 - 40) as u16;
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&payload.to_be_bytes());
    f.extend_from_slice(&[17, 64]);
    f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    let l4 = f.len();
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&53u16.to_be_bytes());
    f.extend_from_slice(&payload.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(total, 0);
    Kind {
        name,
        frame: f,
        sport_off: l4,
        src_byte_off: l3 + 8 + 14,
    }
}

fn kinds() -> Vec<Kind> {
    vec![
        ipv4_tcp("IPv4 TCP 64 B", None, 64),
        ipv4_tcp("IPv4 TCP 1514 B", None, 1514),
        ipv6_udp("IPv6 UDP 128 B", 128),
        ipv4_tcp("802.1Q IPv4 TCP 68 B", Some(100), 68),
    ]
}

// ------------------------------------------------------------ raw bpf(2)

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// flowd's XDP program is loaded with it (`#[xdp(frags)]`); so is the empty one.
const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;

/// A zeroed `union bpf_attr` prefix, large enough for every command here.
#[repr(C)]
#[derive(Default)]
struct Attr {
    words: [u64; 16],
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, zero-initialised buffer of the size passed,
    // alive for the call; every pointer in it points at live buffers of the
    // sizes the command implies.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr,
            size_of::<Attr>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// One BPF instruction: opcode, dst register 0, immediate.
const fn insn_r0(code: u8, imm: i32) -> u64 {
    code as u64 | ((imm as u32 as u64) << 32)
}

/// Loads `r0 = ret; exit` as a program of `prog_type`: the harness's own
/// cost, to subtract.
fn load_empty(prog_type: u32, ret: i32, flags: u32, name: &str) -> anyhow::Result<OwnedFd> {
    // BPF_ALU64 | BPF_MOV | BPF_K, then BPF_JMP | BPF_EXIT.
    let insns = [insn_r0(0xb7, ret), insn_r0(0x95, 0)];
    let license = b"GPL\0";
    let mut log = vec![0u8; 4096];
    let mut attr = Attr::default();
    attr.words[0] = prog_type as u64 | ((insns.len() as u64) << 32);
    attr.words[1] = insns.as_ptr() as u64;
    attr.words[2] = license.as_ptr() as u64;
    attr.words[3] = 1 | ((log.len() as u64) << 32); // log_level, log_size
    attr.words[4] = log.as_mut_ptr() as u64;
    attr.words[5] = (flags as u64) << 32; // kern_version, prog_flags
    let mut n = [0u8; 16];
    n[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
    attr.words[6] = u64::from_le_bytes(n[..8].try_into().expect("8 bytes"));
    attr.words[7] = u64::from_le_bytes(n[8..].try_into().expect("8 bytes"));
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: the kernel returned a new program fd that we now own.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            bail!(
                "BPF_PROG_LOAD of the empty {name}: {e}; verifier log: {}",
                String::from_utf8_lossy(&log[..end])
            )
        }
    }
}

/// The fd of one of flowd's maps, found through the ingress program's map ids
/// (the loader does not hand out the flow maps).
fn flow_map(dp: &Datapath, name: &str) -> anyhow::Result<aya::maps::MapFd> {
    // The head of struct bpf_prog_info, up to and including map_ids.
    #[repr(C)]
    #[derive(Default)]
    struct ProgInfoHead {
        prog_type: u32,
        id: u32,
        tag: [u8; 8],
        jited_prog_len: u32,
        xlated_prog_len: u32,
        jited_prog_insns: u64,
        xlated_prog_insns: u64,
        load_time: u64,
        created_by_uid: u32,
        nr_map_ids: u32,
        map_ids: u64,
    }
    let mut ids = [0u32; 32];
    let mut info = ProgInfoHead {
        nr_map_ids: ids.len() as u32,
        map_ids: ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    let prog = dp.ingress_fd()?;
    let mut attr = Attr::default();
    attr.words[0] = prog.as_raw_fd() as u64 | ((size_of::<ProgInfoHead>() as u64) << 32);
    attr.words[1] = &raw mut info as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("BPF_OBJ_GET_INFO_BY_FD on flowd_ingress")?;
    let n = (info.nr_map_ids as usize).min(ids.len());
    for &id in &ids[..n] {
        let m = aya::maps::MapInfo::from_id(id)?;
        if m.name_as_str() == Some(name) {
            return Ok(m.fd()?);
        }
    }
    bail!("map {name} is not among flowd_ingress's {n} maps")
}

/// Fills a flow map with flows `0..n` (distinct keys) by `BPF_MAP_UPDATE_BATCH`.
fn fill(map: BorrowedFd<'_>, n: u32) -> anyhow::Result<()> {
    const CHUNK: u32 = 8192;
    let mut keys = Vec::with_capacity(CHUNK as usize);
    let mut values = Vec::with_capacity(CHUNK as usize);
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        keys.clear();
        values.clear();
        for i in start..end {
            keys.push(bench_key(i));
            values.push(FlowStats {
                packets: 1,
                bytes: 64,
                first_seen_ns: 1,
                last_seen_ns: 1,
                ..Default::default()
            });
        }
        let mut attr = Attr::default();
        attr.words[2] = keys.as_ptr() as u64;
        attr.words[3] = values.as_ptr() as u64;
        attr.words[4] = keys.len() as u64 | ((map.as_raw_fd() as u64) << 32);
        bpf(BPF_MAP_UPDATE_BATCH, &mut attr).context("BPF_MAP_UPDATE_BATCH")?;
        ensure!(
            attr.words[4] & 0xffff_ffff == keys.len() as u64,
            "BPF_MAP_UPDATE_BATCH wrote {} of {}",
            attr.words[4] & 0xffff_ffff,
            keys.len()
        );
        start = end;
    }
    Ok(())
}

fn bench_key(i: u32) -> FlowKey {
    FlowKey {
        ifindex: 1,
        vlan: 0,
        direction: DIR_INGRESS,
        proto: 17,
        src: ipv4_mapped([198, 18, (i >> 16) as u8, (i >> 8) as u8]),
        dst: ipv4_mapped([198, 19, 0, 1]),
        sport: i as u16,
        dport: 53,
    }
}

/// The classic drain: `GET_NEXT_KEY`, `LOOKUP`, `DELETE` per key. The next
/// key is fetched before the current one is deleted (a deleted key would
/// restart the walk from the first bucket).
fn drain_key_by_key(
    map: BorrowedFd<'_>,
    mut sink: impl FnMut(&FlowKey, &FlowStats),
) -> io::Result<usize> {
    let fd = map.as_raw_fd() as u64;
    let next_key = |prev: Option<&FlowKey>, out: &mut FlowKey| -> io::Result<bool> {
        let mut attr = Attr::default();
        attr.words[0] = fd;
        attr.words[1] = prev.map_or(0, |k| k as *const FlowKey as u64);
        attr.words[2] = out as *mut FlowKey as u64;
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    };
    let mut key = FlowKey::default();
    if !next_key(None, &mut key)? {
        return Ok(0);
    }
    let mut count = 0;
    loop {
        let mut next = FlowKey::default();
        let more = next_key(Some(&key), &mut next)?;
        let mut value = FlowStats::default();
        let mut attr = Attr::default();
        attr.words[0] = fd;
        attr.words[1] = &raw const key as u64;
        attr.words[2] = &raw mut value as u64;
        bpf(BPF_MAP_LOOKUP_ELEM, &mut attr)?;
        let mut attr = Attr::default();
        attr.words[0] = fd;
        attr.words[1] = &raw const key as u64;
        bpf(BPF_MAP_DELETE_ELEM, &mut attr)?;
        sink(&key, &value);
        count += 1;
        if !more {
            return Ok(count);
        }
        key = next;
    }
}

// ------------------------------------------------------------ statistics

/// Median and range of a sample.
#[derive(Clone, Copy)]
struct Summary {
    median: f64,
    min: f64,
    max: f64,
}

fn summarize(v: &[f64]) -> Summary {
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

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = if self.max < 100.0 { 1 } else { 0 };
        write!(f, "{:.p$} ({:.p$}–{:.p$})", self.median, self.min, self.max)
    }
}

// ------------------------------------------------------------ per packet

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Xdp,
    Tc,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Self::Xdp => "XDP",
            Self::Tc => "TC",
        }
    }

    /// One `BPF_PROG_TEST_RUN`; `meta` goes in the XDP metadata area (XDP only).
    fn run(
        self,
        prog: BorrowedFd<'_>,
        meta: &[u8],
        frame: &[u8],
        repeat: u32,
    ) -> anyhow::Result<TestRunResult> {
        let (r, want) = match self {
            Self::Xdp => (sys::xdp_test_run(prog, meta, frame, repeat)?, XDP_PASS),
            Self::Tc => (sys::test_run_plain(prog, frame, repeat)?, TC_ACT_UNSPEC),
        };
        ensure!(
            r.retval == want,
            "{} verdict {} (want {want})",
            self.name(),
            r.retval
        );
        Ok(r)
    }
}

/// Existing-flow samples of one (hook, frame): flowd and empty, one pair per round.
struct Existing {
    hook: Hook,
    label: String,
    frame: Vec<u8>,
    meta: Vec<u8>,
    flowd: Vec<f64>,
    empty: Vec<f64>,
}

/// New-flow samples of one (hook, frame), one per round: flowd on distinct
/// flows, flowd on one flow (same method, the control) and empty; kernel ns
/// per run and wall-clock ns per call.
struct New {
    hook: Hook,
    kind: usize,
    flowd: Vec<(f64, f64)>,
    control: Vec<(f64, f64)>,
    empty: Vec<(f64, f64)>,
}

/// One pass of `n` test runs with `repeat` 1, each on a frame of its own
/// flow (`distinct`) or all on the same flow. Returns the kernel's mean ns
/// per run and the wall-clock ns per call.
fn one_run_per_call(
    hook: Hook,
    prog: BorrowedFd<'_>,
    kind: &Kind,
    n: u32,
    distinct: bool,
) -> anyhow::Result<(f64, f64)> {
    let mut buf = kind.frame.clone();
    let mut kernel_ns: u64 = 0;
    let t = Instant::now();
    for i in 0..n {
        if distinct {
            kind.set_flow(&mut buf, i);
        }
        kernel_ns += hook.run(prog, &[], &buf, 1)?.duration_ns as u64;
    }
    let wall = t.elapsed().as_nanos() as f64;
    Ok((kernel_ns as f64 / n as f64, wall / n as f64))
}

/// `ReplayMeta` bytes (the program then reads neither clock nor buffer length).
fn replay_meta(wire_len: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(16);
    m.extend_from_slice(&flowd_common::REPLAY_META_MAGIC.to_le_bytes());
    m.extend_from_slice(&wire_len.to_le_bytes());
    m.extend_from_slice(&1_000_000u64.to_le_bytes());
    m
}

/// Runs `f` for each item of `order`, rotated by `round` so no program is
/// always first.
fn rotated<T>(
    round: usize,
    mut order: Vec<T>,
    mut f: impl FnMut(T) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let n = order.len();
    order.rotate_left(round % n);
    for x in order {
        f(x)?;
    }
    Ok(())
}

fn pm(s: Summary, target: f64) -> &'static str {
    if s.median <= target { "PASS" } else { "MISS" }
}

fn per_packet(plan: &Plan) -> anyhow::Result<()> {
    let kinds = kinds();
    let mut dp = Datapath::load(DEFAULT_FLOW_CAPACITY).context("loading flowd")?;
    dp.set_slot(1, 1)?;
    let empty_xdp = load_empty(
        BPF_PROG_TYPE_XDP,
        XDP_PASS as i32,
        BPF_F_XDP_HAS_FRAGS,
        "empty_xdp",
    )?;
    let empty_tc = load_empty(BPF_PROG_TYPE_SCHED_CLS, -1, 0, "empty_tc")?;

    let mut existing = Vec::new();
    let mut new = Vec::new();
    for hook in [Hook::Xdp, Hook::Tc] {
        for (k, kind) in kinds.iter().enumerate() {
            existing.push(Existing {
                hook,
                label: kind.name.into(),
                frame: kind.frame.clone(),
                meta: Vec::new(),
                flowd: Vec::new(),
                empty: Vec::new(),
            });
            new.push(New {
                hook,
                kind: k,
                flowd: Vec::new(),
                control: Vec::new(),
                empty: Vec::new(),
            });
        }
    }
    // Where the time goes (XDP): no flow map at all, and no clock reads.
    let mut arp = eth(None, 0x0806);
    arp.resize(64, 0);
    let breakdown_from = existing.len();
    existing.push(Existing {
        hook: Hook::Xdp,
        label: "ARP 64 B (parse + totals, no flow map)".into(),
        frame: arp,
        meta: Vec::new(),
        flowd: Vec::new(),
        empty: Vec::new(),
    });
    existing.push(Existing {
        hook: Hook::Xdp,
        label: "IPv4 TCP 64 B with ReplayMeta (no clock, no buffer-length helper)".into(),
        frame: kinds[0].frame.clone(),
        meta: replay_meta(64),
        flowd: Vec::new(),
        empty: Vec::new(),
    });

    // Warm-up; each existing-path flow is inserted here, not while measured.
    for s in &existing {
        let (flowd_fd, empty_fd) = match s.hook {
            Hook::Xdp => (dp.ingress_fd()?, empty_xdp.as_fd()),
            Hook::Tc => (dp.egress_fd()?, empty_tc.as_fd()),
        };
        s.hook.run(flowd_fd, &s.meta, &s.frame, 1000)?;
        s.hook.run(empty_fd, &s.meta, &s.frame, 1000)?;
    }

    for round in 0..plan.rounds {
        eprintln!("per-packet round {}/{}", round + 1, plan.rounds);
        for s in &mut existing {
            let (flowd_fd, empty_fd) = match s.hook {
                Hook::Xdp => (dp.ingress_fd()?, empty_xdp.as_fd()),
                Hook::Tc => (dp.egress_fd()?, empty_tc.as_fd()),
            };
            rotated(round, vec![true, false], |is_flowd| {
                let fd = if is_flowd { flowd_fd } else { empty_fd };
                let ns = s.hook.run(fd, &s.meta, &s.frame, plan.repeat)?.duration_ns as f64;
                if is_flowd { &mut s.flowd } else { &mut s.empty }.push(ns);
                Ok(())
            })?;
        }
        for s in &mut new {
            let kind = &kinds[s.kind];
            let (flowd_fd, empty_fd) = match s.hook {
                Hook::Xdp => (dp.ingress_fd()?, empty_xdp.as_fd()),
                Hook::Tc => (dp.egress_fd()?, empty_tc.as_fd()),
            };
            rotated(round, vec![0, 1, 2], |which| {
                let (fd, distinct, out) = match which {
                    0 => (flowd_fd, true, &mut s.flowd),
                    1 => (flowd_fd, false, &mut s.control),
                    _ => (empty_fd, true, &mut s.empty),
                };
                out.push(one_run_per_call(
                    s.hook,
                    fd,
                    kind,
                    plan.new_flows,
                    distinct,
                )?);
                Ok(())
            })?;
            // Every distinct flow must have been an insert: count them out,
            // and leave an empty map for the next pass.
            let dir = if s.hook == Hook::Xdp {
                DIR_INGRESS
            } else {
                DIR_EGRESS
            };
            let mut fresh = 0u32;
            dp.drain_all(|k, v| {
                if k.direction == dir && v.packets == 1 {
                    fresh += 1;
                }
            })?;
            ensure!(
                fresh == plan.new_flows,
                "new-flow pass inserted {fresh} of {} flows",
                plan.new_flows
            );
        }
    }
    for dir in [DIR_INGRESS, DIR_EGRESS] {
        let t = dp.totals(1, dir)?;
        ensure!(
            t.c[counter::OVERFLOW_PACKETS] == 0 && t.c[counter::INSERT_RACE] == 0,
            "unexpected overflow or insert race: {t:?}"
        );
    }

    let deltas = |f: &[f64], e: &[f64]| -> Summary {
        let d: Vec<f64> = f.iter().zip(e).map(|(f, e)| f - e).collect();
        summarize(&d)
    };
    println!(
        "## existing-flow path (ns per packet, kernel-measured, repeat {}; median (min–max) of {} rounds)\n",
        plan.repeat, plan.rounds
    );
    println!("| hook | frame | flowd | empty | flowd − empty | target | result |");
    println!("|---|---|---|---|---|---|---|");
    for s in &existing[..breakdown_from] {
        let d = deltas(&s.flowd, &s.empty);
        println!(
            "| {} | {} | {} | {} | {d} | ≤ {TARGET_EXISTING_NS:.0} | {} |",
            s.hook.name(),
            s.label,
            summarize(&s.flowd),
            summarize(&s.empty),
            pm(d, TARGET_EXISTING_NS)
        );
    }
    println!("\nwhere the time goes (XDP, same method):\n");
    println!("| frame | flowd | empty | flowd − empty |");
    println!("|---|---|---|---|");
    for s in &existing[breakdown_from..] {
        println!(
            "| {} | {} | {} | {} |",
            s.label,
            summarize(&s.flowd),
            summarize(&s.empty),
            deltas(&s.flowd, &s.empty)
        );
    }

    println!(
        "\n## new-flow path (ns per packet; {} distinct flows per pass, one test run per call, kernel-measured; median (min–max) of {} rounds)\n",
        plan.new_flows, plan.rounds
    );
    println!(
        "| hook | frame | flowd, new flows | flowd, one flow (control) | empty | new − empty | target | result | new − control |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let kern = |v: &[(f64, f64)]| v.iter().map(|x| x.0).collect::<Vec<_>>();
    let wall = |v: &[(f64, f64)]| v.iter().map(|x| x.1).collect::<Vec<_>>();
    for s in &new {
        let (f, c, e) = (kern(&s.flowd), kern(&s.control), kern(&s.empty));
        let d = deltas(&f, &e);
        println!(
            "| {} | {} | {} | {} | {} | {d} | ≤ {TARGET_NEW_NS:.0} | {} | {} |",
            s.hook.name(),
            kinds[s.kind].name,
            summarize(&f),
            summarize(&c),
            summarize(&e),
            pm(d, TARGET_NEW_NS),
            deltas(&f, &c)
        );
    }
    println!(
        "\nsame passes, wall clock per call (ns; the syscall, copying the frame in, setting up the buffer):\n"
    );
    println!("| hook | frame | flowd, new flows | flowd, one flow | empty | new − empty |");
    println!("|---|---|---|---|---|---|");
    for s in &new {
        let (f, c, e) = (wall(&s.flowd), wall(&s.control), wall(&s.empty));
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            s.hook.name(),
            kinds[s.kind].name,
            summarize(&f),
            summarize(&c),
            summarize(&e),
            deltas(&f, &e)
        );
    }
    Ok(())
}

// ------------------------------------------------------------ drain

#[derive(Clone, Copy)]
enum Method {
    DrainAll,
    Batch,
    KeyByKey,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Self::DrainAll => "Datapath::drain_all (2 flips + RCU waits + batch)",
            Self::Batch => "BPF_MAP_LOOKUP_AND_DELETE_BATCH alone (sys::drain_hash, 8192/call)",
            Self::KeyByKey => "GET_NEXT_KEY + LOOKUP + DELETE per key",
        }
    }
}

fn drains(plan: &Plan) -> anyhow::Result<()> {
    const METHODS: [Method; 3] = [Method::DrainAll, Method::Batch, Method::KeyByKey];
    let mut rows = Vec::new();
    let mut fixed = Vec::new();
    for &(n, reps) in plan.drains {
        let capacity = n.max(DEFAULT_FLOW_CAPACITY);
        let mut dp = Datapath::load(capacity)
            .with_context(|| format!("loading flowd with {capacity} flows"))?;
        let map = flow_map(&dp, maps::FLOWS_0)?;
        let mut samples = vec![Vec::new(); METHODS.len()];
        for rep in 0..reps {
            eprintln!("drain {n} flows, repetition {}/{reps}", rep + 1);
            for j in 0..METHODS.len() {
                // Rotate the order from one repetition to the next.
                let m = (j + rep) % METHODS.len();
                fill(map.as_fd(), n)?;
                let mut packets = 0u64;
                let sink = |_: &FlowKey, v: &FlowStats| packets += v.packets;
                let t = Instant::now();
                let count = match METHODS[m] {
                    Method::DrainAll => dp.drain_all(sink)?,
                    Method::Batch => sys::drain_hash(map.as_fd(), maps::FLOWS_0, 8192, sink)?,
                    Method::KeyByKey => drain_key_by_key(map.as_fd(), sink)?,
                };
                let ns = t.elapsed().as_nanos() as f64;
                ensure!(
                    count == n as usize && packets == n as u64,
                    "{} drained {count} entries ({packets} packets) of {n}",
                    METHODS[m].name()
                );
                samples[m].push(ns);
            }
        }
        if fixed.is_empty() {
            // drain_all's fixed cost: two generation flips and RCU waits.
            for _ in 0..reps {
                let t = Instant::now();
                ensure!(dp.drain_all(|_, _| {})? == 0, "map not empty");
                fixed.push(t.elapsed().as_nanos() as f64);
            }
        }
        rows.push((n, capacity, reps, samples));
    }

    println!("\n## drain (median (min–max))\n");
    println!("| flows | map capacity | method | total ms | ns per flow |");
    println!("|---|---|---|---|---|");
    for (n, capacity, _reps, samples) in &rows {
        for (m, s) in METHODS.iter().zip(samples) {
            let ms: Vec<f64> = s.iter().map(|ns| ns / 1e6).collect();
            let per: Vec<f64> = s.iter().map(|ns| ns / *n as f64).collect();
            println!(
                "| {n} | {capacity} | {} | {} | {} |",
                m.name(),
                summarize(&ms),
                summarize(&per)
            );
        }
    }
    let us: Vec<f64> = fixed.iter().map(|ns| ns / 1e3).collect();
    println!(
        "\ndrain_all on empty maps (its fixed cost: two flips, two RCU waits, two empty batch calls): {} µs",
        summarize(&us)
    );
    println!(
        "repetitions: {}",
        rows.iter()
            .map(|(n, _, r, _)| format!("{n} flows × {r}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
