//! Each interface's counter slot (the programs map ifindex -> slot) and the
//! exact per-slot totals the programs keep.

use std::collections::BTreeMap;

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues};
use flowd_common::{
    DIR_EGRESS, DIR_INGRESS, IfaceCounters, MAX_SLOTS, SLOT_ARRAY_LEN, maps, totals_index,
};

use super::{Datapath, LoadError, typed_map, typed_map_ref};
use crate::sys;

impl Datapath {
    /// The interface's counter slot.
    ///
    /// - Seen in this run under this name: its slot, totals and all (a
    ///   process's series never go back).
    /// - Its pinned links `survived` (taken over): the slot the pinned map
    ///   gives its ifindex, whose totals the programs kept counting.
    /// - Otherwise it is attached fresh: the slot its ifindex had (nobody
    ///   else can count into it) or a free one, with its totals zeroed, so a
    ///   new interface never inherits the counts of an old one that had
    ///   the same ifindex.
    pub(super) fn slot_for(
        &mut self,
        iface: &str,
        ifindex: u32,
        survived: bool,
    ) -> Result<u32, LoadError> {
        if let Some(s) = self.slots.get(iface) {
            return Ok(*s);
        }
        let pinned = self
            .pin_dir
            .as_ref()
            .and_then(|_| self.pinned_slot(ifindex))
            .filter(|s| *s != 0 && !self.slots.values().any(|v| v == s));
        if survived && let Some(s) = pinned {
            return Ok(s);
        }
        let slot = pinned
            .or_else(|| self.free_slot())
            .ok_or_else(|| LoadError::NoSlot(iface.into()))?;
        self.zero_totals(slot)?;
        Ok(slot)
    }

    /// Zeroes both directions' totals of `slot`.
    fn zero_totals(&mut self, slot: u32) -> Result<(), LoadError> {
        let err = |call: &'static str, io_error| LoadError::Map {
            map: maps::TOTALS,
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError { call, io_error }),
        };
        let cpus = sys::possible_cpus().map_err(|e| err("nr_cpus", e))?;
        let mut totals: PerCpuArray<&mut MapData, IfaceCounters> =
            typed_map(&mut self.ebpf, maps::TOTALS)?;
        for direction in [DIR_INGRESS, DIR_EGRESS] {
            let zeros = PerCpuValues::try_from(vec![IfaceCounters::default(); cpus])
                .map_err(|e| err("per-cpu values", e))?;
            totals
                .set(totals_index(slot, direction), zeros, 0)
                .map_err(|source| LoadError::Map {
                    map: maps::TOTALS,
                    source,
                })?;
        }
        Ok(())
    }

    pub(super) fn pinned_slot(&self, ifindex: u32) -> Option<u32> {
        if ifindex < SLOT_ARRAY_LEN {
            let a: Array<&MapData, u32> = typed_map_ref(&self.ebpf, maps::IFACE_SLOTS).ok()?;
            a.get(&ifindex, 0).ok()
        } else {
            let h: BpfHashMap<&MapData, u32, u32> =
                typed_map_ref(&self.ebpf, maps::IFACE_SLOTS_BIG).ok()?;
            h.get(&ifindex, 0).ok()
        }
    }

    pub(super) fn free_slot(&self) -> Option<u32> {
        let pinned_used = |s: u32| -> bool {
            // With pins, a slot another interface used before a restart
            // still holds its totals: skip slots that have counts.
            self.pin_dir.is_some()
                && [0, 1].iter().any(|d| {
                    self.totals(s, *d)
                        .map(|c| c.c[flowd_common::counter::PACKETS] > 0)
                        .unwrap_or(false)
                })
        };
        (1..MAX_SLOTS).find(|s| !self.slots.values().any(|v| v == s) && !pinned_used(*s))
    }

    /// Maps an ifindex to a counter slot in the kernel (0 = unassigned).
    pub fn set_slot(&mut self, ifindex: u32, slot: u32) -> Result<(), LoadError> {
        self.set_drop_iface(ifindex, slot)?;
        if ifindex < SLOT_ARRAY_LEN {
            let mut slots: Array<&mut MapData, u32> = typed_map(&mut self.ebpf, maps::IFACE_SLOTS)?;
            slots
                .set(ifindex, slot, 0)
                .map_err(|source| LoadError::Map {
                    map: maps::IFACE_SLOTS,
                    source,
                })
        } else {
            let mut slots: BpfHashMap<&mut MapData, u32, u32> =
                typed_map(&mut self.ebpf, maps::IFACE_SLOTS_BIG)?;
            slots
                .insert(ifindex, slot, 0)
                .map_err(|source| LoadError::Map {
                    map: maps::IFACE_SLOTS_BIG,
                    source,
                })
        }
    }

    /// Slot of every interface name seen in this run.
    pub fn slots(&self) -> &BTreeMap<String, u32> {
        &self.slots
    }

    /// Exact counters of one slot and direction, summed over CPUs.
    pub fn totals(&self, slot: u32, direction: u8) -> Result<IfaceCounters, LoadError> {
        let per_cpu = self.per_cpu::<IfaceCounters>(maps::TOTALS, totals_index(slot, direction))?;
        let mut sum = IfaceCounters::default();
        for c in per_cpu.iter() {
            sum.add(c);
        }
        Ok(sum)
    }
}
