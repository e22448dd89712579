//! AF_XDP capture on mirror ports (issue 13): the kernel half counts every
//! frame per (interface slot, RX queue) and redirects it to the AF_XDP
//! socket of its queue; user space parses it with the same program as a
//! replay (`flowd/src/afxdp`).
//!
//! ```text
//! frame on queue q of an interface with slot s
//!   -> AFXDP_COUNTS[s * AFXDP_MAX_QUEUES + q].frames/bytes += 1/len
//!   -> bpf_redirect_map(AFXDP_SOCKS, s * AFXDP_MAX_QUEUES + q, XDP_PASS)
//!        socket there: XDP_REDIRECT (the socket's own counters tell a drop)
//!        no socket:    XDP_PASS, and .no_socket += 1
//! ```
//!
//! Neither map is pinned: the sockets live and die with the daemon.

use core::mem::size_of;

/// RX queues per interface that can have a socket. A frame on a higher
/// queue is counted in the last queue's entry as `no_socket` and passed;
/// the daemon refuses an interface with more queues.
pub const AFXDP_MAX_QUEUES: u32 = 64;
/// Entries of `AFXDP_SOCKS` and `AFXDP_COUNTS`: one per (slot, queue).
pub const AFXDP_ENTRIES: u32 = crate::MAX_SLOTS * AFXDP_MAX_QUEUES;

/// Map names.
pub const AFXDP_SOCKS: &str = "AFXDP_SOCKS";
pub const AFXDP_COUNTS: &str = "AFXDP_COUNTS";
/// The program that counts and redirects.
pub const AFXDP_PROGRAM: &str = "flowd_afxdp";

/// The entry of (interface slot, RX queue) in both maps.
#[inline(always)]
pub const fn afxdp_index(slot: u32, queue: u32) -> u32 {
    slot * AFXDP_MAX_QUEUES + queue
}

/// The kernel's count of one (interface slot, RX queue). A shared array
/// with atomic adds: each RX queue is served by one CPU at a time, so the
/// adds rarely contend, and a per-CPU array would cost
/// `AFXDP_ENTRIES` x CPUs x 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AfXdpCounts {
    /// Every frame the program saw, socket or not.
    pub frames: u64,
    /// Their bytes (the linear frame; the program is not multi-buffer).
    pub bytes: u64,
    /// Frames passed to the stack because no socket was in the map (the
    /// worker not started yet, or gone).
    pub no_socket: u64,
    pub _reserved: u64,
}
const _: () = assert!(size_of::<AfXdpCounts>() == 32);

impl AfXdpCounts {
    /// Frames handed to a socket: what the worker parsed plus what the
    /// socket's own statistics count as dropped.
    pub const fn redirected(&self) -> u64 {
        self.frames.saturating_sub(self.no_socket)
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, four u64 without padding (asserted above).
unsafe impl aya::Pod for AfXdpCounts {}
