//! Types shared by the flowd eBPF programs and the flowd daemon.
//!
//! Everything here crosses the kernel/user boundary as raw bytes in BPF maps,
//! so every type is `#[repr(C)]`, has no implicit padding (size asserts below)
//! and holds no `bool`, enum or `Option`. Addresses are network-order bytes;
//! IPv4 addresses are IPv4-mapped IPv6 (`::ffff:a.b.c.d`) so that one key
//! type serves both families.
#![cfg_attr(not(test), no_std)]

use core::mem::size_of;

pub mod afxdp;
pub mod drops;
pub mod l7;
pub mod proto;
pub mod replay;

pub use replay::{REPLAY_META_MAGIC, ReplayMeta};

/// Layout version of every map below. Bump it whenever a map's key or value
/// layout changes: pinned maps from another version are reset, not reused.
pub const ABI_VERSION: u32 = 6;

/// Names of the maps in the eBPF object (also their pin names in bpffs).
pub mod maps {
    pub const FLOWS_0: &str = "FLOWS_0";
    pub const FLOWS_1: &str = "FLOWS_1";
    pub const FRAGS: &str = "FRAGS";
    pub const TOTALS: &str = "TOTALS";
    pub const CONTROL: &str = "CONTROL";
    pub const IFACE_SLOTS: &str = "IFACE_SLOTS";
    pub const IFACE_SLOTS_BIG: &str = "IFACE_SLOTS_BIG";
    pub const RTT_PENDING: &str = "RTT_PENDING";
    pub const RTT_EVENTS: &str = "RTT_EVENTS";
    pub const RTT_RECENT: &str = "RTT_RECENT";
    pub const TCP_SEQ_0: &str = "TCP_SEQ_0";
    pub const TCP_SEQ_1: &str = "TCP_SEQ_1";
    pub const GEN_INSERTS: &str = "GEN_INSERTS";
    pub const L7_EVENTS: &str = "L7_EVENTS";
    pub const L7_CONTROL: &str = "L7_CONTROL";
    pub const L7_BUDGET: &str = "L7_BUDGET";
    /// The drop tracer's maps (not pinned: the tracer starts afresh with
    /// each daemon, see `flowd/src/loader/drops.rs`).
    pub const DROP_CONFIG: &str = "DROP_CONFIG";
    pub const DROP_IFACES: &str = "DROP_IFACES";
    pub const DROP_COUNTS: &str = "DROP_COUNTS";
    pub const DROP_OVERFLOW: &str = "DROP_OVERFLOW";
    /// Every map, in a stable order.
    pub const ALL: [&str; 16] = [
        FLOWS_0,
        FLOWS_1,
        FRAGS,
        TOTALS,
        CONTROL,
        IFACE_SLOTS,
        IFACE_SLOTS_BIG,
        RTT_PENDING,
        RTT_EVENTS,
        RTT_RECENT,
        TCP_SEQ_0,
        TCP_SEQ_1,
        GEN_INSERTS,
        L7_EVENTS,
        L7_CONTROL,
        L7_BUDGET,
    ];
}

/// Names of the programs in the eBPF object.
pub mod programs {
    pub const INGRESS: &str = "flowd_ingress";
    pub const EGRESS: &str = "flowd_egress";
    /// The `kfree_skb` tracer (tp_btf).
    pub const DROPS: &str = "flowd_drops";
}

/// Default number of flows per generation map.
pub const DEFAULT_FLOW_CAPACITY: u32 = 65_536;
/// Entries in the fragment map (first fragment -> ports), an LRU.
pub const FRAG_CAPACITY: u32 = 8_192;
/// Interface slots for the exact totals. Slot 0 collects packets of
/// interfaces the daemon has not assigned (it should stay at zero).
pub const MAX_SLOTS: u32 = 256;
/// `IFACE_SLOTS` is an array indexed by ifindex below this bound; larger
/// ifindexes are looked up in the `IFACE_SLOTS_BIG` hash.
pub const SLOT_ARRAY_LEN: u32 = 65_536;
/// Bounded walk over IPv6 extension headers: chains of up to this many
/// headers are parsed.
pub const MAX_IPV6_EXT_HEADERS: u32 = 8;
/// Pending RTT probes (a SYN, or a TSval, waiting for its echo), an LRU.
pub const RTT_PENDING_CAPACITY: u32 = 16_384;
/// Slots of `RTT_RECENT` (a power of two, one byte each, 512 KiB): when
/// each connection last took an RTT probe, so that ingress skips
/// `RTT_PENDING` when it cannot hit. With N connections probing per minute
/// about N / 524,288 of the others still look (a collision never skips a
/// real probe).
pub const RTT_RECENT_SLOTS: u32 = 524_288;
const _: () = assert!(RTT_RECENT_SLOTS.is_power_of_two());
/// Bytes of the ring buffer that carries RTT samples to user space.
pub const RTT_EVENTS_BYTES: u32 = 1 << 20;

