//! `flowd replay` on real captures: every capture in `tests/data/pcaps` runs
//! through the XDP program with `BPF_PROG_TEST_RUN`, and per-flow packets
//! and bytes equal tshark's, computed at test time. Needs root (loads BPF)
//! and tshark (`cargo xtask setup` installs it).
//!
//! The captures are part of the repository (`tests/data/pcaps/MANIFEST.md`
//! says where each comes from); nothing outside the clone is read.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use flowd::{
    pcap::{CaptureErrorKind, MAX_CAPLEN},
    record,
    replay::{OutputFormat, Replay, ReplayError, ReplayOptions, replay_file, write_output},
};
use flowd_common::counter;
use serde_json::Value;

mod reference;

fn pcaps() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/pcaps");
    assert!(
        d.join("MANIFEST.md").is_file(),
        "the repository's captures are missing: no MANIFEST.md in {}",
        d.display()
    );
    d
}

fn replay(path: &Path) -> Replay {
    replay_file(path, &ReplayOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("flowd-replay-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Packets per capture, from the MANIFEST's `pkts` column (capinfos).
fn manifest_packets() -> BTreeMap<String, u64> {
    let text = fs::read_to_string(pcaps().join("MANIFEST.md")).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "", file, size, pkts, ...
        let file = cells[1].trim_matches('`').to_string();
        let pkts: u64 = cells[3]
            .parse()
            .unwrap_or_else(|_| panic!("pkts of {line}"));
        out.insert(file, pkts);
    }
    out
}

fn captures_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "reference") {
                captures_under(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
            out.push(p);
        }
    }
}

/// How a capture is expected to end, when not cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Clean,
    /// The documented unsupported-link-type error, with this link type.
    UnsupportedLinkType(u32),
    /// The file ends inside a record: the error comes after this many frames.
    Truncated {
        frames: u64,
    },
}

/// The captures that do not replay cleanly, and why.
const EXPECTED_FAILURES: &[(&str, Expect)] = &[
    ("linktypes/dlt_ppp.pcap", Expect::UnsupportedLinkType(9)),
    ("linktypes/nflog.pcap", Expect::UnsupportedLinkType(239)),
    (
        "debian_pkg/dpkt-truncated_dns_2.pcap",
        Expect::Truncated { frames: 1 },
    ),
];

/// The program's counters agree with the flow table and the frames run.
fn check_consistent(name: &str, r: &Replay) {
    assert_eq!(
        r.rx.c[counter::PACKETS],
        r.frames,
        "{name}: totals vs frames"
    );
    let outcomes: u64 = counter::OUTCOMES.map(|i| r.rx.c[i]).sum();
    assert_eq!(outcomes, r.frames, "{name}: one outcome per frame");
    assert_eq!(r.rx.c[counter::OVERFLOW_PACKETS], 0, "{name}: nothing lost");
    let (packets, bytes) = r.table.iter().fold((0, 0), |(p, b), f| {
        (p + f.counts.packets, b + f.counts.bytes)
    });
    assert_eq!(
        packets,
        r.frames_in_flows(),
        "{name}: flow packets vs outcomes"
    );
    assert!(
        bytes <= r.rx.c[counter::BYTES],
        "{name}: flow bytes within totals"
    );
    if r.frames_in_flows() == r.frames {
        assert_eq!(
            bytes,
            r.rx.c[counter::BYTES],
            "{name}: every byte in a flow"
        );
    }
}

/// Every capture in tests/data/pcaps replays, frame for frame as capinfos
/// counts them, or fails the way EXPECTED_FAILURES says.
#[test]
fn every_capture_replays() {
    let root = pcaps();
    let manifest = manifest_packets();
    let mut files = Vec::new();
    captures_under(&root, &mut files);
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names.iter().cloned().collect::<BTreeSet<_>>(),
        manifest.keys().cloned().collect::<BTreeSet<_>>(),
        "the captures on disk and in MANIFEST.md"
    );
    for (name, _) in EXPECTED_FAILURES {
        assert!(
            manifest.contains_key(*name),
            "{name} is not in the MANIFEST"
        );
    }

    // Every capture is checked; the failures are reported together.
    let mut failures = Vec::new();
    for (name, path) in names.iter().zip(&files) {
        let expect = EXPECTED_FAILURES
            .iter()
            .find(|(n, _)| n == name)
            .map_or(Expect::Clean, |(_, e)| *e);
        let packets = manifest[name];
        if let Err(e) = std::panic::catch_unwind(|| check_capture(name, path, packets, expect)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(msg);
        }
    }
    assert!(
        failures.is_empty(),
        "{} captures failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn check_capture(name: &str, path: &Path, packets: u64, expect: Expect) {
    let r = replay(path);
    match (expect, &r.error) {
        (Expect::Clean, None) => {
            assert_eq!(r.frames, packets, "{name}: frames vs capinfos");
            check_consistent(name, &r);
        }
        (Expect::UnsupportedLinkType(lt), Some(ReplayError::Capture(e))) => {
            assert!(
                matches!(e.kind, CaptureErrorKind::UnsupportedLinkType { link_type, .. } if link_type == lt),
                "{name}: {e}"
            );
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("link type {lt} (")), "{msg}");
            assert_eq!(r.frames, 0);
        }
        (Expect::Truncated { frames }, Some(ReplayError::Capture(e))) => {
            assert!(
                matches!(e.kind, CaptureErrorKind::Truncated { .. }),
                "{name}: {e}"
            );
            assert_eq!(r.frames, frames, "{name}");
            check_consistent(name, &r);
        }
        (expect, error) => panic!("{name}: expected {expect:?}, got {error:?}"),
    }
}

/// One row of a tshark reference: (src, dst, proto, sport, dport, vlan).
type RefKey = (IpAddr, IpAddr, u8, u16, u16, u16);

