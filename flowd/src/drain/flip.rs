//! The kernel half of a drain: flip the generation the programs write to,
//! wait out the grace period, then batch-read the old generation, carry
//! its TCP sequence state over and delete it.
//!
//! ```text
//!   CONTROL.active_gen = 1 - G        programs now write FLOWS_{1-G}
//!   grace period (synchronize_rcu)    every program that still saw G has returned:
//!                                     FLOWS_G is final
//!   lookup FLOWS_G (batch)            each delta reaches user space exactly once
//!   TCP_SEQ_* <- sequence state       retransmission detection spans the flip
//!   lookup-and-delete FLOWS_G         until now a new entry in FLOWS_{1-G} found
//!                                     its flow's sequence state in FLOWS_G
//!   GEN_INSERTS[G] = 0                the fill of G starts again from zero
//! ```

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    sync::OnceLock,
};

use flowd_common::{FlowKey, FlowStats, SeqSlot};

use super::batch::{DRAIN_BATCH, drain_hash, read_hash};
use crate::{
    loader::{Datapath, LoadError},
    sys::{Attr, SysError, bpf},
};

impl Datapath {
    /// One drain: flip the generation, wait out programs still writing to the
    /// old one, then read all of it, carry its TCP sequence state and delete
    /// it. Returns the entries drained.
    pub fn drain(
        &mut self,
        mut sink: impl FnMut(&FlowKey, &FlowStats),
    ) -> Result<usize, LoadError> {
        let old = self.active_gen();
        self.set_active_gen(1 - old)?;
        if self.may_have_writers() {
            grace_period()?;
        }
        // Read first, delete after the carry: a TCP flow's entry stays in
        // the old generation, where a new entry in the active one finds its
        // sequence state (`update_flow`), until the carry holds that state.
        // The old generation is final after the wait, so the read is exact.
        let (name, fd) = self.flow_map_fd(old)?;
        let mut seq_now: Vec<(u64, SeqSlot)> = Vec::new();
        let mut read = 0;
        let read_result = read_hash(
            fd,
            name,
            DRAIN_BATCH,
            |keys: &[FlowKey], values: &[FlowStats]| {
                for (k, v) in keys.iter().zip(values) {
                    if let Some(s) = Datapath::seq_slot(k, v) {
                        seq_now.push(s);
                    }
                    sink(k, v);
                }
                read += keys.len();
                Ok(())
            },
        );
        // Also after a failed read: what was read has its carry.
        let carried = self.carry_seq(seq_now);
        // The delete walks the final map in the read's order: its first
        // `read` entries reached `sink`, any after them (a read that
        // failed part way) reach it now.
        let (name, fd) = self.flow_map_fd(old)?;
        let mut seen = 0;
        let n = drain_hash(fd, name, DRAIN_BATCH, |k: &FlowKey, v: &FlowStats| {
            seen += 1;
            if seen > read {
                sink(k, v);
            }
        })?;
        read_result?;
        carried?;
        self.reset_inserts(old)?;
        Ok(n)
    }

    /// Drains both generations (at start-up and shutdown: nothing is
    /// left behind in either).
    pub fn drain_all(
        &mut self,
        mut sink: impl FnMut(&FlowKey, &FlowStats),
    ) -> Result<usize, LoadError> {
        let a = self.drain(&mut sink)?;
        let b = self.drain(&mut sink)?;
        Ok(a + b)
    }
}

/// Returns once every program that was running when it was called has
/// finished: after a flip, the old generation sees no more writes.
pub fn grace_period() -> Result<(), SysError> {
    static WAIT: OnceLock<ProgramWait> = OnceLock::new();
    let w = match WAIT.get() {
        Some(w) => w,
        None => {
            // Two threads may both make one; one of them is kept.
            let new = ProgramWait::new()?;
            WAIT.get_or_init(|| new)
        }
    };
    w.wait()
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// Waits until every BPF program that was running when `wait` was called
/// has finished.
///
/// Why this is enough for the generation flip: XDP and TC programs run
/// inside an RCU read-side section (softirq / rcu_read_lock). An update of a
/// map-in-map makes the kernel call `synchronize_rcu()` before the syscall
/// returns (`maybe_wait_bpf_programs`), so that user space knows no program
/// still uses the old inner map. A program that read the old generation
/// number before our flip is in such a section; once `wait` returns it has
/// finished its update, and the old generation sees no more writes.
struct ProgramWait {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl ProgramWait {
    fn new() -> Result<Self, SysError> {
        let inner = map_create(BPF_MAP_TYPE_ARRAY, 4, 4, 1, None).map_err(SysError::Wait)?;
        let outer = map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, 1, Some(inner.as_fd()))
            .map_err(SysError::Wait)?;
        Ok(Self { outer, inner })
    }

    fn wait(&self) -> Result<(), SysError> {
        let key: u32 = 0;
        let value: u32 = self.inner.as_raw_fd() as u32;
        let mut attr = Attr::default();
        attr.words[0] = self.outer.as_raw_fd() as u64;
        attr.words[1] = &raw const key as u64;
        attr.words[2] = &raw const value as u64;
        attr.words[3] = 0; // BPF_ANY
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
            .map(drop)
            .map_err(|source| SysError::Map {
                cmd: "BPF_MAP_UPDATE_ELEM",
                map: "program-wait ARRAY_OF_MAPS".into(),
                source,
            })
    }
}

fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    inner: Option<BorrowedFd<'_>>,
) -> io::Result<OwnedFd> {
    let mut attr = Attr::default();
    attr.words[0] = map_type as u64 | ((key_size as u64) << 32);
    attr.words[1] = value_size as u64 | ((max_entries as u64) << 32);
    // map_flags (u32) then inner_map_fd (u32).
    attr.words[2] = inner.map_or(0, |fd| (fd.as_raw_fd() as u64) << 32);
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
