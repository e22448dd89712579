//! Small safe wrappers over `bpf(2)` commands aya 0.14 does not wrap:
//! batch update and `BPF_PROG_TEST_RUN` for XDP with a metadata area. The
//! drain's own commands (batch lookup-and-delete, the wait for running
//! programs) are in [`crate::drain`].

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use thiserror::Error;

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

#[derive(Debug, Error)]
pub enum SysError {
    #[error("bpf({cmd}) on map `{map}` failed: {source}")]
    Map {
        cmd: &'static str,
        map: String,
        #[source]
        source: io::Error,
    },
    #[error("bpf(BPF_PROG_TEST_RUN) failed: {0}")]
    TestRun(#[source] io::Error),
    #[error("creating the program-wait maps failed: {0}")]
    Wait(#[source] io::Error),
}

/// The subset of `union bpf_attr` each command here uses, zero-padded to
/// the size the kernel accepts (it checks that unused bytes are zero).
#[repr(C)]
#[derive(Default)]
pub struct Attr {
    pub words: [u64; 16],
}

/// `bpf(cmd, attr)`; every pointer in `attr` must point at live buffers of
/// the sizes the command implies.
pub fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, zero-initialised bpf_attr-sized buffer that
    // lives for the call; the kernel reads/writes at most size_of::<Attr>().
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

/// Writes `keys[i] -> values[i]` with `BPF_MAP_UPDATE_BATCH` (BPF_ANY).
pub fn update_batch<K: Copy, V: Copy>(
    map: BorrowedFd<'_>,
    map_name: &str,
    keys: &[K],
    values: &[V],
) -> Result<(), SysError> {
    assert_eq!(keys.len(), values.len());
    let mut done = 0;
    while done < keys.len() {
        let mut attr = Attr::default();
        attr.words[2] = keys[done..].as_ptr() as u64;
        attr.words[3] = values[done..].as_ptr() as u64;
        attr.words[4] = (keys.len() - done) as u64 | ((map.as_raw_fd() as u64) << 32);
        let r = bpf(BPF_MAP_UPDATE_BATCH, &mut attr);
        let count = (attr.words[4] & 0xffff_ffff) as usize;
        done += count;
        if let Err(source) = r {
            return Err(SysError::Map {
                cmd: "BPF_MAP_UPDATE_BATCH",
                map: map_name.to_owned(),
                source,
            });
        }
        if count == 0 {
            break;
        }
    }
    Ok(())
}

/// `struct xdp_md` as `BPF_PROG_TEST_RUN` takes it for its context.
#[repr(C)]
#[derive(Default)]
pub struct XdpMd {
    pub data: u32,
    pub data_end: u32,
    pub data_meta: u32,
    pub ingress_ifindex: u32,
    pub rx_queue_index: u32,
    pub egress_ifindex: u32,
}

/// Result of one `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone, Copy)]
pub struct TestRunResult {
    pub retval: u32,
    /// Average ns per run, as the kernel measured it.
    pub duration_ns: u32,
}

/// Runs an XDP program once (or `repeat` times) on `frame`, with `meta`
/// placed in the XDP metadata area in front of the frame. `meta.len()` must
/// be a multiple of 4 and at most 32 (the kernel's limits).
pub fn xdp_test_run(
    prog: BorrowedFd<'_>,
    meta: &[u8],
    frame: &[u8],
    repeat: u32,
) -> Result<TestRunResult, SysError> {
    let mut data = Vec::with_capacity(meta.len() + frame.len());
    data.extend_from_slice(meta);
    data.extend_from_slice(frame);
    xdp_test_run_buf(prog, &data, meta.len(), repeat)
}

/// Runs an XDP program on `data`, whose first `meta_len` bytes are the
/// metadata area (a multiple of 4, at most 32).
pub fn xdp_test_run_buf(
    prog: BorrowedFd<'_>,
    data: &[u8],
    meta_len: usize,
    repeat: u32,
) -> Result<TestRunResult, SysError> {
    let ctx = XdpMd {
        data: meta_len as u32,
        data_end: data.len() as u32,
        ..Default::default()
    };
    xdp_test_run_ctx(prog, data, ctx, repeat)
}

/// [`xdp_test_run_buf`] with the whole context given: `ingress_ifindex`
/// and `rx_queue_index` name a device of this network namespace and one
/// of its RX queues, which the program then sees as where the frame came
/// in (the AF_XDP workers run their frames so).
pub fn xdp_test_run_ctx(
    prog: BorrowedFd<'_>,
    data: &[u8],
    mut ctx: XdpMd,
    repeat: u32,
) -> Result<TestRunResult, SysError> {
    let mut attr = Attr::default();
    attr.words[0] = prog.as_raw_fd() as u64;
    attr.words[1] = data.len() as u64; // data_size_in; data_size_out = 0
    attr.words[2] = data.as_ptr() as u64;
    attr.words[4] = repeat as u64; // duration (out) in the high half
    attr.words[5] = size_of::<XdpMd>() as u64; // ctx_size_in; ctx_size_out = 0
    attr.words[6] = &raw mut ctx as u64;
    bpf(BPF_PROG_TEST_RUN, &mut attr).map_err(SysError::TestRun)?;
    Ok(TestRunResult {
        retval: (attr.words[0] >> 32) as u32,
        duration_ns: (attr.words[4] >> 32) as u32,
    })
}

/// Runs a program with no context (e.g. TC on a frame) `repeat` times.
pub fn test_run_plain(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    repeat: u32,
) -> Result<TestRunResult, SysError> {
    let mut attr = Attr::default();
    attr.words[0] = prog.as_raw_fd() as u64;
    attr.words[1] = frame.len() as u64;
    attr.words[2] = frame.as_ptr() as u64;
    attr.words[4] = repeat as u64;
    bpf(BPF_PROG_TEST_RUN, &mut attr).map_err(SysError::TestRun)?;
    Ok(TestRunResult {
        retval: (attr.words[0] >> 32) as u32,
        duration_ns: (attr.words[4] >> 32) as u32,
    })
}

/// Number of possible CPUs (the length of per-CPU map values).
pub fn possible_cpus() -> io::Result<usize> {
    aya::util::nr_cpus().map_err(|(_, e)| e)
}

/// How the kernel's jiffies map to CLOCK_MONOTONIC: jiffy `j` began at
/// `j * tick_ns - base_ns` (wrapping). Jiffies advance by one every
/// `TICK_NSEC` = (10^9 + HZ/2) / HZ of monotonic time, exactly
/// (`tick_do_update_jiffies64` counts whole ticks of ktime), so one
/// measured tick edge fixes the relation for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JiffyClock {
    pub hz: u64,
    pub tick_ns: u64,
    pub base_ns: u64,
}

impl JiffyClock {
    /// The monotonic ns at which jiffy `j` began.
    pub fn ns(&self, j: u64) -> u64 {
        j.wrapping_mul(self.tick_ns).wrapping_sub(self.base_ns)
    }
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_XDP: u64 = 6;

/// One BPF instruction.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    code as u64
        | ((dst as u64 & 0xf) << 8)
        | ((src as u64 & 0xf) << 12)
        | ((off as u16 as u64) << 16)
        | ((imm as u32 as u64) << 32)
}

/// An XDP program that writes `bpf_ktime_get_ns()`, `bpf_jiffies64()`,
/// `bpf_ktime_get_ns()` into the first 24 bytes of the frame.
const JIFFY_PROBE: [u64; 16] = [
    insn(0xbf, 6, 1, 0, 0),   // r6 = r1 (ctx)
    insn(0x85, 0, 0, 0, 5),   // call bpf_ktime_get_ns
    insn(0xbf, 7, 0, 0, 0),   // r7 = r0
    insn(0x85, 0, 0, 0, 118), // call bpf_jiffies64
    insn(0xbf, 8, 0, 0, 0),   // r8 = r0
    insn(0x85, 0, 0, 0, 5),   // call bpf_ktime_get_ns
    insn(0x61, 2, 6, 0, 0),   // r2 = ctx->data
    insn(0x61, 3, 6, 4, 0),   // r3 = ctx->data_end
    insn(0xbf, 4, 2, 0, 0),   // r4 = r2
    insn(0x07, 4, 0, 0, 24),  // r4 += 24
    insn(0x2d, 4, 3, 3, 0),   // if r4 > r3 goto +3
    insn(0x7b, 2, 7, 0, 0),   // *(u64 *)(r2 + 0) = r7
    insn(0x7b, 2, 8, 8, 0),   // *(u64 *)(r2 + 8) = r8
    insn(0x7b, 2, 0, 16, 0),  // *(u64 *)(r2 + 16) = r0
    insn(0xb7, 0, 0, 0, 2),   // r0 = XDP_PASS
    insn(0x95, 0, 0, 0, 0),   // exit
];

/// Measures [`JiffyClock`] with a tiny test-run program: watches jiffies
/// tick over a few times (a few ticks of wall time, at most a second).
/// `None` when it cannot (the programs then use the coarse clock).
pub fn jiffy_clock() -> io::Result<Option<JiffyClock>> {
    let license = b"GPL\0";
    let mut attr = Attr::default();
    attr.words[0] = BPF_PROG_TYPE_XDP | ((JIFFY_PROBE.len() as u64) << 32);
    attr.words[1] = JIFFY_PROBE.as_ptr() as u64;
    attr.words[2] = license.as_ptr() as u64;
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: the kernel returned a new program fd that we now own.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let frame = [0u8; 64];
    let mut out = [0u8; 64];
    let mut sample = || -> io::Result<(u64, u64, u64)> {
        let mut attr = Attr::default();
        attr.words[0] = prog.as_raw_fd() as u64;
        attr.words[1] = frame.len() as u64 | ((out.len() as u64) << 32);
        attr.words[2] = frame.as_ptr() as u64;
        attr.words[3] = out.as_mut_ptr() as u64;
        attr.words[4] = 1;
        bpf(BPF_PROG_TEST_RUN, &mut attr)?;
        let w = |i: usize| u64::from_ne_bytes(out[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Ok((w(0), w(1), w(2)))
    };
    // Tick edges: (jiffies after the edge, monotonic ns of the edge).
    let mut edges: Vec<(u64, u64)> = Vec::new();
    let mut prev = sample()?;
    let start = prev.0;
    while edges.len() < 4 && prev.0.saturating_sub(start) < 1_000_000_000 {
        let s = sample()?;
        // The edge lies between the two reads; keep it only if they were
        // close (not preempted in between).
        if s.1 == prev.1 + 1 && s.2.saturating_sub(prev.0) < 50_000 {
            edges.push((s.1, (prev.2 + s.0) / 2));
        }
        prev = s;
    }
    let (Some(first), Some(last)) = (edges.first(), edges.last()) else {
        return Ok(None);
    };
    if last.0 <= first.0 {
        return Ok(None);
    }
    let tick = (last.1 - first.1) as f64 / (last.0 - first.0) as f64;
    let hz = (1e9 / tick).round() as u64;
    if hz == 0 {
        return Ok(None);
    }
    let tick_ns = (1_000_000_000 + hz / 2) / hz;
    if (tick - tick_ns as f64).abs() > tick_ns as f64 * 0.02 {
        return Ok(None);
    }
    Ok(Some(JiffyClock {
        hz,
        tick_ns,
        base_ns: last.0.wrapping_mul(tick_ns).wrapping_sub(last.1),
    }))
}

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// What the verifier did with a loaded program: (instructions after
/// verification, instructions it processed). The kernel rejects a program
/// whose processed count reaches 1,000,000.
pub fn prog_verifier_work(prog: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let mut info = [0u64; 28];
    let mut attr = Attr::default();
    attr.words[0] = prog.as_raw_fd() as u64 | ((size_of_val(&info) as u64) << 32);
    attr.words[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    // struct bpf_prog_info: xlated_prog_len at byte 20, verified_insns at byte 216.
    Ok(((info[2] >> 32) / 8, info[27] & 0xffff_ffff))
}
