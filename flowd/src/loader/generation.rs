//! `CONTROL`: which of the two flow maps (generations) the programs write
//! to, with their flags and clock; and how full that generation is. The
//! drain ([`crate::drain`]) flips between them.

use std::os::fd::{AsFd, BorrowedFd};

use aya::maps::{Array, Map, MapData, PerCpuArray};
use flowd_common::{Control, maps};

use super::{Datapath, LoadError, typed_map};
use crate::sys::{self, JiffyClock};

impl Datapath {
    /// The generation the programs write to.
    pub(crate) fn active_gen(&self) -> u32 {
        self.active_gen
    }

    /// Whether a program may be running on the flow maps: one is attached,
    /// or (with pins) an earlier flowd's may be. A replay runs its programs
    /// only inside test runs, which have returned by the time it drains.
    pub(crate) fn may_have_writers(&self) -> bool {
        !self.interfaces.is_empty() || self.pin_dir.is_some()
    }

    /// Switches the programs to write `generation` (0 or 1).
    pub(crate) fn set_active_gen(&mut self, generation: u32) -> Result<(), LoadError> {
        self.active_gen = generation;
        self.write_control()
    }

    /// Writes every field of `CONTROL` from this Datapath's state.
    pub(super) fn write_control(&mut self) -> Result<(), LoadError> {
        let c = Control {
            active_gen: self.active_gen,
            flags: self.flags,
            jiffy_ns: self.jiffy.map_or(0, |j| j.tick_ns),
            jiffy_base_ns: self.jiffy.map_or(0, |j| j.base_ns),
            seq_gen: self.seq.generation,
            l7_dns_ports: self.l7_dns_ports,
        };
        let mut control: Array<&mut MapData, Control> = typed_map(&mut self.ebpf, maps::CONTROL)?;
        control.set(0, c, 0).map_err(|source| LoadError::Map {
            map: maps::CONTROL,
            source,
        })
    }

    /// The flow map of `generation`, with its name.
    pub(crate) fn flow_map_fd(
        &self,
        generation: u32,
    ) -> Result<(&'static str, BorrowedFd<'_>), LoadError> {
        let name = if generation == 0 {
            maps::FLOWS_0
        } else {
            maps::FLOWS_1
        };
        match self.ebpf.map(name) {
            Some(Map::HashMap(data)) => Ok((name, data.fd().as_fd())),
            _ => Err(LoadError::MissingMap(name)),
        }
    }

    /// Flows the programs inserted into the generation they write to since
    /// it was last drained: how full it is (summed over CPUs).
    pub fn active_inserts(&self) -> Result<u64, LoadError> {
        let per_cpu = self.per_cpu::<u64>(maps::GEN_INSERTS, self.active_gen)?;
        Ok(per_cpu.iter().fold(0u64, |a, b| a.wrapping_add(*b)))
    }

    /// Zeroes a drained generation's insert count (after the wait in
    /// `drain`, no program can still add to it).
    pub(crate) fn reset_inserts(&mut self, generation: u32) -> Result<(), LoadError> {
        let mut counts: PerCpuArray<&mut MapData, u64> =
            typed_map(&mut self.ebpf, maps::GEN_INSERTS)?;
        let err = |call: &'static str, io_error| LoadError::Map {
            map: maps::GEN_INSERTS,
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError { call, io_error }),
        };
        let cpus = sys::possible_cpus().map_err(|e| err("nr_cpus", e))?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![0u64; cpus])
            .map_err(|e| err("per-cpu values", e))?;
        counts
            .set(generation, zeros, 0)
            .map_err(|source| LoadError::Map {
                map: maps::GEN_INSERTS,
                source,
            })
    }

    /// Jiffies -> monotonic ns as measured at load (None: the programs use
    /// the coarse clock).
    pub fn jiffy_clock(&self) -> Option<JiffyClock> {
        self.jiffy
    }
}