/// Sequence state carried across generations: the drain writes each TCP
/// flow's highest sequence end (and its last RTT timestamp) back, so a
/// flow's first segment in the next generation can still be recognised as
/// a retransmission. Two arrays of 4-way buckets (one 64-byte entry each)
/// with this many slots in all (a power of two), indexed and tagged by
/// [`seq_hash`]: the programs read the one `Control::seq_gen` names, the
/// daemon writes the other (no torn reads), then flips. A full bucket
/// loses its least recently written flow (as an LRU would evict it).
pub const TCP_SEQ_CAPACITY: u32 = 131_072;
/// Slots per `TCP_SEQ_*` bucket.
pub const SEQ_WAYS: usize = 4;
/// Buckets per `TCP_SEQ_*` array.
pub const SEQ_BUCKETS: u32 = TCP_SEQ_CAPACITY / SEQ_WAYS as u32;
const _: () = assert!(TCP_SEQ_CAPACITY.is_power_of_two());

/// `Control::flags`: measure RTT (handshakes and TCP timestamps).
pub const FLAG_RTT: u32 = 1;
/// `Control::flags`: the L7 selection is on (`L7_CONTROL` has a snap
/// length). Off, the programs neither call the selection nor read
/// `L7_CONTROL`: the existing-flow path stays as it was without it.
pub const FLAG_L7: u32 = 2;

pub use proto::{DIR_EGRESS, DIR_INGRESS};

/// Index of the per-(slot, direction) counter block in `TOTALS`.
#[inline(always)]
pub const fn totals_index(slot: u32, direction: u8) -> u32 {
    slot * 2 + direction as u32
}

/// One flow: the key of the flow maps. 44 bytes, no padding.
///
/// Zero the whole key before filling it in: the map hashes every byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    pub ifindex: u32,
    /// Outer VLAN ID (0 when untagged).
    pub vlan: u16,
    /// `DIR_INGRESS` or `DIR_EGRESS`.
    pub direction: u8,
    /// IANA protocol number.
    pub proto: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Host byte order. ICMP: 0. Protocols without ports: 0.
    pub sport: u16,
    /// Host byte order. ICMP/ICMPv6: type * 256 + code.
    pub dport: u16,
}
const _: () = assert!(size_of::<FlowKey>() == 44);

/// The key's 44 bytes in one write (equal keys have equal bytes: no
/// padding), instead of ten writes field by field: the daemon hashes a key
/// for every flow it absorbs and every lookup of a reverse direction.
impl core::hash::Hash for FlowKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        // SAFETY: `repr(C)`, 44 bytes without padding (asserted above), so
        // every byte is initialized; the slice lives as long as `self`.
        let bytes = unsafe {
            core::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>())
        };
        state.write(bytes);
    }
}

