//! The live view: `/api/v1/top` and `flowd top` show the heaviest flows of
//! the last seconds with their exact packets and bytes, and the interfaces'
//! exact totals.

use std::{
    net::{SocketAddr, UdpSocket},
    process::Command,
};

use flowd_tests::{Flowd, Link, flowd_bin, send_udp_on, wait};
use serde_json::Value;

#[test]
fn top_shows_the_heaviest_flows_with_exact_counts() {
    let link = Link::new();
    let mut flowd = Flowd::start(
        &link.b,
        &["--iface", &link.if_b, "--drain-interval-ms", "100"],
    );
    let api: SocketAddr = "127.0.0.1:29391".parse().unwrap();
    // Flow A: 300 x 100-byte frames; flow B: 120 x 200-byte frames.
    for (sport, dport, count, payload) in [(7001u16, 7000u16, 300, 58), (7003, 7002, 120, 158)] {
        let dst: SocketAddr = format!("{}:{dport}", link.ip_b).parse().unwrap();
        let src: SocketAddr = format!("{}:{sport}", link.ip_a).parse().unwrap();
        let _rx: UdpSocket = link.b.run(move || UdpSocket::bind(dst).unwrap());
        let tx: UdpSocket = link.a.run(move || UdpSocket::bind(src).unwrap());
        send_udp_on(&tx, dst, count, payload);
    }

    // The top view shows drained flows: wait until both flows hold all
    // their packets (420 in all), then check every number exactly.
    let top_packets = |v: &Value| -> u64 {
        v["flows"]
            .as_array()
            .map_or(0, |f| f.iter().filter_map(|f| f["packets"].as_u64()).sum())
    };
    let v = wait::until(
        "the top view to hold the 420 packets sent",
        wait::DEADLINE,
        || {
            let (status, body) = link
                .b
                .http_get(api, "/api/v1/top?seconds=5&limit=10")
                .unwrap();
            assert_eq!(status, 200, "{body}");
            serde_json::from_str::<Value>(&body).unwrap()
        },
        |v| top_packets(v) >= 420,
    );
    let flows = v["flows"].as_array().unwrap();
    let row = |f: &Value| {
        (
            f["sport"].as_u64().unwrap(),
            f["packets"].as_u64().unwrap(),
            f["bytes"].as_u64().unwrap(),
            f["direction"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(flows.len(), 2, "{v:#}");
    assert_eq!(
        row(&flows[0]),
        (7001, 300, 30_000, "ingress".into()),
        "{v:#}"
    );
    assert_eq!(
        row(&flows[1]),
        (7003, 120, 24_000, "ingress".into()),
        "{v:#}"
    );
    let s = v["seconds"].as_f64().unwrap();
    assert!(s > 0.0 && s <= 5.5, "{v:#}");
    let bps = flows[0]["bits_per_second"].as_f64().unwrap();
    assert!((bps - 30_000.0 * 8.0 / s).abs() < 1e-6 * bps, "{v:#}");
    let iface = v["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["device"] == link.if_b.as_str())
        .unwrap();
    assert_eq!(
        (
            iface["receive_packets"].as_u64(),
            iface["receive_bytes"].as_u64()
        ),
        (Some(420), Some(54_000))
    );
    let (status, body) = link.b.http_get(api, "/api/v1/top?seconds=0").unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("seconds must be in"), "{body}");

    // The terminal view, once.
    let top = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &link.b.name])
            .arg(flowd_bin())
            .arg("top")
            .args(args)
            .output()
            .expect("run flowd top")
    };
    let out = top(&["--once", "--seconds", "5"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let a = lines
        .iter()
        .position(|l| l.contains(&format!("{}:7001", link.ip_a)))
        .unwrap_or_else(|| panic!("flow A missing:\n{text}"));
    let b = lines
        .iter()
        .position(|l| l.contains(&format!("{}:7003", link.ip_a)))
        .unwrap_or_else(|| panic!("flow B missing:\n{text}"));
    assert!(a < b, "heaviest first:\n{text}");
    let cols =
        |i: usize| -> Vec<String> { lines[i].split_whitespace().map(str::to_owned).collect() };
    // RATE is two words ("1.23 kbit/s"); then PKT/S, PACKETS, BYTES.
    assert_eq!(&cols(a)[3..5], ["300", "30000"], "{text}");
    assert_eq!(&cols(b)[3..5], ["120", "24000"], "{text}");

    // Errors name what was wrong.
    let out = top(&["--once", "--seconds", "20"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seconds 20"));
    let out = top(&["--once", "--listen", "127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("set --listen"));
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
}
