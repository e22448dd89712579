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
    hash::BuildHasher as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use flowd_common::{DIR_INGRESS, FlowKey, FlowStats};
use hashbrown::{DefaultHashBuilder, HashTable};
use thiserror::Error;

use super::groups::{
    DEFAULT_PEER_UNMATCHED, OTHER, PeerGroupConfig, PeerGroups, ServiceConfig, ServiceMap,
    default_peer_groups, default_services, proto_group, proto_names,
};

/// The window is a ring of this many slots: a flow's bytes leave it one slot
/// (window / 6) at a time, so the window covers between 5/6 of its length
/// and all of it.
pub const WINDOW_SLOTS: usize = 6;

/// Devices the aggregates keep apart; further names share the device
/// `other` (the daemon monitors at most `MAX_SLOTS` interfaces).
pub const MAX_DEVICES: usize = flowd_common::MAX_SLOTS as usize;

/// Default of [`AggConfig::series_budget`].
pub const DEFAULT_SERIES_BUDGET: usize = 10_000;

/// Settings of the aggregates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggConfig {
    /// K: flows exported one by one, those with the most bytes in the
    /// window. 0 exports only the `other` series. Default 100.
    pub top_flows: usize,
    /// The recent window top flows are ranked and measured over. Default 60 s.
    pub window: Duration,
    /// Most flows the window tracks (keep it at 10 * K or more, so the top
    /// is ranked over enough candidates); deltas of flows beyond it count
    /// only in `other`. Default 100,000.
    pub window_max_flows: usize,
    /// Most series one scrape may have. Default 10,000.
    pub series_budget: usize,
    /// The port map of the `service` dimension.
    pub services: Vec<ServiceConfig>,
    /// CIDR groups of the `peer` dimension (remote address: the source for
    /// receive, the destination for transmit).
    pub peer_groups: Vec<PeerGroupConfig>,
    /// Peer group of addresses no prefix matches. Default `public`.
    pub peer_unmatched: String,
}

