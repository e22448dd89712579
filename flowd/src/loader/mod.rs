//! Loads the embedded eBPF object, attaches it to interfaces (XDP ingress,
//! TC egress) and hands out the maps. Dropping a [`Datapath`] detaches every
//! program it attached.
//!
//! - `load.rs`: the object through the verifier, its maps created, the
//!   programs' file descriptors for test runs;
//! - `pin.rs`: maps and links pinned on bpffs, so a restart continues;
//! - `bpffs.rs`: the pin path's filesystem, checked (and mounted) first;
//! - `attach.rs`: XDP ingress and TC egress on each interface, taking over
//!   the links an earlier flowd pinned;
//! - `slots.rs`: each interface's counter slot and its exact totals;
//! - `generation.rs`: `CONTROL`, which flow map generation the programs
//!   write, and how full it is;
//! - `seq.rs`: TCP sequence state carried from one generation to the next;
//! - `rtt.rs`: the ring of RTT samples;
//! - `kernel_log.rs`: the programs' rate-limited log of rare events;
//! - `afxdp.rs`: the AF_XDP program, its socket map and counts;
//! - `drops.rs`: the `kfree_skb` drop tracer (issue 14).
//!
//! The drain (flip, grace period, batch read) is [`crate::drain`].

mod afxdp;
mod attach;
mod bpffs;
mod drops;
mod generation;
mod kernel_log;
mod l7;
mod load;
mod pin;
mod rtt;
mod seq;
mod slots;

use std::{collections::BTreeMap, path::PathBuf};

use aya::{
    Ebpf,
    maps::{Map, MapData, PerCpuArray, RingBuf},
    programs::ProgramError,
};
use thiserror::Error;

pub use self::{
    afxdp::AfXdpLink,
    attach::{Attached, Hold, XdpAttachMode, ifindex},
    bpffs::{BPFFS_MOUNT_POINT, PinRoot, check_pin_root},
    drops::{DropTotal, DropTracer, own_netns},
    l7::{drain_l7_ring, l7_packet},
    load::{EBPF_OBJECT, Programs, REPLAY_PROGRAM},
    pin::PIN_MARKER,
};
use crate::sys::{JiffyClock, SysError};

/// Why loading, pinning or attaching failed; each names the map, program,
/// interface or path.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error(
        "loading the eBPF object failed: {0} (flowd needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON; run `flowd check`)"
    )]
    Object(#[source] aya::EbpfError),
    #[error("loading program `{program}` into the kernel failed: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map `{0}` is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("program `{0}` is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("map `{map}`: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("interface `{0}` does not exist (`ip link` lists the interfaces)")]
    NoSuchInterface(String),
    #[error("attaching {hook} to `{iface}` failed: {source}")]
    Attach {
        hook: &'static str,
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error(
        "L7 DNS ports {0:?}: the programs take at most 2 besides 53 and 5353 (as `[l7] dns_ports` accepts)"
    )]
    L7DnsPorts([u16; 4]),
    #[error("no free counter slot for `{0}`: flowd monitors at most 255 interfaces")]
    NoSlot(String),
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error("duplicating the file descriptor of program `{program}` failed: {source}")]
    DupFd {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("drop tracer: {0}")]
    Drops(String),
    #[error("pin directory {path}: {reason}")]
    Pin { path: String, reason: String },
    #[error("{hook} link of `{iface}`: {reason}")]
    Link {
        hook: &'static str,
        iface: String,
        reason: String,
    },
}

/// The loaded programs and maps.
pub struct Datapath {
    ebpf: Ebpf,
    active_gen: u32,
    capacity: u32,
    /// `<pin_path>/v<ABI>` when maps and links are pinned.
    pin_dir: Option<PathBuf>,
    pub interfaces: BTreeMap<u32, Attached>,
    /// Counter slot per interface name: an interface that goes away and
    /// comes back keeps its slot, so its totals stay monotonic.
    slots: BTreeMap<String, u32>,
    /// `Control::flags` for the programs (FLAG_RTT, ...).
    flags: u32,
    /// `Control::l7_dns_ports` (with `FLAG_L7`).
    l7_dns_ports: [u16; 2],
    /// RTT samples from the programs.
    rtt_events: Option<RingBuf<MapData>>,
    /// L7 samples (selected packets' first payload bytes).
    l7_events: Option<RingBuf<MapData>>,
    /// Jiffies -> monotonic ns, for the programs' live timestamps.
    jiffy: Option<JiffyClock>,
    /// TCP sequence state this Datapath carries across generations.
    seq: seq::SeqCarry,
    /// The programs' log (must outlive them).
    kernel_log: Option<kernel_log::KernelLog>,
    /// The `kfree_skb` tracer, once `start_drops` attached it.
    drops: Option<DropTracer>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("active_gen", &self.active_gen)
            .field("capacity", &self.capacity)
            .field("interfaces", &self.interfaces)
            .finish_non_exhaustive()
    }
}

impl Datapath {
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Every CPU's value of entry `index` of the per-CPU array `name`.
    fn per_cpu<T: aya::Pod>(
        &self,
        name: &'static str,
        index: u32,
    ) -> Result<aya::maps::PerCpuValues<T>, LoadError> {
        let map = self.ebpf.map(name).ok_or(LoadError::MissingMap(name))?;
        let array: PerCpuArray<&MapData, T> =
            PerCpuArray::try_from(map).map_err(|source| LoadError::Map { map: name, source })?;
        array
            .get(&index, 0)
            .map_err(|source| LoadError::Map { map: name, source })
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|source| LoadError::Program {
            program: name,
            source,
        })
}

fn typed_map_ref<'a, T>(ebpf: &'a Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<&'a Map, Error = aya::maps::MapError>,
{
    let map = ebpf.map(name).ok_or(LoadError::MissingMap(name))?;
    T::try_from(map).map_err(|source| LoadError::Map { map: name, source })
}

fn typed_map<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<&'a mut Map, Error = aya::maps::MapError>,
{
    let map = ebpf.map_mut(name).ok_or(LoadError::MissingMap(name))?;
    T::try_from(map).map_err(|source| LoadError::Map { map: name, source })
}
