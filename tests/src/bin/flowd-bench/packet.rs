//! Part 1: per-packet cost of flowd's XDP and TC programs against empty
//! programs, through `BPF_PROG_TEST_RUN`, with the RTT signals on (the
//! default) and off.

use std::{
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    time::Instant,
};

use anyhow::{Context as _, ensure};
use flowd_common::{DEFAULT_FLOW_CAPACITY, DIR_EGRESS, DIR_INGRESS, counter};
use flowd_tests::packet::eth;

use super::{
    Plan, Summary, Targets,
    raw::{self, BPF_F_XDP_HAS_FRAGS, BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, XDP_PASS},
    summarize,
};
use flowd::{
    loader::Datapath,
    sys::{self, TestRunResult},
};

/// Targets over the empty program, ns per packet.
pub(super) const TARGET_EXISTING_NS: f64 = 70.0;
pub(super) const TARGET_NEW_NS: f64 = 250.0;

const TC_ACT_UNSPEC: u32 = -1i32 as u32;

// ------------------------------------------------------------ frames

/// One benchmark frame and where to write a flow number into it.
pub(super) struct Kind {
    pub(super) name: &'static str,
    pub(super) frame: Vec<u8>,
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

pub(super) const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
pub(super) const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

/// Ethernet (+ tag) + IPv4 + TCP (ACK, optionally with a timestamp
/// option), padded to `total` bytes.
fn ipv4_tcp(name: &'static str, tag: Option<u16>, total: usize, ts: bool) -> Kind {
    let mut f = eth(MAC_B, MAC_A, tag, 0x0800);
    let l3 = f.len();
    let ip_len = (total - l3) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&[198, 18, 0, 1, 198, 19, 0, 2]);
    let l4 = f.len();
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&443u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
    if ts {
        // Data offset 8 words: NOP, NOP, TS (kind 8, length 10, TSval, TSecr).
        f.extend_from_slice(&[0x80, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0x10, 0, 0, 0, 0x0f, 0]);
    } else {
        f.extend_from_slice(&[0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    }
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
    let mut f = eth(MAC_B, MAC_A, None, 0x86dd);
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
        ipv4_tcp("IPv4 TCP 64 B", None, 64, false),
        ipv4_tcp("IPv4 TCP 1514 B", None, 1514, false),
        ipv6_udp("IPv6 UDP 128 B", 128),
        ipv4_tcp("802.1Q IPv4 TCP 68 B", Some(100), 68, false),
        ipv4_tcp("IPv4 TCP 66 B + timestamps", None, 66, true),
    ]
}

// ------------------------------------------------------------ test runs

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Hook {
    Xdp,
    Tc,
}

impl Hook {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Xdp => "XDP",
            Self::Tc => "TC",
        }
    }

    /// One `BPF_PROG_TEST_RUN`; `meta` goes in the XDP metadata area (XDP only).
    pub(super) fn run(
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

/// What one measurement runs: flowd with RTT on, flowd with RTT off, or the
/// empty program.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prog {
    RttOn,
    RttOff,
    Empty,
}

/// Existing-flow samples of one (hook, frame), one per round.
struct Existing {
    /// A synthetic program measured in flowd's place (no RTT-off variant).
    custom: Option<OwnedFd>,
    hook: Hook,
    label: String,
    frame: Vec<u8>,
    meta: Vec<u8>,
    on: Vec<f64>,
    off: Vec<f64>,
    empty: Vec<f64>,
}

