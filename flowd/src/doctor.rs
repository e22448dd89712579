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
/// `config`: the file `flowd run` would read (default [`config::DEFAULT_PATH`]).
pub fn run(config: Option<&Path>) -> Result<()> {
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
    let (cfg, origin) = match load_config(config) {
        Ok(c) => c,
        Err(e) => {
            line(false, "configuration", format!("{e:#}"));
            (Config::default(), "default".to_owned())
        }
    };
    let (ok, detail) = pin_path_status(&cfg, &origin);
    line(ok, "bpffs", detail);
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
    let all = match interfaces::list() {
        Ok(all) => all,
        Err(e) => {
            line(false, "interfaces", e.to_string());
            Vec::new()
        }
    };
    let af_xdp = interfaces::af_xdp_selected(&all, &cfg.af_xdp.interfaces);
    // AF_XDP: a failure only matters when an interface would use it.
    let probe = crate::afxdp::probe();
    let (ok, detail) = match &probe {
        Ok(()) => (true, "sockets, UMEM and rings can be created".to_owned()),
        Err(e) => (af_xdp.is_empty(), e.to_string()),
    };
    if ok && probe.is_err() {
        println!("info {:<22} {detail} (no interface uses it)", "AF_XDP");
    } else {
        line(ok, "AF_XDP", detail);
    }
    let selected = if cfg.af_xdp.interfaces.is_empty() {
        format!("none configured ({origin}: [af_xdp] interfaces, or --af-xdp)")
    } else if af_xdp.is_empty() {
        format!(
            "{:?} ({origin}) select no interface present",
            cfg.af_xdp.interfaces
        )
    } else {
        af_xdp
            .iter()
            .map(|i| match crate::afxdp::rx_queues(&i.name) {
                Ok(1) => format!("{} (1 RX queue)", i.name),
                Ok(n) => format!("{} ({n} RX queues)", i.name),
                Err(e) => format!("{} ({e})", i.name),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("info {:<22} {selected}", "AF_XDP interfaces");
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

/// The configuration `flowd run` would read and where it came from: the
/// file given (which must load), else the default file when it loads, else
/// the defaults.
fn load_config(given: Option<&Path>) -> Result<(Config, String)> {
    if let Some(file) = given {
        let c = Config::load(file)?;
        return Ok((c, file.display().to_string()));
    }
    let file = Path::new(config::DEFAULT_PATH);
    Ok(match file.exists().then(|| Config::load(file)) {
        Some(Ok(c)) => (c, file.display().to_string()),
        Some(Err(_)) | None => (Config::default(), "default".to_owned()),
    })
}

/// The pin path of the configuration `flowd run` would read, checked as
/// `flowd run` checks it: (fine, what to say).
fn pin_path_status(cfg: &Config, origin: &str) -> (bool, String) {
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
    crate::caps::require()?;
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
