//! Loads the embedded eBPF object, attaches it to interfaces (XDP ingress,
//! TC egress) and hands out the maps. Dropping a [`Datapath`] detaches every
//! program it attached.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd, BorrowedFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader, include_bytes_aligned,
    maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray, RingBuf},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
use flowd_common::{
    ABI_VERSION, Control, FLAG_RTT, FlowKey, FlowStats, IfaceCounters, MAX_SLOTS, RttSample,
    SEQ_BUCKETS, SEQ_TAG_VALID, SEQ_WAYS, SLOT_ARRAY_LEN, SeqBucket, SeqSlot, maps, programs,
    seq_bucket, seq_hash, seq_tag, totals_index,
};
use thiserror::Error;
use tracing::{info, warn};

use crate::sys::{self, JiffyClock, SysError};

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
    #[error("pin directory {path}: {reason}")]
    Pin { path: String, reason: String },
    #[error("{hook} link of `{iface}`: {reason}")]
    Link {
        hook: &'static str,
        iface: String,
        reason: String,
    },
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

/// A program's attachment to an interface, owned by flowd.
#[derive(Debug)]
pub enum Hold {
    /// A bpf_link pinned in bpffs: it survives flowd (kill -9, upgrade).
    Pinned(PinnedLink, PathBuf),
    /// Attached without a pinnable link (netlink on old kernels, or no pin dir).
    Xdp(XdpLink),
    Tc(SchedClassifierLink),
}

impl Hold {
    /// Detaches: unpins, then drops the last reference.
    fn detach(self) {
        if let Self::Pinned(link, path) = self {
            match link.unpin() {
                Ok(fd) => drop(fd),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "unpinning a link failed");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        // Xdp/Tc links detach when dropped.
    }
}

/// One monitored interface.
#[derive(Debug)]
pub struct Attached {
    pub name: String,
    pub ifindex: u32,
    pub slot: u32,
    pub xdp_mode: XdpAttachMode,
    xdp: Option<Hold>,
    tc: Option<Hold>,
}

impl Attached {
    pub fn xdp_attached(&self) -> bool {
        self.xdp.is_some()
    }
    pub fn tc_attached(&self) -> bool {
        self.tc.is_some()
    }
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
    /// RTT samples from the programs.
    rtt_events: Option<RingBuf<MapData>>,
    /// Jiffies -> monotonic ns, for the programs' live timestamps.
    jiffy: Option<JiffyClock>,
    /// The `TCP_SEQ_*` array the programs read.
    seq_gen: u32,
    /// What the `TCP_SEQ_*` buckets hold (written by this Datapath), and
    /// the drain that wrote each slot (to evict the oldest of a full bucket).
    seq_mirror: Vec<SeqBucket>,
    seq_written: Vec<[u32; SEQ_WAYS]>,
    seq_drains: u32,
    /// Buckets written into `TCP_SEQ_<seq_gen>` at the last drain, which
    /// the other array does not have yet.
    seq_dirty: Vec<u32>,
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
    /// both programs into the kernel (nothing is attached, nothing pinned).
    pub fn load(capacity: u32) -> Result<Self, LoadError> {
        Self::load_inner(capacity, None, Programs::LIVE)
    }

    /// Loads the object with `capacity` flows per generation map and only
    /// the `programs` given (for test runs: a replay attaches nothing).
    pub fn load_programs(capacity: u32, programs: Programs) -> Result<Self, LoadError> {
        Self::load_inner(capacity, None, programs)
    }