/// New-flow samples of one (hook, frame), one per round: flowd on distinct
/// flows (RTT on and off), flowd on one flow (same method, the control) and
/// empty; kernel ns per run and wall-clock ns per call.
struct New {
    hook: Hook,
    kind: usize,
    on: Vec<(f64, f64)>,
    off: Vec<(f64, f64)>,
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
pub(super) fn rotated<T>(
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

pub(super) fn deltas(f: &[f64], e: &[f64]) -> Summary {
    let d: Vec<f64> = f.iter().zip(e).map(|(f, e)| f - e).collect();
    summarize(&d)
}

/// The programs' fds, owned (so `Datapath::set_rtt` can borrow it mutably).
struct Fds {
    ingress: OwnedFd,
    egress: OwnedFd,
    empty_xdp: OwnedFd,
    empty_tc: OwnedFd,
}

impl Fds {
    fn get(&self, hook: Hook, prog: Prog) -> BorrowedFd<'_> {
        match (hook, prog) {
            (Hook::Xdp, Prog::Empty) => self.empty_xdp.as_fd(),
            (Hook::Tc, Prog::Empty) => self.empty_tc.as_fd(),
            (Hook::Xdp, _) => self.ingress.as_fd(),
            (Hook::Tc, _) => self.egress.as_fd(),
        }
    }
}

pub(super) fn run(plan: &Plan, targets: &mut Targets) -> anyhow::Result<()> {
    let kinds = kinds();
    let mut dp = Datapath::load(DEFAULT_FLOW_CAPACITY).context("loading flowd")?;
    dp.set_slot(1, 1)?;
    let fds = Fds {
        ingress: dp.ingress_fd()?.try_clone_to_owned()?,
        egress: dp.egress_fd()?.try_clone_to_owned()?,
        empty_xdp: raw::load_prog(
            BPF_PROG_TYPE_XDP,
            &raw::ret_insns(XDP_PASS as i32),
            BPF_F_XDP_HAS_FRAGS,
            "empty_xdp",
        )?,
        empty_tc: raw::load_prog(BPF_PROG_TYPE_SCHED_CLS, &raw::ret_insns(-1), 0, "empty_tc")?,
    };

    let mut existing = Vec::new();
    let mut new = Vec::new();
    for hook in [Hook::Xdp, Hook::Tc] {
        for (k, kind) in kinds.iter().enumerate() {
            existing.push(Existing {
                custom: None,
                hook,
                label: kind.name.into(),
                frame: kind.frame.clone(),
                meta: Vec::new(),
                on: Vec::new(),
                off: Vec::new(),
                empty: Vec::new(),
            });
            new.push(New {
                hook,
                kind: k,
                on: Vec::new(),
                off: Vec::new(),
                control: Vec::new(),
                empty: Vec::new(),
            });
        }
    }
    // Where the time goes (XDP): no flow map at all, and no clock reads.
    let mut arp = eth(MAC_B, MAC_A, None, 0x0806);
    arp.resize(64, 0);
    let breakdown_from = existing.len();
    for (label, frame, meta) in [
        ("ARP 64 B (parse + totals, no flow map)", arp, Vec::new()),
        (
            "IPv4 TCP 64 B with ReplayMeta (no clock, no buffer-length helper)",
            kinds[0].frame.clone(),
            replay_meta(64),
        ),
    ] {
        existing.push(Existing {
            custom: None,
            hook: Hook::Xdp,
            label: label.into(),
            frame,
            meta,
            on: Vec::new(),
            off: Vec::new(),
            empty: Vec::new(),
        });
    }

    // What 80 bytes of zeroing cost (the flow key and `L4Info` are zeroed
    // on every packet; the verified program calls a byte-loop `memset`).
    for (label, insns) in [
        (
            "synthetic: zero 80 stack bytes one byte at a time (a `memset` byte loop)",
            raw::zero_bytes_insns(80),
        ),
        (
            "synthetic: zero 80 stack bytes with ten 8-byte stores",
            raw::zero_words_insns(80),
        ),
    ] {
        existing.push(Existing {
            custom: Some(raw::load_prog(
                BPF_PROG_TYPE_XDP,
                &insns,
                BPF_F_XDP_HAS_FRAGS,
                "bench_zero",
            )?),
            hook: Hook::Xdp,
            label: label.into(),
            frame: kinds[0].frame.clone(),
            meta: Vec::new(),
            on: Vec::new(),
            off: Vec::new(),
            empty: Vec::new(),
        });
    }

    // Warm-up; each existing-path flow is inserted here, not while measured.
    for s in &existing {
        for p in [Prog::RttOn, Prog::Empty] {
            let fd = match (&s.custom, p) {
                (Some(c), Prog::RttOn) => c.as_fd(),
                _ => fds.get(s.hook, p),
            };
            s.hook.run(fd, &s.meta, &s.frame, 1000)?;
        }
    }

    for round in 0..plan.rounds {
        eprintln!("per-packet round {}/{}", round + 1, plan.rounds);
        for s in &mut existing {
            let progs = if s.custom.is_some() {
                vec![Prog::RttOn, Prog::Empty]
            } else {
                vec![Prog::RttOn, Prog::RttOff, Prog::Empty]
            };
            rotated(round, progs, |p| {
                if p != Prog::Empty && s.custom.is_none() {
                    dp.set_rtt(p == Prog::RttOn)?;
                }
                let fd = match (&s.custom, p) {
                    (Some(c), Prog::RttOn) => c.as_fd(),
                    _ => fds.get(s.hook, p),
                };
                let ns = s.hook.run(fd, &s.meta, &s.frame, plan.repeat)?.duration_ns as f64;
                match p {
                    Prog::RttOn => &mut s.on,
                    Prog::RttOff => &mut s.off,
                    Prog::Empty => &mut s.empty,
                }
                .push(ns);
                Ok(())
            })?;
        }
        for s in &mut new {
            let kind = &kinds[s.kind];
            let dir = if s.hook == Hook::Xdp {
                DIR_INGRESS
            } else {
                DIR_EGRESS
            };
            rotated(round, vec![0, 1, 2, 3], |which| {
                let (prog, distinct, out) = match which {
                    0 => (Prog::RttOn, true, &mut s.on),
                    1 => (Prog::RttOff, true, &mut s.off),
                    2 => (Prog::RttOn, false, &mut s.control),
                    _ => (Prog::Empty, true, &mut s.empty),
                };
                if prog != Prog::Empty {
                    dp.set_rtt(prog == Prog::RttOn)?;
                }
                out.push(one_run_per_call(
                    s.hook,
                    fds.get(s.hook, prog),
                    kind,
                    plan.new_flows,
                    distinct,
                )?);
                if prog != Prog::Empty && distinct {
                    // Every distinct flow must have been an insert: count
                    // them out, and leave an empty map for the next pass.
                    let mut fresh = 0u32;
                    dp.drain_all(|k, v| {
                        if k.direction == dir && v.counts.packets == 1 {
                            fresh += 1;
                        }
                    })?;
                    ensure!(
                        fresh == plan.new_flows,
                        "new-flow pass inserted {fresh} of {} flows",
                        plan.new_flows
                    );
                }
                Ok(())
            })?;
        }
    }
    dp.set_rtt(true)?;
    for dir in [DIR_INGRESS, DIR_EGRESS] {
        let t = dp.totals(1, dir)?;
        ensure!(
            t.c[counter::OVERFLOW_PACKETS] == 0 && t.c[counter::INSERT_RACE] == 0,
            "unexpected overflow or insert race: {t:?}"
        );
    }

    println!(
        "## 1. per packet: existing-flow path (ns per packet, kernel-measured, repeat {}; median (min–max) of {} rounds)\n",
        plan.repeat, plan.rounds
    );
    println!(
        "RTT on is the daemon's default. Method: `BPF_PROG_TEST_RUN` of flowd's program vs an empty program of the same hook, interleaved.\n"
    );
    println!(
        "| hook | frame | flowd (RTT on) | flowd (RTT off) | empty | on − empty | target | result | off − empty | on − off | ratio on / empty |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut pass_existing = 0;
    for (i, s) in existing[..breakdown_from].iter().enumerate() {
        let d = deltas(&s.on, &s.empty);
        let pass = d.median <= TARGET_EXISTING_NS;
        pass_existing += usize::from(pass);
        println!(
            "| {} | {} | {} | {} | {} | {d} | ≤ {TARGET_EXISTING_NS:.0} | {} | {} | {} | {:.2} |",
            s.hook.name(),
            s.label,
            summarize(&s.on),
            summarize(&s.off),
            summarize(&s.empty),
            super::pm(pass),
            deltas(&s.off, &s.empty),
            deltas(&s.on, &s.off),
            summarize(&s.on).median / summarize(&s.empty).median,
        );
        if i == 0 {
            targets.flowd_xdp_ns = Some(d.median);
            targets.add(
                "existing-flow path, XDP IPv4 TCP 64 B (flowd − empty)",
                format!("≤ {TARGET_EXISTING_NS:.0} ns"),
                format!("{:.0} ns", d.median),
                pass,
            );
        }
    }
    targets.add(
        "existing-flow path, every hook × frame",
        format!("≤ {TARGET_EXISTING_NS:.0} ns"),
        format!("{pass_existing} of {breakdown_from} pass"),
        pass_existing == breakdown_from,
    );
    println!(
        "\nwhere the time goes (XDP, RTT on, same method; the synthetic rows run their own program on the 64-byte frame):\n"
    );
    println!("| frame / program | flowd (or synthetic) | empty | − empty |");
    println!("|---|---|---|---|");
    for s in &existing[breakdown_from..] {
        println!(
            "| {} | {} | {} | {} |",
            s.label,
            summarize(&s.on),
            summarize(&s.empty),
            deltas(&s.on, &s.empty)
        );
    }

    println!(
        "\n## 1. per packet: new-flow path (ns per packet; {} distinct flows per pass, one test run per call, kernel-measured; median (min–max) of {} rounds)\n",
        plan.new_flows, plan.rounds
    );
    println!(
        "| hook | frame | flowd new (RTT on) | flowd new (RTT off) | flowd one flow (control) | empty | new − empty | target | result | off − empty | new − control |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let kern = |v: &[(f64, f64)]| v.iter().map(|x| x.0).collect::<Vec<_>>();
    let wall = |v: &[(f64, f64)]| v.iter().map(|x| x.1).collect::<Vec<_>>();
    let mut pass_new = 0;
    for (i, s) in new.iter().enumerate() {
        let (f, o, c, e) = (kern(&s.on), kern(&s.off), kern(&s.control), kern(&s.empty));
        let d = deltas(&f, &e);
        let pass = d.median <= TARGET_NEW_NS;
        pass_new += usize::from(pass);
        println!(
            "| {} | {} | {} | {} | {} | {} | {d} | ≤ {TARGET_NEW_NS:.0} | {} | {} | {} |",
            s.hook.name(),
            kinds[s.kind].name,
            summarize(&f),
            summarize(&o),
            summarize(&c),
            summarize(&e),
            super::pm(pass),
            deltas(&o, &e),
            deltas(&f, &c)
        );
        if i == 0 {
            targets.add(
                "new-flow path, XDP IPv4 TCP 64 B (flowd − empty)",
                format!("≤ {TARGET_NEW_NS:.0} ns"),
                format!("{:.0} ns", d.median),
                pass,
            );
        }
    }
    targets.add(
        "new-flow path, every hook × frame",
        format!("≤ {TARGET_NEW_NS:.0} ns"),
        format!("{pass_new} of {} pass", new.len()),
        pass_new == new.len(),
    );
    println!(
        "\nsame passes, wall clock per call (ns; the syscall, copying the frame in, setting up the buffer):\n"
    );
    println!("| hook | frame | flowd new (RTT on) | flowd one flow | empty | new − empty |");
    println!("|---|---|---|---|---|---|");
    for s in &new {
        let (f, c, e) = (wall(&s.on), wall(&s.control), wall(&s.empty));
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
