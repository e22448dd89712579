//! Making room in a full table: the longest-idle flows end (`evicted`),
//! found by a walk of the timer wheel, or, when the idle timeout is longer
//! than one turn of the wheel, from a queue of candidates a full scan
//! keeps.

use flowd_common::FlowKey;

use super::{
    EndReason, FlowTable,
    slab::{LIVE, NIL, TICK_SHIFT, WHEEL, bucket, tick},
};

/// Eviction candidates a full scan keeps, in evictions' worth.
const EVICT_QUEUE_FACTOR: usize = 8;

impl FlowTable {
    /// Makes room: ends the longest-idle 1/64 of the table (at least one).
    pub(super) fn evict(&mut self) {
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

    pub(super) fn drop_evict_queue(&mut self) {
        self.evict_queue = Vec::new();
        self.evict_bound = None;
    }
}
