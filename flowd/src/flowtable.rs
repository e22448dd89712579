//! The cumulative flow table, built from drained per-interval deltas.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    hash::BuildHasher as _,
};

use flowd_common::{
    FlowCounts, FlowKey, FlowStats,
    proto::{ip, tcp},
};
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::{
    clock::TimeBase,
    connstate::{Side, conn_state},
};

/// One unidirectional flow, cumulative since it was first seen.
///
/// Per-packet counts other than `packets` are `u32`: the table ends the
/// record (reason `active`) and starts a new one before a count would
/// overflow, so every count stays exact. This keeps the flow at 136 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flow {
    pub key: FlowKey,
    /// The kernel's counters, summed over the record (`seq_valid` unused).
    pub counts: FlowCounts,
    /// Unix time, nanoseconds.
    pub first_ns: u64,
    pub last_ns: u64,
    /// RTT seen on this flow (samples closed by its packets), ns.
    pub rtt_min_ns: u64,
    /// Smoothed RTT (RFC 6298 weights), ns.
    pub rtt_srtt_ns: u64,
    /// Saturates at `u32::MAX` (more samples than that leave the RTT as is).
    pub rtt_samples: u32,
}

impl Flow {
    fn new(key: FlowKey) -> Self {
        Self {
            key,
            first_ns: u64::MAX,
            ..Self::default()
        }
    }

    /// Adds one RTT sample.
    pub fn rtt(&mut self, ns: u64) {
        if self.rtt_samples == u32::MAX {
            return;
        }
        self.rtt_min_ns = if self.rtt_samples == 0 {
            ns
        } else {
            self.rtt_min_ns.min(ns)
        };
        self.rtt_srtt_ns = if self.rtt_samples == 0 {
            ns
        } else {
            (self.rtt_srtt_ns * 7 + ns) / 8
        };
        self.rtt_samples += 1;
    }

    /// Starts a new record for a flow that goes on (active timeout); the
    /// RTT history carries over.
    fn restart(&mut self, now_ns: u64) {
        *self = Self {
            first_ns: now_ns,
            last_ns: now_ns,
            rtt_min_ns: self.rtt_min_ns,
            rtt_srtt_ns: self.rtt_srtt_ns,
            ..Self::new(self.key)
        };
    }

    /// Whether adding `d` would overflow one of the counts.
    fn would_overflow(&self, d: &FlowStats) -> bool {
        self.counts.checked_add(&d.counts).is_none()
    }

    /// Adds one drained delta. False, and nothing added, when a count
    /// would overflow (the table checks `would_overflow` first).
    #[must_use]
    pub fn add(&mut self, d: &FlowStats, time: TimeBase) -> bool {
        let Some(mut counts) = self.counts.checked_add(&d.counts) else {
            return false;
        };
        // The kernel ORs flags without atomics; the counted ones are exact.
        for (n, flag) in [
            (d.counts.syn, tcp::SYN),
            (d.counts.fin, tcp::FIN),
            (d.counts.rst, tcp::RST),
        ] {
            if n > 0 {
                counts.tcp_flags |= flag;
            }
        }
        self.counts = counts;
        let first = time.to_unix_ns(d.first_seen_ns);
        // Last-seen comes from a coarser clock than first-seen in the kernel.
        let last = time.to_unix_ns(d.last_seen_ns).max(first);
        self.first_ns = self.first_ns.min(first);
        self.last_ns = self.last_ns.max(last);
        true
    }

    /// Its side of a TCP connection, for the connection state.
    fn side(&self) -> Side {
        Side {
            packets: self.counts.packets,
            syn: u64::from(self.counts.syn),
            fin: u64::from(self.counts.fin),
            rst: u64::from(self.counts.rst),
        }
    }

    /// A TCP flow that sent FIN or RST: it may end after the close grace.
    fn closing(&self) -> bool {
        self.key.proto == ip::TCP && (self.counts.fin > 0 || self.counts.rst > 0)
    }
}

/// Why a flow record ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndReason {
    /// No packet for the idle timeout.
    Idle,
    /// Active longer than the active timeout: the record ends, the flow
    /// goes on in a new record.
    Active,
    /// TCP closed (FIN both ways or an RST), after a short grace period.
    EndOfFlow,
    /// flowd shut down or the replay ended.
    Forced,
    /// The table was full: the flow idle the longest made room.
    Evicted,
}

impl EndReason {
    pub const ALL: [Self; 5] = [
        Self::Idle,
        Self::Active,
        Self::EndOfFlow,
        Self::Forced,
        Self::Evicted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Active => "active",
            Self::EndOfFlow => "end-of-flow",
            Self::Forced => "forced",
            Self::Evicted => "evicted",
        }
    }
}

/// A flow record that ended, with its connection state (TCP) and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub flow: Flow,
    pub state: Option<&'static str>,
    pub reason: EndReason,
    /// This record is the connection's originator side: count a
    /// connection once, at this record.
    pub originator: bool,
}

/// Timeouts and bounds of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableConfig {
    /// A flow with no packet for this long ends (`idle`).
    pub idle_timeout_ns: u64,
    /// A flow record older than this ends (`active`); the flow continues.
    pub active_timeout_ns: u64,
    /// A closed TCP connection ends this long after its last packet, so the
    /// final ACK still lands in it (`end-of-flow`).
    pub tcp_close_grace_ns: u64,
    /// At most this many flows; beyond it the longest-idle are `evicted`.
    pub max_flows: usize,
}

impl Default for TableConfig {
    /// idle 60 s, active 300 s, TCP close grace 10 s, 1,000,000 flows.
    fn default() -> Self {
        Self {
            idle_timeout_ns: 60 * SEC,
            active_timeout_ns: 300 * SEC,
            tcp_close_grace_ns: 10 * SEC,
            max_flows: 1_000_000,
        }
    }
}

const SEC: u64 = 1_000_000_000;

/// Lifetime counters of the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    pub started: u64,
    /// Indexed like [`EndReason::ALL`].
    pub ended: [u64; 5],
}

/// Every live flow, keyed by its 5-tuple (plus interface, direction, VLAN).
///
/// Memory per flow is the daemon's largest cost, so the flows live in a
/// slab (`Vec<Flow>`, the key stored once) and the index holds only a
/// `u32` slot per flow (hashes come from the slab's keys). Removed slots
/// go on a free list threaded through `links`.
///
/// Expiry and eviction never walk the table: every flow sits in one bucket
/// of a timer wheel, at or before its earliest possible deadline computed
/// from its own fields (idle, active, and the close grace once it sent FIN
/// or RST). A deadline that moves later leaves the flow where it is (it is
/// refiled when its bucket comes up); one that moves earlier refiles it.
pub struct FlowTable {
    flows: Vec<Flow>,
    /// Per slot: neighbours in its wheel bucket, or the free list.
    links: Vec<Link>,
    /// Per slot: `LIVE`, `JUDGED`, `QUEUED`, `DECIDED` (`Cell`: the scan
    /// detector marks flows through a shared reference).
    marks: Vec<Cell<u8>>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    len: usize,
    /// First free slot (`NIL`: none).
    free: u32,
    /// First slot of each wheel bucket (allocated with the first flow).
    wheel: Vec<u32>,
    /// The tick expiry has reached: no flow is filed before it.
    cursor: Option<u64>,
    /// Slots of flows not yet handed to the scan detector.
    young: RefCell<VecDeque<u32>>,
    config: TableConfig,
    /// Records ended by eviction, waiting for the next `expire`.
    pending: Vec<Ended>,
    stats: TableStats,
    /// Eviction candidates from the last full scan (used when one turn of
    /// the wheel cannot prove which flows are the longest idle: an idle
    /// timeout longer than the wheel), `(last_ns, key, slot)`, largest first
    /// so `pop` gives the oldest. Entries may be stale (flow gone, or seen
    /// again since); every live flow not in it is later than `evict_bound`.
    evict_queue: Vec<(u64, FlowKey, u32)>,
    evict_bound: Option<(u64, FlowKey)>,
}