/// `reference/tshark/<name>.uni_5tuple.csv`: packets and l2_bytes per key.
fn tshark_reference(csv: &Path) -> BTreeMap<RefKey, (u64, u64)> {
    let text = fs::read_to_string(csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (src, dst, proto, sport, dport, vlan, packets, bytes) = (
        col("src"),
        col("dst"),
        col("proto"),
        col("sport"),
        col("dport"),
        col("vlan"),
        col("packets"),
        col("l2_bytes"),
    );
    let mut out = BTreeMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let c: Vec<&str> = line.split(',').collect();
        let key = (
            c[src].parse().unwrap(),
            c[dst].parse().unwrap(),
            c[proto].parse().unwrap(),
            c[sport].parse().unwrap(),
            c[dport].parse().unwrap(),
            // Untagged is empty in the reference, VLAN 0 in the flow key.
            if c[vlan].is_empty() {
                0
            } else {
                c[vlan].parse().unwrap()
            },
        );
        let v = (c[packets].parse().unwrap(), c[bytes].parse().unwrap());
        assert!(
            out.insert(key, v).is_none(),
            "duplicate key in {}",
            csv.display()
        );
    }
    out
}

fn flowd_table(r: &Replay) -> BTreeMap<RefKey, (u64, u64)> {
    let mut out = BTreeMap::new();
    for f in r.table.iter() {
        let k = &f.key;
        let key = (
            record::addr(&k.src),
            record::addr(&k.dst),
            k.proto,
            k.sport,
            k.dport,
            k.vlan,
        );
        assert!(
            out.insert(key, (f.counts.packets, f.counts.bytes))
                .is_none()
        );
    }
    out
}

/// Sums a table per (src, dst, proto, vlan): ports dropped.
fn by_address_pair(
    t: &BTreeMap<RefKey, (u64, u64)>,
) -> BTreeMap<(IpAddr, IpAddr, u8, u16), (u64, u64)> {
    let mut out = BTreeMap::new();
    for ((src, dst, proto, _, _, vlan), (p, b)) in t {
        let e = out.entry((*src, *dst, *proto, *vlan)).or_insert((0, 0));
        e.0 += p;
        e.1 += b;
    }
    out
}

/// Captures whose references count IPv4/IPv6 fragments on their own.
///
/// The reference is made with reassembly off, so a later fragment (no L4
/// header) is a flow with ports 0. flowd deliberately joins later fragments
/// to their first fragment's ports (the FRAGS map), so for these captures
/// the per-5-tuple rows differ by design; they are compared per
/// (src, dst, proto, vlan), where both must count every frame.
const FRAGMENTED: &[&str] = &["ipv6_fragments", "amp.dns.RRSIG.fragmented"];

fn find_capture(root: &Path, stem: &str) -> PathBuf {
    let mut files = Vec::new();
    captures_under(root, &mut files);
    let found: Vec<PathBuf> = files
        .into_iter()
        .filter(|p| p.file_stem().is_some_and(|s| s == stem))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "the capture for reference {stem}: {found:?}"
    );
    found.into_iter().next().unwrap()
}

/// Per key, packets and bytes (frame.len) equal tshark's exactly.
#[test]
fn flows_equal_tshark_references() {
    let root = pcaps();
    let dir = root.join("reference/tshark");
    let mut refs: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".uni_5tuple.csv"))
        .collect();
    refs.sort();
    assert!(refs.len() >= 5, "references in {}", dir.display());
    let mut fragmented_seen = 0;
    for csv in refs {
        let file = csv.file_name().unwrap().to_string_lossy().into_owned();
        let stem = file.trim_end_matches(".uni_5tuple.csv");
        let reference = tshark_reference(&csv);
        let r = replay(&find_capture(&root, stem));
        assert!(r.error.is_none(), "{stem}: {:?}", r.error);
        check_consistent(stem, &r);
        let ours = flowd_table(&r);
        if FRAGMENTED.contains(&stem) {
            fragmented_seen += 1;
            // The reason for the aggregate comparison must be real.
            assert!(
                r.rx.c[counter::OUT_FRAGMENT_JOINED] > 0,
                "{stem}: no joined fragments"
            );
            assert_eq!(
                by_address_pair(&ours),
                by_address_pair(&reference),
                "{stem}: per (src, dst, proto, vlan)"
            );
            // And the joining only moves packets between a pair's flows.
            assert!(
                ours.len() < reference.len(),
                "{stem}: later fragments joined"
            );
        } else {
            let missing: Vec<_> = reference
                .iter()
                .filter(|(k, v)| ours.get(k) != Some(v))
                .collect();
            let extra: Vec<_> = ours
                .iter()
                .filter(|(k, v)| reference.get(k) != Some(v))
                .collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{stem}: reference rows flowd differs on: {missing:?}\nflowd rows not in the reference: {extra:?}"
            );
        }
    }
    assert_eq!(fragmented_seen, FRAGMENTED.len());
}

/// How a capture's flows are compared with tshark's, when not per 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compare {
    /// Per (src, dst, proto, vlan): flowd joins later IP fragments to their
    /// first fragment's ports (the FRAGS map); tshark, with reassembly off,
    /// gives them ports 0. Both must count every frame of the pair, and the
    /// capture must really have joined fragments.
    Fragments,
    /// Per (src, dst, proto, vlan): tshark does not dissect the TCP header
    /// behind an IPv6 jumbo payload option (BIG TCP), so its row has ports
    /// 0; flowd reads them.
    Jumbogram,
    /// Every tshark row equals flowd's, except rows holding exactly
    /// `packets` frames that flowd counts in the outcome `outcome` instead
    /// of a flow (and flowd has no row tshark lacks).
    NotAFlow { packets: u64, outcome: usize },
    /// Per-frame totals only (check_consistent): hand-made broken headers
    /// (tcpdump's malformed-IP tests) where tshark and flowd read different
    /// protocol numbers and ports out of the same corrupt bytes.
    Corrupt,
}

/// Captures whose flows are compared other than per 5-tuple, and why.
const COMPARE: &[(&str, Compare)] = &[
    ("dos/amp.TCP.reflection.SYNACK.pcap", Compare::Fragments),
    ("dos/amp.dns.RRSIG.fragmented.pcap", Compare::Fragments),
    ("frag/fragmented-1.pcap", Compare::Fragments),
    ("frag/fragmented-3.pcap", Compare::Fragments),
    ("frag/fragmented-syn.pcap", Compare::Fragments),
    ("frag/ip_frag_source.pcapng", Compare::Fragments),
    ("frag/ip_fragmented_garbage.pcap", Compare::Fragments),
    ("frag/ipv6-fragmented-dns.pcap", Compare::Fragments),
    ("frag/ipv6_fragments.pcapng", Compare::Fragments),
    ("misc/bigtcp-ipv6.pcap", Compare::Jumbogram),
    // An IPv6 hop-by-hop header cut short: tshark keys it with next header
    // 0, flowd counts it as truncated.
    (
        "malformed/ip6-ext-trunc.pcap",
        Compare::NotAFlow {
            packets: 1,
            outcome: counter::OUT_TRUNCATED,
        },
    ),
    // ICMP inside Ethernet over an MPLS pseudowire (with control word):
    // flowd does not look inside pseudowires (tunnels are their own issue).
    (
        "misc/test.pcap",
        Compare::NotAFlow {
            packets: 10,
            outcome: counter::OUT_NON_IP_OTHER,
        },
    ),
    (
        "malformed/tcpdump_malformed_ip_bundle.pcap",
        Compare::Corrupt,
    ),
];

