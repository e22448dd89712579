//! The TCP sequence carry: each TCP flow's next expected sequence number
//! survives the drain of its generation, so a retransmission right after a
//! flip is still recognised. The state lives in two `TCP_SEQ_*` arrays of
//! buckets; the programs read one while this writes the other. The drain
//! writes it before it deletes the drained generation: until then a new
//! entry finds the fresher state there (`update_flow` in flowd-ebpf).

use std::os::fd::AsFd;

use aya::maps::Map;
use flowd_common::{
    FlowKey, FlowStats, SEQ_BUCKETS, SEQ_TAG_VALID, SEQ_WAYS, SeqBucket, SeqSlot, maps, seq_bucket,
    seq_hash, seq_tag,
};

use super::{Datapath, LoadError};
use crate::sys;

/// What this Datapath wrote into the `TCP_SEQ_*` arrays.
#[derive(Debug, Default)]
pub(super) struct SeqCarry {
    /// The `TCP_SEQ_*` array the programs read.
    pub(super) generation: u32,
    /// What the buckets hold, and the drain that wrote each slot (to evict
    /// the oldest of a full bucket).
    mirror: Vec<SeqBucket>,
    written: Vec<[u32; SEQ_WAYS]>,
    drains: u32,
    /// Buckets written into `TCP_SEQ_<generation>` at the last drain, which
    /// the other array does not have yet.
    dirty: Vec<u32>,
}

impl Datapath {
    /// The sequence state a drained TCP flow carries into the next
    /// generation (None: the flow has none).
    pub(crate) fn seq_slot(k: &FlowKey, v: &FlowStats) -> Option<(u64, SeqSlot)> {
        if v.counts.seq_valid & 1 == 0 {
            return None;
        }
        let hash = seq_hash(k);
        Some((
            hash,
            SeqSlot {
                tag: seq_tag(hash) | SEQ_TAG_VALID,
                seq_next: v.seq_next,
                ts_last: v.ts_last,
            },
        ))
    }

    /// Carries each TCP flow's sequence state into the next generation:
    /// puts it in its bucket (the flow's slot, else a free one, else the
    /// least recently written), writes the buckets changed at this drain
    /// and the last into the `TCP_SEQ_*` array the programs do not read
    /// (since the wait in `drain`, no program can still be reading it) and
    /// switches the programs over to it.
    pub(crate) fn carry_seq(&mut self, seq_now: Vec<(u64, SeqSlot)>) -> Result<(), LoadError> {
        if seq_now.is_empty() && self.seq.dirty.is_empty() {
            return Ok(());
        }
        if self.seq.mirror.is_empty() {
            self.seq.mirror = vec![SeqBucket::default(); SEQ_BUCKETS as usize];
            self.seq.written = vec![[0; SEQ_WAYS]; SEQ_BUCKETS as usize];
        }
        self.seq.drains = self.seq.drains.wrapping_add(1);
        let mut dirty = Vec::with_capacity(seq_now.len());
        for (hash, slot) in seq_now {
            let b = seq_bucket(hash) as usize;
            let bucket = &mut self.seq.mirror[b].slots;
            let written = &mut self.seq.written[b];
            let tag = seq_tag(hash);
            let i = (0..SEQ_WAYS)
                .find(|&i| bucket[i].tag & !SEQ_TAG_VALID == tag)
                .or_else(|| (0..SEQ_WAYS).find(|&i| bucket[i].tag == 0))
                .unwrap_or_else(|| {
                    (0..SEQ_WAYS)
                        .max_by_key(|&i| self.seq.drains.wrapping_sub(written[i]))
                        .unwrap_or(0)
                });
            bucket[i] = slot;
            written[i] = self.seq.drains;
            dirty.push(b as u32);
        }
        dirty.sort_unstable();
        dirty.dedup();
        let mut idx: Vec<u32> = self.seq.dirty.iter().chain(dirty.iter()).copied().collect();
        idx.sort_unstable();
        idx.dedup();
        let buckets: Vec<SeqBucket> = idx.iter().map(|&b| self.seq.mirror[b as usize]).collect();
        let next = 1 - self.seq.generation;
        let name = if next == 0 {
            maps::TCP_SEQ_0
        } else {
            maps::TCP_SEQ_1
        };
        match self.ebpf.map(name) {
            Some(Map::Array(data)) => sys::update_batch(data.fd().as_fd(), name, &idx, &buckets)?,
            _ => return Err(LoadError::MissingMap(name)),
        }
        self.seq.generation = next;
        self.seq.dirty = dirty;
        self.write_control()
    }
}
