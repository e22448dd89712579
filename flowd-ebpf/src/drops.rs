//! Kernel drop reasons (issue 14): a BTF tracepoint on `kfree_skb` that
//! counts dropped packets and bytes per (monitored interface, reason). It is
//! not on the packet path of the XDP/TC programs: it runs only when the
//! kernel frees an skb, and returns at once for frees that are not drops.
//!
//! Fields are read with `bpf_probe_read_kernel` at the offsets in
//! `DROP_CONFIG`, which the daemon takes from the running kernel's BTF (see
//! `flowd_common::drops`). A failed read skips the event: the tracer never
//! guesses an interface.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{btf_tracepoint, map},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use flowd_common::drops::{
    DROP_COUNTS_CAPACITY, DROP_IFACES_CAPACITY, DropConfig, DropCounts, DropIface, DropKey,
};

/// Offsets and the two "not a drop" reason values; `enabled == 0` until the
/// daemon writes it.
#[map]
pub(crate) static DROP_CONFIG: Array<DropConfig> = Array::with_max_entries(1, 0);

/// (netns inode, ifindex) -> counter slot of each monitored interface.
#[map]
pub(crate) static DROP_IFACES: HashMap<DropIface, u32> =
    HashMap::with_max_entries(DROP_IFACES_CAPACITY, 0);

/// (slot, reason) -> packets and bytes, per CPU.
#[map]
pub(crate) static DROP_COUNTS: PerCpuHashMap<DropKey, DropCounts> =
    PerCpuHashMap::with_max_entries(DROP_COUNTS_CAPACITY, 0);

/// Drops of monitored interfaces that found `DROP_COUNTS` full.
#[map]
pub(crate) static DROP_OVERFLOW: PerCpuArray<DropCounts> = PerCpuArray::with_max_entries(1, 0);

/// `trace_kfree_skb(skb, location, reason, rx_sk)`.
#[btf_tracepoint(function = "kfree_skb")]
pub(crate) fn flowd_drops(ctx: BtfTracePointContext) -> i32 {
    let skb: *const u8 = ctx.arg(0);
    let reason: u32 = ctx.arg(2);
    count(skb, reason);
    0
}

#[inline(always)]
fn count(skb: *const u8, reason: u32) -> Option<()> {
    let cfg = DROP_CONFIG.get(0)?;
    if cfg.enabled == 0 || reason == cfg.reason_consumed || reason == cfg.reason_not_dropped_yet {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks every address; a bad one fails
    // the read, which skips the event.
    let (ifindex, netns, len) = unsafe {
        let dev: *const u8 = read(skb, cfg.off_skb_dev)?;
        if dev.is_null() {
            return None;
        }
        let ifindex: u32 = read(dev, cfg.off_dev_ifindex)?;
        let net: *const u8 = read(dev, cfg.off_dev_nd_net)?;
        if net.is_null() {
            return None;
        }
        let netns: u32 = read(net, cfg.off_net_ns_inum)?;
        let len: u32 = read(skb, cfg.off_skb_len)?;
        (ifindex, netns, len)
    };
    // SAFETY: a plain lookup of a value the program only reads.
    let slot = *unsafe { DROP_IFACES.get(DropIface { netns, ifindex }) }?;
    let key = DropKey { slot, reason };
    match DROP_COUNTS.get_ptr_mut(key) {
        // SAFETY: this CPU's own value; nothing else writes it meanwhile.
        Some(c) => unsafe {
            (*c).packets += 1;
            (*c).bytes += len as u64;
        },
        None => {
            let first = DropCounts {
                packets: 1,
                bytes: len as u64,
            };
            if DROP_COUNTS.insert(key, first, 0).is_err() {
                let o = DROP_OVERFLOW.get_ptr_mut(0)?;
                // SAFETY: this CPU's own value.
                unsafe {
                    (*o).packets += 1;
                    (*o).bytes += len as u64;
                }
            }
        }
    }
    Some(())
}

/// Reads a `T` at `base + off` from kernel memory.
#[inline(always)]
unsafe fn read<T>(base: *const u8, off: u32) -> Option<T> {
    // SAFETY: the helper validates the address (see the caller).
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize).cast::<T>()).ok() }
}