/// Rows of a table.
type Rows<K, V> = Vec<(K, V)>;

/// The differences between two tables: (rows of `theirs` that `ours` does
/// not equal, rows of `ours` that `theirs` does not equal).
fn table_diff<K: Ord + Clone, V: PartialEq + Clone>(
    theirs: &BTreeMap<K, V>,
    ours: &BTreeMap<K, V>,
) -> (Rows<K, V>, Rows<K, V>) {
    let missing = theirs
        .iter()
        .filter(|(k, v)| ours.get(k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let extra = ours
        .iter()
        .filter(|(k, v)| theirs.get(k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (missing, extra)
}

/// For every capture in the repository, flowd's flow table equals the one
/// computed from tshark's dissection at test time, packets and bytes per
/// key, except where COMPARE says how and why not.
#[test]
fn every_capture_equals_tshark() {
    let root = pcaps();
    let mut files = Vec::new();
    captures_under(&root, &mut files);
    files.sort();
    for (name, _) in COMPARE {
        assert!(
            root.join(name).is_file(),
            "{name} in COMPARE is not a capture"
        );
    }
    let mut failures = Vec::new();
    let mut compared = 0;
    for path in &files {
        let name = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if EXPECTED_FAILURES
            .iter()
            .any(|(n, e)| *n == name && matches!(e, Expect::UnsupportedLinkType(_)))
        {
            continue;
        }
        let r = replay(path);
        let ours = flowd_table(&r);
        let (theirs, _non_ip) = reference::tshark_flows(path);
        compared += 1;
        let how = COMPARE.iter().find(|(n, _)| *n == name).map(|(_, c)| *c);
        let problem = match how {
            None => {
                let (missing, extra) = table_diff(&theirs, &ours);
                (!missing.is_empty() || !extra.is_empty()).then(|| {
                    format!(
                        "tshark rows flowd differs on: {:?}; flowd rows not in tshark's: {:?}",
                        &missing[..missing.len().min(5)],
                        &extra[..extra.len().min(5)]
                    )
                })
            }
            Some(Compare::Fragments | Compare::Jumbogram) => {
                let (missing, extra) =
                    table_diff(&by_address_pair(&theirs), &by_address_pair(&ours));
                if !missing.is_empty() || !extra.is_empty() {
                    Some(format!(
                        "per address pair, tshark's rows flowd differs on: {missing:?}; flowd's not in tshark's: {extra:?}"
                    ))
                } else if how == Some(Compare::Fragments)
                    && r.rx.c[counter::OUT_FRAGMENT_JOINED] == 0
                {
                    Some("no joined fragments, so it should compare per 5-tuple".into())
                } else if ours == theirs {
                    Some("equal per 5-tuple: remove it from COMPARE".into())
                } else {
                    None
                }
            }
            Some(Compare::NotAFlow { packets, outcome }) => {
                let (missing, extra) = table_diff(&theirs, &ours);
                let absent: u64 = missing
                    .iter()
                    .filter(|(k, _)| !ours.contains_key(k))
                    .map(|(_, (p, _))| p)
                    .sum();
                (missing.iter().any(|(k, _)| ours.contains_key(k))
                    || !extra.is_empty()
                    || absent != packets
                    || r.rx.c[outcome] < packets)
                    .then(|| {
                        format!(
                            "expected only {packets} frames in tshark rows flowd lacks, counted in outcome {outcome} ({}); tshark rows flowd differs on: {missing:?}; flowd's not in tshark's: {extra:?}",
                            r.rx.c[outcome]
                        )
                    })
            }
            Some(Compare::Corrupt) => {
                check_consistent(&name, &r);
                (ours == theirs).then(|| "equal per 5-tuple: remove it from COMPARE".into())
            }
        };
        if let Some(p) = problem {
            failures.push(format!(
                "{name} (tshark {} rows, flowd {}): {p}",
                theirs.len(),
                ours.len()
            ));
        }
    }
    assert!(compared >= 60, "only {compared} captures compared");
    assert!(
        failures.is_empty(),
        "{} of {compared} captures differ from tshark:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The exact numbers of two references, spelled out.
#[test]
fn known_flows() {
    let r = replay(&pcaps().join("web/wikipedia.pcap"));
    assert_eq!((r.frames, r.table.len()), (136, 57));
    // 6 ARP and 4 STP (LLC) frames are in no flow.
    assert_eq!(r.rx.c[counter::OUT_NON_IP_ARP], 6);
    assert_eq!(r.rx.c[counter::OUT_NON_IP_OTHER], 4);

    // Three copies of one connection, told apart by the outer VLAN.
    let r = replay(&pcaps().join("vlan/vlan-collisions.pcap"));
    let mut vlans: Vec<(u16, u64, u64)> = r
        .table
        .iter()
        .filter(|f| f.key.dport == 80)
        .map(|f| (f.key.vlan, f.counts.packets, f.counts.bytes))
        .collect();
    vlans.sort();
    assert_eq!(vlans, vec![(0, 7, 610), (10, 7, 666), (42, 7, 638)]);
}

#[test]
fn bidirectional_pairs_directions() {
    let r = replay(&pcaps().join("vlan/vlan-collisions.pcap"));
    let rows = r.connection_records();
    assert_eq!(rows.len(), 3);
    let mut got: Vec<(u64, u64, u64, u64, u64)> = rows
        .iter()
        .map(|c| {
            let n = |k: &str| c[k].as_u64().unwrap();
            assert_eq!((n("sport"), n("dport")), (59856, 80), "{c}");
            assert_eq!(c["src"], "141.142.228.5");
            (
                n("vlan"),
                n("packets_fwd"),
                n("bytes_fwd"),
                n("packets_rev"),
                n("bytes_rev"),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (0, 7, 610, 7, 5477),
            (10, 7, 666, 7, 5533),
            (42, 7, 638, 7, 5505)
        ]
    );

    // ICMP echo: requests forward, replies reverse.
    let r = replay(&pcaps().join("icmp/icmp.pcap"));
    let rows = r.connection_records();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let c = &rows[0];
    assert_eq!(
        (c["src"].as_str(), c["dst"].as_str()),
        (Some("192.168.0.89"), Some("192.168.0.1"))
    );
    assert_eq!(c["dport"], 8 << 8);
    assert_eq!(
        (c["packets_fwd"].as_u64(), c["bytes_fwd"].as_u64()),
        (Some(8), Some(592))
    );
    assert_eq!(
        (c["packets_rev"].as_u64(), c["bytes_rev"].as_u64()),
        (Some(4), Some(296))
    );
}

/// nanosecond pcap: the records carry the capture's nanoseconds.
#[test]
fn nanosecond_capture_keeps_nanoseconds() {
    let r = replay(&pcaps().join("linktypes/tcp-handshake-nano.pcap"));
    assert!(r.error.is_none(), "{:?}", r.error);
    assert!(r.format.starts_with("pcap (ns)"), "{}", r.format);
    let recs = r.records();
    let got: Vec<(&str, &str, u64, u64, &str, &str)> = recs
        .iter()
        .map(|j| {
            (
                j["src"].as_str().unwrap(),
                j["dst"].as_str().unwrap(),
                j["packets"].as_u64().unwrap(),
                j["bytes"].as_u64().unwrap(),
                j["start"].as_str().unwrap(),
                j["end"].as_str().unwrap(),
            )
        })
        .collect();
    // tshark -T fields -e frame.time_epoch -e frame.len
    assert_eq!(
        got,
        vec![
            (
                "131.155.215.69",
                "137.116.81.94",
                2,
                76 + 68,
                "2014-12-09T17:16:09.924505488Z",
                "2014-12-09T17:16:10.052115157Z"
            ),
            (
                "137.116.81.94",
                "131.155.215.69",
                1,
                76,
                "2014-12-09T17:16:10.052027262Z",
                "2014-12-09T17:16:10.052027262Z"
            ),
        ]
    );
    assert_eq!(recs[0]["first_seen_ns"], 1_418_145_369_924_505_488u64);
}

/// The file ends 7 bytes into the second record header: the error names the
/// file and byte 240, after the first (snaplen-cut) frame was counted with
/// its original length.
#[test]
fn file_cut_mid_record() {
    let path = pcaps().join("debian_pkg/dpkt-truncated_dns_2.pcap");
    let r = replay(&path);
    let Some(ReplayError::Capture(e)) = &r.error else {
        panic!("{:?}", r.error);
    };
    assert_eq!(e.offset, 240);
    assert!(
        matches!(
            e.kind,
            CaptureErrorKind::Truncated {
                need: 16,
                got: 7,
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("{}: byte 240: ", path.display())),
        "{msg}"
    );
    assert!(msg.contains("record header of packet 2"), "{msg}");
    assert_eq!(r.frames, 1);
    let f: Vec<_> = r.table.iter().collect();
    // caplen 200, orig_len 282: bytes are the original length, like frame.len.
    assert_eq!(
        (f.len(), f[0].counts.packets, f[0].counts.bytes),
        (1, 1, 282)
    );
}

fn pcap_header(link_type: u32) -> Vec<u8> {
    let mut f = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, link_type] {
        f.extend(v.to_le_bytes());
    }
    f
}

/// Broken files written here: each a clear error naming the file, the byte
/// offset and the problem; frames before the problem are counted.
#[test]
fn malformed_files() {
    let tmp = TempDir::new("malformed");

    let empty = tmp.write("empty.pcap", b"");
    let e = replay_file(&empty, &ReplayOptions::default()).unwrap_err();
    assert!(
        matches!(&e, ReplayError::Capture(c) if matches!(c.kind, CaptureErrorKind::Empty)),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!("{}: byte 0: the file is empty", empty.display())
    );

    let text = tmp.write("text.pcap", b"GET / HTTP/1.1\r\nHost: example\r\n\r\n");
    let e = replay_file(&text, &ReplayOptions::default()).unwrap_err();
    assert!(
        matches!(&e, ReplayError::Capture(c) if matches!(c.kind, CaptureErrorKind::BadMagic(_))),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: byte 0: not a pcap or pcapng file",
            text.display()
        )),
        "{msg}"
    );

    let short = tmp.write("short.pcap", &pcap_header(1)[..10]);
    let e = replay_file(&short, &ReplayOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("pcap file header: 10 of 24 bytes"),
        "{e}"
    );

    // icmp.pcap cut in the middle of its last frame's data.
    let icmp = fs::read(pcaps().join("icmp/icmp.pcap")).unwrap();
    let cut = tmp.write("cut.pcap", &icmp[..icmp.len() - 20]);
    let r = replay(&cut);
    let Some(ReplayError::Capture(e)) = &r.error else {
        panic!("{:?}", r.error);
    };
    assert!(matches!(e.kind, CaptureErrorKind::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("the data of packet 12"), "{e}");
    // 12 frames of 74 bytes (16-byte record headers) after the 24-byte header.
    assert_eq!(e.offset, 24 + 11 * (16 + 74));
    assert_eq!(r.frames, 11);
    check_consistent("cut.pcap", &r);

    // Runts, shorter than an Ethernet header (the kernel refuses test runs
    // on those): counted, as truncated, with their original length.
    let mut f = pcap_header(1);
    for n in [0usize, 5, 13] {
        push_record(&mut f, 1, 0, 60, &vec![0xaa; n]);
    }
    let r = replay(&tmp.write("runts.pcap", &f));
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.frames, 3);
    assert_eq!(r.rx.c[counter::OUT_TRUNCATED], 3);
    assert_eq!(r.rx.c[counter::BYTES], 3 * 60);

    // An absurd caplen after one good frame.
    let mut f = pcap_header(1);
    let frame = eth_ipv4_udp([198, 18, 0, 1], [198, 18, 0, 2], 1000, 2000, 10);
    push_record(&mut f, 1, 0, frame.len() as u32, &frame);
    let at = f.len() as u64;
    for v in [2u32, 0, MAX_CAPLEN + 1, 64] {
        f.extend(v.to_le_bytes());
    }
    f.extend([0u8; 64]);
    let p = tmp.write("absurd.pcap", &f);
    let r = replay(&p);
    let Some(ReplayError::Capture(e)) = &r.error else {
        panic!("{:?}", r.error);
    };
    assert!(
        matches!(e.kind, CaptureErrorKind::AbsurdCaplen { packet: 2, .. }),
        "{e}"
    );
    assert_eq!(e.offset, at);
    assert_eq!(r.frames, 1);
    assert_eq!(r.table.len(), 1);
}

fn checksum_free_ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend(total.to_be_bytes());
    ip.extend([0, 0, 0, 0, 64, proto, 0, 0]);
    ip.extend(src);
    ip.extend(dst);
    ip.extend_from_slice(l4);
    ip
}

fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend(sport.to_be_bytes());
    u.extend(dport.to_be_bytes());
    u.extend(((8 + payload) as u16).to_be_bytes());
    u.extend([0, 0]);
    u.resize(8 + payload, 0xab);
    u
}

fn ipv4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    checksum_free_ipv4(src, dst, 17, &udp(sport, dport, payload))
}

fn ipv6_udp(src: u8, dst: u8, sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let l4 = udp(sport, dport, payload);
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend((l4.len() as u16).to_be_bytes());
    ip.extend([17, 64]);
    let addr = |last: u8| {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[15] = last;
        a
    };
    ip.extend(addr(src));
    ip.extend(addr(dst));
    ip.extend(l4);
    ip
}

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend(ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn eth_ipv4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    eth(0x0800, &ipv4_udp(src, dst, sport, dport, payload))
}

fn push_record(f: &mut Vec<u8>, secs: u32, usecs: u32, orig: u32, data: &[u8]) {
    for v in [secs, usecs, data.len() as u32, orig] {
        f.extend(v.to_le_bytes());
    }
    f.extend_from_slice(data);
}

/// Big-endian pcapng writer for the link-type test.
struct Pcapng(Vec<u8>);

impl Pcapng {
    fn block(&mut self, block_type: u32, body: &[u8]) {
        let padded = body.len().div_ceil(4) * 4;
        let len = (12 + padded) as u32;
        self.0.extend(block_type.to_be_bytes());
        self.0.extend(len.to_be_bytes());
        self.0.extend_from_slice(body);
        self.0.resize(self.0.len() + padded - body.len(), 0);
        self.0.extend(len.to_be_bytes());
    }

    fn new() -> Self {
        let mut p = Self(Vec::new());
        let mut shb = 0x1a2b_3c4du32.to_be_bytes().to_vec();
        shb.extend(1u16.to_be_bytes());
        shb.extend(0u16.to_be_bytes());
        shb.extend((-1i64).to_be_bytes());
        p.block(0x0a0d_0d0a, &shb);
        p
    }

    /// An interface with `if_tsresol` = `resol`.
    fn interface(&mut self, link_type: u16, resol: u8) {
        let mut b = link_type.to_be_bytes().to_vec();
        b.extend(0u16.to_be_bytes());
        b.extend(0u32.to_be_bytes());
        b.extend(9u16.to_be_bytes());
        b.extend(1u16.to_be_bytes());
        b.extend([resol, 0, 0, 0]);
        b.extend(0u32.to_be_bytes());
        self.block(1, &b);
    }

    fn epb(&mut self, interface: u32, ts: u64, orig: u32, data: &[u8]) {
        let mut b = Vec::new();
        for v in [
            interface,
            (ts >> 32) as u32,
            ts as u32,
            data.len() as u32,
            orig,
        ] {
            b.extend(v.to_be_bytes());
        }
        b.extend_from_slice(data);
        self.block(6, &b);
    }
}

/// Every supported link type, in a big-endian pcapng with one interface per
/// link type and different timestamp resolutions, plus a big-endian pcap.
#[test]
fn link_types_and_byte_orders() {
    let tmp = TempDir::new("linktypes");
    let a = [198, 18, 0, 1];
    let b = [198, 18, 0, 2];
    let mut ng = Pcapng::new();
    ng.interface(1, 9); // Ethernet, ns
    ng.interface(228, 6); // IPv4, us
    ng.interface(276, 0x80 | 10); // SLL2, 2^-10 s
    ng.interface(108, 3); // LOOP, ms
    ng.interface(0, 9); // NULL, ns
    ng.interface(101, 9); // raw
    ng.interface(113, 9); // SLL
    let t0 = 1_700_000_000u64;

    // Ethernet, snaplen-cut: 1514 bytes on the wire, 60 captured.
    let f = eth_ipv4_udp(a, b, 1001, 53, 1472);
    ng.epb(0, t0 * 1_000_000_000 + 1, 1514, &f[..60]);
    // IPv4: twice, microseconds.
    let ip = ipv4_udp(a, b, 1002, 53, 10);
    ng.epb(1, t0 * 1_000_000 + 2, ip.len() as u32, &ip);
    ng.epb(1, t0 * 1_000_000 + 3, ip.len() as u32, &ip);
    // SLL2 carrying an 802.1Q tag (VLAN 7) in front of IPv4.
    let mut sll2 = 0x8100u16.to_be_bytes().to_vec();
    sll2.extend([0; 18]);
    sll2.extend(7u16.to_be_bytes());
    sll2.extend(0x0800u16.to_be_bytes());
    sll2.extend(ipv4_udp(a, b, 1003, 53, 10));
    ng.epb(2, (t0 << 10) + 512, sll2.len() as u32, &sll2);
    // LOOP: AF_INET6 (24) in network order.
    let mut lo = 24u32.to_be_bytes().to_vec();
    lo.extend(ipv6_udp(1, 2, 1004, 53, 10));
    ng.epb(3, t0 * 1000 + 4, lo.len() as u32, &lo);
    // NULL: AF_INET6 as macOS writes it (30), little-endian.
    let mut null = 30u32.to_le_bytes().to_vec();
    null.extend(ipv6_udp(1, 2, 1005, 53, 10));
    ng.epb(4, t0 * 1_000_000_000 + 5, null.len() as u32, &null);
    // Raw IP: IPv6 by the version nibble.
    let raw = ipv6_udp(1, 2, 1006, 53, 10);
    ng.epb(5, t0 * 1_000_000_000 + 6, raw.len() as u32, &raw);
    // SLL: protocol 0x0800.
    let mut sll = vec![0u8; 14];
    sll.extend(0x0800u16.to_be_bytes());
    sll.extend(ipv4_udp(a, b, 1007, 53, 10));
    ng.epb(6, t0 * 1_000_000_000 + 7, sll.len() as u32, &sll);
    let path = tmp.write("all.pcapng", &ng.0);

    let r = replay(&path);
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.format, "pcapng, big-endian");
    assert_eq!(r.frames, 8);
    check_consistent("all.pcapng", &r);
    let mut got: Vec<(u16, u16, u64, u64, u64)> = r
        .table
        .iter()
        .map(|f| {
            (
                f.key.sport,
                f.key.vlan,
                f.counts.packets,
                f.counts.bytes,
                f.first_ns,
            )
        })
        .collect();
    got.sort();
    let s = t0 * 1_000_000_000;
    assert_eq!(
        got,
        vec![
            (1001, 0, 1, 1514, s + 1),
            (1002, 0, 2, 2 * 38, s + 2000),
            (1003, 7, 1, 20 + 4 + 38, s + 500_000_000),
            (1004, 0, 1, 4 + 58, s + 4_000_000),
            (1005, 0, 1, 4 + 58, s + 5),
            (1006, 0, 1, 58, s + 6),
            (1007, 0, 1, 16 + 38, s + 7),
        ]
    );
    let v6 = r.table.iter().find(|f| f.key.sport == 1004).unwrap();
    assert_eq!(record::addr(&v6.key.src).to_string(), "fd00::1");
    assert_eq!(
        r.table
            .iter()
            .find(|f| f.key.sport == 1002)
            .unwrap()
            .last_ns,
        s + 3000
    );

    // Big-endian classic pcap, microseconds.
    let mut be = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0002_0004, 0, 0, 65535, 1] {
        be.extend(v.to_be_bytes());
    }
    let f = eth_ipv4_udp(b, a, 2001, 80, 100);
    for v in [1_600_000_000u32, 250_000, f.len() as u32, f.len() as u32] {
        be.extend(v.to_be_bytes());
    }
    be.extend(&f);
    let r = replay(&tmp.write("be.pcap", &be));
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(r.format, "pcap, big-endian");
    let fl: Vec<_> = r.table.iter().collect();
    assert_eq!(fl.len(), 1);
    assert_eq!(
        (fl[0].key.sport, fl[0].counts.packets, fl[0].counts.bytes),
        (2001, 1, f.len() as u64)
    );
    assert_eq!(fl[0].first_ns, 1_600_000_000_250_000_000);
}

