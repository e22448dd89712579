//! The engine's reassembly, pairing, bounds and counters, and the event's
//! JSON line, with the builders of `tests/mod.rs`.

use super::*;

// ---- the engine ----------------------------------------------------------

#[test]
fn http_request_split_across_segments_pairs_with_its_status() {
    let k = key(ip::TCP, C, 40000, S, 8081);
    let req = b"GET /split HTTP/1.1\r\nHost: example.com\r\nCookie: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let (a, b) = req.split_at(30);
    let mut e = Engine::new(L7Config::default());
    let evs = run(
        &mut e,
        &[
            tcp_pkt(1_000, k, 100, a),
            // A retransmission of the first part changes nothing.
            tcp_pkt(1_500, k, 100, a),
            tcp_pkt(2_000, k, 130, b),
            tcp_pkt(5_000_000, reverse(k), 9, b"HTTP/1.1 204 No Content\r\n\r\n"),
        ],
    );
    assert_eq!(evs.len(), 1);
    let Detail::Http(h) = &evs[0].detail else {
        panic!("http")
    };
    assert_eq!(
        (h.url.as_str(), h.host.as_deref(), h.status),
        ("/split", Some("example.com"), Some(204))
    );
    assert_eq!(evs[0].ts_ns, 1_000);
    assert_eq!(evs[0].latency_ns, Some(4_999_000));
    assert_eq!(e.stats().http_events, 1);
    assert_eq!(e.stats().unanswered, 0);
}

#[test]
fn pipelined_requests_pair_in_order() {
    let k = key(ip::TCP, C, 40001, S, 80);
    let two = b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut e = Engine::new(L7Config::default());
    let evs = run(
        &mut e,
        &[
            tcp_pkt(1, k, 1, two),
            tcp_pkt(
                2,
                reverse(k),
                1,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            ),
            tcp_pkt(3, reverse(k), 40, b"HTTP/1.1 404 Not Found\r\n\r\n"),
        ],
    );
    let got: Vec<(String, Option<u16>)> = evs
        .iter()
        .map(|e| match &e.detail {
            Detail::Http(h) => (h.url.clone(), h.status),
            _ => panic!("http"),
        })
        .collect();
    assert_eq!(
        got,
        [("/1".to_owned(), Some(200)), ("/2".to_owned(), Some(404))]
    );
}

#[test]
fn a_malformed_whole_response_is_a_parse_error_a_cut_one_truncated() {
    let k = key(ip::UDP, C, 5555, S, 53);
    let mut e = Engine::new(L7Config::default());
    let full = dns_msg(
        1,
        true,
        "a.example",
        1,
        &[[192, 0, 2, 1], [192, 0, 2, 2]],
        0,
    );
    // The second answer's name points at itself: the datagram is whole,
    // so it is malformed; the first answer is kept and it pairs.
    let mut looped = full.clone();
    let second = full.len() - 16;
    looped[second..second + 2].copy_from_slice(&[0xc0 | (second >> 8) as u8, second as u8]);
    e.push(&udp_pkt(10, k, &dns_msg(1, false, "a.example", 1, &[], 0)));
    e.push(&udp_pkt(20, reverse(k), &looped));
    // The same response cut by the snap length: truncated.
    e.push(&udp_pkt(30, k, &dns_msg(2, false, "a.example", 1, &[], 0)));
    let mut cut_msg = full.clone();
    cut_msg[1] = 2;
    let mut cut = udp_pkt(40, reverse(k), &cut_msg[..full.len() - 3]);
    cut.wire_payload_len = full.len() as u32;
    e.push(&cut);
    // Over TCP, a whole length-prefixed message with a looping answer.
    let t = key(ip::TCP, C, 5556, S, 53);
    let mut q = vec![0, 0];
    q.extend(dns_msg(3, false, "a.example", 1, &[], 0));
    q[1] = (q.len() - 2) as u8;
    e.push(&tcp_pkt(50, t, 100, &q));
    let mut r = vec![0, looped.len() as u8];
    let mut l3 = looped.clone();
    l3[1] = 3;
    r.extend(&l3);
    e.push(&tcp_pkt(60, reverse(t), 900, &r));
    let evs = e.take_events();
    let got: Vec<_> = evs
        .iter()
        .map(|ev| match &ev.detail {
            Detail::Dns(d) => (d.id, d.rcode, d.answers.clone()),
            _ => panic!("dns"),
        })
        .collect();
    let one = vec!["192.0.2.1".to_owned()];
    assert_eq!(
        got,
        [
            (1, Some(0), one.clone()),
            (2, Some(0), one.clone()),
            (3, Some(0), one)
        ]
    );
    let s = e.stats();
    assert_eq!((s.dns_parse_errors, s.dns_truncated), (2, 1), "{s:?}");
}

