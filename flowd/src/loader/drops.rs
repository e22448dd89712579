//! The `kfree_skb` drop tracer (issue 14): loaded and attached on demand
//! (`[drops] enabled`), configured from the running kernel's BTF, told the
//! monitored interfaces by (netns inode, ifindex), and read per (slot,
//! reason). Its maps are not pinned: a restarted daemon starts its drop
//! counters afresh (they are process counters like the other
//! `_total`s of this run).

use std::os::unix::fs::MetadataExt;

use aya::{
    Btf as AyaBtf,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap},
    programs::BtfTracePoint,
};
use flowd_common::{
    drops::{DropConfig, DropCounts, DropIface, DropKey},
    maps, programs,
};

use super::{Datapath, LoadError, program, typed_map, typed_map_ref};
use crate::drops::{self, Btf, Reasons};

/// The tracer of a [`Datapath`], once started.
#[derive(Debug)]
pub struct DropTracer {
    pub reasons: Reasons,
}

/// Drops counted for one (slot, reason), summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropTotal {
    pub slot: u32,
    pub reason: u32,
    pub packets: u64,
    pub bytes: u64,
}

/// The inode of this process's network namespace (`ns.inum` in the kernel).
pub fn own_netns() -> std::io::Result<u32> {
    Ok(std::fs::metadata("/proc/self/ns/net")?.ino() as u32)
}

impl Datapath {
    /// Reads the reasons and offsets from the kernel's BTF, configures,
    /// loads and attaches the tracer, and registers the interfaces that
    /// already have slots.
    pub fn start_drops(&mut self) -> Result<(), LoadError> {
        let btf_err = |e: drops::BtfError| LoadError::Drops(e.to_string());
        let btf = Btf::from_sys_fs().map_err(btf_err)?;
        let reasons = Reasons::from_btf(&btf).map_err(btf_err)?;
        let cfg = drops::config(&btf, &reasons).map_err(btf_err)?;
        {
            let mut map: Array<&mut MapData, DropConfig> =
                typed_map(&mut self.ebpf, maps::DROP_CONFIG)?;
            map.set(0, cfg, 0).map_err(|source| LoadError::Map {
                map: maps::DROP_CONFIG,
                source,
            })?;
        }
        let kernel_btf = AyaBtf::from_sys_fs().map_err(|e| LoadError::Drops(e.to_string()))?;
        let tp: &mut BtfTracePoint = program(&mut self.ebpf, programs::DROPS)?;
        let prog_err = |source| LoadError::Program {
            program: programs::DROPS,
            source,
        };
        tp.load("kfree_skb", &kernel_btf).map_err(prog_err)?;
        tp.attach().map_err(prog_err)?;
        self.drops = Some(DropTracer { reasons });
        let slots: Vec<(u32, u32)> = self
            .interfaces
            .iter()
            .map(|(ifindex, a)| (*ifindex, self.slots.get(&a.name).copied().unwrap_or(0)))
            .filter(|(_, s)| *s != 0)
            .collect();
        for (ifindex, slot) in slots {
            self.set_drop_iface(ifindex, slot)?;
        }
        Ok(())
    }

    /// The tracer, when started.
    pub fn drop_tracer(&self) -> Option<&DropTracer> {
        self.drops.as_ref()
    }

    /// Attributes drops on `ifindex` of this namespace to `slot`.
    pub(super) fn set_drop_iface(&mut self, ifindex: u32, slot: u32) -> Result<(), LoadError> {
        if self.drops.is_none() {
            return Ok(());
        }
        let netns = own_netns().map_err(|e| {
            LoadError::Drops(format!(
                "reading /proc/self/ns/net (the namespace inode): {e}"
            ))
        })?;
        let mut map: BpfHashMap<&mut MapData, DropIface, u32> =
            typed_map(&mut self.ebpf, maps::DROP_IFACES)?;
        map.insert(DropIface { netns, ifindex }, slot, 0)
            .map_err(|source| LoadError::Map {
                map: maps::DROP_IFACES,
                source,
            })
    }

    /// Stops attributing drops on `ifindex` of this namespace (detached or
    /// gone: a later interface with the same ifindex is not ours).
    pub(super) fn unset_drop_iface(&mut self, ifindex: u32) {
        if self.drops.is_none() {
            return;
        }
        let Ok(netns) = own_netns() else { return };
        if let Ok(mut map) =
            typed_map::<BpfHashMap<&mut MapData, DropIface, u32>>(&mut self.ebpf, maps::DROP_IFACES)
        {
            // Absent already is fine.
            let _ = map.remove(&DropIface { netns, ifindex });
        }
    }

    /// Every (slot, reason) counted so far, summed over CPUs, and the drops
    /// that found the count map full (packets, bytes).
    pub fn drop_totals(&self) -> Result<(Vec<DropTotal>, DropCounts), LoadError> {
        let map: PerCpuHashMap<&MapData, DropKey, DropCounts> =
            typed_map_ref(&self.ebpf, maps::DROP_COUNTS)?;
        let mut out = Vec::new();
        for item in map.iter() {
            let (k, per_cpu) = item.map_err(|source| LoadError::Map {
                map: maps::DROP_COUNTS,
                source,
            })?;
            let (packets, bytes) = per_cpu
                .iter()
                .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes));
            out.push(DropTotal {
                slot: k.slot,
                reason: k.reason,
                packets,
                bytes,
            });
        }
        out.sort_by_key(|t| (t.slot, t.reason));
        let over: PerCpuArray<&MapData, DropCounts> =
            typed_map_ref(&self.ebpf, maps::DROP_OVERFLOW)?;
        let overflow = over
            .get(&0, 0)
            .map_err(|source| LoadError::Map {
                map: maps::DROP_OVERFLOW,
                source,
            })?
            .iter()
            .fold(DropCounts::default(), |a, c| DropCounts {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
            });
        Ok((out, overflow))
    }
}
