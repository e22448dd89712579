//! Network namespaces: created and deleted by name, commands and threads
//! run inside them, the kernel's interface counters read from inside.

use std::{
    fs::File,
    net::SocketAddr,
    os::fd::AsRawFd,
    process::{Command, Output, Stdio},
    thread,
};

use anyhow::{Context as _, bail, ensure};

use crate::{host::try_sh, http::http_get, unique_tag};

/// A network namespace, deleted on drop (with the interfaces inside it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Self {
        Self::try_new(role).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `flowdt-<unique tag>-<role>`, with its loopback up.
    pub fn try_new(role: &str) -> anyhow::Result<Self> {
        let name = format!("flowdt-{}-{role}", unique_tag());
        try_sh(&["ip", "netns", "add", &name])?;
        let ns = Self { name };
        ns.try_exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs a command inside the namespace; panics on failure.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.try_exec(args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Runs a command inside the namespace.
    pub fn try_exec(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        try_sh(&full)
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it
    /// opens live in the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("namespace thread panicked")
    }

    /// Like [`Netns::run`], without waiting for the thread.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let name = self.name.clone();
        thread::spawn(move || {
            enter(&name).unwrap_or_else(|e| panic!("{e:#}"));
            f()
        })
    }

    /// Like [`Netns::run`] for a fallible `f` that may borrow from the
    /// caller (a scoped thread).
    pub fn run_scoped<T: Send>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        in_ns(&self.name, f)
    }

    /// The kernel's own counters of an interface; panics on failure.
    pub fn link_stats(&self, ifc: &str) -> LinkStats {
        self.try_link_stats(ifc).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The kernel's own counters of an interface (`ip -j -s link`).
    pub fn try_link_stats(&self, ifc: &str) -> anyhow::Result<LinkStats> {
        let out = self.try_exec(&["ip", "-j", "-s", "link", "show", "dev", ifc])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("ip -j output")?;
        let s = &v[0]["stats64"];
        let n = |dir: &str, what: &str| {
            s[dir][what]
                .as_u64()
                .with_context(|| format!("stats64 field {dir}.{what} of {ifc}"))
        };
        Ok(LinkStats {
            rx_packets: n("rx", "packets")?,
            rx_bytes: n("rx", "bytes")?,
            rx_dropped: n("rx", "dropped")?,
            tx_packets: n("tx", "packets")?,
            tx_bytes: n("tx", "bytes")?,
            tx_dropped: n("tx", "dropped")?,
        })
    }

    /// An HTTP/1.0 GET from inside the namespace; returns (status, body).
    pub fn http_get(&self, addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
        let path = path.to_owned();
        self.run(move || http_get(addr, &path))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Moves the calling thread into the named namespace.
fn enter(name: &str) -> anyhow::Result<()> {
    let path = format!("/var/run/netns/{name}");
    let fd = File::open(&path).with_context(|| format!("open {path}"))?;
    // SAFETY: setns on a valid netns fd affects only this thread.
    let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    ensure!(r == 0, "setns({path}): {}", std::io::Error::last_os_error());
    Ok(())
}

/// Runs `f` on a (scoped) thread that has entered the named namespace and
/// waits for it; sockets and links it creates live in that namespace.
pub fn in_ns<T: Send>(
    name: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    thread::scope(|s| {
        s.spawn(move || {
            enter(name)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| bail!("a thread in namespace {name} panicked"))
    })
}

/// Interface counters as the kernel keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
}

impl std::ops::Sub for LinkStats {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self {
            rx_packets: self.rx_packets.wrapping_sub(o.rx_packets),
            rx_bytes: self.rx_bytes.wrapping_sub(o.rx_bytes),
            rx_dropped: self.rx_dropped.wrapping_sub(o.rx_dropped),
            tx_packets: self.tx_packets.wrapping_sub(o.tx_packets),
            tx_bytes: self.tx_bytes.wrapping_sub(o.tx_bytes),
            tx_dropped: self.tx_dropped.wrapping_sub(o.tx_dropped),
        }
    }
}

/// True when `ip link` shows an XDP program on the interface.
pub fn has_xdp(ns: &Netns, ifc: &str) -> bool {
    let out = ns.exec(&["ip", "link", "show", "dev", ifc]);
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}
