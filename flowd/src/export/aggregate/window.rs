//! The top-flows window: the recent flows and their bytes per window slot,
//! in a dense vector with a `u32` index.

use std::hash::BuildHasher as _;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::{Counts, WINDOW_SLOTS};

/// A flow as the top-flows series see it: exactly their labels, so two keys
/// that differ only in what is not a label (VLAN, ifindex) are one series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WinKey {
    /// Index into [`AggSnapshot::sides`].
    pub side: u16,
    pub proto: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
}

/// The flows of the top-flows window: keys and counts in one dense vector,
/// and an index that holds a `u32` position per flow (hashes come from the
/// vector's keys): 136 B per flow plus 5 B per index bucket, where a
/// `HashMap` costs 137 B per bucket at a load of 44–88 %.
#[derive(Default)]
pub(super) struct Window {
    flows: Vec<(WinKey, [Counts; WINDOW_SLOTS])>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("flows", &self.flows.len())
            .finish_non_exhaustive()
    }
}

impl Window {
    pub(super) fn len(&self) -> usize {
        self.flows.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &(WinKey, [Counts; WINDOW_SLOTS])> {
        self.flows.iter()
    }

    pub(super) fn get_mut(&mut self, k: &WinKey) -> Option<&mut [Counts; WINDOW_SLOTS]> {
        let flows = &self.flows;
        let i = *self
            .index
            .find(self.hasher.hash_one(k), |&i| flows[i as usize].0 == *k)?;
        Some(&mut self.flows[i as usize].1)
    }

    /// Adds a flow that is not in the window.
    pub(super) fn insert(&mut self, k: WinKey, slots: [Counts; WINDOW_SLOTS]) {
        let i = u32::try_from(self.flows.len()).expect("window bounded by the configuration");
        self.flows.push((k, slots));
        let (flows, hasher) = (&self.flows, &self.hasher);
        self.index.insert_unique(hasher.hash_one(k), i, |&i| {
            hasher.hash_one(flows[i as usize].0)
        });
    }

    /// Keeps the flows for which `keep` (which may change the counts) is true.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&mut [Counts; WINDOW_SLOTS]) -> bool) {
        let before = self.flows.len();
        self.flows.retain_mut(|(_, slots)| keep(slots));
        if self.flows.len() != before {
            // Positions moved: index them again.
            self.index.clear();
            let (flows, hasher) = (&self.flows, &self.hasher);
            for (i, (k, _)) in flows.iter().enumerate() {
                self.index
                    .insert_unique(hasher.hash_one(k), i as u32, |&i| {
                        hasher.hash_one(flows[i as usize].0)
                    });
            }
        }
    }

    pub(super) fn shrink(&mut self) {
        if self.flows.capacity() > 4 * self.flows.len().max(1024) {
            self.flows.shrink_to(2 * self.flows.len());
            let (flows, hasher) = (&self.flows, &self.hasher);
            self.index
                .shrink_to(2 * flows.len(), |&i| hasher.hash_one(flows[i as usize].0));
        }
    }
}
