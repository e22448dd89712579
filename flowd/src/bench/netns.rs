//! The live benchmarks' test bed: two network namespaces joined by a veth
//! pair (198.18.0.1/30 and 198.18.0.2/30), a live-frame XDP traffic
//! generator on the sender's end, and the flowd daemon started inside the
//! receiver's namespace. Guards remove every namespace, mount and process
//! created here, also on error; processes are stopped by their PID.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use super::{
    packet::eth,
    raw::{self, BPF_PROG_TYPE_XDP, XDP_TX},
};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short tag unique to this process and call (interface names: 15 bytes).
fn tag() -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{n:x}", std::process::id() % 0xfffff)
}

/// Runs a command; fails with its output if it fails.
pub(super) fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("cannot run {args:?}"))?;
    ensure!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted on drop (with the interfaces inside it).
pub(super) struct Ns {
    pub(super) name: String,
}

impl Ns {
    fn new(role: &str) -> anyhow::Result<Self> {
        let name = format!("flowdbench-{}-{role}", tag());
        sh(&["ip", "netns", "add", &name])?;
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub(super) fn exec(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub(super) fn run<T: Send>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        in_ns(&self.name, f)
    }

    /// The kernel's counters of an interface in this namespace.
    pub(super) fn link_stats(&self, ifc: &str) -> anyhow::Result<LinkStats> {
        let out = sh(&[
            "ip", "-n", &self.name, "-j", "-s", "link", "show", "dev", ifc,
        ])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("ip -j output")?;
        let s = &v[0]["stats64"];
        let n = |dir: &str, what: &str| s[dir][what].as_u64().unwrap_or(0);
        Ok(LinkStats {
            rx_packets: n("rx", "packets"),
            rx_dropped: n("rx", "dropped"),
            tx_packets: n("tx", "packets"),
            tx_dropped: n("tx", "dropped"),
        })
    }
}

/// Runs `f` on a (scoped) thread that has entered the named namespace and
/// waits for it; sockets and links it creates live in that namespace.
pub(super) fn in_ns<T: Send>(
    name: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    let path = format!("/var/run/netns/{name}");
    thread::scope(|s| {
        s.spawn(move || {
            let fd = File::open(&path).with_context(|| format!("open {path}"))?;
            // SAFETY: setns on a valid netns fd affects only this thread.
            let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            ensure!(r == 0, "setns({path}): {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|_| bail!("a thread in namespace {name} panicked"))
    })
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LinkStats {
    pub(super) rx_packets: u64,
    pub(super) rx_dropped: u64,
    pub(super) tx_packets: u64,
    pub(super) tx_dropped: u64,
}

impl std::ops::Sub for LinkStats {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self {
            rx_packets: self.rx_packets.wrapping_sub(o.rx_packets),
            rx_dropped: self.rx_dropped.wrapping_sub(o.rx_dropped),
            tx_packets: self.tx_packets.wrapping_sub(o.tx_packets),
            tx_dropped: self.tx_dropped.wrapping_sub(o.tx_dropped),
        }
    }
}

pub(super) const MAC_A: [u8; 6] = [0x02, 0xf1, 0x0d, 0xbe, 0x00, 0x01];
pub(super) const MAC_B: [u8; 6] = [0x02, 0xf1, 0x0d, 0xbe, 0x00, 0x02];
/// A destination MAC nobody has: the receiver's stack drops such frames as
/// PACKET_OTHERHOST right away (after XDP and packet taps saw them).
pub(super) const MAC_NOBODY: [u8; 6] = [0x02, 0xf1, 0x0d, 0xbe, 0x00, 0x99];
pub(super) const IP_A: [u8; 4] = [198, 18, 0, 1];
pub(super) const IP_B: [u8; 4] = [198, 18, 0, 2];

/// Two namespaces joined by a veth pair: `a` sends, `b` receives. IPv4
/// only, static neighbours: no packet crosses it unless a benchmark sends it.
/// Field order: the namespaces go last (the link goes with them).
pub(super) struct Pair {
    pub(super) if_a: String,
    pub(super) if_b: String,
    /// ifindex of `if_a` inside `a` (the generator's ingress_ifindex).
    pub(super) ifindex_a: u32,
    pub(super) a: Ns,
    pub(super) b: Ns,
}

impl Pair {
    pub(super) fn new() -> anyhow::Result<Self> {
        let a = Ns::new("a")?;
        let b = Ns::new("b")?;
        let t = tag();
        let if_a = format!("fba{t}");
        let if_b = format!("fbb{t}");
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        let ip = |a: [u8; 4]| format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]);
        sh(&[
            "ip",
            "link",
            "add",
            &if_a,
            "netns",
            &a.name,
            "address",
            &mac(MAC_A),
            "type",
            "veth",
            "peer",
            "name",
            &if_b,
            "netns",
            &b.name,
            "address",
            &mac(MAC_B),
        ])?;
        for (ns, ifc, me, peer, peer_mac) in [
            (&a, &if_a, IP_A, IP_B, MAC_B),
            (&b, &if_b, IP_B, IP_A, MAC_A),
        ] {
            ns.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{ifc}.disable_ipv6=1"),
            ])?;
            ns.exec(&["ip", "addr", "add", &format!("{}/30", ip(me)), "dev", ifc])?;
            ns.exec(&["ip", "link", "set", ifc, "up"])?;
            ns.exec(&[
                "ip",
                "neigh",
                "replace",
                &ip(peer),
                "lladdr",
                &mac(peer_mac),
                "dev",
                ifc,
                "nud",
                "permanent",
            ])?;
        }
        // GRO on the receiver turns on its NAPI, so frames transmitted by
        // XDP on the sender are received also when no XDP program runs there.
        b.exec(&["ethtool", "-K", &if_b, "gro", "on"])?;
        let name = if_a.clone();
        let ifindex_a = a.run(move || {
            crate::loader::ifindex(&name).with_context(|| format!("no interface {name}"))
        })?;
        Ok(Self {
            if_a,
            if_b,
            ifindex_a,
            a,
            b,
        })
    }
}

