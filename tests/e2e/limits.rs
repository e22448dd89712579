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