/// A slot's neighbours in its wheel bucket. `prev` is `HEAD | bucket` for
/// the first flow of a bucket and `NIL` when the slot is in no bucket.
#[derive(Debug, Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

const NIL: u32 = u32::MAX;
const HEAD: u32 = 1 << 31;
/// Wheel granularity: 2^24 ns, about 16.8 ms.
const TICK_SHIFT: u32 = 24;
/// Wheel size: 65,536 ticks, about 1,126 s; later deadlines wait for a turn.
const WHEEL: u64 = 1 << 16;

/// Eviction candidates a full scan keeps, in evictions' worth.
const EVICT_QUEUE_FACTOR: usize = 8;

const LIVE: u8 = 1;
/// Handed to the scan detector already.
const JUDGED: u8 = 2;
/// In `young` (possibly for an earlier flow of the same slot).
const QUEUED: u8 = 4;
/// Ends in the `expire` under way.
const DECIDED: u8 = 8;

/// Bytes the table holds per slot, besides the index (`u32` + 1 control
/// byte per hash bucket).
pub const SLOT_BYTES: usize = size_of::<Flow>() + size_of::<Link>() + size_of::<u8>();
/// Bytes of the wheel's bucket heads, whatever the number of flows.
pub const WHEEL_BYTES: usize = WHEEL as usize * size_of::<u32>();

fn tick(ns: u64) -> u64 {
    ns >> TICK_SHIFT
}

