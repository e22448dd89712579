//! flowd's kernel side: an XDP program for ingress and a TC program for
//! egress, both feeding the same parser and accounting code. Host mode:
//! every packet passes, whatever happens here. `drops.rs` is a tracer on
//! `kfree_skb`, off the packet path.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic intrinsics: the BPF target has no atomic RMW types"
)]

mod account;
mod afxdp;
mod drops;
mod l7;
mod maps;
mod note;
mod parse;
mod replay;

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    helpers::generated::bpf_xdp_get_buff_len,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use flowd_common::{DIR_EGRESS, DIR_INGRESS, REPLAY_META_MAGIC, ReplayMeta};

use crate::{
    account::{Packet, account},
    parse::Frame,
};

/// Bytes the TC program makes linear when the headers are not.
const PULL_LEN: u32 = 256;

#[xdp(frags)]
pub(crate) fn flowd_ingress(ctx: XdpContext) -> u32 {
    ingress::<true>(&ctx);
    verdict()
}

/// What the ingress program does with one frame, before its verdict. The
/// replay driver (`replay::flowd_replay`) runs this same code on each frame
/// of a batch, without the RTT code (`RTT = false`: a capture pairs no
/// probes, and the verifier then checks less).
#[inline(always)]
pub(crate) fn ingress<const RTT: bool>(ctx: &XdpContext) {
    let frame = Frame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let (len, ts_ns) = match replay_meta(ctx) {
        Some(m) => (m.wire_len as u64, m.ts_ns),
        // SAFETY: the context pointer is the one the kernel passed in.
        None => (unsafe { bpf_xdp_get_buff_len(ctx.ctx) }, 0),
    };
    account::<true, RTT, _>(
        ctx,
        &frame,
        &Packet {
            ifindex: ctx.ingress_ifindex() as u32,
            direction: DIR_INGRESS,
            len,
            segs: 1,
            ts_ns,
        },
    );
}

/// The one place that decides what happens to an ingress packet. Host mode
/// always passes it; a mirror port's AF_XDP redirect would go here.
#[inline(always)]
fn verdict() -> u32 {
    xdp_action::XDP_PASS
}

/// Replay (`BPF_PROG_TEST_RUN`) puts the original length and capture time in
/// the XDP metadata area; live frames have no metadata.
#[inline(always)]
pub(crate) fn replay_meta(ctx: &XdpContext) -> Option<ReplayMeta> {
    let start = ctx.metadata();
    if start + size_of::<ReplayMeta>() > ctx.metadata_end() {
        return None;
    }
    // SAFETY: bounds checked against the end of the metadata area just above.
    let m = unsafe { (start as *const ReplayMeta).read_unaligned() };
    (m.magic == REPLAY_META_MAGIC).then_some(m)
}

#[classifier]
pub(crate) fn flowd_egress(ctx: TcContext) -> i32 {
    // SAFETY: reading plain fields of the context the kernel passed in.
    let (len, segs, ifindex) = unsafe {
        let skb = &*ctx.skb.skb;
        (skb.len, skb.gso_segs, skb.ifindex)
    };
    let linear = ctx.data_end() - ctx.data();
    if linear < PULL_LEN as usize && len as usize > linear {
        // Headers may sit in paged data; failure only means a shorter parse.
        let _ = ctx.pull_data(len.min(PULL_LEN));
    }
    let frame = Frame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    account::<false, true, _>(
        &ctx,
        &frame,
        &Packet {
            ifindex,
            direction: DIR_EGRESS,
            len: len as u64,
            segs: if segs == 0 { 1 } else { segs },
            ts_ns: 0,
        },
    );
    // Let the next program (tcx) or the default action (clsact) decide.
    TC_ACT_UNSPEC
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