impl Default for AggConfig {
    fn default() -> Self {
        Self {
            top_flows: 100,
            window: Duration::from_secs(60),
            window_max_flows: 100_000,
            series_budget: DEFAULT_SERIES_BUDGET,
            services: default_services(),
            peer_groups: default_peer_groups(),
            peer_unmatched: DEFAULT_PEER_UNMATCHED.to_owned(),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("key `{key}`: value {value} is not accepted; accepted: {accepted}")]
pub struct AggConfigError {
    pub key: &'static str,
    pub value: String,
    pub accepted: &'static str,
}

impl AggConfig {
    /// Checks every value; the error names the key, the value and what is
    /// accepted.
    pub fn validate(&self) -> Result<(), AggConfigError> {
        let bad = |key, value: String, accepted| {
            Err(AggConfigError {
                key,
                value,
                accepted,
            })
        };
        if self.top_flows > 100_000 {
            return bad("top_flows", self.top_flows.to_string(), "0 to 100000");
        }
        if !(1..=3600).contains(&self.window.as_secs()) {
            return bad("window", format!("{:?}", self.window), "1 to 3600 seconds");
        }
        if self.window_max_flows < self.top_flows || self.window_max_flows > 10_000_000 {
            return bad(
                "window_max_flows",
                self.window_max_flows.to_string(),
                "top_flows to 10000000",
            );
        }
        if !(100..=10_000_000).contains(&self.series_budget) {
            return bad(
                "series_budget",
                self.series_budget.to_string(),
                "100 to 10000000",
            );
        }
        let names = self
            .services
            .iter()
            .map(|s| ("services", &s.name))
            .chain(self.peer_groups.iter().map(|g| ("peer_groups", &g.name)))
            .chain([("peer_unmatched", &self.peer_unmatched)]);
        for (key, name) in names {
            if !valid_group_name(name) {
                return bad(
                    key,
                    format!("{name:?}"),
                    "names of 1 to 64 letters, digits, '-', '_' or '.', other than \"other\"",
                );
            }
        }
        if self.services.len() > super::groups::MAX_SERVICES {
            return bad(
                "services",
                format!("{} services", self.services.len()),
                "at most 1024 services",
            );
        }
        Ok(())
    }
}

fn valid_group_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n != OTHER
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

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

/// The flows of the top-flows window: keys and counts in one dense vector,
/// and an index that holds a `u32` position per flow (hashes come from the
/// vector's keys): 136 B per flow plus 5 B per index bucket, where a
/// `HashMap` costs 137 B per bucket at a load of 44–88 %.
#[derive(Default)]
struct Window {
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
    fn len(&self) -> usize {
        self.flows.len()
    }

    fn iter(&self) -> impl Iterator<Item = &(WinKey, [Counts; WINDOW_SLOTS])> {
        self.flows.iter()
    }

    fn get_mut(&mut self, k: &WinKey) -> Option<&mut [Counts; WINDOW_SLOTS]> {
        let flows = &self.flows;
        let i = *self
            .index
            .find(self.hasher.hash_one(k), |&i| flows[i as usize].0 == *k)?;
        Some(&mut self.flows[i as usize].1)
    }

    /// Adds a flow that is not in the window.
    fn insert(&mut self, k: WinKey, slots: [Counts; WINDOW_SLOTS]) {
        let i = u32::try_from(self.flows.len()).expect("window bounded by the configuration");
        self.flows.push((k, slots));
        let (flows, hasher) = (&self.flows, &self.hasher);
        self.index.insert_unique(hasher.hash_one(k), i, |&i| {
            hasher.hash_one(flows[i as usize].0)
        });
    }

    /// Keeps the flows for which `keep` (which may change the counts) is true.
    fn retain(&mut self, mut keep: impl FnMut(&mut [Counts; WINDOW_SLOTS]) -> bool) {
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

    fn shrink(&mut self) {
        if self.flows.capacity() > 4 * self.flows.len().max(1024) {
            self.flows.shrink_to(2 * self.flows.len());
            let (flows, hasher) = (&self.flows, &self.hasher);
            self.index
                .shrink_to(2 * flows.len(), |&i| hasher.hash_one(flows[i as usize].0));
        }
    }
}

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

#[cfg(test)]
mod tests {
    use flowd_common::{DIR_EGRESS, FlowCounts, ipv4_mapped};

    #[test]
    fn window_positions_stay_indexed_after_removals() {
        let key = |p: u16| WinKey {
            side: 0,
            proto: 17,
            src: [1; 16],
            dst: [2; 16],
            sport: p,
            dport: 53,
        };
        let one = |n: u64| {
            let mut s = [Counts::default(); WINDOW_SLOTS];
            s[0] = Counts {
                packets: n,
                bytes: 10 * n,
            };
            s
        };
        let mut w = Window::default();
        for p in 0..1000u16 {
            w.insert(key(p), one(u64::from(p)));
        }
        // Port 0 has zero counts; drop every third port too.
        w.retain(|s| s[0].packets % 3 != 0);
        assert_eq!(w.len(), 666);
        for p in 0..1000u16 {
            match w.get_mut(&key(p)) {
                Some(s) => assert_eq!(s[0].packets, u64::from(p)),
                None => assert_eq!(p % 3, 0),
            }
        }
        w.insert(key(3000), one(7));
        assert_eq!(w.get_mut(&key(3000)).map(|s| s[0].bytes), Some(70));
    }

    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn key(dir: u8, proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> FlowKey {
        FlowKey {
            ifindex: 7,
            direction: dir,
            proto,
            src: ipv4_mapped(src),
            dst: ipv4_mapped(dst),
            sport,
            dport,
            ..Default::default()
        }
    }

    fn stats(packets: u64, bytes: u64) -> FlowStats {
        FlowStats {
            counts: FlowCounts {
                packets,
                bytes,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn group(s: &AggSnapshot, side: usize, dim: Dim, name: &str) -> Option<Counts> {
        let names = &s.names[dim as usize];
        if name == OTHER {
            return Some(s.sides[side].others[dim as usize]);
        }
        let gi = names.iter().position(|n| n == name)?;
        s.groups
            .iter()
            .find(|(id, _)| {
                usize::from(id.side) == side && id.dim == dim && usize::from(id.group) == gi
            })
            .map(|(_, c)| *c)
    }

    #[test]
    fn groups_by_proto_service_and_peer_per_side() {
        let mut a = Aggregator::default();
        // In: HTTPS from a public client; out: DNS to a private resolver.
        a.absorb(
            &key(DIR_INGRESS, 6, [8, 8, 8, 8], [10, 0, 0, 1], 51000, 443),
            &stats(10, 1000),
            "eth0",
        );
        a.absorb(
            &key(DIR_EGRESS, 17, [10, 0, 0, 1], [192, 168, 0, 53], 40000, 53),
            &stats(2, 200),
            "eth0",
        );
        a.absorb(
            &key(DIR_INGRESS, 1, [198, 18, 0, 1], [10, 0, 0, 1], 0, 2048),
            &stats(1, 98),
            "eth0",
        );
        a.absorb(
            &key(DIR_INGRESS, 6, [1; 4], [2; 4], 1, 2),
            &stats(0, 0),
            "eth1",
        );
        let s = a.snapshot();
        assert_eq!(s.sides.len(), 2, "an empty delta makes no side");
        let (rx, tx) = (0, 1);
        assert_eq!(s.sides[rx].device, "eth0");
        assert_eq!(s.sides[tx].direction, DIR_EGRESS);
        let c = |p, b| {
            Some(Counts {
                packets: p,
                bytes: b,
            })
        };
        assert_eq!(group(&s, rx, Dim::Proto, "tcp"), c(10, 1000));
        assert_eq!(group(&s, rx, Dim::Proto, "icmp"), c(1, 98));
        assert_eq!(group(&s, rx, Dim::Service, "https"), c(10, 1000));
        assert_eq!(group(&s, rx, Dim::Service, OTHER), c(1, 98));
        assert_eq!(group(&s, rx, Dim::Peer, "public"), c(10, 1000));
        assert_eq!(group(&s, rx, Dim::Peer, "benchmark"), c(1, 98));
        assert_eq!(group(&s, tx, Dim::Proto, "udp"), c(2, 200));
        assert_eq!(group(&s, tx, Dim::Service, "dns"), c(2, 200));
        // Egress: the remote is the destination.
        assert_eq!(group(&s, tx, Dim::Peer, "private"), c(2, 200));
        assert_eq!(group(&s, tx, Dim::Peer, "public"), None);
        assert_eq!(
            s.sides[rx].window,
            Counts {
                packets: 11,
                bytes: 1098
            }
        );
    }

    #[test]
    fn top_flows_rank_by_window_bytes_and_merge_vlans() {
        let mut a = Aggregator::new(AggConfig {
            top_flows: 2,
            ..Default::default()
        });
        a.tick(1000 * SEC);
        let k1 = key(DIR_INGRESS, 17, [1, 1, 1, 1], [2, 2, 2, 2], 1000, 2000);
        let mut k1_vlan = k1;
        k1_vlan.vlan = 5;
        let k2 = key(DIR_INGRESS, 17, [1, 1, 1, 1], [2, 2, 2, 2], 1001, 2000);
        let k3 = key(DIR_INGRESS, 17, [1, 1, 1, 1], [2, 2, 2, 2], 1002, 2000);
        a.absorb(&k1, &stats(1, 100), "d");
        a.absorb(&k1_vlan, &stats(1, 100), "d");
        a.absorb(&k2, &stats(5, 500), "d");
        a.absorb(&k3, &stats(1, 50), "d");
        let s = a.snapshot();
        assert_eq!(s.window_flows, 3);
        let top: Vec<(u16, Counts)> = s.top.iter().map(|(k, c)| (k.sport, *c)).collect();
        assert_eq!(
            top,
            [
                (
                    1001,
                    Counts {
                        packets: 5,
                        bytes: 500
                    }
                ),
                (
                    1000,
                    Counts {
                        packets: 2,
                        bytes: 200
                    }
                )
            ]
        );
        assert_eq!(
            s.sides[0].window,
            Counts {
                packets: 8,
                bytes: 750
            }
        );
    }

    #[test]
    fn window_forgets_one_slot_at_a_time() {
        let mut a = Aggregator::new(AggConfig {
            window: Duration::from_secs(60),
            ..Default::default()
        });
        let k = key(DIR_INGRESS, 6, [1; 4], [2; 4], 1, 2);
        let t0 = 6000 * SEC; // a slot boundary
        a.tick(t0);
        a.absorb(&k, &stats(1, 10), "d");
        a.tick(t0 + 15 * SEC);
        a.absorb(&k, &stats(2, 20), "d");
        a.tick(t0 + 25 * SEC);
        assert_eq!(
            a.snapshot().top[0].1,
            Counts {
                packets: 3,
                bytes: 30
            }
        );
        // The first delta's slot is reused 60 s after it started.
        a.tick(t0 + 59 * SEC);
        assert_eq!(a.snapshot().top[0].1.packets, 3);
        a.tick(t0 + 60 * SEC);
        assert_eq!(
            a.snapshot().top[0].1,
            Counts {
                packets: 2,
                bytes: 20
            }
        );
        assert_eq!(a.snapshot().sides[0].window.packets, 2);
        a.tick(t0 + 70 * SEC);
        let s = a.snapshot();
        assert!(s.top.is_empty());
        assert_eq!(s.window_flows, 0);
        assert_eq!(s.sides[0].window, Counts::default());
        // Cumulative group counters do not forget.
        assert_eq!(group(&s, 0, Dim::Proto, "tcp").unwrap().packets, 3);
        // A jump longer than the window clears it; a step back is harmless.
        a.absorb(&k, &stats(1, 1), "d");
        a.tick(t0 + 10_000 * SEC);
        assert_eq!(a.snapshot().window_flows, 0);
        a.absorb(&k, &stats(1, 1), "d");
        a.tick(t0);
        assert_eq!(a.snapshot().window_flows, 1);
    }

    #[test]
    fn window_is_capped_and_the_rest_is_counted() {
        let mut a = Aggregator::new(AggConfig {
            top_flows: 5,
            window_max_flows: 10,
            ..Default::default()
        });
        for port in 0..100u16 {
            a.absorb(
                &key(DIR_INGRESS, 17, [1; 4], [2; 4], port, 9),
                &stats(1, 60),
                "d",
            );
        }
        let s = a.snapshot();
        assert_eq!(s.window_flows, 10);
        assert_eq!(s.window_overflow_deltas, 90);
        assert_eq!(s.top.len(), 5);
        assert_eq!(
            s.sides[0].window,
            Counts {
                packets: 100,
                bytes: 6000
            }
        );
    }

    #[test]
    fn folds_are_permanent_and_other_keeps_growing() {
        let mut a = Aggregator::default();
        let https = key(DIR_INGRESS, 6, [8; 4], [10, 0, 0, 1], 50000, 443);
        a.absorb(&https, &stats(3, 300), "d");
        let s = a.snapshot();
        let gi = s.names[Dim::Service as usize]
            .iter()
            .position(|n| n == "https")
            .unwrap();
        let id = GroupId {
            side: 0,
            dim: Dim::Service,
            group: gi as u16,
        };
        s.folds.request(&[id]);
        assert_eq!(s.folds.pending(), [id]);
        a.tick(SEC);
        a.absorb(&https, &stats(1, 100), "d");
        let s = a.snapshot();
        assert!(s.folds.pending().is_empty());
        assert_eq!(s.groups_folded, 1);
        assert_eq!(group(&s, 0, Dim::Service, "https"), None);
        assert_eq!(
            group(&s, 0, Dim::Service, OTHER),
            Some(Counts {
                packets: 4,
                bytes: 400
            })
        );
        // Folding twice changes nothing; other dimensions are untouched.
        s.folds.request(&[id]);
        a.tick(2 * SEC);
        assert_eq!(a.snapshot().groups_folded, 1);
        assert_eq!(
            group(&a.snapshot(), 0, Dim::Proto, "tcp"),
            Some(Counts {
                packets: 4,
                bytes: 400
            })
        );
    }

    #[test]
    fn devices_are_bounded() {
        let mut a = Aggregator::default();
        for d in 0..(MAX_DEVICES + 50) {
            a.absorb(
                &key(DIR_INGRESS, 6, [1; 4], [2; 4], 1, 2),
                &stats(1, 1),
                &format!("d{d}"),
            );
        }
        let s = a.snapshot();
        assert_eq!(s.sides.len(), MAX_DEVICES + 1);
        assert_eq!(s.sides.last().unwrap().device, OTHER);
        assert_eq!(s.sides.last().unwrap().window.packets, 50);
    }

    #[test]
    fn default_snapshot_is_a_fresh_aggregators() {
        let (d, f) = (AggSnapshot::default(), Aggregator::default().snapshot());
        assert_eq!(
            (
                d.series_budget,
                d.top_k,
                d.window_seconds,
                d.window_max_flows
            ),
            (
                f.series_budget,
                f.top_k,
                f.window_seconds,
                f.window_max_flows
            )
        );
        assert!(f.sides.is_empty() && f.groups.is_empty() && f.top.is_empty());
    }

    #[test]
    fn config_validation_names_the_key() {
        assert_eq!(AggConfig::default().validate(), Ok(()));
        let e = AggConfig {
            series_budget: 5,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.key, "series_budget");
        assert!(e.to_string().contains("value 5"), "{e}");
        let mut c = AggConfig::default();
        c.services.push(ServiceConfig::new("bad name", &[1]));
        assert_eq!(c.validate().unwrap_err().key, "services");
        let c = AggConfig {
            top_flows: 1000,
            window_max_flows: 10,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "window_max_flows");
    }
}
