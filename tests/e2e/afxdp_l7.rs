//! The application layer through AF_XDP (issue 13, "The application layer
//! through this path"): real servers and clients as in `l7.rs`, on a link
//! whose frames (both directions) are mirrored with `tc mirred` onto a
//! second veth pair, the SPAN port; flowd captures the mirror's far end
//! through AF_XDP with `--l7-log`. The workers' frames go through the
//! replay driver, whose selection feeds the same engine as the in-kernel
//! path: each request gives exactly one event with the same fields as in
//! `l7.rs` (the device is the mirror port, where every frame is received).

use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use flowd_tests::{
    Flowd, Link, TempDir,
    l7::{Capture, Proc, Tuple, by_tuple, events_settled, exact_part, read_events},
    metric, wait,
};
use serde_json::{Value, json};

/// A mirror port in `link.b`'s namespace: every frame `link.if_b`
/// receives or sends is copied (tc `mirred egress mirror`) to one end of a
/// new veth pair; the other end, returned, receives them all. (`u32 match
/// u32 0 0`, not `matchall`: this kernel has no `cls_matchall`.)
fn mirror(link: &Link) -> String {
    let tag = flowd_tests::unique_tag();
    let (m_a, m_b) = (format!("ma{tag}"), format!("mb{tag}"));
    let b = &link.b;
    b.exec(&[
        "ip", "link", "add", &m_a, "type", "veth", "peer", "name", &m_b,
    ]);
    for ifc in [&m_a, &m_b] {
        let key = format!("net.ipv6.conf.{ifc}.disable_ipv6=1");
        b.exec(&["sysctl", "-qw", &key]);
        b.exec(&["ip", "link", "set", ifc, "up"]);
    }
    b.exec(&["tc", "qdisc", "add", "dev", &link.if_b, "clsact"]);
    for hook in ["ingress", "egress"] {
        b.exec(&[
            "tc", "filter", "add", "dev", &link.if_b, hook, "protocol", "all", "u32", "match",
            "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", &m_a,
        ]);
    }
    m_b
}

/// flowd capturing `port` through AF_XDP, the event log at `log`.
fn flowd_afxdp_l7(link: &Link, port: &str, log: &Path) -> Flowd {
    Flowd::start(
        &link.b,
        &[
            "--af-xdp",
            port,
            "--drain-interval-ms",
            "100",
            "--l7-log",
            log.to_str().expect("UTF-8 path"),
        ],
    )
}

/// As in `l7.rs`: a client in `ns`, 20 s at most.
fn client(ns: &flowd_tests::Netns, args: &[&str]) -> String {
    let mut full = vec!["timeout", "20"];
    full.extend_from_slice(args);
    String::from_utf8(ns.exec(&full).stdout).expect("UTF-8 output")
}

/// Asserts the events equal `want` per 5-tuple (in order within one), on
/// every key but `ts` and the latency.
fn assert_events(events: &[Value], want: &BTreeMap<Tuple, Vec<Value>>) {
    let got = by_tuple(events);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "5-tuples of the events: {events:#?}"
    );
    for (k, w) in want {
        let g: Vec<Value> = got[k].iter().map(exact_part).collect();
        assert_eq!(&g, w, "{k:?}");
    }
}

