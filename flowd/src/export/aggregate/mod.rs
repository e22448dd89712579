//! Bounded aggregates for the exporter: traffic by protocol, service and
//! peer group, and the top flows of the recent window. Fed with every
//! drained delta; read at scrape time.
//!
//! Memory is bounded whatever the traffic: group counters are per device,
//! direction and configured group; the window holds at most
//! `window_max_flows` flows, and deltas of flows beyond that count only in
//! the device's `other` series.
//!
//! Group counters are cumulative. When the series budget folds a group
//! (see [`super::budget`]), the fold is permanent: its count moves into the
//! dimension's `other` group and later traffic goes there too, so `other`
//! never decreases and no counter ever resets.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use flowd_common::{DIR_INGRESS, FlowKey, FlowStats};

use super::groups::{OTHER, PeerGroups, ServiceMap, proto_group, proto_names};

mod config;
#[cfg(test)]
mod tests;
mod window;

pub use config::{AggConfig, AggConfigError, DEFAULT_SERIES_BUDGET};
pub use window::WinKey;
use window::Window;

/// The window is a ring of this many slots: a flow's bytes leave it one slot
/// (window / 6) at a time, so the window covers between 5/6 of its length
/// and all of it.
pub const WINDOW_SLOTS: usize = 6;

/// Devices the aggregates keep apart; further names share the device
/// `other` (the daemon monitors at most `MAX_SLOTS` interfaces).
pub const MAX_DEVICES: usize = flowd_common::MAX_SLOTS as usize;

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Counts {
    pub packets: u64,
    pub bytes: u64,
}

impl Counts {
    pub fn add(&mut self, o: Counts) {
        self.packets = self.packets.wrapping_add(o.packets);
        self.bytes = self.bytes.wrapping_add(o.bytes);
    }

    pub fn sub(&mut self, o: Counts) {
        self.packets = self.packets.saturating_sub(o.packets);
        self.bytes = self.bytes.saturating_sub(o.bytes);
    }

    pub fn is_zero(&self) -> bool {
        self.packets == 0 && self.bytes == 0
    }

    fn sum(slots: &[Counts]) -> Counts {
        let mut c = Counts::default();
        for s in slots {
            c.add(*s);
        }
        c
    }
}

/// A group dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    Proto = 0,
    Service = 1,
    Peer = 2,
}

impl Dim {
    pub const ALL: [Dim; 3] = [Dim::Proto, Dim::Service, Dim::Peer];

    /// The label that carries the group.
    pub fn label(self) -> &'static str {
        match self {
            Dim::Proto => "proto",
            Dim::Service => "service",
            Dim::Peer => "peer",
        }
    }
}

/// One group of one device and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId {
    /// Index into [`AggSnapshot::sides`].
    pub side: u16,
    pub dim: Dim,
    /// Index into the dimension's names (never the last, `other`).
    pub group: u16,
}

/// Why series were folded into `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoldReason {
    /// A flow in the window but not among the K with the most bytes.
    TopK = 0,
    /// A group or a top flow cut to keep the scrape within the budget.
    Budget = 1,
}

impl FoldReason {
    pub const ALL: [FoldReason; 2] = [FoldReason::TopK, FoldReason::Budget];

    pub fn as_str(self) -> &'static str {
        match self {
            FoldReason::TopK => "top_k",
            FoldReason::Budget => "budget",
        }
    }
}

/// What scrapes hand back to the aggregator: groups the budget folded (made
/// permanent at the next tick) and the cumulative count of folded series.
#[derive(Debug, Default)]
pub struct FoldState {
    pending: Mutex<Vec<GroupId>>,
    folded_total: [AtomicU64; 2],
}

impl FoldState {
    /// Groups a scrape folded that the aggregator has not made permanent yet;
    /// the next scrape folds them too, so `other` never goes down.
    pub fn pending(&self) -> Vec<GroupId> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn request(&self, ids: &[GroupId]) {
        let mut p = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in ids {
            if !p.contains(id) {
                p.push(*id);
            }
        }
    }

    fn take(&self) -> Vec<GroupId> {
        std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Adds one scrape's folded series; returns the totals by reason.
    pub fn add_folded(&self, by_reason: [u64; 2]) -> [u64; 2] {
        let mut out = [0; 2];
        for (i, n) in by_reason.into_iter().enumerate() {
            out[i] = self.folded_total[i].fetch_add(n, Ordering::Relaxed) + n;
        }
        out
    }
}

/// One device and direction in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideSnapshot {
    pub device: String,
    pub direction: u8,
    /// Everything in the window, tracked flows or not.
    pub window: Counts,
    /// Cumulative `other` group of each dimension (folded groups included).
    pub others: [Counts; 3],
}

