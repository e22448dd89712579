//! Turns one parsed packet into counter updates: the exact per-interface
//! totals (always), the flow map of the active generation, and RTT probes.

use core::{
    intrinsics::{AtomicOrdering::Relaxed, atomic_xadd},
    mem::MaybeUninit,
};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    maps::HashMap,
};
use flowd_common::{
    DIR_EGRESS, FLAG_L7, FLAG_RTT, FlowKey, FlowStats, IfaceCounters, RTT_HANDSHAKE,
    RTT_RECENT_SLOTS, RTT_TIMESTAMP, RttKey, RttSample, SEQ_TAG_VALID, SEQ_WAYS, SLOT_ARRAY_LEN,
    SeqSlot, counter, key_word, proto::tcp, seq_bucket, seq_hash, seq_tag, totals_index,
};

use crate::{
    l7::{self, Payload},
    maps::{
        CONTROL, FLOWS_0, FLOWS_1, GEN_INSERTS, IFACE_SLOTS, IFACE_SLOTS_BIG, RTT_EVENTS,
        RTT_PENDING, RTT_RECENT, TCP_SEQ_0, TCP_SEQ_1, TOTALS,
    },
    note,
    parse::{Frame, L4Info, parse},
};

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

/// Zeroes a value in place with 4-byte stores. Building a zeroed value and
/// returning it by value lets LLVM turn the copy into a `memset` call,
/// which in BPF is a byte-at-a-time loop; volatile stores stay as stores.
#[inline(always)]
fn zero_in_place<T>(p: *mut T) {
    let w = p.cast::<u32>();
    let mut i = 0;
    while i < size_of::<T>() / 4 {
        // SAFETY: in bounds of `*p` (sizes are multiples of 4, asserted
        // below), and the types used here are at least 4-byte aligned.
        unsafe { w.add(i).write_volatile(0) };
        i += 1;
    }
}
const _: () = assert!(size_of::<FlowKey>() % 4 == 0);
const _: () = assert!(size_of::<L4Info>() % 4 == 0);
const _: () = assert!(size_of::<FlowStats>() % 4 == 0);

/// Parses one packet and adds it to its flow and the totals. `INLINE_IP`:
/// see [`parse`]. `RTT`: whether the RTT code is compiled in at all (then
/// `FLAG_RTT` switches it at run time); the replay driver leaves it out.
#[inline(always)]
pub(crate) fn account<const INLINE_IP: bool, const RTT: bool, P: Payload>(
    p: &P,
    f: &Frame,
    pkt: &Packet,
) {
    let mut key_slot = MaybeUninit::<FlowKey>::uninit();
    let mut info_slot = MaybeUninit::<L4Info>::uninit();
    zero_in_place(key_slot.as_mut_ptr());
    zero_in_place(info_slot.as_mut_ptr());
    // SAFETY: every byte was zeroed, and all-zero is a valid value of both
    // (integers, arrays of bytes and `false`).
    let (key, info) = unsafe { (key_slot.assume_init_mut(), info_slot.assume_init_mut()) };
    let outcome = parse::<INLINE_IP>(f, key, info);

    let (packets, bytes) = if pkt.segs > 1 {
        // A GSO buffer: each segment repeats the headers on the wire.
        let extra = (pkt.segs as u64 - 1) * info.header_end as u64;
        // Its payload is the buffer's, not the first IP header's.
        info.tcp_payload = (pkt.len as u32).saturating_sub(info.header_end);
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
        counter::OUT_BAD_HEADER_LENGTH
        | counter::OUT_BAD_IP_VERSION
        | counter::OUT_TOO_MANY_EXT_HEADERS
        | counter::OUT_TOO_MANY_VLANS => {
            note::note(note::BAD_HEADER, pkt.ifindex, outcome as u32);
            return;
        }
        _ => return,
    }
    key.ifindex = pkt.ifindex;
    key.direction = pkt.direction;
    let Some(ctl) = CONTROL.get(0) else {
        return;
    };
    let clock = Clock {
        ts_ns: pkt.ts_ns,
        jiffy_ns: ctl.jiffy_ns,
        jiffy_base_ns: ctl.jiffy_base_ns,
        seq_gen: ctl.seq_gen,
        rtt: RTT && ctl.flags & FLAG_RTT != 0,
        egress: pkt.direction == DIR_EGRESS,
    };
    let (l7, l7_dns_ports) = (ctl.flags & FLAG_L7 != 0, ctl.l7_dns_ports);
    // One call site per map, so the verifier can inline each map's lookup.
    let (v, prev_ts) = if ctl.active_gen == 0 {
        update_flow(
            &FLOWS_0, &FLOWS_1, 0, key, info, packets, bytes, &clock, totals,
        )
    } else {
        update_flow(
            &FLOWS_1, &FLOWS_0, 1, key, info, packets, bytes, &clock, totals,
        )
    };
    if clock.rtt && info.tcp_full {
        let v = if v.is_null() { None } else { Some(v) };
        rtt(key, info, v, prev_ts, pkt, &clock, totals);
    }
    // The selection off: one test of a flag already loaded. On: the
    // inline pre-check turns away packets without payload and those that
    // cannot be selected before the (global function) call. Last, so that
    // its branches do not multiply the verifier's walks of the RTT code.
    if outcome == counter::OUT_FLOW && l7 && l7::candidate(key, info, v, l7_dns_ports) {
        p.select(key, info, v, totals);
    }
}

