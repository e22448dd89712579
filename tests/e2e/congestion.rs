//! Congestion made real: a TBF rate limit on a veth, a bulk TCP transfer
//! through it. The RTT histogram shows the queueing delay, retransmissions
//! appear when the queue overflows, and a real Prometheus evaluating the
//! alert rules fires LinkSaturated and TcpRetransmitHigh.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use flowd_tests::{Flowd, Link, api_flows, find_flows, metric};

use crate::prometheus::Prometheus;

/// The shipped rules with `for:` and rate windows shortened so they can
/// fire within a test: thresholds and guards are the real ones.
pub(crate) fn test_rules() -> String {
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/prometheus/flowd-rules.yml"
    ))
    .unwrap();
    let mut out = rules;
    for (from, to) in [
        ("for: 10m", "for: 3s"),
        ("for: 5m", "for: 3s"),
        ("for: 2m", "for: 3s"),
        ("for: 1m", "for: 3s"),
        ("[1h] offset 5m", "[60s] offset 20s"),
        ("[5m]", "[20s]"),
        ("[1m]", "[10s]"),
    ] {
        out = out.replace(from, to);
    }
    out
}

#[test]
fn tbf_bottleneck_shows_queueing_retransmits_and_fires_alerts() {
    const RATE_BITS: u64 = 4_000_000;
    let link = Link::new();
    link.no_offloads();
    // 4 Mbit/s with a short queue (about 12 full frames): it fills, then drops.
    link.b.exec(&[
        "tc", "qdisc", "add", "dev", &link.if_b, "root", "tbf", "rate", "4mbit", "burst", "16kb",
        "limit", "18kb",
    ]);
    let tmp = flowd_tests::TempDir::new("flowd-cong");
    let dir = tmp.path().to_path_buf();
    let cfg = dir.join("flowd.toml");
    std::fs::write(
        &cfg,
        format!(
            "interfaces = [\"{0}\"]\ndrain_interval_ms = 200\n[interface_speeds]\n\"{0}\" = {RATE_BITS}\n",
            link.if_b
        ),
    )
    .unwrap();
    let flowd = Flowd::start(&link.b, &["--config", cfg.to_str().unwrap()]);
    let prom = Prometheus::start_with_rules(&link.b, flowd.listen, Some(&test_rules()));

    // A connects to a server in B, which sends as fast as TCP lets it for ~25 s.
    let addr: SocketAddr = format!("{}:5001", link.ip_b).parse().unwrap();
    let listener: TcpListener = link.b.run(move || TcpListener::bind(addr).unwrap());
    let sender = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let chunk = vec![0x42u8; 64 * 1024];
        let end = Instant::now() + Duration::from_secs(25);
        let mut sent = 0u64;
        while Instant::now() < end {
            s.write_all(&chunk).unwrap();
            sent += chunk.len() as u64;
        }
        sent
    });
    let receiver = link.a.spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return got,
                Ok(n) => got += n as u64,
            }
        }
    });

    // Both alerts fire while the transfer runs.
    let firing =
        |name: &str| format!("count(ALERTS{{alertname=\"{name}\",alertstate=\"firing\"}})");
    prom.wait_for(&link.b, &firing("LinkSaturated"), 40, |v| v >= 1.0);
    prom.wait_for(&link.b, &firing("TcpRetransmitHigh"), 40, |v| v >= 1.0);
    // The smoothed RTT while the queue is full (after the transfer the
    // last samples, taken as the queue drains, pull it back down).
    let ack_srtt = |flows: &[serde_json::Value]| {
        find_flows(
            flows,
            &[("direction", "ingress"), ("proto", "6"), ("dport", "5001")],
        )
        .first()
        .and_then(|f| f["rtt_srtt_ns"].as_u64())
        .unwrap_or(0)
    };
    let mut loaded = 0;
    for _ in 0..5 {
        loaded = loaded.max(ack_srtt(&api_flows(&link.b, &flowd)));
        thread::sleep(Duration::from_millis(300));
    }
    let sent = sender.join().unwrap();
    let got = receiver.join().unwrap();
    assert_eq!(sent, got, "TCP delivered everything");
    assert!(
        sent > 4_000_000,
        "the transfer ran at the link's rate: {sent} bytes"
    );

    // Loaded RTT well above the idle handshake RTT, seen on the ACK flow.
    thread::sleep(Duration::from_millis(600));
    let flows = api_flows(&link.b, &flowd);
    let acks = find_flows(
        &flows,
        &[("direction", "ingress"), ("proto", "6"), ("dport", "5001")],
    );
    assert_eq!(acks.len(), 1, "{flows:#?}");
    let min = acks[0]["rtt_min_ns"].as_u64().unwrap();
    let srtt = loaded;
    eprintln!(
        "congestion: idle RTT {min} ns, loaded srtt {srtt} ns (after the transfer {} ns)",
        acks[0]["rtt_srtt_ns"]
    );
    assert!(
        srtt > 5_000_000,
        "queueing delay of the 18 kB queue at 4 Mbit/s: srtt {srtt} ns"
    );
    assert!(
        srtt > 10 * min,
        "loaded RTT {srtt} ns vs idle minimum {min} ns"
    );
    let data = find_flows(
        &flows,
        &[("direction", "egress"), ("proto", "6"), ("sport", "5001")],
    );
    assert!(
        data[0]["retrans"].as_u64().unwrap() > 0,
        "the full queue dropped segments: {:?}",
        data[0]
    );

    let (_, text) = link.b.http_get(flowd.listen, "/metrics").unwrap();
    let dev = link.if_b.as_str();
    let q_sum = metric(
        &text,
        "flowd_tcp_queueing_delay_seconds_sum",
        &[("device", dev)],
    )
    .unwrap();
    let q_count = metric(
        &text,
        "flowd_tcp_queueing_delay_seconds_count",
        &[("device", dev)],
    )
    .unwrap();
    assert!(
        q_count > 100.0 && q_sum / q_count > 0.005,
        "mean queueing delay {} s over {q_count}",
        q_sum / q_count
    );
    // The top flow (the transfer) carries its RTT: smoothed well above min.
    let top = |stat: &str| {
        metric(
            &text,
            "flowd_top_flow_rtt_seconds",
            &[("device", dev), ("sport", "5001"), ("stat", stat)],
        )
    };
    let (top_min, top_srtt) = (top("min").unwrap(), top("smoothed").unwrap());
    assert!(
        top_srtt > 0.005 && top_srtt > 10.0 * top_min,
        "top flow RTT min {top_min} s, smoothed {top_srtt} s"
    );
    let top_retrans = metric(
        &text,
        "flowd_top_flow_tcp_retransmitted_segments",
        &[("device", dev), ("sport", "5001")],
    )
    .unwrap();
    assert!(top_retrans > 0.0, "retransmissions of the top flow");
    let retrans = metric(
        &text,
        "flowd_tcp_retransmitted_segments_total",
        &[("device", dev), ("direction", "transmit")],
    )
    .unwrap();
    let segs = metric(
        &text,
        "flowd_tcp_segments_total",
        &[("device", dev), ("direction", "transmit")],
    )
    .unwrap();
    let mut qdisc = link
        .b
        .exec(&["tc", "-s", "qdisc", "show", "dev", &link.if_b]);
    qdisc.stdout.extend(
        link.b
            .exec(&[
                "nstat",
                "-az",
                "TcpOutSegs",
                "TcpRetransSegs",
                "TcpExtTCPLostRetransmit",
            ])
            .stdout,
    );
    eprintln!(
        "congestion: mean queueing delay {:.4} s over {q_count} samples, {retrans} of {segs} segments retransmitted\n{}",
        q_sum / q_count,
        String::from_utf8_lossy(&qdisc.stdout)
    );
    assert!(retrans > 0.0);
    drop(prom);
    std::fs::remove_dir_all(&dir).unwrap();
}
