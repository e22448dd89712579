//! The programs' log of rare events, through aya-log: a flow map that is
//! full, a flow insert that failed, a ring (RTT or L7 samples) that is full,
//! a header the parser did not expect. The daemon reads the log ring at
//! every drain and shows each line through its tracing (target
//! `flowd::kernel`).
//!
//! Never on the per-packet path: [`note`] is called only from the branches
//! that already count the event, and logs each kind at most once per
//! [`NOTE_INTERVAL_NS`] (the first occurrence, then one line a minute while
//! it lasts). The exact counts are in the interface totals and their
//! metrics; a line says where to look. The check is a plain read and write
//! of a shared array: two CPUs that hit the same event in the same instant
//! may both log, which a rate limit can afford.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use aya_log_ebpf::{info, warn};
use flowd_common::counter;

use crate::maps::NOTE_LAST;

/// One line per kind at most this often.
const NOTE_INTERVAL_NS: u64 = 60_000_000_000;

/// The kinds of rare events (indexes of `NOTE_LAST`).
pub(crate) const MAP_FULL: u32 = 0;
pub(crate) const INSERT_FAILED: u32 = 1;
pub(crate) const RTT_RING_FULL: u32 = 2;
pub(crate) const L7_RING_FULL: u32 = 3;
pub(crate) const BAD_HEADER: u32 = 4;
/// Kinds in all (`NOTE_LAST`'s size).
pub(crate) const KINDS: u32 = 5;

/// Logs a rare event of `kind` on `ifindex` (`detail`: the direction, or
/// the parse outcome for [`BAD_HEADER`]), unless one of its kind was
/// logged in the last minute.
#[inline(always)]
pub(crate) fn note(kind: u32, ifindex: u32, detail: u32) {
    flowd_note(kind, ifindex, detail);
}

/// [`note`]'s body, a BPF global function: verified once, on its own, so
/// the log's formatting code adds nothing to the callers' verification.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn flowd_note(kind: u32, ifindex: u32, detail: u32) -> i32 {
    let Some(last) = NOTE_LAST.get_ptr_mut(kind) else {
        return 0;
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: an element of an array map; a racy read and write is what
    // this rate limit accepts (see the module's header).
    unsafe {
        if *last != 0 && now.wrapping_sub(*last) < NOTE_INTERVAL_NS {
            return 0;
        }
        *last = now;
    }
    let ctx = ();
    match kind {
        MAP_FULL => warn!(
            &ctx,
            target: "flowd::kernel",
            "flow map full on ifindex {} direction {}: new flows are counted in the interface totals only (flowd_overflow_packets_total); raise flow_capacity in the config",
            ifindex,
            detail
        ),
        INSERT_FAILED => warn!(
            &ctx,
            target: "flowd::kernel",
            "flow insert failed on ifindex {} direction {}: counted in the interface totals only (flowd_flow_lost_packets_total)",
            ifindex,
            detail
        ),
        RTT_RING_FULL => warn!(
            &ctx,
            target: "flowd::kernel",
            "RTT sample ring full on ifindex {}: samples skipped (flowd_rtt_samples_lost_total)",
            ifindex
        ),
        L7_RING_FULL => warn!(
            &ctx,
            target: "flowd::kernel",
            "L7 sample ring full on ifindex {}: packets not copied (flowd_l7_skipped_total{{reason=\"ring_full\"}})",
            ifindex
        ),
        _ => {
            let what = match detail as usize {
                counter::OUT_BAD_HEADER_LENGTH => "an IP or TCP header length out of range",
                counter::OUT_BAD_IP_VERSION => "an IP version that is neither 4 nor 6",
                counter::OUT_TOO_MANY_EXT_HEADERS => "more IPv6 extension headers than parsed",
                counter::OUT_TOO_MANY_VLANS => "more VLAN tags than parsed",
                _ => "an unexpected header",
            };
            info!(
                &ctx,
                target: "flowd::kernel",
                "unexpected header on ifindex {}: {}; the packet is counted under its outcome (flowd_parse_outcome_packets_total)",
                ifindex,
                what
            )
        }
    }
    0
}