/// Where a packet's time comes from, which sequence array to read, and
/// the other per-packet settings from `CONTROL`.
struct Clock {
    /// Capture time in replay; 0 live.
    ts_ns: u64,
    /// `Control::jiffy_ns` and `jiffy_base_ns`.
    jiffy_ns: u64,
    jiffy_base_ns: u64,
    seq_gen: u32,
    /// RTT measurement on (`FLAG_RTT`).
    rtt: bool,
    egress: bool,
}

impl Clock {
    /// Last-seen time: the capture's in replay; live, the start of the
    /// current tick from the inlined `bpf_jiffies64()` (the coarse clock
    /// when the daemon has not measured the tick).
    #[inline(always)]
    fn coarse(&self) -> u64 {
        if self.ts_ns != 0 {
            return self.ts_ns;
        }
        if self.jiffy_ns != 0 {
            // SAFETY: a helper without arguments (inlined by the verifier).
            let j = unsafe { bpf_jiffies64() };
            return j
                .wrapping_mul(self.jiffy_ns)
                .wrapping_sub(self.jiffy_base_ns);
        }
        // SAFETY: a helper without arguments.
        unsafe { bpf_ktime_get_coarse_ns() }
    }
}

/// Unit of the `RTT_RECENT` marks: 2^30 ns (about 1.07 s) of the jiffies
/// clock, kept in one byte (it wraps every ~275 s).
const RECENT_SHIFT: u32 = 30;
/// Marks younger than this many units count (about 64 s): a connection
/// with no egress probe for a minute has nothing to close. A wrapped old
/// mark that looks young only costs a lookup.
const RECENT_UNITS: u8 = 60;

impl Clock {
    /// The current `RTT_RECENT` time unit.
    #[inline(always)]
    fn recent_now(&self) -> u8 {
        // SAFETY: a helper without arguments (inlined by the verifier).
        let j = unsafe { bpf_jiffies64() };
        (j.wrapping_mul(self.jiffy_ns) >> RECENT_SHIFT) as u8
    }

    /// The byte of `RTT_RECENT` slot `slot` (64 slots per array entry:
    /// array entries are at least 8 bytes).
    #[inline(always)]
    fn recent_byte(slot: u32) -> Option<*mut u8> {
        let line = RTT_RECENT.get_ptr_mut(slot / 64)?;
        // SAFETY: within the 64-byte entry (slot % 64 < 64).
        Some(unsafe { line.cast::<u8>().add((slot % 64) as usize) })
    }

