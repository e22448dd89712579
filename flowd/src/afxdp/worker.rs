//! One RX queue's socket and its worker thread.
//!
//! ```text
//! UMEM: 2 x ring chunks of 4 KiB (16 MiB per queue at the default 2048):
//!   fill ring (ring)  user -> kernel: empty chunks
//!   RX ring   (ring)  kernel -> user: filled chunks (addr, len)
//!   completion (64)   required by the kernel; unused (no TX ring)
//! worker loop:
//!   take up to RX_BATCH descriptors -> copy each frame into a replay batch
//!   (flowd_common::replay layout) -> chunk back to the UMEM
//!   -> BPF_PROG_TEST_RUN of the replay driver with ctx = (ifindex, queue)
//!   -> refill; when the RX ring is empty: poll(2) (which also wakes a
//!   zero-copy driver that asked for it)
//! ```
//!
//! The socket is bound with `XDP_USE_NEED_WAKEUP`, so the kernel never
//! needs a syscall from a worker that keeps up; the `xdp` crate does not
//! expose the rings' `need_wakeup` flag, so the worker makes its one
//! syscall (`poll`) whenever its RX ring is empty instead of when the flag
//! is set: an idle worker sleeps in it, a busy one makes none.

use std::{
    os::fd::{AsFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use flowd_common::{
    REPLAY_META_MAGIC, ReplayMeta,
    replay::{self as wire, NONLINEAR},
};
use tracing::warn;
use xdp::{
    RingConfigBuilder, Umem, WakableRings,
    nic::NicIndex,
    slab::{HeapSlab, Slab},
    socket::{PollTimeout, XdpSocket, XdpSocketBuilder},
    umem::{FrameSize, UmemCfgBuilder},
};

use super::{
    AfXdpError,
    stats::{QueueStats, XskStats},
};
use crate::{
    replay::{BATCH_BYTES, MAX_FRAME, RUNT_FRAME},
    sys::{self, XdpMd},
};

/// Descriptors taken from the RX ring at a time.
const RX_BATCH: usize = 64;
/// How long an idle worker sleeps in poll(2) before it looks at its stop flag.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// How often a worker refreshes its socket's `XDP_STATISTICS`.
const STATS_EVERY: Duration = Duration::from_millis(250);

/// How the socket moves frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XskMode {
    /// The driver writes into the UMEM (no copy).
    ZeroCopy,
    /// The kernel copies each frame into the UMEM (every driver; veth).
    Copy,
}

impl XskMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ZeroCopy => "zero_copy",
            Self::Copy => "copy",
        }
    }
}

/// One bound AF_XDP socket with its rings and UMEM. Fields drop in order:
/// the rings' mappings, then the socket, then the UMEM it used.
pub(super) struct Xsk {
    rings: WakableRings,
    socket: XdpSocket,
    umem: Umem,
    pub(super) mode: XskMode,
}

impl Xsk {
    /// A socket bound to (`ifindex`, `queue`): zero-copy if the driver
    /// offers it, else copy mode.
    /// `ring` entries in the fill and RX rings (a power of two), twice as
    /// many chunks in the UMEM.
    pub(super) fn open(
        iface: &str,
        ifindex: u32,
        queue: u32,
        ring: u32,
    ) -> Result<Self, AfXdpError> {
        match Self::open_mode(iface, ifindex, queue, ring, XskMode::ZeroCopy) {
            Ok(x) => Ok(x),
            Err(_) => Self::open_mode(iface, ifindex, queue, ring, XskMode::Copy),
        }
    }

