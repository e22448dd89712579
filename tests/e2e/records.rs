//! Flow records: JSON lines with the documented keys, end reasons, and a
//! records file that SIGHUP reopens.

use std::net::{SocketAddr, UdpSocket};

use flowd_tests::{Flowd, Link, api_flows, find_flows, read_records, send_udp_on, wait};

const KEYS: [&str; 16] = [
    "start",
    "end",
    "device",
    "direction",
    "vlan",
    "src",
    "dst",
    "sport",
    "dport",
    "proto",
    "packets",
    "bytes",
    "tcp_flags",
    "end_reason",
    "first_seen_ns",
    "last_seen_ns",
];

#[test]
fn idle_and_forced_records_with_rotation_on_sighup() {
    let tmp = flowd_tests::TempDir::new("flowd-rec");
    let dir = tmp.path().to_path_buf();
    let path = dir.join("flows.jsonl");
    let link = Link::new();
    let mut flowd = Flowd::start(
        &link.b,
        &[
            "--iface",
            &link.if_b,
            "--drain-interval-ms",
            "100",
            "--idle-timeout",
            "1",
            "--records",
            path.to_str().unwrap(),
        ],
    );
    let dst: SocketAddr = format!("{}:7000", link.ip_b).parse().unwrap();
    let src: SocketAddr = format!("{}:7001", link.ip_a).parse().unwrap();
    let _rx: UdpSocket = link.b.run(move || UdpSocket::bind(dst).unwrap());
    let tx: UdpSocket = link.a.run(move || UdpSocket::bind(src).unwrap());
    send_udp_on(&tx, dst, 25, 58); // 25 x 100-byte frames

    // Idle timeout 1 s: the record appears within a few drains after that.
    let recs = wait::until(
        "the idle record",
        wait::DEADLINE,
        || read_records(&path),
        |r| !r.is_empty(),
    );
    assert_eq!(recs.len(), 1, "{recs:#?}");
    let r = &recs[0];
    for k in KEYS {
        assert!(r.get(k).is_some(), "key {k} missing in {r}");
    }
    assert_eq!(r["end_reason"], "idle");
    assert_eq!(
        (r["packets"].as_u64(), r["bytes"].as_u64()),
        (Some(25), Some(2500))
    );
    assert_eq!(
        (r["src"].as_str(), r["dst"].as_str()),
        (Some(link.ip_a.as_str()), Some(link.ip_b.as_str()))
    );
    assert_eq!(
        (
            r["sport"].as_u64(),
            r["dport"].as_u64(),
            r["proto"].as_u64()
        ),
        (Some(7001), Some(7000), Some(17))
    );
    assert_eq!(
        (r["direction"].as_str(), r["vlan"].as_u64()),
        (Some("ingress"), Some(0))
    );
    assert!(r.get("state").is_none(), "state is for TCP only");
    let start = r["start"].as_str().unwrap();
    assert!(
        start.ends_with('Z') && start.len() == "2026-01-01T00:00:00.000000000Z".len(),
        "{start}"
    );

    // logrotate: move the file away, SIGHUP, and new records go to a new file.
    std::fs::rename(&path, dir.join("flows.jsonl.1")).unwrap();
    // SAFETY: signalling the flowd we started, by its PID.
    unsafe { libc::kill(flowd.pid() as i32, libc::SIGHUP) };
    // Reopening creates the file anew.
    wait::file_exists(&path);
    send_udp_on(&tx, dst, 3, 58);
    // The new flow is in the table (drained) before SIGTERM ends it.
    wait::until(
        "the 3 new packets in a drained flow",
        wait::DEADLINE,
        || {
            find_flows(
                &api_flows(&link.b, &flowd),
                &[("direction", "ingress"), ("dport", "7000")],
            )
            .iter()
            .map(|f| f["packets"].as_u64().unwrap())
            .sum::<u64>()
        },
        |&n| n >= 3,
    );
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    let after = read_records(&path);
    assert_eq!(after.len(), 1, "{after:#?}");
    assert_eq!(after[0]["end_reason"], "forced");
    assert_eq!(after[0]["packets"].as_u64(), Some(3));
    assert_eq!(read_records(&dir.join("flows.jsonl.1")).len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
