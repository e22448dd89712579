//! The heaviest flows of the last few seconds, for the live view
//! (`/api/v1/top`, `flowd top`).
//!
//! Every drain hands over exactly what each flow did since the previous
//! drain, so the recent top needs no per-flow history: keep the heaviest
//! [`PER_DRAIN`] flows of each drain for [`HISTORY`], and merge the drains
//! of the asked window. A flow's numbers are exact as long as it was among
//! the heaviest [`PER_DRAIN`] of every drain in the window (the response
//! says how many flows each drain had, so a reader can tell).

use std::{collections::HashMap, collections::VecDeque};

use flowd_common::{FlowKey, FlowStats};

/// Flows kept per drain.
pub const PER_DRAIN: usize = 1000;
/// How far back the live view can look, ns.
pub const HISTORY_NS: u64 = 10_000_000_000;
pub const HISTORY: std::time::Duration = std::time::Duration::from_nanos(HISTORY_NS);

#[derive(Debug)]
struct Drain {
    /// When it ran (CLOCK_REALTIME ns) and how much time it covers.
    at_ns: u64,
    span_ns: u64,
    /// Flows in the drain, and the heaviest of them by bytes.
    flows_total: usize,
    top: Vec<(FlowKey, u64, u64)>,
}

/// What the drains of the last seconds carried.
#[derive(Debug, Default)]
pub struct RecentTop {
    drains: VecDeque<Drain>,
    last_ns: Option<u64>,
    /// The drain in progress (absorbed in chunks): its heaviest flows so
    /// far (at most 2 * PER_DRAIN between trims) and its size.
    pending: Vec<(FlowKey, u64, u64)>,
    pending_total: usize,
}

/// Keeps the `n` entries with the most bytes (in no order).
fn keep_heaviest(v: &mut Vec<(FlowKey, u64, u64)>, n: usize) {
    if v.len() > n {
        v.select_nth_unstable_by(n - 1, |a, b| b.2.cmp(&a.2));
        v.truncate(n);
    }
}

/// One window's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The time the merged drains cover, ns (0: no drain yet).
    pub span_ns: u64,
    pub drains: usize,
    /// Most flows one drain in the window had (beyond PER_DRAIN, light flows are left out).
    pub max_flows_per_drain: usize,
    /// (key, packets, bytes), most bytes first.
    pub flows: Vec<(FlowKey, u64, u64)>,
}

impl RecentTop {
    /// Records one drain (its time, and what it carried).
    pub fn push(&mut self, now_ns: u64, batch: &[(FlowKey, FlowStats)]) {
        self.add(batch);
        self.close(now_ns);
    }

    /// Part of the drain in progress.
    pub fn add(&mut self, batch: &[(FlowKey, FlowStats)]) {
        self.pending_total += batch.len();
        self.pending.extend(
            batch
                .iter()
                .filter(|(_, v)| v.counts.packets > 0)
                .map(|(k, v)| (*k, v.counts.packets, v.counts.bytes)),
        );
        if self.pending.len() > 2 * PER_DRAIN {
            keep_heaviest(&mut self.pending, PER_DRAIN);
        }
    }

    /// Ends the drain in progress at `now_ns`.
    pub fn close(&mut self, now_ns: u64) {
        let span_ns = self.last_ns.map_or(0, |l| now_ns.saturating_sub(l));
        self.last_ns = Some(now_ns);
        let mut top = std::mem::take(&mut self.pending);
        keep_heaviest(&mut top, PER_DRAIN);
        top.shrink_to_fit();
        self.drains.push_back(Drain {
            at_ns: now_ns,
            span_ns,
            flows_total: std::mem::take(&mut self.pending_total),
            top,
        });
        while self
            .drains
            .front()
            .is_some_and(|d| now_ns.saturating_sub(d.at_ns) > HISTORY_NS)
        {
            self.drains.pop_front();
        }
    }

