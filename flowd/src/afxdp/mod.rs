//! AF_XDP capture on mirror ports (issue 13): every frame of the interface
//! goes to user space, counted in the kernel first, and is accounted into
//! the same flow maps, totals and flow table as on the in-kernel path.
//!
//! ```text
//! NIC queue q ─▶ flowd_afxdp: AFXDP_COUNTS[slot,q] += frame ─▶ XSKMAP[slot,q]
//!                                                              │ AF_XDP socket
//!     worker thread q (pinned): RX ring ─▶ replay batch ─▶ BPF_PROG_TEST_RUN
//!       of flowd_replay with ctx (ifindex, q): the ingress parser and
//!       accounting, compiled once, into FLOWS_<gen> and TOTALS[slot]
//!                                 ─▶ the drain, the flow table, exporters
//! ```
//!
//! **One parser.** A worker does not parse in Rust: it hands its frames in
//! batches to the replay driver, which runs the ingress program's own
//! per-frame code on each, with the test run's context naming this
//! interface and queue. The flow key, the counters and every outcome are
//! those of the in-kernel path by construction (DESIGN.md, "One parser,
//! one truth"). What it costs: one syscall per batch (up to ~60 small
//! frames) plus the program's per-frame time.
//!
//! **Application layer.** The replay driver runs the ingress program's
//! L7 selection too: its samples go to the same `L7_EVENTS` ring the
//! daemon's drain reads, so the same engine turns them into events. Per
//! flow they stay in order: a flow's frames (both directions, on a mirror
//! port) arrive on one RX queue as long as the NIC's RSS hash is
//! symmetric, and one worker runs them in order. The per-CPU copy budget
//! (`[l7] budget_per_s`) bounds what the packet path copies; it does not
//! apply to a worker's frames (replay metadata with timestamp 0), where
//! every payload is wanted and the copy is the worker's own time. What
//! bounds them is the ring (4 MiB, read at every drain): when it is full,
//! samples are counted as `flowd_l7_skipped_total{reason="ring_full"}`.
//!
//! **Exact loss.** Per (interface, queue): frames the program counted =
//! `no_socket` (passed) + frames parsed + frames whose test run failed +
//! what the socket lost (`XDP_STATISTICS`, see [`stats::XskStats::lost`]).
//!
//! **Library.** Sockets, UMEM and rings come from the `xdp` crate (0.8,
//! Apache-2.0 OR MIT, no C and no dependencies, developed for Quilkin).
//! `xdpilone` is EUPL-1.2, a copyleft licence that does not fit flowd's
//! MIT OR Apache-2.0; `xsk-rs` builds libxdp and libbpf from C (clang,
//! libelf) next to aya; `afxdp` and `xdpsock` pin libbpf-sys 0.3 and are
//! unmaintained. aya's `XskMap` holds the sockets.
//!
//! - `queues.rs`: how many RX queues an interface has;
//! - `worker.rs`: one queue's socket (UMEM, fill and RX rings) and its loop;
//! - `stats.rs`: what a worker counts, and the socket's drop counters.

mod queues;
mod stats;
mod worker;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use flowd_common::afxdp::{AFXDP_MAX_QUEUES, AfXdpCounts};
use thiserror::Error;
use tracing::{info, warn};

use self::worker::{Worker, Xsk};
pub use self::{
    queues::rx_queues,
    stats::{QueueSnapshot, QueueStats, XskStats},
    worker::XskMode,
    worker::probe,
};
use crate::{
    export::metrics::AfXdpQueueSnapshot,
    loader::{AfXdpLink, Datapath, LoadError, XdpAttachMode},
};