fn bucket(tick: u64) -> usize {
    (tick % WHEEL) as usize
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("len", &self.len)
            .field("slots", &self.flows.len())
            .field("cursor", &self.cursor)
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Default for FlowTable {
    fn default() -> Self {
        Self::new(TableConfig::default())
    }
}

impl FlowTable {
    pub fn new(config: TableConfig) -> Self {
        Self {
            flows: Vec::new(),
            links: Vec::new(),
            marks: Vec::new(),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            len: 0,
            free: NIL,
            wheel: Vec::new(),
            cursor: None,
            young: RefCell::new(VecDeque::new()),
            config,
            pending: Vec::new(),
            stats: TableStats::default(),
            evict_queue: Vec::new(),
            evict_bound: None,
        }
    }

    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// Replaces timeouts and bounds; a smaller bound evicts on the next insert.
    pub fn set_config(&mut self, config: TableConfig) {
        let old = std::mem::replace(&mut self.config, config);
        if (
            old.idle_timeout_ns,
            old.active_timeout_ns,
            old.tcp_close_grace_ns,
        ) != (
            config.idle_timeout_ns,
            config.active_timeout_ns,
            config.tcp_close_grace_ns,
        ) {
            // Deadlines moved: file every flow again.
            let slots: Vec<u32> = self.live_slots().collect();
            for s in slots {
                self.unlink(s);
                self.link(s);
            }
        }
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// Adds one drained delta to its flow, creating the flow if needed.
    pub fn apply(&mut self, key: &FlowKey, delta: &FlowStats, time: TimeBase) {
        if let Some(s) = self.slot(key) {
            let mut refile = false;
            if self.flows[s as usize].would_overflow(delta) {
                self.split(s);
                refile = true;
            }
            let f = &mut self.flows[s as usize];
            let (first, closing) = (f.first_ns, f.closing());
            let added = f.add(delta, time);
            debug_assert!(added, "checked by would_overflow");
            // The deadline moves earlier only through these.
            if refile || f.first_ns < first || f.closing() != closing {
                self.unlink(s);
                self.link(s);
            }
            return;
        }
        if self.config.max_flows > 0 && self.len >= self.config.max_flows {
            self.evict();
        }
        let mut f = Flow::new(*key);
        let added = f.add(delta, time);
        debug_assert!(added, "one delta fits a new record");
        if self.evict_bound.is_some_and(|b| (f.last_ns, *key) <= b) {
            // It would belong among the queued candidates.
            self.drop_evict_queue();
        }
        let s = self.insert(f);
        self.link(s);
        self.stats.started += 1;
    }

    /// Ends the record of slot `s` (reason `active`) before a `u32` count
    /// overflows; the flow goes on in a new record.
    fn split(&mut self, s: u32) {
        // The record restarts with its last-seen reset: the candidates'
        // bound no longer holds for it.
        self.drop_evict_queue();
        let (state, orig) = self.state_of(s);
        let f = &mut self.flows[s as usize];
        let ended = f.clone();
        f.restart(0);
        f.first_ns = u64::MAX;
        self.end(ended, state, EndReason::Active);
        self.mark_last(orig);
    }

    /// Makes room: ends the longest-idle 1/64 of the table (at least one).
    fn evict(&mut self) {
        let n = (self.config.max_flows / 64).max(1);
        for s in self.longest_idle(n) {
            let (state, orig) = self.state_of(s);
            let flow = self.remove(s);
            self.end(flow, state, EndReason::Evicted);
            self.mark_last(orig);
        }
    }

    /// The `n` flows with the oldest `last_ns` (ties: smallest key), oldest
    /// first. Walks the wheel from the cursor: after the buckets up to tick
    /// `t`, every flow not seen has `last_ns + idle >= (t + 1) << TICK_SHIFT`.
    fn longest_idle(&mut self, n: usize) -> Vec<u32> {
        let n = n.min(self.len);
        let idle = self.config.idle_timeout_ns;
        if idle >= WHEEL << TICK_SHIFT {
            // A walk of the whole turn could prove no flow idle enough.
            return self.oldest_from_queue(n);
        }
        let mut seen: Vec<(u64, FlowKey, u32)> = Vec::new();
        let mut lasts: std::collections::BinaryHeap<std::cmp::Reverse<u64>> =
            std::collections::BinaryHeap::new();
        let mut sure = 0;
        let mut complete = false;
        if let Some(cursor) = self.cursor {
            for t in cursor..cursor + WHEEL {
                let mut s = self.wheel[bucket(t)];
                let mut later = Vec::new();
                while s != NIL {
                    let f = &self.flows[s as usize];
                    if tick(self.deadline(f)) > t {
                        later.push(s);
                    } else {
                        seen.push((f.last_ns, f.key, s));
                        lasts.push(std::cmp::Reverse(f.last_ns));
                    }
                    s = self.links[s as usize].next;
                }
                for s in later {
                    self.unlink(s);
                    self.link(s);
                }
                let bound = (t + 1).saturating_mul(1 << TICK_SHIFT).saturating_sub(idle);
                while lasts.peek().is_some_and(|l| l.0 < bound) {
                    lasts.pop();
                    sure += 1;
                }
                if sure >= n {
                    complete = true;
                    break;
                }
            }
        }
        if !complete {
            // Deadlines beyond one turn of the wheel prove nothing.
            return self.oldest_from_queue(n);
        }
        if seen.len() > n && n > 0 {
            seen.select_nth_unstable(n - 1);
        }
        seen.truncate(n);
        seen.sort_unstable();
        seen.into_iter().map(|(_, _, s)| s).collect()
    }

    /// The `n` longest-idle flows, oldest first, from the candidate queue;
    /// a full scan refills it with the `EVICT_QUEUE_FACTOR * n` oldest when
    /// it runs dry, so a full table with a long idle timeout pays one scan
    /// per several evictions. Exact: an entry popped with its current
    /// `last_ns` is the oldest live flow (the queue is sorted by the values
    /// it stored, which only grow, and every other flow is past the bound).
    fn oldest_from_queue(&mut self, n: usize) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::with_capacity(n);
        let mut refilled = false;
        while out.len() < n {
            let Some((last, key, s)) = self.evict_queue.pop() else {
                if refilled {
                    break;
                }
                self.refill_evict_queue(EVICT_QUEUE_FACTOR * n, &out);
                refilled = true;
                continue;
            };
            let f = &self.flows[s as usize];
            if self.mark(s) & LIVE == 0 || f.key != key {
                continue;
            }
            if f.last_ns != last {
                // Seen since the scan: back in order while still a candidate.
                let entry = (f.last_ns, key, s);
                if self.evict_bound.is_some_and(|b| (entry.0, entry.1) <= b) {
                    let at = self
                        .evict_queue
                        .partition_point(|e| (e.0, e.1) > (entry.0, entry.1));
                    self.evict_queue.insert(at, entry);
                }
                continue;
            }
            out.push(s);
        }
        out
    }

    /// Scans every flow for the `k` oldest (`last_ns`, then key) not in
    /// `taken`, and makes them the candidate queue.
    fn refill_evict_queue(&mut self, k: usize, taken: &[u32]) {
        let taken: hashbrown::HashSet<u32> = taken.iter().copied().collect();
        let mut all: Vec<(u64, u32)> = self
            .live_slots()
            .filter(|s| !taken.contains(s))
            .map(|s| (self.flows[s as usize].last_ns, s))
            .collect();
        let flows = &self.flows;
        let cmp = |a: &(u64, u32), b: &(u64, u32)| {
            a.0.cmp(&b.0)
                .then_with(|| flows[a.1 as usize].key.cmp(&flows[b.1 as usize].key))
        };
        let k = k.min(all.len());
        if k == 0 {
            self.drop_evict_queue();
            return;
        }
        if all.len() > k {
            all.select_nth_unstable_by(k - 1, cmp);
            all.truncate(k);
        }
        // Largest first: `pop` takes the oldest.
        all.sort_unstable_by(|a, b| cmp(b, a));
        self.evict_queue = all
            .into_iter()
            .map(|(last, s)| (last, flows[s as usize].key, s))
            .collect();
        self.evict_bound = self.evict_queue.first().map(|e| (e.0, e.1));
    }

    fn drop_evict_queue(&mut self) {
        self.evict_queue = Vec::new();
        self.evict_bound = None;
    }

    fn end(&mut self, flow: Flow, state: Option<&'static str>, reason: EndReason) {
        self.stats.ended[reason as usize] += 1;
        self.pending.push(Ended {
            flow,
            state,
            reason,
            originator: false,
        });
    }

    fn mark_last(&mut self, originator: bool) {
        if let Some(e) = self.pending.last_mut() {
            e.originator = originator;
        }
    }

    /// Slot `s`'s connection state and whether it is the originator, from
    /// one lookup of its reverse direction.
    fn state_of(&self, s: u32) -> (Option<&'static str>, bool) {
        let this = &self.flows[s as usize];
        let rev = self.reverse(&this.key);
        (pair_conn_state(this, rev), pair_is_originator(this, rev))
    }

    /// Whether `key` is its connection's originator side (computed while
    /// both directions are still in the table).
    pub fn is_originator(&self, key: &FlowKey) -> bool {
        let Some(this) = self.get(key) else {
            return false;
        };
        pair_is_originator(this, self.reverse(key))
    }

    /// Ends what timed out by `now_ns` (Unix ns: wall clock live, capture
    /// clock in replay) and returns it, with any evicted records.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Ended> {
        let c = self.config;
        // The flows whose own deadline passed; the rest go back to the wheel.
        let mut due: Vec<u32> = Vec::new();
        let mut keep: Vec<u32> = Vec::new();
        if let Some(cursor) = self.cursor {
            let to = tick(now_ns).max(cursor);
            let from = cursor.max((to + 1).saturating_sub(WHEEL));
            for t in from..=to {
                let mut s = std::mem::replace(&mut self.wheel[bucket(t)], NIL);
                while s != NIL {
                    let next = self.links[s as usize].next;
                    self.links[s as usize] = Link {
                        prev: NIL,
                        next: NIL,
                    };
                    if self.deadline(&self.flows[s as usize]) <= now_ns {
                        due.push(s);
                    } else {
                        keep.push(s);
                    }
                    s = next;
                }
            }
            self.cursor = Some(to);
        }
        let mut done: Vec<(u32, EndReason)> = Vec::new();
        let mut restart: Vec<u32> = Vec::new();
        for &s in &due {
            if self.mark(s) & DECIDED != 0 {
                continue;
            }
            let f = &self.flows[s as usize];
            // A connection ends as one: both directions, on the later one's clock.
            let rev = self.reverse_slot(&f.key);
            let rf = rev.map(|r| &self.flows[r as usize]);
            let last = rf.map_or(f.last_ns, |r| r.last_ns.max(f.last_ns));
            let idle = now_ns.saturating_sub(last);
            let reason = if idle >= c.idle_timeout_ns {
                Some(EndReason::Idle)
            } else if f.key.proto == ip::TCP && idle >= c.tcp_close_grace_ns && self.tcp_closed(f) {
                Some(EndReason::EndOfFlow)
            } else {
                None
            };
            match reason {
                Some(r) => {
                    for k in std::iter::once(s).chain(rev) {
                        self.set_mark(k, DECIDED, true);
                        done.push((k, r));
                    }
                }
                None if now_ns.saturating_sub(f.first_ns) >= c.active_timeout_ns => {
                    restart.push(s);
                }
                None => keep.push(s),
            }
        }
        // States first: both directions of a connection may end together.
        let states: Vec<(Option<&'static str>, bool)> =
            done.iter().map(|&(s, _)| self.state_of(s)).collect();
        for ((s, reason), (state, orig)) in done.into_iter().zip(states) {
            if self.mark(s) & LIVE != 0 {
                let flow = self.remove(s);
                self.end(flow, state, reason);
                self.mark_last(orig);
            }
        }
        for s in restart {
            if self.mark(s) & LIVE == 0 {
                continue;
            }
            let (state, orig) = self.state_of(s);
            let f = &mut self.flows[s as usize];
            let ended = f.clone();
            f.restart(now_ns);
            self.end(ended, state, EndReason::Active);
            self.mark_last(orig);
            self.link(s);
        }
        for s in keep {
            if self.mark(s) & LIVE != 0 && self.links[s as usize].prev == NIL {
                self.link(s);
            }
        }
        std::mem::take(&mut self.pending)
    }

    /// Ends every flow (shutdown, end of a replay).
    pub fn end_all(&mut self) -> Vec<Ended> {
        let mut all = Vec::with_capacity(self.len);
        self.end_all_in_chunks(usize::MAX, |chunk| all.extend(chunk));
        all
    }

    /// Ends every flow, handing the records to `sink` about `chunk` at a
    /// time, so a shutdown with a million flows never holds every record at
    /// once. A connection's two directions end together, each with its
    /// state computed while both are still in the table.
    pub fn end_all_in_chunks(&mut self, chunk: usize, mut sink: impl FnMut(Vec<Ended>)) {
        let mut out = std::mem::take(&mut self.pending);
        for s in 0..self.flows.len() as u32 {
            if self.mark(s) & LIVE == 0 {
                continue;
            }
            let rev = self.reverse_slot(&self.flows[s as usize].key);
            let ends = [
                Some((s, self.state_of(s))),
                rev.map(|r| (r, self.state_of(r))),
            ];
            for (slot, (state, originator)) in ends.into_iter().flatten() {
                self.stats.ended[EndReason::Forced as usize] += 1;
                out.push(Ended {
                    flow: self.remove(slot),
                    state,
                    reason: EndReason::Forced,
                    originator,
                });
            }
            if out.len() >= chunk {
                sink(std::mem::take(&mut out));
            }
        }
        if !out.is_empty() {
            sink(out);
        }
    }

    /// The flows first seen at least `age_ns` before `now_ns` that were not
    /// returned before: each flow once (the scan detector judges each flow
    /// once). Takes them from the front of the queue of new flows (in the
    /// order they entered the table) and stops at the first one still too
    /// young, so a call costs what it returns, not the flows waiting. A flow
    /// behind a younger one waits for it: at most `age_ns` longer.
    pub fn take_settled(&self, now_ns: u64, age_ns: u64) -> Vec<&Flow> {
        let mut out = Vec::new();
        let mut young = self.young.borrow_mut();
        while let Some(&s) = young.front() {
            let m = self.mark(s);
            if m & LIVE == 0 || m & JUDGED != 0 {
                self.set_mark(s, QUEUED, false);
                young.pop_front();
                continue;
            }
            let f = &self.flows[s as usize];
            if now_ns.saturating_sub(f.first_ns) < age_ns {
                break;
            }
            self.set_mark(s, QUEUED, false);
            self.set_mark(s, JUDGED, true);
            out.push(f);
            young.pop_front();
        }
        // After a burst of new flows, give the room back.
        if young.capacity() > 4 * young.len() + 4096 {
            let keep = 2 * young.len();
            young.shrink_to(keep);
        }
        out
    }

    fn tcp_closed(&self, f: &Flow) -> bool {
        match self.reverse(&f.key) {
            Some(r) => crate::connstate::is_closed(&f.side(), &r.side()),
            None => f.counts.rst > 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, key: &FlowKey) -> Option<&Flow> {
        self.slot(key).map(|s| &self.flows[s as usize])
    }

    /// Adds an RTT sample to the flow whose packet closed it; returns the
    /// flow's minimum RTT before this sample (for queueing delay), if any.
    pub fn rtt(&mut self, key: &FlowKey, ns: u64) -> Option<u64> {
        let s = self.slot(key)?;
        let f = &mut self.flows[s as usize];
        let min = (f.rtt_samples > 0).then_some(f.rtt_min_ns);
        f.rtt(ns);
        min
    }

    pub fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.flows
            .iter()
            .zip(&self.marks)
            .filter(|(_, m)| m.get() & LIVE != 0)
            .map(|(f, _)| f)
    }

    /// The other direction of this flow's connection: addresses and ports
    /// swapped, seen on the same interface (in the opposite direction live,
    /// in the same direction in a replay).
    pub fn reverse(&self, key: &FlowKey) -> Option<&Flow> {
        self.reverse_slot(key).map(|s| &self.flows[s as usize])
    }

    fn reverse_slot(&self, key: &FlowKey) -> Option<u32> {
        let mut r = *key;
        r.src = key.dst;
        r.dst = key.src;
        r.sport = key.dport;
        r.dport = key.sport;
        if r == *key {
            return None;
        }
        r.direction = 1 - key.direction;
        self.slot(&r).or_else(|| {
            r.direction = key.direction;
            self.slot(&r)
        })
    }

    /// Zeek's conn_state of a TCP flow's connection (None for other protocols).
    pub fn conn_state(&self, key: &FlowKey) -> Option<&'static str> {
        if key.proto != ip::TCP {
            return None;
        }
        let this = self.get(key)?;
        pair_conn_state(this, self.reverse(key))
    }

    // ---- slab, index and wheel

    fn slot(&self, key: &FlowKey) -> Option<u32> {
        let flows = &self.flows;
        self.index
            .find(self.hasher.hash_one(key), |&s| {
                flows[s as usize].key == *key
            })
            .copied()
    }

    fn mark(&self, s: u32) -> u8 {
        self.marks[s as usize].get()
    }

    fn set_mark(&self, s: u32, bit: u8, on: bool) {
        let m = &self.marks[s as usize];
        m.set(if on { m.get() | bit } else { m.get() & !bit });
    }

    fn live_slots(&self) -> impl Iterator<Item = u32> + use<'_> {
        (0..self.flows.len() as u32).filter(|&s| self.mark(s) & LIVE != 0)
    }

    /// Stores a new flow in a free slot (or a new one) and indexes it.
    fn insert(&mut self, flow: Flow) -> u32 {
        let hash = self.hasher.hash_one(flow.key);
        let s = if self.free == NIL {
            let s = u32::try_from(self.flows.len())
                .ok()
                .filter(|s| *s < HEAD)
                .expect("fewer than 2^31 flows");
            self.flows.push(flow);
            self.links.push(Link {
                prev: NIL,
                next: NIL,
            });
            self.marks.push(Cell::new(LIVE));
            s
        } else {
            let s = self.free;
            self.free = self.links[s as usize].next;
            self.links[s as usize].next = NIL;
            self.flows[s as usize] = flow;
            // A stale `young` entry of this slot stands for the new flow.
            let m = &self.marks[s as usize];
            m.set((m.get() & QUEUED) | LIVE);
            s
        };
        if self.mark(s) & QUEUED == 0 {
            self.set_mark(s, QUEUED, true);
            self.young.get_mut().push_back(s);
        }
        let (flows, hasher) = (&self.flows, &self.hasher);
        self.index
            .insert_unique(hash, s, |&x| hasher.hash_one(flows[x as usize].key));
        self.len += 1;
        s
    }

    /// Takes slot `s` out of the wheel and the index and frees it.
    fn remove(&mut self, s: u32) -> Flow {
        self.unlink(s);
        let hash = self.hasher.hash_one(self.flows[s as usize].key);
        if let Ok(e) = self.index.find_entry(hash, |&x| x == s) {
            e.remove();
        }
        let flow = std::mem::take(&mut self.flows[s as usize]);
        let m = &self.marks[s as usize];
        m.set(m.get() & QUEUED);
        self.links[s as usize] = Link {
            prev: NIL,
            next: self.free,
        };
        self.free = s;
        self.len -= 1;
        flow
    }

    /// The earliest time `f` can need expiry, from its own fields: its
    /// reverse only delays the idle and close deadlines.
    fn deadline(&self, f: &Flow) -> u64 {
        let c = &self.config;
        let mut d = f
            .last_ns
            .saturating_add(c.idle_timeout_ns)
            .min(f.first_ns.saturating_add(c.active_timeout_ns));
        if f.closing() {
            d = d.min(f.last_ns.saturating_add(c.tcp_close_grace_ns));
        }
        d
    }

    /// Files slot `s` in the wheel bucket of its deadline (or the cursor's).
    fn link(&mut self, s: u32) {
        if self.wheel.is_empty() {
            self.wheel = vec![NIL; WHEEL as usize];
        }
        let f = &self.flows[s as usize];
        let t = tick(self.deadline(f));
        let cursor = *self.cursor.get_or_insert(tick(f.last_ns).min(t));
        let b = bucket(t.max(cursor));
        let head = self.wheel[b];
        self.links[s as usize] = Link {
            prev: HEAD | b as u32,
            next: head,
        };
        if head != NIL {
            self.links[head as usize].prev = s;
        }
        self.wheel[b] = s;
    }

    fn unlink(&mut self, s: u32) {
        let Link { prev, next } = self.links[s as usize];
        if prev == NIL {
            return;
        }
        if prev & HEAD != 0 {
            self.wheel[(prev & !HEAD) as usize] = next;
        } else {
            self.links[prev as usize].next = next;
        }
        if next != NIL {
            self.links[next as usize].prev = prev;
        }
        self.links[s as usize] = Link {
            prev: NIL,
            next: NIL,
        };
    }
}

