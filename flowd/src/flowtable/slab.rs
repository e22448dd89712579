//! Where the flows live: a slab of flows (the key stored once), an index
//! of `u32` slots, per-slot marks, and a timer wheel that files every flow
//! at or before its earliest deadline (see [`FlowTable`]).

use std::{cell::Cell, hash::BuildHasher as _};

use flowd_common::FlowKey;

use super::{Flow, FlowTable};

/// A slot's neighbours in its wheel bucket. `prev` is `HEAD | bucket` for
/// the first flow of a bucket and `NIL` when the slot is in no bucket.
#[derive(Debug, Clone, Copy)]
pub(super) struct Link {
    pub(super) prev: u32,
    pub(super) next: u32,
}

pub(super) const NIL: u32 = u32::MAX;
pub(super) const HEAD: u32 = 1 << 31;
/// Wheel granularity: 2^24 ns, about 16.8 ms.
pub(super) const TICK_SHIFT: u32 = 24;
/// Wheel size: 65,536 ticks, about 1,126 s; later deadlines wait for a turn.
pub(super) const WHEEL: u64 = 1 << 16;

pub(super) const LIVE: u8 = 1;
/// Handed to the scan detector already.
pub(super) const JUDGED: u8 = 2;
/// In `young` (possibly for an earlier flow of the same slot).
pub(super) const QUEUED: u8 = 4;
/// Ends in the `expire` under way.
pub(super) const DECIDED: u8 = 8;

/// Bytes the table holds per slot, besides the index (`u32` + 1 control
/// byte per hash bucket).
pub const SLOT_BYTES: usize = size_of::<Flow>() + size_of::<Link>() + size_of::<u8>();
/// Bytes of the wheel's bucket heads, whatever the number of flows.
pub const WHEEL_BYTES: usize = WHEEL as usize * size_of::<u32>();

pub(super) fn tick(ns: u64) -> u64 {
    ns >> TICK_SHIFT
}

pub(super) fn bucket(tick: u64) -> usize {
    (tick % WHEEL) as usize
}

impl FlowTable {
    pub(super) fn slot(&self, key: &FlowKey) -> Option<u32> {
        let flows = &self.flows;
        self.index
            .find(self.hasher.hash_one(key), |&s| {
                flows[s as usize].key == *key
            })
            .copied()
    }

    pub(super) fn mark(&self, s: u32) -> u8 {
        self.marks[s as usize].get()
    }

    pub(super) fn set_mark(&self, s: u32, bit: u8, on: bool) {
        let m = &self.marks[s as usize];
        m.set(if on { m.get() | bit } else { m.get() & !bit });
    }

    pub(super) fn live_slots(&self) -> impl Iterator<Item = u32> + use<'_> {
        (0..self.flows.len() as u32).filter(|&s| self.mark(s) & LIVE != 0)
    }

    /// Stores a new flow in a free slot (or a new one) and indexes it.
    pub(super) fn insert(&mut self, flow: Flow) -> u32 {
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
    pub(super) fn remove(&mut self, s: u32) -> Flow {
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
    pub(super) fn deadline(&self, f: &Flow) -> u64 {
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
    pub(super) fn link(&mut self, s: u32) {
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

    pub(super) fn unlink(&mut self, s: u32) {
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