#[test]
fn dns_pairs_by_reversed_tuple_and_id_and_times_out() {
    let k = key(ip::UDP, C, 5555, S, 53);
    let mut e = Engine::new(L7Config::default());
    e.push(&udp_pkt(10, k, &dns_msg(1, false, "a.example", 1, &[], 0)));
    e.push(&udp_pkt(20, k, &dns_msg(2, false, "b.example", 1, &[], 0)));
    // A response with another ID, and one to another port: unmatched.
    e.push(&udp_pkt(
        30,
        reverse(k),
        &dns_msg(3, true, "a.example", 1, &[], 0),
    ));
    e.push(&udp_pkt(
        30,
        key(ip::UDP, S, 53, C, 5556),
        &dns_msg(1, true, "a.example", 1, &[], 0),
    ));
    e.push(&udp_pkt(
        40,
        reverse(k),
        &dns_msg(1, true, "a.example", 1, &[[192, 0, 2, 9]], 0),
    ));
    let evs = e.take_events();
    assert_eq!(evs.len(), 1);
    let Detail::Dns(d) = &evs[0].detail else {
        panic!("dns")
    };
    assert_eq!(
        (d.id, d.rcode, d.answers.clone()),
        (1, Some(0), vec!["192.0.2.9".to_owned()])
    );
    assert_eq!(evs[0].latency_ns, Some(30));
    assert_eq!(e.stats().dns_unmatched_responses, 2);
    // The other query, after the timeout: no response fields.
    e.poll(20 + 31_000_000_000);
    let evs = e.take_events();
    assert_eq!(evs.len(), 1);
    let Detail::Dns(d) = &evs[0].detail else {
        panic!("dns")
    };
    assert_eq!((d.id, d.rcode, evs[0].latency_ns), (2, None, None));
    assert_eq!(e.stats().unanswered, 1);
    assert_eq!(e.pending(), 0);
}

#[test]
fn tls_handshake_pairs_client_and_server_hello() {
    let k = key(ip::TCP, C, 40002, S, 8443);
    let ch = chrome_client_hello("tls.example");
    let (a, b) = ch.split_at(300);
    let mut e = Engine::new(L7Config::default());
    let evs = run(
        &mut e,
        &[
            tcp_pkt(100, k, 1, a),
            tcp_pkt(110, k, 301, b),
            tcp_pkt(400, reverse(k), 1, &server_hello(0x0304, 0x1302)),
        ],
    );
    assert_eq!(evs.len(), 1);
    let Detail::Tls(t) = &evs[0].detail else {
        panic!("tls")
    };
    assert_eq!(t.sni.as_deref(), Some("tls.example"));
    assert_eq!((t.version, t.cipher), (Some(0x0304), Some(0x1302)));
    assert_eq!(
        t.ja4.as_deref(),
        Some("t13d1516h2_8daaf6152771_e5627efa2ab1")
    );
    assert_eq!(evs[0].latency_ns, Some(300));
}

#[test]
fn reassembly_bounds_are_counted() {
    // A request that never ends: dropped at the segment bound, as a cut request.
    let k = key(ip::TCP, C, 40003, S, 80);
    let cfg = L7Config {
        reasm_max_segments: 3,
        reasm_max_flows: 2,
        ..L7Config::default()
    };
    let mut e = Engine::new(cfg);
    let mut seq = 1;
    let mut pkts = Vec::new();
    for part in [
        &b"GET /long HTTP/1.1\r\n"[..],
        b"X-A: 1\r\n",
        b"X-B: 2\r\n",
        b"X-C: 3\r\n",
    ] {
        pkts.push(tcp_pkt(1, k, seq, part));
        seq += part.len() as u32;
    }
    for p in &pkts {
        e.push(p);
    }
    assert_eq!(e.stats().reasm_limit, 1);
    assert_eq!(e.stats().http_truncated, 1);
    // A gap drops the buffer.
    let k2 = key(ip::TCP, C, 40004, S, 80);
    e.push(&tcp_pkt(1, k2, 1, b"GET /gap HTTP/1.1\r\n"));
    e.push(&tcp_pkt(2, k2, 500, b"X: y\r\n\r\n"));
    assert_eq!(e.stats().reasm_gap, 1);
    // Three open buffers with room for two: the oldest goes.
    for (i, port) in [40005u16, 40006, 40007].into_iter().enumerate() {
        e.push(&tcp_pkt(
            10 + i as u64,
            key(ip::TCP, C, port, S, 80),
            1,
            b"GET /open HTTP/1.1\r\n",
        ));
    }
    assert_eq!(e.stats().reasm_evicted, 1);
    assert_eq!(e.reassembling(), 2);
}

