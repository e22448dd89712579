//! IPFIX export checked by a real collector: nfdump's `nfcapd` receives
//! what flowd sends, and `nfdump` must read back every flow record flowd
//! wrote as JSON lines, with the same addresses, ports, protocol, packets
//! and bytes; both must hold exactly the packets the test sent.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use flowd_tests::{Flowd, Link, Netns, api_flows, ping, read_records, send_udp_on, wait};
use serde_json::Value;

/// The namespace's UDP counters (`/proc/net/snmp`): (datagrams read by
/// applications, datagrams sent, receive errors, receive buffer errors).
fn udp_counters(ns: &Netns) -> (u64, u64, u64, u64) {
    ns.run(|| {
        let text = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
        let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
        let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
        let get = |name: &str| -> u64 {
            let i = names.split_whitespace().position(|n| n == name).unwrap();
            values.split_whitespace().nth(i).unwrap().parse().unwrap()
        };
        (
            get("InDatagrams"),
            get("OutDatagrams"),
            get("InErrors"),
            get("RcvbufErrors"),
        )
    })
}

/// Waits until nfcapd has read every datagram sent in `ns` (the exporter
/// there has exited: it sends nothing more). In `ns` only the exporter
/// sends UDP and only nfcapd reads it (the kernel counts InDatagrams when
/// an application reads one), so the two counters meet; and nothing was
/// dropped on the way.
fn collector_read_everything(ns: &Netns) {
    let (read, sent, errors, buf_errors) = wait::until(
        "nfcapd to read every IPFIX datagram sent (UDP InDatagrams = OutDatagrams)",
        wait::DEADLINE,
        || udp_counters(ns),
        |&(read, sent, errors, _)| read + errors >= sent,
    );
    assert!(sent > 0, "no IPFIX datagram sent");
    assert_eq!(
        (read, errors, buf_errors),
        (sent, 0, 0),
        "IPFIX datagrams sent, read and lost"
    );
}

/// nfcapd in a namespace, stopped (SIGTERM, which flushes its file) on drop.
struct Nfcapd {
    child: Option<Child>,
    dir: PathBuf,
}

impl Nfcapd {
    /// Starts nfcapd and waits until its socket is bound.
    fn start(ns: &Netns, bind: &str, port: u16, dir: &Path) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "nfcapd"])
            .args(["-b", bind, "-p", &port.to_string(), "-t", "3600"])
            .arg("-w")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nfcapd (Debian package `nfdump`)");
        let capd = Self {
            child: Some(child),
            dir: dir.to_owned(),
        };
        let addr = SocketAddr::new(bind.parse().unwrap(), port);
        wait::bound(ns, "udp", addr);
        capd
    }

    /// Stops nfcapd; returns its stderr.
    fn stop(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return String::new();
        };
        flowd_tests::stop_child(&mut child, 10);
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        err
    }

    /// Every flow in the files nfcapd wrote: nfdump's CSV rows by header name.
    fn flows(&self) -> Vec<HashMap<String, String>> {
        let out = Command::new("nfdump")
            .arg("-R")
            .arg(&self.dir)
            .args(["-N", "-o", "csv"])
            .output()
            .expect("run nfdump");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "nfdump failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<String> = lines
            .next()
            .unwrap_or_default()
            .split(',')
            .map(str::to_owned)
            .collect();
        // Flow rows, then a "Summary" block.
        lines
            .take_while(|l| !l.starts_with("Summary"))
            .map(|l| {
                header
                    .iter()
                    .cloned()
                    .zip(l.split(',').map(str::to_owned))
                    .collect()
            })
            .collect()
    }
}

impl Drop for Nfcapd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn nfdump_reads_back_every_record_flowd_wrote() {
    let tmp = flowd_tests::TempDir::new("flowd-ipfix");
    let dir = tmp.path().to_path_buf();
    let capd = dir.join("nfcapd");
    std::fs::create_dir_all(&capd).unwrap();
    let json = dir.join("flows.jsonl");
    let link = Link::dual_stack();
    // The collector listens in b on b's own address: flowd's messages stay
    // on b's loopback path and never cross the monitored link.
    let collector = format!("{}:4739", link.ip_b);
    let mut nfcapd = Nfcapd::start(&link.b, &link.ip_b, 4739, &capd);
    let mut flowd = Flowd::start(
        &link.b,
        &[
            "--iface",
            &link.if_b,
            "--drain-interval-ms",
            "100",
            "--records",
            json.to_str().unwrap(),
            "--ipfix",
            &collector,
        ],
    );