    /// Like [`Datapath::load`], with every map pinned under
    /// `<pin_root>/v<ABI_VERSION>`: maps pinned by an earlier flowd of the
    /// same layout are reused (totals continue, leftover flows get drained);
    /// pins of another layout version are removed first.
    pub fn load_pinned(capacity: u32, pin_root: &Path) -> Result<Self, LoadError> {
        let pin_err = |reason: String| LoadError::Pin {
            path: pin_root.display().to_string(),
            reason,
        };
        let dir = pin_root.join(format!("v{ABI_VERSION}"));
        std::fs::create_dir_all(dir.join("links")).map_err(|e| pin_err(e.to_string()))?;
        if !is_bpffs(pin_root) {
            return Err(pin_err(
                "not on a bpf filesystem (mount it: `mount -t bpf bpf /sys/fs/bpf`; `cargo xtask setup` does)".into(),
            ));
        }
        for e in std::fs::read_dir(pin_root)
            .map_err(|e| pin_err(e.to_string()))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('v') && name != format!("v{ABI_VERSION}") {
                warn!(old = %e.path().display(), abi = ABI_VERSION, "removing pins of another map layout version");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        match Self::load_inner(capacity, Some(dir.clone()), Programs::LIVE) {
            Ok(dp) => Ok(dp),
            Err(LoadError::Pin { reason, .. }) if reason.starts_with("layout") => {
                warn!(dir = %dir.display(), %reason, "pinned maps do not match this build: resetting them");
                remove_map_pins(&dir);
                Self::load_inner(capacity, Some(dir), Programs::LIVE)
            }
            Err(e) => Err(e),
        }
    }

    fn load_inner(
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
            rtt_events,
            jiffy,
            seq_gen: 0,
            seq_mirror: Vec::new(),
            seq_written: Vec::new(),
            seq_drains: 0,
            seq_dirty: Vec::new(),
        };
        if dp.pin_dir.is_some() {
            // Programs of an earlier flowd may still write to either generation.
            let control: Array<&MapData, Control> = typed_map_ref(&dp.ebpf, maps::CONTROL)?;
            if let Ok(c) = control.get(&0, 0) {
                dp.active_gen = c.active_gen & 1;
                dp.seq_gen = c.seq_gen & 1;
            }
        }
        let g = dp.active_gen;
        dp.set_active_gen(g)?;
        Ok(dp)
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

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

    /// Attaches XDP (ingress) and TC (egress) to `iface`. With pinning, a
    /// link an earlier flowd pinned for this interface is taken over
    /// (the program is replaced atomically, no packet goes uncounted).
    pub fn attach(
        &mut self,
        iface: &str,
        xdp_mode: Option<XdpAttachMode>,
    ) -> Result<(), LoadError> {
        let ifindex = ifindex(iface).ok_or_else(|| LoadError::NoSuchInterface(iface.into()))?;
        if self.interfaces.contains_key(&ifindex) {
            return Ok(());
        }
        let slot = self.slot_for(iface, ifindex)?;
        self.set_slot(ifindex, slot)?;
        let (xdp, mode) = self.attach_xdp(iface, ifindex, xdp_mode)?;
        let tc = match self.attach_tc(iface, ifindex) {
            Ok(h) => h,
            Err(e) => {
                xdp.detach();
                return Err(e);
            }
        };
        info!(
            iface,
            ifindex,
            slot,
            xdp_mode = mode.as_str(),
            "attached: XDP ingress and TC egress"
        );
        self.slots.insert(iface.into(), slot);
        self.interfaces.insert(
            ifindex,
            Attached {
                name: iface.into(),
                ifindex,
                slot,
                xdp_mode: mode,
                xdp: Some(xdp),
                tc: Some(tc),
            },
        );
        Ok(())
    }

    /// The interface's counter slot: the one it had (by name in this run,
    /// or by ifindex in the pinned slot map), else a free one.
    fn slot_for(&self, iface: &str, ifindex: u32) -> Result<u32, LoadError> {
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

    fn pinned_slot(&self, ifindex: u32) -> Option<u32> {
        if ifindex < SLOT_ARRAY_LEN {
            let a: Array<&MapData, u32> = typed_map_ref(&self.ebpf, maps::IFACE_SLOTS).ok()?;
            a.get(&ifindex, 0).ok()
        } else {
            let h: BpfHashMap<&MapData, u32, u32> =
                typed_map_ref(&self.ebpf, maps::IFACE_SLOTS_BIG).ok()?;
            h.get(&ifindex, 0).ok()
        }
    }

    /// Pin path of a link: `<ifindex>_<hook>_<iface>`. bpffs rejects '.'
    /// in names, which interface names (VLANs: eth0.100) may hold.
    fn link_pin(&self, iface: &str, ifindex: u32, hook: &str) -> Option<PathBuf> {
        self.pin_dir.as_ref().map(|d| {
            d.join("links")
                .join(format!("{ifindex}_{hook}_{}", iface.replace('.', ",")))
        })
    }

    /// Removes pinned links of `iface` for other ifindexes (an interface
    /// that was deleted and re-created while flowd was not running).
    fn remove_stale_pins(&self, iface: &str, ifindex: u32, hook: &str) {
        let Some(dir) = self.pin_dir.as_ref().map(|d| d.join("links")) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let iface = iface.replace('.', ",");
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let mut parts = name.splitn(3, '_');
            let (ix, h, n) = (parts.next(), parts.next(), parts.next());
            if n == Some(iface.as_str())
                && h.is_some_and(|h| h.starts_with(hook))
                && ix != Some(ifindex.to_string().as_str())
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn attach_xdp(
        &mut self,
        iface: &str,
        ifindex: u32,
        mode: Option<XdpAttachMode>,
    ) -> Result<(Hold, XdpAttachMode), LoadError> {
        let err = |source| LoadError::Attach {
            hook: "XDP",
            iface: iface.into(),
            source,
        };
        self.remove_stale_pins(iface, ifindex, "xdp");
        // Take over a link an earlier flowd pinned.
        for m in [XdpAttachMode::Native, XdpAttachMode::Generic] {
            let Some(path) = self.link_pin(iface, ifindex, &format!("xdp-{}", m.as_str())) else {
                break;
            };
            let Ok(old) = PinnedLink::from_pin(&path) else {
                continue;
            };
            let link = XdpLink::try_from(FdLink::from(old)).map_err(|e| e.to_string());
            let prog: &mut Xdp = program(&mut self.ebpf, programs::INGRESS)?;
            match link.and_then(|l| prog.attach_to_link(l).map_err(|e| e.to_string())) {
                Ok(id) => {
                    let link = prog.take_link(id).map_err(err)?;
                    let fd = FdLink::try_from(link).map_err(|e| link_err("XDP", iface, e))?;
                    let pinned = PinnedLink::from_pin(&path).map_err(|e| LoadError::Pin {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                    drop(fd);
                    info!(iface, "took over the pinned XDP link of an earlier flowd");
                    return Ok((Hold::Pinned(pinned, path), m));
                }
                Err(e) => {
                    warn!(iface, error = %e, "pinned XDP link unusable; attaching anew");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let prog: &mut Xdp = program(&mut self.ebpf, programs::INGRESS)?;
        let (id, mode) = match mode {
            Some(XdpAttachMode::Generic) => (
                prog.attach_to_if_index(ifindex, XdpMode::Skb)
                    .map_err(err)?,
                XdpAttachMode::Generic,
            ),
            Some(XdpAttachMode::Native) => (
                prog.attach_to_if_index(ifindex, XdpMode::Driver)
                    .map_err(err)?,
                XdpAttachMode::Native,
            ),
            None => match prog.attach_to_if_index(ifindex, XdpMode::Driver) {
                Ok(id) => (id, XdpAttachMode::Native),
                Err(e) => {
                    warn!(iface, error = %e, "native XDP not available, falling back to generic (skb) mode");
                    (
                        prog.attach_to_if_index(ifindex, XdpMode::Skb)
                            .map_err(err)?,
                        XdpAttachMode::Generic,
                    )
                }
            },
        };
        let link = prog.take_link(id).map_err(err)?;
        let hold = match self.link_pin(iface, ifindex, &format!("xdp-{}", mode.as_str())) {
            Some(path) => match FdLink::try_from(link) {
                Ok(fd) => Hold::Pinned(
                    fd.pin(&path).map_err(|e| LoadError::Pin {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?,
                    path,
                ),
                Err(e) => return Err(link_err("XDP", iface, e)),
            },
            None => Hold::Xdp(link),
        };
        Ok((hold, mode))
    }

    fn attach_tc(&mut self, iface: &str, ifindex: u32) -> Result<Hold, LoadError> {
        let err = |source| LoadError::Attach {
            hook: "TC egress",
            iface: iface.into(),
            source,
        };
        self.remove_stale_pins(iface, ifindex, "tc");
        let pin = self.link_pin(iface, ifindex, "tc-egress");
        if let Some(path) = &pin
            && let Ok(old) = PinnedLink::from_pin(path)
        {
            let prog: &mut SchedClassifier = program(&mut self.ebpf, programs::EGRESS)?;
            let r = SchedClassifierLink::try_from(FdLink::from(old))
                .map_err(|e| e.to_string())
                .and_then(|l| prog.attach_to_link(l).map_err(|e| e.to_string()));
            match r {
                Ok(id) => {
                    // Our own reference goes; the pin keeps the link.
                    drop(prog.take_link(id).map_err(err)?);
                    let pinned = PinnedLink::from_pin(path).map_err(|e| LoadError::Pin {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                    info!(iface, "took over the pinned TC link of an earlier flowd");
                    return Ok(Hold::Pinned(pinned, path.clone()));
                }
                Err(e) => {
                    warn!(iface, error = %e, "pinned TC link unusable; attaching anew");
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        // aya uses tcx on kernels >= 6.6; older kernels need a clsact qdisc.
        let prog: &mut SchedClassifier = program(&mut self.ebpf, programs::EGRESS)?;
        let id = match prog.attach(iface, TcAttachType::Egress) {
            Ok(id) => id,
            Err(_) => {
                let _ = aya::programs::tc::qdisc_add_clsact(iface);
                prog.attach(iface, TcAttachType::Egress).map_err(err)?
            }
        };
        let link = prog.take_link(id).map_err(err)?;
        let Some(path) = pin else {
            return Ok(Hold::Tc(link));
        };
        let fd = FdLink::try_from(link).map_err(|e| link_err("TC egress", iface, e))?;
        let pinned = fd.pin(&path).map_err(|e| LoadError::Pin {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Hold::Pinned(pinned, path))
    }

    /// Detaches both programs from the interface with this ifindex. An
    /// interface that is already gone is not an error.
    pub fn detach(&mut self, ifindex: u32) {
        let Some(mut a) = self.interfaces.remove(&ifindex) else {
            return;
        };
        if let Some(h) = a.xdp.take() {
            h.detach();
        }
        if let Some(h) = a.tc.take() {
            h.detach();
        }
        info!(iface = a.name, ifindex, "detached");
    }

    /// Forgets an interface that went away (the kernel dropped its links),
    /// keeping its slot for when it returns.
    pub fn forget(&mut self, ifindex: u32) {
        if let Some(a) = self.interfaces.remove(&ifindex) {
            for h in [a.xdp, a.tc].into_iter().flatten() {
                if let Hold::Pinned(_, path) = &h {
                    let _ = std::fs::remove_file(path);
                }
            }
            info!(iface = a.name, ifindex, "interface gone: marked detached");
        }
    }

    pub fn detach_all(&mut self) {
        let all: Vec<u32> = self.interfaces.keys().copied().collect();
        for ifindex in all {
            self.detach(ifindex);
        }
    }

    /// Leaves every program attached and pinned (an upgrade: the next
    /// flowd takes the links over); only flowd's own references go.
    pub fn release_all(&mut self) {
        let n = self.interfaces.len();
        self.interfaces.clear();
        info!(
            interfaces = n,
            "programs left attached and pinned for the next flowd"
        );
    }

    /// Slot of every interface name seen in this run.
    pub fn slots(&self) -> &BTreeMap<String, u32> {
        &self.slots
    }

    fn free_slot(&self) -> Option<u32> {
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

    /// Exact counters of one slot and direction, summed over CPUs.
    pub fn totals(&self, slot: u32, direction: u8) -> Result<IfaceCounters, LoadError> {
        let per_cpu = self.per_cpu::<IfaceCounters>(maps::TOTALS, totals_index(slot, direction))?;
        let mut sum = IfaceCounters::default();
        for c in per_cpu.iter() {
            sum.add(c);
        }
        Ok(sum)
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

    /// Switches the programs to write `generation` (0 or 1).
    pub(crate) fn set_active_gen(&mut self, generation: u32) -> Result<(), LoadError> {
        self.active_gen = generation;
        self.write_control()
    }

    /// Writes every field of `CONTROL` from this Datapath's state.
    fn write_control(&mut self) -> Result<(), LoadError> {
        let c = Control {
            active_gen: self.active_gen,
            flags: self.flags,
            jiffy_ns: self.jiffy.map_or(0, |j| j.tick_ns),
            jiffy_base_ns: self.jiffy.map_or(0, |j| j.base_ns),
            seq_gen: self.seq_gen,
            _pad: 0,
        };
        let mut control: Array<&mut MapData, Control> = typed_map(&mut self.ebpf, maps::CONTROL)?;
        control.set(0, c, 0).map_err(|source| LoadError::Map {
            map: maps::CONTROL,
            source,
        })
    }

    /// Jiffies -> monotonic ns as measured at load (None: the programs use
    /// the coarse clock).
    pub fn jiffy_clock(&self) -> Option<JiffyClock> {
        self.jiffy
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

    /// The sequence state a drained TCP flow carries into the next
    /// generation (None: the flow has none).
    pub(crate) fn seq_slot(k: &FlowKey, v: &FlowStats) -> Option<(u64, SeqSlot)> {
        if v.seq_valid == 0 {
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
        if seq_now.is_empty() && self.seq_dirty.is_empty() {
            return Ok(());
        }
        if self.seq_mirror.is_empty() {
            self.seq_mirror = vec![SeqBucket::default(); SEQ_BUCKETS as usize];
            self.seq_written = vec![[0; SEQ_WAYS]; SEQ_BUCKETS as usize];
        }
        self.seq_drains = self.seq_drains.wrapping_add(1);
        let mut dirty = Vec::with_capacity(seq_now.len());
        for (hash, slot) in seq_now {
            let b = seq_bucket(hash) as usize;
            let bucket = &mut self.seq_mirror[b].slots;
            let written = &mut self.seq_written[b];
            let tag = seq_tag(hash);
            let i = (0..SEQ_WAYS)
                .find(|&i| bucket[i].tag & !SEQ_TAG_VALID == tag)
                .or_else(|| (0..SEQ_WAYS).find(|&i| bucket[i].tag == 0))
                .unwrap_or_else(|| {
                    (0..SEQ_WAYS)
                        .max_by_key(|&i| self.seq_drains.wrapping_sub(written[i]))
                        .unwrap_or(0)
                });
            bucket[i] = slot;
            written[i] = self.seq_drains;
            dirty.push(b as u32);
        }
        dirty.sort_unstable();
        dirty.dedup();
        let mut idx: Vec<u32> = self.seq_dirty.iter().chain(dirty.iter()).copied().collect();
        idx.sort_unstable();
        idx.dedup();
        let buckets: Vec<SeqBucket> = idx.iter().map(|&b| self.seq_mirror[b as usize]).collect();
        let next = 1 - self.seq_gen;
        let name = if next == 0 {
            maps::TCP_SEQ_0
        } else {
            maps::TCP_SEQ_1
        };
        match self.ebpf.map(name) {
            Some(Map::Array(data)) => sys::update_batch(data.fd().as_fd(), name, &idx, &buckets)?,
            _ => return Err(LoadError::MissingMap(name)),
        }
        self.seq_gen = next;
        self.seq_dirty = dirty;
        self.write_control()
    }

    /// Turns RTT measurement in the programs on or off.
    pub fn set_rtt(&mut self, on: bool) -> Result<(), LoadError> {
        self.flags = if on {
            self.flags | FLAG_RTT
        } else {
            self.flags & !FLAG_RTT
        };
        self.write_control()
    }

    /// Hands every RTT sample waiting in the ring buffer to `sink`.
    pub fn drain_rtt(&mut self, mut sink: impl FnMut(&RttSample)) -> usize {
        let Some(ring) = self.rtt_events.as_mut() else {
            return 0;
        };
        let mut n = 0;
        while let Some(item) = ring.next() {
            if item.len() >= size_of::<RttSample>() {
                // SAFETY: the program writes whole RttSample records (plain
                // data, any bit pattern valid); read unaligned to be safe.
                let s = unsafe { item.as_ptr().cast::<RttSample>().read_unaligned() };
                sink(&s);
                n += 1;
            }
        }
        n
    }

    /// The ingress program's fd, for `BPF_PROG_TEST_RUN`.
    pub fn ingress_fd(&self) -> Result<BorrowedFd<'_>, LoadError> {
        self.xdp_fd(programs::INGRESS)
    }

    /// The replay driver's fd (loaded with [`Programs::replay`]).
    pub fn replay_fd(&self) -> Result<BorrowedFd<'_>, LoadError> {
        self.xdp_fd(REPLAY_PROGRAM)
    }

    fn xdp_fd(&self, name: &'static str) -> Result<BorrowedFd<'_>, LoadError> {
        let prog: &Xdp = self
            .ebpf
            .program(name)
            .ok_or(LoadError::MissingMap(name))?
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

fn typed_map_ref<'a, T>(ebpf: &'a Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<&'a Map, Error = aya::maps::MapError>,
{
    let map = ebpf.map(name).ok_or(LoadError::MissingMap(name))?;
    T::try_from(map).map_err(|source| LoadError::Map { map: name, source })
}

fn link_err(hook: &'static str, iface: &str, e: impl std::fmt::Display) -> LoadError {
    LoadError::Link {
        hook,
        iface: iface.into(),
        reason: e.to_string(),
    }
}

/// Whether `path` is on a bpf filesystem.
fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: an all-zero statfs is valid output space.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and output buffer.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

fn remove_map_pins(dir: &Path) {
    for name in maps::ALL {
        let _ = std::fs::remove_file(dir.join(name));
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
