//! The HTTP, DNS and TLS scenarios that `l7.rs` (flowd in-kernel on the
//! server's interface) and `afxdp_l7.rs` (flowd through AF_XDP on a mirror
//! port) both run: one copy of the servers, the clients and the events
//! they must give, so the two paths are held to the same expectations.
//! What differs between them is a parameter: the device the events name
//! (the caller starts the daemon, and any capture, before the servers).

use std::{collections::BTreeMap, net::SocketAddr, path::Path, process::Command};

use flowd_tests::{
    Link, Netns,
    l7::{Proc, Tuple, by_tuple, exact_part},
    wait,
};
use serde_json::{Value, json};

/// Runs a client inside `ns` for 20 s at most (coreutils' `timeout`: a
/// server that never answers fails the test instead of hanging it); its
/// stdout, panicking when it fails.
pub(crate) fn client(ns: &Netns, args: &[&str]) -> String {
    let mut full = vec!["timeout", "20"];
    full.extend_from_slice(args);
    String::from_utf8(ns.exec(&full).stdout).expect("UTF-8 output")
}

/// Asserts the events equal `want` per 5-tuple (in order within one), on
/// every key but `ts` and the latency.
pub(crate) fn assert_events(events: &[Value], want: &BTreeMap<Tuple, Vec<Value>>) {
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

/// The HTTP scenario's link: a veth pair without offloads and with a
/// 500-byte MTU (448 payload bytes per segment, below the 512-byte snap
/// length, so a long request spans whole segments).
pub(crate) fn http_link() -> Link {
    let link = Link::new();
    link.no_offloads();
    for (ns, ifc) in [(&link.a, &link.if_a), (&link.b, &link.if_b)] {
        ns.exec(&["ip", "link", "set", ifc, "mtu", "500"]);
    }
    link
}

/// `python3 -m http.server` (HTTP/1.1, keep-alive) on `link.ip_b`:80,
/// serving a small tree under `dir`; returns once it listens.
pub(crate) fn http_server(link: &Link, dir: &Path) -> Proc {
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::write(www.join("index.html"), "<p>index</p>\n").unwrap();
    std::fs::write(www.join("a.txt"), "a\n").unwrap();
    std::fs::write(www.join("sub/index.html"), "<p>sub</p>\n").unwrap();
    let server = Proc::spawn(
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
        &dir.join("http.server.log"),
    );
    let addr: SocketAddr = format!("{}:80", link.ip_b).parse().unwrap();
    wait::bound(&link.b, "tcp", addr);
    server
}

/// One curl transfer and the event it must give.
struct Req {
    method: &'static str,
    url: String,
    host: String,
    status: u16,
}

/// What the HTTP clients saw and the events they must give.
pub(crate) struct HttpRun {
    /// The events, per 5-tuple, with `device` and `direction: ingress`.
    pub(crate) want: BTreeMap<Tuple, Vec<Value>>,
    /// curl's `time_total` in ms, by (client port, request on the connection).
    pub(crate) curl_ms: BTreeMap<(u16, usize), f64>,
    /// How many requests (9).
    pub(crate) n: usize,
}

/// Nine requests with curl from `link.a` to `http_server`: three share one
/// connection; one has a 1200-byte URL (its Host header is in its third
/// segment: reassembled from the continuation segments); one a 3000-byte
/// cookie (seven segments: the event comes from the first four, the rest
/// is counted as `continuation_limit`). Asserts curl got the statuses
/// expected, each on its connection; the events name `device`.
pub(crate) fn http_requests(link: &Link, device: &str) -> HttpRun {
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
            assert_eq!(f.len(), 3, "{}: {out}", r.url);
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
                "device": device, "direction": "ingress",
                "src": link.ip_a, "dst": link.ip_b, "sport": port, "dport": 80, "proto": 6,
                "kind": "http", "http_method": r.method, "http_url": r.url, "http_host": r.host,
                "http_user_agent": ua, "http_status": r.status,
            }));
        }
    }
    let n: usize = transfers.iter().map(|t| t.2.len()).sum();
    assert_eq!(n, 9);
    HttpRun { want, curl_ms, n }
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

/// dnsmasq in `ns` on port 53 of the addresses in `listen` (comma
/// separated), with no upstream, no hosts file and only `records` (its
/// `--host-record=` and `--address=` options); its log at `log`.
pub(crate) fn spawn_dnsmasq(ns: &Netns, listen: &str, records: &[&str], log: &Path) -> Proc {
    let listen = format!("--listen-address={listen}");
    let mut args = vec![
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
    ];
    args.extend_from_slice(records);
    Proc::spawn(ns, &args, log)
}

