//! The application layer live against bad input (issue 12, "Tests / Bad
//! input"): truncated and garbage payloads on ports 53, 80 and 443 over UDP
//! and TCP, ClientHellos with absurd lengths, DNS compression loops. flowd
//! keeps running, its packet totals and flows stay exact to the kernel's
//! counters, and the only event is the one real query among them.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use flowd_tests::{
    Flowd, Link, LinkStats, Netns, TempDir, api_flows, find_flows,
    l7::{
        Capture, assert_replay_equals_live, exact_part, read_events, replay_events, replay_metrics,
    },
    metric, wait,
};
use serde_json::{Value, json};

/// Pseudo-random bytes (xorshift32), the same on every run.
fn garbage(mut seed: u32, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed >> 24) as u8
        })
        .collect()
}

/// A DNS header: ID, flags, question and answer counts.
fn dns_header(id: u16, flags: u16, qd: u16, an: u16) -> Vec<u8> {
    let mut h = Vec::new();
    for v in [id, flags, qd, an, 0, 0] {
        h.extend_from_slice(&v.to_be_bytes());
    }
    h
}

fn qname(name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.push(0);
    q
}

/// A query whose name is a compression pointer to itself (offset 12).
fn dns_self_loop() -> Vec<u8> {
    let mut m = dns_header(0x1001, 0x0100, 1, 0);
    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    m
}

/// A query whose name points to a second pointer that points back.
fn dns_two_pointer_loop() -> Vec<u8> {
    let mut m = dns_header(0x1002, 0x0100, 1, 0);
    m.extend_from_slice(&[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
    m
}

/// The bad DNS messages sent over UDP and (length-prefixed) TCP.
fn bad_dns() -> Vec<Vec<u8>> {
    let mut cut_question = dns_header(0x1003, 0x0100, 1, 0);
    cut_question.extend_from_slice(b"\x03www\x02l7");
    let mut long_label = dns_header(0x1004, 0x0100, 1, 0);
    long_label.extend_from_slice(b"\x3fabcde");
    vec![
        vec![0x12],
        dns_header(0x1000, 0x0100, 1, 0)[..11].to_vec(),
        cut_question,
        long_label,
        dns_self_loop(),
        dns_two_pointer_loop(),
        // A "response" announcing 65535 answers, none there, unsolicited.
        dns_header(0x1005, 0x8180, 0, 0xffff),
        garbage(1, 200),
    ]
}

/// A ClientHello: record and handshake lengths given (None: the real
/// ones), a session ID length, a cipher-suites length (None: real) and
/// extensions as they are.
fn client_hello(
    record_len: Option<u16>,
    hs_len: Option<u32>,
    sid_len: u8,
    sid: &[u8],
    cs_len: Option<u16>,
    exts: &[u8],
) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x5a; 32]);
    body.push(sid_len);
    body.extend_from_slice(sid);
    let cs = [0x13, 0x01, 0xc0, 0x2b];
    body.extend_from_slice(&cs_len.unwrap_or(cs.len() as u16).to_be_bytes());
    body.extend_from_slice(&cs);
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(exts);
    let hs = hs_len.unwrap_or(body.len() as u32).to_be_bytes();
    let mut msg = vec![1, hs[1], hs[2], hs[3]];
    msg.extend_from_slice(&body);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&record_len.unwrap_or(msg.len() as u16).to_be_bytes());
    rec.extend_from_slice(&msg);
    rec
}

/// ClientHellos with absurd lengths.
fn bad_client_hellos() -> Vec<Vec<u8>> {
    // server_name with a list and a name of 65535 bytes, 3 there.
    let sni = [0, 0, 0, 9, 0xff, 0xff, 0, 0xff, 0xff, b'a', b'b', b'c', 0];
    // ALPN whose list claims 200 bytes, and a protocol of 0 bytes.
    let alpn = [0, 16, 0, 4, 0, 200, 0, 0];
    let mut cut = client_hello(Some(0xffff), Some(0xff_ffff), 0, &[], None, &sni);
    cut.truncate(60);
    vec![
        cut,
        client_hello(None, Some(0xff_ffff), 0, &[], None, &[]),
        client_hello(None, None, 255, &[7; 10], None, &[]),
        client_hello(None, None, 0, &[], Some(0xfffe), &[]),
        client_hello(None, None, 0, &[], None, &sni),
        client_hello(None, None, 0, &[], None, &alpn),
    ]
}