    /// Whether an RTT probe of the connection in `RTT_RECENT` slot `slot`
    /// may be pending: one was taken within `RECENT_UNITS`. Always true
    /// without a measured tick (then every candidate is looked up).
    #[inline(always)]
    fn probe_may_exist(&self, slot: u32) -> bool {
        if self.jiffy_ns == 0 {
            return true;
        }
        let Some(p) = Self::recent_byte(slot) else {
            return true;
        };
        // SAFETY: a live array byte; byte loads are atomic.
        let then = unsafe { p.read_volatile() };
        self.recent_now().wrapping_sub(then) < RECENT_UNITS
    }

    /// Notes that a probe of the connection in `slot` is being taken now.
    #[inline(always)]
    fn mark_probe(&self, slot: u32) {
        if self.jiffy_ns == 0 {
            return;
        }
        if let Some(p) = Self::recent_byte(slot) {
            // SAFETY: a live array byte; a byte store cannot be torn and
            // any CPU's value is as good (both are "now").
            unsafe { p.write_volatile(self.recent_now()) };
        }
    }
}

/// The `RTT_RECENT` slot of a TCP connection, in the egress packet's
/// orientation (egress marks its own key; ingress reads its key reversed,
/// which is the egress key of the same connection).
#[inline(always)]
fn recent_probe_slot(key: &FlowKey, reversed: bool) -> u32 {
    let ports = key_word(key, 10);
    let (a, b, ports) = if reversed {
        (6, 2, ports.rotate_left(16))
    } else {
        (2, 6, ports)
    };
    let mut h = key_word(key, 0).wrapping_mul(0x9e37_79b9);
    let mut i = 0;
    while i < 9 {
        let x = if i < 4 {
            key_word(key, a + i)
        } else if i < 8 {
            key_word(key, b + i - 4)
        } else {
            ports
        };
        h = (h ^ x).rotate_left(5).wrapping_mul(0x2717_0e9b);
        i += 1;
    }
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h & (RTT_RECENT_SLOTS - 1)
}

/// The flow's carried state from the previous generation, if any.
#[inline(always)]
fn carried(key: &FlowKey, seq_gen: u32) -> Option<&'static SeqSlot> {
    let hash = seq_hash(key);
    let idx = seq_bucket(hash);
    // One call site per array, so the verifier inlines each lookup.
    let bucket = if seq_gen == 0 {
        TCP_SEQ_0.get(idx)
    } else {
        TCP_SEQ_1.get(idx)
    }?;
    let tag = seq_tag(hash);
    let mut i = 0;
    while i < SEQ_WAYS {
        let slot = &bucket.slots[i];
        if slot.tag & !SEQ_TAG_VALID == tag {
            return Some(slot);
        }
        i += 1;
    }
    None
}

/// The interface's counter slot (0: not assigned); also the AF_XDP
/// program's.
#[inline(always)]
pub(crate) fn slot_of(ifindex: u32) -> u32 {
    let slot = if ifindex < SLOT_ARRAY_LEN {
        IFACE_SLOTS.get(ifindex).copied()
    } else {
        // SAFETY: plain u32 values, written only by the daemon.
        unsafe { IFACE_SLOTS_BIG.get(&ifindex) }.copied()
    };
    slot.unwrap_or(0)
}

