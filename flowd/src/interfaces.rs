//! Which interfaces exist, from sysfs, and which of them the configuration
//! selects.

use std::io;

use crate::config::selects;

/// One network interface as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub ifindex: u32,
    pub up: bool,
    pub loopback: bool,
}

/// Every interface of this network namespace.
///
/// An error means "unknown", never "none": the caller keeps what it has.
/// Out of file descriptors (EMFILE), reading `/sys/class/net` fails, and
/// reading that as an empty list once made flowd detach every program
/// (issue 18). An interface that disappears between the listing and the
/// read of its attributes (NotFound) is left out: it is gone.
pub fn list() -> io::Result<Vec<Iface>> {
    const IFF_UP: u32 = 0x1;
    const IFF_LOOPBACK: u32 = 0x8;
    let mut out = Vec::new();
    let dir = std::fs::read_dir(SYS_CLASS_NET)
        .map_err(|e| io::Error::new(e.kind(), format!("listing {SYS_CLASS_NET}: {e}")))?;
    for e in dir {
        let e = e.map_err(|e| io::Error::new(e.kind(), format!("listing {SYS_CLASS_NET}: {e}")))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let read = |f: &str| -> io::Result<Option<String>> {
            let path = e.path().join(f);
            match std::fs::read_to_string(&path) {
                Ok(s) => Ok(Some(s)),
                Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(err) => Err(io::Error::new(
                    err.kind(),
                    format!("reading {}: {err}", path.display()),
                )),
            }
        };
        let (Some(flags), Some(ifindex)) = (read("flags")?, read("ifindex")?) else {
            continue;
        };
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
        let Ok(ifindex) = ifindex.trim().parse() else {
            continue;
        };
        out.push(Iface {
            name,
            ifindex,
            up: flags & IFF_UP != 0,
            loopback: flags & IFF_LOOPBACK != 0,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

const SYS_CLASS_NET: &str = "/sys/class/net";

/// Link speed from sysfs in bits per second (None when the driver does not
/// report one, e.g. -1 on a link that is down).
pub fn speed_bps(name: &str) -> Option<u64> {
    let mbps: i64 = std::fs::read_to_string(format!("/sys/class/net/{name}/speed"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (mbps > 0).then(|| mbps as u64 * 1_000_000)
}

/// The interfaces to monitor: with no patterns every interface that is up
/// and not loopback; with patterns every non-loopback interface they select
/// (up or not: a down interface counts nothing but is ready when it comes up).
pub fn selected(all: &[Iface], patterns: &[String]) -> Vec<Iface> {
    all.iter()
        .filter(|i| !i.loopback)
        .filter(|i| {
            if patterns.is_empty() {
                i.up
            } else {
                selects(patterns, &i.name)
            }
        })
        .cloned()
        .collect()
}

/// The interfaces captured through AF_XDP: what the `[af_xdp]` patterns
/// select, never loopback (none without patterns).
pub fn af_xdp_selected(all: &[Iface], af_xdp: &[String]) -> Vec<Iface> {
    all.iter()
        .filter(|i| !i.loopback && af_xdp_selects(af_xdp, &i.name))
        .cloned()
        .collect()
}

/// Whether the `[af_xdp]` patterns take `name`. Unlike the in-kernel
/// patterns, an empty list selects nothing (AF_XDP is opt-in).
pub fn af_xdp_selects(af_xdp: &[String], name: &str) -> bool {
    !af_xdp.is_empty() && selects(af_xdp, name)
}

/// The interfaces of the in-kernel path: what `patterns` selects, without
/// the AF_XDP ones; nothing when only AF_XDP patterns are configured.
pub fn in_kernel(all: &[Iface], patterns: &[String], af_xdp: &[String]) -> Vec<Iface> {
    if af_xdp.is_empty() {
        return selected(all, patterns);
    }
    if patterns.is_empty() {
        return Vec::new();
    }
    selected(all, patterns)
        .into_iter()
        .filter(|i| !selects(af_xdp, &i.name))
        .collect()
}

/// Whether a pattern names one interface (no glob, no exclusion).
pub fn is_plain_name(p: &str) -> bool {
    !p.starts_with('!') && !p.contains(['*', '?'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(name: &str, up: bool, loopback: bool) -> Iface {
        Iface {
            name: name.into(),
            ifindex: 1,
            up,
            loopback,
        }
    }

    #[test]
    fn default_is_up_and_not_loopback() {
        let all = [
            i("lo", true, true),
            i("eth0", true, false),
            i("eth1", false, false),
        ];
        let names: Vec<_> = selected(&all, &[]).into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["eth0"]);
        let names: Vec<_> = selected(&all, &["eth*".into()])
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["eth0", "eth1"]);
    }

    #[test]
    fn af_xdp_interfaces_leave_the_in_kernel_path() {
        let all = [
            i("lo", true, true),
            i("eth0", true, false),
            i("span0", true, false),
            i("span1", true, false),
        ];
        let af = ["span*".to_string(), "!span1".to_string()];
        let names = |v: Vec<Iface>| v.into_iter().map(|i| i.name).collect::<Vec<_>>();
        assert_eq!(names(af_xdp_selected(&all, &af)), ["span0"]);
        assert!(in_kernel(&all, &[], &af).is_empty(), "AF_XDP only");
        assert_eq!(
            names(in_kernel(&all, &["eth0".into(), "span*".into()], &af)),
            ["eth0", "span1"]
        );
        assert!(af_xdp_selected(&all, &[]).is_empty());
        assert_eq!(names(in_kernel(&all, &[], &[])), ["eth0", "span0", "span1"]);
        // An empty [af_xdp] list takes nothing (the metrics' hooks ask this).
        assert!(!af_xdp_selects(&[], "eth0"));
        assert!(!af_xdp_selects(&["!span1".into()], "span1"));
        assert!(af_xdp_selects(&["!span1".into()], "eth0"));
    }
}