/// The CSV header carries exactly the jsonl keys, one line per record; the
/// table has a header and one line per flow; the metrics count every frame.
#[test]
fn output_formats() {
    let r = replay(&pcaps().join("web/wikipedia.pcap"));
    // The union of the records' keys (`state` is on TCP records only).
    let keys: BTreeSet<String> = r
        .records()
        .iter()
        .flat_map(|rec| match rec {
            Value::Object(m) => m.keys().cloned().collect::<Vec<_>>(),
            v => panic!("{v}"),
        })
        .collect();
    assert!(keys.contains("state") && keys.contains("end_reason"));

    let mut out = Vec::new();
    write_output(&mut out, &r, OutputFormat::Csv, false).unwrap();
    let csv = String::from_utf8(out).unwrap();
    let mut lines = csv.lines();
    let header: BTreeSet<String> = lines.next().unwrap().split(',').map(String::from).collect();
    assert_eq!(header, keys);
    assert_eq!(lines.count(), 57);

    let mut out = Vec::new();
    write_output(&mut out, &r, OutputFormat::Jsonl, false).unwrap();
    let jsonl = String::from_utf8(out).unwrap();
    let parsed: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed, r.records());
    // Sorted by start time.
    let starts: Vec<u64> = parsed
        .iter()
        .map(|j| j["first_seen_ns"].as_u64().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]));

    let mut out = Vec::new();
    write_output(&mut out, &r, OutputFormat::Table, false).unwrap();
    let table = String::from_utf8(out).unwrap();
    assert_eq!(table.lines().count(), 58);
    assert!(table.lines().next().unwrap().starts_with("START (UTC)"));

    let mut out = Vec::new();
    write_output(&mut out, &r, OutputFormat::Csv, true).unwrap();
    let csv = String::from_utf8(out).unwrap();
    let header = csv.lines().next().unwrap();
    for k in [
        "packets_fwd",
        "bytes_fwd",
        "packets_rev",
        "bytes_rev",
        "start",
        "end",
    ] {
        assert!(header.split(',').any(|h| h == k), "{header}");
    }
    // wikipedia: 34 bidirectional IP flows (reference/README.md, peer tools).
    assert_eq!(csv.lines().count(), 1 + 34);

    let m = r.metrics_text();
    let sample = |name: &str| -> Option<&str> {
        m.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .and_then(|l| l.rsplit(' ').next())
    };
    assert!(
        m.contains("flowd_receive_packets_total{device=\"wikipedia\"} 136"),
        "{m}"
    );
    // At the end of a replay every record has ended.
    assert_eq!(sample("flowd_flows_active"), Some("0"), "{m}");
    assert_eq!(sample("flowd_flows_started_total"), Some("57"), "{m}");
}

