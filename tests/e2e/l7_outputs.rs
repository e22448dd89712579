//! The application layer's outputs on a live daemon: `/api/v1/l7` (recent
//! events, newest first, the event log's objects; 400 on bad parameters),
//! the names on flow records (both directions), and SIGHUP reloading
//! `[l7]`: a new log file, new DNS ports in the programs' settings, the
//! selection off and on again.
//!
//! DNS is the traffic: a query and its answer are two UDP datagrams the
//! test writes itself, so every count is exact.

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    time::Duration,
};

use flowd_tests::{Flowd, Link, api_flows, find_flows, read_records, wait};
use serde_json::Value;

/// A query for `name` (type A, recursion desired) with `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The answer to `q`: NXDOMAIN, no records.
fn nxdomain(q: &[u8]) -> Vec<u8> {
    let mut r = q.to_vec();
    r[2] = 0x81;
    r[3] = 0x83;
    r
}

/// Client in namespace a, server on `port` in b (where flowd runs).
struct Dns {
    client: UdpSocket,
    server: UdpSocket,
    to: SocketAddr,
}

impl Dns {
    fn new(link: &Link, client_port: u16, port: u16) -> Self {
        let to: SocketAddr = format!("{}:{port}", link.ip_b).parse().unwrap();
        let from: SocketAddr = format!("{}:{client_port}", link.ip_a).parse().unwrap();
        let server = link.b.run(move || UdpSocket::bind(to).unwrap());
        let client = link.a.run(move || UdpSocket::bind(from).unwrap());
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Self { client, server, to }
    }

    /// One query and its answer.
    fn ask(&self, id: u16, name: &str) {
        self.client.send_to(&query(id, name), self.to).unwrap();
        let mut buf = [0u8; 512];
        let (n, peer) = self.server.recv_from(&mut buf).unwrap();
        self.server.send_to(&nxdomain(&buf[..n]), peer).unwrap();
    }
}

fn get(link: &Link, f: &Flowd, path: &str) -> (u16, String) {
    link.b.http_get(f.listen, path).unwrap()
}

/// `/api/v1/l7?kind=dns` once it holds `n` events.
fn dns_events(link: &Link, f: &Flowd, n: usize) -> Vec<Value> {
    wait::until(
        &format!("{n} DNS events"),
        wait::DEADLINE,
        || {
            let (code, body) = get(link, f, "/api/v1/l7?kind=dns");
            assert_eq!(code, 200, "{body}");
            serde_json::from_str::<Vec<Value>>(&body).unwrap()
        },
        |v| v.len() >= n,
    )
}

fn qnames(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["dns_qname"].as_str().unwrap())
        .collect()
}

fn lines(path: &Path) -> Vec<Value> {
    if path.exists() {
        read_records(path)
    } else {
        Vec::new()
    }
}

