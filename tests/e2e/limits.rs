//! The HTTP server's limits (issue 18, item 1): more idle connections than
//! flowd has file descriptors for must not detach its programs or lose a
//! packet, and a client that sends half a header is cut off.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use flowd_tests::{BpfFs, Flowd, Link, TempDir, find_flows, has_xdp, metric, send_udp};

/// A config with a small connection cap and short timeouts.
fn config(dir: &TempDir, max_connections: usize) -> String {
    let path = dir.path().join("flowd.toml");
    std::fs::write(
        &path,
        format!(
            "[web]\nmax_connections = {max_connections}\nheader_read_timeout_s = 2\nidle_timeout_s = 2\n"
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

/// Opens `n` TCP connections to `addr` from inside the namespace and keeps
/// them open (idle) until dropped. Connections flowd refuses at once still
/// count: the point is the load on flowd's descriptors.
fn open_idle(link: &Link, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    link.b.run(move || {
        (0..n)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
            .collect()
    })
}

/// Scrapes `/metrics` from inside the namespace; None while it fails.
fn scrape(link: &Link, flowd: &Flowd) -> Option<String> {
    match link.b.http_get(flowd.listen, "/metrics") {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

#[test]
fn idle_connections_beyond_the_descriptors_detach_nothing_and_lose_nothing() {
    let link = Link::new();
    let tmp = TempDir::new("flowd-limits");
    let cfg = config(&tmp, 32);
    let fs = BpfFs::new();
    let mut flowd = Flowd::spawn(
        &link.b,
        &["--iface", &link.if_b, "--config", &cfg],
        &fs.pin_path(),
    );
    flowd.wait_ready(&link.b);
    // The soft and hard limits systemd gives by default would be 1024; 160
    // here is below what the connections below need without a cap (flowd
    // holds a few dozen descriptors for its maps, programs and links).
    let out = Command::new("prlimit")
        .args(["--pid", &flowd.pid().to_string(), "--nofile=160:160"])
        .output()
        .expect("prlimit (util-linux)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 400 idle connections: 32 held, the rest closed at once and counted.
    let conns = open_idle(&link, flowd.listen, 400);
    assert!(
        conns.len() >= 300,
        "only {} connections opened",
        conns.len()
    );
    // Traffic while they are open, across at least two reconcile passes.
    let (src, dst): (SocketAddr, SocketAddr) = (
        format!("{}:40001", link.ip_a).parse().unwrap(),
        format!("{}:40002", link.ip_b).parse().unwrap(),
    );
    send_udp(&link.a, src, dst, 500, 100);
    thread::sleep(Duration::from_millis(2500));
    assert!(has_xdp(&link.b, &link.if_b), "XDP program detached");
    send_udp(&link.a, src, dst, 500, 100);
    assert!(has_xdp(&link.b, &link.if_b), "XDP program detached");
    drop(conns);

    // Once the connections are gone, /metrics answers within 1 s.
    let t = Instant::now();
    let mut text = None;
    while t.elapsed() < Duration::from_secs(1) {
        if let Some(body) = scrape(&link, &flowd) {
            text = Some(body);
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let text = text.unwrap_or_else(|| {
        panic!(
            "/metrics silent 1 s after the connections closed; log:\n{}",
            flowd.log_text()
        )
    });
    assert_eq!(metric(&text, "flowd_http_connections_max", &[]), Some(32.0));
    let rejected = metric(&text, "flowd_http_connections_rejected_total", &[]).unwrap();
    assert!(
        rejected >= 268.0,
        "rejected {rejected} of 400 with a cap of 32"
    );
    let log = flowd.log_text();
    assert!(!log.contains("interface gone"), "{log}");

    // Every packet counted, in one flow (the flow is drained within 2 drains).
    let want = 1000u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let flows = flowd_tests::api_flows(&link.b, &flowd);
        let got: u64 = find_flows(&flows, &[("dport", "40002"), ("proto", "17")])
            .iter()
            .map(|f| f["packets"].as_u64().unwrap())
            .sum();
        if got == want {
            break;
        }
        assert!(
            got < want && Instant::now() < deadline,
            "{got} of {want} packets counted"
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(flowd.stop(), Some(0));
}

#[test]
fn half_a_header_is_cut_off_after_the_header_timeout() {
    let link = Link::new();
    let tmp = TempDir::new("flowd-limits-hdr");
    let cfg = config(&tmp, 64);
    let flowd = Flowd::start(&link.b, &["--iface", &link.if_b, "--config", &cfg]);
    let addr = flowd.listen;
    let (closed_after, idle_closed_after) = link.b.run(move || {
        // Half a request header, then nothing.
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x").unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 512];
        // hyper answers 408 or closes; either way the read ends.
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        let half = t.elapsed();
        // A connection that sends nothing at all.
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let t = Instant::now();
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "flowd sent something to a silent client");
        (half, t.elapsed())
    });
    for (what, d) in [
        ("half a header", closed_after),
        ("silence", idle_closed_after),
    ] {
        assert!(
            d >= Duration::from_millis(1500) && d < Duration::from_secs(8),
            "{what}: closed after {d:?}, the timeout is 2 s"
        );
    }
}

/// The idle timeout counts bytes either way: a client that reads a full
/// dump slowly, for longer than the 2 s timeout and without sending a byte
/// meanwhile, gets all of it.
#[test]
fn a_slow_reader_gets_a_whole_dump_longer_than_the_idle_timeout() {
    let link = Link::new();
    let tmp = TempDir::new("flowd-limits-slow");
    let cfg = config(&tmp, 64);
    let flowd = Flowd::start(
        &link.b,
        &[
            "--iface",
            &link.if_b,
            "--config",
            &cfg,
            "--drain-interval-ms",
            "200",
        ],
    );
    // 20,000 UDP flows from one source port: an 11 MB dump, more than the
    // kernel buffers between flowd and the client hold.
    const FLOWS: usize = 20_000;
    let src: SocketAddr = format!("{}:40001", link.ip_a).parse().unwrap();
    let ip_b = link.ip_b.clone();
    link.a.run(move || {
        let s = std::net::UdpSocket::bind(src).unwrap();
        for port in 0..FLOWS {
            let dst: SocketAddr = format!("{ip_b}:{}", 30_000 + port).parse().unwrap();
            while let Err(e) = s.send_to(&[0x5a; 10], dst) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOBUFS), "{e}");
                thread::sleep(Duration::from_micros(200));
            }
        }
    });
    let path = "/api/v1/flows?limit=all&proto=udp&port=40001";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = link
            .b
            .http_get(flowd.listen, &path.replace("limit=all", "limit=10000"))
            .map(|(_, body)| body.matches("\"dport\"").count())
            .unwrap_or(0);
        if n >= 10_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flows were not drained ({n})"
        );
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(Duration::from_millis(500));
    // Read at about 2 MB/s through a 4 KB receive window: the dump takes
    // some 5 s, and flowd is still writing it well after 2 s.
    let addr = flowd.listen;
    let (body, took) = link.b.run(move || slow_get(addr, path, 2 << 20));
    let text = String::from_utf8(body).unwrap();
    let json = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let flows: Vec<serde_json::Value> = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("the dump was cut after {took:?}: {e}"));
    assert_eq!(flows.len(), FLOWS);
    assert!(
        took > Duration::from_secs(3),
        "the dump took only {took:?}: not slow enough to test"
    );
}

/// An HTTP/1.0 GET read at about `rate` bytes a second through a small
/// receive window; the whole answer and how long it took.
fn slow_get(addr: SocketAddr, path: &str, rate: usize) -> (Vec<u8>, Duration) {
    use std::os::fd::FromRawFd as _;
    // SAFETY: a new socket; setsockopt with a valid int; the fd is owned by
    // the TcpStream made from it.
    let mut s = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let small: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const small).cast(),
            size_of::<libc::c_int>() as u32,
        );
        TcpStream::from_raw_fd(fd)
    };
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: connect with a valid sockaddr_in on the socket above.
    let r = unsafe {
        libc::connect(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            (&raw const sin).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        )
    };
    assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
    write!(s, "GET {path} HTTP/1.0\r\nHost: flowd\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let t = Instant::now();
    let mut body = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
        // Pace: no faster than `rate` on average.
        let due = Duration::from_secs_f64(body.len() as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(t.elapsed()) {
            thread::sleep(wait);
        }
    }
    (body, t.elapsed())
}
