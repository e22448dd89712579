//! XDP ingress and TC egress on each interface: attached anew, or taken
//! over from the links an earlier flowd pinned (the program is replaced
//! atomically, no packet goes uncounted); detached, forgotten or left
//! pinned for the next flowd.

use std::path::PathBuf;

use aya::programs::{
    SchedClassifier, TcAttachType, Xdp, XdpMode,
    links::{FdLink, PinnedLink},
    tc::SchedClassifierLink,
    xdp::XdpLink,
};
use flowd_common::programs;
use tracing::{info, warn};

use super::{Datapath, LoadError, program};

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

impl Datapath {
    /// Attaches XDP (ingress) and TC (egress) to `iface`. With pinning, a
    /// link an earlier flowd pinned for this interface is taken over
    /// (the program is replaced atomically, no packet goes uncounted) and
    /// the totals go on; an interface attached fresh starts them at zero
    /// (see [`Datapath::slot_for`]).
    pub fn attach(
        &mut self,
        iface: &str,
        xdp_mode: Option<XdpAttachMode>,
    ) -> Result<(), LoadError> {
        let ifindex = ifindex(iface).ok_or_else(|| LoadError::NoSuchInterface(iface.into()))?;
        if self.interfaces.contains_key(&ifindex) {
            return Ok(());
        }
        // Links an earlier flowd pinned for this interface: their programs
        // have counted all along, into the slot the interface had.
        let xdp_kept = self.take_over_xdp(iface, ifindex)?;
        let tc_kept = match self.take_over_tc(iface, ifindex) {
            Ok(h) => h,
            Err(e) => {
                if let Some((h, _)) = xdp_kept {
                    h.detach();
                }
                return Err(e);
            }
        };
        let survived = xdp_kept.is_some() || tc_kept.is_some();
        let slot = match self.slot_for(iface, ifindex, survived) {
            Ok(s) => s,
            Err(e) => {
                detach_all(xdp_kept, tc_kept);
                return Err(e);
            }
        };
        let (xdp, mode, tc) =
            self.attach_rest(iface, ifindex, slot, xdp_mode, xdp_kept, tc_kept)?;
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

    /// Maps the interface to `slot`, then attaches anew what was not taken
    /// over; on failure, nothing of it stays attached.
    fn attach_rest(
        &mut self,
        iface: &str,
        ifindex: u32,
        slot: u32,
        xdp_mode: Option<XdpAttachMode>,
        xdp_kept: Option<(Hold, XdpAttachMode)>,
        tc_kept: Option<Hold>,
    ) -> Result<(Hold, XdpAttachMode, Hold), LoadError> {
        if let Err(e) = self.set_slot(ifindex, slot) {
            detach_all(xdp_kept, tc_kept);
            return Err(e);
        }
        let (xdp, mode) = match xdp_kept {
            Some(kept) => kept,
            None => match self.attach_xdp(iface, ifindex, xdp_mode) {
                Ok(x) => x,
                Err(e) => {
                    detach_all(None, tc_kept);
                    return Err(e);
                }
            },
        };
        let tc = match tc_kept {
            Some(kept) => kept,
            None => match self.attach_tc(iface, ifindex) {
                Ok(h) => h,
                Err(e) => {
                    xdp.detach();
                    return Err(e);
                }
            },
        };
        Ok((xdp, mode, tc))
    }

    /// Takes over the XDP link an earlier flowd pinned for this interface,
    /// if one is there and still works.
    fn take_over_xdp(
        &mut self,
        iface: &str,
        ifindex: u32,
    ) -> Result<Option<(Hold, XdpAttachMode)>, LoadError> {
        let err = |source| LoadError::Attach {
            hook: "XDP",
            iface: iface.into(),
            source,
        };
        self.remove_stale_pins(iface, ifindex, "xdp");
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
                    return Ok(Some((Hold::Pinned(pinned, path), m)));
                }
                Err(e) => {
                    warn!(iface, error = %e, "pinned XDP link unusable; attaching anew");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(None)
    }

    /// Attaches XDP anew (pinned when there is a pin directory).
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

    /// Takes over the TC link an earlier flowd pinned for this interface,
    /// if one is there and still works.
    fn take_over_tc(&mut self, iface: &str, ifindex: u32) -> Result<Option<Hold>, LoadError> {
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
                    return Ok(Some(Hold::Pinned(pinned, path.clone())));
                }
                Err(e) => {
                    warn!(iface, error = %e, "pinned TC link unusable; attaching anew");
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        Ok(None)
    }

    /// Attaches TC egress anew (pinned when there is a pin directory).
    fn attach_tc(&mut self, iface: &str, ifindex: u32) -> Result<Hold, LoadError> {
        let err = |source| LoadError::Attach {
            hook: "TC egress",
            iface: iface.into(),
            source,
        };
        let pin = self.link_pin(iface, ifindex, "tc-egress");
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
        self.unset_drop_iface(ifindex);
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
            self.unset_drop_iface(ifindex);
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
}

/// Detaches what an attach that failed half-way holds.
fn detach_all(xdp: Option<(Hold, XdpAttachMode)>, tc: Option<Hold>) {
    for h in xdp.map(|(h, _)| h).into_iter().chain(tc) {
        h.detach();
    }
}

fn link_err(hook: &'static str, iface: &str, e: impl std::fmt::Display) -> LoadError {
    LoadError::Link {
        hook,
        iface: iface.into(),
        reason: e.to_string(),
    }
}

/// The ifindex of an interface by name, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}
