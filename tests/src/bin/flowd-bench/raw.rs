//! Raw `bpf(2)` commands the benchmarks need and the loader does not wrap:
//! tiny hand-assembled programs, test runs in live-frame mode, XDP links
//! for raw programs, run-time statistics, map memory from fdinfo.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use anyhow::{Context as _, bail};

pub(super) const BPF_MAP_CREATE: libc::c_long = 0;
pub(super) const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
pub(super) const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
pub(super) const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
pub(super) const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
pub(super) const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
pub(super) const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_LINK_CREATE: libc::c_long = 28;

pub(super) const BPF_MAP_TYPE_HASH: u32 = 1;
pub(super) const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
pub(super) const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
pub(super) const BPF_PROG_TYPE_XDP: u32 = 6;
/// flowd's XDP program is loaded with it (`#[xdp(frags)]`); so is the empty one.
pub(super) const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

pub(super) const XDP_PASS: u32 = 2;
pub(super) const XDP_TX: u32 = 3;

pub(super) use flowd::sys::{Attr, XdpMd, bpf};

/// One BPF instruction: opcode, registers, offset, immediate.
pub(super) const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    code as u64
        | ((dst as u64 & 0xf) << 8)
        | ((src as u64 & 0xf) << 12)
        | ((off as u16 as u64) << 16)
        | ((imm as u32 as u64) << 32)
}

/// `r0 = imm; exit`.
pub(super) fn ret_insns(imm: i32) -> Vec<u64> {
    // BPF_ALU64 | BPF_MOV | BPF_K, then BPF_JMP | BPF_EXIT.
    vec![insn(0xb7, 0, 0, 0, imm), insn(0x95, 0, 0, 0, 0)]
}

/// Synthetic: zeroes `n` stack bytes one byte at a time (the loop the
/// linked-in `memset` runs), then `XDP_PASS`.
pub(super) fn zero_bytes_insns(n: i32) -> Vec<u64> {
    vec![
        insn(0xbf, 1, 10, 0, 0), // r1 = r10
        insn(0x07, 1, 0, 0, -n), // r1 += -n
        insn(0xb7, 4, 0, 0, 0),  // r4 = 0
        insn(0xbf, 5, 1, 0, 0),  // r5 = r1
        insn(0x0f, 5, 4, 0, 0),  // r5 += r4
        insn(0x72, 5, 0, 0, 0),  // *(u8 *)(r5 + 0) = 0
        insn(0x07, 4, 0, 0, 1),  // r4 += 1
        insn(0xa5, 4, 0, -5, n), // if r4 < n goto -5
        insn(0xb7, 0, 0, 0, XDP_PASS as i32),
        insn(0x95, 0, 0, 0, 0),
    ]
}

/// Synthetic: zeroes `n` (a multiple of 8) stack bytes with 8-byte stores,
/// then `XDP_PASS`.
pub(super) fn zero_words_insns(n: i32) -> Vec<u64> {
    let mut v: Vec<u64> = (1..=n / 8)
        .map(|k| insn(0x7a, 10, 0, (-8 * k) as i16, 0)) // *(u64 *)(r10 - 8k) = 0
        .collect();
    v.push(insn(0xb7, 0, 0, 0, XDP_PASS as i32));
    v.push(insn(0x95, 0, 0, 0, 0));
    v
}

/// An XDP traffic generator for live-frame test runs: writes a random
/// 16-bit source port (bytes 34..36) and random low 16 bits of the IPv4
/// source address (bytes 28..30, so it stays in 198.18.0.0/16) into the
/// frame, then `XDP_TX`. Frame data persists between runs of a page, so
/// every transmitted frame is a new flow with high probability.
pub(super) fn random_source_insns() -> Vec<u64> {
    vec![
        insn(0x61, 6, 1, 0, 0),             // r6 = ctx->data (u32 load)
        insn(0x61, 7, 1, 4, 0),             // r7 = ctx->data_end
        insn(0xbf, 2, 6, 0, 0),             // r2 = r6
        insn(0x07, 2, 0, 0, 36),            // r2 += 36
        insn(0x2d, 2, 7, 4, 0),             // if r2 > r7 goto +4 (to r0 = XDP_TX)
        insn(0x85, 0, 0, 0, 7),             // call bpf_get_prandom_u32
        insn(0x6b, 6, 0, 34, 0),            // *(u16 *)(r6 + 34) = r0 (source port)
        insn(0x77, 0, 0, 0, 16),            // r0 >>= 16
        insn(0x6b, 6, 0, 28, 0),            // *(u16 *)(r6 + 28) = r0 (source address, low half)
        insn(0xb7, 0, 0, 0, XDP_TX as i32), // r0 = XDP_TX
        insn(0x95, 0, 0, 0, 0),             // exit
    ]
}

