//! Test hosts for flowd's end-to-end tests: network namespaces joined by
//! veth pairs, traffic sent from inside them, flowd started and stopped by
//! PID, HTTP fetched from inside a namespace.
//!
//! Everything is removed in `Drop`, so a failing test cleans up too. Names
//! are unique per process and call, so tests can run in parallel.

use std::{
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

pub mod wait;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short unique tag: interface names are limited to 15 bytes.
pub fn unique_tag() -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{n:x}", std::process::id() % 0xfffff)
}

/// A fresh directory under the system's temporary directory, removed with
/// everything in it when dropped, also when the test fails.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `<tmp>/<prefix>-<unique tag>`, created.
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", unique_tag()));
        std::fs::create_dir_all(&path).expect("creating a temporary directory");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace, deleted on drop (with the interfaces inside it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Self {
        let name = format!("flowdt-{}-{role}", unique_tag());
        sh(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace; panics on failure.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
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
        let path = format!("/var/run/netns/{}", self.name);
        thread::spawn(move || {
            let fd = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns on a valid netns fd affects only this thread.
            let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns({path}): {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// The kernel's own (rx, tx) (packets, bytes) counters of an interface.
    pub fn link_stats(&self, ifc: &str) -> LinkStats {
        let out = self.exec(&["ip", "-j", "-s", "link", "show", "dev", ifc]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        let s = &v[0]["stats64"];
        let n = |dir: &str, what: &str| s[dir][what].as_u64().expect("stats64 field");
        LinkStats {
            rx_packets: n("rx", "packets"),
            rx_bytes: n("rx", "bytes"),
            tx_packets: n("tx", "packets"),
            tx_bytes: n("tx", "bytes"),
        }
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

/// A plain HTTP/1.0 GET.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Addresses one end of a veth pair (`ip6`: its and its peer's IPv6
/// address, or None for IPv4 only), brings it up, and pins the peer's MAC
/// as a static neighbour: no router solicitation, DAD, ARP or NDP on the wire.
fn configure_end(
    ns: &Netns,
    ifc: &str,
    ip4: &str,
    peer_ip4: &str,
    peer_mac: &str,
    ip6: Option<(&str, &str)>,
) {
    let v6 = if ip6.is_some() { "0" } else { "1" };
    ns.exec(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{ifc}.disable_ipv6={v6}"),
    ]);
    if ip6.is_some() {
        for key in ["accept_ra=0", "dad_transmits=0", "router_solicitations=0"] {
            ns.exec(&["sysctl", "-qw", &format!("net.ipv6.conf.{ifc}.{key}")]);
        }
    }
    ns.exec(&["ip", "addr", "add", &format!("{ip4}/30"), "dev", ifc]);
    if let Some((mine, _)) = ip6 {
        ns.exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{mine}/64"),
            "dev",
            ifc,
            "nodad",
        ]);
    }
    ns.exec(&["ip", "link", "set", ifc, "up"]);
    let neigh = |family: &str, ip: &str| {
        ns.exec(&[
            "ip",
            family,
            "neigh",
            "replace",
            ip,
            "lladdr",
            peer_mac,
            "dev",
            ifc,
            "nud",
            "permanent",
        ]);
    };
    neigh("-4", peer_ip4);
    if let Some((_, peer)) = ip6 {
        neigh("-6", peer);
    }
}

/// Interface counters as the kernel keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// Two namespaces joined by a veth pair, addressed from 198.18.0.0/15 and
/// fd00::/8, with static neighbours and no IPv6 autoconfiguration chatter,
/// so the only packets on the link are the ones a test sends.
pub struct Link {
    pub a: Netns,
    pub b: Netns,
    pub if_a: String,
    pub if_b: String,
    pub ip_a: String,
    pub ip_b: String,
    pub ip6_a: String,
    pub ip6_b: String,
    pub mac_a: String,
    pub mac_b: String,
}

static SUBNET: AtomicU32 = AtomicU32::new(0);

impl Link {
    /// An IPv4-only link: not a single packet crosses it unless a test sends it.
    pub fn new() -> Self {
        Self::build(false)
    }

    /// A dual-stack link. IPv6 brings MLD reports the kernel sends by itself,
    /// so tests on it check per-flow numbers, not interface totals.
    pub fn dual_stack() -> Self {
        Self::build(true)
    }

    fn build(ipv6: bool) -> Self {
        let a = Netns::new("a");
        let b = Netns::new("b");
        let tag = unique_tag();
        let if_a = format!("fa{tag}");
        let if_b = format!("fb{tag}");
        // Distinct /30s per link in this process (198.18.0.0/15 is 2^17 addresses).
        let n = SUBNET.fetch_add(1, Ordering::Relaxed) % 16_000;
        let base = 4 * n;
        let ip = |host: u32| {
            let v = base + host;
            format!("198.{}.{}.{}", 18 + (v >> 16), (v >> 8) & 0xff, v & 0xff)
        };
        let (ip_a, ip_b) = (ip(1), ip(2));
        let (ip6_a, ip6_b) = (format!("fd00:f10d:{n:x}::1"), format!("fd00:f10d:{n:x}::2"));
        let mac_a = format!("02:f1:0d:{:02x}:{:02x}:01", (n >> 8) & 0xff, n & 0xff);
        let mac_b = format!("02:f1:0d:{:02x}:{:02x}:02", (n >> 8) & 0xff, n & 0xff);
        sh(&[
            "ip", "link", "add", &if_a, "netns", &a.name, "address", &mac_a, "type", "veth",
            "peer", "name", &if_b, "netns", &b.name, "address", &mac_b,
        ]);
        for (ns, ifc, ip4, ip6, peer_ip4, peer_ip6, peer_mac) in [
            (&a, &if_a, &ip_a, &ip6_a, &ip_b, &ip6_b, &mac_b),
            (&b, &if_b, &ip_b, &ip6_b, &ip_a, &ip6_a, &mac_a),
        ] {
            let v6 = ipv6.then_some((ip6.as_str(), peer_ip6.as_str()));
            configure_end(ns, ifc, ip4, peer_ip4, peer_mac, v6);
        }
        Self {
            a,
            b,
            if_a,
            if_b,
            ip_a,
            ip_b,
            ip6_a,
            ip6_b,
            mac_a,
            mac_b,
        }
    }

    /// Deletes the veth pair (both ends go).
    pub fn delete_pair(&self) {
        self.a.exec(&["ip", "link", "del", &self.if_a]);
    }

    /// Creates the veth pair again with the same names, addresses and
    /// neighbours (the interfaces get new ifindexes).
    pub fn recreate_pair(&self) {
        sh(&[
            "ip",
            "link",
            "add",
            &self.if_a,
            "netns",
            &self.a.name,
            "address",
            &self.mac_a,
            "type",
            "veth",
            "peer",
            "name",
            &self.if_b,
            "netns",
            &self.b.name,
            "address",
            &self.mac_b,
        ]);
        for (ns, ifc, ip4, peer_ip4, peer_mac) in [
            (&self.a, &self.if_a, &self.ip_a, &self.ip_b, &self.mac_b),
            (&self.b, &self.if_b, &self.ip_b, &self.ip_a, &self.mac_a),
        ] {
            configure_end(ns, ifc, ip4, peer_ip4, peer_mac, None);
        }
    }

    /// Turns off segmentation offloads so every packet is a wire-sized frame.
    pub fn no_offloads(&self) {
        for (ns, ifc) in [(&self.a, &self.if_a), (&self.b, &self.if_b)] {
            ns.exec(&[
                "ethtool", "-K", ifc, "tso", "off", "gso", "off", "gro", "off",
            ]);
        }
    }
}

impl Default for Link {
    fn default() -> Self {
        Self::new()
    }
}

/// Sends `count` UDP datagrams of `payload` bytes from namespace `from` to
/// `dst`, from a fixed source address and port.
pub fn send_udp(from: &Netns, src: SocketAddr, dst: SocketAddr, count: usize, payload: usize) {
    let s: UdpSocket = from.run(move || UdpSocket::bind(src).expect("bind sender"));
    send_udp_on(&s, dst, count, payload);
}

/// Sends `count` datagrams of `payload` bytes on an already bound socket
/// (it stays in the namespace it was created in).
pub fn send_udp_on(s: &UdpSocket, dst: SocketAddr, count: usize, payload: usize) {
    let buf = vec![0x5a; payload];
    for _ in 0..count {
        // Back off when the socket buffer is full instead of dropping.
        loop {
            match s.send_to(&buf, dst) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    thread::sleep(Duration::from_micros(200));
                }
                Err(e) => panic!("send_to {dst}: {e}"),
            }
        }
    }
}

/// Path of the flowd binary the tests run (`cargo xtask test` builds it).
pub fn flowd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOWD_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join("debug/flowd");
    assert!(
        p.exists(),
        "{} not found: build it first (`cargo build -p flowd`; `cargo xtask test` does)",
        p.display()
    );
    p
}

/// A private bpf filesystem for one test's pins (every bpffs mount is its
/// own instance), unmounted and removed on drop.
pub struct BpfFs {
    pub path: PathBuf,
}

impl BpfFs {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("flowd-bpffs-{}", unique_tag()));
        std::fs::create_dir_all(&path).expect("create bpffs mount point");
        sh(&["mount", "-t", "bpf", "bpf", path.to_str().unwrap()]);
        Self { path }
    }

    pub fn pin_path(&self) -> String {
        self.path.join("flowd").display().to_string()
    }
}