    fn open_mode(
        iface: &str,
        ifindex: u32,
        queue: u32,
        ring: u32,
        mode: XskMode,
    ) -> Result<Self, AfXdpError> {
        let err = |step: &'static str, e: String| AfXdpError::Socket {
            iface: iface.into(),
            queue,
            step,
            reason: e,
        };
        let cfg = UmemCfgBuilder {
            frame_size: FrameSize::FourK,
            frame_count: 2 * ring,
            ..Default::default()
        }
        .build()
        .map_err(|e| err("UMEM configuration", e.to_string()))?;
        let mut umem = Umem::map(cfg).map_err(|e| err("mapping the UMEM", e.to_string()))?;
        let mut builder =
            XdpSocketBuilder::new().map_err(|e| err("creating the socket", e.to_string()))?;
        let rings = RingConfigBuilder {
            rx_count: ring,
            tx_count: 0,
            fill_count: ring,
            completion_count: 64,
        }
        .build()
        .map_err(|e| err("ring configuration", e.to_string()))?;
        let (mut rings, mut flags) = builder
            .build_wakable_rings(&umem, rings)
            .map_err(|e| err("registering the UMEM and rings", e.to_string()))?;
        match mode {
            XskMode::ZeroCopy => flags.force_zerocopy(),
            XskMode::Copy => flags.force_copy(),
        }
        let socket = builder
            .bind(NicIndex(ifindex), queue, flags)
            .map_err(|e| err("binding", e.to_string()))?;
        // SAFETY: the UMEM outlives the socket (field order of `Xsk`).
        unsafe { rings.fill_ring.enqueue(&mut umem, ring as usize, true) }
            .map_err(|e| err("filling the fill ring", e.to_string()))?;
        Ok(Self {
            rings,
            socket,
            umem,
            mode,
        })
    }

    pub(super) fn socket(&self) -> &XdpSocket {
        &self.socket
    }

    fn statistics(&self) -> Option<XskStats> {
        let s = self.socket.statistics().ok()?;
        Some(XskStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
        })
    }
}

/// Whether this host can create AF_XDP sockets (`flowd check`): a small
/// UMEM, a socket and its rings registered, then released; no interface
/// is bound. Fails on a kernel without `CONFIG_XDP_SOCKETS` or without
/// the privileges.
pub fn probe() -> Result<(), AfXdpError> {
    const N: u32 = 64;
    let err = |step: &'static str, e: String| AfXdpError::Probe { step, reason: e };
    let cfg = UmemCfgBuilder {
        frame_size: FrameSize::FourK,
        frame_count: N,
        ..Default::default()
    }
    .build()
    .map_err(|e| err("UMEM configuration", e.to_string()))?;
    let umem = Umem::map(cfg).map_err(|e| err("mapping a UMEM", e.to_string()))?;
    let mut builder =
        XdpSocketBuilder::new().map_err(|e| err("creating a socket", e.to_string()))?;
    let rings = RingConfigBuilder {
        rx_count: N,
        tx_count: 0,
        fill_count: N,
        completion_count: N,
    }
    .build()
    .map_err(|e| err("ring configuration", e.to_string()))?;
    builder
        .build_wakable_rings(&umem, rings)
        .map_err(|e| err("registering a UMEM and rings", e.to_string()))?;
    Ok(())
}

/// What a worker needs besides its socket.
pub(super) struct Worker {
    pub(super) iface: String,
    pub(super) ifindex: u32,
    pub(super) queue: u32,
    /// The replay driver (`flowd_replay`), this worker's own fd.
    pub(super) replay: OwnedFd,
    pub(super) stats: Arc<QueueStats>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) cpu: Option<usize>,
}

