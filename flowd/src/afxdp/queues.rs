//! How many RX queues an interface has: one socket and worker each.

use std::{os::fd::AsRawFd, path::Path};

use super::AfXdpError;

/// `struct ethtool_channels` (linux/ethtool.h).
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// RX queues of `iface` in the caller's network namespace: RX-only plus
/// combined channels (`ethtool -l`), or, for a driver without channel
/// information, the `rx-N` entries of its sysfs `queues` directory (only
/// right in the namespace sysfs was mounted in).
pub fn rx_queues(iface: &str) -> Result<u32, AfXdpError> {
    match channels(iface) {
        Ok(c) if c.rx_count + c.combined_count > 0 => Ok(c.rx_count + c.combined_count),
        _ => rx_queues_in(Path::new("/sys/class/net"), iface),
    }
}

/// `ETHTOOL_GCHANNELS` through `SIOCETHTOOL`.
fn channels(iface: &str) -> std::io::Result<EthtoolChannels> {
    let name = iface.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: a datagram socket for the ioctl, owned right away.
    let sock = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
    };
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&raw mut ch).cast();
    // SAFETY: `ifr` names the interface and points at `ch`, both live
    // for the call; the kernel writes at most sizeof(ethtool_channels).
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &raw mut ifr) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ch)
}

/// The `rx-N` entries of `root/iface/queues`.
fn rx_queues_in(root: &Path, iface: &str) -> Result<u32, AfXdpError> {
    let dir = root.join(iface).join("queues");
    let err = |reason: String| AfXdpError::Queues {
        iface: iface.into(),
        path: dir.display().to_string(),
        reason,
    };
    let n = std::fs::read_dir(&dir)
        .map_err(|e| err(e.to_string()))?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("rx-"))
                .is_some_and(|i| i.parse::<u32>().is_ok())
        })
        .count() as u32;
    if n == 0 {
        return Err(err("no rx-N entries".into()));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rx_queues_from_sysfs_entries() {
        let root = std::env::temp_dir().join(format!("flowd-afxdp-q-{}", std::process::id()));
        let q = root.join("m0").join("queues");
        for d in ["rx-0", "rx-1", "rx-2", "tx-0", "rx-x"] {
            std::fs::create_dir_all(q.join(d)).unwrap();
        }
        assert_eq!(rx_queues_in(&root, "m0").unwrap(), 3);
        let e = rx_queues_in(&root, "nope").unwrap_err().to_string();
        assert!(e.contains("`nope`") && e.contains("queues"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