#[derive(Debug, Error)]
pub enum AfXdpError {
    #[error("AF_XDP on `{iface}`: cannot count its RX queues in {path}: {reason}")]
    Queues {
        iface: String,
        path: String,
        reason: String,
    },
    #[error(
        "AF_XDP on `{iface}`: it has {queues} RX queues; flowd binds at most {max} (`ethtool -L {iface} combined {max}`)"
    )]
    TooManyQueues {
        iface: String,
        queues: u32,
        max: u32,
    },
    #[error("AF_XDP on `{iface}`: {source}")]
    Load {
        iface: String,
        #[source]
        source: Box<LoadError>,
    },
    #[error("AF_XDP on `{iface}` queue {queue}: {step} failed: {reason}")]
    Socket {
        iface: String,
        queue: u32,
        step: &'static str,
        reason: String,
    },
    #[error("AF_XDP sockets cannot be created on this host: {step} failed: {reason}")]
    Probe { step: &'static str, reason: String },
    #[error("AF_XDP on `{iface}` queue {queue}: starting its worker thread failed: {source}")]
    Spawn {
        iface: String,
        queue: u32,
        #[source]
        source: std::io::Error,
    },
}

/// One queue's worker as the capture keeps it.
struct Queue {
    queue: u32,
    mode: XskMode,
    stats: Arc<QueueStats>,
    thread: Option<JoinHandle<()>>,
}

/// The kernel's and the worker's counts of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueView {
    pub queue: u32,
    pub mode: XskMode,
    /// `flowd_afxdp`'s count.
    pub kernel: AfXdpCounts,
    pub worker: QueueSnapshot,
}

impl QueueView {
    /// Frames the program counted that are in none of the other counts
    /// (0 once the worker has caught up; frames in flight while it runs).
    pub fn unaccounted(&self) -> i128 {
        i128::from(self.kernel.frames)
            - i128::from(self.kernel.no_socket)
            - i128::from(self.worker.parsed)
            - i128::from(self.worker.failed)
            - i128::from(self.worker.xsk.lost())
    }
}

/// AF_XDP capture on one interface: the program attached, one socket and
/// worker per RX queue. [`AfXdpCapture::stop`] (or drop) releases all.
pub struct AfXdpCapture {
    pub iface: String,
    pub ifindex: u32,
    pub slot: u32,
    pub xdp_mode: XdpAttachMode,
    queues: Vec<Queue>,
    stop: Arc<AtomicBool>,
    link: Option<AfXdpLink>,
}

impl std::fmt::Debug for AfXdpCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpCapture")
            .field("iface", &self.iface)
            .field("slot", &self.slot)
            .field("queues", &self.queues.len())
            .finish_non_exhaustive()
    }
}

