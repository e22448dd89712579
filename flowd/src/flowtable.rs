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
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

impl Flow {
    fn new(key: FlowKey) -> Self {
        Self {
            key,
            packets: 0,
            bytes: 0,
            first_ns: u64::MAX,
            last_ns: 0,
            tcp_flags: 0,
            syn: 0,
            fin: 0,
            rst: 0,
        }
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
        // The kernel ORs flags without atomics; the counted ones are exact.
        self.tcp_flags |= d.tcp_flags
            | if d.syn > 0 { TCP_SYN } else { 0 }
            | if d.fin > 0 { TCP_FIN } else { 0 }
            | if d.rst > 0 { TCP_RST } else { 0 };
    }
}

/// Every flow seen, keyed by its 5-tuple (plus interface, direction, VLAN).
#[derive(Debug, Default)]
pub struct FlowTable {
    flows: HashMap<FlowKey, Flow>,
}

impl FlowTable {
    pub fn apply(&mut self, key: &FlowKey, delta: &FlowStats, time: TimeBase) {
        self.flows
            .entry(*key)
            .or_insert_with(|| Flow::new(*key))
            .add(delta, time);
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
        r.direction = 1 - key.direction;
        self.flows.get(&r).or_else(|| {
            r.direction = key.direction;
            self.flows.get(&r)
        })
    }

    /// Zeek's conn_state of a TCP flow's connection (None for other protocols).
    pub fn conn_state(&self, key: &FlowKey) -> Option<&'static str> {
        const IPPROTO_TCP: u8 = 6;
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
            return Some(conn_state(&side(this), &Side::default()));
        };
        // The originator sent the first SYN; without SYNs, the first packet.
        let this_first = (this.syn == 0, this.first_ns);
        let rev_first = (rev.syn == 0, rev.first_ns);
        let (orig, resp) = if this_first <= rev_first {
            (this, rev)
        } else {
            (rev, this)
        };
        Some(conn_state(&side(orig), &side(resp)))
    }
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
            _pad: 0,
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