impl Default for BpfFs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A flowd process started by a test, inside a namespace; stopped with
/// SIGTERM (then SIGKILL) by its PID on drop.
pub struct Flowd {
    child: Option<Child>,
    pub listen: SocketAddr,
    ns: String,
    log: PathBuf,
    _bpffs: Option<BpfFs>,
}

impl Flowd {
    /// Starts `flowd run` inside `ns` with `args`, listening on loopback
    /// there, with its pins on a private bpffs.
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        let fs = BpfFs::new();
        let mut f = Self::start_pinned(ns, args, &fs.pin_path());
        f._bpffs = Some(fs);
        f
    }

    /// Like [`Flowd::start`], with pins under `pin_path` (which outlives it).
    pub fn start_pinned(ns: &Netns, args: &[&str], pin_path: &str) -> Self {
        let mut f = Self::spawn(ns, args, pin_path);
        f.wait_ready(ns);
        f
    }

    /// Starts flowd without waiting for it to become ready.
    pub fn spawn(ns: &Netns, args: &[&str], pin_path: &str) -> Self {
        Self::spawn_env(ns, args, pin_path, &[])
    }

    /// Like [`Flowd::spawn`], with extra environment variables.
    pub fn spawn_env(ns: &Netns, args: &[&str], pin_path: &str, env: &[(&str, &str)]) -> Self {
        let listen: SocketAddr = "127.0.0.1:29391".parse().unwrap();
        let log = std::env::temp_dir().join(format!("flowd-test-{}.log", unique_tag()));
        let logf = File::create(&log).expect("create log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(flowd_bin())
            .arg("run")
            .args(["--listen", &listen.to_string(), "--pin-path", pin_path])
            .args(args)
            .envs(env.iter().copied())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("spawn flowd");
        Self {
            child: Some(child),
            listen,
            ns: ns.name.clone(),
            log,
            _bpffs: None,
        }
    }

    /// Waits until `/readyz` answers 200 (30 s at most).
    pub fn wait_ready(&mut self, ns: &Netns) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                panic!("flowd exited early ({st}); log:\n{}", self.log_text());
            }
            if let Ok((200, _)) = ns.http_get(self.listen, "/readyz") {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "flowd did not become ready in 30 s; log:\n{}",
            self.log_text()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait (at most 20 s); returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: signalling the child we spawned, by its PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// SIGKILL, as a crash would; the pinned programs keep counting.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling the child we spawned, by its PID.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Sends a signal to flowd by its PID.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: signalling the child we spawned, by its PID.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Waits for flowd to exit by itself (at most `secs`); its exit code.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return st.code();
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Flowd {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Parses a Prometheus text exposition into (name{labels}, value) pairs.
pub fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// The value of the one sample whose name is `name` and whose labels include
/// every `(label, value)` in `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse_metrics(text).into_iter().find_map(|(k, v)| {
        let (n, rest) = k.split_once('{').unwrap_or((&k, ""));
        if n != name {
            return None;
        }
        labels
            .iter()
            .all(|(l, val)| rest.contains(&format!("{l}=\"{val}\"")))
            .then_some(v)
    })
}