/// The counters of one flow: the one list the kernel's map value
/// ([`FlowStats`], one drain interval) and the daemon's flow record
/// (cumulative) share. A new counter is a field here and a line in
/// [`FlowCounts::checked_add`]; the kernel counts it, the exporters show it.
///
/// 56 bytes, 8-aligned. One byte is the kernel's `seq_valid`: outside,
/// it would cost `FlowStats` another 8 bytes of padding in every map entry.
/// The order is the verifier's as much as ours: with `tcp_flags`, `dscp`
/// and `seq_valid` in the word after `rst` (as here, the offsets of ABI 4),
/// the verifier processes 243k / 373k instructions for ingress / egress;
/// with them at the end, 320k / 462k (`verifier_work_stays_far_from_the_limit`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounts {
    pub packets: u64,
    /// Frame length as on the wire, without FCS.
    pub bytes: u64,
    /// Segments with SYN (SYN-ACKs included), FIN, RST.
    pub syn: u32,
    pub fin: u32,
    pub rst: u32,
    /// OR of the TCP flag bits ([`proto::tcp`]: FIN=0x01 ... CWR=0x80, NS=0x100).
    pub tcp_flags: u16,
    /// DSCP of the last packet (the IP TOS / traffic class >> 2).
    pub dscp: u8,
    /// Kernel-internal: `FlowStats::seq_next` holds a sequence number.
    /// User space neither adds nor reads it (0 in the daemon's flows).
    pub seq_valid: u8,
    /// Segments with SYN and ACK.
    pub synack: u32,
    /// TCP segments whose data was already seen in this flow
    /// (retransmissions and reordering).
    pub retrans: u32,
    /// TCP segments advertising a zero window (SYN and RST aside).
    pub zero_window: u32,
    /// Packets by ECN codepoint: CE, ECT(0), ECT(1).
    pub ce: u32,
    pub ect0: u32,
    pub ect1: u32,
}
const _: () = assert!(size_of::<FlowCounts>() == 56);

impl FlowCounts {
    /// `self` then `other`: sums, the OR of the flags, `other`'s DSCP (the
    /// later packet's); `self`'s `seq_valid`. None when a sum would
    /// overflow its type.
    #[must_use]
    pub fn checked_add(&self, other: &Self) -> Option<Self> {
        Some(Self {
            packets: self.packets.checked_add(other.packets)?,
            bytes: self.bytes.checked_add(other.bytes)?,
            syn: self.syn.checked_add(other.syn)?,
            fin: self.fin.checked_add(other.fin)?,
            rst: self.rst.checked_add(other.rst)?,
            synack: self.synack.checked_add(other.synack)?,
            retrans: self.retrans.checked_add(other.retrans)?,
            zero_window: self.zero_window.checked_add(other.zero_window)?,
            ce: self.ce.checked_add(other.ce)?,
            ect0: self.ect0.checked_add(other.ect0)?,
            ect1: self.ect1.checked_add(other.ect1)?,
            tcp_flags: self.tcp_flags | other.tcp_flags,
            dscp: other.dscp,
            seq_valid: self.seq_valid,
        })
    }
}

/// One flow's value in the flow maps: its counters over one drain
/// interval, its times and the kernel's sequence state. 80 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Monotonic clock (or capture time in replay), nanoseconds. Live,
    /// first-seen is precise (`bpf_ktime_get_ns`) and last-seen is the
    /// start of the packet's 1/HZ tick (see `Control::jiffy_ns`), so it
    /// may lie up to a tick before first-seen.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub counts: FlowCounts,
    /// Kernel-internal: the highest sequence number + length seen (valid
    /// when `counts.seq_valid` is set).
    pub seq_next: u32,
    /// Kernel-internal: the last TSval an RTT probe was taken for.
    pub ts_last: u32,
}
const _: () = assert!(size_of::<FlowStats>() == 80);

impl FlowStats {
    /// Merges `other` into `self` (two values of one flow over the same
    /// interval): [`FlowCounts::checked_add`], min first, max last.
    ///
    /// # Panics
    /// When a count overflows, which one interval's counts cannot do.
    pub fn merge(&mut self, other: &Self) {
        if self.counts.packets == 0 {
            *self = *other;
            return;
        }
        if other.counts.packets == 0 {
            return;
        }
        self.counts = self
            .counts
            .checked_add(&other.counts)
            .expect("one interval's counts fit their types");
        self.first_seen_ns = self.first_seen_ns.min(other.first_seen_ns);
        self.last_seen_ns = self.last_seen_ns.max(other.last_seen_ns);
    }
}

/// One slot of a `TCP_SEQ_*` bucket. `tag` is the flow's [`seq_hash`]
/// with bit 0 set (0: an empty slot) and bit 1 = the sequence state is
/// valid. The tag stands for the key: another flow of the same bucket has
/// the same tag with a probability below 10^-13 per lookup (47 bits beyond
/// the bucket index), and then only a retransmission count is affected.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqSlot {
    pub tag: u64,
    /// The flow's highest sequence number + length seen (if bit 1 of tag).
    pub seq_next: u32,
    /// The last TSval (egress) / TSecr (ingress) RTT took for the flow:
    /// its first packet in the next generation does not probe it again.
    pub ts_last: u32,
}
const _: () = assert!(size_of::<SeqSlot>() == 16);

