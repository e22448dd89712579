//! The reference the real table must match: a `HashMap` walked by every
//! `expire`, as the table was before the slab and the wheel. It shares
//! only data types with the product (`Flow`, `Ended`, `TableConfig`): how a
//! delta adds up, which direction originated a connection, its Zeek
//! `conn_state` and when it is closed are written here again, from their
//! specifications, so a mistake in the product's helpers shows up as a
//! difference instead of being repeated here.

use std::collections::{HashMap, HashSet};

use flowd_common::{
    FlowCounts, FlowKey, FlowStats,
    proto::{ip::TCP, tcp},
};

use super::{EndReason, Ended, Flow, TableConfig, TableStats};

#[derive(Default)]
pub(super) struct RefTable {
    pub(super) flows: HashMap<FlowKey, Flow>,
    pub(super) config: TableConfig,
    pub(super) pending: Vec<Ended>,
    pub(super) stats: TableStats,
}

/// A delta (capture time, so no clock conversion) added to a record:
/// every count summed, the flags ORed with the bits of the counted SYN,
/// FIN and RST, the latest DSCP, the earliest first and latest last seen
/// (last never before first).
fn add(f: &mut Flow, d: &FlowStats) {
    let (c, x) = (&mut f.counts, &d.counts);
    c.packets += x.packets;
    c.bytes += x.bytes;
    c.syn += x.syn;
    c.fin += x.fin;
    c.rst += x.rst;
    c.synack += x.synack;
    c.retrans += x.retrans;
    c.zero_window += x.zero_window;
    c.ce += x.ce;
    c.ect0 += x.ect0;
    c.ect1 += x.ect1;
    c.dscp = x.dscp;
    c.tcp_flags |= x.tcp_flags;
    if x.syn > 0 {
        c.tcp_flags |= tcp::SYN;
    }
    if x.fin > 0 {
        c.tcp_flags |= tcp::FIN;
    }
    if x.rst > 0 {
        c.tcp_flags |= tcp::RST;
    }
    f.first_ns = f.first_ns.min(d.first_seen_ns);
    f.last_ns = f.last_ns.max(d.last_seen_ns.max(d.first_seen_ns));
}

fn new_flow(key: FlowKey, d: &FlowStats) -> Flow {
    let mut f = Flow {
        key,
        counts: FlowCounts::default(),
        first_ns: u64::MAX,
        last_ns: 0,
        rtt_min_ns: 0,
        rtt_srtt_ns: 0,
        rtt_samples: 0,
        l7: None,
    };
    add(&mut f, d);
    f
}

/// A service port answers an ephemeral one.
fn from_service(f: &Flow) -> bool {
    f.key.sport < 1024 && f.key.dport >= 1024
}

/// Whether `a` originated the connection rather than `b`: the side that
/// sent a SYN; if both or neither did, the one not sending from a service
/// port to an ephemeral port; then the earlier first packet (a tie: `a`).
fn originated(a: &Flow, b: &Flow) -> bool {
    let (sa, sb) = (a.counts.syn > 0, b.counts.syn > 0);
    if sa != sb {
        return sa;
    }
    let (va, vb) = (from_service(a), from_service(b));
    if va != vb {
        return !va;
    }
    a.first_ns <= b.first_ns
}

/// Counters of one direction, for the state of its connection.
#[derive(Clone, Copy, Default)]
struct Dir {
    packets: u64,
    syn: bool,
    fin: bool,
    rst: bool,
}

fn dir(f: &Flow) -> Dir {
    Dir {
        packets: f.counts.packets,
        syn: f.counts.syn > 0,
        fin: f.counts.fin > 0,
        rst: f.counts.rst > 0,
    }
}

/// Zeek's conn_state from what each side sent (the table in
/// `connstate.rs`'s header), decided in Zeek's order: a responder's RST
/// first, then the originator's, then FINs, then the handshake.
fn zeek_state(o: Dir, r: Dir) -> &'static str {
    let handshake = o.syn && r.syn;
    // A side that sent nothing, or only mid-stream data (no SYN, FIN, RST).
    let o_quiet = o.packets == 0 || !(o.syn || o.fin || o.rst);
    let r_quiet = r.packets == 0 || !(r.syn || r.fin || r.rst);
    // Only a SYN (or SYN-ACK) so far: no FIN, no RST, no answer to it.
    let o_opening = o.packets > 0 && o.syn && !o.fin && !o.rst && !r.syn;
    if r.packets > 0 && r.rst {
        return if o_opening {
            "REJ"
        } else if o_quiet {
            "RSTRH"
        } else {
            "RSTR"
        };
    }
    if o.packets > 0 && o.rst {
        return if !r_quiet {
            "RSTO"
        } else if o.syn && r.packets == 0 {
            "RSTOS0"
        } else {
            "OTH"
        };
    }
    let (o_fin, r_fin) = (o.packets > 0 && o.fin, r.packets > 0 && r.fin);
    match (o_fin, r_fin) {
        (true, true) => "SF",
        (true, false) if r_quiet => "SH",
        (true, false) => "S2",
        (false, true) if o_quiet => "SHR",
        (false, true) => "S3",
        _ if o.packets > 0 && o.syn && !r.syn && r.packets == 0 => "S0",
        _ if handshake && o.packets > 0 && r.packets > 0 => "S1",
        _ => "OTH",
    }
}

impl RefTable {
    pub(super) fn apply(&mut self, key: &FlowKey, delta: &FlowStats) {
        if let Some(f) = self.flows.get_mut(key) {
            add(f, delta);
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
        self.flows.insert(*key, new_flow(*key, delta));
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

    /// The other direction: addresses and ports swapped, in the opposite
    /// direction first, else in the same one (a replay).
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
            Some(rev) => originated(this, rev),
            // Alone: the originator unless it answers from a service port
            // without a SYN.
            None => this.counts.syn > 0 || !from_service(this),
        }
    }

    fn conn_state(&self, key: &FlowKey) -> Option<&'static str> {
        if key.proto != TCP {
            return None;
        }
        let this = &self.flows[key];
        let none = Dir::default();
        Some(match self.reverse(key) {
            None if self.is_originator(key) => zeek_state(dir(this), none),
            None => zeek_state(none, dir(this)),
            Some(rev) if originated(this, rev) => zeek_state(dir(this), dir(rev)),
            Some(rev) => zeek_state(dir(rev), dir(this)),
        })
    }

    /// FIN both ways, or an RST from either side; alone, an RST.
    fn closed(&self, f: &Flow) -> bool {
        match self.reverse(&f.key) {
            Some(r) => {
                (f.counts.fin > 0 && r.counts.fin > 0) || f.counts.rst > 0 || r.counts.rst > 0
            }
            None => f.counts.rst > 0,
        }
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
            let reason = if idle >= c.idle_timeout_ns {
                Some(EndReason::Idle)
            } else if f.key.proto == TCP && idle >= c.tcp_close_grace_ns && self.closed(f) {
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
            // A new record from now on: counts from zero, RTT history kept.
            *f = Flow {
                key,
                counts: FlowCounts::default(),
                first_ns: now_ns,
                last_ns: now_ns,
                rtt_min_ns: f.rtt_min_ns,
                rtt_srtt_ns: f.rtt_srtt_ns,
                rtt_samples: 0,
                l7: f.l7.take(),
            };
            // States of restarted records depend on the order; not compared.
            self.end(ended, None, false, EndReason::Active);
        }
        std::mem::take(&mut self.pending)
    }
}
