//! The application layer live (issue 12, "Tests / Live"): real servers
//! (Python's http.server, dnsmasq, openssl s_server) and clients (curl,
//! dig, openssl s_client) in the test's namespaces, flowd on the server's
//! interface with `--l7-log`. Each request, query and handshake gives
//! exactly one event with the fields the client and server agree on; a
//! capture of the same traffic on the same interface, replayed with
//! `flowd replay --l7-log`, gives the same events (see
//! `flowd_tests::l7::assert_replay_equals_live` for the keys that depend on
//! the capture point). Bad input: `l7_bad_input.rs`.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, process::Command};

use flowd::export::l7stats::{rcode_label, status_class, tls_version_label};
use flowd_tests::{
    Flowd, Link, Netns, TempDir,
    l7::{
        Capture, Proc, Tuple, assert_family, assert_replay_equals_live, by_tuple, events_by,
        events_settled, exact_part, read_events, replay_events, replay_metrics,
    },
    metric, wait,
};
use serde_json::{Value, json};

/// flowd on `link.b`'s end with the event log at `log`.
fn flowd_l7(link: &Link, log: &Path) -> Flowd {
    Flowd::start(
        &link.b,
        &[
            "--iface",
            &link.if_b,
            "--drain-interval-ms",
            "100",
            "--l7-log",
            log.to_str().expect("UTF-8 path"),
        ],
    )
}

/// Runs a client inside `ns` for 20 s at most (coreutils' `timeout`: a
/// server that never answers fails the test instead of hanging it); its
/// stdout, panicking when it fails.
fn client(ns: &Netns, args: &[&str]) -> String {
    let mut full = vec!["timeout", "20"];
    full.extend_from_slice(args);
    String::from_utf8(ns.exec(&full).stdout).expect("UTF-8 output")
}