impl Worker {
    /// Runs until `stop` is set and the RX ring is empty, then reads the
    /// socket's counters a last time and releases socket and UMEM.
    pub(super) fn run(self, mut xsk: Xsk) {
        if let Some(cpu) = self.cpu {
            pin_to_cpu(cpu);
        }
        let mut slab = HeapSlab::with_capacity(RX_BATCH);
        let mut batch = Batch::new();
        let mut next_stats = Instant::now();
        let mut warned = false;
        loop {
            let rx = xsk.rings.rx_ring.as_mut().expect("built with an RX ring");
            // SAFETY: the packets go back to the UMEM below, before it is dropped.
            let n = unsafe { rx.recv(&xsk.umem, &mut slab) };
            // Also while busy: a worker that falls behind is when its
            // socket's drop counters matter.
            if Instant::now() >= next_stats {
                self.refresh(&xsk);
                next_stats = Instant::now() + STATS_EVERY;
            }
            if n == 0 {
                if self.stop.load(Ordering::Acquire) {
                    break;
                }
                let _ = xsk.socket.poll_read(PollTimeout::new(Some(IDLE_POLL)));
                continue;
            }
            while let Some(p) = slab.pop_back() {
                let len = p.len();
                let frame = &p[..len.min(MAX_FRAME)];
                if frame.len() < len {
                    self.stats.cut.fetch_add(1, Ordering::Relaxed);
                }
                if !batch.fits(frame.len()) {
                    self.run_batch(&mut batch, &mut warned);
                }
                batch.push(len as u32, frame);
                xsk.umem.free_packet(p);
            }
            self.run_batch(&mut batch, &mut warned);
            // The `n` chunks just freed go back: the kernel took at least
            // `n` from the fill ring, so they fit (the crate reserves all
            // or nothing). No wakeup here: poll(2) does it when idle.
            // SAFETY: as in `Xsk::open_mode`.
            let _ = unsafe { xsk.rings.fill_ring.enqueue(&mut xsk.umem, n, false) };
        }
        self.refresh(&xsk);
    }

    fn refresh(&self, xsk: &Xsk) {
        if let Some(s) = xsk.statistics() {
            self.stats.set_xsk(&s);
        }
    }

    /// Runs the batch through the replay driver as if its frames had come
    /// in on this worker's (interface, queue), and empties it.
    fn run_batch(&self, batch: &mut Batch, warned: &mut bool) {
        let n = batch.lens.len();
        if n == 0 {
            return;
        }
        match self.test_run(batch.bytes()) {
            Ok(status) if status as usize == n + 1 => {
                self.stats.add_parsed(n as u64, batch.wire_bytes(n));
            }
            Ok(NONLINEAR) if n > 1 => {
                // Nothing ran: this kernel's linear limit is below BATCH_BYTES.
                batch.limit = MAX_FRAME + wire::CHUNK_OVERHEAD + wire::END_CHUNK.len();
                self.one_by_one(batch, warned);
            }
            Ok(NONLINEAR) => self.fail(n, warned, "the frame is not linear in a test run"),
            Ok(status) => {
                let ran = (status as usize).saturating_sub(1).min(n);
                self.stats.add_parsed(ran as u64, batch.wire_bytes(ran));
                self.fail(
                    n - ran,
                    warned,
                    &format!("replay driver returned {status:#x}"),
                );
            }
            Err(e) => self.fail(n, warned, &e.to_string()),
        }
        batch.clear();
    }

    /// Reruns a batch's frames one per test run.
    fn one_by_one(&self, batch: &Batch, warned: &mut bool) {
        let mut end = BATCH_BYTES;
        let mut one = Batch::new();
        for i in 0..batch.lens.len() {
            let Some((_, frame, start)) = wire::chunk_before(&batch.buf[..], end) else {
                break;
            };
            one.clear();
            one.push(batch.lens[i], frame);
            self.run_batch(&mut one, warned);
            end = start;
        }
    }

    fn fail(&self, frames: usize, warned: &mut bool, why: &str) {
        self.stats
            .failed
            .fetch_add(frames as u64, Ordering::Relaxed);
        if !*warned {
            *warned = true;
            warn!(
                iface = %self.iface,
                queue = self.queue,
                frames,
                error = why,
                "AF_XDP: frames could not be run through the parser (counted as failed; further failures are only counted)"
            );
        }
    }

    fn test_run(&self, data: &[u8]) -> Result<u32, sys::SysError> {
        self.stats.test_runs.fetch_add(1, Ordering::Relaxed);
        let ctx = XdpMd {
            data: 0,
            data_end: data.len() as u32,
            ingress_ifindex: self.ifindex,
            rx_queue_index: self.queue,
            ..Default::default()
        };
        sys::xdp_test_run_ctx(self.replay.as_fd(), data, ctx, 1).map(|r| r.retval)
    }
}