/// Orders the two directions of a connection: the originator sent the first
/// SYN; without SYNs, the side talking to a service port (as Zeek guesses);
/// else the first packet's sender.
fn rank(f: &Flow) -> (bool, bool, u64) {
    (
        f.counts.syn == 0,
        is_service_side(f.key.sport, f.key.dport),
        f.first_ns,
    )
}

/// Whether a flow from `sport` to `dport` comes from the service side:
/// a well-known source port talking to an ephemeral one.
fn is_service_side(sport: u16, dport: u16) -> bool {
    sport < 1024 && dport >= 1024
}

/// Zeek's conn_state of `this` flow's connection, given its reverse
/// direction if the table has it (None for protocols other than TCP).
pub fn pair_conn_state(this: &Flow, rev: Option<&Flow>) -> Option<&'static str> {
    if this.key.proto != ip::TCP {
        return None;
    }
    let Some(rev) = rev else {
        // Only one direction seen: from a service port, it is the responder's.
        return Some(
            if this.counts.syn == 0 && is_service_side(this.key.sport, this.key.dport) {
                conn_state(&Side::default(), &this.side())
            } else {
                conn_state(&this.side(), &Side::default())
            },
        );
    };
    let (orig, resp) = if rank(this) <= rank(rev) {
        (this, rev)
    } else {
        (rev, this)
    };
    Some(conn_state(&orig.side(), &resp.side()))
}