/// dnsmasq on `link.b` (both families, UDP and TCP port 53) answering A and
/// AAAA for some names under `l7.test`, NXDOMAIN under `nx.l7.test`;
/// returns once it listens.
pub(crate) fn dnsmasq(link: &Link, dir: &Path) -> Proc {
    let dnsmasq = spawn_dnsmasq(
        &link.b,
        &format!("{},{}", link.ip_b, link.ip6_b),
        &[
            "--host-record=www.l7.test,198.18.200.1,fd00::c8:1",
            "--host-record=mail.l7.test,198.18.200.2",
            "--address=/multi.l7.test/198.18.200.3",
            "--address=/multi.l7.test/198.18.200.4",
            "--address=/nx.l7.test/",
        ],
        &dir.join("dnsmasq.log"),
    );
    for ip in [&link.ip_b, &format!("[{}]", link.ip6_b)] {
        let a: SocketAddr = format!("{ip}:53").parse().unwrap();
        wait::bound(&link.b, "udp", a);
        wait::bound(&link.b, "tcp", a);
    }
    dnsmasq
}

/// The number of queries `dns_queries` sends (in nine dig runs).
pub(crate) const DNS_QUERIES: usize = 10;

/// Queries `dnsmasq` with dig from `link.a` over UDP and TCP, IPv4 and
/// IPv6; two queries share one TCP connection. Asserts dnsmasq answered as
/// configured; returns the events (naming `device`) with the name, type,
/// ID, rcode and answers as dig saw them, and each dig run's wall time in
/// ms by client port.
pub(crate) fn dns_queries(
    link: &Link,
    device: &str,
) -> (BTreeMap<Tuple, Vec<Value>>, BTreeMap<u16, f64>) {
    // (name, type number, type, rcode, answers)
    type Q = (
        &'static str,
        u64,
        &'static str,
        u64,
        &'static [&'static str],
    );
    const WWW_A: Q = ("www.l7.test", 1, "A", 0, &["198.18.200.1"]);
    // (IPv6, TCP, client port, queries)
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
    assert_eq!(
        queries.iter().map(|q| q.3.len()).sum::<usize>(),
        DNS_QUERIES
    );
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
                "device": device, "direction": "ingress",
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
    (want, dig_ms)
}

// ---------------------------------------------------------------- TLS

/// A self-signed P-256 key and certificate for `tls.l7.test` in `dir`, and
/// openssl s_server (TLS 1.2 and 1.3, one cipher each, ALPN h2 and
/// http/1.1) on `link.ip_b`:443 and `[link.ip6_b]`:8443; returns once both
/// listen.
pub(crate) fn tls_servers(link: &Link, dir: &Path) -> Vec<Proc> {
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
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
            &dir.join(format!("s_server{i}.log")),
        ));
        wait::bound(&link.b, "tcp", accept.parse().unwrap());
    }
    servers
}

/// One handshake's expected event, before the capture gives its JA4 and
/// (for `None`) the versions OpenSSL offered by default.
pub(crate) type TlsExpected = (Tuple, Value, Option<&'static [u16]>);

/// The number of handshakes `tls_handshakes` makes.
pub(crate) const TLS_HANDSHAKES: usize = 5;

/// Five handshakes with s_client from `link.a` to `tls_servers`, with and
/// without `-servername` and `-alpn`, `-tls1_2`, `-tls1_3` or both.
/// Asserts each negotiated the version and cipher expected; returns each
/// one's event (naming `device`), to be completed by `tls_want`.
pub(crate) fn tls_handshakes(link: &Link, device: &str) -> Vec<TlsExpected> {
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
    let handshakes: [Hs; TLS_HANDSHAKES] = [
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
            "device": device, "direction": "ingress",
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
    expected
}

/// `expected` completed from the capture of the handshakes: each event's
/// JA4 as `tshark_hellos` computes it and, where OpenSSL offered its
/// default versions, those versions; asserts the versions set explicitly
/// are the ones the ClientHello offered.
pub(crate) fn tls_want(expected: Vec<TlsExpected>, capture: &Path) -> BTreeMap<Tuple, Vec<Value>> {
    // The JA4 of each ClientHello, and OpenSSL's default versions, from
    // tshark's dissection of the capture.
    let hellos = tshark_hellos(capture);
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
    want
}

/// Asserts every event has a `tls_ja4` of JA4's shape.
pub(crate) fn assert_ja4_shaped(events: &[Value]) {
    for e in events {
        let ja4 = e["tls_ja4"]
            .as_str()
            .unwrap_or_else(|| panic!("no tls_ja4 in {e}"));
        assert!(ja4_shaped(ja4), "{e}");
    }
}

/// JA4 (FoxIO, `technical_details/JA4.md`) and the versions offered of
/// each ClientHello in a capture, computed here from tshark's dissection:
/// the test's own oracle for flowd's fingerprint. Keyed by the client's port.
fn tshark_hellos(capture: &Path) -> BTreeMap<u64, (String, Vec<u16>)> {
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
fn ja4_shaped(s: &str) -> bool {
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