/// Adds the packet to its flow in `flows` (the active generation). A new
/// entry of a TCP segment with data takes its sequence state from the
/// carry and from `other`, the previous generation: until the drain has
/// written the carry, the flow's entry there is fresher (the drain deletes
/// it only after). Returns the entry when it existed before (null for a
/// new one) and the carried RTT timestamp.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site per generation, inlined"
)]
#[inline(always)]
fn update_flow(
    flows: &HashMap<FlowKey, FlowStats>,
    other: &HashMap<FlowKey, FlowStats>,
    generation: u32,
    key: &FlowKey,
    info: &L4Info,
    packets: u64,
    bytes: u64,
    clock: &Clock,
    totals: &mut IfaceCounters,
) -> (*mut FlowStats, u32) {
    if let Some(v) = flows.get_ptr_mut(key) {
        add_to::<true>(v, info, packets, bytes, clock.coarse());
        return (v, 0);
    }

    let t = now(clock.ts_ns);
    let mut slot = MaybeUninit::<FlowStats>::uninit();
    zero_in_place(slot.as_mut_ptr());
    // SAFETY: zeroed; all-zero is a valid FlowStats.
    let new = unsafe { slot.assume_init_mut() };
    new.first_seen_ns = t;
    new.last_seen_ns = t;
    // The TSval (egress) or TSecr (ingress) RTT last took, carried like
    // the sequence state so a continuing connection does not probe it again.
    let mut prev_ts = 0;
    let probe_ts = clock.rtt && info.has_ts;
    // Only segments with data look (a cold cache line): a pure ACK's first
    // packet in a generation may take its probe again.
    if info.tcp_full && info.tcp_payload > 0 {
        if let Some(c) = carried(key, clock.seq_gen) {
            if c.tag & SEQ_TAG_VALID != 0 {
                new.seq_next = c.seq_next;
                new.counts.seq_valid = 1;
            }
            prev_ts = c.ts_last;
        }
        // SAFETY: a read of a plain value; the programs no longer write
        // the previous generation, and its entry stays valid for this run (RCU).
        if let Some(o) = unsafe { other.get(key) }
            && o.counts.seq_valid & 1 != 0
            && (new.counts.seq_valid == 0 || o.seq_next.wrapping_sub(new.seq_next) as i32 > 0)
        {
            new.seq_next = o.seq_next;
            new.counts.seq_valid = 1;
        }
    }
    if probe_ts {
        // `rtt` takes this packet's probe (or looks for its echo) now.
        new.ts_last = if clock.egress {
            info.ts_val
        } else {
            info.ts_ecr
        };
    }
    // Our own stack copy: plain adds, no locked instructions.
    add_to::<false>(new, info, packets, bytes, t);
    let v = match flows.insert(key, &*new, BPF_NOEXIST as u64) {
        Ok(()) => {
            if let Some(n) = GEN_INSERTS.get_ptr_mut(generation) {
                // SAFETY: this CPU's u64 in a per-CPU array (no sharing).
                unsafe { *n += 1 };
            }
            core::ptr::null_mut()
        }
        Err(e) if e == -EEXIST => {
            // Another CPU inserted this flow between our lookup and insert.
            totals.c[counter::INSERT_RACE] += 1;
            match flows.get_ptr_mut(key) {
                Some(v) => {
                    add_to::<true>(v, info, packets, bytes, t);
                    v
                }
                None => {
                    overflow(totals, counter::LOSS_INSERT_FAILED, packets, bytes);
                    note::note(note::INSERT_FAILED, key.ifindex, key.direction as u32);
                    core::ptr::null_mut()
                }
            }
        }
        Err(e) if e == -E2BIG => {
            overflow(totals, counter::LOSS_MAP_FULL, packets, bytes);
            note::note(note::MAP_FULL, key.ifindex, key.direction as u32);
            core::ptr::null_mut()
        }
        Err(_) => {
            overflow(totals, counter::LOSS_INSERT_FAILED, packets, bytes);
            note::note(note::INSERT_FAILED, key.ifindex, key.direction as u32);
            core::ptr::null_mut()
        }
    };
    (v, prev_ts)
}

#[inline(always)]
fn overflow(totals: &mut IfaceCounters, loss: usize, packets: u64, bytes: u64) {
    totals.c[loss] += packets;
    totals.c[counter::OVERFLOW_PACKETS] += packets;
    totals.c[counter::OVERFLOW_BYTES] += bytes;
}

/// Adds `v` to `*p`: atomically in a shared map value, plainly in a
/// value of our own (a new flow's stack copy before its insert).
#[inline(always)]
fn add32<const SHARED: bool>(p: *mut u32, v: u32) {
    // SAFETY: `p` points to an aligned u32 in a live map value or our
    // stack copy (see add_to).
    unsafe {
        if SHARED {
            atomic_xadd::<_, _, { Relaxed }>(p, v);
        } else {
            *p = (*p).wrapping_add(v);
        }
    }
}

