//! Maps and links pinned on bpffs under `<pin_path>/v<ABI_VERSION>`, so
//! that a restart (or a crash) continues the counters and the programs
//! keep counting while no flowd runs.

use std::path::{Path, PathBuf};

use flowd_common::{ABI_VERSION, maps};
use tracing::warn;

use super::{Datapath, LoadError, Programs, bpffs};

impl Datapath {
    /// Like [`Datapath::load`], with every map pinned under
    /// `<pin_root>/v<ABI_VERSION>`: maps pinned by an earlier flowd of the
    /// same layout are reused (totals continue, leftover flows get drained);
    /// pins of another layout version are removed first.
    pub fn load_pinned(capacity: u32, pin_root: &Path) -> Result<Self, LoadError> {
        let pin_err = |reason: String| LoadError::Pin {
            path: pin_root.display().to_string(),
            reason,
        };
        // The filesystem is checked before any directory is made.
        bpffs::prepare_pin_root(pin_root).map_err(pin_err)?;
        let dir = pin_root.join(format!("v{ABI_VERSION}"));
        std::fs::create_dir_all(dir.join("links")).map_err(|e| pin_err(e.to_string()))?;
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
