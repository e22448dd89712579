//! The pin path: on a bpf filesystem, checked before anything is created,
//! mounted when `ip netns exec` hides it, never the root of a bpffs.

use std::{
    ffi::CString,
    os::{fd::AsRawFd, unix::fs::symlink},
    path::{Path, PathBuf},
    process::Command,
};

use flowd_common::{ABI_VERSION, maps};
use flowd_tests::{BpfFs, Flowd, Link, TempDir, flowd_bin, unique_tag};

/// `ip netns exec` remounts /sys, so /sys/fs/bpf holds no bpffs there:
/// flowd mounts one (in its own mount namespace) and runs.
#[test]
fn mounts_a_bpffs_under_ip_netns_exec() {
    let link = Link::new();
    let pin = format!("/sys/fs/bpf/flowd-test-{}", unique_tag());
    let mut flowd = Flowd::spawn(&link.b, &["--iface", &link.if_b], &pin);
    flowd.wait_ready(&link.b);
    assert!(
        flowd
            .log_text()
            .contains("mounted a bpf filesystem for the pins"),
        "{}",
        flowd.log_text()
    );
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    // The mount lived in flowd's own mount namespace.
    assert!(!Path::new(&pin).exists(), "{pin} appeared on the host");
}

/// A pin path on an ordinary filesystem: one line naming the command that
/// fixes it, and not a single directory created.
#[test]
fn not_on_a_bpffs_names_the_fix_and_creates_nothing() {
    let link = Link::new();
    let tmp = TempDir::new("flowd-notbpf");
    let pin = tmp.path().join("sub").join("flowd");
    let mut flowd = Flowd::spawn(&link.b, &["--iface", &link.if_b], pin.to_str().unwrap());
    assert_eq!(flowd.wait_exit(30), Some(1), "{}", flowd.log_text());
    let log = flowd.log_text();
    assert!(log.contains("is not on a bpf filesystem"), "{log}");
    assert!(
        log.contains(&format!(
            "mount -t bpf bpf {}",
            tmp.path().join("sub").display()
        )),
        "{log}"
    );
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().next().is_none(),
        "directories created under {}",
        tmp.path().display()
    );
}

/// The root of a bpffs is shared with other programs: refused, untouched.
#[test]
fn the_root_of_a_bpffs_is_refused() {
    let link = Link::new();
    let fs = BpfFs::new();
    let root = fs.path.to_str().unwrap();
    // A new bpffs may hold the kernel's own `maps.debug` and `progs.debug`.
    let entries = || -> Vec<_> {
        let mut v: Vec<_> = std::fs::read_dir(&fs.path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let before = entries();
    let mut flowd = Flowd::spawn(&link.b, &["--iface", &link.if_b], root);
    assert_eq!(flowd.wait_exit(30), Some(1), "{}", flowd.log_text());
    let log = flowd.log_text();
    assert!(log.contains("is the root of a bpf filesystem"), "{log}");
    assert!(log.contains(&format!("{root}/flowd")), "{log}");
    assert_eq!(entries(), before, "pins made in the bpffs root");
}

/// `flowd check` says what `flowd run` would do about the default pin path.
#[test]
fn check_reports_the_pin_path() {
    let link = Link::new();
    let out = Command::new("ip")
        .args(["netns", "exec", &link.b.name])
        .arg(flowd_bin())
        .arg("check")
        .output()
        .expect("run flowd check");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(" bpffs "))
        .unwrap_or_else(|| panic!("no bpffs line:\n{text}"));
    assert!(line.starts_with("ok"), "{line}");
    assert!(
        line.contains("/sys/fs/bpf is not a bpf filesystem; flowd mounts one there at start"),
        "{line}"
    );
}

/// A map of another program, pinned at `path` (its parent directory made).
fn pin_foreign_map(path: &Path, key_size: u32, value_size: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_HASH: u64 = 1;
    let bpf = |cmd: libc::c_long, attr: &mut [u64; 16]| -> i64 {
        // SAFETY: a zero-padded bpf_attr that lives for the call; its
        // pointers point at live buffers.
        let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128) };
        assert!(r >= 0, "bpf({cmd}): {}", std::io::Error::last_os_error());
        r
    };
    let mut attr = [0u64; 16];
    attr[0] = BPF_MAP_TYPE_HASH | (u64::from(key_size) << 32);
    attr[1] = u64::from(value_size) | (4 << 32); // max_entries
    let fd = bpf(BPF_MAP_CREATE, &mut attr);
    // SAFETY: the kernel returned a new fd, owned here.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let name = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut attr = [0u64; 16];
    attr[0] = name.as_ptr() as u64;
    attr[1] = fd.as_raw_fd() as u64;
    bpf(BPF_OBJ_PIN, &mut attr);
}

/// Pins of other programs beside and under the pin path, and directories
/// that look like flowd's but lack its marker, survive a start, a reset of
/// flowd's own maps and a stop. A marked directory of another layout
/// version is flowd's, and goes.
#[test]
fn foreign_pins_survive_start_reset_and_stop() {
    let link = Link::new();
    let fs = BpfFs::new();
    let pin = PathBuf::from(fs.pin_path());
    let current = pin.join(format!("v{ABI_VERSION}"));
    let foreign: Vec<PathBuf> = vec![
        fs.path.join("vxlan_gw").join("map"),
        fs.path.join("v1").join("map"),
        pin.join("vxlan_gw").join("map"),
        pin.join("v9x").join("map"),
        pin.join("v3").join("map"),
        pin.join("v").join("map"),
        current.join("other_tool_map"),
    ];
    for p in &foreign {
        pin_foreign_map(p, 4, 4);
    }
    // An older flowd's directory: marked, so it is flowd's to remove.
    let old = pin.join("v2");
    pin_foreign_map(&old.join("FLOWS_0"), 4, 4);
    symlink("flowd", old.join("flowd_pins")).unwrap();
    // This version's flow map with a layout this build does not have: the
    // reset removes flowd's own maps, nothing else.
    pin_foreign_map(&current.join(maps::FLOWS_0), 4, 4);

    let survivors = |when: &str| {
        for p in &foreign {
            assert!(p.exists(), "{} gone after {when}", p.display());
        }
    };
    let mut flowd = Flowd::start_pinned(&link.b, &["--iface", &link.if_b], pin.to_str().unwrap());
    let log = flowd.log_text();
    assert!(
        log.contains("pinned maps do not match this build: resetting them"),
        "{log}"
    );
    survivors("start and reset");
    assert!(!old.exists(), "the marked v2 was left:\n{log}");
    assert!(
        std::fs::read_link(current.join("flowd_pins")).is_ok(),
        "no marker in {}",
        current.display()
    );
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    survivors("stop");
    // And once more, on maps of this layout.
    let mut again = Flowd::start_pinned(&link.b, &["--iface", &link.if_b], pin.to_str().unwrap());
    survivors("a second start");
    assert_eq!(again.stop(), Some(0), "{}", again.log_text());
    survivors("a second stop");
}