/// Whether `this` is its connection's originator side, given its reverse.
fn pair_is_originator(this: &Flow, rev: Option<&Flow>) -> bool {
    match rev {
        Some(rev) => rank(this) <= rank(rev),
        None => !(this.counts.syn == 0 && is_service_side(this.key.sport, this.key.dport)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(packets: u64, bytes: u64, first: u64, last: u64, flags: u16) -> FlowStats {
        FlowStats {
            counts: FlowCounts {
                packets,
                bytes,
                syn: u32::from(flags & tcp::SYN != 0),
                fin: 0,
                rst: 0,
                tcp_flags: flags,
                ..Default::default()
            },
            first_seen_ns: first,
            last_seen_ns: last,
            ..Default::default()
        }
    }

    #[test]
    fn deltas_accumulate() {
        let mut t = FlowTable::default();
        let k = FlowKey {
            ifindex: 3,
            proto: 6,
            sport: 1000,
            dport: 80,
            ..Default::default()
        };
        t.apply(&k, &delta(2, 120, 10, 20, tcp::SYN), TimeBase::Capture);
        t.apply(&k, &delta(3, 4500, 30, 25, tcp::ACK), TimeBase::Capture);
        let f = t.get(&k).unwrap();
        assert_eq!((f.counts.packets, f.counts.bytes), (5, 4620));
        assert_eq!((f.first_ns, f.last_ns), (10, 30));
        assert_eq!(f.counts.tcp_flags, tcp::SYN | tcp::ACK);
        assert_eq!(f.counts.syn, 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn handshake_and_close_is_sf_from_both_sides() {
        let mut t = FlowTable::default();
        let a = FlowKey {
            ifindex: 2,
            direction: 0,
            proto: 6,
            src: [1; 16],
            dst: [2; 16],
            sport: 40000,
            dport: 80,
            ..Default::default()
        };
        let b = FlowKey {
            direction: 1,
            src: a.dst,
            dst: a.src,
            sport: a.dport,
            dport: a.sport,
            ..a
        };
        let mut syn = delta(3, 180, 100, 300, tcp::SYN | tcp::FIN | tcp::ACK);
        syn.counts.fin = 1;
        let mut synack = delta(2, 120, 150, 310, tcp::SYN | tcp::FIN | tcp::ACK);
        synack.counts.fin = 1;
        t.apply(&a, &syn, TimeBase::Capture);
        assert_eq!(t.conn_state(&a), Some("SH"));
        t.apply(&b, &synack, TimeBase::Capture);
        assert_eq!(t.conn_state(&a), Some("SF"));
        assert_eq!(t.conn_state(&b), Some("SF"));
        assert_eq!(t.reverse(&a).map(|f| f.key), Some(b));
    }

    fn udp(port: u16) -> FlowKey {
        FlowKey {
            proto: 17,
            sport: port,
            dport: 53,
            ..Default::default()
        }
    }

    #[test]
    fn idle_flows_end_and_active_ones_restart() {
        let mut t = FlowTable::new(TableConfig {
            idle_timeout_ns: 10,
            active_timeout_ns: 100,
            tcp_close_grace_ns: 5,
            max_flows: 10,
        });
        t.apply(&udp(1), &delta(1, 100, 0, 0, 0), TimeBase::Capture);
        t.apply(&udp(2), &delta(1, 100, 0, 0, 0), TimeBase::Capture);
        t.apply(&udp(2), &delta(1, 100, 95, 95, 0), TimeBase::Capture);
        let ended = t.expire(100);
        assert_eq!(ended.len(), 2);
        let by_port = |p| ended.iter().find(|e| e.flow.key.sport == p).unwrap();
        assert_eq!(by_port(1).reason, EndReason::Idle);
        assert_eq!(by_port(2).reason, EndReason::Active);
        assert_eq!(by_port(2).flow.counts.packets, 2);
        // The active flow goes on with a fresh record.
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&udp(2)).unwrap().counts.packets, 0);
        assert_eq!(t.stats().started, 2);
        assert_eq!(t.stats().ended, [1, 1, 0, 0, 0]);
    }

    #[test]
    fn full_table_evicts_the_longest_idle() {
        let mut t = FlowTable::new(TableConfig {
            max_flows: 3,
            ..TableConfig::default()
        });
        for (p, last) in [(1, 30), (2, 10), (3, 20)] {
            t.apply(&udp(p), &delta(1, 60, last, last, 0), TimeBase::Capture);
        }
        t.apply(&udp(4), &delta(1, 60, 40, 40, 0), TimeBase::Capture);
        assert_eq!(t.len(), 3);
        assert!(t.get(&udp(2)).is_none(), "port 2 was idle the longest");
        let ended = t.expire(41);
        assert_eq!(ended.len(), 1);
        assert_eq!(
            (ended[0].flow.key.sport, ended[0].reason),
            (2, EndReason::Evicted)
        );
        let all = t.end_all();
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|e| e.reason == EndReason::Forced));
    }

    #[test]
    fn closed_tcp_ends_after_the_grace_period() {
        let mut t = FlowTable::new(TableConfig {
            tcp_close_grace_ns: 5,
            ..TableConfig::default()
        });
        let a = FlowKey {
            proto: 6,
            src: [1; 16],
            dst: [2; 16],
            sport: 1,
            dport: 2,
            ..Default::default()
        };
        let b = FlowKey {
            direction: 1,
            src: a.dst,
            dst: a.src,
            sport: 2,
            dport: 1,
            ..a
        };
        let mut d = delta(3, 180, 10, 20, tcp::SYN | tcp::FIN);
        d.counts.fin = 1;
        t.apply(&a, &d, TimeBase::Capture);
        t.apply(&b, &d, TimeBase::Capture);
        assert!(t.expire(22).is_empty(), "still within the grace period");
        let ended = t.expire(25);
        assert_eq!(ended.len(), 2);
        assert!(
            ended
                .iter()
                .all(|e| e.reason == EndReason::EndOfFlow && e.state == Some("SF"))
        );
    }

    #[test]
    fn counted_flags_are_ored_back() {
        let mut t = FlowTable::default();
        let k = FlowKey::default();
        let mut d = delta(1, 60, 1, 1, 0);
        d.counts.rst = 1;
        t.apply(&k, &d, TimeBase::Capture);
        assert_eq!(t.get(&k).unwrap().counts.tcp_flags, tcp::RST);
    }
}

