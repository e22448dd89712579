//! The eBPF object through the verifier: its maps created (or reused from
//! pins), the programs loaded, nothing attached; and the programs' file
//! descriptors for test runs.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd, BorrowedFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader, include_bytes_aligned,
    maps::{Array, Map, MapData, RingBuf},
    programs::{SchedClassifier, Xdp},
};
use flowd_common::{Control, FLAG_RTT, maps, programs};
use tracing::warn;

use super::{Datapath, LoadError, program, seq::SeqCarry, typed_map_ref};
use crate::sys;

/// The eBPF object, built by build.rs from flowd-ebpf.
pub static EBPF_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowd"));

/// The replay driver (flowd-ebpf `replay.rs`): runs the ingress program's
/// per-frame code on each frame of a batch in one `BPF_PROG_TEST_RUN`.
pub const REPLAY_PROGRAM: &str = "flowd_replay";

/// Which programs a load puts through the verifier (the maps are always
/// created). Verifying costs most of a load: a replay loads only what it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Programs {
    /// `flowd_ingress` (XDP).
    pub ingress: bool,
    /// `flowd_egress` (TC).
    pub egress: bool,
    /// [`REPLAY_PROGRAM`] (XDP, test runs only).
    pub replay: bool,
}

impl Programs {
    /// What the daemon attaches.
    pub const LIVE: Self = Self {
        ingress: true,
        egress: true,
        replay: false,
    };
}

impl Datapath {
    /// Loads the object with `capacity` flows per generation map and loads
    /// both programs into the kernel (nothing is attached, nothing pinned).
    pub fn load(capacity: u32) -> Result<Self, LoadError> {
        Self::load_inner(capacity, None, Programs::LIVE)
    }

    /// Loads the object with `capacity` flows per generation map and only
    /// the `programs` given (for test runs: a replay attaches nothing).
    pub fn load_programs(capacity: u32, programs: Programs) -> Result<Self, LoadError> {
        Self::load_inner(capacity, None, programs)
    }

    pub(super) fn load_inner(
        capacity: u32,
        pin_dir: Option<PathBuf>,
        load: Programs,
    ) -> Result<Self, LoadError> {
        raise_memlock();
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(maps::FLOWS_0, capacity)
            .map_max_entries(maps::FLOWS_1, capacity);
        if let Some(dir) = &pin_dir {
            for name in maps::ALL {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(LoadError::Object)?;
        let kernel_log = super::kernel_log::open(&mut ebpf);
        if let Some(dir) = &pin_dir {
            check_layout(&ebpf, capacity, dir)?;
        }
        for (wanted, name) in [
            (load.ingress, programs::INGRESS),
            (load.replay, REPLAY_PROGRAM),
        ] {
            if wanted {
                let xdp: &mut Xdp = program(&mut ebpf, name)?;
                xdp.load().map_err(|source| LoadError::Program {
                    program: name,
                    source,
                })?;
            }
        }
        if load.egress {
            let tc: &mut SchedClassifier = program(&mut ebpf, programs::EGRESS)?;
            tc.load().map_err(|source| LoadError::Program {
                program: programs::EGRESS,
                source,
            })?;
        }
        let rtt_events = ebpf
            .take_map(maps::RTT_EVENTS)
            .map(RingBuf::try_from)
            .transpose()
            .map_err(|source| LoadError::Map {
                map: maps::RTT_EVENTS,
                source,
            })?;
        let l7_events = ebpf
            .take_map(maps::L7_EVENTS)
            .map(RingBuf::try_from)
            .transpose()
            .map_err(|source| LoadError::Map {
                map: maps::L7_EVENTS,
                source,
            })?;
        let jiffy = match sys::jiffy_clock() {
            Ok(Some(j)) => Some(j),
            Ok(None) => {
                warn!("could not measure the kernel tick; live timestamps use the coarse clock");
                None
            }
            Err(e) => {
                warn!(error = %e, "could not measure the kernel tick; live timestamps use the coarse clock");
                None
            }
        };
        let mut dp = Self {
            ebpf,
            active_gen: 0,
            capacity,
            pin_dir,
            interfaces: BTreeMap::new(),
            slots: BTreeMap::new(),
            flags: FLAG_RTT,
            l7_dns_ports: [0; 2],
            rtt_events,
            l7_events,
            jiffy,
            seq: SeqCarry::default(),
            kernel_log,
            drops: None,
        };
        if dp.pin_dir.is_some() {
            // Programs of an earlier flowd may still write to either generation.
            let control: Array<&MapData, Control> = typed_map_ref(&dp.ebpf, maps::CONTROL)?;
            if let Ok(c) = control.get(&0, 0) {
                dp.active_gen = c.active_gen & 1;
                dp.seq.generation = c.seq_gen & 1;
            }
        }
        let g = dp.active_gen;
        dp.set_active_gen(g)?;
        Ok(dp)
    }

    /// The ingress program's fd, for `BPF_PROG_TEST_RUN`.
    pub fn ingress_fd(&self) -> Result<BorrowedFd<'_>, LoadError> {
        self.xdp_fd(programs::INGRESS)
    }

    /// The replay driver's fd (loaded with [`Programs::replay`]).
    pub fn replay_fd(&self) -> Result<BorrowedFd<'_>, LoadError> {
        self.xdp_fd(REPLAY_PROGRAM)
    }

    pub(super) fn xdp_fd(&self, name: &'static str) -> Result<BorrowedFd<'_>, LoadError> {
        let prog: &Xdp = self
            .ebpf
            .program(name)
            .ok_or(LoadError::MissingProgram(name))?
            .try_into()
            .map_err(|source| LoadError::Program {
                program: name,
                source,
            })?;
        prog.fd()
            .map(|fd| fd.as_fd())
            .map_err(|source| LoadError::Program {
                program: name,
                source,
            })
    }

    /// The egress program's fd, for `BPF_PROG_TEST_RUN`.
    pub fn egress_fd(&self) -> Result<BorrowedFd<'_>, LoadError> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(programs::EGRESS)
            .ok_or(LoadError::MissingProgram(programs::EGRESS))?
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

/// Pinned maps reused from an earlier flowd must have this build's layout.
fn check_layout(ebpf: &Ebpf, capacity: u32, dir: &Path) -> Result<(), LoadError> {
    use flowd_common::{FlowKey, FlowStats, IfaceCounters};
    let expect: [(&str, usize, usize); 2] = [
        (maps::FLOWS_0, size_of::<FlowKey>(), size_of::<FlowStats>()),
        (maps::TOTALS, 4, size_of::<IfaceCounters>()),
    ];
    for (name, key, value) in expect {
        let Some(map) = ebpf.map(name) else {
            continue;
        };
        let data = match map {
            Map::HashMap(d) | Map::PerCpuArray(d) => d,
            _ => continue,
        };
        let info = data.info().map_err(|e| LoadError::Pin {
            path: dir.display().to_string(),
            reason: format!("reading map info of {name}: {e}"),
        })?;
        if info.key_size() as usize != key || info.value_size() as usize != value {
            return Err(LoadError::Pin {
                path: dir.display().to_string(),
                reason: format!(
                    "layout of {name} differs (key {} value {})",
                    info.key_size(),
                    info.value_size()
                ),
            });
        }
        if name == maps::FLOWS_0 && info.max_entries() != capacity {
            warn!(
                pinned = info.max_entries(),
                configured = capacity,
                "flow_capacity differs from the pinned maps; keeping the pinned size (a restart after removing the pins applies it)"
            );
        }
    }
    Ok(())
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
