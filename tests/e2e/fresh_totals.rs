//! An interface attached fresh (no pinned link of an earlier flowd
//! survives for it) starts its totals at zero, also when it got the
//! ifindex of an interface an earlier flowd counted.

use std::{
    net::{SocketAddr, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use flowd_tests::{BpfFs, Flowd, Link, Netns, metric, send_udp_on, unique_tag};

fn ifindex(ns: &Netns, ifc: &str) -> u32 {
    let out = ns.exec(&["ip", "-j", "link", "show", "dev", ifc]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    v[0]["ifindex"].as_u64().expect("ifindex") as u32
}

/// One end of a quiet IPv4 link: no IPv6, a static neighbour.
fn configure(ns: &Netns, ifc: &str, ip: &str, peer_ip: &str, peer_mac: &str) {
    ns.exec(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{ifc}.disable_ipv6=1"),
    ]);
    ns.exec(&["ip", "addr", "add", &format!("{ip}/30"), "dev", ifc]);
    ns.exec(&["ip", "link", "set", ifc, "up"]);
    ns.exec(&[
        "ip",
        "-4",
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

fn mac_of(ns: &Netns, ifc: &str) -> String {
    let out = ns.exec(&["ip", "-j", "link", "show", "dev", ifc]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    v[0]["address"].as_str().expect("address").to_owned()
}

fn receive_packets(ns: &Netns, f: &Flowd, device: &str) -> Option<f64> {
    let (_, text) = ns.http_get(f.listen, "/metrics").expect("scrape");
    metric(&text, "flowd_receive_packets_total", &[("device", device)])
}

/// Polls until the device's receive packets equal `want` (10 s at most).
fn receive_packets_when(ns: &Netns, f: &Flowd, device: &str, want: f64) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = receive_packets(ns, f, device);
        if v == Some(want) || Instant::now() > deadline {
            return v;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn send(link: &Link, count: usize) {
    let dst: SocketAddr = format!("{}:7700", link.ip_b).parse().unwrap();
    let src: SocketAddr = format!("{}:7701", link.ip_a).parse().unwrap();
    let _rx = link.b.run(move || UdpSocket::bind(dst).unwrap());
    let tx = link.a.run(move || UdpSocket::bind(src).unwrap());
    send_udp_on(&tx, dst, count, 58);
}

#[test]
fn a_new_interface_on_a_reused_ifindex_starts_at_zero() {
    let link = Link::new();
    let fs = BpfFs::new();
    let pin = fs.pin_path();
    let old_index = ifindex(&link.b, &link.if_b);
    let args = ["--drain-interval-ms", "100"];

    let mut first = Flowd::start_pinned(
        &link.b,
        &[&["--iface", link.if_b.as_str()][..], &args].concat(),
        &pin,
    );
    send(&link, 100);
    assert_eq!(
        receive_packets_when(&link.b, &first, &link.if_b, 100.0),
        Some(100.0)
    );
    // A clean stop detaches: no link of this flowd survives.
    assert_eq!(first.stop(), Some(0), "{}", first.log_text());

    // Another interface, with another name, on the same ifindex.
    link.delete_pair();
    let tag = unique_tag();
    let (new_b, new_a) = (format!("nb{tag}"), format!("na{tag}"));
    link.b.exec(&[
        "ip",
        "link",
        "add",
        &new_b,
        "index",
        &old_index.to_string(),
        "type",
        "veth",
        "peer",
        "name",
        &new_a,
        "netns",
        &link.a.name,
    ]);
    assert_eq!(ifindex(&link.b, &new_b), old_index);
    let (mac_a, mac_b) = (mac_of(&link.a, &new_a), mac_of(&link.b, &new_b));
    configure(&link.a, &new_a, &link.ip_a, &link.ip_b, &mac_b);
    configure(&link.b, &new_b, &link.ip_b, &link.ip_a, &mac_a);

    let mut second = Flowd::start_pinned(
        &link.b,
        &[&["--iface", new_b.as_str()][..], &args].concat(),
        &pin,
    );
    assert_eq!(
        receive_packets(&link.b, &second, &new_b),
        Some(0.0),
        "the new interface inherited the old one's totals"
    );
    send(&link, 50);
    assert_eq!(
        receive_packets_when(&link.b, &second, &new_b, 50.0),
        Some(50.0)
    );
    assert_eq!(second.stop(), Some(0), "{}", second.log_text());
}

/// A clean stop detaches, so the next flowd attaches fresh: its totals
/// start at zero (they could not have counted what passed in between).
#[test]
fn after_a_clean_stop_the_same_interface_starts_at_zero() {
    let link = Link::new();
    let fs = BpfFs::new();
    let pin = fs.pin_path();
    let args = ["--iface", link.if_b.as_str(), "--drain-interval-ms", "100"];
    let mut first = Flowd::start_pinned(&link.b, &args, &pin);
    send(&link, 100);
    assert_eq!(
        receive_packets_when(&link.b, &first, &link.if_b, 100.0),
        Some(100.0)
    );
    assert_eq!(first.stop(), Some(0), "{}", first.log_text());
    let mut second = Flowd::start_pinned(&link.b, &args, &pin);
    assert_eq!(receive_packets(&link.b, &second, &link.if_b), Some(0.0));
    send(&link, 30);
    assert_eq!(
        receive_packets_when(&link.b, &second, &link.if_b, 30.0),
        Some(30.0)
    );
    assert_eq!(second.stop(), Some(0), "{}", second.log_text());
}