/// The table as it was before the slab and the wheel (a `HashMap` walked
/// by every `expire`), kept as the reference the real table must match.
#[cfg(test)]
mod reference {
    use std::collections::{HashMap, HashSet};

    use super::*;

    #[derive(Default)]
    pub(super) struct RefTable {
        pub(super) flows: HashMap<FlowKey, Flow>,
        pub(super) config: TableConfig,
        pub(super) pending: Vec<Ended>,
        pub(super) stats: TableStats,
    }

    impl RefTable {
        pub(super) fn apply(&mut self, key: &FlowKey, delta: &FlowStats) {
            if let Some(f) = self.flows.get_mut(key) {
                assert!(f.add(delta, TimeBase::Capture));
                return;
            }
            if self.flows.len() >= self.config.max_flows {
                let n = (self.config.max_flows / 64).max(1);
                let mut by_idle: Vec<(u64, FlowKey)> =
                    self.flows.values().map(|f| (f.last_ns, f.key)).collect();
                by_idle.sort_unstable();
                by_idle.truncate(n);
                for (_, key) in by_idle {
                    let (state, orig) = (self.conn_state(&key), self.is_originator(&key));
                    let flow = self.flows.remove(&key).unwrap();
                    self.end(flow, state, orig, EndReason::Evicted);
                }
            }
            let mut f = Flow::new(*key);
            assert!(f.add(delta, TimeBase::Capture));
            self.flows.insert(*key, f);
            self.stats.started += 1;
        }

        fn end(&mut self, flow: Flow, state: Option<&'static str>, o: bool, r: EndReason) {
            self.stats.ended[r as usize] += 1;
            self.pending.push(Ended {
                flow,
                state,
                reason: r,
                originator: o,
            });
        }

        fn reverse(&self, key: &FlowKey) -> Option<&Flow> {
            let mut r = *key;
            r.src = key.dst;
            r.dst = key.src;
            r.sport = key.dport;
            r.dport = key.sport;
            if r == *key {
                return None;
            }
            r.direction = 1 - key.direction;
            self.flows.get(&r).or_else(|| {
                r.direction = key.direction;
                self.flows.get(&r)
            })
        }

        fn is_originator(&self, key: &FlowKey) -> bool {
            let this = &self.flows[key];
            match self.reverse(key) {
                Some(rev) => rank(this) <= rank(rev),
                None => !(this.counts.syn == 0 && is_service_side(key.sport, key.dport)),
            }
        }

        fn conn_state(&self, key: &FlowKey) -> Option<&'static str> {
            if key.proto != ip::TCP {
                return None;
            }
            let this = &self.flows[key];
            let Some(rev) = self.reverse(key) else {
                return Some(
                    if this.counts.syn == 0 && is_service_side(key.sport, key.dport) {
                        conn_state(&Side::default(), &this.side())
                    } else {
                        conn_state(&this.side(), &Side::default())
                    },
                );
            };
            let (o, r) = if rank(this) <= rank(rev) {
                (this, rev)
            } else {
                (rev, this)
            };
            Some(conn_state(&o.side(), &r.side()))
        }

        /// Every state first, then every removal (the shutdown before
        /// `end_all_in_chunks`).
        pub(super) fn end_all(&mut self) -> Vec<Ended> {
            let keys: Vec<FlowKey> = self.flows.keys().copied().collect();
            let states: Vec<_> = keys
                .iter()
                .map(|k| (self.conn_state(k), self.is_originator(k)))
                .collect();
            keys.into_iter()
                .zip(states)
                .map(|(k, (state, originator))| {
                    self.stats.ended[EndReason::Forced as usize] += 1;
                    Ended {
                        flow: self.flows.remove(&k).unwrap(),
                        state,
                        reason: EndReason::Forced,
                        originator,
                    }
                })
                .collect()
        }

        pub(super) fn expire(&mut self, now_ns: u64) -> Vec<Ended> {
            let c = self.config;
            let mut done: Vec<(FlowKey, EndReason)> = Vec::new();
            let mut restart: Vec<FlowKey> = Vec::new();
            let mut decided: HashSet<FlowKey> = HashSet::new();
            for f in self.flows.values() {
                if decided.contains(&f.key) {
                    continue;
                }
                let rev = self.reverse(&f.key);
                let last = rev.map_or(f.last_ns, |r| r.last_ns.max(f.last_ns));
                let idle = now_ns.saturating_sub(last);
                let closed = match rev {
                    Some(r) => crate::connstate::is_closed(&f.side(), &r.side()),
                    None => f.counts.rst > 0,
                };
                let reason = if idle >= c.idle_timeout_ns {
                    Some(EndReason::Idle)
                } else if f.key.proto == ip::TCP && idle >= c.tcp_close_grace_ns && closed {
                    Some(EndReason::EndOfFlow)
                } else {
                    None
                };
                match reason {
                    Some(r) => {
                        for k in std::iter::once(f.key).chain(rev.map(|r| r.key)) {
                            decided.insert(k);
                            done.push((k, r));
                        }
                    }
                    None if now_ns.saturating_sub(f.first_ns) >= c.active_timeout_ns => {
                        restart.push(f.key);
                    }
                    None => {}
                }
            }
            let states: Vec<(Option<&'static str>, bool)> = done
                .iter()
                .map(|(k, _)| (self.conn_state(k), self.is_originator(k)))
                .collect();
            for ((key, reason), (state, orig)) in done.into_iter().zip(states) {
                let flow = self.flows.remove(&key).unwrap();
                self.end(flow, state, orig, reason);
            }
            for key in restart {
                let f = self.flows.get_mut(&key).unwrap();
                let ended = f.clone();
                f.restart(now_ns);
                // States of restarted records depend on the order; not compared.
                self.end(ended, None, false, EndReason::Active);
            }
            std::mem::take(&mut self.pending)
        }
    }
}

