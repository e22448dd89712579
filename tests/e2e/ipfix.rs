//! IPFIX export checked by a real collector: nfdump's `nfcapd` receives
//! what flowd sends, and `nfdump` must read back every flow record flowd
//! wrote as JSON lines, with the same addresses, ports, protocol, packets
//! and bytes.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use flowd_tests::{Flowd, Link, Netns, ping, read_records, send_udp_on};
use serde_json::Value;

/// nfcapd in a namespace, stopped (SIGTERM, which flushes its file) on drop.
struct Nfcapd {
    child: Option<Child>,
    dir: PathBuf,
}

impl Nfcapd {
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
        Self {
            child: Some(child),
            dir: dir.to_owned(),
        }
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
    thread::sleep(Duration::from_millis(300));

    // SIGTERM: flowd ends every flow (forced) and exports it.
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    thread::sleep(Duration::from_millis(300));
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
    // The numbers the test sent, through both paths.
    let udp4 = records
        .iter()
        .find(|r| r["sport"] == 7001 && r["dport"] == 7000)
        .unwrap_or_else(|| panic!("{}", ctx()));
    assert_eq!(
        (udp4["packets"].as_u64(), udp4["bytes"].as_u64()),
        (Some(25), Some(2500))
    );
    let udp6 = records
        .iter()
        .find(|r| r["sport"] == 7003 && r["dport"] == 7002)
        .unwrap_or_else(|| panic!("{}", ctx()));
    assert_eq!(
        (udp6["packets"].as_u64(), udp6["bytes"].as_u64()),
        (Some(7), Some(7 * 1000))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Flow records by 5-tuple as nfdump prints them: sorted (packets, bytes) of each.
type Tuple = (Option<IpAddr>, Option<IpAddr>, String, String, String);

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
        "{} missing (set FLOWD_SHARED)",
        capture.display()
    );
    let tmp = flowd_tests::TempDir::new("flowd-ipfix");
    let dir = tmp.path().to_path_buf();
    let capd = dir.join("nfcapd");
    std::fs::create_dir_all(&capd).unwrap();
    let link = Link::new();
    let mut nfcapd = Nfcapd::start(&link.b, &link.ip_b, 4740, &capd);
    thread::sleep(Duration::from_millis(300)); // nfcapd binds
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
    thread::sleep(Duration::from_millis(300));
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
