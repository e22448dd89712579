//! `flowd check`: can this host run flowd? One line per check.

use std::path::Path;

use anyhow::{Result, bail};

use crate::{daemon::check_privileges, interfaces, loader::Datapath};

/// Prints a readable report; fails when something flowd needs is missing.
pub fn run() -> Result<()> {
    let mut missing = 0;
    let mut line = |ok: bool, what: &str, detail: String| {
        println!("{} {what:<22} {detail}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            missing += 1;
        }
    };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version: Vec<u32> = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    let recent = version.as_slice() >= [6, 6].as_slice();
    line(
        recent,
        "kernel",
        format!(
            "{} (needs >= 6.6 for tcx; older kernels use clsact)",
            release.trim()
        ),
    );
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    line(
        btf,
        "BTF",
        if btf {
            "/sys/kernel/btf/vmlinux".into()
        } else {
            "missing: a kernel built with CONFIG_DEBUG_INFO_BTF".into()
        },
    );
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let bpffs = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("bpf"));
    line(
        bpffs,
        "bpffs",
        if bpffs {
            "mounted".into()
        } else {
            "not mounted: mount -t bpf bpf /sys/fs/bpf".into()
        },
    );
    let privs = check_privileges();
    line(
        privs.is_ok(),
        "privileges",
        privs.as_ref().map_or_else(
            |e| e.to_string(),
            |()| "CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON".into(),
        ),
    );
    if privs.is_ok() {
        match Datapath::load(64) {
            Ok(_) => line(
                true,
                "eBPF programs",
                "XDP and TC programs pass the verifier".into(),
            ),
            Err(e) => line(
                false,
                "eBPF programs",
                crate::report::summarize_verifier(&e.to_string()),
            ),
        }
    }
    for i in interfaces::list().into_iter().filter(|i| !i.loopback) {
        let driver = std::fs::read_link(format!("/sys/class/net/{}/device/driver", i.name))
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .or_else(|| {
                std::fs::read_to_string(format!("/sys/class/net/{}/uevent", i.name))
                    .ok()
                    .and_then(|u| {
                        u.lines()
                            .find_map(|l| l.strip_prefix("DEVTYPE=").map(str::to_owned))
                    })
            })
            .unwrap_or_else(|| "unknown".into());
        println!(
            "info {:<22} ifindex {}, {}, driver {driver} (native XDP is tried first, generic is the fallback)",
            format!("iface {}", i.name),
            i.ifindex,
            if i.up { "up" } else { "down" },
        );
    }
    if missing > 0 {
        bail!("{missing} check(s) failed");
    }
    Ok(())
}