/// Accepts `conns` connections on `addr` in `ns`, reads each to its end,
/// answers `reply` and closes; 20 s at most. Returns the bytes read.
fn tcp_sink(ns: &Netns, addr: SocketAddr, conns: usize, reply: &'static [u8]) -> JoinHandle<usize> {
    let l: TcpListener = ns.run(move || TcpListener::bind(addr).expect("bind the sink"));
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(20);
        let mut total = 0;
        for _ in 0..conns {
            let mut s = loop {
                match l.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        assert!(Instant::now() < end, "{addr}: too few connections");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("accept on {addr}: {e}"),
                }
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            total += got.len();
            s.write_all(reply).unwrap();
        }
        total
    })
}

/// One TCP connection from `ns` to `dst`: `payload`, then FIN, then
/// whatever the server answers until it closes.
fn tcp_send(ns: &Netns, dst: SocketAddr, payload: Vec<u8>) {
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&payload).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
    });
}

/// Receives `n` datagrams on `s` (10 s at most); returns them.
fn recv_n(s: &UdpSocket, n: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 2048];
    (0..n)
        .map(|_| {
            let (len, from) = s.recv_from(&mut buf).expect("a datagram");
            (buf[..len].to_vec(), from)
        })
        .collect()
}

fn sum(flows: &[&Value], key: &str) -> u64 {
    flows.iter().map(|f| f[key].as_u64().unwrap()).sum()
}

