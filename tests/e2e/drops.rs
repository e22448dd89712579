//! Kernel drop reasons (issue 14): the `kfree_skb` tracer counts the drops
//! on a monitored interface by the kernel's reason, exactly, and never
//! counts another namespace's interface that has the same ifindex.

use std::{net::SocketAddr, thread, time::Duration};

use flowd_tests::{Flowd, Link, Netns, metric, send_udp, wait};

const DROPS: &str = "flowd_kernel_drops_total";
const DROP_BYTES: &str = "flowd_kernel_drop_bytes_total";

/// The interface's ifindex inside its namespace (`ip -o link show`).
fn ifindex(ns: &Netns, ifc: &str) -> u32 {
    let out = ns.exec(&["ip", "-o", "link", "show", "dev", ifc]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ifindex in `{text}`"))
}

/// An nftables table in `ns` that drops UDP to `port` on input.
fn nft_drop_udp_port(ns: &Netns, port: u16) {
    let t = "flowd_drops_test";
    ns.exec(&["nft", "add", "table", "inet", t]);
    ns.exec(&[
        "nft",
        "add chain inet flowd_drops_test input { type filter hook input priority 0 ; }",
    ]);
    let rule = format!("udp dport {port} counter drop");
    ns.exec(&["nft", "add", "rule", "inet", t, "input", &rule]);
}

/// Packets the rule of [`nft_drop_udp_port`] in `ns` has dropped (its counter).
fn nft_dropped(ns: &Netns) -> u64 {
    let out = ns.exec(&["nft", "list", "table", "inet", "flowd_drops_test"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_once("counter packets ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no counter in `{text}`"))
}

/// Waits until `reason`'s count on `device` reaches `want`, lets late
/// events arrive, and returns (packets, bytes) of a final scrape.
fn settled_drops(link: &Link, flowd: &Flowd, reason: &str, want: u64) -> (f64, f64, String) {
    let labels = [("device", link.if_b.as_str()), ("reason", reason)];
    wait::metric_reaches(&link.b, flowd, DROPS, &labels, want as f64);
    thread::sleep(Duration::from_millis(300));
    let text = wait::scrape(&link.b, flowd);
    let packets = metric(&text, DROPS, &labels).unwrap_or(-1.0);
    let bytes = metric(&text, DROP_BYTES, &labels).unwrap_or(-1.0);
    (packets, bytes, text)
}

/// N datagrams to a UDP port an nftables rule drops -> `netfilter_drop` N,
/// with `skb->len` at the input hook (IPv4 + UDP + payload) each. The same
/// rule in another namespace whose interface has the same ifindex drops M
/// more, which the monitored interface must not be charged with.
#[test]
fn netfilter_drops_exactly_and_not_another_namespaces_same_ifindex() {
    const N: usize = 40;
    const M: usize = 25;
    const PAYLOAD: usize = 100;
    const PORT: u16 = 9101;

    let link = Link::new();
    let other = Link::new();
    let (idx, other_idx) = (ifindex(&link.b, &link.if_b), ifindex(&other.b, &other.if_b));
    assert_eq!(
        idx, other_idx,
        "the test needs the two receiving interfaces to share an ifindex"
    );
    nft_drop_udp_port(&link.b, PORT);
    nft_drop_udp_port(&other.b, PORT);
    let mut flowd = Flowd::start(
        &link.b,
        &["--iface", &link.if_b, "--drain-interval-ms", "100"],
    );

    // The other namespace first: if it were attributed, the count below
    // would be N + M.
    let dst: SocketAddr = format!("{}:{PORT}", other.ip_b).parse().unwrap();
    let src: SocketAddr = format!("{}:40001", other.ip_a).parse().unwrap();
    send_udp(&other.a, src, dst, M, PAYLOAD);
    let dst: SocketAddr = format!("{}:{PORT}", link.ip_b).parse().unwrap();
    let src: SocketAddr = format!("{}:40001", link.ip_a).parse().unwrap();
    send_udp(&link.a, src, dst, N, PAYLOAD);

    let (packets, bytes, text) = settled_drops(&link, &flowd, "netfilter_drop", N as u64);
    assert_eq!(packets, N as f64, "{text}");
    assert_eq!(bytes, (N * (20 + 8 + PAYLOAD)) as f64, "{text}");
    // The kernel's own count agrees, and the other namespace's drops
    // really happened (so attributing them would show).
    assert_eq!(nft_dropped(&link.b), N as u64);
    assert_eq!(nft_dropped(&other.b), M as u64);
    assert_eq!(flowd.stop(), Some(0), "log:\n{}", flowd.log_text());
}

/// N datagrams to a UDP port without a socket -> `no_socket` N, with
/// `skb->len` at the UDP layer (UDP header + payload) each.
#[test]
fn udp_to_a_closed_port_counts_no_socket_exactly() {
    const N: usize = 30;
    const PAYLOAD: usize = 64;

    let link = Link::new();
    let mut flowd = Flowd::start(
        &link.b,
        &["--iface", &link.if_b, "--drain-interval-ms", "100"],
    );
    let dst: SocketAddr = format!("{}:9102", link.ip_b).parse().unwrap();
    let src: SocketAddr = format!("{}:40002", link.ip_a).parse().unwrap();
    send_udp(&link.a, src, dst, N, PAYLOAD);

    let (packets, bytes, text) = settled_drops(&link, &flowd, "no_socket", N as u64);
    assert_eq!(packets, N as f64, "{text}");
    assert_eq!(bytes, (N * (8 + PAYLOAD)) as f64, "{text}");
    assert_eq!(flowd.stop(), Some(0), "log:\n{}", flowd.log_text());
}

/// `[drops] enabled = false`: no tracer, no families.
#[test]
fn drops_off_has_no_families() {
    let link = Link::new();
    let dir = flowd_tests::TempDir::new("drops-off");
    let cfg = dir.path().join("flowd.toml");
    std::fs::write(&cfg, "[drops]\nenabled = false\n").unwrap();
    let mut flowd = Flowd::start(
        &link.b,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--iface",
            &link.if_b,
            "--drain-interval-ms",
            "100",
        ],
    );
    let text = wait::scrape(&link.b, &flowd);
    assert!(text.contains("flowd_receive_packets_total"), "{text}");
    assert!(!text.contains("flowd_kernel_drop"), "{text}");
    assert_eq!(flowd.stop(), Some(0), "log:\n{}", flowd.log_text());
}

/// The receiving namespace's `Udp: RcvbufErrors` (`/proc/net/snmp`).
fn udp_rcvbuf_errors(ns: &Netns) -> u64 {
    let out = ns.exec(&["cat", "/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .unwrap_or_else(|| panic!("no RcvbufErrors in `{names}`"));
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// A UDP socket with the smallest receive buffer, never read: what does
/// not fit is dropped with `socket_rcvbuff`, exactly as many as the
/// kernel's own `UdpRcvbufErrors` grew by, with `skb->len` = the payload
/// (the UDP header is pulled before the socket's queue) each.
#[test]
fn a_full_socket_buffer_counts_socket_rcvbuff_as_the_kernel_does() {
    use std::os::fd::AsRawFd;
    const N: usize = 200;
    const PAYLOAD: usize = 100;

    let link = Link::new();
    let mut flowd = Flowd::start(
        &link.b,
        &["--iface", &link.if_b, "--drain-interval-ms", "100"],
    );
    let dst: SocketAddr = format!("{}:9103", link.ip_b).parse().unwrap();
    let rx = link.b.run(move || {
        let s = std::net::UdpSocket::bind(dst).unwrap();
        let one: libc::c_int = 1;
        // SAFETY: a valid socket and an int option of the right size; the
        // kernel raises it to its minimum (SOCK_MIN_RCVBUF).
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVBUF");
        s
    });
    let before = udp_rcvbuf_errors(&link.b);
    let src: SocketAddr = format!("{}:40003", link.ip_a).parse().unwrap();
    send_udp(&link.a, src, dst, N, PAYLOAD);
    let dropped = wait::settled("UdpRcvbufErrors", Duration::from_millis(300), || {
        udp_rcvbuf_errors(&link.b)
    }) - before;
    assert!(
        dropped > 0 && dropped < N as u64,
        "the buffer should hold a few and drop the rest: {dropped}"
    );

    let (packets, bytes, text) = settled_drops(&link, &flowd, "socket_rcvbuff", dropped);
    assert_eq!(packets, dropped as f64, "{text}");
    assert_eq!(bytes, (dropped as usize * PAYLOAD) as f64, "{text}");
    drop(rx);
    assert_eq!(flowd.stop(), Some(0), "log:\n{}", flowd.log_text());
}

/// A monitored interface goes away and an interface flowd does not
/// monitor comes up in the same namespace with the same ifindex: its drops
/// are not charged to the old one.
#[test]
fn a_new_unmonitored_interface_with_a_gone_ones_ifindex_is_not_attributed() {
    const N: usize = 20;
    const M: usize = 15;
    const PAYLOAD: usize = 50;
    const PORT: u16 = 9104;

    let link = Link::new();
    let idx = ifindex(&link.b, &link.if_b);
    nft_drop_udp_port(&link.b, PORT);
    let mut flowd = Flowd::start(
        &link.b,
        &["--iface", &link.if_b, "--drain-interval-ms", "100"],
    );
    let dst: SocketAddr = format!("{}:{PORT}", link.ip_b).parse().unwrap();
    let src: SocketAddr = format!("{}:40004", link.ip_a).parse().unwrap();
    send_udp(&link.a, src, dst, N, PAYLOAD);
    let (packets, _, text) = settled_drops(&link, &flowd, "netfilter_drop", N as u64);
    assert_eq!(packets, N as f64, "{text}");

    link.delete_pair();
    wait::log_contains("interface gone", || flowd.log_text());
    // Another pair, its namespace-b end given the old ifindex.
    let tag = flowd_tests::unique_tag();
    let (new_a, new_b) = (format!("ga{tag}"), format!("gb{tag}"));
    let idx_s = idx.to_string();
    link.b.exec(&[
        "ip",
        "link",
        "add",
        &new_b,
        "index",
        &idx_s,
        "address",
        &link.mac_b,
        "type",
        "veth",
        "peer",
        "name",
        &new_a,
        "netns",
        &link.a.name,
        "address",
        &link.mac_a,
    ]);
    for (ns, ifc, ip, peer_ip, peer_mac) in [
        (&link.a, &new_a, &link.ip_a, &link.ip_b, &link.mac_b),
        (&link.b, &new_b, &link.ip_b, &link.ip_a, &link.mac_a),
    ] {
        ns.exec(&["ip", "addr", "add", &format!("{ip}/30"), "dev", ifc]);
        ns.exec(&["ip", "link", "set", ifc, "up"]);
        ns.exec(&[
            "ip",
            "neigh",
            "replace",
            peer_ip,
            "lladdr",
            peer_mac,
            "dev",
            ifc,
            "nud",
            "permanent",
        ]);
    }
    assert_eq!(ifindex(&link.b, &new_b), idx, "the new interface's ifindex");
    send_udp(&link.a, src, dst, M, PAYLOAD);
    wait::reaches("nft drops", (N + M) as u64, || nft_dropped(&link.b));
    thread::sleep(Duration::from_millis(300));
    let text = wait::scrape(&link.b, &flowd);
    let labels = [("device", link.if_b.as_str()), ("reason", "netfilter_drop")];
    assert_eq!(metric(&text, DROPS, &labels), Some(N as f64), "{text}");
    assert_eq!(flowd.stop(), Some(0), "log:\n{}", flowd.log_text());
}