/// Frames laid out for one run of the replay driver
/// ([`flowd_common::replay`]): the end mark, then `meta | frame | len`
/// chunks in reverse order, filled from the end of the buffer.
struct Batch {
    buf: Box<[u8; BATCH_BYTES]>,
    start: usize,
    limit: usize,
    /// Each frame's length as received, in arrival order.
    lens: Vec<u32>,
}

impl Batch {
    fn new() -> Self {
        Self {
            buf: Box::new([0; BATCH_BYTES]),
            start: BATCH_BYTES,
            limit: BATCH_BYTES,
            lens: Vec::with_capacity(RX_BATCH),
        }
    }

    fn fits(&self, frame_len: usize) -> bool {
        BATCH_BYTES - self.start + frame_len + wire::CHUNK_OVERHEAD + wire::END_CHUNK.len()
            <= self.limit
    }

    /// Adds a frame (the caller checked [`Batch::fits`], or the batch is
    /// empty). A frame shorter than an Ethernet header goes in as the
    /// replay's runt stand-in (counted as truncated, as the runt would
    /// be): the kernel refuses shorter test runs.
    fn push(&mut self, wire_len: u32, frame: &[u8]) {
        // Timestamp 0: the program takes the kernel's clock, as live, and
        // the L7 copy budget does not apply (see `flowd::afxdp`).
        let meta = ReplayMeta {
            magic: REPLAY_META_MAGIC,
            wire_len,
            ts_ns: 0,
        }
        .to_bytes();
        let frame = if frame.len() < RUNT_FRAME.len() {
            &RUNT_FRAME[..]
        } else {
            frame
        };
        self.start = wire::put_chunk(&mut self.buf[..], self.start, &meta, frame);
        self.lens.push(wire_len);
    }

    fn bytes(&mut self) -> &[u8] {
        let at = wire::put_end_mark(&mut self.buf[..], self.start);
        &self.buf[at..]
    }

    /// Received bytes of the first `n` frames.
    fn wire_bytes(&self, n: usize) -> u64 {
        self.lens[..n].iter().map(|&l| u64::from(l)).sum()
    }

    fn clear(&mut self) {
        self.start = BATCH_BYTES;
        self.lens.clear();
    }
}

/// Keeps the calling thread on `cpu` (a failure only costs locality).
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it;
    // sched_setaffinity reads it for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            warn!(cpu, error = %std::io::Error::last_os_error(), "AF_XDP worker: could not pin to its CPU");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_holds_frames_in_the_replay_layout_with_runts_as_in_a_replay() {
        let mut b = Batch::new();
        b.push(60, &[1; 60]);
        b.push(9, &[2; 9]);
        assert!(b.fits(1500));
        assert_eq!(b.wire_bytes(2), 69);
        let end = BATCH_BYTES;
        let (m, f, s) = wire::chunk_before(&b.buf[..], end).unwrap();
        assert_eq!(f, &[1u8; 60][..], "the first frame's chunk is last");
        assert_eq!(&m[4..8], &60u32.to_le_bytes());
        assert_eq!(&m[8..16], &[0u8; 8], "timestamp 0: live clock");
        let (m, f, _) = wire::chunk_before(&b.buf[..], s).unwrap();
        assert_eq!(
            f,
            &RUNT_FRAME[..],
            "a runt goes in as the replay's stand-in"
        );
        assert_eq!(&m[4..8], &9u32.to_le_bytes(), "with its real length");
        let total = b.bytes().len();
        assert_eq!(
            total,
            2 * wire::CHUNK_OVERHEAD + 60 + RUNT_FRAME.len() + wire::END_CHUNK.len()
        );
        b.clear();
        assert!(b.lens.is_empty() && b.fits(MAX_FRAME));
    }
}
