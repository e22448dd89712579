//! Host socket overflow counters (issue 14): flowd's
//! `flowd_tcp_listen_overflows_total` and `flowd_udp_rcvbuf_errors_total`
//! move exactly as the kernel's own ListenOverflows and Udp RcvbufErrors
//! of flowd's namespace, read from that namespace's `/proc/net`.

use std::{
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{FromRawFd, IntoRawFd},
    time::Duration,
};

use flowd::export::hoststats::pair_table;
use flowd_tests::{Flowd, Link, Netns, metric, send_udp, wait};

/// `proto`'s `field` in `file` of `ns`, as the kernel has it now.
fn kernel(ns: &Netns, file: &str, proto: &str, field: &str) -> u64 {
    let out = ns.exec(&["cat", file]);
    let text = String::from_utf8_lossy(&out.stdout);
    pair_table(&text, proto, field).unwrap_or_else(|| panic!("no {proto} {field} in {file}"))
}

/// The kernel's counter and flowd's, from one scrape between two kernel
/// reads that agree (so nothing moved during the scrape); bounded retries.
fn both(
    ns: &Netns,
    flowd: &Flowd,
    k: impl Fn() -> u64,
    name: &str,
    labels: &[(&str, &str)],
) -> (u64, u64) {
    for _ in 0..50 {
        let before = k();
        let text = wait::scrape(ns, flowd);
        let ours = metric(&text, name, labels).unwrap_or_else(|| panic!("no {name}:\n{text}"));
        if k() == before {
            return (before, ours as u64);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the kernel's counter for {name} never held still over a scrape");
}

/// A TCP listener on `addr` with backlog 1, in the calling thread's namespace.
fn listen_backlog_1(addr: SocketAddr) -> TcpListener {
    let SocketAddr::V4(a) = addr else {
        panic!("IPv4 only")
    };
    // SAFETY: plain socket calls on a fresh fd, checked; the fd is owned
    // by the returned listener.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = size_of::<libc::sockaddr_in>() as u32;
        assert_eq!(
            libc::bind(fd, (&raw const sin).cast(), len),
            0,
            "bind {addr}"
        );
        assert_eq!(libc::listen(fd, 1), 0, "listen");
        TcpListener::from_raw_fd(fd)
    }
}

/// A listener with backlog 1 that never accepts, and a burst of connects
/// from the peer namespace: the accept queue overflows; flowd's delta is
/// the kernel's delta, and more than zero.
#[test]
fn listen_overflows_match_the_namespaces_netstat() {
    const CONNECTS: usize = 12;
    let link = Link::new();
    let flowd = Flowd::start(&link.b, &["--iface", &link.if_b]);
    let k = || kernel(&link.b, "/proc/net/netstat", "TcpExt", "ListenOverflows");
    let name = "flowd_tcp_listen_overflows_total";
    let (k0, f0) = both(&link.b, &flowd, k, name, &[]);

    let addr: SocketAddr = format!("{}:9201", link.ip_b).parse().unwrap();
    let listener = link.b.run(move || listen_backlog_1(addr).into_raw_fd());
    // SAFETY: the fd from the namespace thread, owned here from now on.
    let listener = unsafe { TcpListener::from_raw_fd(listener) };
    let conns: Vec<Option<TcpStream>> = link.a.run(move || {
        (0..CONNECTS)
            .map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok())
            .collect()
    });
    // The first connections fill the queue; closing the rest stops their SYNs.
    let queued = conns.iter().flatten().count();
    assert!(
        queued < CONNECTS,
        "{queued} of {CONNECTS} connected: no overflow"
    );

    let (k1, f1) = both(&link.b, &flowd, k, name, &[]);
    eprintln!("ListenOverflows: kernel {k0} -> {k1}, flowd {f0} -> {f1}, {queued} queued");
    assert!(
        k1 > k0,
        "the kernel counted no ListenOverflows ({k0} -> {k1})"
    );
    assert_eq!(f1 - f0, k1 - k0, "flowd's delta vs the kernel's");
    drop((conns, listener));
}

/// An unread UDP socket with the smallest receive buffer and 200
/// datagrams of 1000 bytes from the peer: flowd's RcvbufErrors delta is the
/// namespace's Udp RcvbufErrors delta, and more than zero.
#[test]
fn udp_rcvbuf_errors_match_the_namespaces_snmp() {
    const N: usize = 200;
    let link = Link::new();
    let flowd = Flowd::start(&link.b, &["--iface", &link.if_b]);
    let k = || kernel(&link.b, "/proc/net/snmp", "Udp", "RcvbufErrors");
    let (name, labels) = ("flowd_udp_rcvbuf_errors_total", [("ip_version", "4")]);
    let (k0, f0) = both(&link.b, &flowd, k, name, &labels);

    let dst: SocketAddr = format!("{}:9202", link.ip_b).parse().unwrap();
    let sink: UdpSocket = link.b.run(move || {
        let s = UdpSocket::bind(dst).expect("bind sink");
        let zero: libc::c_int = 0;
        // SAFETY: SO_RCVBUF with one int; the kernel raises 0 to its minimum.
        let r = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const zero).cast(),
                size_of::<libc::c_int>() as u32,
            )
        };
        assert_eq!(r, 0, "SO_RCVBUF");
        s
    });
    let src: SocketAddr = format!("{}:0", link.ip_a).parse().unwrap();
    send_udp(&link.a, src, dst, N, 1000);

    let (k1, f1) = wait::until(
        "the kernel's RcvbufErrors to hold still",
        Duration::from_secs(5),
        || both(&link.b, &flowd, k, name, &labels),
        |(k1, _)| *k1 > k0,
    );
    eprintln!("Udp RcvbufErrors: kernel {k0} -> {k1}, flowd {f0} -> {f1}");
    assert!(
        k1 - k0 <= N as u64,
        "more errors ({}) than datagrams",
        k1 - k0
    );
    assert_eq!(f1 - f0, k1 - k0, "flowd's delta vs the kernel's");
    drop(sink);
}