#[test]
fn bad_payloads_give_no_events_and_exact_totals() {
    let link = Link::new();
    link.no_offloads();
    let dir = TempDir::new("flowdt-l7bad");
    let live = dir.path().join("live.jsonl");
    let before = link.b.link_stats(&link.if_b);
    let mut flowd = Flowd::start(
        &link.b,
        &[
            "--iface",
            &link.if_b,
            "--drain-interval-ms",
            "100",
            "--l7-log",
            live.to_str().unwrap(),
        ],
    );
    let cap = Capture::start(&link.b, &link.if_b, dir.path(), "bad");
    let at = |ip: &str, port: u16| -> SocketAddr { format!("{ip}:{port}").parse().unwrap() };
    let (ip_a, ip_b) = (link.ip_a.clone(), link.ip_b.clone());

    // UDP: bad DNS to 53; garbage, an HTTP request and a ClientHello to 80
    // and 443 (HTTP and TLS are TCP only here: no event).
    let udp: Vec<UdpSocket> = [53, 80, 443]
        .iter()
        .map(|&p| {
            let a = at(&ip_b, p);
            link.b.run(move || UdpSocket::bind(a).expect("bind"))
        })
        .collect();
    let tx_addr = at(&ip_a, 40400);
    let tx: UdpSocket = link.a.run(move || UdpSocket::bind(tx_addr).unwrap());
    let dns = bad_dns();
    for m in &dns {
        tx.send_to(m, at(&ip_b, 53)).unwrap();
    }
    let other = [
        garbage(2, 100),
        b"GET / HTTP/1.1\r\nHost: udp.l7.test\r\n\r\n".to_vec(),
        client_hello(None, None, 0, &[], None, &[]),
    ];
    for port in [80, 443] {
        for m in &other {
            tx.send_to(m, at(&ip_b, port)).unwrap();
        }
    }
    assert_eq!(recv_n(&udp[0], dns.len()).len(), dns.len());
    for s in &udp[1..] {
        assert_eq!(recv_n(s, other.len()).len(), other.len());
    }

    // The one real query, answered with an answer whose name is a
    // compression pointer to itself.
    let mut query = dns_header(0xbeef, 0x0100, 1, 0);
    query.extend_from_slice(&qname("loop.l7.test"));
    query.extend_from_slice(&[0, 1, 0, 1]);
    tx.send_to(&query, at(&ip_b, 53)).unwrap();
    let (got, from) = recv_n(&udp[0], 1).remove(0);
    assert_eq!(got, query);
    let mut resp = query.clone();
    resp[2..4].copy_from_slice(&0x8180u16.to_be_bytes());
    resp[6..8].copy_from_slice(&1u16.to_be_bytes());
    let off = resp.len() as u8;
    resp.extend_from_slice(&[0xc0, off, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 18, 200, 9]);
    udp[0].send_to(&resp, from).unwrap();
    recv_n(&tx, 1);

    // TCP: the same bad DNS, length-prefixed, plus absurd prefixes; a cut
    // request line, garbage and a bad header name to 80 (answered by an
    // unsolicited status line); the absurd ClientHellos to 443 (answered
    // by a cut ServerHello) and one to 80.
    let mut dns_tcp: Vec<Vec<u8>> = dns
        .iter()
        .map(|m| {
            let mut p = (m.len() as u16).to_be_bytes().to_vec();
            p.extend_from_slice(m);
            p
        })
        .collect();
    dns_tcp.push([&[0xff, 0xff][..], &garbage(3, 20)].concat());
    dns_tcp.push(vec![0, 5, 1, 2, 3, 4, 5]);
    dns_tcp.push(vec![0x01]);
    let http = vec![
        b"GET /trunc".to_vec(),
        garbage(4, 300),
        b"GET / HTTP/1.1\r\nHo\x01st: x\r\n\r\n".to_vec(),
        bad_client_hellos()[1].clone(),
    ];
    let tls = bad_client_hellos();
    let sinks = [
        tcp_sink(&link.b, at(&ip_b, 53), dns_tcp.len(), b""),
        tcp_sink(
            &link.b,
            at(&ip_b, 80),
            http.len(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ),
        tcp_sink(
            &link.b,
            at(&ip_b, 443),
            tls.len(),
            &[22, 3, 3, 0, 6, 2, 0, 0, 2, 3, 3],
        ),
    ];
    let mut sent = 0;
    for (port, payloads) in [(53, &dns_tcp), (80, &http), (443, &tls)] {
        for p in payloads {
            sent += p.len();
            tcp_send(&link.a, at(&ip_b, port), p.clone());
        }
    }
    let read: usize = sinks.into_iter().map(|s| s.join().unwrap()).sum();
    assert_eq!(read, sent);

    // Totals: everything the kernel counted on the interface, in flowd's
    // totals and flows, to the packet and byte.
    let after = wait::settled("the interface counters", Duration::from_millis(300), || {
        link.b.link_stats(&link.if_b)
    });
    let d: LinkStats = after - before;
    // With an XDP program attached, veth counts a received frame after the
    // 14-byte Ethernet header was pulled: add it back.
    let rx_bytes = d.rx_bytes + 14 * d.rx_packets;
    let flows = wait::until(
        "the flows to hold every packet",
        wait::DEADLINE,
        || api_flows(&link.b, &flowd),
        |f| {
            sum(&find_flows(f, &[("direction", "ingress")]), "packets") >= d.rx_packets
                && sum(&find_flows(f, &[("direction", "egress")]), "packets") >= d.tx_packets
        },
    );
    let ing = find_flows(&flows, &[("direction", "ingress")]);
    let eg = find_flows(&flows, &[("direction", "egress")]);
    assert_eq!(
        (sum(&ing, "packets"), sum(&ing, "bytes")),
        (d.rx_packets, rx_bytes)
    );
    assert_eq!(
        (sum(&eg, "packets"), sum(&eg, "bytes")),
        (d.tx_packets, d.tx_bytes)
    );
    // 3 UDP flows in (one source port to 53, 80 and 443), 1 out (the response),
    // 1 TCP flow per connection each way.
    let conns = (dns_tcp.len() + http.len() + tls.len()) as u64;
    assert_eq!(
        (ing.len() as u64, eg.len() as u64),
        (3 + conns, 1 + conns),
        "{flows:#?}"
    );
    let text = wait::scrape(&link.b, &flowd);
    let dev = [("device", link.if_b.as_str())];
    for (name, want) in [
        ("flowd_receive_packets_total", d.rx_packets),
        ("flowd_receive_bytes_total", rx_bytes),
        ("flowd_transmit_packets_total", d.tx_packets),
        ("flowd_transmit_bytes_total", d.tx_bytes),
    ] {
        assert_eq!(metric(&text, name, &dev), Some(want as f64), "{name}");
    }

    // The engine's counters, message by message. Selected (kernel, by
    // content; DNS by port): every UDP datagram to 53 and the answer; every
    // TCP segment with payload on port 53; on 80 the cut request line, the
    // bad header and the ClientHello (the garbage starts neither HTTP nor
    // TLS: not selected) and the 4 status lines; on 443 the 6 ClientHellos
    // and the 6 cut ServerHellos.
    let engine = L7Counts {
        packets: (dns.len() + 2 + dns_tcp.len() + 3 + http.len() + 2 * tls.len()) as u64,
        unrecognised: 0,
        // UDP: each bad message (the "response" announcing 65535 answers is
        // a whole datagram, so malformed, not cut) and the answer whose name
        // loops (it still pairs: the event has its rcode). TCP: the same
        // messages and the 5-byte one; the 65535-byte prefix and the lone
        // byte wait for more (expired below).
        dns_errors: (dns.len() + 1 + dns.len() + 1) as u64,
        // The header name with a control byte.
        http_errors: 1,
        // The 7 absurd ClientHellos (6 to 443, 1 to 80) and the 6
        // ServerHellos whose 2-byte body ends after the version.
        tls_errors: (tls.len() + 1 + tls.len()) as u64,
        // The unsolicited "response", over UDP and TCP.
        dns_unmatched: 2,
        // A status line per connection to 80: no request parsed on any.
        http_unmatched: http.len() as u64,
        // "GET /trunc" (then FIN, which flowd is not given), the 65535-byte
        // DNS prefix and the lone byte: incomplete after the 5 s timeout.
        expired: 3,
    };
    let text = wait::until(
        "the incomplete messages to expire",
        wait::DEADLINE,
        || wait::scrape(&link.b, &flowd),
        |t| {
            metric(
                t,
                "flowd_l7_reassembly_dropped_total",
                &[("reason", "expired")],
            ) >= Some(engine.expired as f64)
        },
    );
    engine.assert(&text, "live");
    assert_eq!(
        metric(&text, "flowd_l7_events_total", &[("kind", "dns")]),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "flowd_dns_responses_total", &[("rcode", "noerror")]),
        Some(1.0)
    );
    assert_eq!(metric(&text, "flowd_l7_pending_requests", &[]), Some(0.0));
    for reason in ["ring_full", "budget", "continuation_limit"] {
        for dir in ["receive", "transmit"] {
            let l = [("reason", reason), ("direction", dir)];
            assert_eq!(metric(&text, "flowd_l7_skipped_total", &l), Some(0.0));
        }
    }

    // flowd is still running and stops cleanly; the only event is the real
    // query, with the header's rcode and no answer (the looped answer
    // name does not parse; issue 12: the answers that parse are kept).
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    let events = read_events(&live);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        exact_part(&events[0]),
        json!({
            "device": link.if_b, "direction": "ingress", "src": ip_a, "dst": ip_b,
            "sport": 40400, "dport": 53, "proto": 17, "kind": "dns",
            "dns_qname": "loop.l7.test", "dns_qtype": 1, "dns_id": 0xbeef, "dns_rcode": 0,
        })
    );
    assert!(
        events[0]["dns_latency_ms"].as_f64().is_some(),
        "{}",
        events[0]
    );

    let capture = cap.stop();
    let replayed = replay_events(&capture, &dir.path().join("replay.jsonl"));
    assert_replay_equals_live(&events, &replayed, &link.if_b, &capture);
    // The capture gives the same counts (the flush at its end expires the
    // three incomplete messages).
    engine.assert(&replay_metrics(&capture, dir.path()), "replay");
}

