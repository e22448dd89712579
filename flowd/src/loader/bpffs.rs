//! The pin path's filesystem: pins need a bpf filesystem. Checked before
//! anything is created; when `/sys/fs/bpf` is not one (a host that does not
//! mount it, or `ip netns exec`, which remounts `/sys`), flowd mounts one
//! there as bpftool does, or names the command that does.

use std::{
    ffi::CString,
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Where bpf filesystems are mounted by convention (systemd does at boot).
pub const BPFFS_MOUNT_POINT: &str = "/sys/fs/bpf";

/// What a pin path needs before flowd can pin there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinRoot {
    /// It is on a bpf filesystem, or its nearest existing parent is.
    Ready,
    /// [`BPFFS_MOUNT_POINT`] exists but holds no bpf filesystem: flowd
    /// mounts one there (that needs CAP_SYS_ADMIN).
    NeedsMount(PathBuf),
}

/// Checks `pin_root` without changing anything. The error is one line
/// that says what is wrong and the command or setting that fixes it.
pub fn check_pin_root(pin_root: &Path) -> Result<PinRoot, String> {
    let existing = pin_root
        .ancestors()
        .find(|a| a.symlink_metadata().is_ok())
        .unwrap_or(Path::new("/"));
    let parent = pin_root.parent().unwrap_or(Path::new("/"));
    let root_err = || {
        format!(
            "{} is the root of a bpf filesystem, which other programs share; set pin_path (--pin-path) to a directory of flowd's own inside it, e.g. {}",
            pin_root.display(),
            pin_root.join("flowd").display()
        )
    };
    if is_bpffs(existing) {
        if existing == pin_root && is_mount_root(pin_root) {
            return Err(root_err());
        }
        return Ok(PinRoot::Ready);
    }
    let mount_point = Path::new(BPFFS_MOUNT_POINT);
    if pin_root == mount_point {
        return Err(root_err());
    }
    if existing == mount_point {
        return Ok(PinRoot::NeedsMount(mount_point.to_path_buf()));
    }
    Err(format!(
        "{} is not on a bpf filesystem: mount one with `{}mount -t bpf bpf {}`, or set pin_path (--pin-path) to a directory on a bpf filesystem",
        existing.display(),
        if parent.exists() {
            String::new()
        } else {
            format!("mkdir -p {} && ", parent.display())
        },
        parent.display()
    ))
}

/// Makes `pin_root` usable: mounts a bpf filesystem at
/// [`BPFFS_MOUNT_POINT`] when it needs one, then creates the directory.
pub(super) fn prepare_pin_root(pin_root: &Path) -> Result<(), String> {
    if let PinRoot::NeedsMount(at) = check_pin_root(pin_root)? {
        mount_bpffs(&at).map_err(|e| {
            format!(
                "{} is not a bpf filesystem (not mounted, or /sys was remounted by `ip netns exec`) and mounting one failed: {e} (needs CAP_SYS_ADMIN); mount it with `mount -t bpf bpf {}`, or set pin_path (--pin-path) to a directory on a bpf filesystem",
                at.display(),
                at.display()
            )
        })?;
        tracing::info!(at = %at.display(), "mounted a bpf filesystem for the pins");
        if !is_bpffs(&at) {
            return Err(format!(
                "{} is still not a bpf filesystem after mounting one",
                at.display()
            ));
        }
    }
    std::fs::create_dir_all(pin_root).map_err(|e| e.to_string())
}

/// Whether `path` is on a bpf filesystem.
pub(super) fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: an all-zero statfs is valid output space.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and output buffer.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Whether `path` is where a filesystem is mounted (its parent is on
/// another one).
fn is_mount_root(path: &Path) -> bool {
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    match path.parent() {
        Some(parent) => dev(path) != dev(parent),
        None => true,
    }
}

/// `mount -t bpf bpf <at>` (mode 0700, as systemd mounts it).
fn mount_bpffs(at: &Path) -> io::Result<()> {
    let target = CString::new(at.as_os_str().as_encoded_bytes())?;
    // SAFETY: NUL-terminated strings that live for the call.
    let r = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
