//! systemd's notify protocol (sd_notify): READY, RELOADING, STOPPING,
//! WATCHDOG, over the datagram socket named in `NOTIFY_SOCKET`.

use std::{
    os::{linux::net::SocketAddrExt, unix::net::UnixDatagram},
    time::Duration,
};

/// Sends one notification; a no-op outside systemd.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let r = if let Some(abstract_name) = path.strip_prefix('@') {
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, socket = path, "sd_notify failed");
    }
}

/// `RELOADING=1` with the monotonic timestamp systemd wants with it.
pub fn reloading() {
    notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}",
        crate::clock::monotonic_ns() / 1000
    ));
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}