/// Zeek's conn_state for the traces with a baseline in
/// `reference/zeek_baselines/`, compared per 5-tuple as multisets of
/// connection states (the baselines mask timestamps). A connection in
/// flowd is its two directions' records ending together (one state), or
/// one record alone.
///
/// Known differences, checked as such: Zeek closes a TCP connection after
/// a lone FIN on its own timers and opens a new one for later packets of
/// the same 5-tuple (Teredo.pcap, ports 1576 and 1577: SHR, then OTH/SH,
/// then RSTRH); flowd keeps one flow per 5-tuple until a timeout and so
/// reports one connection there. SCTP and UDP have no TCP state in flowd;
/// connections inside the Teredo tunnel are the outer UDP flow to flowd.
#[test]
fn conn_state_equals_zeek() {
    let base = pcaps().join("reference/zeek_baselines");
    let cases = [
        ("ipv6/ftp-ipv6.pcap", "ftp-ipv6.pcap.conn.log", vec![]),
        (
            "vlan/mixed-vlan-mpls.pcap",
            "mixed-vlan-mpls.pcap.conn.log",
            vec![],
        ),
        (
            "vlan/pppoe-over-qinq.pcap",
            "pppoe-over-qinq.pcap.conn.log",
            vec![],
        ),
        (
            "tunnel/Teredo.pcap",
            "Teredo.pcap.conn.log",
            vec![1576u16, 1577],
        ),
    ];
    let mut compared = 0;
    for (capture, log, known_split) in cases {
        let zeek = zeek_tcp_states(&base.join(log));
        let r = replay(&pcaps().join(capture));
        let ours = flowd_tcp_states(&r);
        for (tuple, want) in &zeek {
            if known_split.contains(&tuple.1) {
                assert_ne!(
                    ours.get(tuple),
                    Some(want),
                    "{capture} {tuple:?}: documented as differing"
                );
                continue;
            }
            assert_eq!(
                ours.get(tuple),
                Some(want),
                "{capture}: conn_state of {tuple:?}"
            );
            compared += want.len();
        }
    }
    assert_eq!(compared, 6 + 3 + 1 + 3, "connections compared with Zeek");
}