#[cfg(test)]
mod slab_tests {
    use super::{reference::RefTable, *};

    fn udp(port: u16) -> FlowKey {
        FlowKey {
            proto: 17,
            sport: port,
            dport: 53,
            ..Default::default()
        }
    }

    fn at(t: u64) -> FlowStats {
        FlowStats {
            counts: FlowCounts {
                packets: 1,
                bytes: 100,
                ..Default::default()
            },
            first_seen_ns: t,
            last_seen_ns: t,
            ..Default::default()
        }
    }

    /// Every live slot is indexed under its key, and nothing else is.
    fn check(t: &FlowTable) {
        let live: Vec<u32> = t.live_slots().collect();
        assert_eq!(live.len(), t.len());
        assert_eq!(t.index.len(), t.len());
        for s in live {
            assert_eq!(t.slot(&t.flows[s as usize].key), Some(s));
        }
        let mut free = 0;
        let mut s = t.free;
        while s != NIL {
            assert_eq!(t.mark(s) & LIVE, 0);
            free += 1;
            s = t.links[s as usize].next;
        }
        assert_eq!(free + t.len(), t.flows.len());
        // Every live flow is in exactly one bucket.
        let mut linked = 0;
        for &head in &t.wheel {
            let mut s = head;
            while s != NIL {
                assert_ne!(t.mark(s) & LIVE, 0);
                linked += 1;
                s = t.links[s as usize].next;
            }
        }
        assert_eq!(linked, t.len());
    }

    #[test]
    fn removed_slots_are_reused_and_the_index_stays_consistent() {
        let mut t = FlowTable::new(TableConfig {
            idle_timeout_ns: 10 * SEC,
            ..TableConfig::default()
        });
        for p in 0..1000 {
            t.apply(&udp(p), &at(u64::from(p % 2) * 5 * SEC), TimeBase::Capture);
        }
        check(&t);
        // The 500 even ports were last seen at 0: idle at 10 s.
        let ended = t.expire(10 * SEC);
        assert_eq!(ended.len(), 500);
        assert!(ended.iter().all(|e| e.flow.key.sport % 2 == 0));
        assert!(ended.iter().all(|e| e.reason == EndReason::Idle));
        check(&t);
        for p in 1000..1500 {
            t.apply(&udp(p), &at(11 * SEC), TimeBase::Capture);
        }
        assert_eq!(t.flows.len(), 1000, "new flows took the freed slots");
        assert_eq!(t.len(), 1000);
        check(&t);
        for p in (1..1000).step_by(2).chain(1000..1500) {
            assert_eq!(t.get(&udp(p)).map(|f| f.counts.packets), Some(1));
        }
        assert!(t.get(&udp(0)).is_none());
        assert_eq!(t.stats().started, 1500);
        assert_eq!(t.stats().ended, [500, 0, 0, 0, 0]);
    }

    #[test]
    fn flows_end_in_the_expire_of_their_deadline_and_not_before() {
        let mut t = FlowTable::new(TableConfig {
            idle_timeout_ns: 60 * SEC,
            ..TableConfig::default()
        });
        for p in 0..100u16 {
            t.apply(&udp(p), &at(u64::from(p) * SEC), TimeBase::Capture);
        }
        for now in 60..160u64 {
            let ended = t.expire(now * SEC + SEC / 2);
            let ports: Vec<u16> = ended.iter().map(|e| e.flow.key.sport).collect();
            assert_eq!(ports, vec![(now - 60) as u16], "at {now} s");
            check(&t);
        }
        assert!(t.is_empty());
    }

    #[test]
    fn eviction_takes_the_longest_idle_ties_by_key_with_exact_counters() {
        let mut t = FlowTable::new(TableConfig {
            idle_timeout_ns: 500 * SEC,
            active_timeout_ns: 3000 * SEC,
            max_flows: 640,
            ..TableConfig::default()
        });
        // 640 flows, last seen at 1000 s minus (port / 4) seconds: four per second.
        for p in 0..640u16 {
            t.apply(
                &udp(p),
                &at((1000 - u64::from(p / 4)) * SEC),
                TimeBase::Capture,
            );
        }
        t.expire(1000 * SEC);
        t.apply(&udp(9999), &at(1001 * SEC), TimeBase::Capture);
        assert_eq!(t.len(), 631, "1/64 of 640 made room");
        let ended = t.expire(1001 * SEC);
        let ports: Vec<u16> = ended.iter().map(|e| e.flow.key.sport).collect();
        // The oldest first: 636..=639 (last seen at 841 s), 632..=635 (842 s),
        // then two of the four at 843 s, the smallest keys.
        assert_eq!(ports, [636, 637, 638, 639, 632, 633, 634, 635, 628, 629]);
        assert!(ended.iter().all(|e| e.reason == EndReason::Evicted));
        assert_eq!(t.stats().started, 641);
        assert_eq!(t.stats().ended, [0, 0, 0, 0, 10]);
        check(&t);
    }

