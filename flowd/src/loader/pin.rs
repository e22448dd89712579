//! Maps and links pinned on bpffs under `<pin_path>/v<ABI_VERSION>`, so
//! that a restart (or a crash) continues the counters and the programs
//! keep counting while no flowd runs.
//!
//! ```text
//! <pin_path>/
//!   v<ABI_VERSION>/
//!     flowd_pins -> flowd     the marker: flowd made this directory
//!     FLOWS_0, TOTALS, ...    the maps
//!     links/<ifindex>_<hook>_<iface>
//! ```
//!
//! Only directories named exactly `v<N>` that carry the marker are flowd's
//! to remove; anything else under or beside the pin path belongs to
//! someone else and is left alone.

use std::{
    io,
    path::{Path, PathBuf},
};

use flowd_common::{ABI_VERSION, maps};
use tracing::{info, warn};

use super::{Datapath, LoadError, Programs, bpffs};

impl Datapath {
    /// Like [`Datapath::load`], with every map pinned under
    /// `<pin_root>/v<ABI_VERSION>`: maps pinned by an earlier flowd of the
    /// same layout are reused (totals continue, leftover flows get drained);
    /// flowd's pins of another layout version are removed first.
    pub fn load_pinned(capacity: u32, pin_root: &Path) -> Result<Self, LoadError> {
        let pin_err = |reason: String| LoadError::Pin {
            path: pin_root.display().to_string(),
            reason,
        };
        // The filesystem is checked before any directory is made.
        bpffs::prepare_pin_root(pin_root).map_err(pin_err)?;
        let dir = pin_root.join(format!("v{ABI_VERSION}"));
        std::fs::create_dir_all(dir.join("links")).map_err(|e| pin_err(e.to_string()))?;
        mark(&dir).map_err(|e| pin_err(format!("marking {}: {e}", dir.display())))?;
        remove_other_versions(pin_root).map_err(|e| pin_err(e.to_string()))?;
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

    /// Pin path of a link: `<ifindex>_<hook>_<iface>`. bpffs rejects '.'
    /// in names, which interface names (VLANs: eth0.100) may hold.
    pub(super) fn link_pin(&self, iface: &str, ifindex: u32, hook: &str) -> Option<PathBuf> {
        self.pin_dir.as_ref().map(|d| {
            d.join("links")
                .join(format!("{ifindex}_{hook}_{}", iface.replace('.', ",")))
        })
    }

    /// Removes pinned links of `iface` for other ifindexes (an interface
    /// that was deleted and re-created while flowd was not running).
    pub(super) fn remove_stale_pins(&self, iface: &str, ifindex: u32, hook: &str) {
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
}

fn remove_map_pins(dir: &Path) {
    for name in maps::ALL {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// The marker flowd puts in each `v<N>` directory it makes: a symlink
/// (bpffs holds directories, pins and symlinks only, and no '.' in names).
pub const PIN_MARKER: &str = "flowd_pins";
const PIN_MARKER_TARGET: &str = "flowd";

/// Marks `dir` as made by flowd (once).
fn mark(dir: &Path) -> io::Result<()> {
    if is_marked(dir) {
        return Ok(());
    }
    let marker = dir.join(PIN_MARKER);
    // Something else by that name is not ours to replace.
    if marker.symlink_metadata().is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not flowd's marker", marker.display()),
        ));
    }
    std::os::unix::fs::symlink(PIN_MARKER_TARGET, marker)
}

fn is_marked(dir: &Path) -> bool {
    std::fs::read_link(dir.join(PIN_MARKER)).is_ok_and(|t| t == Path::new(PIN_MARKER_TARGET))
}

/// Whether `name` is exactly `v<N>`: 'v' and decimal digits.
fn is_version_dir_name(name: &str) -> bool {
    name.strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes flowd's pins of other map layout versions: the directories
/// under `pin_root` named `v<N>` (N not this build's) that carry the marker.
fn remove_other_versions(pin_root: &Path) -> io::Result<()> {
    let current = format!("v{ABI_VERSION}");
    for e in std::fs::read_dir(pin_root)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == current || !is_version_dir_name(&name) {
            continue;
        }
        let path = e.path();
        if !e.file_type().is_ok_and(|t| t.is_dir()) || !is_marked(&path) {
            info!(path = %path.display(), "leaving a directory flowd did not mark as its own");
            continue;
        }
        warn!(old = %path.display(), abi = ABI_VERSION, "removing pins of another map layout version");
        if let Err(e) = std::fs::remove_dir_all(&path) {
            warn!(path = %path.display(), error = %e, "removing old pins failed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_version_dir_name;

    #[test]
    fn version_dir_names() {
        for ok in ["v0", "v3", "v42"] {
            assert!(is_version_dir_name(ok), "{ok}");
        }
        for not in ["v", "v9x", "vxlan_gw", "V3", "v-1", "3", "v3 ", "links"] {
            assert!(!is_version_dir_name(not), "{not}");
        }
    }
}