/// Packets with application metadata the programs skipped, by direction
/// and reason, from one scrape.
fn skipped(text: &str, dev: &str, dir: &str, reason: &str) -> Option<f64> {
    metric(
        text,
        "flowd_l7_skipped_total",
        &[("device", dev), ("direction", dir), ("reason", reason)],
    )
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

// ---------------------------------------------------------------- HTTP

/// One curl transfer and the event it must give.
struct Req {
    method: &'static str,
    url: String,
    host: String,
    status: u16,
}

/// Nine requests to `python3 -m http.server` (HTTP/1.1, keep-alive) on a
/// link with a 500-byte MTU: 448 payload bytes per segment, below the
/// 512-byte snap length, so a long request spans whole segments. Three
/// share one connection; one has a 1200-byte URL (its Host header is in its
/// third segment: reassembled from the continuation segments); one a
/// 3000-byte cookie (seven segments: the event comes from the first four,
/// the rest is counted as `continuation_limit`).
#[test]
fn http_server_and_curl_one_event_per_request() {
    let link = Link::new();
    link.no_offloads();
    for (ns, ifc) in [(&link.a, &link.if_a), (&link.b, &link.if_b)] {
        ns.exec(&["ip", "link", "set", ifc, "mtu", "500"]);
    }
    let dir = TempDir::new("flowdt-l7http");
    let www = dir.path().join("www");
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::write(www.join("index.html"), "<p>index</p>\n").unwrap();
    std::fs::write(www.join("a.txt"), "a\n").unwrap();
    std::fs::write(www.join("sub/index.html"), "<p>sub</p>\n").unwrap();
    let live = dir.path().join("live.jsonl");
    let mut flowd = flowd_l7(&link, &live);
    let cap = Capture::start(&link.b, &link.if_b, dir.path(), "http");
    let _server = Proc::spawn(
        &link.b,
        &[
            // Debian's Python, not a pyenv shim on PATH.
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
    let req = |method, url: &str, host: &str, status| Req {
        method,
        url: url.to_owned(),
        host: host.to_owned(),
        status,
    };
    let ip = link.ip_b.as_str();
    // (client port, curl options, requests on that connection)
    let transfers: Vec<(u16, Vec<&str>, Vec<Req>)> = vec![
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
    let mut curl_ms: BTreeMap<(u16, usize), f64> = BTreeMap::new();
    for (port, opts, reqs) in &transfers {
        let port_s = port.to_string();
        let mut args = vec!["curl", "-sS", "--local-port", &port_s];
        args.extend(opts.iter().copied());
        args.extend(["-w", "%{http_code} %{time_total} %{local_port}\\n"]);
        let urls: Vec<String> = reqs.iter().map(|r| format!("{base}{}", r.url)).collect();
        for u in &urls {
            args.extend(["-o", "/dev/null", u.as_str()]);
        }
        let out = client(&link.a, &args);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), reqs.len(), "curl {args:?}: {out}");
        for (i, (line, r)) in lines.iter().zip(reqs).enumerate() {
            let f: Vec<&str> = line.split(' ').collect();
            // The server answered as expected, on the one connection.
            assert_eq!(f[0], r.status.to_string(), "{}: {out}", r.url);
            assert_eq!(f[2], port_s, "{}: {out}", r.url);
            curl_ms.insert((*port, i), f[1].parse::<f64>().unwrap() * 1000.0);
            let t = (
                link.ip_a.clone(),
                link.ip_b.clone(),
                u64::from(*port),
                80,
                6,
                "http".to_owned(),
            );
            want.entry(t).or_default().push(json!({
                "device": link.if_b, "direction": "ingress",
                "src": link.ip_a, "dst": link.ip_b, "sport": port, "dport": 80, "proto": 6,
                "kind": "http", "http_method": r.method, "http_url": r.url, "http_host": r.host,
                "http_user_agent": ua, "http_status": r.status,
            }));
        }
    }
    let n: usize = transfers.iter().map(|t| t.2.len()).sum();
    assert_eq!(n, 9);
    let events = events_settled(&live, n);
    assert_events(&events, &want);
    // Latency: from the request's first segment to the status line, within
    // what curl measured for the whole transfer (connect included).
    for (port, reqs) in by_tuple(&events) {
        for (i, e) in reqs.iter().enumerate() {
            let ms = e["http_latency_ms"].as_f64().expect("http_latency_ms");
            let curl = curl_ms[&(port.2 as u16, i)];
            assert!(
                ms > 0.0 && ms <= curl,
                "{e}: latency {ms} ms, curl {curl} ms"
            );
        }
    }
    // The 3000-byte cookie's request was the only one with more segments
    // than the continuation covers; nothing else was skipped.
    let text = wait::scrape(&link.b, &flowd);
    let dev = link.if_b.as_str();
    assert_eq!(
        skipped(&text, dev, "receive", "continuation_limit"),
        Some(1.0)
    );
    assert_eq!(
        skipped(&text, dev, "transmit", "continuation_limit"),
        Some(0.0)
    );
    for dir in ["receive", "transmit"] {
        for reason in ["ring_full", "budget"] {
            assert_eq!(
                skipped(&text, dev, dir, reason),
                Some(0.0),
                "{dir} {reason}"
            );
        }
    }
    // A clean stop emits nothing more: every request had its response.
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    assert_eq!(read_events(&live), events);

    let capture = cap.stop();
    let replayed = replay_events(&capture, &dir.path().join("replay.jsonl"));
    assert_replay_equals_live(&events, &replayed, &link.if_b, &capture);
    // Responses by status class, as curl saw them, live and replayed.
    let classes = events_by(&want, "http_status", |s| status_class(s as u16).to_owned());
    assert_eq!(classes.values().sum::<u64>(), n as u64);
    let replayed = replay_metrics(&capture, dir.path());
    assert_family(
        &text,
        &replayed,
        "flowd_http_responses_total",
        "class",
        &classes,
        Some("flowd_http_latency_seconds"),
    );
}

// ---------------------------------------------------------------- DNS

/// One reply as dig printed it.
#[derive(Debug)]
pub(crate) struct DigReply {
    pub(crate) id: u64,
    pub(crate) rcode: u64,
    pub(crate) answers: Vec<String>,
}

/// The replies in dig's output, in order (one per query on its command line).
pub(crate) fn parse_dig(out: &str) -> Vec<DigReply> {
    let mut replies = Vec::new();
    let mut lines = out.lines();
    while let Some(l) = lines.next() {
        if let Some((_, rest)) = l.split_once(";; ->>HEADER<<- ") {
            // "opcode: QUERY, status: NOERROR, id: 3105"
            let field = |name: &str| {
                rest.split(", ")
                    .find_map(|kv| kv.strip_prefix(name))
                    .unwrap_or_else(|| panic!("{name} in {l:?}"))
                    .to_owned()
            };
            let rcode = match field("status: ").as_str() {
                "NOERROR" => 0,
                "SERVFAIL" => 2,
                "NXDOMAIN" => 3,
                "REFUSED" => 5,
                s => panic!("status {s}"),
            };
            replies.push(DigReply {
                id: field("id: ").parse().unwrap(),
                rcode,
                answers: Vec::new(),
            });
        } else if l == ";; ANSWER SECTION:" {
            let r = replies.last_mut().expect("a header before the answers");
            for a in lines.by_ref().take_while(|a| !a.is_empty()) {
                r.answers
                    .push(a.split_whitespace().last().unwrap().to_owned());
            }
        }
    }
    replies
}

/// dnsmasq answering A and AAAA for some names, NXDOMAIN under
/// `nx.l7.test`, queried with dig over UDP and TCP, IPv4 and IPv6; two
/// queries share one TCP connection. Every query gives one event with its
/// name, type, ID, rcode and answers as dig saw them.
#[test]
fn dns_dnsmasq_and_dig_one_event_per_query() {
    let link = Link::dual_stack();
    link.no_offloads();
    let dir = TempDir::new("flowdt-l7dns");
    let live = dir.path().join("live.jsonl");
    let mut flowd = flowd_l7(&link, &live);
    let cap = Capture::start(&link.b, &link.if_b, dir.path(), "dns");
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

    // (IPv6, TCP, client port, [(name, type number, type, rcode, answers)])
    type Q = (
        &'static str,
        u64,
        &'static str,
        u64,
        &'static [&'static str],
    );
    const WWW_A: Q = ("www.l7.test", 1, "A", 0, &["198.18.200.1"]);
    let queries: [(bool, bool, u16, &[Q]); 9] = [
        (false, false, 40101, &[WWW_A]),
        (
            false,
            false,
            40102,
            &[("www.l7.test", 28, "AAAA", 0, &["fd00::c8:1"])],
        ),
        // Only an A record, and no upstream to ask: REFUSED.
        (false, false, 40103, &[("mail.l7.test", 28, "AAAA", 5, &[])]),
        (
            false,
            false,
            40104,
            &[(
                "multi.l7.test",
                1,
                "A",
                0,
                &["198.18.200.3", "198.18.200.4"],
            )],
        ),
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
    let mut dig_ms: BTreeMap<u16, f64> = BTreeMap::new();
    for (v6, tcp, port, qs) in queries {
        let (src, dst) = if v6 {
            (&link.ip6_a, &link.ip6_b)
        } else {
            (&link.ip_a, &link.ip_b)
        };
        let server = format!("@{dst}");
        let bind = format!("{src}#{port}");
        let mut args = vec!["dig", &server, "-b", &bind, "+tries=1", "+time=5"];
        if tcp {
            args.extend(["+tcp", "+keepopen"]);
        }
        for q in qs {
            args.extend([q.0, q.2]);
        }
        let started = std::time::Instant::now();
        let out = client(&link.a, &args);
        dig_ms.insert(port, started.elapsed().as_secs_f64() * 1000.0);
        let replies = parse_dig(&out);
        assert_eq!(replies.len(), qs.len(), "{args:?}: {out}");
        let proto = if tcp { 6 } else { 17 };
        let t = (
            src.clone(),
            dst.clone(),
            u64::from(port),
            53,
            proto,
            "dns".to_owned(),
        );
        for (q, r) in qs.iter().zip(&replies) {
            // dnsmasq answered as configured (in an order of its choice:
            // the event must have dig's).
            let mut answers: Vec<&str> = r.answers.iter().map(String::as_str).collect();
            answers.sort();
            assert_eq!((r.rcode, answers), (q.3, q.4.to_vec()), "{args:?}: {out}");
            let mut e = json!({
                "device": link.if_b, "direction": "ingress",
                "src": src, "dst": dst, "sport": port, "dport": 53, "proto": proto,
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
    // Latency: from the query to the response on the server's interface,
    // within the run of the dig that sent it. (Not within dig's own "Query
    // time": dig stamps a query once its send callback runs, and on a busy
    // host that was 2 ms after the query had crossed the interface: dig
    // said 0 ms where flowd and the capture both said 2.1 ms.)
    for e in &events {
        let ms = e["dns_latency_ms"].as_f64().expect("dns_latency_ms");
        let dig = dig_ms[&(e["sport"].as_u64().unwrap() as u16)];
        assert!(
            ms > 0.0 && ms <= dig,
            "{e}: latency {ms} ms, the dig run {dig} ms"
        );
    }
    let text = wait::scrape(&link.b, &flowd);
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    assert_eq!(read_events(&live), events);

    let capture = cap.stop();
    let replayed = replay_events(&capture, &dir.path().join("replay.jsonl"));
    assert_replay_equals_live(&events, &replayed, &link.if_b, &capture);
    // Responses by rcode, as dig saw them, live and replayed.
    let rcodes = events_by(&want, "dns_rcode", |r| rcode_label(r as u8));
    assert_eq!(rcodes.values().sum::<u64>(), 10);
    let replayed = replay_metrics(&capture, dir.path());
    assert_family(
        &text,
        &replayed,
        "flowd_dns_responses_total",
        "rcode",
        &rcodes,
        Some("flowd_dns_latency_seconds"),
    );
}

// ---------------------------------------------------------------- TLS

/// JA4 (FoxIO, `technical_details/JA4.md`) and the versions offered of
/// each ClientHello in a capture, computed here from tshark's dissection:
/// the test's own oracle for flowd's fingerprint. Keyed by the client's port.
pub(crate) fn tshark_hellos(capture: &Path) -> BTreeMap<u64, (String, Vec<u16>)> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(capture)
        .args(["-d", "tcp.port==8443,tls", "-Y", "tls.handshake.type==1"])
        .args(["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"])
        .args(["-E", "separator=|"])
        .args(["-e", "tcp.srcport", "-e", "tls.handshake.version"])
        .args([
            "-e",
            "tls.handshake.ciphersuite",
            "-e",
            "tls.handshake.extension.type",
        ])
        .args([
            "-e",
            "tls.handshake.sig_hash_alg",
            "-e",
            "tls.handshake.extensions_alpn_str",
        ])
        .args(["-e", "tls.handshake.extensions.supported_version"])
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let grease = |v: u16| (v & 0x0f0f) == 0x0a0a && (v >> 8) == (v & 0xff);
    let hex = |s: &str| -> Vec<u16> {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(|x| u16::from_str_radix(x.trim_start_matches("0x"), 16).unwrap())
            .filter(|v| !grease(*v))
            .collect()
    };
    let hash12 = |s: &str| -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
        d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
    };
    let list = |v: &[u16]| {
        v.iter()
            .map(|x| format!("{x:04x}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut m = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f.len(), 7, "{line}");
        let mut ciphers = hex(f[2]);
        let exts: Vec<u16> = f[3]
            .split(',')
            .map(|x| x.parse::<u16>().unwrap())
            .filter(|v| !grease(*v))
            .collect();
        // signature_algorithms_cert would add its list to tshark's field.
        assert!(!exts.contains(&50), "{line}");
        let offered = hex(f[6]);
        let version = offered.iter().copied().max().unwrap_or(hex(f[1])[0]);
        let alpn = match f[5].split(',').next().filter(|a| !a.is_empty()) {
            Some(a) => format!("{}{}", &a[..1], &a[a.len() - 1..]),
            None => "00".to_owned(),
        };
        let a = format!(
            "t{}{}{:02}{:02}{alpn}",
            match version {
                0x0304 => "13",
                0x0303 => "12",
                v => panic!("version {v:#x}"),
            },
            if exts.contains(&0) { 'd' } else { 'i' },
            ciphers.len(),
            exts.len(),
        );
        ciphers.sort_unstable();
        let mut sorted: Vec<u16> = exts.into_iter().filter(|e| *e != 0 && *e != 16).collect();
        sorted.sort_unstable();
        let c = format!("{}_{}", list(&sorted), list(&hex(f[4])));
        let ja4 = format!("{a}_{}_{}", hash12(&list(&ciphers)), hash12(&c));
        m.insert(f[0].parse().unwrap(), (ja4, offered));
    }
    m
}

/// JA4's shape: `t13d0411h2_<12 hex>_<12 hex>`.
pub(crate) fn ja4_shaped(s: &str) -> bool {
    let p: Vec<&str> = s.split('_').collect();
    let hex12 = |x: &str| {
        x.len() == 12
            && x.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    p.len() == 3
        && p[0].len() == 10
        && p[0].starts_with('t')
        && ["12", "13"].contains(&&p[0][1..3])
        && matches!(&p[0][3..4], "d" | "i")
        && p[0][4..8].bytes().all(|b| b.is_ascii_digit())
        && p[0][8..].bytes().all(|b| b.is_ascii_alphanumeric())
        && hex12(p[1])
        && hex12(p[2])
}

/// openssl s_server (TLS 1.2 and 1.3, one cipher each) on 443 over IPv4
/// and 8443 over IPv6, s_client with and without `-servername` and
/// `-alpn`, `-tls1_2`, `-tls1_3` or both: one event per handshake with the
/// SNI, ALPN and versions offered, the negotiated version and cipher, and
/// the JA4 tshark's dissection of the same ClientHello gives.
#[test]
fn tls_openssl_server_and_client_one_event_per_handshake() {
    let link = Link::dual_stack();
    link.no_offloads();
    let dir = TempDir::new("flowdt-l7tls");
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
    let mut flowd = flowd_l7(&link, &live);
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
            "device": link.if_b, "direction": "ingress",
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
        assert!(ja4_shaped(ja4), "{e}");
    }
    let text = wait::scrape(&link.b, &flowd);
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    assert_eq!(read_events(&live), events);
    drop(servers);
    let capture = cap.stop();

    // The JA4 of each ClientHello, and OpenSSL's default versions, from
    // tshark's dissection of the capture.
    let hellos = tshark_hellos(&capture);
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
    let replayed = replay_events(&capture, &dir.path().join("replay.jsonl"));
    assert_replay_equals_live(&events, &replayed, &link.if_b, &capture);
    // Handshakes by the version s_client negotiated, live and replayed.
    let versions = events_by(&want, "tls_version", |v| {
        tls_version_label(Some(v as u16)).to_owned()
    });
    assert_eq!(versions.values().sum::<u64>(), handshakes.len() as u64);
    let replayed = replay_metrics(&capture, dir.path());
    assert_family(
        &text,
        &replayed,
        "flowd_tls_handshakes_total",
        "version",
        &versions,
        None,
    );
}
