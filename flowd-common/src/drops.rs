//! Kernel drop reasons (issue 14): the `kfree_skb` tracer's maps and their
//! records, shared by the program (`flowd-ebpf/src/drops.rs`) and the daemon
//! (`flowd/src/loader/drops.rs`).
//!
//! The program reads `sk_buff` and `net_device` fields with
//! `bpf_probe_read_kernel` at offsets the daemon takes from the running
//! kernel's BTF at load ([`DropConfig`]): aya 0.14 has no CO-RE field
//! relocations for Rust programs, and hard-coded offsets would break with
//! the next kernel.

/// Entries of `DROP_COUNTS` (slot, reason) at most; a drop whose key does
/// not fit is counted in `DROP_OVERFLOW[0]` (packets, bytes) instead.
pub const DROP_COUNTS_CAPACITY: u32 = 4096;
/// Monitored (netns, ifindex) pairs at most.
pub const DROP_IFACES_CAPACITY: u32 = 256;

/// `DROP_CONFIG[0]`: written by the daemon before the program is attached.
/// `enabled == 0` (the map's initial zero) makes the program do nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropConfig {
    pub enabled: u32,
    /// `SKB_CONSUMED`'s value in this kernel's `enum skb_drop_reason`.
    pub reason_consumed: u32,
    /// `SKB_NOT_DROPPED_YET`'s value.
    pub reason_not_dropped_yet: u32,
    /// Byte offsets: `sk_buff.dev`, `sk_buff.len`, `net_device.ifindex`,
    /// `net_device.nd_net` (its `net` pointer is the first member of
    /// `possible_net_t`), and `net.ns.inum`.
    pub off_skb_dev: u32,
    pub off_skb_len: u32,
    pub off_dev_ifindex: u32,
    pub off_dev_nd_net: u32,
    pub off_net_ns_inum: u32,
}
const _: () = assert!(size_of::<DropConfig>() == 32);

/// `DROP_IFACES` key: a monitored interface, by its namespace and index.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropIface {
    /// The inode of the interface's network namespace (`ns.inum`, what
    /// `stat /proc/<pid>/ns/net` shows).
    pub netns: u32,
    pub ifindex: u32,
}
const _: () = assert!(size_of::<DropIface>() == 8);

/// `DROP_COUNTS` key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    /// The interface's counter slot (the same as its totals').
    pub slot: u32,
    /// The kernel's `enum skb_drop_reason` value.
    pub reason: u32,
}
const _: () = assert!(size_of::<DropKey>() == 8);

/// `DROP_COUNTS` value (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    pub packets: u64,
    /// `skb->len` at the drop (what the layer that dropped it saw).
    pub bytes: u64,
}
const _: () = assert!(size_of::<DropCounts>() == 16);