impl AfXdpCapture {
    /// Attaches the AF_XDP program to `iface` and starts a worker per RX
    /// queue (queue q on CPU q mod CPUs), each socket with `ring` entries
    /// in its fill and RX rings (`[af_xdp] ring_size`). `xdp_mode` None:
    /// native XDP if the driver has it, else generic. On failure nothing
    /// stays attached.
    pub fn start(
        dp: &mut Datapath,
        iface: &str,
        xdp_mode: Option<XdpAttachMode>,
        ring: u32,
    ) -> Result<Self, AfXdpError> {
        let n = rx_queues(iface)?;
        if n > AFXDP_MAX_QUEUES {
            return Err(AfXdpError::TooManyQueues {
                iface: iface.into(),
                queues: n,
                max: AFXDP_MAX_QUEUES,
            });
        }
        let load = |source| AfXdpError::Load {
            iface: iface.into(),
            source: Box::new(source),
        };
        let link = dp.attach_afxdp(iface, xdp_mode).map_err(load)?;
        let mut cap = Self {
            iface: iface.into(),
            ifindex: link.ifindex,
            slot: link.slot,
            xdp_mode: link.mode,
            queues: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            link: Some(link),
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for q in 0..n {
            // On error `cap` drops: workers stopped, program detached.
            let xsk = Xsk::open(iface, cap.ifindex, q, ring)?;
            dp.set_afxdp_socket(cap.slot, q, xsk.socket().raw_fd())
                .map_err(load)?;
            let stats = Arc::new(QueueStats::default());
            let mode = xsk.mode;
            let worker = Worker {
                iface: iface.into(),
                ifindex: cap.ifindex,
                queue: q,
                replay: dp.replay_fd_owned().map_err(load)?,
                stats: Arc::clone(&stats),
                stop: Arc::clone(&cap.stop),
                cpu: Some(q as usize % cpus),
            };
            let thread = std::thread::Builder::new()
                .name(format!("afxdp-{q}"))
                .spawn(move || worker.run(xsk))
                .map_err(|source| AfXdpError::Spawn {
                    iface: iface.into(),
                    queue: q,
                    source,
                })?;
            info!(
                iface,
                queue = q,
                cpu = q as usize % cpus,
                mode = mode.as_str(),
                xdp_mode = cap.xdp_mode.as_str(),
                "AF_XDP: capturing"
            );
            cap.queues.push(Queue {
                queue: q,
                mode,
                stats,
                thread: Some(thread),
            });
        }
        Ok(cap)
    }

    /// The kernel's and the workers' counts, per queue.
    pub fn view(&self, dp: &Datapath) -> Vec<QueueView> {
        self.queues
            .iter()
            .map(|q| QueueView {
                queue: q.queue,
                mode: q.mode,
                kernel: dp.afxdp_counts(self.slot, q.queue).unwrap_or_default(),
                worker: q.stats.snapshot(q.queue),
            })
            .collect()
    }

    /// The per-queue series of `flowd_af_xdp_*`.
    pub fn metrics(&self, dp: &Datapath) -> Vec<AfXdpQueueSnapshot> {
        self.view(dp)
            .into_iter()
            .map(|q| AfXdpQueueSnapshot {
                device: self.iface.clone(),
                queue: q.queue,
                mode: q.mode.as_str(),
                frames: q.kernel.frames,
                bytes: q.kernel.bytes,
                no_socket: q.kernel.no_socket,
                parsed: q.worker.parsed,
                parse_failed: q.worker.failed,
                rx_dropped: q.worker.xsk.rx_dropped,
                rx_ring_full: q.worker.xsk.rx_ring_full,
                rx_invalid_descs: q.worker.xsk.rx_invalid_descs,
                rx_fill_ring_empty_descs: q.worker.xsk.rx_fill_ring_empty_descs,
            })
            .collect()
    }

    /// Stops: the sockets leave the map (frames are passed and counted as
    /// `no_socket` from then on), `grace_period` (the drain's wait for
    /// running programs, [`crate::drain::grace_period`]) lets every program
    /// run that still redirected finish, each worker empties its RX ring,
    /// reads its socket's counters a last time and releases socket and
    /// UMEM; then the program is detached. Returns the final counts.
    pub fn stop(
        mut self,
        dp: &mut Datapath,
        grace_period: impl FnOnce() -> Result<(), crate::sys::SysError>,
    ) -> Vec<QueueView> {
        for q in &self.queues {
            if let Err(e) = dp.unset_afxdp_socket(self.slot, q.queue) {
                warn!(iface = %self.iface, queue = q.queue, error = %e, "AF_XDP: taking the socket out of the map failed");
            }
        }
        if let Err(e) = grace_period() {
            warn!(error = %e, "AF_XDP: waiting for running programs failed; the last frames may be uncounted");
        }
        self.join();
        let view = self.view(dp);
        self.link = None;
        info!(iface = %self.iface, "AF_XDP: stopped");
        view
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::Release);
        for q in &mut self.queues {
            if let Some(t) = q.thread.take()
                && t.join().is_err()
            {
                warn!(iface = %self.iface, queue = q.queue, "AF_XDP worker panicked");
            }
        }
    }
}

impl Drop for AfXdpCapture {
    fn drop(&mut self) {
        self.join();
    }
}