/// The nine requests of `l7.rs`'s HTTP test (three on one connection, a
/// 1200-byte URL, a 3000-byte cookie) on the same 500-byte MTU link, seen
/// on the mirror port: one event each, with the same fields.
#[test]
fn afxdp_mirror_http_server_and_curl_one_event_per_request() {
    let link = Link::new();
    link.no_offloads();
    for (ns, ifc) in [(&link.a, &link.if_a), (&link.b, &link.if_b)] {
        ns.exec(&["ip", "link", "set", ifc, "mtu", "500"]);
    }
    let port = mirror(&link);
    let dir = TempDir::new("flowdt-afxdp-http");
    let www = dir.path().join("www");
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::write(www.join("index.html"), "<p>index</p>\n").unwrap();
    std::fs::write(www.join("a.txt"), "a\n").unwrap();
    std::fs::write(www.join("sub/index.html"), "<p>sub</p>\n").unwrap();
    let live = dir.path().join("live.jsonl");
    let mut flowd = flowd_afxdp_l7(&link, &port, &live);
    let _server = Proc::spawn(
        &link.b,
        &[
            "/usr/bin/python3",
            "-m",
            "http.server",
            "--bind",
            &link.ip_b,
            "--directory",
            www.to_str().unwrap(),
            "--protocol",
            "HTTP/1.1",
            "80",
        ],
        &dir.path().join("http.server.log"),
    );
    let server: SocketAddr = format!("{}:80", link.ip_b).parse().unwrap();
    wait::bound(&link.b, "tcp", server);

    let version = client(&link.a, &["curl", "--version"]);
    let ua = format!(
        "curl/{}",
        version.split_whitespace().nth(1).expect("curl's version")
    );
    let base = format!("http://{}", link.ip_b);
    let long_url = format!("/long/{}", "x".repeat(1200));
    let cookie = format!("c={}", "y".repeat(3000));
    let ip = link.ip_b.as_str();
    let req = |method: &'static str, url: &str, host: &str, status: u16| {
        (method, url.to_owned(), host.to_owned(), status)
    };
    let transfers: Vec<(u16, Vec<&str>, Vec<_>)> = vec![
        (
            40001,
            vec![],
            vec![
                req("GET", "/index.html", ip, 200),
                req("GET", "/sub", ip, 301),
                req("GET", "/sub/", ip, 200),
            ],
        ),
        (40002, vec![], vec![req("GET", "/missing", ip, 404)]),
        (40003, vec!["-I"], vec![req("HEAD", "/a.txt", ip, 200)]),
        (
            40004,
            vec!["-d", "x=1"],
            vec![req("POST", "/form", ip, 501)],
        ),
        (
            40005,
            vec!["-H", "Host: web.l7.test:8080"],
            vec![req("GET", "/a.txt?q=1&r=%20", "web.l7.test:8080", 200)],
        ),
        (40006, vec![], vec![req("GET", &long_url, ip, 404)]),
        (
            40007,
            vec!["-b", &cookie],
            vec![req("GET", "/index.html", ip, 200)],
        ),
    ];
    let mut want: BTreeMap<Tuple, Vec<Value>> = BTreeMap::new();
    for (cport, opts, reqs) in &transfers {
        let port_s = cport.to_string();
        let mut args = vec!["curl", "-sS", "--local-port", &port_s];
        args.extend(opts.iter().copied());
        args.extend(["-w", "%{http_code} %{local_port}\\n"]);
        let urls: Vec<String> = reqs.iter().map(|r| format!("{base}{}", r.1)).collect();
        for u in &urls {
            args.extend(["-o", "/dev/null", u.as_str()]);
        }
        let out = client(&link.a, &args);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), reqs.len(), "curl {args:?}: {out}");
        for (line, (method, url, host, status)) in lines.iter().zip(reqs) {
            assert_eq!(*line, format!("{status} {port_s}"), "{url}: {out}");
            let t = (
                link.ip_a.clone(),
                link.ip_b.clone(),
                u64::from(*cport),
                80,
                6,
                "http".to_owned(),
            );
            want.entry(t).or_default().push(json!({
                "device": port, "direction": "ingress",
                "src": link.ip_a, "dst": link.ip_b, "sport": cport, "dport": 80, "proto": 6,
                "kind": "http", "http_method": method, "http_url": url, "http_host": host,
                "http_user_agent": ua, "http_status": status,
            }));
        }
    }
    let n: usize = transfers.iter().map(|t| t.2.len()).sum();
    assert_eq!(n, 9);
    let events = events_settled(&live, n);
    assert_events(&events, &want);
    for e in &events {
        let ms = e["http_latency_ms"].as_f64().expect("http_latency_ms");
        assert!(ms > 0.0, "{e}");
    }
    let text = wait::scrape(&link.b, &flowd);
    let skipped = |reason| {
        metric(
            &text,
            "flowd_l7_skipped_total",
            &[
                ("device", &port),
                ("direction", "receive"),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(skipped("continuation_limit"), Some(1.0), "{text}");
    assert_eq!(skipped("ring_full"), Some(0.0));
    assert_eq!(skipped("budget"), Some(0.0));
    // Every frame went through the socket and the parser (nothing lost).
    let q0 = [("device", port.as_str()), ("queue", "0")];
    let frames = metric(&text, "flowd_af_xdp_frames_total", &q0).expect("frames");
    assert!(frames > 0.0);
    assert_eq!(
        metric(&text, "flowd_af_xdp_parsed_frames_total", &q0),
        Some(frames)
    );
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    assert_eq!(read_events(&live), events);
}

/// `l7.rs`'s DNS test on the mirror port: dnsmasq queried by dig over UDP
/// and TCP, IPv4 and IPv6 (two queries on one TCP connection); ten
/// queries, ten events with dig's names, types, IDs, rcodes and answers.
#[test]
fn afxdp_mirror_dns_dnsmasq_and_dig_one_event_per_query() {
    let link = Link::dual_stack();
    link.no_offloads();
    let port = mirror(&link);
    let dir = TempDir::new("flowdt-afxdp-dns");
    let live = dir.path().join("live.jsonl");
    let mut flowd = flowd_afxdp_l7(&link, &port, &live);
    let listen = format!("--listen-address={},{}", link.ip_b, link.ip6_b);
    let _dnsmasq = Proc::spawn(
        &link.b,
        &[
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--user=root",
            "--port=53",
            "--bind-interfaces",
            &listen,
            "--host-record=www.l7.test,198.18.200.1,fd00::c8:1",
            "--host-record=mail.l7.test,198.18.200.2",
            "--address=/multi.l7.test/198.18.200.3",
            "--address=/multi.l7.test/198.18.200.4",
            "--address=/nx.l7.test/",
        ],
        &dir.path().join("dnsmasq.log"),
    );
    for ip in [&link.ip_b, &format!("[{}]", link.ip6_b)] {
        let a: SocketAddr = format!("{ip}:53").parse().unwrap();
        wait::bound(&link.b, "udp", a);
        wait::bound(&link.b, "tcp", a);
    }
    // (name, type number, type, rcode, answers)
    type Q = (
        &'static str,
        u64,
        &'static str,
        u64,
        &'static [&'static str],
    );
    const WWW_A: Q = ("www.l7.test", 1, "A", 0, &["198.18.200.1"]);
    const MULTI: Q = (
        "multi.l7.test",
        1,
        "A",
        0,
        &["198.18.200.3", "198.18.200.4"],
    );
    // (IPv6, TCP, client port, queries)
    let queries: [(bool, bool, u16, &[Q]); 9] = [
        (false, false, 40101, &[WWW_A]),
        (
            false,
            false,
            40102,
            &[("www.l7.test", 28, "AAAA", 0, &["fd00::c8:1"])],
        ),
        (false, false, 40103, &[("mail.l7.test", 28, "AAAA", 5, &[])]),
        (false, false, 40104, &[MULTI]),
        (false, false, 40105, &[("foo.nx.l7.test", 1, "A", 3, &[])]),
        (true, false, 40106, &[WWW_A]),
        (
            true,
            false,
            40107,
            &[("bar.nx.l7.test", 28, "AAAA", 3, &[])],
        ),
        (
            false,
            true,
            40108,
            &[WWW_A, ("mail.l7.test", 1, "A", 0, &["198.18.200.2"])],
        ),
        (true, true, 40109, &[("foo.nx.l7.test", 28, "AAAA", 3, &[])]),
    ];
    let mut want: BTreeMap<Tuple, Vec<Value>> = BTreeMap::new();
    for (v6, tcp, cport, qs) in queries {
        let (src, dst) = if v6 {
            (&link.ip6_a, &link.ip6_b)
        } else {
            (&link.ip_a, &link.ip_b)
        };
        let server = format!("@{dst}");
        let bind = format!("{src}#{cport}");
        let mut args = vec!["dig", &server, "-b", &bind, "+tries=1", "+time=5"];
        if tcp {
            args.extend(["+tcp", "+keepopen"]);
        }
        for q in qs {
            args.extend([q.0, q.2]);
        }
        let out = client(&link.a, &args);
        let replies = crate::l7::parse_dig(&out);
        assert_eq!(replies.len(), qs.len(), "{args:?}: {out}");
        let proto = if tcp { 6 } else { 17 };
        let t = (
            src.clone(),
            dst.clone(),
            u64::from(cport),
            53,
            proto,
            "dns".to_owned(),
        );
        for (q, r) in qs.iter().zip(&replies) {
            let mut answers: Vec<&str> = r.answers.iter().map(String::as_str).collect();
            answers.sort();
            assert_eq!((r.rcode, answers), (q.3, q.4.to_vec()), "{args:?}: {out}");
            let mut e = json!({
                "device": port, "direction": "ingress",
                "src": src, "dst": dst, "sport": cport, "dport": 53, "proto": proto,
                "kind": "dns", "dns_qname": q.0, "dns_qtype": q.1, "dns_id": r.id,
                "dns_rcode": r.rcode,
            });
            if !r.answers.is_empty() {
                e["dns_answers"] = json!(r.answers);
            }
            want.entry(t.clone()).or_default().push(e);
        }
    }
    let events = events_settled(&live, 10);
    assert_events(&events, &want);
    for e in &events {
        let ms = e["dns_latency_ms"].as_f64().expect("dns_latency_ms");
        assert!(ms > 0.0, "{e}");
    }
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    assert_eq!(read_events(&live), events);
}

/// `l7.rs`'s TLS test on the mirror port: openssl s_server and s_client,
/// TLS 1.2 and 1.3, IPv4 and IPv6, with and without SNI and ALPN; five
/// handshakes, five events with the SNI, ALPN, versions, cipher and the
/// JA4 tshark computes from a capture of the same ClientHellos.
#[test]
fn afxdp_mirror_tls_openssl_server_and_client_one_event_per_handshake() {
    let link = Link::dual_stack();
    link.no_offloads();
    let span = mirror(&link);
    let dir = TempDir::new("flowdt-afxdp-tls");
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    flowd_tests::sh(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=tls.l7.test",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    let live = dir.path().join("live.jsonl");
    let mut flowd = flowd_afxdp_l7(&link, &span, &live);
    let cap = Capture::start(&link.b, &link.if_b, dir.path(), "tls");
    let mut servers = Vec::new();
    for (i, accept) in [
        format!("{}:443", link.ip_b),
        format!("[{}]:8443", link.ip6_b),
    ]
    .iter()
    .enumerate()
    {
        servers.push(Proc::spawn(
            &link.b,
            &[
                "openssl",
                "s_server",
                "-quiet",
                "-accept",
                accept,
                "-key",
                key.to_str().unwrap(),
                "-cert",
                cert.to_str().unwrap(),
                "-alpn",
                "h2,http/1.1",
                "-ciphersuites",
                "TLS_AES_128_GCM_SHA256",
                "-cipher",
                "ECDHE-ECDSA-AES128-GCM-SHA256",
            ],
            &dir.path().join(format!("s_server{i}.log")),
        ));
        wait::bound(&link.b, "tcp", accept.parse().unwrap());
    }

    // (IPv6, client port, s_client options, SNI, ALPN, versions offered
    // (None: OpenSSL's defaults, which depend on its configuration: taken
    // from tshark), negotiated version)
    type Hs = (
        bool,
        u16,
        &'static [&'static str],
        Option<&'static str>,
        &'static [&'static str],
        Option<&'static [u16]>,
        u16,
    );
    let handshakes: [Hs; 5] = [
        (
            false,
            40201,
            &[
                "-tls1_3",
                "-servername",
                "a.tls.l7.test",
                "-alpn",
                "h2,http/1.1",
            ],
            Some("a.tls.l7.test"),
            &["h2", "http/1.1"],
            Some(&[0x0304]),
            0x0304,
        ),
        (
            false,
            40202,
            &[
                "-tls1_2",
                "-servername",
                "b.tls.l7.test",
                "-alpn",
                "http/1.1",
            ],
            Some("b.tls.l7.test"),
            &["http/1.1"],
            Some(&[]),
            0x0303,
        ),
        (
            false,
            40203,
            &["-noservername", "-alpn", "h2"],
            None,
            &["h2"],
            None,
            0x0304,
        ),
        (
            true,
            40204,
            &["-tls1_2", "-servername", "c.tls.l7.test"],
            Some("c.tls.l7.test"),
            &[],
            Some(&[]),
            0x0303,
        ),
        (
            true,
            40205,
            &["-tls1_3", "-servername", "d.tls.l7.test", "-alpn", "h2"],
            Some("d.tls.l7.test"),
            &["h2"],
            Some(&[0x0304]),
            0x0304,
        ),
    ];
    let mut expected = Vec::new();
    for (v6, port, opts, sni, alpn, offered, version) in handshakes {
        let (src, dst, dport) = if v6 {
            (&link.ip6_a, &link.ip6_b, 8443)
        } else {
            (&link.ip_a, &link.ip_b, 443)
        };
        let (connect, bind) = if v6 {
            (format!("[{dst}]:{dport}"), format!("[{src}]:{port}"))
        } else {
            (format!("{dst}:{dport}"), format!("{src}:{port}"))
        };
        let mut args = vec!["openssl", "s_client", "-connect", &connect, "-bind", &bind];
        args.extend(opts);
        let out = client(&link.a, &args);
        // The handshake s_client reports: the version and the server's cipher.
        let (name, cipher, cipher_name) = if version == 0x0304 {
            ("TLSv1.3", 0x1301, "TLS_AES_128_GCM_SHA256")
        } else {
            ("TLSv1.2", 0xc02b, "ECDHE-ECDSA-AES128-GCM-SHA256")
        };
        assert!(
            out.contains(&format!("New, {name}, Cipher is {cipher_name}")),
            "{args:?}: {out}"
        );
        let mut e = json!({
            "device": span, "direction": "ingress",
            "src": src, "dst": dst, "sport": port, "dport": dport, "proto": 6, "kind": "tls",
            "tls_version": version, "tls_cipher": cipher,
        });
        if let Some(s) = sni {
            e["tls_sni"] = json!(s);
        }
        if !alpn.is_empty() {
            e["tls_alpn"] = json!(alpn);
        }
        if let Some(o) = offered.filter(|o| !o.is_empty()) {
            e["tls_versions_offered"] = json!(o);
        }
        let t = (
            src.clone(),
            dst.clone(),
            u64::from(port),
            dport,
            6,
            "tls".to_owned(),
        );
        expected.push((t, e, offered));
    }
    let events = events_settled(&live, handshakes.len());
    for e in &events {
        let ja4 = e["tls_ja4"]
            .as_str()
            .unwrap_or_else(|| panic!("no tls_ja4 in {e}"));
        assert!(crate::l7::ja4_shaped(ja4), "{e}");
    }
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    assert_eq!(read_events(&live), events);
    drop(servers);
    let capture = cap.stop();

    // The JA4 of each ClientHello, and OpenSSL's default versions, from
    // tshark's dissection of the capture.
    let hellos = crate::l7::tshark_hellos(&capture);
    let mut want: BTreeMap<Tuple, Vec<Value>> = BTreeMap::new();
    for (t, mut e, offered) in expected {
        let (ja4, tshark_offered) = &hellos[&t.2];
        e["tls_ja4"] = json!(ja4);
        match offered {
            Some(o) => assert_eq!(&tshark_offered[..], o, "{t:?}"),
            None if !tshark_offered.is_empty() => e["tls_versions_offered"] = json!(tshark_offered),
            None => panic!("{t:?}: no supported_versions offered"),
        }
        want.entry(t).or_default().push(e);
    }
    assert_events(&events, &want);
}