#[test]
fn pending_bound_emits_the_oldest_unanswered() {
    let cfg = L7Config {
        max_pending: 2,
        ..L7Config::default()
    };
    let mut e = Engine::new(cfg);
    for (i, port) in [1000u16, 1001, 1002].into_iter().enumerate() {
        e.push(&udp_pkt(
            i as u64,
            key(ip::UDP, C, port, S, 53),
            &dns_msg(1, false, "x.example", 1, &[], 0),
        ));
    }
    let evs = e.take_events();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].key.sport, 1000);
    assert_eq!(e.stats().pending_evicted, 1);
    assert_eq!(e.pending(), 2);
}

#[test]
fn garbage_never_panics_and_is_counted() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut e = Engine::new(L7Config::default());
    let mut n = 0u64;
    for round in 0..3000u32 {
        let len = (rng.next() % 600) as usize;
        let mut payload = rng.bytes(len);
        // Give the detectors something to bite on.
        match round % 5 {
            0 if len > 6 => {
                let (l0, l1) = (payload[3], payload[4]);
                payload[..6].copy_from_slice(&[22, 3, 1, l0, l1, 1]);
            }
            1 if len > 4 => payload[..4].copy_from_slice(b"GET "),
            2 if len > 7 => payload[..7].copy_from_slice(b"HTTP/1."),
            _ => {}
        }
        let port = [53u16, 80, 443, 5353][(round % 4) as usize];
        let k = key(
            if round % 2 == 0 { ip::TCP } else { ip::UDP },
            C,
            30000 + (round % 50) as u16,
            S,
            port,
        );
        let mut p = tcp_pkt(u64::from(round), k, rng.next() as u32, &payload);
        if k.proto == ip::UDP {
            p.tcp = None;
        }
        // Sometimes cut, as the snap length does.
        if round % 3 == 0 {
            p.wire_payload_len += 100;
        }
        e.push(&p);
        n += 1;
        // The parsers directly, too.
        let _ = tls::parse_client_hello(&payload, round % 2 == 0);
        let _ = tls::parse_server_hello(&payload, round % 2 == 0);
        let _ = http::parse_request(&payload, round % 2 == 0);
        let _ = http::parse_status(&payload, round % 2 == 0);
        let _ = dns::parse_message(&payload);
        let _ = dns::parse_tcp(&payload, round % 2 == 0);
    }
    e.flush();
    let _ = e.take_events();
    let s = e.stats();
    assert_eq!(s.packets, n);
    assert!(s.parse_errors() > 0, "{s:?}");
}

// ---- the event's JSON line -------------------------------------------------

#[test]
fn event_json_keys() {
    let k = key(ip::UDP, C, 5555, S, 53);
    let mut e = Engine::new(L7Config::default());
    e.push(&udp_pkt(
        1_700_000_000_123_456_789,
        k,
        &dns_msg(4, false, "j.example", 1, &[], 0),
    ));
    e.push(&udp_pkt(
        1_700_000_000_125_456_789,
        reverse(k),
        &dns_msg(4, true, "j.example", 1, &[[192, 0, 2, 4]], 0),
    ));
    let evs = e.take_events();
    let v = evs[0].to_json("eth0");
    assert_eq!(v["ts"], "2023-11-14T22:13:20.123456789Z");
    assert_eq!(v["device"], "eth0");
    assert_eq!(v["direction"], "ingress");
    assert_eq!(v["src"], "198.18.0.1");
    assert_eq!(v["dst"], "198.18.0.2");
    assert_eq!(
        (
            v["sport"].as_u64(),
            v["dport"].as_u64(),
            v["proto"].as_u64()
        ),
        (Some(5555), Some(53), Some(17))
    );
    assert_eq!(v["kind"], "dns");
    assert_eq!(v["dns_qname"], "j.example");
    assert_eq!(
        (
            v["dns_qtype"].as_u64(),
            v["dns_id"].as_u64(),
            v["dns_rcode"].as_u64()
        ),
        (Some(1), Some(4), Some(0))
    );
    assert_eq!(v["dns_answers"], serde_json::json!(["192.0.2.4"]));
    assert_eq!(v["dns_latency_ms"].as_f64(), Some(2.0));
    // An unanswered HTTP request: no status, no latency, no user agent.
    let mut e = Engine::new(L7Config::default());
    let evs = run(
        &mut e,
        &[tcp_pkt(
            5,
            key(ip::TCP, C, 1, S, 80),
            1,
            b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n",
        )],
    );
    let v = evs[0].to_json("eth1");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    for absent in ["http_status", "http_latency_ms", "http_user_agent"] {
        assert!(!keys.contains(&absent), "{keys:?}");
    }
    assert_eq!(
        (
            v["http_method"].as_str(),
            v["http_url"].as_str(),
            v["http_host"].as_str()
        ),
        (Some("GET"), Some("/x"), Some("h"))
    );
    assert!(evs[0].to_line("eth1").ends_with("}\n"));
}
