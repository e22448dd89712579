//! The pin path: on a bpf filesystem, checked before anything is created,
//! mounted when `ip netns exec` hides it, never the root of a bpffs.

use std::{path::Path, process::Command};

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
