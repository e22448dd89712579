//! Per-flow accounting over veth: real TCP, UDP and ICMP in both directions,
//! IPv4 and IPv6, checked against what was sent and against the kernel's own
//! interface counters.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    thread,
    time::Duration,
};

use flowd_tests::{
    Flowd, Link, Netns, api_flows, find_flows, metric, ping, read_records, send_udp, send_udp_on,
    wait,
};
use serde_json::Value;

fn sum(flows: &[&Value], key: &str) -> u64 {
    flows.iter().map(|f| f[key].as_u64().unwrap()).sum()
}

/// Polls the flow API until `done` holds (the drain runs every 100 ms).
fn flows_when(ns: &Netns, flowd: &Flowd, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    wait::until(
        "the drained flows",
        wait::DEADLINE,
        || api_flows(ns, flowd),
        |f| done(f),
    )
}

/// Counts, in `ns`'s input hook, the TCP packets and their IP bytes that
/// match `rule` (an nft match, e.g. `tcp dport 8080`): what arrived on the
/// wire, one segment each (GRO is off), independent of flowd.
struct TcpCounter {
    ns: String,
}

impl TcpCounter {
    fn new(ns: &Netns, rule: &str) -> Self {
        let script = format!(
            "table inet flowdt {{ counter seen {{ }}\n chain input {{ type filter hook input priority 0; policy accept; {rule} counter name seen\n }}\n}}\n"
        );
        // In a TempDir: removed also when nft fails.
        let dir = flowd_tests::TempDir::new("flowdt-nft");
        let path = dir.path().join("rules.nft");
        std::fs::write(&path, script).unwrap();
        ns.exec(&["nft", "-f", path.to_str().unwrap()]);
        Self {
            ns: ns.name.clone(),
        }
    }

    /// (packets, Ethernet frame bytes): the IP bytes plus 14 per frame.
    fn frames(&self) -> (u64, u64) {
        let out = flowd_tests::sh(&[
            "ip", "netns", "exec", &self.ns, "nft", "-j", "list", "counter", "inet", "flowdt",
            "seen",
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).expect("nft -j output");
        let c = v["nftables"]
            .as_array()
            .and_then(|a| a.iter().find_map(|x| x.get("counter")))
            .unwrap_or_else(|| panic!("no counter in {v}"));
        let (p, b) = (c["packets"].as_u64().unwrap(), c["bytes"].as_u64().unwrap());
        (p, b + 14 * p)
    }
}

/// Sends `bytes` over one TCP connection from `a` to a listener in `b` and
/// has the listener send `reply` bytes back; returns after both closed.
fn tcp_exchange(link: &Link, dst: SocketAddr, src: SocketAddr, bytes: usize, reply: usize) {
    let listener: TcpListener = link.b.run(move || TcpListener::bind(dst).unwrap());
    let server = link.b.spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = vec![0u8; bytes];
        s.read_exact(&mut got).unwrap();
        s.write_all(&vec![7u8; reply]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
    });
    link.a.run(move || {
        let sock = socket2_connect(src, dst);
        let mut s = sock;
        s.write_all(&vec![1u8; bytes]).unwrap();
        let mut got = vec![0u8; reply];
        s.read_exact(&mut got).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
    });
    server.join().unwrap();
}

/// A TCP connection from a fixed source address and port.
fn socket2_connect(src: SocketAddr, dst: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let domain = if src.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket calls on a fresh fd that TcpStream then owns.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let one: i32 = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&raw const one).cast(),
            4,
        );
        let std_listener_addr = src;
        let s = TcpStream::from_raw_fd(fd);
        let sa = socket_addr_raw(std_listener_addr);
        assert_eq!(
            libc::bind(fd, (&raw const sa.0).cast(), sa.1),
            0,
            "bind {src}: {}",
            std::io::Error::last_os_error()
        );
        let da = socket_addr_raw(dst);
        assert_eq!(
            libc::connect(fd, (&raw const da.0).cast(), da.1),
            0,
            "connect {dst}: {}",
            std::io::Error::last_os_error()
        );
        s
    }
}

