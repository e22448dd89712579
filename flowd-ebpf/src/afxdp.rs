//! The mirror-port program: count every frame per (interface slot, RX
//! queue), then hand it to the AF_XDP socket of its queue. Parsing and
//! flow accounting happen in user space, through the replay driver (the
//! same compiled parser), so this program stays a few instructions.
//!
//! ```text
//! i = slot(ifindex) * AFXDP_MAX_QUEUES + rx_queue_index
//! AFXDP_COUNTS[i] += (1 frame, len bytes)        exact, before anything can drop
//! bpf_redirect_map(AFXDP_SOCKS, i, XDP_PASS)
//!   -> XDP_REDIRECT: the socket's XDP_STATISTICS count what it drops
//!   -> XDP_PASS (no socket at i): AFXDP_COUNTS[i].no_socket += 1
//! ```
//!
//! Mirror ports only: the frames the socket takes never reach the stack.

use core::intrinsics::{AtomicOrdering::Relaxed, atomic_xadd};

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, XskMap},
    programs::XdpContext,
};
use flowd_common::afxdp::{AFXDP_ENTRIES, AFXDP_MAX_QUEUES, AfXdpCounts, afxdp_index};

use crate::account::slot_of;

/// (slot, queue) -> the socket bound to that queue (set by the worker).
#[map]
pub(crate) static AFXDP_SOCKS: XskMap = XskMap::with_max_entries(AFXDP_ENTRIES, 0);

/// (slot, queue) -> frames, bytes and frames without a socket.
#[map]
pub(crate) static AFXDP_COUNTS: Array<AfXdpCounts> = Array::with_max_entries(AFXDP_ENTRIES, 0);

#[xdp]
pub(crate) fn flowd_afxdp(ctx: XdpContext) -> u32 {
    // SAFETY: reading a plain field of the context the kernel passed in.
    let queue = unsafe { (*ctx.ctx).rx_queue_index };
    let ifindex = ctx.ingress_ifindex() as u32;
    let len = (ctx.data_end() - ctx.data()) as u64;
    // A queue beyond the map's room has no socket: counted in the last
    // queue's entry as passed (the daemon refuses such interfaces).
    let over = queue >= AFXDP_MAX_QUEUES;
    let i = afxdp_index(
        slot_of(ifindex),
        if over { AFXDP_MAX_QUEUES - 1 } else { queue },
    );
    let Some(c) = AFXDP_COUNTS.get_ptr_mut(i) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: `c` points to a live, aligned entry of a shared array.
    unsafe {
        atomic_xadd::<_, _, { Relaxed }>(&raw mut (*c).frames, 1u64);
        atomic_xadd::<_, _, { Relaxed }>(&raw mut (*c).bytes, len);
    }
    let action = if over {
        xdp_action::XDP_PASS
    } else {
        match AFXDP_SOCKS.redirect(i, u64::from(xdp_action::XDP_PASS)) {
            Ok(a) => a,
            Err(a) => a,
        }
    };
    if action != xdp_action::XDP_REDIRECT {
        // SAFETY: as above.
        unsafe { atomic_xadd::<_, _, { Relaxed }>(&raw mut (*c).no_socket, 1u64) };
    }
    action
}
