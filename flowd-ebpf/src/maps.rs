//! The maps shared with user space. Sizes here are defaults: the daemon sets
//! the flow maps' capacity at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use flowd_common::{
    Control, DEFAULT_FLOW_CAPACITY, FRAG_CAPACITY, FlowKey, FlowStats, FragKey, FragPorts,
    IfaceCounters, MAX_SLOTS, RTT_EVENTS_BYTES, RTT_PENDING_CAPACITY, RTT_RECENT_SLOTS, RttKey,
    SEQ_BUCKETS, SLOT_ARRAY_LEN, SeqBucket,
    l7::{L7_EVENTS_BYTES, L7Budget, L7Control},
};

/// Flow generation 0 and 1: the programs write to the one `CONTROL` names,
/// the daemon drains the other (a new TCP entry with data also reads the
/// other's sequence state, which is fresher than `TCP_SEQ_*` until the
/// drain has written the carry). A shared hash with atomic adds: per-CPU
/// values would cost capacity x CPUs x 48 bytes (see BENCHMARKS.md).
#[map]
pub(crate) static FLOWS_0: HashMap<FlowKey, FlowStats> =
    HashMap::with_max_entries(DEFAULT_FLOW_CAPACITY, 0);
#[map]
pub(crate) static FLOWS_1: HashMap<FlowKey, FlowStats> =
    HashMap::with_max_entries(DEFAULT_FLOW_CAPACITY, 0);

/// First fragment -> ports, so later fragments join the same flow.
#[map]
pub(crate) static FRAGS: LruHashMap<FragKey, FragPorts> =
    LruHashMap::with_max_entries(FRAG_CAPACITY, 0);

/// Exact counters per (interface slot, direction); never drained, only read.
#[map]
pub(crate) static TOTALS: PerCpuArray<IfaceCounters> =
    PerCpuArray::with_max_entries(MAX_SLOTS * 2, 0);

/// When each kind of rare event was last logged (`note.rs`).
#[map]
pub(crate) static NOTE_LAST: Array<u64> = Array::with_max_entries(crate::note::KINDS, 0);

#[map]
pub(crate) static CONTROL: Array<Control> = Array::with_max_entries(1, 0);

/// ifindex -> interface slot for ifindex < SLOT_ARRAY_LEN (0 = unassigned).
#[map]
pub(crate) static IFACE_SLOTS: Array<u32> = Array::with_max_entries(SLOT_ARRAY_LEN, 0);

/// ifindex -> interface slot for larger ifindexes.
#[map]
pub(crate) static IFACE_SLOTS_BIG: HashMap<u32, u32> = HashMap::with_max_entries(MAX_SLOTS, 0);

/// RTT probes waiting for their echo (egress SYN / SYN-ACK / TSval -> time).
#[map]
pub(crate) static RTT_PENDING: LruHashMap<RttKey, u64> =
    LruHashMap::with_max_entries(RTT_PENDING_CAPACITY, 0);

/// Per connection (hashed in the egress orientation, one byte each, 64 to
/// an entry): the time (in ~1 s units) of its last egress probe. Ingress
/// looks in `RTT_PENDING` only when a probe was taken recently; collisions
/// only cost a lookup.
#[map]
pub(crate) static RTT_RECENT: Array<[u8; 64]> = Array::with_max_entries(RTT_RECENT_SLOTS / 64, 0);

/// RTT samples on their way to user space.
#[map]
pub(crate) static RTT_EVENTS: RingBuf = RingBuf::with_byte_size(RTT_EVENTS_BYTES, 0);

/// A TCP flow's highest sequence end (and last RTT timestamp) at the last
/// drain (written by the daemon before it deletes the drained generation),
/// read when the flow's entry is created in a new generation. Arrays of 4-way buckets (`seq_hash`): the lookup is
/// inlined by the verifier, one cache line, no helper call and no LRU
/// bookkeeping. The daemon writes the one `Control::seq_gen` does not name.
#[map]
pub(crate) static TCP_SEQ_0: Array<SeqBucket> = Array::with_max_entries(SEQ_BUCKETS, 0);
#[map]
pub(crate) static TCP_SEQ_1: Array<SeqBucket> = Array::with_max_entries(SEQ_BUCKETS, 0);

/// Per CPU, flows inserted into each generation map since the daemon last
/// drained it (index = generation): its fill, so the daemon can drain a
/// generation before it is full. The daemon zeroes an entry after draining.
#[map]
pub(crate) static GEN_INSERTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Selected packets' first payload bytes on their way to user space
/// (`flowd_common::l7::L7Sample` records).
#[map]
pub(crate) static L7_EVENTS: RingBuf = RingBuf::with_byte_size(L7_EVENTS_BYTES, 0);

/// The selection's settings (snap length 0: off), written by the daemon.
#[map]
pub(crate) static L7_CONTROL: Array<L7Control> = Array::with_max_entries(1, 0);

/// Per CPU, the copy budget's current one-second window.
#[map]
pub(crate) static L7_BUDGET: PerCpuArray<L7Budget> = PerCpuArray::with_max_entries(1, 0);
