//! The kernel half of AF_XDP capture ([`crate::afxdp`]): the counting and
//! redirecting program (`flowd_afxdp`), loaded on first use together with
//! the replay driver the workers parse with, attached without a pin (its
//! sockets die with the daemon, so must the redirect), and its two maps.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use aya::{
    maps::{Array, MapData, XskMap},
    programs::{Xdp, XdpMode, xdp::XdpLink},
};
use flowd_common::afxdp::{
    AFXDP_COUNTS, AFXDP_MAX_QUEUES, AFXDP_PROGRAM, AFXDP_SOCKS, AfXdpCounts, afxdp_index,
};

use super::{Datapath, LoadError, REPLAY_PROGRAM, XdpAttachMode, ifindex, program, typed_map};

/// The AF_XDP program on one interface. Dropping it detaches the program.
#[derive(Debug)]
pub struct AfXdpLink {
    pub name: String,
    pub ifindex: u32,
    /// The interface's counter slot (`TOTALS`, and its rows of the AF_XDP maps).
    pub slot: u32,
    pub mode: XdpAttachMode,
    _link: XdpLink,
}

impl Datapath {
    /// Loads `flowd_afxdp` and the replay driver into the kernel, once.
    fn load_afxdp(&mut self) -> Result<(), LoadError> {
        for name in [AFXDP_PROGRAM, REPLAY_PROGRAM] {
            let prog: &mut Xdp = program(&mut self.ebpf, name)?;
            if prog.fd().is_err() {
                prog.load().map_err(|source| LoadError::Program {
                    program: name,
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Attaches `flowd_afxdp` to `iface` (native XDP, else generic; or the
    /// mode given), with a counter slot of its own and its AF_XDP counts
    /// zeroed. The caller binds the sockets ([`Datapath::set_afxdp_socket`]);
    /// until then every frame is counted as `no_socket` and passed.
    pub fn attach_afxdp(
        &mut self,
        iface: &str,
        mode: Option<XdpAttachMode>,
    ) -> Result<AfXdpLink, LoadError> {
        let ifindex = ifindex(iface).ok_or_else(|| LoadError::NoSuchInterface(iface.into()))?;
        self.load_afxdp()?;
        let slot = self.slot_for(iface, ifindex, false)?;
        self.set_slot(ifindex, slot)?;
        self.slots.insert(iface.into(), slot);
        {
            let mut counts: Array<&mut MapData, AfXdpCounts> =
                typed_map(&mut self.ebpf, AFXDP_COUNTS)?;
            for q in 0..AFXDP_MAX_QUEUES {
                counts
                    .set(afxdp_index(slot, q), AfXdpCounts::default(), 0)
                    .map_err(|source| LoadError::Map {
                        map: AFXDP_COUNTS,
                        source,
                    })?;
            }
        }
        let prog: &mut Xdp = program(&mut self.ebpf, AFXDP_PROGRAM)?;
        let modes: &[XdpAttachMode] = match mode {
            Some(m) => &[m][..],
            None => &[XdpAttachMode::Native, XdpAttachMode::Generic],
        };
        let mut last = None;
        for &m in modes {
            let flags = match m {
                XdpAttachMode::Native => XdpMode::Driver,
                XdpAttachMode::Generic => XdpMode::Skb,
            };
            match prog.attach_to_if_index(ifindex, flags) {
                Ok(id) => {
                    let link = prog.take_link(id).map_err(|source| LoadError::Attach {
                        hook: "XDP (AF_XDP)",
                        iface: iface.into(),
                        source,
                    })?;
                    return Ok(AfXdpLink {
                        name: iface.into(),
                        ifindex,
                        slot,
                        mode: m,
                        _link: link,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(LoadError::Attach {
            hook: "XDP (AF_XDP)",
            iface: iface.into(),
            source: last.expect("at least one mode was tried"),
        })
    }

    /// Puts the socket bound to (`slot`'s interface, `queue`) in the map
    /// the program redirects with.
    pub fn set_afxdp_socket(
        &mut self,
        slot: u32,
        queue: u32,
        socket: impl AsRawFd,
    ) -> Result<(), LoadError> {
        let mut socks: XskMap<&mut MapData> = typed_map(&mut self.ebpf, AFXDP_SOCKS)?;
        socks
            .set(afxdp_index(slot, queue), socket, 0)
            .map_err(|source| LoadError::Map {
                map: AFXDP_SOCKS,
                source,
            })
    }

    /// Takes the socket of (`slot`, `queue`) out of the map: the program
    /// passes (and counts) that queue's frames from now on.
    pub fn unset_afxdp_socket(&mut self, slot: u32, queue: u32) -> Result<(), LoadError> {
        let mut socks: XskMap<&mut MapData> = typed_map(&mut self.ebpf, AFXDP_SOCKS)?;
        match socks.unset(afxdp_index(slot, queue)) {
            // Already empty.
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            r => r.map_err(|source| LoadError::Map {
                map: AFXDP_SOCKS,
                source,
            }),
        }
    }

    /// The kernel's count of (`slot`, `queue`).
    pub fn afxdp_counts(&self, slot: u32, queue: u32) -> Result<AfXdpCounts, LoadError> {
        let map = self
            .ebpf
            .map(AFXDP_COUNTS)
            .ok_or(LoadError::MissingMap(AFXDP_COUNTS))?;
        let counts: Array<&MapData, AfXdpCounts> =
            Array::try_from(map).map_err(|source| LoadError::Map {
                map: AFXDP_COUNTS,
                source,
            })?;
        counts
            .get(&afxdp_index(slot, queue), 0)
            .map_err(|source| LoadError::Map {
                map: AFXDP_COUNTS,
                source,
            })
    }

    /// A file descriptor of the replay driver a worker keeps for its test
    /// runs (loaded by [`Datapath::attach_afxdp`]).
    pub fn replay_fd_owned(&self) -> Result<OwnedFd, LoadError> {
        self.replay_fd()?
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| LoadError::DupFd {
                program: REPLAY_PROGRAM,
                source,
            })
    }

    /// The `flowd_afxdp` program's fd, for `BPF_PROG_TEST_RUN` in tests
    /// (loaded on first call).
    pub fn afxdp_fd(&mut self) -> Result<std::os::fd::BorrowedFd<'_>, LoadError> {
        self.load_afxdp()?;
        self.xdp_fd(AFXDP_PROGRAM)
    }
}