/// True when `ip link` shows an XDP program on the interface.
pub fn has_xdp(ns: &Netns, ifc: &str) -> bool {
    let out = ns.exec(&["ip", "link", "show", "dev", ifc]);
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

/// Sends `count` ICMP (or ICMPv6) echo requests with `payload` bytes from
/// namespace `from` to `dst` through a raw socket, and waits up to a second
/// for the replies. Returns the replies received.
pub fn ping(from: &Netns, dst: std::net::IpAddr, count: u16, payload: usize) -> usize {
    from.run(move || {
        use std::net::IpAddr;
        let (domain, proto, req_type) = match dst {
            IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8),
            IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128u8),
        };
        // SAFETY: plain socket(2) call; the fd is closed below.
        let fd = unsafe { libc::socket(domain, libc::SOCK_RAW, proto) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let (addr, len) = sockaddr(SocketAddr::new(dst, 0));
        for seq in 0..count {
            let mut pkt = vec![req_type, 0, 0, 0, 0x12, 0x34, (seq >> 8) as u8, seq as u8];
            pkt.extend(std::iter::repeat_n(0xa5, payload));
            if dst.is_ipv4() {
                let c = checksum(&pkt);
                pkt[2..4].copy_from_slice(&c.to_be_bytes());
            } // ICMPv6: the kernel fills in the checksum.
            // SAFETY: valid buffer and address for the call.
            let r = unsafe {
                libc::sendto(
                    fd,
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&raw const addr).cast(),
                    len,
                )
            };
            assert_eq!(
                r as usize,
                pkt.len(),
                "sendto: {}",
                std::io::Error::last_os_error()
            );
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: valid option buffer.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of_val(&tv) as u32,
            )
        };
        let mut replies = 0;
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 65536];
        while replies < count as usize && Instant::now() < deadline {
            // SAFETY: valid buffer.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                continue;
            }
            let n = n as usize;
            let icmp = if dst.is_ipv4() {
                &buf[((buf[0] & 0x0f) as usize * 4).min(n)..n]
            } else {
                &buf[..n]
            };
            if icmp.first() == Some(&(if dst.is_ipv4() { 0 } else { 129 })) {
                replies += 1;
            }
        }
        // SAFETY: closing the fd we opened.
        unsafe { libc::close(fd) };
        replies
    })
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

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { (&raw mut ss).cast::<libc::sockaddr_in>().write(sin) };
            (ss, size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { (&raw mut ss).cast::<libc::sockaddr_in6>().write(sin6) };
            (ss, size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}

/// Every flow from `/api/v1/flows` (the full dump, `?limit=all`) as JSON objects.
pub fn api_flows(ns: &Netns, flowd: &Flowd) -> Vec<serde_json::Value> {
    let (status, body) = ns
        .http_get(flowd.listen, "/api/v1/flows?limit=all")
        .expect("GET /api/v1/flows?limit=all");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("flows JSON")
}

/// The flows matching every `(key, value)` given (values compared as text).
pub fn find_flows<'a>(
    flows: &'a [serde_json::Value],
    want: &[(&str, &str)],
) -> Vec<&'a serde_json::Value> {
    flows
        .iter()
        .filter(|f| {
            want.iter().all(|(k, v)| match &f[*k] {
                serde_json::Value::String(s) => s == v,
                other => other.to_string().as_str() == *v,
            })
        })
        .collect()
}

/// Stops a child process this test spawned: SIGTERM by its PID, then
/// SIGKILL if it has not exited within `secs`.
pub fn stop_child(child: &mut Child, secs: u64) {
    // SAFETY: signalling the child we spawned, by its PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !matches!(child.try_wait(), Ok(Some(_))) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Flow records of a JSON-lines file (none if it does not exist yet).
pub fn read_records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// The repository's test data (`tests/data`): captures under `pcaps/`, each
/// listed in `pcaps/MANIFEST.md`. Nothing outside the clone is read.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}
