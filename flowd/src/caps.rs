//! The capabilities flowd needs, read from `/proc/self/status`.
//!
//! Being root is not enough: a container or a unit's `CapabilityBoundingSet`
//! can leave root without CAP_PERFMON, and the verifier then refuses the
//! programs' pointer arithmetic with hundreds of lines of log. The check
//! looks at the effective set, whatever the user id.

use anyhow::{Result, bail};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What each needed capability is for; CAP_SYS_ADMIN stands in for
/// CAP_BPF and CAP_PERFMON (as on kernels before 5.8).
const NEEDED: [(&str, u32, bool, &str); 3] = [
    ("CAP_BPF", CAP_BPF, true, "load programs and maps"),
    (
        "CAP_PERFMON",
        CAP_PERFMON,
        true,
        "pointer arithmetic and helpers the verifier allows only with it",
    ),
    (
        "CAP_NET_ADMIN",
        CAP_NET_ADMIN,
        false,
        "attach XDP and TC programs",
    ),
];

/// The effective capability set of this process (`CapEff`), if readable.
pub fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The needed capabilities missing from `cap_eff`, by name.
pub fn missing_from(cap_eff: u64) -> Vec<&'static str> {
    let has = |cap: u32| cap_eff & (1 << cap) != 0;
    NEEDED
        .iter()
        .filter(|(_, cap, sys_admin_will_do, _)| {
            !(has(*cap) || (*sys_admin_will_do && has(CAP_SYS_ADMIN)))
        })
        .map(|(name, ..)| *name)
        .collect()
}

/// The needed capabilities this process lacks (all of them when the set
/// cannot be read).
pub fn missing() -> Vec<&'static str> {
    missing_from(effective().unwrap_or(0))
}

/// Fails with one line naming what is missing and what it is for.
pub fn require() -> Result<()> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    let why: Vec<String> = NEEDED
        .iter()
        .filter(|(name, ..)| missing.contains(name))
        .map(|(name, _, _, what)| format!("{name} to {what}"))
        .collect();
    bail!(
        "insufficient privileges: missing {} (flowd needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, which root normally has; run it with sudo, or through deploy/flowd.service)",
        why.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfmon_is_needed_even_with_bpf_and_net_admin() {
        let bpf_net = (1 << CAP_BPF) | (1 << CAP_NET_ADMIN);
        assert_eq!(missing_from(bpf_net), ["CAP_PERFMON"]);
        assert!(missing_from(bpf_net | (1 << CAP_PERFMON)).is_empty());
        assert_eq!(missing_from(0), ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]);
        // CAP_SYS_ADMIN covers BPF and PERFMON, not NET_ADMIN.
        assert_eq!(missing_from(1 << CAP_SYS_ADMIN), ["CAP_NET_ADMIN"]);
        assert!(missing_from(u64::MAX).is_empty());
    }
}