/// One entry of the `TCP_SEQ_*` arrays: a cache line of slots.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqBucket {
    pub slots: [SeqSlot; SEQ_WAYS],
}
const _: () = assert!(size_of::<SeqBucket>() == 64);

/// `SeqSlot::tag` bits.
pub const SEQ_TAG_USED: u64 = 1;
pub const SEQ_TAG_VALID: u64 = 2;

/// A 64-bit mix of the key's eleven words (the same code runs in the
/// kernel and in the daemon): its top bits pick the bucket, the rest (bits
/// 2..) tag the flow.
#[inline(always)]
pub fn seq_hash(key: &FlowKey) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut i = 0;
    while i < KEY_WORDS {
        h = (h ^ key_word(key, i) as u64)
            .wrapping_mul(0xbf58_476d_1ce4_e5b9)
            .rotate_left(29);
        i += 1;
    }
    h ^= h >> 31;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 29)
}

/// The bucket of a [`seq_hash`].
#[inline(always)]
pub fn seq_bucket(hash: u64) -> u32 {
    (hash >> 40) as u32 & (SEQ_BUCKETS - 1)
}

/// The tag a slot holds for a [`seq_hash`] (without `SEQ_TAG_VALID`).
#[inline(always)]
pub fn seq_tag(hash: u64) -> u64 {
    (hash & !3) | SEQ_TAG_USED
}

/// 4-byte words in a [`FlowKey`].
pub const KEY_WORDS: usize = size_of::<FlowKey>() / 4;

/// Word `i` (< [`KEY_WORDS`]) of the key, native-endian, read in place (a
/// copy of the whole key could become a byte-loop `memcpy` in BPF).
#[inline(always)]
pub fn key_word(key: &FlowKey, i: usize) -> u32 {
    debug_assert!(i < KEY_WORDS);
    // SAFETY: FlowKey is 4-byte aligned (its first field is a u32) and 44
    // bytes of plain integers without padding (asserted above); i < 11.
    unsafe { (key as *const FlowKey).cast::<u32>().add(i).read() }
}

/// Kinds of RTT probe.
pub const RTT_HANDSHAKE: u32 = 0;
pub const RTT_TIMESTAMP: u32 = 1;

/// A probe waiting for its echo: sent on egress, matched on ingress.
/// Addresses and ports in the egress packet's orientation. 48 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttKey {
    pub ifindex: u32,
    /// `RTT_HANDSHAKE` (token = the ACK number that answers a SYN or
    /// SYN-ACK) or `RTT_TIMESTAMP` (token = the TSval to be echoed).
    pub kind: u32,
    pub token: u32,
    pub sport: u16,
    pub dport: u16,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}
const _: () = assert!(size_of::<RttKey>() == 48);

/// One RTT sample, from the kernel to user space through `RTT_EVENTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttSample {
    /// The flow of the packet that closed the sample (the echo, ingress).
    pub key: FlowKey,
    pub kind: u32,
    pub rtt_ns: u64,
}
const _: () = assert!(size_of::<RttSample>() == 56);

/// Key of the fragment map: identifies one fragmented datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// IPv4: 16-bit identification; IPv6: 32-bit fragment identification.
    pub id: u32,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<FragKey>() == 40);

/// Ports and L4 protocol recorded from a first fragment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragPorts {
    pub sport: u16,
    pub dport: u16,
    /// The upper-layer protocol after any headers between the fragment
    /// header and L4 (IPv6 AH, destination options).
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<FragPorts>() == 8);

