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
    /// Per flow direction, the sequence number after the last message
    /// parsed: a segment before it is a retransmission, not a new request.
    seen: HashMap<FlowKey, u32>,
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
            seen: HashMap::new(),
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

    /// Remembers where the last message of `k` ended.
    pub fn parsed_up_to(&mut self, k: FlowKey, next_seq: u32) {
        if self.seen.len() >= self.max_flows
            && !self.seen.contains_key(&k)
            && let Some(any) = self.seen.keys().next().copied()
        {
            // No age kept for these: any one goes (it only costs a
            // retransmission seen as new).
            self.seen.remove(&any);
        }
        self.seen.insert(k, next_seq);
    }

    /// Whether a segment of `k` starting at `seq` repeats bytes already
    /// parsed.
    pub fn is_retransmission(&self, k: &FlowKey, seq: u32) -> bool {
        self.seen
            .get(k)
            .is_some_and(|&end| (seq.wrapping_sub(end) as i32) < 0)
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
        self.seen.clear();
    }
}
