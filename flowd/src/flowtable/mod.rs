//! The cumulative flow table, built from drained per-interval deltas.
//!
//! - [`flow`]: one flow record ([`Flow`]), why records end, the table's
//!   timeouts and bounds;
//! - this file: the table's operations (apply a delta, expire, end all,
//!   hand flows to the scan detector, look flows up);
//! - [`slab`]: where flows live (slab, index, timer wheel);
//! - [`evict`]: which flows make room when the table is full;
//! - [`pair`]: the two directions of a connection (originator, state);
//! - [`l7`]: application-layer names on flows ([`FlowL7`]).

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
};

use flowd_common::{FlowKey, FlowStats, proto::ip};
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::clock::TimeBase;

mod evict;
mod flow;
mod l7;
mod pair;
mod slab;

pub use flow::{EndReason, Ended, Flow, TableConfig, TableStats};
pub use l7::{Annotated, FlowL7};
pub use pair::pair_conn_state;
use pair::pair_is_originator;
use slab::{DECIDED, JUDGED, LIVE, Link, NIL, QUEUED, WHEEL, bucket, tick};
pub use slab::{SLOT_BYTES, WHEEL_BYTES};

/// Which flows a listing wants: every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// Source address (IPv4 as IPv4-mapped, as keys hold it).
    pub src: Option<[u8; 16]>,
    pub dst: Option<[u8; 16]>,
    /// Source or destination port, of protocols with ports.
    pub port: Option<u16>,
    pub proto: Option<u8>,
    /// The flow's interface is one of these (`Some(empty)`: none matches).
    pub ifindex: Option<Vec<u32>>,
}

impl FlowFilter {
    pub fn matches(&self, k: &FlowKey) -> bool {
        self.src.is_none_or(|a| a == k.src)
            && self.dst.is_none_or(|a| a == k.dst)
            && self.proto.is_none_or(|p| p == k.proto)
            && self
                .port
                .is_none_or(|p| ip::has_ports(k.proto) && (k.sport == p || k.dport == p))
            && self.ifindex.as_ref().is_none_or(|i| i.contains(&k.ifindex))
    }
}

/// One page of a walk over the table ([`FlowTable::page`]).
#[derive(Debug)]
pub struct Page<'a> {
    pub flows: Vec<&'a Flow>,
    /// The slot the next page starts at; `None`: this was the last page.
    pub next: Option<u32>,
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

    /// One page of a walk over the table: up to `limit` (at least 1) flows
    /// matching `filter`, from slot `cursor` on, looking at no more than
    /// `max_slots` slots (so a selective filter cannot make one call walk
    /// the whole table); and the slot to continue from, `None` once the
    /// walk has reached the end of the slab. A page may come back short,
    /// even empty, with a next slot: the slot budget ran out first.
    ///
    /// A flow keeps its slot while it lives and the cursor only moves
    /// forward, so a walk that follows `next` from 0 sees every flow that
    /// lives throughout it exactly once, whatever is inserted or removed
    /// between the calls, and no flow twice. A flow that starts or ends
    /// during the walk is seen at most once.
    pub fn page(
        &self,
        cursor: u32,
        limit: usize,
        max_slots: usize,
        filter: &FlowFilter,
    ) -> Page<'_> {
        let end = self.flows.len();
        let start = (cursor as usize).min(end);
        let stop = start.saturating_add(max_slots.max(1)).min(end);
        let limit = limit.max(1);
        let mut flows = Vec::new();
        let mut s = start;
        while s < stop && flows.len() < limit {
            let f = &self.flows[s];
            if self.marks[s].get() & LIVE != 0 && filter.matches(&f.key) {
                flows.push(f);
            }
            s += 1;
        }
        Page {
            flows,
            // Slots are below 2^31 (see `insert`).
            next: (s < end).then_some(s as u32),
        }
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
}

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