fn socket_addr_raw(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is valid; the writes fit.
    unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        match a {
            SocketAddr::V4(v4) => {
                let p = (&raw mut ss).cast::<libc::sockaddr_in>();
                (*p).sin_family = libc::AF_INET as u16;
                (*p).sin_port = v4.port().to_be();
                (*p).sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
                (ss, size_of::<libc::sockaddr_in>() as u32)
            }
            SocketAddr::V6(v6) => {
                let p = (&raw mut ss).cast::<libc::sockaddr_in6>();
                (*p).sin6_family = libc::AF_INET6 as u16;
                (*p).sin6_port = v6.port().to_be();
                (*p).sin6_addr.s6_addr = v6.ip().octets();
                (ss, size_of::<libc::sockaddr_in6>() as u32)
            }
        }
    }
}

/// IPv4: UDP both ways, ICMP echo, one TCP connection; flowd on B sees A->B
/// as ingress and B->A as egress. UDP and ICMP flows are exact by
/// construction; the TCP flow is the rest of what the kernel counted on the
/// interface, so every packet is in exactly one flow.
#[test]
fn ipv4_tcp_udp_icmp_both_directions() {
    let link = Link::new();
    link.no_offloads();
    let before = link.b.link_stats(&link.if_b);
    let flowd = Flowd::start(
        &link.b,
        &["--iface", &link.if_b, "--drain-interval-ms", "100"],
    );

    let b_udp: SocketAddr = format!("{}:5353", link.ip_b).parse().unwrap();
    let a_udp: SocketAddr = format!("{}:6000", link.ip_a).parse().unwrap();
    let sock_b: UdpSocket = link.b.run(move || UdpSocket::bind(b_udp).unwrap());
    let sock_a: UdpSocket = link.a.run(move || UdpSocket::bind(a_udp).unwrap());
    send_udp_on(&sock_a, b_udp, 500, 200); // 242-byte frames in
    send_udp_on(&sock_b, a_udp, 300, 50); //  92-byte frames out
    assert_eq!(ping(&link.a, link.ip_b.parse().unwrap(), 10, 56), 10);
    let tcp_dst: SocketAddr = format!("{}:8080", link.ip_b).parse().unwrap();
    let tcp_src: SocketAddr = format!("{}:41000", link.ip_a).parse().unwrap();
    tcp_exchange(&link, tcp_dst, tcp_src, 200_000, 50_000);

    let after = link.b.link_stats(&link.if_b);
    let rx_p = after.rx_packets - before.rx_packets;
    // With an XDP program attached, veth counts a received frame after
    // eth_type_trans has pulled the 14-byte Ethernet header: add it back.
    let rx_b = after.rx_bytes - before.rx_bytes + 14 * rx_p;
    let (tx_p, tx_b) = (
        after.tx_packets - before.tx_packets,
        after.tx_bytes - before.tx_bytes,
    );

    let flows = flows_when(&link.b, &flowd, |f| {
        let ing = find_flows(f, &[("direction", "ingress")]);
        let eg = find_flows(f, &[("direction", "egress")]);
        sum(&ing, "packets") == rx_p && sum(&eg, "packets") == tx_p
    });
    let dev = link.if_b.as_str();
    let q = |dir: &str, src: &str, dst: &str, proto: &str| {
        find_flows(
            &flows,
            &[
                ("device", dev),
                ("direction", dir),
                ("src", src),
                ("dst", dst),
                ("proto", proto),
            ],
        )
    };
    let (a, b) = (link.ip_a.as_str(), link.ip_b.as_str());

    let udp_in = q("ingress", a, b, "17");
    assert_eq!(udp_in.len(), 1, "{flows:#?}");
    assert_eq!(
        (sum(&udp_in, "packets"), sum(&udp_in, "bytes")),
        (500, 500 * 242)
    );
    assert_eq!(
        (udp_in[0]["sport"].as_u64(), udp_in[0]["dport"].as_u64()),
        (Some(6000), Some(5353))
    );
    let udp_out = q("egress", b, a, "17");
    assert_eq!(
        (sum(&udp_out, "packets"), sum(&udp_out, "bytes")),
        (300, 300 * 92)
    );

    // Echo requests in (type 8: dport 2048), replies out (type 0: dport 0); 98-byte frames.
    let icmp_in = q("ingress", a, b, "1");
    assert_eq!(
        (sum(&icmp_in, "packets"), sum(&icmp_in, "bytes")),
        (10, 980)
    );
    assert_eq!(icmp_in[0]["dport"].as_u64(), Some(2048));
    let icmp_out = q("egress", b, a, "1");
    assert_eq!(
        (sum(&icmp_out, "packets"), sum(&icmp_out, "bytes")),
        (10, 980)
    );
    assert_eq!(icmp_out[0]["dport"].as_u64(), Some(0));

    // TCP: whatever else the kernel counted on the interface, to the byte.
    let tcp_in = q("ingress", a, b, "6");
    let tcp_out = q("egress", b, a, "6");
    assert_eq!(tcp_in.len(), 1, "{flows:#?}");
    assert_eq!(tcp_out.len(), 1, "{flows:#?}");
    assert_eq!(sum(&tcp_in, "packets"), rx_p - 500 - 10);
    assert_eq!(sum(&tcp_in, "bytes"), rx_b - 500 * 242 - 980);
    assert_eq!(sum(&tcp_out, "packets"), tx_p - 300 - 10);
    assert_eq!(sum(&tcp_out, "bytes"), tx_b - 300 * 92 - 980);
    assert!(
        sum(&tcp_in, "bytes") > 200_000,
        "the payload alone is 200000 bytes"
    );
    // SYN, FIN and ACK seen both ways (0x13), with one SYN each way.
    assert_eq!(tcp_in[0]["tcp_flags"].as_u64().unwrap() & 0x13, 0x13);
    assert_eq!(tcp_out[0]["tcp_flags"].as_u64().unwrap() & 0x13, 0x13);
    assert_eq!(
        (tcp_in[0]["syn"].as_u64(), tcp_out[0]["syn"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (tcp_in[0]["sport"].as_u64(), tcp_in[0]["dport"].as_u64()),
        (Some(41000), Some(8080))
    );

    // Interface totals equal the kernel's counters exactly.
    let text = wait::scrape(&link.b, &flowd);
    let d = [("device", dev)];
    assert_eq!(
        metric(&text, "flowd_receive_packets_total", &d),
        Some(rx_p as f64)
    );
    assert_eq!(
        metric(&text, "flowd_receive_bytes_total", &d),
        Some(rx_b as f64)
    );
    assert_eq!(
        metric(&text, "flowd_transmit_packets_total", &d),
        Some(tx_p as f64)
    );
    assert_eq!(
        metric(&text, "flowd_transmit_bytes_total", &d),
        Some(tx_b as f64)
    );
}

/// IPv6: UDP both ways, ICMPv6 echo and TCP; per-flow numbers exact.
/// (MLD reports the kernel sends itself are flows of their own here.)
#[test]
fn ipv6_udp_icmpv6_tcp_both_directions() {
    let link = Link::dual_stack();
    link.no_offloads();
    let flowd = Flowd::start(
        &link.b,
        &["--iface", &link.if_b, "--drain-interval-ms", "100"],
    );
    let b_udp: SocketAddr = format!("[{}]:5353", link.ip6_b).parse().unwrap();
    let a_udp: SocketAddr = format!("[{}]:6000", link.ip6_a).parse().unwrap();
    let sock_b: UdpSocket = link.b.run(move || UdpSocket::bind(b_udp).unwrap());
    let sock_a: UdpSocket = link.a.run(move || UdpSocket::bind(a_udp).unwrap());
    send_udp_on(&sock_a, b_udp, 400, 100); // 14+40+8+100 = 162-byte frames
    send_udp_on(&sock_b, a_udp, 200, 10); //  72-byte frames
    let ip6_b: IpAddr = link.ip6_b.parse().unwrap();
    assert_eq!(ping(&link.a, ip6_b, 7, 32), 7); // 14+40+8+32 = 94-byte frames
    let tcp_dst: SocketAddr = format!("[{}]:8080", link.ip6_b).parse().unwrap();
    let tcp_src: SocketAddr = format!("[{}]:41000", link.ip6_a).parse().unwrap();
    // The kernel counts the connection's frames as each side receives them.
    let tcp_at_b = TcpCounter::new(&link.b, "tcp sport 41000 tcp dport 8080");
    let tcp_at_a = TcpCounter::new(&link.a, "tcp sport 8080 tcp dport 41000");
    tcp_exchange(&link, tcp_dst, tcp_src, 100_000, 1000);

    // flowd prints addresses in their canonical form ("fd00:f10d:0::1" is "fd00:f10d::1").
    let canonical = |ip: &str| ip.parse::<IpAddr>().unwrap().to_string();
    let (a, b) = (&*canonical(&link.ip6_a), &*canonical(&link.ip6_b));
    let dev = link.if_b.as_str();
    // Each side has received the other's last segment when tcp_exchange
    // returns (the last ACK from B may still be on its way to A: the counter
    // at A is read once flowd holds every frame B sent).
    let (in_p, in_b) = tcp_at_b.frames();
    let flows = flows_when(&link.b, &flowd, |f| {
        let t = find_flows(f, &[("direction", "egress"), ("proto", "6"), ("src", b)]);
        let t_in = find_flows(f, &[("direction", "ingress"), ("proto", "6"), ("src", a)]);
        t.first().is_some_and(|t| {
            t["fin"].as_u64() == Some(1) && t["packets"].as_u64() == Some(tcp_at_a.frames().0)
        }) && sum(&t_in, "packets") >= in_p
    });
    let q = |dir: &str, src: &str, dst: &str, proto: &str| {
        find_flows(
            &flows,
            &[
                ("device", dev),
                ("direction", dir),
                ("src", src),
                ("dst", dst),
                ("proto", proto),
            ],
        )
    };
    let udp_in = q("ingress", a, b, "17");
    assert_eq!(
        (sum(&udp_in, "packets"), sum(&udp_in, "bytes")),
        (400, 400 * 162)
    );
    let udp_out = q("egress", b, a, "17");
    assert_eq!(
        (sum(&udp_out, "packets"), sum(&udp_out, "bytes")),
        (200, 200 * 72)
    );
    let echo_in = q("ingress", a, b, "58");
    assert_eq!(
        (sum(&echo_in, "packets"), sum(&echo_in, "bytes")),
        (7, 7 * 94)
    );
    assert_eq!(echo_in[0]["dport"].as_u64(), Some(128 * 256));
    let echo_out = find_flows(
        &flows,
        &[
            ("direction", "egress"),
            ("src", b),
            ("dst", a),
            ("proto", "58"),
            ("dport", "33024"),
        ],
    );
    assert_eq!(
        (sum(&echo_out, "packets"), sum(&echo_out, "bytes")),
        (7, 7 * 94)
    );
    let tcp_in = q("ingress", a, b, "6");
    let tcp_out = q("egress", b, a, "6");
    assert_eq!((tcp_in.len(), tcp_out.len()), (1, 1), "{flows:#?}");
    // Every frame of the connection, to the byte, as the receiving kernels counted them.
    assert_eq!(
        (sum(&tcp_in, "packets"), sum(&tcp_in, "bytes")),
        (in_p, in_b),
        "A to B, as B received it"
    );
    assert_eq!(
        (sum(&tcp_out, "packets"), sum(&tcp_out, "bytes")),
        tcp_at_a.frames(),
        "B to A, as A received it"
    );
    assert!(
        in_b > 100_000 + 14 + 40 + 20,
        "the payload alone is 100000 bytes"
    );
    assert_eq!(
        (tcp_in[0]["syn"].as_u64(), tcp_out[0]["syn"].as_u64()),
        (Some(1), Some(1))
    );

    // Totals: every ingress packet is in one flow or a non-flow outcome.
    let text = wait::scrape(&link.b, &flowd);
    let all_in = find_flows(&flows, &[("direction", "ingress")]);
    let rx = metric(&text, "flowd_receive_packets_total", &[("device", dev)]).unwrap() as u64;
    assert!(sum(&all_in, "packets") <= rx);
}

/// Continuous traffic with a 100 ms drain: the sum over all flows equals the
/// interface total exactly, generation flips notwithstanding.
#[test]
fn drain_under_load_loses_nothing() {
    let link = Link::new();
    let flowd = Flowd::start(
        &link.b,
        &["--iface", &link.if_b, "--drain-interval-ms", "100"],
    );
    let dst: SocketAddr = format!("{}:9000", link.ip_b).parse().unwrap();
    let _rx: UdpSocket = link.b.run(move || UdpSocket::bind(dst).unwrap());
    // 64 senders (distinct source ports), 4,000 datagrams each, in 8
    // rounds with a whole drain (a generation flip) between one round and
    // the next: the traffic spans several drains by construction.
    let drains = || metric(&wait::scrape(&link.b, &flowd), "flowd_drains_total", &[]).unwrap();
    let mut last_drain = drains();
    let mut total = 0u64;
    for round in 0..8u16 {
        for port in 0..64u16 {
            let src: SocketAddr = format!("{}:{}", link.ip_a, 20000 + port).parse().unwrap();
            send_udp(&link.a, src, dst, 500, 18 + (round as usize)); // 60+round-byte frames
            total += 500;
        }
        // Two more drains: the second one began after this round was sent.
        last_drain = wait::until("two drains", wait::DEADLINE, drains, |&d| {
            d >= last_drain + 2.0
        });
    }
    let flows = flows_when(&link.b, &flowd, |f| {
        sum(&find_flows(f, &[("direction", "ingress")]), "packets") == total
    });
    let ing = find_flows(&flows, &[("direction", "ingress")]);
    assert_eq!(ing.len(), 64);
    assert_eq!(sum(&ing, "packets"), total);
    let expect_bytes: u64 = (0..8u64).map(|r| 64 * 500 * (60 + r)).sum();
    assert_eq!(sum(&ing, "bytes"), expect_bytes);
    let text = wait::scrape(&link.b, &flowd);
    let d = [("device", link.if_b.as_str())];
    assert_eq!(
        metric(&text, "flowd_receive_packets_total", &d),
        Some(total as f64)
    );
    assert_eq!(
        metric(&text, "flowd_receive_bytes_total", &d),
        Some(expect_bytes as f64)
    );
    let drains = metric(&text, "flowd_drains_total", &[]).unwrap();
    assert!(drains >= 10.0, "expected many drains, saw {drains}");
}

/// Capacity 64 and 1,000 distinct flows within one drain interval, with
/// the early drain off: the totals stay exact and the overflow record holds
/// what did not fit.
#[test]
fn full_flow_map_overflows_without_losing_totals() {
    let link = Link::new();
    let flowd = Flowd::start(
        &link.b,
        &[
            "--iface",
            &link.if_b,
            "--flow-capacity",
            "64",
            "--drain-interval-ms",
            "60000",
            "--drain-at-fill-percent",
            "0",
        ],
    );
    let dst: SocketAddr = format!("{}:9000", link.ip_b).parse().unwrap();
    let _rx: UdpSocket = link.b.run(move || UdpSocket::bind(dst).unwrap());
    for port in 0..1000u16 {
        let src: SocketAddr = format!("{}:{}", link.ip_a, 30000 + port).parse().unwrap();
        send_udp(&link.a, src, dst, 1, 58); // 100-byte frames
    }
    let d = [("device", link.if_b.as_str()), ("direction", "receive")];
    let dev = [("device", link.if_b.as_str())];
    // The last frames may still be on their way through XDP: wait for the
    // counts to be reached, then check they are exact.
    let text = wait::until(
        "1000 packets received, 936 of them in the overflow record",
        wait::DEADLINE,
        || wait::scrape(&link.b, &flowd),
        |t| {
            metric(t, "flowd_receive_packets_total", &dev) >= Some(1000.0)
                && metric(t, "flowd_overflow_packets_total", &d) >= Some(936.0)
        },
    );
    assert_eq!(
        metric(&text, "flowd_receive_packets_total", &dev),
        Some(1000.0)
    );
    assert_eq!(
        metric(&text, "flowd_receive_bytes_total", &dev),
        Some(100_000.0)
    );
    assert_eq!(
        metric(&text, "flowd_overflow_packets_total", &d),
        Some(936.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "flowd_overflow_bytes_total", &d),
        Some(93_600.0)
    );
    let full = [
        ("device", link.if_b.as_str()),
        ("direction", "receive"),
        ("reason", "map_full"),
    ];
    assert_eq!(
        metric(&text, "flowd_flow_lost_packets_total", &full),
        Some(936.0)
    );
}

/// 10,000 new flows into maps of 4,096 with a 60 s drain interval: the
/// early drain (at 25 % fill) empties each generation before it is full,
/// so every flow is in a record and nothing overflows; with the early drain
/// off the same traffic overflows 5,904 packets (the test above shows the
/// overflow path exactly).
#[test]
fn a_burst_of_new_flows_is_drained_before_the_map_fills() {
    const FLOWS: u16 = 10_000;
    let tmp = flowd_tests::TempDir::new("flowd-burst");
    let dir = tmp.path().to_path_buf();
    let path = dir.join("flows.jsonl");
    let link = Link::new();
    let mut flowd = Flowd::start(
        &link.b,
        &[
            "--iface",
            &link.if_b,
            "--flow-capacity",
            "4096",
            "--drain-interval-ms",
            "60000",
            "--drain-at-fill-percent",
            "25",
            "--records",
            path.to_str().unwrap(),
        ],
    );
    let dst: SocketAddr = format!("{}:9000", link.ip_b).parse().unwrap();
    let _rx: UdpSocket = link.b.run(move || UdpSocket::bind(dst).unwrap());
    let src_ip = link.ip_a.clone();
    // 5,000 new flows per second: 100 per 20 ms check, far below the 3,072
    // entries left above the threshold.
    link.a.run(move || {
        let payload = [0x5a; 58]; // 100-byte frames
        for i in 0..FLOWS {
            let src: SocketAddr = format!("{src_ip}:{}", 20_000 + i).parse().unwrap();
            let s = UdpSocket::bind(src).expect("bind sender");
            s.send_to(&payload, dst).expect("send");
            if i % 50 == 49 {
                thread::sleep(Duration::from_millis(10));
            }
        }
    });
    let d = [("device", link.if_b.as_str()), ("direction", "receive")];
    let dev = [("device", link.if_b.as_str())];
    let text = wait::metric_reaches(
        &link.b,
        &flowd,
        "flowd_receive_packets_total",
        &dev,
        f64::from(FLOWS),
    );
    assert_eq!(
        metric(&text, "flowd_receive_packets_total", &dev),
        Some(f64::from(FLOWS))
    );
    assert_eq!(
        metric(&text, "flowd_overflow_packets_total", &d),
        Some(0.0),
        "{text}"
    );
    // No overflow with 10,000 flows in maps of 4,096 takes at least two
    // drains before the last generation; the interval drain comes after 60 s.
    let early = metric(&text, "flowd_drains_early_total", &[]).unwrap();
    assert!(early >= 2.0, "early drains: {early}");
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    let recs: Vec<_> = read_records(&path)
        .into_iter()
        .filter(|r| r["direction"] == "ingress" && r["dport"] == 9000)
        .collect();
    assert_eq!(recs.len(), usize::from(FLOWS));
    let mut ports: Vec<u64> = recs.iter().map(|r| r["sport"].as_u64().unwrap()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), usize::from(FLOWS), "one record per flow");
    assert!(
        recs.iter()
            .all(|r| r["packets"].as_u64() == Some(1) && r["bytes"].as_u64() == Some(100)),
        "every flow: 1 packet, 100 bytes"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