/// `add32` for u64 counters.
#[inline(always)]
fn add64<const SHARED: bool>(p: *mut u64, v: u64) {
    // SAFETY: as in add32.
    unsafe {
        if SHARED {
            atomic_xadd::<_, _, { Relaxed }>(p, v);
        } else {
            *p = (*p).wrapping_add(v);
        }
    }
}

/// Adds to a flow entry. Other CPUs may update a `SHARED` (map) entry at
/// the same time, hence atomic adds (the BPF target's core has no atomic
/// types, so the intrinsics; they compile to BPF_ATOMIC instructions).
/// Last-seen, flags, DSCP and the sequence state are plain stores: a flow
/// lives on one CPU under RSS, and SYN/FIN/RST are also counted atomically.
#[inline(always)]
fn add_to<const SHARED: bool>(v: *mut FlowStats, info: &L4Info, packets: u64, bytes: u64, t: u64) {
    // SAFETY: `v` points into a preallocated hash map value (or our stack
    // copy) that stays valid for this program run (RCU); fields are aligned.
    unsafe {
        add64::<SHARED>(&raw mut (*v).counts.packets, packets);
        add64::<SHARED>(&raw mut (*v).counts.bytes, bytes);
        if t > (*v).last_seen_ns {
            (&raw mut (*v).last_seen_ns).write_volatile(t);
        }
        match info.tos & 0x03 {
            0 => {}
            1 => add32::<SHARED>(&raw mut (*v).counts.ect1, packets as u32),
            2 => add32::<SHARED>(&raw mut (*v).counts.ect0, packets as u32),
            _ => add32::<SHARED>(&raw mut (*v).counts.ce, packets as u32),
        }
        (&raw mut (*v).counts.dscp).write_volatile(info.tos >> 2);
        if !info.tcp_full {
            return;
        }
        let flags = info.tcp_flags;
        if flags & (tcp::SYN | tcp::FIN | tcp::RST) != 0 {
            if flags & tcp::SYN != 0 {
                add32::<SHARED>(&raw mut (*v).counts.syn, 1);
                if flags & tcp::ACK != 0 {
                    add32::<SHARED>(&raw mut (*v).counts.synack, 1);
                }
            }
            if flags & tcp::FIN != 0 {
                add32::<SHARED>(&raw mut (*v).counts.fin, 1);
            }
            if flags & tcp::RST != 0 {
                add32::<SHARED>(&raw mut (*v).counts.rst, 1);
            }
        } else if info.tcp_window == 0 {
            add32::<SHARED>(&raw mut (*v).counts.zero_window, packets as u32);
        }
        if (*v).counts.tcp_flags & flags != flags {
            // BPF v1 has no atomic OR; user space ORs counted SYN/FIN/RST back in.
            (&raw mut (*v).counts.tcp_flags).write_volatile((*v).counts.tcp_flags | flags);
        }
        // Data already seen: its end is not beyond the highest end so far.
        if info.tcp_payload > 0 {
            let end = info.tcp_seq.wrapping_add(info.tcp_payload);
            // Bit 0; the others hold the L7 continuation mark.
            let sv = (*v).counts.seq_valid;
            if sv & 1 != 0 && (*v).seq_next.wrapping_sub(end) as i32 >= 0 {
                add32::<SHARED>(&raw mut (*v).counts.retrans, packets as u32);
            } else {
                (&raw mut (*v).seq_next).write_volatile(end);
                (&raw mut (*v).counts.seq_valid).write_volatile(sv | 1);
            }
        }
    }
}