// ------------------------------------------------------------ frames

/// Ethernet + IPv4 + UDP from 198.18.0.1:`sport` to 198.18.0.2:`dport`, 60 bytes.
pub(super) fn udp_frame(dst_mac: [u8; 6], sport: u16, dport: u16) -> Vec<u8> {
    let mut f = eth(dst_mac, MAC_A, None, 0x0800);
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip.extend_from_slice(&IP_A);
    ip.extend_from_slice(&IP_B);
    let total = 60 - 14;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((total - 20) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum
    f.resize(60, 0);
    f
}

/// Ethernet + IPv4 + TCP SYN from 198.18.0.1:`sport` to 198.18.0.2:`dport`, 60 bytes.
pub(super) fn syn_frame(dst_mac: [u8; 6], sport: u16, dport: u16) -> Vec<u8> {
    let mut f = eth(dst_mac, MAC_A, None, 0x0800);
    let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&IP_A);
    ip.extend_from_slice(&IP_B);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[
        0, 0, 0x10, 0, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    f.resize(60, 0);
    f
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

// ------------------------------------------------------------ generator

/// A live-frame XDP generator: `BPF_PROG_TEST_RUN` with
/// `BPF_F_TEST_XDP_LIVE_FRAMES` of a tiny `XDP_TX` program, on the sender's
/// end of the pair; every run transmits one frame to the peer.
pub(super) struct Generator {
    prog: OwnedFd,
    frame: Vec<u8>,
    ifindex: u32,
    ns: String,
}

impl Generator {
    /// Sends `frame` unchanged (one flow).
    pub(super) fn fixed(pair: &Pair, frame: Vec<u8>) -> anyhow::Result<Self> {
        let prog = raw::load_prog(
            BPF_PROG_TYPE_XDP,
            &raw::ret_insns(XDP_TX as i32),
            0,
            "bench_xdp_tx",
        )?;
        Ok(Self::with(pair, prog, frame))
    }

    /// Sends `frame` with a random source port and random low 16 bits of
    /// the source address (198.18.0.0/16) per frame: a new flow per frame.
    pub(super) fn random_sources(pair: &Pair, frame: Vec<u8>) -> anyhow::Result<Self> {
        let prog = raw::load_prog(
            BPF_PROG_TYPE_XDP,
            &raw::random_source_insns(),
            0,
            "bench_xdp_rand",
        )?;
        Ok(Self::with(pair, prog, frame))
    }

    fn with(pair: &Pair, prog: OwnedFd, frame: Vec<u8>) -> Self {
        Self {
            prog,
            frame,
            ifindex: pair.ifindex_a,
            ns: pair.a.name.clone(),
        }
    }

    /// Sends `count` frames as fast as the generator goes; returns the wall
    /// time it took.
    pub(super) fn burst(&self, count: u64) -> anyhow::Result<Duration> {
        let prog = self.prog.try_clone()?;
        let (frame, ifindex) = (self.frame.clone(), self.ifindex);
        in_ns(&self.ns, move || {
            let t = Instant::now();
            let mut left = count;
            while left > 0 {
                let n = left.min(u64::from(u32::MAX / 2)) as u32;
                raw::xdp_live_frames(prog.as_fd(), ifindex, &frame, n)
                    .context("BPF_PROG_TEST_RUN (live frames)")?;
                left -= u64::from(n);
            }
            Ok(t.elapsed())
        })
    }

    /// Sends `rate × secs` frames paced at `rate` per second, in slices of
    /// one millisecond. Returns (frames sent, wall time).
    pub(super) fn paced(&self, rate: u64, secs: f64) -> anyhow::Result<(u64, Duration)> {
        let prog = self.prog.try_clone()?;
        let (frame, ifindex) = (self.frame.clone(), self.ifindex);
        let total = (rate as f64 * secs).round() as u64;
        in_ns(&self.ns, move || {
            let start = Instant::now();
            let deadline = start + Duration::from_secs_f64(secs * 3.0 + 5.0);
            let mut sent = 0u64;
            let mut tick = 0u64;
            while sent < total {
                ensure!(
                    Instant::now() < deadline,
                    "paced sending fell far behind ({sent} of {total})"
                );
                let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
                if due > sent {
                    let n = (due - sent).min(u64::from(u32::MAX / 2)) as u32;
                    raw::xdp_live_frames(prog.as_fd(), ifindex, &frame, n)
                        .context("BPF_PROG_TEST_RUN (live frames)")?;
                    sent += u64::from(n);
                }
                tick += 1;
                let next = start + Duration::from_micros(tick * 1000);
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                }
            }
            Ok((sent, start.elapsed()))
        })
    }
}

// ------------------------------------------------------------ the daemon

/// A private bpf filesystem (every bpffs mount is its own instance), so
/// the daemon's pins never meet another flowd's; unmounted on drop.
pub(super) struct BpfFs {
    pub(super) path: PathBuf,
}

impl BpfFs {
    pub(super) fn new() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("flowd-bench-bpffs-{}", tag()));
        std::fs::create_dir_all(&path)?;
        let fs = Self { path };
        sh(&["mount", "-t", "bpf", "bpf", &fs.path.display().to_string()])?;
        Ok(fs)
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// `flowd run` inside a namespace, stopped by its PID (SIGTERM, then
/// SIGKILL) on drop.
pub(super) struct Daemon {
    child: Option<Child>,
    pub(super) listen: SocketAddr,
    ns: String,
    log: PathBuf,
    _fs: BpfFs,
}

impl Daemon {
    /// Starts this binary's `flowd run --iface IFACE` in the receiver's
    /// namespace with its defaults (flow capacity 65,536, drain interval
    /// 1 s) plus `extra`, and waits until it is ready.
    pub(super) fn start(pair: &Pair, extra: &[&str]) -> anyhow::Result<Self> {
        let fs = BpfFs::new()?;
        let listen: SocketAddr = "127.0.0.1:29391".parse().expect("address");
        let log = std::env::temp_dir().join(format!("flowd-bench-{}.log", tag()));
        let logf = File::create(&log)?;
        let exe = std::env::current_exe()?;
        let pin = fs.path.join("flowd");
        let child = Command::new("ip")
            .args(["netns", "exec", &pair.b.name])
            .arg(exe)
            .arg("run")
            .args(["--iface", &pair.if_b, "--listen", &listen.to_string()])
            .arg("--pin-path")
            .arg(&pin)
            .args(extra)
            .env("FLOWD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .context("spawning flowd run")?;
        let mut d = Self {
            child: Some(child),
            listen,
            ns: pair.b.name.clone(),
            log,
            _fs: fs,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(st))) = d.child.as_mut().map(Child::try_wait) {
                bail!("flowd exited early ({st}); log:\n{}", d.log_text());
            }
            if let Ok((200, _, _)) = d.get("/readyz") {
                return Ok(d);
            }
            if Instant::now() > deadline {
                bail!("flowd not ready in 30 s; log:\n{}", d.log_text());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An HTTP/1.0 GET from inside the namespace: (status, body, latency).
    pub(super) fn get(&self, path: &str) -> anyhow::Result<(u16, String, Duration)> {
        let (addr, path) = (self.listen, path.to_owned());
        in_ns(&self.ns, move || {
            let t = Instant::now();
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf)?;
            let elapsed = t.elapsed();
            let text = String::from_utf8_lossy(&buf).into_owned();
            let status = text
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let body = text
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default();
            Ok((status, body, elapsed))
        })
    }

    /// SIGTERM, then waits (up to 60 s) for the exit: how long the clean
    /// shutdown took (final drain, every record ended) and the process's
    /// peak RSS over its life (`ru_maxrss` from `wait4`), bytes.
    pub(super) fn stop_measured(&mut self) -> anyhow::Result<(Duration, u64)> {
        let child = self.child.take().context("flowd already stopped")?;
        let pid = child.id() as i32;
        let t = Instant::now();
        // SAFETY: signalling the child we spawned, by its PID.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        loop {
            // SAFETY: an all-zero rusage is valid output space.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            let mut status = 0;
            // SAFETY: `pid` is our child, not reaped yet (`child` is never
            // waited on); the out-pointers are valid.
            let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
            ensure!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
            if r == pid {
                ensure!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "flowd exited with status {status:#x}; log:\n{}",
                    self.log_text()
                );
                return Ok((t.elapsed(), ru.ru_maxrss as u64 * 1024));
            }
            if t.elapsed() > Duration::from_secs(60) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let mut status = 0;
                // SAFETY: reaping our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                bail!("flowd did not exit within 60 s of SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `/metrics` in the text format.
    pub(super) fn metrics(&self) -> anyhow::Result<String> {
        let (status, body, _) = self.get("/metrics")?;
        ensure!(status == 200, "GET /metrics: {status}");
        Ok(body)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling the child we spawned, by its PID.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The value of the sample `name` whose labels include all of `labels`.
pub(super) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        let (n, rest) = k.split_once('{').unwrap_or((k, ""));
        (n == name
            && labels
                .iter()
                .all(|(l, val)| rest.contains(&format!("{l}=\"{val}\""))))
        .then(|| v.parse().ok())?
    })
}

/// A child process stopped by its PID on drop (SIGINT, then SIGKILL).
pub(super) struct Proc {
    pub(super) child: Child,
}

impl Proc {
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT by PID, then waits (at most `secs`) for the process to exit.
    pub(super) fn interrupt_and_wait(&mut self, secs: u64) -> anyhow::Result<()> {
        // SAFETY: signalling the child we spawned, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        bail!("process {} did not exit after SIGINT", self.child.id())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