/// Loads hand-assembled instructions as a program of `prog_type` (without a
/// verifier log; on failure once more with one, for the error).
pub(super) fn load_prog(
    prog_type: u32,
    insns: &[u64],
    flags: u32,
    name: &str,
) -> anyhow::Result<OwnedFd> {
    let license = b"GPL\0";
    let mut log = vec![0u8; 1 << 20];
    let mut n = [0u8; 16];
    let len = name.len().min(15);
    n[..len].copy_from_slice(&name.as_bytes()[..len]);
    let mut err = None;
    for log_level in [0u64, 1] {
        let mut attr = Attr::default();
        attr.words[0] = prog_type as u64 | ((insns.len() as u64) << 32);
        attr.words[1] = insns.as_ptr() as u64;
        attr.words[2] = license.as_ptr() as u64;
        if log_level > 0 {
            attr.words[3] = log_level | ((log.len() as u64) << 32); // log_level, log_size
            attr.words[4] = log.as_mut_ptr() as u64;
        }
        attr.words[5] = (flags as u64) << 32; // kern_version, prog_flags
        attr.words[6] = u64::from_le_bytes(n[..8].try_into().expect("8 bytes"));
        attr.words[7] = u64::from_le_bytes(n[8..].try_into().expect("8 bytes"));
        match bpf(BPF_PROG_LOAD, &mut attr) {
            // SAFETY: the kernel returned a new program fd that we now own.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
            Err(e) => err = Some(e),
        }
    }
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let tail = String::from_utf8_lossy(&log[end.saturating_sub(2000)..end]).into_owned();
    bail!(
        "BPF_PROG_LOAD of {name}: {}; verifier log (end): {tail}",
        err.map_or_else(|| "?".into(), |e| e.to_string())
    )
}

/// Runs an XDP program `repeat` times in live-frame mode: every `XDP_TX`
/// verdict transmits the frame out of `ifindex` (in the calling thread's
/// network namespace). Returns when all frames were handed to the device.
pub(super) fn xdp_live_frames(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    frame: &[u8],
    repeat: u32,
) -> io::Result<()> {
    let mut ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex: ifindex,
        ..Default::default()
    };
    let mut attr = Attr::default();
    attr.words[0] = prog.as_raw_fd() as u64;
    attr.words[1] = frame.len() as u64;
    attr.words[2] = frame.as_ptr() as u64;
    attr.words[4] = repeat as u64;
    attr.words[5] = size_of::<XdpMd>() as u64;
    attr.words[6] = &raw mut ctx as u64;
    attr.words[8] = BPF_F_TEST_XDP_LIVE_FRAMES as u64; // flags; cpu = 0
    // batch_size (words[9]) 0: the kernel's default, 64 frames per batch.
    bpf(BPF_PROG_TEST_RUN, &mut attr).map(drop)
}

/// Attaches an XDP program to `ifindex` (in the calling thread's network
/// namespace) in native mode through a bpf_link; closing the fd detaches.
pub(super) fn xdp_link(prog: BorrowedFd<'_>, ifindex: u32) -> anyhow::Result<OwnedFd> {
    let mut attr = Attr::default();
    attr.words[0] = prog.as_raw_fd() as u64 | ((ifindex as u64) << 32);
    attr.words[1] = BPF_XDP as u64 | ((XDP_FLAGS_DRV_MODE as u64) << 32);
    let fd = bpf(BPF_LINK_CREATE, &mut attr).context("BPF_LINK_CREATE (XDP, native)")?;
    // SAFETY: the kernel returned a new link fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The kernel's run-time statistics of a program: (run_time_ns, run_cnt).
pub(super) fn prog_run_stats(prog: BorrowedFd<'_>) -> anyhow::Result<(u64, u64)> {
    // struct bpf_prog_info up to run_cnt (byte 208) and a little beyond.
    let mut info = [0u64; 28];
    let mut attr = Attr::default();
    attr.words[0] = prog.as_raw_fd() as u64 | ((size_of_val(&info) as u64) << 32);
    attr.words[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("BPF_OBJ_GET_INFO_BY_FD")?;
    Ok((info[24], info[25]))
}

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The size of a loaded program: (xlated instructions, instructions the
/// verifier processed).
pub(super) fn prog_sizes(prog: BorrowedFd<'_>) -> anyhow::Result<(u64, u64)> {
    flowd::sys::prog_verifier_work(prog).context("BPF_OBJ_GET_INFO_BY_FD")
}

/// `kernel.bpf_stats_enabled = 1` while it lives; the old value is written
/// back on drop (also when the measurement fails).
pub(super) struct StatsOn {
    old: String,
}

impl StatsOn {
    pub(super) fn new() -> anyhow::Result<Self> {
        let old = std::fs::read_to_string(BPF_STATS_SYSCTL)
            .context("reading kernel.bpf_stats_enabled")?
            .trim()
            .to_owned();
        std::fs::write(BPF_STATS_SYSCTL, "1").context("setting kernel.bpf_stats_enabled")?;
        Ok(Self { old })
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(BPF_STATS_SYSCTL, &self.old) {
            eprintln!(
                "restoring kernel.bpf_stats_enabled = {} failed: {e}",
                self.old
            );
        }
    }
}

/// Creates a preallocated map.
pub(super) fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> io::Result<OwnedFd> {
    let mut attr = Attr::default();
    attr.words[0] = map_type as u64 | ((key_size as u64) << 32);
    attr.words[1] = value_size as u64 | ((max_entries as u64) << 32);
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// One BPF map as `/proc/self/fdinfo` shows it.
#[derive(Debug, Clone)]
pub(super) struct MapFdInfo {
    pub(super) fd: i32,
    pub(super) map_type: u32,
    pub(super) max_entries: u64,
    pub(super) memlock: u64,
    pub(super) map_id: u32,
}

/// The map fdinfo of one fd, if it is a map.
pub(super) fn map_fdinfo(fd: i32) -> Option<MapFdInfo> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(MapFdInfo {
        fd,
        map_type: field("map_type:")? as u32,
        max_entries: field("max_entries:").unwrap_or(0),
        memlock: field("memlock:").unwrap_or(0),
        map_id: field("map_id:").unwrap_or(0) as u32,
    })
}

/// Every map fd this process holds.
pub(super) fn all_map_fds() -> Vec<MapFdInfo> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut v: Vec<MapFdInfo> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(map_fdinfo)
        .collect();
    v.sort_by_key(|m| m.fd);
    v
}
