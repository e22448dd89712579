//! The replay driver: one `BPF_PROG_TEST_RUN` carries a batch of capture
//! frames, and this program runs the ingress program's own per-frame code
//! ([`crate::ingress`]) on each of them in turn, with the frame as the XDP
//! packet and its [`flowd_common::ReplayMeta`] as the XDP metadata, exactly
//! as a test run of `flowd_ingress` with one frame would see them.
//!
//! Batch layout ([`flowd_common::replay`], which the daemon writes with):
//!
//! ```text
//! [end mark] [chunk n-1] ... [chunk 1] [chunk 0]
//! chunk    = ReplayMeta (16 B) | frame (len B, len >= 14) | len (u32 LE)
//! end mark = 12 zero bytes | 0xffff_ffff (u32 LE)
//! ```
//!
//! Per frame: read `len` from the last 4 bytes, cut them off
//! (`bpf_xdp_adjust_tail`), move the packet start to the frame
//! (`bpf_xdp_adjust_head`; the metadata is empty then, so nothing is moved),
//! expose the 16 bytes before it as metadata (`bpf_xdp_adjust_meta`), run
//! the ingress code, then undo meta and head and cut the chunk off the tail.
//! `bpf_loop` makes the verifier check the per-frame code once; the
//! callback keeps no state of its own (its state at each call is the same,
//! so the verifier's exploration converges at once) and reports through
//! the number of iterations: n + 1 when all n frames ran and the end mark
//! was reached, fewer when it stopped at a frame it could not run.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::xdp_md,
    helpers::generated::{
        bpf_loop, bpf_xdp_adjust_head, bpf_xdp_adjust_meta, bpf_xdp_adjust_tail,
        bpf_xdp_get_buff_len,
    },
    macros::xdp,
    programs::XdpContext,
};
use flowd_common::replay::{
    END_CHUNK, END_MARK, MAX_BATCH, MAX_STEPS, META, MIN_FRAME, NONLINEAR, TRAILER,
};

/// What the callback gets: the context, nothing it writes.
#[repr(C)]
struct Walk {
    ctx: *mut xdp_md,
}

/// Runs every frame of a batch through the ingress code. Returns the
/// number of `bpf_loop` iterations: frames + 1 when every frame ran.
#[xdp(frags)]
pub(crate) fn flowd_replay(ctx: XdpContext) -> u32 {
    // SAFETY: the context pointer is the one the kernel passed in.
    let all = unsafe { bpf_xdp_get_buff_len(ctx.ctx) };
    if all != (ctx.data_end() - ctx.data()) as u64 {
        return NONLINEAR;
    }
    let mut walk = Walk { ctx: ctx.ctx };
    // SAFETY: `step` has the callback signature bpf_loop expects, and
    // `walk` outlives the call.
    let n = unsafe { bpf_loop(MAX_STEPS, step as *mut c_void, (&raw mut walk).cast(), 0) };
    n.clamp(0, i64::from(MAX_STEPS)) as u32
}

/// One chunk of the walk: 0 to go on, 1 to stop (at the end mark, or at a
/// chunk it cannot run).
extern "C" fn step(_index: u64, walk: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes the `Walk` the driver gave it.
    let ctx = XdpContext::new(unsafe { (*walk.cast::<Walk>()).ctx });
    if run_last_frame(&ctx) { 0 } else { 1 }
}

/// Runs the last chunk of the packet, then cuts it off. False at the end
/// mark and when the chunk cannot be run.
#[inline(always)]
fn run_last_frame(ctx: &XdpContext) -> bool {
    let total = ctx.data_end() - ctx.data();
    if total < END_CHUNK.len() || total > MAX_BATCH {
        return false;
    }
    // Opaque to LLVM, which would otherwise fold `data + (end - data - 4)`
    // into `end - 4`: the verifier allows no arithmetic on the end pointer.
    let off = core::hint::black_box(total - TRAILER);
    let p = ctx.data() + off;
    if p + TRAILER > ctx.data_end() {
        return false;
    }
    // SAFETY: the 4 bytes at `p` are inside the packet (checked just above).
    let len = u32::from_le(unsafe { (p as *const u32).read_unaligned() });
    if len == END_MARK {
        return false;
    }
    let len = len as usize;
    // Room for the metadata in front and the end mark before that.
    if len < MIN_FRAME || len + META + END_CHUNK.len() > off {
        return false;
    }
    let head = (off - len) as i32;
    // SAFETY (all helper calls): `ctx.ctx` is the context the kernel passed
    // to the driver; the offsets keep data, meta and end inside the buffer
    // (checked above), which the kernel checks again.
    unsafe {
        if bpf_xdp_adjust_tail(ctx.ctx, -(TRAILER as i32)) != 0
            || bpf_xdp_adjust_head(ctx.ctx, head) != 0
            || bpf_xdp_adjust_meta(ctx.ctx, -(META as i32)) != 0
        {
            return false;
        }
    }
    crate::ingress::<false>(ctx);
    // SAFETY: as above; undoes the meta and head moves, then cuts the
    // chunk off (at least the end mark stays).
    unsafe {
        bpf_xdp_adjust_meta(ctx.ctx, META as i32) == 0
            && bpf_xdp_adjust_head(ctx.ctx, -head) == 0
            && bpf_xdp_adjust_tail(ctx.ctx, -((len + META) as i32)) == 0
    }
}
