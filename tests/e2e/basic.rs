//! The first slice: exact per-interface receive totals over veth.

use std::net::{SocketAddr, UdpSocket};

use flowd_tests::{Flowd, Link, has_xdp, metric, send_udp, wait};

/// 1000 UDP datagrams of 100 payload bytes: each frame is
/// 14 (Ethernet) + 20 (IPv4) + 8 (UDP) + 100 = 142 bytes on the wire.
#[test]
fn counts_exactly_1000_udp_datagrams() {
    const COUNT: usize = 1000;
    const PAYLOAD: usize = 100;
    const FRAME: u64 = 14 + 20 + 8 + PAYLOAD as u64;

    let link = Link::new();
    let mut flowd = Flowd::start(
        &link.b,
        &["--iface", &link.if_b, "--drain-interval-ms", "100"],
    );
    assert!(has_xdp(&link.b, &link.if_b), "XDP not attached");

    let dst: SocketAddr = format!("{}:9999", link.ip_b).parse().unwrap();
    // A listener, so the receiver sends no ICMP port-unreachable back.
    let _rx: UdpSocket = link.b.run(move || UdpSocket::bind(dst).unwrap());
    let src: SocketAddr = format!("{}:40000", link.ip_a).parse().unwrap();
    send_udp(&link.a, src, dst, COUNT, PAYLOAD);

    // send_to returns before the receiving side has run XDP on every frame:
    // wait until the count is reached, then check it is exact.
    let dev = [("device", link.if_b.as_str())];
    let text = wait::metric_reaches(
        &link.b,
        &flowd,
        "flowd_receive_packets_total",
        &dev,
        COUNT as f64,
    );
    assert_eq!(
        metric(&text, "flowd_receive_packets_total", &dev),
        Some(COUNT as f64),
        "{text}"
    );
    assert_eq!(
        metric(&text, "flowd_receive_bytes_total", &dev),
        Some((COUNT as u64 * FRAME) as f64),
        "{text}"
    );

    assert_eq!(
        flowd.stop(),
        Some(0),
        "flowd exit status; log:\n{}",
        flowd.log_text()
    );
    assert!(
        !has_xdp(&link.b, &link.if_b),
        "XDP program left on the interface after exit"
    );
}