    // IPv4 UDP (25 x 100-byte frames), IPv6 UDP (7 x 1000 B), and ICMP echo both ways.
    let dst: SocketAddr = format!("{}:7000", link.ip_b).parse().unwrap();
    let src: SocketAddr = format!("{}:7001", link.ip_a).parse().unwrap();
    let _rx: UdpSocket = link.b.run(move || UdpSocket::bind(dst).unwrap());
    let tx: UdpSocket = link.a.run(move || UdpSocket::bind(src).unwrap());
    send_udp_on(&tx, dst, 25, 58);
    let dst6: SocketAddr = format!("[{}]:7002", link.ip6_b).parse().unwrap();
    let src6: SocketAddr = format!("[{}]:7003", link.ip6_a).parse().unwrap();
    let _rx6: UdpSocket = link.b.run(move || UdpSocket::bind(dst6).unwrap());
    let tx6: UdpSocket = link.a.run(move || UdpSocket::bind(src6).unwrap());
    send_udp_on(&tx6, dst6, 7, 938);
    let ip_b: IpAddr = link.ip_b.parse().unwrap();
    assert_eq!(ping(&link.a, ip_b, 4, 56), 4);
    // What was sent, by (src, dst, sport, dport, protocol): (packets, frame
    // bytes). ICMP echo: type 8 (request, in) or 0 (reply, out) x 256 as
    // the port, 14 + 20 + 8 + 56 = 98-byte frames.
    let (a4, b4, a6, b6) = (
        link.ip_a.parse().ok(),
        link.ip_b.parse().ok(),
        link.ip6_a.parse().ok(),
        link.ip6_b.parse().ok(),
    );
    let sent: BTreeMap<Tuple, (u64, u64)> = [
        ((a4, b4, "7001", "7000", "UDP"), (25, 25 * 100)),
        ((a6, b6, "7003", "7002", "UDP"), (7, 7 * 1000)),
        ((a4, b4, "0", "2048", "ICMP"), (4, 4 * 98)),
        ((b4, a4, "0", "0", "ICMP"), (4, 4 * 98)),
    ]
    .into_iter()
    .map(|((s, d, sp, dp, p), v)| ((s, d, sp.into(), dp.into(), p.into()), v))
    .collect();
    // Each of those frames is in flowd's table before SIGTERM ends it.
    wait::until(
        "the 40 packets sent in flowd's flows",
        wait::DEADLINE,
        || {
            api_flows(&link.b, &flowd)
                .iter()
                .filter(|f| f["proto"] != 58)
                .map(|f| f["packets"].as_u64().unwrap())
                .sum::<u64>()
        },
        |&n| n >= 25 + 7 + 4 + 4,
    );

    // SIGTERM: flowd ends every flow (forced) and exports it.
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    collector_read_everything(&link.b);
    let capd_err = nfcapd.stop();
    let records = read_records(&json);
    let rows = nfcapd.flows();
    let log = flowd.log_text();
    let ctx = || {
        format!(
            "JSON records:\n{records:#?}\nnfdump rows:\n{rows:#?}\nnfcapd: {capd_err}\nflowd: {log}"
        )
    };

