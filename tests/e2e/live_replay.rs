//! The live path and offline replay agree: a capture replayed with
//! tcpreplay into a veth gives, key by key, the flows `flowd replay` finds
//! in the same file.

use std::{collections::BTreeMap, path::PathBuf, process::Command};

use flowd_tests::{Flowd, Link, api_flows, flowd_bin, wait};
use serde_json::Value;

fn data() -> PathBuf {
    flowd_tests::data_dir()
}

type Key = (u64, u64, String, String, u64, u64);

fn key(f: &Value) -> Key {
    (
        f["vlan"].as_u64().unwrap(),
        f["proto"].as_u64().unwrap(),
        f["src"].as_str().unwrap().to_owned(),
        f["dst"].as_str().unwrap().to_owned(),
        f["sport"].as_u64().unwrap(),
        f["dport"].as_u64().unwrap(),
    )
}

/// Packets and bytes per key, summed over records.
fn per_key(flows: &[Value]) -> BTreeMap<Key, (u64, u64)> {
    let mut m: BTreeMap<Key, (u64, u64)> = BTreeMap::new();
    for f in flows {
        let e = m.entry(key(f)).or_default();
        e.0 += f["packets"].as_u64().unwrap();
        e.1 += f["bytes"].as_u64().unwrap();
    }
    m
}

#[test]
fn tcpreplay_into_a_veth_equals_flowd_replay() {
    let captures = [
        "web/wikipedia.pcap",
        "vlan/vlan-collisions.pcap",
        "frag/ipv6_fragments.pcapng",
        "dos/amp.dns.RRSIG.fragmented.pcap",
    ];
    for capture in captures {
        let file = data().join("pcaps").join(capture);
        assert!(
            file.is_file(),
            "{} missing: the captures are part of the repository (tests/data/pcaps)",
            file.display()
        );
        // Offline.
        let out = Command::new(flowd_bin())
            .arg("replay")
            .arg(&file)
            .env("FLOWD_LOG", "error")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{capture}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let offline: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let want = per_key(&offline);
        let frames: u64 = want.values().map(|v| v.0).sum();

        // Live: tcpreplay from A into the veth, flowd on B's end. IPv6 is off
        // (no router solicitations), the MTU fits the capture's largest frame.
        let link = Link::new();
        for (ns, ifc) in [(&link.a, &link.if_a), (&link.b, &link.if_b)] {
            ns.exec(&["ip", "link", "set", ifc, "mtu", "9000"]);
        }
        let flowd = Flowd::start(
            &link.b,
            &["--iface", &link.if_b, "--drain-interval-ms", "200"],
        );
        link.a.exec(&[
            "tcpreplay",
            "-q",
            "--pps=4000",
            "-i",
            &link.if_a,
            file.to_str().unwrap(),
        ]);
        let live = wait::until(
            &format!("{capture}: the {frames} frames replayed in flowd's flows"),
            wait::DEADLINE,
            || {
                let flows: Vec<Value> = api_flows(&link.b, &flowd)
                    .into_iter()
                    .filter(|f| f["direction"] == "ingress")
                    .collect();
                per_key(&flows)
            },
            |live| live.values().map(|v| v.0).sum::<u64>() >= frames,
        );
        assert_eq!(
            live.len(),
            want.len(),
            "{capture}: flow keys live vs replay"
        );
        for (k, v) in &want {
            assert_eq!(
                live.get(k),
                Some(v),
                "{capture}: packets and bytes of {k:?}"
            );
        }
    }
}