/// RTT probes: egress SYN / SYN-ACK and TSvals wait in RTT_PENDING; the
/// ingress ACK or TSecr that echoes them closes a sample.
///
/// The map is touched only when a probe can exist: a TSval or TSecr the
/// flow has not had before (`ts_last`; TSval ticks at about 1 kHz, so at
/// high rates most segments skip), a SYN-ACK, or the first ACKs of a flow
/// that began with a SYN. `v` is the flow's entry, when it has one (a
/// first packet's entry is not looked up again: `prev_ts` is the TSval or
/// TSecr its connection last took in the previous generation, and the new
/// entry already holds this packet's).
#[inline(always)]
fn rtt(
    key: &FlowKey,
    info: &L4Info,
    v: Option<*mut FlowStats>,
    prev_ts: u32,
    pkt: &Packet,
    clock: &Clock,
    totals: &mut IfaceCounters,
) {
    let flags = info.tcp_flags;
    // SAFETY: `v` points into a live map value for this program run.
    let (ts_last, young) = v.map_or((prev_ts, true), |v| unsafe {
        (
            (*v).ts_last,
            (*v).counts.syn > 0 && (*v).counts.packets <= 3,
        )
    });
    let ts = if pkt.direction == DIR_EGRESS {
        info.ts_val
    } else {
        info.ts_ecr
    };
    let new_ts = info.has_ts && ts != 0 && ts != ts_last;
    let handshake =
        flags & tcp::SYN != 0 || (pkt.direction != DIR_EGRESS && flags & tcp::ACK != 0 && young);
    if !new_ts && !handshake {
        return;
    }
    if new_ts && let Some(v) = v {
        // SAFETY: as above; a plain store (a flow lives on one CPU).
        unsafe { (&raw mut (*v).ts_last).write_volatile(ts) };
    }
    let recent = recent_probe_slot(key, pkt.direction != DIR_EGRESS);
    if pkt.direction != DIR_EGRESS && !clock.probe_may_exist(recent) {
        // No probe of this connection was taken recently: nothing to close.
        return;
    }
    let mut k = RttKey {
        ifindex: key.ifindex,
        kind: RTT_HANDSHAKE,
        token: 0,
        sport: key.sport,
        dport: key.dport,
        src: key.src,
        dst: key.dst,
    };
    if pkt.direction == DIR_EGRESS {
        let t = now(pkt.ts_ns);
        clock.mark_probe(recent);
        if flags & tcp::SYN != 0 {
            k.token = info.tcp_seq.wrapping_add(1);
            let _ = RTT_PENDING.insert(&k, &t, 0);
        }
        if new_ts {
            k.kind = RTT_TIMESTAMP;
            k.token = info.ts_val;
            // First packet with this TSval only: later ones would shorten the sample.
            let _ = RTT_PENDING.insert(&k, &t, BPF_NOEXIST as u64);
        }
        return;
    }
    // Ingress: look the probe up in the egress orientation.
    k.src = key.dst;
    k.dst = key.src;
    k.sport = key.dport;
    k.dport = key.sport;
    if handshake && flags & tcp::ACK != 0 {
        k.token = info.tcp_ack;
        close_probe(&k, key, RTT_HANDSHAKE, pkt, totals);
    }
    if new_ts {
        k.kind = RTT_TIMESTAMP;
        k.token = info.ts_ecr;
        close_probe(&k, key, RTT_TIMESTAMP, pkt, totals);
    }
}

#[inline(always)]
fn close_probe(k: &RttKey, key: &FlowKey, kind: u32, pkt: &Packet, totals: &mut IfaceCounters) {
    // SAFETY: plain u64 values.
    let Some(sent) = (unsafe { RTT_PENDING.get(k) }).copied() else {
        return;
    };
    let _ = RTT_PENDING.remove(k);
    let t = now(pkt.ts_ns);
    let sample = RttSample {
        key: *key,
        kind,
        rtt_ns: t.saturating_sub(sent),
    };
    if RTT_EVENTS.output::<RttSample>(&sample, 0).is_err() {
        totals.c[counter::RTT_RING_FULL] += 1;
        note::note(note::RTT_RING_FULL, key.ifindex, key.direction as u32);
    }
}

/// The packet's precise time: the capture's in replay; live, the kernel's
/// monotonic clock (a new flow's first packet, RTT probes).
#[inline(always)]
fn now(ts_ns: u64) -> u64 {
    if ts_ns != 0 {
        return ts_ns;
    }
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}