/// What the exporter shows of the aggregates.
#[derive(Debug, Clone)]
pub struct AggSnapshot {
    pub series_budget: usize,
    pub top_k: usize,
    pub window_seconds: f64,
    /// Flows in the window now.
    pub window_flows: usize,
    pub window_max_flows: usize,
    /// Deltas of flows the full window could not track (in `other` only).
    pub window_overflow_deltas: u64,
    pub sides: Vec<SideSnapshot>,
    /// Group names by dimension (index `Dim as usize`), `other` last.
    pub names: [Vec<String>; 3],
    /// Every group with traffic, except `other` and folded groups.
    pub groups: Vec<(GroupId, Counts)>,
    /// Groups folded for good.
    pub groups_folded: usize,
    /// The K flows with the most bytes in the window, most first.
    pub top: Vec<(WinKey, Counts)>,
    pub folds: Arc<FoldState>,
}

impl Default for AggSnapshot {
    /// An aggregator's snapshot before any traffic, with the default settings.
    fn default() -> Self {
        let c = AggConfig::default();
        Self {
            series_budget: c.series_budget,
            top_k: c.top_flows,
            window_seconds: c.window.as_secs_f64(),
            window_flows: 0,
            window_max_flows: c.window_max_flows,
            window_overflow_deltas: 0,
            sides: Vec::new(),
            names: Default::default(),
            groups: Vec::new(),
            groups_folded: 0,
            top: Vec::new(),
            folds: Arc::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct GroupCounter {
    c: Counts,
    folded: bool,
}

#[derive(Debug)]
struct Side {
    device: String,
    direction: u8,
    /// Per dimension, indexed like the dimension's names; `other` last.
    groups: [Vec<GroupCounter>; 3],
    window: [Counts; WINDOW_SLOTS],
}

const NO_SIDE: u16 = u16::MAX;

/// The aggregates, updated on every drain.
#[derive(Debug)]
pub struct Aggregator {
    top_k: usize,
    window: Duration,
    window_max_flows: usize,
    series_budget: usize,
    services: ServiceMap,
    peers: PeerGroups,
    names: [Vec<String>; 3],
    sides: Vec<Side>,
    side_ix: HashMap<String, [u16; 2]>,
    flows: Window,
    window_overflow_deltas: u64,
    slot_ns: u64,
    /// Ring position of the current slot.
    cur: usize,
    /// `now / slot_ns` at the last tick.
    epoch: Option<u64>,
    groups_folded: usize,
    folds: Arc<FoldState>,
}

impl Default for Aggregator {
    fn default() -> Self {
        Self::new(AggConfig::default())
    }
}

impl Aggregator {
    pub fn new(config: AggConfig) -> Self {
        let services = ServiceMap::new(&config.services);
        let peers = PeerGroups::new(&config.peer_groups, &config.peer_unmatched);
        let names = [
            proto_names(),
            services.names().to_vec(),
            peers.names().to_vec(),
        ];
        Self {
            top_k: config.top_flows,
            window: config.window,
            window_max_flows: config.window_max_flows.max(config.top_flows),
            series_budget: config.series_budget,
            services,
            peers,
            names,
            sides: Vec::new(),
            side_ix: HashMap::new(),
            flows: Window::default(),
            window_overflow_deltas: 0,
            slot_ns: (config.window.as_nanos() as u64 / WINDOW_SLOTS as u64).max(1),
            cur: 0,
            epoch: None,
            groups_folded: 0,
            folds: Arc::default(),
        }
    }

    /// Adds one drained delta of a flow seen on `device`.
    pub fn absorb(&mut self, key: &FlowKey, delta: &FlowStats, device: &str) {
        let c = Counts {
            packets: delta.counts.packets,
            bytes: delta.counts.bytes,
        };
        if c.is_zero() {
            return;
        }
        let dir = usize::from(key.direction != DIR_INGRESS);
        let side = self.side(device, dir);
        let remote = if dir == 0 { &key.src } else { &key.dst };
        let g = [
            proto_group(key.proto),
            self.services.group(key.proto, key.sport, key.dport),
            self.peers.group(remote),
        ];
        let s = &mut self.sides[usize::from(side)];
        for (groups, gi) in s.groups.iter_mut().zip(g) {
            let gi = if groups[gi].folded {
                groups.len() - 1
            } else {
                gi
            };
            groups[gi].c.add(c);
        }
        s.window[self.cur].add(c);
        let wk = WinKey {
            side,
            proto: key.proto,
            src: key.src,
            dst: key.dst,
            sport: key.sport,
            dport: key.dport,
        };
        if let Some(slots) = self.flows.get_mut(&wk) {
            slots[self.cur].add(c);
        } else if self.flows.len() < self.window_max_flows {
            let mut slots = [Counts::default(); WINDOW_SLOTS];
            slots[self.cur] = c;
            self.flows.insert(wk, slots);
        } else {
            self.window_overflow_deltas += 1;
        }
    }

    /// The side of a device and direction, created on first sight.
    fn side(&mut self, device: &str, dir: usize) -> u16 {
        if let Some(ix) = self.side_ix.get(device)
            && ix[dir] != NO_SIDE
        {
            return ix[dir];
        }
        let device = if self.side_ix.contains_key(device) || self.side_ix.len() < MAX_DEVICES {
            device
        } else {
            OTHER
        };
        let ix = self
            .side_ix
            .entry(device.to_owned())
            .or_insert([NO_SIDE; 2]);
        if ix[dir] == NO_SIDE {
            ix[dir] = self.sides.len() as u16;
            self.sides.push(Side {
                device: device.to_owned(),
                direction: dir as u8,
                groups: self
                    .names
                    .each_ref()
                    .map(|n| vec![GroupCounter::default(); n.len()]),
                window: [Counts::default(); WINDOW_SLOTS],
            });
        }
        ix[dir]
    }

    /// Called after every drain with the current Unix time in ns: makes the
    /// folds of the last scrapes permanent and moves the window on.
    pub fn tick(&mut self, now_ns: u64) {
        for id in self.folds.take() {
            self.fold_group(id);
        }
        let epoch = now_ns / self.slot_ns;
        let prev = *self.epoch.get_or_insert(epoch);
        if epoch <= prev {
            // A clock step back: measure from the new time on.
            self.epoch = Some(epoch);
            return;
        }
        self.epoch = Some(epoch);
        let mut retire = [false; WINDOW_SLOTS];
        for _ in 0..(epoch - prev).min(WINDOW_SLOTS as u64) {
            self.cur = (self.cur + 1) % WINDOW_SLOTS;
            retire[self.cur] = true;
        }
        let clear = |slots: &mut [Counts; WINDOW_SLOTS]| {
            for (s, r) in slots.iter_mut().zip(retire) {
                if r {
                    *s = Counts::default();
                }
            }
        };
        for s in &mut self.sides {
            clear(&mut s.window);
        }
        self.flows.retain(|slots| {
            clear(slots);
            slots.iter().any(|c| !c.is_zero())
        });
        // Give memory back after a burst of flows has left the window.
        self.flows.shrink();
    }

    fn fold_group(&mut self, id: GroupId) {
        let Some(s) = self.sides.get_mut(usize::from(id.side)) else {
            return;
        };
        let groups = &mut s.groups[id.dim as usize];
        let other = groups.len() - 1;
        let g = usize::from(id.group);
        if g >= other || groups[g].folded {
            return;
        }
        let c = std::mem::take(&mut groups[g].c);
        groups[g].folded = true;
        groups[other].c.add(c);
        self.groups_folded += 1;
    }

    pub fn snapshot(&self) -> AggSnapshot {
        let mut groups = Vec::new();
        let sides = self
            .sides
            .iter()
            .enumerate()
            .map(|(si, s)| {
                for dim in Dim::ALL {
                    let gs = &s.groups[dim as usize];
                    for (gi, g) in gs[..gs.len() - 1].iter().enumerate() {
                        if !g.folded && !g.c.is_zero() {
                            let id = GroupId {
                                side: si as u16,
                                dim,
                                group: gi as u16,
                            };
                            groups.push((id, g.c));
                        }
                    }
                }
                SideSnapshot {
                    device: s.device.clone(),
                    direction: s.direction,
                    window: Counts::sum(&s.window),
                    others: s.groups.each_ref().map(|g| g[g.len() - 1].c),
                }
            })
            .collect();
        AggSnapshot {
            series_budget: self.series_budget,
            top_k: self.top_k,
            window_seconds: self.window.as_secs_f64(),
            window_flows: self.flows.len(),
            window_max_flows: self.window_max_flows,
            window_overflow_deltas: self.window_overflow_deltas,
            sides,
            names: self.names.clone(),
            groups,
            groups_folded: self.groups_folded,
            top: self.top(),
            folds: Arc::clone(&self.folds),
        }
    }

    /// The K flows with the most bytes in the window (then the most
    /// packets, then the lowest key, so ties rank the same every time).
    fn top(&self) -> Vec<(WinKey, Counts)> {
        if self.top_k == 0 {
            return Vec::new();
        }
        type Rank = (u64, u64, Reverse<WinKey>);
        let mut heap: BinaryHeap<Reverse<Rank>> = BinaryHeap::with_capacity(self.top_k + 1);
        for (k, slots) in self.flows.iter() {
            let c = Counts::sum(slots);
            let r = (c.bytes, c.packets, Reverse(*k));
            if heap.len() < self.top_k {
                heap.push(Reverse(r));
            } else if heap.peek().is_some_and(|Reverse(min)| r > *min) {
                heap.pop();
                heap.push(Reverse(r));
            }
        }
        // Ascending order of Reverse<Rank> is the best rank first.
        heap.into_sorted_vec()
            .into_iter()
            .map(|Reverse((bytes, packets, Reverse(k)))| (k, Counts { packets, bytes }))
            .collect()
    }
}