    #[test]
    fn a_count_that_would_overflow_starts_a_new_record() {
        let mut t = FlowTable::default();
        let k = udp(1);
        let mut d = at(SEC);
        d.counts.ce = u32::MAX - 1;
        t.apply(&k, &d, TimeBase::Capture);
        let mut d = at(2 * SEC);
        d.counts.ce = 3;
        t.apply(&k, &d, TimeBase::Capture);
        let f = t.get(&k).unwrap();
        assert_eq!((f.counts.ce, f.counts.packets, f.first_ns), (3, 1, 2 * SEC));
        let ended = t.expire(2 * SEC);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].reason, EndReason::Active);
        assert_eq!(
            (ended[0].flow.counts.ce, ended[0].flow.counts.packets),
            (u32::MAX - 1, 1)
        );
        check(&t);
    }

    #[test]
    fn the_scan_detector_gets_each_flow_once_when_old_enough() {
        let mut t = FlowTable::new(TableConfig {
            idle_timeout_ns: 1000 * SEC,
            active_timeout_ns: 100 * SEC,
            ..TableConfig::default()
        });
        for p in 0..10 {
            t.apply(&udp(p), &at(u64::from(p) * SEC), TimeBase::Capture);
        }
        assert_eq!(t.take_settled(5 * SEC, 2 * SEC).len(), 4, "ports 0..=3");
        assert_eq!(t.take_settled(5 * SEC, 2 * SEC).len(), 0);
        // A record restarted by the active timeout is the same flow.
        assert_eq!(t.expire(150 * SEC).len(), 10, "all restarted");
        assert_eq!(t.take_settled(400 * SEC, 2 * SEC).len(), 6);
        // A new flow in a reused slot is judged again.
        assert_eq!(t.expire(2000 * SEC).len(), 10);
        t.apply(&udp(0), &at(2000 * SEC), TimeBase::Capture);
        let keys = |v: Vec<&Flow>| v.into_iter().map(|f| f.key).collect::<Vec<_>>();
        assert_eq!(keys(t.take_settled(2010 * SEC, 2 * SEC)), vec![udp(0)]);
        // In the order they entered the table: a flow waits behind a younger
        // one until that one is old enough too (at most `age_ns` longer).
        t.apply(&udp(1), &at(2030 * SEC), TimeBase::Capture);
        t.apply(&udp(2), &at(2020 * SEC), TimeBase::Capture);
        assert_eq!(keys(t.take_settled(2031 * SEC, 2 * SEC)), vec![]);
        assert_eq!(
            keys(t.take_settled(2032 * SEC, 2 * SEC)),
            vec![udp(1), udp(2)]
        );
    }

    /// Random traffic (TCP and UDP, both directions, FIN/RST, a small
    /// table) through both tables: the same records end, for the same
    /// reasons, with the same counts, at the same `expire`.
    #[test]
    fn matches_the_reference_table() {
        matches_the_reference_with(20 * SEC);
    }

    /// An idle timeout longer than one turn of the wheel: eviction takes
    /// the longest-idle flows from the candidate queue of a full scan.
    #[test]
    fn matches_the_reference_table_with_an_idle_timeout_beyond_the_wheel() {
        matches_the_reference_with(3 * (WHEEL << TICK_SHIFT) / 2);
    }

    /// The candidate queue's own cases, against the reference: a candidate
    /// seen again but still among the oldest goes back in order, one seen
    /// again later than the bound leaves, and a new flow older than the
    /// bound (a late drain) makes the next eviction scan again.
    #[test]
    fn eviction_candidates_stay_exact_when_flows_change() {
        let config = TableConfig {
            idle_timeout_ns: 2 * (WHEEL << TICK_SHIFT),
            active_timeout_ns: 2 * (WHEEL << TICK_SHIFT),
            tcp_close_grace_ns: SEC,
            max_flows: 64,
        };
        let mut t = FlowTable::new(config);
        let mut r = RefTable {
            config,
            ..RefTable::default()
        };
        const NONE: [u16; 0] = [];
        let base = 1_000 * SEC;
        let both = |t: &mut FlowTable, r: &mut RefTable, key: FlowKey, last: u64| {
            let mut d = at(base + last);
            d.first_seen_ns = base;
            t.apply(&key, &d, TimeBase::Capture);
            r.apply(&key, &d);
            let now = base + 1_000 * SEC;
            let (mut got, mut want) = (t.expire(now), r.expire(now));
            got.sort_by_key(|e| e.flow.key);
            want.sort_by_key(|e| e.flow.key);
            assert_eq!(got, want);
            got.into_iter()
                .map(|e| e.flow.key.sport)
                .collect::<Vec<_>>()
        };
        for p in 1..=64 {
            assert_eq!(both(&mut t, &mut r, udp(p), u64::from(p) * SEC), NONE);
        }
        // Full: one eviction (64 / 64) takes port 1; the scan queued 1..=8.
        assert_eq!(both(&mut t, &mut r, udp(65), 65 * SEC), vec![1]);
        assert_eq!(t.evict_bound.map(|b| b.1.sport), Some(8));
        // Port 2 seen again at 5.5 s: still a candidate, behind 3, 4 and 5.
        assert_eq!(both(&mut t, &mut r, udp(2), 5 * SEC + SEC / 2), NONE);
        // Port 3 seen again at 100 s: no longer one.
        assert_eq!(both(&mut t, &mut r, udp(3), 100 * SEC), NONE);
        assert_eq!(both(&mut t, &mut r, udp(66), 66 * SEC), vec![4]);
        assert_eq!(both(&mut t, &mut r, udp(67), 67 * SEC), vec![5]);
        assert_eq!(both(&mut t, &mut r, udp(68), 68 * SEC), vec![2]);
        // A new flow older than every candidate: the queue goes, and the
        // eviction after the next new flow finds it by a scan.
        assert_eq!(both(&mut t, &mut r, udp(69), SEC / 2), vec![6]);
        assert!(t.evict_bound.is_none());
        assert_eq!(both(&mut t, &mut r, udp(70), 70 * SEC), vec![69]);
        assert_eq!(both(&mut t, &mut r, udp(71), 71 * SEC), vec![7]);
    }

    fn matches_the_reference_with(idle_timeout_ns: u64) {
        let config = TableConfig {
            idle_timeout_ns,
            active_timeout_ns: 45 * SEC,
            tcp_close_grace_ns: 3 * SEC,
            max_flows: 300,
        };
        let mut t = FlowTable::new(config);
        let mut r = RefTable {
            config,
            ..RefTable::default()
        };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut now = 1_000 * SEC;
        for round in 0..400 {
            for _ in 0..rand(60) {
                // Half the deltas on a few hot hosts (their flows live long).
                let hosts = if rand(2) == 0 { 3 } else { 40 };
                let (a, b) = (rand(hosts) as u8, rand(hosts) as u8);
                let (sp, dp) = (1000 + rand(3) as u16, 80 + rand(2) as u16);
                let proto = if rand(3) == 0 { 17 } else { 6 };
                let fwd = rand(2) == 0;
                let key = FlowKey {
                    direction: u8::from(!fwd),
                    proto,
                    src: [if fwd { a } else { b }; 16],
                    dst: [if fwd { b } else { a }; 16],
                    sport: if fwd { sp } else { dp },
                    dport: if fwd { dp } else { sp },
                    ..Default::default()
                };
                let first = now.saturating_sub(rand(2 * SEC));
                let mut d = at(first);
                d.last_seen_ns = first + rand(SEC);
                d.counts.packets = 1 + rand(3);
                d.counts.syn = u32::from(rand(4) == 0);
                d.counts.fin = u32::from(rand(8) == 0);
                d.counts.rst = u32::from(rand(30) == 0);
                t.apply(&key, &d, TimeBase::Capture);
                r.apply(&key, &d);
            }
            now += rand(3 * SEC);
            let mut got = t.expire(now);
            let mut want = r.expire(now);
            for e in got.iter_mut().chain(want.iter_mut()) {
                if e.reason == EndReason::Active {
                    (e.state, e.originator) = (None, false);
                }
            }
            let order = |e: &Ended| (e.flow.key, e.reason, e.flow.first_ns);
            got.sort_by_key(order);
            want.sort_by_key(order);
            assert_eq!(got, want, "round {round}");
            assert_eq!(t.stats(), r.stats, "round {round}");
            assert_eq!(t.len(), r.flows.len());
            check(&t);
        }
        let ended = r.stats.ended;
        let forced = EndReason::Forced as usize;
        // Idle needs the clock to pass the idle timeout, which the long one
        // never does here.
        let idle = EndReason::Idle as usize;
        let beyond = idle_timeout_ns >= WHEEL << TICK_SHIFT;
        assert!(
            (0..5).all(|i| i == forced || (beyond && i == idle) || ended[i] > 0),
            "every reason but forced: {ended:?}"
        );
        // Shutdown in chunks of 7: the same records, states and originators
        // as computing every state before removing anything.
        let mut got = Vec::new();
        let mut chunks = 0;
        t.end_all_in_chunks(7, |c| {
            assert!(c.len() <= 7 + 1, "a chunk, at most one connection over");
            chunks += 1;
            got.extend(c);
        });
        let mut want = r.end_all();
        assert!(chunks > 1 && !want.is_empty());
        let order = |e: &Ended| (e.flow.key, e.flow.first_ns);
        got.sort_by_key(order);
        want.sort_by_key(order);
        assert_eq!(got, want);
        assert_eq!(t.stats(), r.stats);
        assert_eq!(t.len(), 0);
        check(&t);
    }
}