/// The copy budget (`[l7] budget_per_s`, per CPU in the packet path) does
/// not limit AF_XDP frames: the replay driver runs in the worker, on
/// frames user space already holds. With a budget of 2 samples a second,
/// 20 DNS queries in one dig run (40 samples in well under a second):
/// on the source interface, captured in-kernel by the same daemon, the
/// budget skips samples; on the AF_XDP mirror of the same traffic every
/// query gives its event and nothing is skipped.
#[test]
fn afxdp_samples_are_not_limited_by_the_in_kernel_copy_budget() {
    let link = Link::new();
    link.no_offloads();
    let span = mirror(&link);
    let dir = TempDir::new("flowdt-afxdp-budget");
    let live = dir.path().join("live.jsonl");
    let conf = dir.path().join("flowd.toml");
    std::fs::write(&conf, "[l7]\nbudget_per_s = 2\n").unwrap();
    let mut flowd = Flowd::start(
        &link.b,
        &[
            "--config",
            conf.to_str().unwrap(),
            "--af-xdp",
            &span,
            "--iface",
            &link.if_b,
            "--drain-interval-ms",
            "100",
            "--l7-log",
            live.to_str().unwrap(),
        ],
    );
    let listen = format!("--listen-address={}", link.ip_b);
    let _dnsmasq = Proc::spawn(
        &link.b,
        &[
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--user=root",
            "--port=53",
            "--bind-interfaces",
            &listen,
            "--host-record=www.l7.test,198.18.200.1",
        ],
        &dir.path().join("dnsmasq.log"),
    );
    let server: SocketAddr = format!("{}:53", link.ip_b).parse().unwrap();
    wait::bound(&link.b, "udp", server);
    let at = format!("@{}", link.ip_b);
    let bind = format!("{}#40301", link.ip_a);
    let mut args = vec!["dig", &at, "-b", &bind, "+tries=1", "+time=5"];
    for _ in 0..20 {
        args.extend(["www.l7.test", "A"]);
    }
    let out = client(&link.a, &args);
    let replies = crate::l7::parse_dig(&out);
    assert_eq!(replies.len(), 20, "{out}");
    assert!(replies.iter().all(|r| r.rcode == 0), "{out}");

    // Every query through AF_XDP, in order, with dig's IDs.
    wait::until(
        "20 events from the mirror port",
        wait::DEADLINE,
        || read_events(&live),
        |ev| ev.iter().filter(|e| e["device"] == span.as_str()).count() >= 20,
    );
    let text = wait::scrape(&link.b, &flowd);
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    let events = read_events(&live);
    let ids: Vec<u64> = events
        .iter()
        .filter(|e| e["device"] == span.as_str())
        .map(|e| {
            assert_eq!(
                (
                    e["kind"].as_str(),
                    e["dns_qname"].as_str(),
                    e["dns_rcode"].as_u64()
                ),
                (Some("dns"), Some("www.l7.test"), Some(0)),
                "{e}"
            );
            e["dns_id"].as_u64().unwrap()
        })
        .collect();
    let dig_ids: Vec<u64> = replies.iter().map(|r| r.id).collect();
    assert_eq!(ids, dig_ids);
    let skipped = |dev: &str, dir| {
        metric(
            &text,
            "flowd_l7_skipped_total",
            &[("device", dev), ("direction", dir), ("reason", "budget")],
        )
        .unwrap_or_else(|| panic!("no budget series for {dev} {dir}: {text}"))
    };
    assert_eq!(skipped(&span, "receive"), 0.0, "{text}");
    // The in-kernel capture of the same packets: the budget bit.
    let kernel = skipped(&link.if_b, "receive") + skipped(&link.if_b, "transmit");
    assert!(kernel > 0.0, "in-kernel budget skips: {kernel}\n{text}");
    let in_kernel = events
        .iter()
        .filter(|e| e["device"] == link.if_b.as_str())
        .count();
    assert!(
        in_kernel < 20,
        "{in_kernel} in-kernel events at a budget of 2/s"
    );
}
