//! Loads the embedded eBPF object, attaches it to interfaces (XDP ingress,
//! TC egress) and hands out the maps. Dropping a [`Datapath`] detaches every
//! program it attached.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd, BorrowedFd},
};

use aya::{
    Ebpf, EbpfLoader, include_bytes_aligned,
    maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode, tc::SchedClassifierLinkId,
        xdp::XdpLinkId,
    },
};
use flowd_common::{
    Control, FlowKey, FlowStats, IfaceCounters, MAX_SLOTS, SLOT_ARRAY_LEN, maps, programs,
    totals_index,
};
use thiserror::Error;
use tracing::{info, warn};

use crate::sys::{self, ProgramWait, SysError};

/// The eBPF object, built by build.rs from flowd-ebpf.
pub static EBPF_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowd"));

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
    #[error("no free counter slot for `{0}`: flowd monitors at most 255 interfaces")]
    NoSlot(String),
    #[error(transparent)]
    Sys(#[from] SysError),
}

/// How a program is attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAttachMode {
    Native,
    Generic,
}

impl XdpAttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }
}

/// One monitored interface.
#[derive(Debug)]
pub struct Attached {
    pub name: String,
    pub ifindex: u32,
    pub slot: u32,
    pub xdp: Option<(XdpLinkId, XdpAttachMode)>,
    pub tc: Option<SchedClassifierLinkId>,
}

