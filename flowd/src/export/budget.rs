//! The series budget: how many group and top-flow series one scrape shows.
//!
//! A scrape has three kinds of series:
//! - fixed: per-interface totals and self metrics, which the configuration
//!   (the monitored interfaces) makes and no traffic can multiply; never
//!   folded;
//! - per device and direction, one `other` series per group dimension and
//!   one for the top flows ([`SERIES_PER_SIDE`]), also never folded;
//! - the rest, which traffic makes: groups (cumulative counters) and top
//!   flows (window gauges).
//!
//! Of the rest, the budget left after the first two keeps the groups with
//! the most bytes first (a group is two series, packets and bytes), then
//! the top flows, most bytes first. A folded group's counts go into its
//! dimension's `other`, and the fold is handed back to the aggregator,
//! which makes it permanent: `other` never decreases, so it stays a counter
//! without resets. A top flow left out simply adds to its device's `other`
//! window gauge in this scrape.
//!
//! So a scrape never exceeds the budget unless the fixed series alone do,
//! which only the number of monitored interfaces can cause (about 60 series
//! each with the default groups).

use super::aggregate::{AggSnapshot, Counts, FoldReason, GroupId};

/// Series each device and direction has whatever the budget: `other` of
/// the three group dimensions (packets and bytes) and of the top flows.
pub const SERIES_PER_SIDE: usize = 2 * 3 + 2;

/// What one scrape shows of the aggregates.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Indexes into `AggSnapshot::groups` of the groups shown, in group order.
    pub shown_groups: Vec<usize>,
    /// `other` of each side and dimension, this scrape's folds included.
    pub others: Vec<[Counts; 3]>,
    /// Groups this scrape folds that the aggregator has not yet made permanent.
    pub folded_groups: Vec<GroupId>,
    /// How many of `AggSnapshot::top` are shown (the first ones).
    pub top_shown: usize,
    /// Series folded in this scrape, indexed by [`FoldReason`].
    pub folded: [u64; 2],
}

/// Plans a scrape that already has `fixed` series besides the aggregates.
pub fn plan(agg: &AggSnapshot, fixed: usize) -> Plan {
    let mut avail = agg
        .series_budget
        .saturating_sub(fixed + SERIES_PER_SIDE * agg.sides.len());
    let pending = agg.folds.pending();
    let mut ranked: Vec<usize> = (0..agg.groups.len())
        .filter(|i| !pending.contains(&agg.groups[*i].0))
        .collect();
    ranked.sort_by(|a, b| {
        let ((ia, ca), (ib, cb)) = (&agg.groups[*a], &agg.groups[*b]);
        (cb.bytes, cb.packets)
            .cmp(&(ca.bytes, ca.packets))
            .then(ia.cmp(ib))
    });
    let keep = ranked.len().min(avail / 2);
    avail -= 2 * keep;
    let mut shown = vec![false; agg.groups.len()];
    for i in &ranked[..keep] {
        shown[*i] = true;
    }
    let mut others: Vec<[Counts; 3]> = agg.sides.iter().map(|s| s.others).collect();
    let mut folded_groups = Vec::new();
    for (i, (id, c)) in agg.groups.iter().enumerate() {
        if !shown[i] {
            others[usize::from(id.side)][id.dim as usize].add(*c);
            folded_groups.push(*id);
        }
    }
    let top_shown = agg.top.len().min(avail / 2);
    let mut folded = [0; 2];
    folded[FoldReason::TopK as usize] = 2 * agg.window_flows.saturating_sub(agg.top.len()) as u64;
    folded[FoldReason::Budget as usize] =
        2 * (agg.groups_folded + folded_groups.len() + agg.top.len() - top_shown) as u64;
    Plan {
        shown_groups: (0..agg.groups.len()).filter(|i| shown[*i]).collect(),
        others,
        folded_groups,
        top_shown,
        folded,
    }
}

#[cfg(test)]
mod tests {
    use flowd_common::{DIR_INGRESS, FlowCounts, FlowKey, FlowStats, ipv4_mapped};

    use super::*;
    use crate::export::aggregate::{AggConfig, Aggregator, Dim};

    fn agg_with(budget: usize, top: usize) -> Aggregator {
        Aggregator::new(AggConfig {
            series_budget: budget,
            top_flows: top,
            ..Default::default()
        })
    }

