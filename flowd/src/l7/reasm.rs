//! Bounded reassembly of a message (request, ClientHello, DNS over TCP)
//! that spans TCP segments: per flow direction, a few segments and a few
//! kilobytes at most, a bound on the directions tracked (the oldest buffer
//! is evicted), and an age limit. Everything dropped is counted.

use std::collections::HashMap;

use bytes::BytesMut;
use flowd_common::FlowKey;

use super::{L7Stats, detect::Start};

/// Where a buffered message came from: the packet that started it.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    pub ts_ns: u64,
    pub key: FlowKey,
    pub direction: u8,
}

/// One direction's message so far.
#[derive(Debug)]
pub struct Buf {
    pub start: Start,
    pub origin: Origin,
    pub data: BytesMut,
    /// The sequence number the next segment must have.
    pub next_seq: u32,
    pub segments: u32,
    /// A segment was cut by the snap length: nothing more can follow.
    pub cut: bool,
}

pub struct Reasm {
    bufs: HashMap<FlowKey, Buf>,
    max_flows: usize,
}

/// A flow direction's key for reassembly: the packet's key without its
/// direction (ingress and egress copies of one stream are the same bytes).
pub fn stream_key(k: &FlowKey) -> FlowKey {
    let mut s = *k;
    s.direction = 0;
    s
}

impl Reasm {
    pub fn new(max_flows: usize) -> Self {
        Self {
            bufs: HashMap::new(),
            max_flows: max_flows.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.bufs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    pub fn take(&mut self, k: &FlowKey) -> Option<Buf> {
        self.bufs.remove(k)
    }

    /// Keeps `buf` for `k`, evicting the oldest buffer at the bound.
    pub fn put(&mut self, k: FlowKey, buf: Buf, stats: &mut L7Stats) {
        if self.bufs.len() >= self.max_flows && !self.bufs.contains_key(&k) {
            let oldest = self
                .bufs
                .iter()
                .min_by_key(|(_, b)| b.origin.ts_ns)
                .map(|(k, _)| *k);
            if let Some(o) = oldest {
                self.bufs.remove(&o);
                stats.reasm_evicted += 1;
            }
        }
        self.bufs.insert(k, buf);
    }

    /// Drops buffers started more than `age_ns` before `now_ns`.
    pub fn expire(&mut self, now_ns: u64, age_ns: u64, stats: &mut L7Stats) {
        let before = self.bufs.len();
        self.bufs
            .retain(|_, b| b.origin.ts_ns.saturating_add(age_ns) >= now_ns);
        stats.reasm_expired += (before - self.bufs.len()) as u64;
    }

    /// Drops everything (at flush: an unfinished message is lost).
    pub fn clear(&mut self, stats: &mut L7Stats) {
        stats.reasm_expired += self.bufs.len() as u64;
        self.bufs.clear();
    }
}
