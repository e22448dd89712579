//! Each interface's counter slot (the programs map ifindex -> slot) and the
//! exact per-slot totals the programs keep.

use std::collections::BTreeMap;

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use flowd_common::{IfaceCounters, MAX_SLOTS, SLOT_ARRAY_LEN, maps, totals_index};

use super::{Datapath, LoadError, typed_map, typed_map_ref};

impl Datapath {
    /// The interface's counter slot: the one it had (by name in this run,
    /// or by ifindex in the pinned slot map), else a free one.
    pub(super) fn slot_for(&self, iface: &str, ifindex: u32) -> Result<u32, LoadError> {
        if let Some(s) = self.slots.get(iface) {
            return Ok(*s);
        }
        if self.pin_dir.is_some()
            && let Some(s) = self.pinned_slot(ifindex)
            && s != 0
            && !self.slots.values().any(|v| *v == s)
        {
            return Ok(s);
        }
        self.free_slot()
            .ok_or_else(|| LoadError::NoSlot(iface.into()))
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