    /// One flow per service port, more bytes for higher indexes.
    fn feed(a: &mut Aggregator, flows: u16, scale: u64) {
        for i in 0..flows {
            let k = FlowKey {
                direction: DIR_INGRESS,
                proto: 6,
                src: ipv4_mapped([8, 8, 8, 8]),
                dst: ipv4_mapped([10, 0, 0, 1]),
                sport: 50000 + i,
                dport: [22, 25, 53, 80, 443, 3306, 5432, 6379][usize::from(i) % 8],
                ..Default::default()
            };
            let d = FlowStats {
                counts: FlowCounts {
                    packets: 1,
                    bytes: scale * (u64::from(i) + 1),
                    ..Default::default()
                },
                ..Default::default()
            };
            a.absorb(&k, &d, "eth0");
        }
    }

    #[test]
    fn everything_fits_in_a_large_budget() {
        let mut a = agg_with(10_000, 100);
        feed(&mut a, 8, 1);
        let s = a.snapshot();
        let p = plan(&s, 100);
        assert_eq!(p.shown_groups.len(), s.groups.len());
        assert!(p.folded_groups.is_empty());
        assert_eq!(p.top_shown, 8);
        assert_eq!(p.folded, [0, 0]);
    }

    #[test]
    fn lowest_volume_groups_fold_first_then_top_flows() {
        let mut a = agg_with(10_000, 100);
        feed(&mut a, 8, 1);
        let mut s = a.snapshot();
        // 1 proto + 8 services + 1 peer = 10 groups; room for 4 of them.
        assert_eq!(s.groups.len(), 10);
        s.series_budget = 100 + SERIES_PER_SIDE + 2 * 4 + 1;
        let p = plan(&s, 100);
        let shown: Vec<(Dim, u64)> = p
            .shown_groups
            .iter()
            .map(|i| (s.groups[*i].0.dim, s.groups[*i].1.bytes))
            .collect();
        // tcp and public carry all 36 bytes; then the services of 8 and 7 bytes.
        assert_eq!(
            shown,
            [
                (Dim::Proto, 36),
                (Dim::Service, 7),
                (Dim::Service, 8),
                (Dim::Peer, 36)
            ]
        );
        assert_eq!(p.folded_groups.len(), 6);
        // The folded services' 21 bytes are in other, on top of what was there.
        assert_eq!(p.others[0][Dim::Service as usize].bytes, 21);
        assert_eq!(p.top_shown, 0);
        assert_eq!(p.folded, [0, 2 * (6 + 8)]);

        // The aggregator makes the folds permanent; the next scrape agrees.
        s.folds.request(&p.folded_groups);
        a.tick(1);
        let mut s2 = a.snapshot();
        s2.series_budget = s.series_budget;
        let p2 = plan(&s2, 100);
        assert_eq!(s2.groups.len(), 4);
        assert_eq!(p2.shown_groups.len(), 4);
        assert!(p2.folded_groups.is_empty());
        assert_eq!(p2.others, p.others);
        assert_eq!(p2.folded, p.folded);
    }

    #[test]
    fn pending_folds_hold_even_when_ranks_change() {
        let mut a = agg_with(10_000, 0);
        feed(&mut a, 8, 1);
        let mut s = a.snapshot();
        s.series_budget = SERIES_PER_SIDE + 2 * 9;
        let p = plan(&s, 0);
        assert_eq!(p.folded_groups.len(), 1);
        s.folds.request(&p.folded_groups);
        // Before the tick: the folded group grows past the others...
        let low = p.folded_groups[0];
        feed(&mut a, 1, 1_000_000);
        let mut s2 = a.snapshot();
        s2.series_budget = s.series_budget;
        let p2 = plan(&s2, 0);
        // ...and stays folded, so other does not go down.
        assert_eq!(p2.folded_groups, [low]);
        let other = |p: &Plan| p.others[0][Dim::Service as usize].bytes;
        assert!(other(&p2) >= other(&p), "{} < {}", other(&p2), other(&p));
    }

    #[test]
    fn fixed_series_beyond_the_budget_leave_only_others() {
        let mut a = agg_with(100, 100);
        feed(&mut a, 8, 1);
        let s = a.snapshot();
        let p = plan(&s, 500);
        assert!(p.shown_groups.is_empty());
        assert_eq!(p.top_shown, 0);
        assert_eq!(p.folded, [0, 2 * (10 + 8)]);
    }
}