#[test]
fn recent_events_names_on_flows_and_reload_of_l7() {
    let link = Link::new();
    let tmp = flowd_tests::TempDir::new("flowd-l7out");
    let (cfg, log_a, log_b) = (
        tmp.path().join("flowd.toml"),
        tmp.path().join("a.jsonl"),
        tmp.path().join("b.jsonl"),
    );
    let write = |l7: &str| {
        std::fs::write(
            &cfg,
            format!(
                "interfaces = [\"{}\"]\ndrain_interval_ms = 100\n[l7]\n{l7}\n",
                link.if_b
            ),
        )
        .unwrap()
    };
    write(&format!("log = \"{}\"\nrecent_events = 3", log_a.display()));
    let flowd = Flowd::start(&link.b, &["--config", cfg.to_str().unwrap()]);

    // Four queries on one 5-tuple: the ring keeps the last 3, newest first.
    let dns = Dns::new(&link, 40053, 53);
    for (i, name) in ["one.test", "two.test", "three.test", "four.test"]
        .iter()
        .enumerate()
    {
        dns.ask(100 + i as u16, name);
    }
    let events = dns_events(&link, &flowd, 3);
    assert_eq!(qnames(&events), ["four.test", "three.test", "two.test"]);
    assert_eq!(events[0]["dns_rcode"], 3);
    assert_eq!(events[0]["src"], link.ip_a.to_string());
    assert_eq!(events[0]["dport"], 53);
    // The same objects as the event log's lines (all four there, in order).
    let logged = wait::until(
        "4 lines in the event log",
        wait::DEADLINE,
        || lines(&log_a),
        |l| l.len() == 4,
    );
    assert_eq!(
        qnames(&logged),
        ["one.test", "two.test", "three.test", "four.test"]
    );
    assert_eq!(logged[3], events[0]);
    let (code, body) = get(&link, &flowd, "/api/v1/l7?limit=1");
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&body).unwrap(),
        events[..1]
    );
    assert_eq!(get(&link, &flowd, "/api/v1/l7?kind=tls").1, "[]");
    for (path, says) in [
        (
            "/api/v1/l7?kind=smtp",
            "kind must be dns, http or tls (got \"smtp\")\n",
        ),
        (
            "/api/v1/l7?limit=0",
            "limit must be a number from 1 to 65536 (got \"0\")\n",
        ),
        (
            "/api/v1/l7?since=1",
            "unknown parameter \"since\"; accepted: kind, limit\n",
        ),
    ] {
        assert_eq!(get(&link, &flowd, path), (400, says.to_owned()), "{path}");
    }

    // Both directions of the connection carry the first query's name.
    let port = dns.client.local_addr().unwrap().port().to_string();
    let flows = api_flows(&link.b, &flowd);
    let q = find_flows(&flows, &[("direction", "ingress"), ("sport", &port)]);
    let r = find_flows(&flows, &[("direction", "egress"), ("dport", &port)]);
    assert_eq!((q.len(), r.len()), (1, 1), "{flows:#?}");
    assert_eq!(
        (q[0]["packets"].as_u64(), r[0]["packets"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(q[0]["dns_qname"], "one.test");
    assert_eq!(r[0]["dns_qname"], "one.test");

    // Reload: a new log, and 5300 as a DNS port (the programs select it).
    write(&format!(
        "log = \"{}\"\ndns_ports = [5300]\nrecent_events = 3",
        log_b.display()
    ));
    flowd.signal(libc::SIGHUP);
    wait::log_contains("configuration reloaded", || flowd.log_text());
    let alt = Dns::new(&link, 40054, 5300);
    alt.ask(7, "alt.test");
    let b = wait::until(
        "the event on port 5300 in the new log",
        wait::DEADLINE,
        || lines(&log_b),
        |l| !l.is_empty(),
    );
    assert_eq!(qnames(&b), ["alt.test"]);
    assert_eq!(b[0]["dport"], 5300);
    assert_eq!(lines(&log_a).len(), 4, "the old log has nothing new");

    // Off: no events, and the API says so.
    write("enabled = false");
    flowd.signal(libc::SIGHUP);
    wait::until(
        "/api/v1/l7 to answer 404",
        wait::DEADLINE,
        || get(&link, &flowd, "/api/v1/l7").0,
        |c| *c == 404,
    );
    assert_eq!(
        get(&link, &flowd, "/api/v1/l7").1,
        "the application layer is off ([l7] enabled = false or --no-l7)\n"
    );
    dns.ask(8, "off.test");

    // On again (log b): the next query is an event, the one while off is not.
    write(&format!("log = \"{}\"", log_b.display()));
    flowd.signal(libc::SIGHUP);
    wait::until(
        "/api/v1/l7 to answer 200",
        wait::DEADLINE,
        || get(&link, &flowd, "/api/v1/l7").0,
        |c| *c == 200,
    );
    dns.ask(9, "again.test");
    let b = wait::until(
        "the event after switching on",
        wait::DEADLINE,
        || lines(&log_b),
        |l| l.len() >= 2,
    );
    assert_eq!(qnames(&b), ["alt.test", "again.test"]);
    assert_eq!(qnames(&dns_events(&link, &flowd, 1)), ["again.test"]);
}

/// A pcap of UDP datagrams (payloads) to port 4739, for tshark.
fn ipfix_pcap(datagrams: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (i, m) in datagrams.iter().enumerate() {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00, 0x45, 0];
        f.extend_from_slice(&((20 + 8 + m.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&4739u16.to_be_bytes());
        f.extend_from_slice(&((8 + m.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(m);
        for v in [1_700_000_000 + i as u32, 0, f.len() as u32, f.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&f);
    }
    out
}

/// The names reach the ended records: the JSON lines and IPFIX, which
/// tshark decodes (ntop's DNS_QUERY element), on both directions' records.
#[test]
fn ended_records_and_ipfix_carry_the_first_query_name() {
    let link = Link::new();
    let tmp = flowd_tests::TempDir::new("flowd-l7ipfix");
    let records = tmp.path().join("records.jsonl");
    let collector = link.b.run({
        let at = format!("{}:4740", link.ip_b);
        move || UdpSocket::bind(at).unwrap()
    });
    collector
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let flowd = Flowd::start(
        &link.b,
        &[
            "--iface",
            &link.if_b,
            "--drain-interval-ms",
            "100",
            "--idle-timeout",
            "1",
            "--records",
            records.to_str().unwrap(),
            "--ipfix",
            &format!("{}:4740", link.ip_b),
        ],
    );
    let dns = Dns::new(&link, 40055, 53);
    dns.ask(1, "first.test");
    dns.ask(2, "second.test");
    let port = dns.client.local_addr().unwrap().port();
    let ended = wait::until(
        "both directions' records",
        wait::DEADLINE,
        || {
            read_records(&records)
                .into_iter()
                .filter(|r| r["sport"] == port || r["dport"] == port)
                .collect::<Vec<_>>()
        },
        |r| r.len() == 2,
    );
    for r in &ended {
        assert_eq!(r["packets"], 2, "{r}");
        assert_eq!(r["dns_qname"], "first.test", "{r}");
    }
    // Every IPFIX message sent so far (the records went out with the JSON lines).
    let mut datagrams = Vec::new();
    let mut buf = [0u8; 65535];
    while let Ok(n) = collector.recv(&mut buf) {
        datagrams.push(buf[..n].to_vec());
    }
    let path = tmp.path().join("ipfix.pcap");
    std::fs::write(&path, ipfix_pcap(&datagrams)).unwrap();
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .args(["-T", "fields", "-E", "aggregator=|", "-E", "occurrence=a"])
        .args(["-e", "cflow.srcport", "-e", "cflow.dstport"])
        .args(["-e", "cflow.pie.ntop.dns_query"])
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // Records whose ports are the test's, and the names tshark read.
    let mut named = 0;
    let mut all_names = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let (sports, dports) = (cols[0].split('|'), cols[1].split('|'));
        named += sports
            .zip(dports)
            .filter(|(s, d)| *s == port.to_string() || *d == port.to_string())
            .count();
        all_names.extend(
            cols.get(2)
                .into_iter()
                .flat_map(|c| c.split('|'))
                .filter(|n| !n.is_empty()),
        );
    }
    assert_eq!(named, 2, "{text}\nflowd: {}", flowd.log_text());
    assert_eq!(all_names, ["first.test", "first.test"], "{text}");
}

/// `flowd replay --l7-log`: the records of every TCP connection that
/// carried HTTP have the Host and target of its first request as tshark
/// reads them, on both directions; no other record has a name of HTTP.
#[test]
fn replay_records_carry_the_first_http_request_as_tshark_reads_it() {
    let pcap = flowd_tests::data_dir().join("pcaps/web/wikipedia.pcap");
    let tmp = flowd_tests::TempDir::new("flowd-l7replay");
    let events = tmp.path().join("events.jsonl");
    let out = std::process::Command::new(flowd_tests::flowd_bin())
        .arg("replay")
        .arg(&pcap)
        .args(["--format", "jsonl", "--l7-log"])
        .arg(&events)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let t = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-Y", "http.request", "-T", "fields"])
        .args([
            "-e",
            "ip.src",
            "-e",
            "tcp.srcport",
            "-e",
            "ip.dst",
            "-e",
            "tcp.dstport",
        ])
        .args(["-e", "http.host", "-e", "http.request.uri"])
        .output()
        .unwrap();
    assert!(t.status.success());
    // (client, client port, server, server port) -> first (host, target).
    let mut first = std::collections::BTreeMap::new();
    for line in String::from_utf8(t.stdout).unwrap().lines() {
        let c: Vec<&str> = line.split('\t').collect();
        let conn = (
            c[0].to_owned(),
            c[1].to_owned(),
            c[2].to_owned(),
            c[3].to_owned(),
        );
        first
            .entry(conn)
            .or_insert((c[4].to_owned(), c[5].to_owned()));
    }
    assert!(
        first.len() >= 5,
        "the capture has HTTP connections: {first:?}"
    );
    let mut named = std::collections::BTreeMap::new();
    for r in records.iter().filter(|r| r.get("http_url").is_some()) {
        let (s, sp, d, dp) = (
            r["src"].as_str().unwrap().to_owned(),
            r["sport"].to_string(),
            r["dst"].as_str().unwrap().to_owned(),
            r["dport"].to_string(),
        );
        // Either direction: key it by the client side.
        let conn = if first.contains_key(&(s.clone(), sp.clone(), d.clone(), dp.clone())) {
            (s, sp, d, dp)
        } else {
            (d, dp, s, sp)
        };
        let names = (
            r["http_host"].as_str().unwrap_or("").to_owned(),
            r["http_url"].as_str().unwrap().to_owned(),
        );
        named.entry(conn).or_insert_with(Vec::new).push(names);
    }
    let want: std::collections::BTreeMap<_, _> = first
        .iter()
        .map(|(conn, names)| (conn.clone(), vec![names.clone(); 2]))
        .collect();
    assert_eq!(named, want, "records by connection, both directions");
}