/// The daemon's switches, one entry of the `CONTROL` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Control {
    /// Which flow map the programs write to: 0 -> FLOWS_0, 1 -> FLOWS_1.
    pub active_gen: u32,
    pub flags: u32,
    /// Live timestamps from `bpf_jiffies64()` (inlined, no helper call):
    /// monotonic ns = jiffies * `jiffy_ns` - `jiffy_base_ns` (wrapping),
    /// the start of the tick the packet arrived in. Measured by the daemon
    /// at load; 0 means unknown, and the programs read the coarse clock.
    pub jiffy_ns: u64,
    pub jiffy_base_ns: u64,
    /// Which `TCP_SEQ_*` array the programs read: 0 or 1.
    pub seq_gen: u32,
    /// With `FLAG_L7`: the DNS ports of `L7Control::dns_ports` besides 53
    /// and 5353 ([`l7::extra_dns_ports`]; unused slots repeat 53), so the
    /// programs' pre-check compares ports exactly without an `L7_CONTROL`
    /// lookup.
    pub l7_dns_ports: [u16; 2],
}
const _: () = assert!(size_of::<Control>() == 32);

/// Counter indexes of one per-(interface, direction) block in `TOTALS`.
///
/// Every packet adds to `PACKETS` and `BYTES` and to exactly one `OUT_*`
/// outcome. Packets whose flow update failed also add to `OVERFLOW_*` and to
/// one `LOSS_*` counter; their totals are never lost.
pub mod counter {
    pub const PACKETS: usize = 0;
    pub const BYTES: usize = 1;
    /// Parsed into a flow (IP header and L4 ports where the protocol has them).
    pub const OUT_FLOW: usize = 2;
    /// A later fragment joined to its first fragment's ports.
    pub const OUT_FRAGMENT_JOINED: usize = 3;
    /// A later fragment whose first fragment was not seen: ports 0.
    pub const OUT_FRAGMENT_ORPHAN: usize = 4;
    /// IP header fine, L4 header cut short: a flow with ports 0.
    pub const OUT_L4_TRUNCATED: usize = 5;
    pub const OUT_NON_IP_ARP: usize = 6;
    pub const OUT_NON_IP_LLDP: usize = 7;
    pub const OUT_NON_IP_OTHER: usize = 8;
    /// Frame ends inside the L2 or L3 header.
    pub const OUT_TRUNCATED: usize = 9;
    /// IPv4 IHL < 5.
    pub const OUT_BAD_HEADER_LENGTH: usize = 10;
    /// EtherType says IPv4/IPv6 but the version nibble disagrees.
    pub const OUT_BAD_IP_VERSION: usize = 11;
    pub const OUT_TOO_MANY_EXT_HEADERS: usize = 12;
    /// More than two VLAN tags.
    pub const OUT_TOO_MANY_VLANS: usize = 13;
    /// Flow map full: the packet is in the totals and the overflow record.
    pub const LOSS_MAP_FULL: usize = 14;
    /// Any other flow insert failure.
    pub const LOSS_INSERT_FAILED: usize = 15;
    pub const OVERFLOW_PACKETS: usize = 16;
    pub const OVERFLOW_BYTES: usize = 17;
    /// Two CPUs inserted the same new flow; the loser added to the winner's
    /// entry (not a loss, but worth seeing).
    pub const INSERT_RACE: usize = 18;
    /// The fragment map's insert failed (first fragment not remembered).
    pub const FRAG_MAP_FAILED: usize = 19;
    /// RTT samples lost because the ring buffer to user space was full.
    pub const RTT_RING_FULL: usize = 20;
    /// L7 samples lost because the ring buffer to user space was full.
    pub const L7_RING_FULL: usize = 21;
    /// L7 samples not taken: the per-second copy budget was spent.
    pub const L7_BUDGET: usize = 22;
    /// A selected request's continuation segments were spent and more
    /// payload followed in that direction (counted once per request; the
    /// request may have been whole).
    pub const L7_CONTINUATION_LIMIT: usize = 23;
    pub const COUNT: usize = 24;

    /// First and one-past-last outcome index.
    pub const OUTCOMES: core::ops::Range<usize> = OUT_FLOW..LOSS_MAP_FULL;

    /// Exported name of every counter index, for metrics and logs.
    pub const NAMES: [&str; COUNT] = [
        "packets",
        "bytes",
        "flow",
        "fragment_joined",
        "fragment_orphan",
        "l4_truncated",
        "non_ip_arp",
        "non_ip_lldp",
        "non_ip_other",
        "truncated",
        "bad_header_length",
        "bad_ip_version",
        "too_many_ext_headers",
        "too_many_vlans",
        "map_full",
        "insert_failed",
        "overflow_packets",
        "overflow_bytes",
        "insert_race",
        "frag_map_failed",
        "rtt_ring_full",
        "l7_ring_full",
        "l7_budget",
        "l7_continuation_limit",
    ];
}