    assert!(records.len() >= 4, "{}", ctx());
    assert_eq!(
        rows.len(),
        records.len(),
        "one IPFIX record per JSON record\n{}",
        ctx()
    );
    for r in &records {
        let ip = |v: &str| v.parse::<IpAddr>().ok();
        let (sa, da) = (
            ip(r["src"].as_str().unwrap()),
            ip(r["dst"].as_str().unwrap()),
        );
        // nfdump's CSV keeps ICMP type * 256 + code as the destination port, as flowd does.
        let (sp, dp) = (r["sport"].to_string(), r["dport"].to_string());
        let matching: Vec<_> = rows
            .iter()
            .filter(|x| ip(&x["sa"]) == sa && ip(&x["da"]) == da && x["sp"] == sp && x["dp"] == dp)
            .collect();
        assert_eq!(matching.len(), 1, "record {r}\n{}", ctx());
        let x = matching[0];
        assert_eq!(
            x["ipkt"],
            r["packets"].as_u64().unwrap().to_string(),
            "{r}\n{}",
            ctx()
        );
        assert_eq!(
            x["ibyt"],
            r["bytes"].as_u64().unwrap().to_string(),
            "{r}\n{}",
            ctx()
        );
        assert_eq!(
            x["pr"],
            proto_name(r["proto"].as_u64().unwrap()),
            "{r}\n{}",
            ctx()
        );
        // flowDirection, and the interface on the side the flow was seen.
        let (dir, seen, other) = if r["direction"] == "ingress" {
            ("0", &x["in"], &x["out"])
        } else {
            ("1", &x["out"], &x["in"])
        };
        assert_eq!(
            (x["dir"].as_str(), other.as_str()),
            (dir, "0"),
            "{r}\n{}",
            ctx()
        );
        assert_ne!(seen, "0", "{r}\n{}", ctx());
    }
    // The numbers the test sent, through each path on its own: the flows
    // sent, exactly; anything else only the kernel's own IPv6 chatter (MLD
    // and neighbour discovery on the dual-stack link).
    for (path, got) in [
        ("flowd's JSON records", totals(&by_tuple_json(&records))),
        ("nfdump's rows", totals(&by_tuple_nfdump(&rows))),
    ] {
        for (tuple, want) in &sent {
            assert_eq!(got.get(tuple), Some(want), "{path}: {tuple:?}\n{}", ctx());
        }
        for tuple in got.keys().filter(|t| !sent.contains_key(*t)) {
            assert_eq!(
                tuple.4,
                "ICMP6",
                "{path}: a flow the test did not send: {tuple:?}\n{}",
                ctx()
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Flow records by 5-tuple as nfdump prints them: sorted (packets, bytes) of each.
type Tuple = (Option<IpAddr>, Option<IpAddr>, String, String, String);

/// (packets, bytes) summed over the records of each 5-tuple.
fn totals(m: &BTreeMap<Tuple, Vec<(String, String)>>) -> BTreeMap<Tuple, (u64, u64)> {
    m.iter()
        .map(|(t, v)| {
            let sum = v.iter().fold((0, 0), |(p, b), (rp, rb)| {
                (
                    p + rp.parse::<u64>().unwrap(),
                    b + rb.parse::<u64>().unwrap(),
                )
            });
            (t.clone(), sum)
        })
        .collect()
}

fn by_tuple_json(records: &[Value]) -> BTreeMap<Tuple, Vec<(String, String)>> {
    let mut m: BTreeMap<Tuple, Vec<(String, String)>> = BTreeMap::new();
    for r in records {
        let ip = |v: &Value| v.as_str().and_then(|s| s.parse().ok());
        m.entry((
            ip(&r["src"]),
            ip(&r["dst"]),
            r["sport"].to_string(),
            r["dport"].to_string(),
            proto_name(r["proto"].as_u64().unwrap()).to_owned(),
        ))
        .or_default()
        .push((r["packets"].to_string(), r["bytes"].to_string()));
    }
    m.values_mut().for_each(|v| v.sort());
    m
}

fn by_tuple_nfdump(rows: &[HashMap<String, String>]) -> BTreeMap<Tuple, Vec<(String, String)>> {
    let mut m: BTreeMap<Tuple, Vec<(String, String)>> = BTreeMap::new();
    for x in rows {
        m.entry((
            x["sa"].parse().ok(),
            x["da"].parse().ok(),
            x["sp"].clone(),
            x["dp"].clone(),
            x["pr"].clone(),
        ))
        .or_default()
        .push((x["ipkt"].clone(), x["ibyt"].clone()));
    }
    m.values_mut().for_each(|v| v.sort());
    m
}

#[test]
fn replay_sends_a_captures_records_to_nfdump() {
    let capture = flowd_tests::data_dir().join("pcaps/web/wikipedia.pcap");
    assert!(
        capture.is_file(),
        "{} missing: the captures are part of the repository (tests/data/pcaps)",
        capture.display()
    );
    let tmp = flowd_tests::TempDir::new("flowd-ipfix");
    let dir = tmp.path().to_path_buf();
    let capd = dir.join("nfcapd");
    std::fs::create_dir_all(&capd).unwrap();
    let link = Link::new();
    let mut nfcapd = Nfcapd::start(&link.b, &link.ip_b, 4740, &capd);
    let out = Command::new("ip")
        .args(["netns", "exec", &link.b.name])
        .arg(flowd_tests::flowd_bin())
        .arg("replay")
        .arg(&capture)
        .args(["--ipfix", &format!("{}:4740", link.ip_b)])
        .env("FLOWD_LOG", "error")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    collector_read_everything(&link.b);
    let capd_err = nfcapd.stop();
    let records: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(records.len() > 10, "{err}");
    assert!(
        err.contains(&format!("IPFIX: {} records in", records.len())),
        "{err}"
    );
    let rows = nfcapd.flows();
    assert_eq!(
        by_tuple_nfdump(&rows),
        by_tuple_json(&records),
        "nfdump's flows equal the replay's records\nnfcapd: {capd_err}\nflowd: {err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn proto_name(p: u64) -> &'static str {
    match p {
        1 => "ICMP",
        6 => "TCP",
        17 => "UDP",
        58 => "ICMP6",
        _ => "?",
    }
}
