//! Security signals made real: a port scan between namespaces is flagged;
//! a normal download is not.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use flowd_tests::{Flowd, Link, Netns, metric, wait};

use crate::{congestion::test_rules, prometheus::Prometheus};
use serde_json::Value;

fn suspects(ns: &Netns, f: &Flowd) -> Vec<Value> {
    let (status, body) = ns.http_get(f.listen, "/api/v1/suspects").unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn port_scan_is_flagged() {
    let link = Link::new();
    let flowd = Flowd::start(
        &link.b,
        &["--iface", &link.if_b, "--drain-interval-ms", "200"],
    );
    let prom = Prometheus::start_with_rules(&link.b, flowd.listen, Some(&test_rules()));
    let target = link.ip_b.clone();
    // 1,000 closed ports: every SYN is answered with a RST (REJ).
    let refused = link.a.run(move || {
        let mut refused = 0;
        for port in 20_000..21_000u16 {
            let addr: SocketAddr = format!("{target}:{port}").parse().unwrap();
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
                refused += 1;
            }
        }
        refused
    });
    assert_eq!(refused, 1000);
    // The suspect is flagged once the attempts are judged (2 s after each).
    let s = wait::until(
        "a scan suspect",
        wait::DEADLINE,
        || suspects(&link.b, &flowd),
        |s| !s.is_empty(),
    );
    assert_eq!(s.len(), 1, "{s:?}\n{}", flowd.log_text());
    assert_eq!(s[0]["src"], link.ip_a.as_str());
    assert_eq!(
        s[0]["ports"].as_u64(),
        Some(101),
        "counting stops just over the default threshold of 100"
    );
    let text = wait::scrape(&link.b, &flowd);
    assert_eq!(metric(&text, "flowd_scan_suspects", &[]), Some(1.0));
    assert_eq!(
        metric(&text, "flowd_scan_suspects_flagged_total", &[]),
        Some(1.0)
    );
    assert!(
        flowd.log_text().contains("scan suspect"),
        "a log event when the source crosses the line"
    );
    // A real Prometheus evaluating the shipped rules (short for:) fires PortScan.
    prom.wait_for(
        &link.b,
        "count(ALERTS{alertname=\"PortScan\",alertstate=\"firing\"})",
        30,
        |v| v >= 1.0,
    );
}

#[test]
fn normal_downloads_are_not_flagged() {
    let link = Link::new();
    let flowd = Flowd::start(
        &link.b,
        &["--iface", &link.if_b, "--drain-interval-ms", "200"],
    );
    let addr: SocketAddr = format!("{}:8080", link.ip_b).parse().unwrap();
    let listener: TcpListener = link.b.run(move || TcpListener::bind(addr).unwrap());
    const CONNECTIONS: usize = 150;
    let server = thread::spawn(move || {
        for _ in 0..CONNECTIONS {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 64];
            let _ = s.read(&mut req).unwrap();
            s.write_all(&vec![b'x'; 20_000]).unwrap();
        }
    });
    // 150 short HTTP-like downloads from many source ports, like a browser.
    link.a.run(move || {
        for _ in 0..CONNECTIONS {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            let mut body = Vec::new();
            s.read_to_end(&mut body).unwrap();
            assert_eq!(body.len(), 20_000);
        }
    });
    server.join().unwrap();
    // Nothing to wait for here: flowd has no count of the attempts it
    // judged, and the assertion is that nothing happens. So watch for 4 s,
    // long enough for every attempt to be judged (2 s grace) a few times,
    // and check at every look, not only at the end.
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        let s = suspects(&link.b, &flowd);
        assert!(s.is_empty(), "flagged: {s:?}");
        thread::sleep(Duration::from_millis(200));
    }
    let text = wait::scrape(&link.b, &flowd);
    assert_eq!(metric(&text, "flowd_scan_suspects", &[]), Some(0.0));
    assert_eq!(
        metric(&text, "flowd_scan_suspects_flagged_total", &[]),
        Some(0.0),
        "never flagged, not even for a moment"
    );
}