/// One per-(interface, direction) block of exact counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceCounters {
    pub c: [u64; counter::COUNT],
}
const _: () = assert!(size_of::<IfaceCounters>() == 8 * counter::COUNT);

impl Default for IfaceCounters {
    fn default() -> Self {
        Self {
            c: [0; counter::COUNT],
        }
    }
}

impl IfaceCounters {
    pub fn add(&mut self, other: &Self) {
        for (a, b) in self.c.iter_mut().zip(other.c.iter()) {
            *a = a.wrapping_add(*b);
        }
    }
}

/// Maps an IPv4 address (network order) into the 16-byte key form.
#[inline(always)]
pub const fn ipv4_mapped(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), Copy, and have no padding (asserted above),
    // so every byte pattern of their size is a valid value.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowCounts {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FragKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FragPorts {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Control {}
    // SAFETY: as above.
    unsafe impl aya::Pod for IfaceCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RttKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RttSample {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SeqSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SeqBucket {}
    // SAFETY: as above.
    unsafe impl aya::Pod for l7::L7Control {}
    // SAFETY: as above.
    unsafe impl aya::Pod for l7::L7Budget {}
    // SAFETY: as above.
    unsafe impl aya::Pod for drops::DropConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for drops::DropIface {}
    // SAFETY: as above.
    unsafe impl aya::Pod for drops::DropKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for drops::DropCounts {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_refuse_an_overflow() {
        let a = FlowCounts {
            packets: 2,
            bytes: 120,
            syn: 1,
            tcp_flags: proto::tcp::SYN,
            dscp: 10,
            seq_valid: 1,
            ..Default::default()
        };
        let b = FlowCounts {
            packets: 3,
            bytes: 4500,
            retrans: 1,
            ce: 2,
            tcp_flags: proto::tcp::ACK,
            dscp: 46,
            ..Default::default()
        };
        let sum = a.checked_add(&b).unwrap();
        assert_eq!((sum.packets, sum.bytes, sum.syn), (5, 4620, 1));
        assert_eq!((sum.retrans, sum.ce), (1, 2));
        assert_eq!(sum.tcp_flags, proto::tcp::SYN | proto::tcp::ACK);
        assert_eq!(
            (sum.dscp, sum.seq_valid),
            (46, 1),
            "the later DSCP, self's seq_valid"
        );
        let full = FlowCounts {
            ect1: u32::MAX,
            ..a
        };
        assert_eq!(full.checked_add(&FlowCounts { ect1: 1, ..b }), None);
    }

    #[test]
    fn protocol_table_has_one_name_per_number() {
        for (i, (p, n)) in proto::ip::NAMES.iter().enumerate() {
            assert!(
                proto::ip::NAMES[i + 1..]
                    .iter()
                    .all(|(q, m)| q != p && m != n)
            );
            assert_eq!(proto::ip::name(*p), Some(*n));
        }
        assert_eq!(proto::ip::name(proto::ip::ICMPV6), Some("icmpv6"));
        assert_eq!(proto::ip::name(253), None);
        assert!(proto::ip::has_ports(proto::ip::SCTP) && !proto::ip::has_ports(proto::ip::ICMP));
    }

    #[test]
    fn replay_chunks_read_back() {
        let mut buf = [0u8; 128];
        let meta = ReplayMeta::new(60, 0).to_bytes();
        let start = replay::put_chunk(&mut buf, 128, &meta, &[7; 20]);
        assert_eq!(start, 128 - 20 - replay::CHUNK_OVERHEAD);
        let at = replay::put_end_mark(&mut buf, start);
        let (m, frame, s) = replay::chunk_before(&buf, 128).unwrap();
        assert_eq!((m, frame, s), (meta, &[7u8; 20][..], start));
        assert_eq!(
            replay::chunk_before(&buf[at..], start - at),
            None,
            "end mark"
        );
        assert_eq!(&meta[8..16], &1u64.to_le_bytes(), "time 0 becomes 1 ns");
    }
}
