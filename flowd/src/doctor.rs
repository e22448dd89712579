//! `flowd check`: can this host run flowd? One line per check. Also the
//! privilege check `flowd run` makes first.

use std::path::Path;

use anyhow::{Result, bail};

use crate::{
    config::{self, Config},
    interfaces,
    loader::{Datapath, PinRoot, check_pin_root},
};

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
    let (ok, detail) = pin_path_status();
    line(ok, "bpffs", detail);
    let privs = check_privileges();
    line(
        privs.is_ok(),
        "privileges",
        privs.as_ref().map_or_else(
            |e| e.to_string(),
            |()| "root or CAP_BPF + CAP_NET_ADMIN".into(),
        ),
    );
    if privs.is_ok() {
        match Datapath::load(64) {
            Ok(_) => line(
                true,
                "eBPF programs",
                "XDP and TC programs pass the verifier".into(),
            ),
            Err(e) => line(false, "eBPF programs", e.to_string()),
        }
    }
    let all = match interfaces::list() {
        Ok(all) => all,
        Err(e) => {
            line(false, "interfaces", e.to_string());
            Vec::new()
        }
    };
    for i in all.into_iter().filter(|i| !i.loopback) {
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

/// The pin path of the configuration `flowd run` would read, checked as
/// `flowd run` checks it: (fine, what to say).
fn pin_path_status() -> (bool, String) {
    let file = Path::new(config::DEFAULT_PATH);
    let (cfg, origin) = match file.exists().then(|| Config::load(file)) {
        Some(Ok(c)) => (c, file.display().to_string()),
        Some(Err(_)) | None => (Config::default(), "default".to_owned()),
    };
    let pin = Path::new(&cfg.pin_path);
    match check_pin_root(pin) {
        Ok(PinRoot::Ready) => (true, format!("pin_path {} ({origin})", pin.display())),
        Ok(PinRoot::NeedsMount(at)) if has_cap(CAP_SYS_ADMIN) => (
            true,
            format!(
                "pin_path {} ({origin}): {} is not a bpf filesystem; flowd mounts one there at start",
                pin.display(),
                at.display()
            ),
        ),
        Ok(PinRoot::NeedsMount(at)) => (
            false,
            format!(
                "pin_path {} ({origin}): {} is not a bpf filesystem and mounting one needs CAP_SYS_ADMIN: mount it with `mount -t bpf bpf {}`",
                pin.display(),
                at.display(),
                at.display()
            ),
        ),
        Err(why) => (
            false,
            format!("pin_path {} ({origin}): {why}", pin.display()),
        ),
    }
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Whether this process has capability `cap` in its effective set.
fn has_cap(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    cap_eff & (1 << cap) != 0
}

/// Fails with one line when flowd lacks the privileges to load programs.
pub fn check_privileges() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    if has_cap(CAP_NET_ADMIN) && has_cap(CAP_BPF) {
        return Ok(());
    }
    bail!(
        "insufficient privileges: flowd needs root or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (run it with sudo, or through deploy/flowd.service)"
    )
}
