//! The cumulative flow table, built from drained per-interval deltas.

use std::collections::HashMap;

use flowd_common::{FlowKey, FlowStats};

use crate::{
    clock::TimeBase,
    connstate::{Side, conn_state},
};

const TCP_FIN: u16 = 0x01;
const TCP_SYN: u16 = 0x02;
const TCP_RST: u16 = 0x04;

/// One unidirectional flow, cumulative since it was first seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flow {
    pub key: FlowKey,
    pub packets: u64,
    pub bytes: u64,
    /// Unix time, nanoseconds.
    pub first_ns: u64,
    pub last_ns: u64,
    pub tcp_flags: u16,
    pub syn: u64,
    pub fin: u64,
    pub rst: u64,
    pub synack: u64,
    /// TCP segments with data already seen (retransmissions, reordering).
    pub retrans: u64,
    pub zero_window: u64,
    pub ce: u64,
    pub ect0: u64,
    pub ect1: u64,
    /// DSCP of the latest packet.
    pub dscp: u8,
    /// RTT seen on this flow (samples closed by its packets), ns.
    pub rtt_min_ns: u64,
    /// Smoothed RTT (RFC 6298 weights), ns.
    pub rtt_srtt_ns: u64,
    pub rtt_samples: u64,
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

    /// Adds one drained delta.
    pub fn add(&mut self, d: &FlowStats, time: TimeBase) {
        let first = time.to_unix_ns(d.first_seen_ns);
        // Last-seen comes from a coarser clock than first-seen in the kernel.
        let last = time.to_unix_ns(d.last_seen_ns).max(first);
        self.packets += d.packets;
        self.bytes += d.bytes;
        self.first_ns = self.first_ns.min(first);
        self.last_ns = self.last_ns.max(last);
        self.syn += u64::from(d.syn);
        self.fin += u64::from(d.fin);
        self.rst += u64::from(d.rst);
        self.synack += u64::from(d.synack);
        self.retrans += u64::from(d.retrans);
        self.zero_window += u64::from(d.zero_window);
        self.ce += u64::from(d.ce);
        self.ect0 += u64::from(d.ect0);
        self.ect1 += u64::from(d.ect1);
        self.dscp = d.dscp;
        // The kernel ORs flags without atomics; the counted ones are exact.
        self.tcp_flags |= d.tcp_flags
            | if d.syn > 0 { TCP_SYN } else { 0 }
            | if d.fin > 0 { TCP_FIN } else { 0 }
            | if d.rst > 0 { TCP_RST } else { 0 };
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
#[derive(Debug, Default)]
pub struct FlowTable {
    flows: HashMap<FlowKey, Flow>,
    config: TableConfig,
    /// Records ended by eviction, waiting for the next `expire`.
    pending: Vec<Ended>,
    stats: TableStats,
}

impl FlowTable {
    pub fn new(config: TableConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// Replaces timeouts and bounds; a smaller bound evicts on the next insert.
    pub fn set_config(&mut self, config: TableConfig) {
        self.config = config;
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// Adds one drained delta to its flow, creating the flow if needed.
    pub fn apply(&mut self, key: &FlowKey, delta: &FlowStats, time: TimeBase) {
        if let Some(f) = self.flows.get_mut(key) {
            f.add(delta, time);
            return;
        }
        if self.config.max_flows > 0 && self.flows.len() >= self.config.max_flows {
            self.evict();
        }
        let mut f = Flow::new(*key);
        f.add(delta, time);
        self.flows.insert(*key, f);
        self.stats.started += 1;
    }

    /// Makes room: ends the longest-idle 1/64 of the table (at least one).
    fn evict(&mut self) {
        let n = (self.config.max_flows / 64).max(1);
        let mut by_idle: Vec<(u64, FlowKey)> =
            self.flows.values().map(|f| (f.last_ns, f.key)).collect();
        if by_idle.len() > n {
            by_idle.select_nth_unstable(n - 1);
            by_idle.truncate(n);
        }
        for (_, key) in by_idle {
            let (state, orig) = (self.conn_state(&key), self.is_originator(&key));
            if let Some(flow) = self.flows.remove(&key) {
                self.end(flow, state, EndReason::Evicted);
                self.mark_last(orig);
            }
        }
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

    /// Whether `key` is its connection's originator side (computed while
    /// both directions are still in the table).
    pub fn is_originator(&self, key: &FlowKey) -> bool {
        let Some(this) = self.flows.get(key) else {
            return false;
        };
        match self.reverse(key) {
            Some(rev) => rank(this) <= rank(rev),
            None => !(this.syn == 0 && is_service_side(key.sport, key.dport)),
        }
    }

    /// Ends what timed out by `now_ns` (Unix ns: wall clock live, capture
    /// clock in replay) and returns it, with any evicted records.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Ended> {
        let c = self.config;
        let mut done: Vec<(FlowKey, EndReason)> = Vec::new();
        let mut restart: Vec<FlowKey> = Vec::new();
        let mut decided: std::collections::HashSet<FlowKey> = std::collections::HashSet::new();
        for f in self.flows.values() {
            if decided.contains(&f.key) {
                continue;
            }
            // A connection ends as one: both directions, on the later one's clock.
            let rev = self.reverse(&f.key);
            let last = rev.map_or(f.last_ns, |r| r.last_ns.max(f.last_ns));
            let idle = now_ns.saturating_sub(last);
            let reason = if idle >= c.idle_timeout_ns {
                Some(EndReason::Idle)
            } else if f.key.proto == IPPROTO_TCP
                && idle >= c.tcp_close_grace_ns
                && self.tcp_closed(f)
            {
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
        // States first: both directions of a connection may end together.
        let states: Vec<(Option<&'static str>, bool)> = done
            .iter()
            .map(|(k, _)| (self.conn_state(k), self.is_originator(k)))
            .collect();
        for ((key, reason), (state, orig)) in done.into_iter().zip(states) {
            if let Some(flow) = self.flows.remove(&key) {
                self.end(flow, state, reason);
                self.mark_last(orig);
            }
        }
        for key in restart {
            let (state, orig) = (self.conn_state(&key), self.is_originator(&key));
            if let Some(f) = self.flows.get_mut(&key) {
                let ended = f.clone();
                f.restart(now_ns);
                self.end(ended, state, EndReason::Active);
                self.mark_last(orig);
            }
        }
        std::mem::take(&mut self.pending)
    }

    /// Ends every flow (shutdown, end of a replay).
    pub fn end_all(&mut self) -> Vec<Ended> {
        let keys: Vec<FlowKey> = self.flows.keys().copied().collect();
        let states: Vec<(Option<&'static str>, bool)> = keys
            .iter()
            .map(|k| (self.conn_state(k), self.is_originator(k)))
            .collect();
        for (key, (state, orig)) in keys.into_iter().zip(states) {
            if let Some(flow) = self.flows.remove(&key) {
                self.end(flow, state, EndReason::Forced);
                self.mark_last(orig);
            }
        }
        std::mem::take(&mut self.pending)
    }

    fn tcp_closed(&self, f: &Flow) -> bool {
        let side = |f: &Flow| Side {
            packets: f.packets,
            syn: f.syn,
            fin: f.fin,
            rst: f.rst,
        };
        match self.reverse(&f.key) {
            Some(r) => crate::connstate::is_closed(&side(f), &side(r)),
            None => f.rst > 0,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn get(&self, key: &FlowKey) -> Option<&Flow> {
        self.flows.get(key)
    }

    /// Adds an RTT sample to the flow whose packet closed it; returns the
    /// flow's minimum RTT before this sample (for queueing delay), if any.
    pub fn rtt(&mut self, key: &FlowKey, ns: u64) -> Option<u64> {
        let f = self.flows.get_mut(key)?;
        let min = (f.rtt_samples > 0).then_some(f.rtt_min_ns);
        f.rtt(ns);
        min
    }

    pub fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.flows.values()
    }

    /// The other direction of this flow's connection: addresses and ports
    /// swapped, seen on the same interface (in the opposite direction live,
    /// in the same direction in a replay).
    pub fn reverse(&self, key: &FlowKey) -> Option<&Flow> {
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

    /// Zeek's conn_state of a TCP flow's connection (None for other protocols).
    pub fn conn_state(&self, key: &FlowKey) -> Option<&'static str> {
        if key.proto != IPPROTO_TCP {
            return None;
        }
        let this = self.flows.get(key)?;
        let side = |f: &Flow| Side {
            packets: f.packets,
            syn: f.syn,
            fin: f.fin,
            rst: f.rst,
        };
        let Some(rev) = self.reverse(key) else {
            // Only one direction seen: from a service port, it is the responder's.
            return Some(
                if this.syn == 0 && is_service_side(this.key.sport, this.key.dport) {
                    conn_state(&Side::default(), &side(this))
                } else {
                    conn_state(&side(this), &Side::default())
                },
            );
        };
        let (orig, resp) = if rank(this) <= rank(rev) {
            (this, rev)
        } else {
            (rev, this)
        };
        Some(conn_state(&side(orig), &side(resp)))
    }
}

const IPPROTO_TCP: u8 = 6;

/// Orders the two directions of a connection: the originator sent the first
/// SYN; without SYNs, the side talking to a service port (as Zeek guesses);
/// else the first packet's sender.
fn rank(f: &Flow) -> (bool, bool, u64) {
    (
        f.syn == 0,
        is_service_side(f.key.sport, f.key.dport),
        f.first_ns,
    )
}

/// Whether a flow from `sport` to `dport` comes from the service side:
/// a well-known source port talking to an ephemeral one.
fn is_service_side(sport: u16, dport: u16) -> bool {
    sport < 1024 && dport >= 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(packets: u64, bytes: u64, first: u64, last: u64, flags: u16) -> FlowStats {
        FlowStats {
            packets,
            bytes,
            first_seen_ns: first,
            last_seen_ns: last,
            syn: u32::from(flags & TCP_SYN != 0),
            fin: 0,
            rst: 0,
            tcp_flags: flags,
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
        t.apply(&k, &delta(2, 120, 10, 20, TCP_SYN), TimeBase::Capture);
        t.apply(&k, &delta(3, 4500, 30, 25, 0x10), TimeBase::Capture);
        let f = t.get(&k).unwrap();
        assert_eq!((f.packets, f.bytes), (5, 4620));
        assert_eq!((f.first_ns, f.last_ns), (10, 30));
        assert_eq!(f.tcp_flags, TCP_SYN | 0x10);
        assert_eq!(f.syn, 1);
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
        let mut syn = delta(3, 180, 100, 300, TCP_SYN | TCP_FIN | 0x10);
        syn.fin = 1;
        let mut synack = delta(2, 120, 150, 310, TCP_SYN | TCP_FIN | 0x10);
        synack.fin = 1;
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
        assert_eq!(by_port(2).flow.packets, 2);
        // The active flow goes on with a fresh record.
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&udp(2)).unwrap().packets, 0);
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
        let mut d = delta(3, 180, 10, 20, TCP_SYN | TCP_FIN);
        d.fin = 1;
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
        d.rst = 1;
        t.apply(&k, &d, TimeBase::Capture);
        assert_eq!(t.get(&k).unwrap().tcp_flags, TCP_RST);
    }
}