/// (orig_h, orig_p, resp_h, resp_p) with the ports sorted out of the way:
/// the key is the unordered endpoint pair, so either orientation matches.
type Tuple = (String, u16, String, u16);

fn tuple(a: &str, ap: u16, b: &str, bp: u16) -> Tuple {
    let a = a.parse::<IpAddr>().unwrap().to_string();
    let b = b.parse::<IpAddr>().unwrap().to_string();
    if (a.as_str(), ap) <= (b.as_str(), bp) {
        (a, ap, b, bp)
    } else {
        (b, bp, a, ap)
    }
}

fn zeek_tcp_states(log: &Path) -> BTreeMap<Tuple, Vec<String>> {
    let mut out: BTreeMap<Tuple, Vec<String>> = BTreeMap::new();
    for line in fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
    {
        let f: Vec<&str> = line.split('\t').collect();
        // Connections inside a tunnel (Teredo): flowd accounts the outer UDP flow.
        if f.len() < 12 || f[6] != "tcp" || f.get(20).is_some_and(|p| *p != "-") {
            continue;
        }
        let t = tuple(f[2], f[3].parse().unwrap(), f[4], f[5].parse().unwrap());
        out.entry(t).or_default().push(f[11].to_owned());
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

fn flowd_tcp_states(r: &Replay) -> BTreeMap<Tuple, Vec<String>> {
    let mut out: BTreeMap<Tuple, Vec<String>> = BTreeMap::new();
    let recs = r.records();
    // The two directions of one connection end in the same drain with the
    // same state: pair them by tuple, end time of the later one and reason.
    let mut seen: BTreeSet<(Tuple, String, String, String)> = BTreeSet::new();
    for rec in recs.iter().filter(|r| r["proto"] == 6) {
        let t = tuple(
            rec["src"].as_str().unwrap(),
            rec["sport"].as_u64().unwrap() as u16,
            rec["dst"].as_str().unwrap(),
            rec["dport"].as_u64().unwrap() as u16,
        );
        let state = rec["state"].as_str().unwrap().to_owned();
        let has_reverse = recs.iter().any(|o| {
            o["proto"] == 6
                && o["src"] == rec["dst"]
                && o["dst"] == rec["src"]
                && o["sport"] == rec["dport"]
                && o["dport"] == rec["sport"]
                && o["end_reason"] == rec["end_reason"]
                && o["state"] == rec["state"]
        });
        let id = (
            t.clone(),
            state.clone(),
            rec["end_reason"].to_string(),
            has_reverse.to_string(),
        );
        if has_reverse && !seen.insert(id) {
            continue;
        }
        out.entry(t).or_default().push(state);
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// Sum of a family's samples in a replay's exposition (all label sets).
fn family_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The scan, SYN-flood and retransmission captures raise the matching
/// signals through `flowd replay`. Expected numbers were cross-checked with
/// tshark display filters on the same files (noted per case).
#[test]
fn replayed_attacks_and_retransmissions_raise_their_signals() {
    let m = |file: &str| {
        let r = replay(&pcaps().join(file));
        (r.metrics_text(), r)
    };

    // nmap SYN scan of ~1000 ports from 172.16.0.8: flagged; 1994 SYNs
    // (`tcp.flags.syn==1 && tcp.flags.ack==0`), 12 SYN-ACKs, 5 RSTs.
    let (t, r) = m("scan/synscan.pcapng");
    assert_eq!(r.suspects.len(), 1, "{:?}", r.suspects);
    assert_eq!(r.suspects[0].src, "172.16.0.8");
    assert_eq!(r.suspects[0].ports, 101);
    assert_eq!(family_sum(&t, "flowd_scan_suspects"), 1.0);
    assert_eq!(family_sum(&t, "flowd_tcp_syn_packets_total"), 1994.0);
    assert_eq!(family_sum(&t, "flowd_tcp_synack_packets_total"), 12.0);
    assert_eq!(family_sum(&t, "flowd_tcp_rst_packets_total"), 5.0);

    // masscan UDP scan of ports 0-1000 (802.1Q-tagged): unanswered UDP probes.
    let (t, r) = m("scan/udp_0_1000_20190821.pcap");
    assert_eq!(r.suspects.len(), 1, "{:?}", r.suspects);
    assert_eq!(family_sum(&t, "flowd_scan_suspects"), 1.0);

    // One-way SYN flood: 9639 SYNs, no SYN-ACK, 239 RSTs (tshark), no scan
    // (one destination port).
    let (t, r) = m("dos/pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng");
    assert_eq!(family_sum(&t, "flowd_tcp_syn_packets_total"), 9639.0);
    assert_eq!(family_sum(&t, "flowd_tcp_synack_packets_total"), 0.0);
    assert_eq!(family_sum(&t, "flowd_tcp_rst_packets_total"), 239.0);
    assert!(r.suspects.is_empty(), "{:?}", r.suspects);

    // SYN-ACK reflection: 6651 SYN-ACKs and 1018 RSTs (tshark). tshark also
    // matches 140 "SYNs" that are TCP headers quoted inside ICMP errors;
    // flowd counts those frames as ICMP, leaving the 1 real SYN.
    let (t, _) = m("dos/amp.TCP.reflection.SYNACK.pcap");
    assert_eq!(family_sum(&t, "flowd_tcp_synack_packets_total"), 6651.0);
    assert_eq!(family_sum(&t, "flowd_tcp_syn_packets_total"), 1.0);
    assert_eq!(family_sum(&t, "flowd_tcp_rst_packets_total"), 1018.0);

    // RTO retransmissions: the same 648-byte segment 6 times, 5 retransmitted
    // (`tcp.analysis.retransmission`), across several drains.
    let (t, _) = m("tcp/tcp_retransmissions.pcapng");
    assert_eq!(
        family_sum(&t, "flowd_tcp_retransmitted_segments_total"),
        5.0
    );

    // Duplicated SSH segments: tshark flags 166 frames, 4 of them without
    // data (flowd counts data segments only): 162.
    let (t, _) = m("tcp/ssh-dups.pcap");
    assert_eq!(
        family_sum(&t, "flowd_tcp_retransmitted_segments_total"),
        162.0
    );
}

/// Everything a replay produced that a batch could change: the program's
/// counters, every flow, every record (as JSON lines), the drains, and
/// where and why it stopped.
fn replay_outcome(r: &Replay) -> String {
    let mut out = Vec::new();
    write_output(&mut out, r, OutputFormat::Jsonl, false).unwrap();
    write_output(&mut out, r, OutputFormat::Jsonl, true).unwrap();
    format!(
        "frames {} rx {:?} drains {} drained {} last {} flows {:?} error {:?}\n{}",
        r.frames,
        r.rx.c,
        r.drains,
        r.drained_entries,
        r.last_drain_entries,
        r.flows(),
        r.error.as_ref().map(ToString::to_string),
        String::from_utf8(out).unwrap()
    )
}

/// Removes the `"state":"…"` of every record.
fn without_states(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\"state\":\"") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 9..];
        let end = after.find('"').map_or(after.len(), |j| j + 1);
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Captures whose TCP state in the records differs between two replays of
/// the same kind (before batching too): the two flows of a SYN and a
/// SYN-ACK one second apart, whose state depends on which of them the flow
/// table visits first (hash order).
const STATE_VARIES: &[&str] = &["timestamp_invalid_micro.pcap"];

/// Many frames per test run (the replay driver) and one frame per test run
/// (`flowd_ingress`) give the same replay of every capture in the repository.
#[test]
fn batched_replay_equals_one_frame_per_test_run() {
    let root = pcaps();
    let mut files = Vec::new();
    captures_under(&root, &mut files);
    files.sort();
    let single = ReplayOptions {
        batched: false,
        ..ReplayOptions::default()
    };
    // Small flow maps: drains every 64 frames, so batches are cut there.
    let small = |batched| ReplayOptions {
        capacity: 64,
        batched,
        ..ReplayOptions::default()
    };
    let mut differ = Vec::new();
    for path in &files {
        let varies = STATE_VARIES
            .iter()
            .any(|n| path.file_name().is_some_and(|f| f == *n));
        let run = |o: &ReplayOptions| match replay_file(path, o) {
            Ok(r) if varies => without_states(&replay_outcome(&r)),
            Ok(r) => replay_outcome(&r),
            Err(e) => format!("error {e}"),
        };
        if run(&ReplayOptions::default()) != run(&single) {
            differ.push(path.display().to_string());
        }
    }
    for name in ["web/wikipedia.pcap", "tcp/two_way_all_flags.pcap"] {
        let path = root.join(name);
        let run = |o: &ReplayOptions| replay_outcome(&replay_file(&path, o).unwrap());
        if run(&small(true)) != run(&small(false)) {
            differ.push(format!("{name} (capacity 64)"));
        }
    }
    assert!(
        differ.is_empty(),
        "batched and single replays differ: {differ:?}"
    );
}

/// JSON lines and CSV, written straight from the flows, are the bytes that
/// serializing the `serde_json::Value` records gives (the writer flowd had
/// before), for every capture in the repository.
#[test]
fn direct_output_equals_the_json_records() {
    fn csv_of(records: &[Value]) -> String {
        // The earlier writer: the documented columns in this order, then
        // any other key sorted; values as serde_json prints them.
        const CSV_COLUMNS: &[&str] = &[
            "start",
            "end",
            "device",
            "direction",
            "vlan",
            "proto",
            "src",
            "sport",
            "dst",
            "dport",
            "packets",
            "bytes",
            "packets_fwd",
            "bytes_fwd",
            "packets_rev",
            "bytes_rev",
            "tcp_flags",
            "tcp_flags_fwd",
            "tcp_flags_rev",
            "state",
            "end_reason",
            "syn",
            "fin",
            "rst",
            "first_seen_ns",
            "last_seen_ns",
        ];
        let keys: BTreeSet<&str> = records
            .iter()
            .flat_map(|r| r.as_object().unwrap().keys().map(String::as_str))
            .collect();
        let mut cols: Vec<&str> = CSV_COLUMNS
            .iter()
            .copied()
            .filter(|k| keys.contains(k))
            .collect();
        cols.extend(keys.iter().filter(|k| !CSV_COLUMNS.contains(k)));
        if cols.is_empty() {
            return String::new();
        }
        let mut s = cols.join(",") + "\n";
        for r in records {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| {
                    let v = match r.get(c) {
                        None | Some(Value::Null) => return String::new(),
                        Some(Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                    };
                    if v.contains([',', '"', '\n', '\r']) {
                        format!("\"{}\"", v.replace('"', "\"\""))
                    } else {
                        v
                    }
                })
                .collect();
            s += &cells.join(",");
            s += "\n";
        }
        s
    }
    fn jsonl_of(records: &[Value]) -> String {
        records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect()
    }
    let root = pcaps();
    let mut files = Vec::new();
    captures_under(&root, &mut files);
    files.sort();
    for path in &files {
        // Every capture replays (a capture error is in `r.error`, with the
        // frames before it kept); none is skipped.
        let r = replay(path);
        for bidirectional in [false, true] {
            let records = if bidirectional {
                r.connection_records()
            } else {
                r.records()
            };
            for (format, want) in [
                (OutputFormat::Jsonl, jsonl_of(&records)),
                (OutputFormat::Csv, csv_of(&records)),
            ] {
                let mut out = Vec::new();
                write_output(&mut out, &r, format, bidirectional).unwrap();
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    want,
                    "{}: {format:?}, bidirectional {bidirectional}",
                    path.display()
                );
            }
        }
    }
}
