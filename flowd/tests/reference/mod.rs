//! Per-flow reference tables computed at test time from tshark's dissection.
//!
//! The same derivation as `tests/data/pcaps/reference/tshark_flows.py`
//! (`uni_5tuple`), which made the committed reference CSVs: unidirectional
//! flows keyed by the outermost IPv4/IPv6 header (src, dst, proto, sport,
//! dport, outer VLAN id), IP reassembly off so every IP frame counts once,
//! later fragments with ports 0, ICMP/ICMPv6 as sport 0 and
//! dport = type * 256 + code, bytes = frame.len. Nothing of flowd's is used.

use std::{collections::BTreeMap, net::IpAddr, path::Path, process::Command};

/// One row's key: (src, dst, proto, sport, dport, vlan).
pub(crate) type RefKey = (IpAddr, IpAddr, u8, u16, u16, u16);

/// Packets and bytes (frame.len) per key.
pub(crate) type Table = BTreeMap<RefKey, (u64, u64)>;

const FIELDS: &[&str] = &[
    "frame.len",
    "frame.protocols",
    "vlan.id",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.nxt",
    "ipv6.fraghdr.nxt",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
    "sctp.srcport",
    "sctp.dstport",
    "icmp.type",
    "icmp.code",
    "icmpv6.type",
    "icmpv6.code",
];

/// The protocol layers tshark names that the key takes a number from.
fn l4_number(layer: &str) -> Option<u8> {
    Some(match layer {
        "tcp" => 6,
        "udp" => 17,
        "sctp" => 132,
        "icmp" => 1,
        "icmpv6" => 58,
        "igmp" => 2,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "ospf" => 89,
        "pim" => 103,
        "vrrp" => 112,
        _ => return None,
    })
}

/// tshark's per-flow table of `pcap`, and the number of frames in no flow
/// (not IP, or an IP header tshark could not dissect).
pub(crate) fn tshark_flows(pcap: &Path) -> (Table, u64) {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(pcap).args([
        "-o",
        "ip.defragment:FALSE",
        "-o",
        "ipv6.defragment:FALSE",
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-E",
        "occurrence=f",
    ]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running tshark (`cargo xtask setup` installs it): {e}"));
    // tshark exits 2 on a capture cut mid-record after printing every
    // whole frame; the frames it printed are the reference.
    assert!(
        out.status.success() || out.status.code() == Some(2),
        "tshark on {}: {}\n{}",
        pcap.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("tshark prints UTF-8");
    let mut table = Table::new();
    let mut unkeyed = 0;
    for line in text.lines() {
        let cells: Vec<&str> = line.split('\t').collect();
        let get = |name: &str| -> &str {
            let i = FIELDS.iter().position(|f| *f == name).unwrap();
            cells.get(i).copied().unwrap_or("")
        };
        let num = |name: &str| -> u64 {
            let v = get(name);
            if v.is_empty() {
                0
            } else {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} = {v:?} in {line:?}"))
            }
        };
        let layers: Vec<&str> = get("frame.protocols").split(':').collect();
        let Some(first_ip) = layers.iter().position(|l| *l == "ip" || *l == "ipv6") else {
            unkeyed += 1;
            continue;
        };
        let v6 = layers[first_ip] == "ipv6";
        let (src, dst) = if v6 {
            (get("ipv6.src"), get("ipv6.dst"))
        } else {
            (get("ip.src"), get("ip.dst"))
        };
        // The first transport-like layer after the outer IP header chain.
        let l4 = layers[first_ip + 1..]
            .iter()
            .find(|l| l4_number(l).is_some() || **l == "ip" || **l == "ipv6")
            .copied();
        let mut proto = match l4.and_then(l4_number) {
            Some(p) => p,
            None if v6 => {
                let nxt = get("ipv6.fraghdr.nxt");
                if nxt.is_empty() {
                    num("ipv6.nxt") as u8
                } else {
                    num("ipv6.fraghdr.nxt") as u8
                }
            }
            None => num("ip.proto") as u8,
        };
        // IP in IP counts under the outer header.
        match l4 {
            Some("ip") => proto = 4,
            Some("ipv6") => proto = 41,
            _ => {}
        }
        let (mut sport, mut dport) = (0u16, 0u16);
        match l4 {
            Some(l @ ("tcp" | "udp" | "sctp")) => {
                sport = num(&format!("{l}.srcport")) as u16;
                dport = num(&format!("{l}.dstport")) as u16;
            }
            Some(l @ ("icmp" | "icmpv6")) if !get(&format!("{l}.type")).is_empty() => {
                dport = (num(&format!("{l}.type")) * 256 + num(&format!("{l}.code"))) as u16;
            }
            _ => {}
        }
        let vlan = num("vlan.id") as u16;
        // An IP header tshark could not dissect (too short, bad version):
        // no flow.
        let (Ok(src), Ok(dst)) = (src.parse::<IpAddr>(), dst.parse::<IpAddr>()) else {
            unkeyed += 1;
            continue;
        };
        let key = (src, dst, proto, sport, dport, vlan);
        let e = table.entry(key).or_insert((0, 0));
        e.0 += 1;
        e.1 += num("frame.len");
    }
    (table, unkeyed)
}
