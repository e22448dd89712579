//! Turns one parsed packet into counter updates: the exact per-interface
//! totals (always), and the flow map of the active generation.

use core::intrinsics::{AtomicOrdering::Relaxed, atomic_xadd};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
};
use flowd_common::{FlowKey, FlowStats, IfaceCounters, SLOT_ARRAY_LEN, counter, totals_index};

use crate::{
    maps::{CONTROL, FLOWS_0, FLOWS_1, IFACE_SLOTS, IFACE_SLOTS_BIG, TOTALS},
    parse::{Frame, L4Info, parse},
};

const TCP_FIN: u16 = 0x01;
const TCP_SYN: u16 = 0x02;
const TCP_RST: u16 = 0x04;
const E2BIG: i32 = 7;
const EEXIST: i32 = 17;

/// One packet as the hook saw it.
pub(crate) struct Packet {
    pub(crate) ifindex: u32,
    pub(crate) direction: u8,
    /// Frame length on the wire (the whole buffer, or the replay's original length).
    pub(crate) len: u64,
    /// Wire packets this buffer stands for (GSO segments on egress), at least 1.
    pub(crate) segs: u32,
    /// Capture timestamp in replay; 0 live (then the kernel clock is used).
    pub(crate) ts_ns: u64,
}

#[inline(always)]
pub(crate) fn account(f: &Frame, pkt: &Packet) {
    let mut key = FlowKey::default();
    let mut info = L4Info::default();
    let outcome = parse(f, &mut key, &mut info);

    let (packets, bytes) = if pkt.segs > 1 {
        // A GSO buffer: each segment repeats the headers on the wire.
        let extra = (pkt.segs as u64 - 1) * info.header_end as u64;
        (pkt.segs as u64, pkt.len + extra)
    } else {
        (1, pkt.len)
    };

    let Some(totals) = TOTALS.get_ptr_mut(totals_index(slot_of(pkt.ifindex), pkt.direction)) else {
        return;
    };
    // SAFETY: a per-CPU array slot; programs on this CPU do not preempt each other.
    let totals = unsafe { &mut *totals };
    totals.c[counter::PACKETS] += packets;
    totals.c[counter::BYTES] += bytes;
    if let Some(c) = totals.c.get_mut(outcome) {
        *c += packets;
    }
    if info.frag_map_failed {
        totals.c[counter::FRAG_MAP_FAILED] += 1;
    }

    match outcome {
        counter::OUT_FLOW
        | counter::OUT_FRAGMENT_JOINED
        | counter::OUT_FRAGMENT_ORPHAN
        | counter::OUT_L4_TRUNCATED => {}
        _ => return,
    }
    key.ifindex = pkt.ifindex;
    key.direction = pkt.direction;
    update_flow(&key, &info, packets, bytes, pkt.ts_ns, totals);
}

#[inline(always)]
fn slot_of(ifindex: u32) -> u32 {
    let slot = if ifindex < SLOT_ARRAY_LEN {
        IFACE_SLOTS.get(ifindex).copied()
    } else {
        // SAFETY: plain u32 values, written only by the daemon.
        unsafe { IFACE_SLOTS_BIG.get(&ifindex) }.copied()
    };
    slot.unwrap_or(0)
}

#[inline(always)]
fn update_flow(
    key: &FlowKey,
    info: &L4Info,
    packets: u64,
    bytes: u64,
    ts_ns: u64,
    totals: &mut IfaceCounters,
) {
    let generation = CONTROL.get(0).map_or(0, |c| c.active_gen);
    let flows = if generation == 0 { &FLOWS_0 } else { &FLOWS_1 };

    if let Some(v) = flows.get_ptr_mut(key) {
        add_to(v, info.tcp_flags, packets, bytes, now(ts_ns, false));
        return;
    }

    let flags = info.tcp_flags;
    let t = now(ts_ns, true);
    let new = FlowStats {
        packets,
        bytes,
        first_seen_ns: t,
        last_seen_ns: t,
        syn: (flags & TCP_SYN != 0) as u32,
        fin: (flags & TCP_FIN != 0) as u32,
        rst: (flags & TCP_RST != 0) as u32,
        tcp_flags: flags,
        _pad: 0,
    };
    match flows.insert(key, &new, BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(e) if e == -EEXIST => {
            // Another CPU inserted this flow between our lookup and insert.
            totals.c[counter::INSERT_RACE] += 1;
            match flows.get_ptr_mut(key) {
                Some(v) => add_to(v, flags, packets, bytes, t),
                None => overflow(totals, counter::LOSS_INSERT_FAILED, packets, bytes),
            }
        }
        Err(e) if e == -E2BIG => overflow(totals, counter::LOSS_MAP_FULL, packets, bytes),
        Err(_) => overflow(totals, counter::LOSS_INSERT_FAILED, packets, bytes),
    }
}

#[inline(always)]
fn overflow(totals: &mut IfaceCounters, loss: usize, packets: u64, bytes: u64) {
    totals.c[loss] += packets;
    totals.c[counter::OVERFLOW_PACKETS] += packets;
    totals.c[counter::OVERFLOW_BYTES] += bytes;
}

/// Adds to a shared flow entry. Other CPUs may update it at the same time,
/// hence atomic adds (the BPF target's core has no atomic types, so the
/// intrinsics; they compile to BPF_ATOMIC instructions); last-seen is a plain store (any recent value will do).
#[inline(always)]
fn add_to(v: *mut FlowStats, flags: u16, packets: u64, bytes: u64, t: u64) {
    // SAFETY: `v` points into a preallocated hash map value that stays valid
    // for this program run (RCU); the fields are naturally aligned.
    unsafe {
        atomic_xadd::<_, _, { Relaxed }>(&raw mut (*v).packets, packets);
        atomic_xadd::<_, _, { Relaxed }>(&raw mut (*v).bytes, bytes);
        (&raw mut (*v).last_seen_ns).write_volatile(t);
        if flags != 0 {
            if flags & TCP_SYN != 0 {
                atomic_xadd::<_, _, { Relaxed }>(&raw mut (*v).syn, 1u32);
            }
            if flags & TCP_FIN != 0 {
                atomic_xadd::<_, _, { Relaxed }>(&raw mut (*v).fin, 1u32);
            }
            if flags & TCP_RST != 0 {
                atomic_xadd::<_, _, { Relaxed }>(&raw mut (*v).rst, 1u32);
            }
            if (*v).tcp_flags & flags != flags {
                // BPF v1 has no atomic OR. A flow lives on one CPU under RSS, so
                // a lost bit needs two CPUs on one flow at once; SYN/FIN/RST are
                // also counted atomically above and user space ORs those back in.
                (&raw mut (*v).tcp_flags).write_volatile((*v).tcp_flags | flags);
            }
        }
    }
}

/// The packet's time: the capture's in replay; live, a precise clock for a
/// new flow's first packet and the cheaper coarse clock for the rest.
#[inline(always)]
fn now(ts_ns: u64, precise: bool) -> u64 {
    if ts_ns != 0 {
        return ts_ns;
    }
    // SAFETY: helpers without arguments.
    unsafe {
        if precise {
            bpf_ktime_get_ns()
        } else {
            bpf_ktime_get_coarse_ns()
        }
    }
}