/// The loaded programs and maps.
pub struct Datapath {
    ebpf: Ebpf,
    wait: ProgramWait,
    active_gen: u32,
    capacity: u32,
    pub interfaces: BTreeMap<u32, Attached>,
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
    /// Loads the object with `capacity` flows per generation map and loads
    /// both programs into the kernel (nothing is attached yet).
    pub fn load(capacity: u32) -> Result<Self, LoadError> {
        raise_memlock();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(maps::FLOWS_0, capacity)
            .map_max_entries(maps::FLOWS_1, capacity)
            .load(EBPF_OBJECT)
            .map_err(LoadError::Object)?;
        let xdp: &mut Xdp = program(&mut ebpf, programs::INGRESS)?;
        xdp.load().map_err(|source| LoadError::Program {
            program: programs::INGRESS,
            source,
        })?;
        let tc: &mut SchedClassifier = program(&mut ebpf, programs::EGRESS)?;
        tc.load().map_err(|source| LoadError::Program {
            program: programs::EGRESS,
            source,
        })?;
        let mut dp = Self {
            ebpf,
            wait: ProgramWait::new()?,
            active_gen: 0,
            capacity,
            interfaces: BTreeMap::new(),
        };
        dp.set_active_gen(0)?;
        Ok(dp)
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Attaches XDP (ingress) and TC (egress) to `iface`.
    pub fn attach(
        &mut self,
        iface: &str,
        xdp_mode: Option<XdpAttachMode>,
    ) -> Result<(), LoadError> {
        let ifindex = ifindex(iface).ok_or_else(|| LoadError::NoSuchInterface(iface.into()))?;
        if self.interfaces.contains_key(&ifindex) {
            return Ok(());
        }
        let slot = self
            .free_slot()
            .ok_or_else(|| LoadError::NoSlot(iface.into()))?;
        self.set_slot(ifindex, slot)?;
        let xdp = self.attach_xdp(iface, ifindex, xdp_mode)?;
        let tc = match self.attach_tc(iface) {
            Ok(id) => id,
            Err(e) => {
                let prog: &mut Xdp = program(&mut self.ebpf, programs::INGRESS)?;
                let _ = prog.detach(xdp.0);
                return Err(e);
            }
        };
        info!(
            iface,
            ifindex,
            xdp_mode = xdp.1.as_str(),
            "attached: XDP ingress and TC egress"
        );
        self.interfaces.insert(
            ifindex,
            Attached {
                name: iface.into(),
                ifindex,
                slot,
                xdp: Some(xdp),
                tc: Some(tc),
            },
        );
        Ok(())
    }

    fn attach_xdp(
        &mut self,
        iface: &str,
        ifindex: u32,
        mode: Option<XdpAttachMode>,
    ) -> Result<(XdpLinkId, XdpAttachMode), LoadError> {
        let prog: &mut Xdp = program(&mut self.ebpf, programs::INGRESS)?;
        let err = |source| LoadError::Attach {
            hook: "XDP",
            iface: iface.into(),
            source,
        };
        match mode {
            Some(XdpAttachMode::Generic) => prog
                .attach_to_if_index(ifindex, XdpMode::Skb)
                .map(|id| (id, XdpAttachMode::Generic))
                .map_err(err),
            Some(XdpAttachMode::Native) => prog
                .attach_to_if_index(ifindex, XdpMode::Driver)
                .map(|id| (id, XdpAttachMode::Native))
                .map_err(err),
            None => match prog.attach_to_if_index(ifindex, XdpMode::Driver) {
                Ok(id) => Ok((id, XdpAttachMode::Native)),
                Err(e) => {
                    warn!(iface, error = %e, "native XDP not available, falling back to generic (skb) mode");
                    prog.attach_to_if_index(ifindex, XdpMode::Skb)
                        .map(|id| (id, XdpAttachMode::Generic))
                        .map_err(err)
                }
            },
        }
    }

    fn attach_tc(&mut self, iface: &str) -> Result<SchedClassifierLinkId, LoadError> {
        // aya uses tcx on kernels >= 6.6; older kernels need a clsact qdisc.
        let prog: &mut SchedClassifier = program(&mut self.ebpf, programs::EGRESS)?;
        let first = prog.attach(iface, TcAttachType::Egress);
        let result = match first {
            Ok(id) => Ok(id),
            Err(_) => {
                let _ = aya::programs::tc::qdisc_add_clsact(iface);
                prog.attach(iface, TcAttachType::Egress)
            }
        };
        result.map_err(|source| LoadError::Attach {
            hook: "TC egress",
            iface: iface.into(),
            source,
        })
    }

    /// Detaches both programs from the interface with this ifindex. An
    /// interface that is already gone is not an error.
    pub fn detach(&mut self, ifindex: u32) {
        let Some(a) = self.interfaces.remove(&ifindex) else {
            return;
        };
        if let Some((id, _)) = a.xdp
            && let Ok(prog) = program::<Xdp>(&mut self.ebpf, programs::INGRESS)
        {
            let _ = prog.detach(id);
        }
        if let Some(id) = a.tc
            && let Ok(prog) = program::<SchedClassifier>(&mut self.ebpf, programs::EGRESS)
        {
            let _ = prog.detach(id);
        }
        info!(iface = a.name, ifindex, "detached");
    }

    pub fn detach_all(&mut self) {
        let all: Vec<u32> = self.interfaces.keys().copied().collect();
        for ifindex in all {
            self.detach(ifindex);
        }
    }

    fn free_slot(&self) -> Option<u32> {
        (1..MAX_SLOTS).find(|s| self.interfaces.values().all(|a| a.slot != *s))
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

    /// Exact counters of one slot and direction, summed over CPUs.
    pub fn totals(&self, slot: u32, direction: u8) -> Result<IfaceCounters, LoadError> {
        let map = self
            .ebpf
            .map(maps::TOTALS)
            .ok_or(LoadError::MissingMap(maps::TOTALS))?;
        let totals: PerCpuArray<&MapData, IfaceCounters> =
            PerCpuArray::try_from(map).map_err(|source| LoadError::Map {
                map: maps::TOTALS,
                source,
            })?;
        let per_cpu = totals
            .get(&totals_index(slot, direction), 0)
            .map_err(|source| LoadError::Map {
                map: maps::TOTALS,
                source,
            })?;
        let mut sum = IfaceCounters::default();
        for c in per_cpu.iter() {
            sum.add(c);
        }
        Ok(sum)
    }

    fn set_active_gen(&mut self, generation: u32) -> Result<(), LoadError> {
        let mut control: Array<&mut MapData, Control> = typed_map(&mut self.ebpf, maps::CONTROL)?;
        control
            .set(
                0,
                Control {
                    active_gen: generation,
                    flags: 0,
                },
                0,
            )
            .map_err(|source| LoadError::Map {
                map: maps::CONTROL,
                source,
            })?;
        self.active_gen = generation;
        Ok(())
    }

    fn flow_map_fd(&self, generation: u32) -> Result<(&'static str, BorrowedFd<'_>), LoadError> {
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

    /// One drain: flip the generation, wait out programs still writing to the
    /// old one, then read and delete all of it. Returns the entries drained.
    pub fn drain(&mut self, sink: impl FnMut(&FlowKey, &FlowStats)) -> Result<usize, LoadError> {
        let old = self.active_gen;
        self.set_active_gen(1 - old)?;
        self.wait.wait()?;
        let (name, fd) = self.flow_map_fd(old)?;
        Ok(sys::drain_hash(fd, name, DRAIN_BATCH, sink)?)
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

    /// The ingress program's fd, for `BPF_PROG_TEST_RUN`.
    pub fn ingress_fd(&self) -> Result<BorrowedFd<'_>, LoadError> {
        let prog: &Xdp = self
            .ebpf
            .program(programs::INGRESS)
            .ok_or(LoadError::MissingMap(programs::INGRESS))?
            .try_into()
            .map_err(|source| LoadError::Program {
                program: programs::INGRESS,
                source,
            })?;
        prog.fd()
            .map(|fd| fd.as_fd())
            .map_err(|source| LoadError::Program {
                program: programs::INGRESS,
                source,
            })
    }

    /// The egress program's fd, for `BPF_PROG_TEST_RUN`.
    pub fn egress_fd(&self) -> Result<BorrowedFd<'_>, LoadError> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(programs::EGRESS)
            .ok_or(LoadError::MissingMap(programs::EGRESS))?
            .try_into()
            .map_err(|source| LoadError::Program {
                program: programs::EGRESS,
                source,
            })?;
        prog.fd()
            .map(|fd| fd.as_fd())
            .map_err(|source| LoadError::Program {
                program: programs::EGRESS,
                source,
            })
    }
}

/// Entries per batch syscall.
const DRAIN_BATCH: usize = 8192;

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingMap(name))?
        .try_into()
        .map_err(|source| LoadError::Program {
            program: name,
            source,
        })
}

fn typed_map<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<&'a mut Map, Error = aya::maps::MapError>,
{
    let map = ebpf.map_mut(name).ok_or(LoadError::MissingMap(name))?;
    T::try_from(map).map_err(|source| LoadError::Map { map: name, source })
}

/// The ifindex of an interface by name, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it there.
fn raise_memlock() {
    let r = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) };
}