/// What the L7 engine must count for the bad input.
struct L7Counts {
    packets: u64,
    unrecognised: u64,
    dns_errors: u64,
    http_errors: u64,
    tls_errors: u64,
    dns_unmatched: u64,
    http_unmatched: u64,
    expired: u64,
}

impl L7Counts {
    /// Each of the engine's families in `text` has exactly these values.
    fn assert(&self, text: &str, what: &str) {
        let get = |name: &str, labels: &[(&str, &str)]| {
            metric(text, name, labels).unwrap_or_else(|| panic!("{what}: no {name}{labels:?}"))
                as u64
        };
        let got = (
            get("flowd_l7_packets_total", &[]),
            get("flowd_l7_unrecognised_packets_total", &[]),
            ["dns", "http", "tls"].map(|k| get("flowd_l7_parse_errors_total", &[("kind", k)])),
            ["dns", "http", "tls"].map(|k| get("flowd_l7_truncated_total", &[("kind", k)])),
            ["dns", "http", "tls"]
                .map(|k| get("flowd_l7_unmatched_responses_total", &[("kind", k)])),
            ["gap", "limit", "expired", "evicted"]
                .map(|r| get("flowd_l7_reassembly_dropped_total", &[("reason", r)])),
            get("flowd_l7_retransmitted_segments_total", &[]),
            ["timeout", "evicted"]
                .map(|r| get("flowd_l7_unanswered_requests_total", &[("reason", r)])),
        );
        let want = (
            self.packets,
            self.unrecognised,
            [self.dns_errors, self.http_errors, self.tls_errors],
            [0, 0, 0],
            [self.dns_unmatched, self.http_unmatched, 0],
            [0, 0, self.expired, 0],
            0,
            [0, 0],
        );
        assert_eq!(
            got, want,
            "{what}: (packets, unrecognised, parse errors dns/http/tls, truncated, unmatched, reassembly gap/limit/expired/evicted, retransmitted, unanswered)"
        );
    }
}