    /// The `limit` heaviest flows of the drains in the last `window_ns`.
    pub fn window(&self, now_ns: u64, window_ns: u64, limit: usize) -> Window {
        let mut merged: HashMap<FlowKey, (u64, u64)> = HashMap::new();
        let mut w = Window {
            span_ns: 0,
            drains: 0,
            max_flows_per_drain: 0,
            flows: Vec::new(),
        };
        for d in self
            .drains
            .iter()
            .filter(|d| now_ns.saturating_sub(d.at_ns) <= window_ns)
        {
            w.span_ns += d.span_ns;
            w.drains += 1;
            w.max_flows_per_drain = w.max_flows_per_drain.max(d.flows_total);
            for (k, p, b) in &d.top {
                let e = merged.entry(*k).or_default();
                e.0 += p;
                e.1 += b;
            }
        }
        w.flows = merged.into_iter().map(|(k, (p, b))| (k, p, b)).collect();
        w.flows
            .sort_unstable_by(|a, b| b.2.cmp(&a.2).then(b.1.cmp(&a.1)));
        w.flows.truncate(limit);
        w
    }
}

#[cfg(test)]
mod tests {
    use flowd_common::FlowCounts;

    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            sport: port,
            proto: 17,
            ..FlowKey::default()
        }
    }

    fn stats(packets: u64, bytes: u64) -> FlowStats {
        FlowStats {
            counts: FlowCounts {
                packets,
                bytes,
                ..Default::default()
            },
            ..FlowStats::default()
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn merges_drains_of_the_window_most_bytes_first() {
        let mut r = RecentTop::default();
        r.push(100 * S, &[(key(1), stats(10, 1000))]);
        r.push(
            101 * S,
            &[(key(1), stats(5, 500)), (key(2), stats(1, 1500))],
        );
        r.push(102 * S, &[(key(2), stats(1, 1500)), (key(3), stats(0, 0))]);
        let w = r.window(102 * S, 2 * S, 10);
        assert_eq!((w.drains, w.span_ns, w.max_flows_per_drain), (3, 2 * S, 2));
        assert_eq!(w.flows, vec![(key(2), 2, 3000), (key(1), 15, 1500)]);
        // The last second only: the drain at 102 s (and the one at 101 s, 1 s back).
        let w = r.window(102 * S, S, 1);
        assert_eq!(w.flows, vec![(key(2), 2, 3000)]);
        assert_eq!(w.span_ns, 2 * S);
        let w = r.window(102 * S, S / 2, 10);
        assert_eq!((w.drains, w.flows.len()), (1, 1));
    }

    #[test]
    fn a_drain_absorbed_in_chunks_counts_as_one() {
        let mut r = RecentTop::default();
        let batch: Vec<_> = (0..5000u16)
            .map(|i| (key(i), stats(1, u64::from(i) + 1)))
            .collect();
        for c in batch.chunks(700) {
            r.add(c);
        }
        r.close(S);
        let w = r.window(S, S, 3);
        assert_eq!((w.drains, w.max_flows_per_drain), (1, 5000));
        assert_eq!(
            w.flows.iter().map(|f| f.2).collect::<Vec<_>>(),
            vec![5000, 4999, 4998]
        );
        assert_eq!(r.window(S, S, usize::MAX).flows.len(), PER_DRAIN);
    }

    #[test]
    fn keeps_the_heaviest_per_drain_and_forgets_old_drains() {
        let mut r = RecentTop::default();
        let batch: Vec<_> = (0..(PER_DRAIN as u16 + 500))
            .map(|i| (key(i), stats(1, u64::from(i) + 1)))
            .collect();
        r.push(S, &batch);
        let w = r.window(S, S, usize::MAX);
        assert_eq!(w.flows.len(), PER_DRAIN);
        assert_eq!(w.max_flows_per_drain, PER_DRAIN + 500);
        assert_eq!(w.flows[0].2, PER_DRAIN as u64 + 500);
        assert_eq!(w.flows.last().unwrap().2, 501);
        r.push(S + HISTORY_NS + 1, &[(key(9), stats(1, 1))]);
        assert_eq!(r.window(S + HISTORY_NS + 1, HISTORY_NS, 10).drains, 1);
    }
}
