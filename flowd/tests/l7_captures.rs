//! The application-layer engine (`flowd::l7`) on the repository's real
//! captures, against tshark at test time: every HTTP request, DNS query and
//! TLS ClientHello tshark sees (TCP desegmentation on), per 5-tuple, with
//! the same fields, and the same count. Where flowd legitimately differs,
//! `EXCEPTIONS` says how many events and why.
//!
//! The kernel half (select packets, copy their first bytes) is not here:
//! a small test-only frame decoder (etherparse) makes the `L7Packet`s the
//! kernel will, with the payload cut at the default snap length (512).

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use bytes::Bytes;
use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use flowd::{
    l7::{self, Engine, L7Config, L7Event, L7Packet, TcpMeta, event::Detail},
    pcap::{CaptureReader, LinkLayer, MAX_CAPLEN},
    record,
};
use flowd_common::{DIR_INGRESS, FlowKey, proto::ip};

fn pcaps() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/pcaps");
    assert!(
        d.join("MANIFEST.md").is_file(),
        "no MANIFEST.md in {}",
        d.display()
    );
    d
}

/// One compared event: kind, 5-tuple, fields.
type Row = (&'static str, String, String);

/// Captures with HTTP or TLS on ports tshark does not dissect as such:
/// flowd detects them by content; tshark is told (`-d`) so the fields
/// are still compared.
const DECODE_AS: &[(&str, &[&str])] =
    &[("dos/amp.dns.RRSIG.fragmented.pcap", &["tcp.port==8080,tls"])];

/// Where flowd and tshark legitimately differ, per capture: events only
/// flowd has, events only tshark has, and why.
const EXCEPTIONS: &[(&str, usize, usize, &str)] = &[
    (
        "debian_pkg/dpkt-nb6-http.pcap",
        0,
        1,
        "one HTTP request inside L2TP (UDP 1701) over PPPoE: flowd keys tunnelled traffic by its outer header, as the flow table does",
    ),
    (
        "dos/amp.dns.RRSIG.fragmented.pcap",
        1,
        1,
        "flowd's one extra: an HTTP request on port 9100 whose only segment (the capture starts mid-connection, FIN set) \
         tshark labels a retransmission and leaves undissected even when told 9100 is HTTP; tshark's one extra is SSDP \
         (HTTP over UDP multicast), not in scope",
    ),
    (
        "linktypes/dlt_ppp.pcap",
        0,
        1,
        "a QUIC Initial (TLS inside QUIC) on a PPP link: neither is in scope",
    ),
    (
        "malformed/tcpdump_malformed_ip_bundle.pcap",
        1,
        0,
        "frame 4's IPv4 total length is shorter than its header: tshark stops at IP; flowd's parser (like the kernel's) \
         reads the UDP header and the DNS query after it",
    ),
    (
        "scan/nmap_80_all.pcap",
        1,
        0,
        "nmap's `XFOC / HTTP/1.1` probe: a method token, a target and HTTP/1.1 (the server answers 405); tshark knows only registered methods",
    ),
    (
        "scan/udp_0_1000_20190821.pcap",
        0,
        1,
        "nmap's version.bind probe compresses its name with a pointer forward (into the query type): simple-dns rejects \
         pointers that do not point back (its loop guard); tshark follows it",
    ),
    (
        "tunnel/4in6tunnel.pcap",
        0,
        1,
        "a ClientHello inside IPv4-in-IPv6: flowd keys tunnelled traffic by its outer header, as the flow table does",
    ),
    (
        "tunnel/6in4tunnel.pcap",
        0,
        5,
        "DNS, HTTP and TLS inside IPv6-in-IPv4: flowd keys tunnelled traffic by its outer header, as the flow table does",
    ),
    (
        "vlan/mixed-vlan-mpls.pcap",
        0,
        1,
        "an HTTP/0.9 request line (`GET /`, no version): httparse parses HTTP/1.x only",
    ),
    (
        "vlan/vlan-collisions.pcap",
        2,
        0,
        "the same request seen untagged, on VLAN 42 and on VLANs 10/20: flowd keys flows by outer VLAN, as the flow table \
         does, so these are three flows; tshark's TCP analysis ignores VLANs and calls the copies retransmissions",
    ),
];

fn v6_addr(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The IP header after Ethernet, up to two VLAN tags, MPLS labels or a
/// PPPoE session header, as flowd's kernel parser walks them; and the outer
/// VLAN ID. Tunnels (IP in IP, GRE, Teredo) are not entered: the flow table
/// keys them by their outer header, and so does the application layer.
fn strip_l2(eth: &[u8]) -> Option<(u16, &[u8])> {
    let be16 = |b: &[u8], at: usize| b.get(at..at + 2).map(|x| u16::from_be_bytes([x[0], x[1]]));
    let mut ethertype = be16(eth, 12)?;
    let mut p = eth.get(14..)?;
    let mut vlan = None;
    for _ in 0..8 {
        match ethertype {
            0x8100 | 0x88a8 | 0x9100 => {
                vlan.get_or_insert(be16(p, 0)? & 0x0fff);
                ethertype = be16(p, 2)?;
                p = p.get(4..)?;
            }
            0x8847 | 0x8848 => {
                for _ in 0..4 {
                    let bottom = p.get(2)? & 1 != 0;
                    p = p.get(4..)?;
                    if bottom {
                        return Some((vlan.unwrap_or(0), p));
                    }
                }
                return None;
            }
            0x8864 => {
                return match be16(p, 6)? {
                    0x0021 | 0x0057 => Some((vlan.unwrap_or(0), p.get(8..)?)),
                    _ => None,
                };
            }
            0x0800 | 0x86dd => return Some((vlan.unwrap_or(0), p)),
            _ => return None,
        }
    }
    None
}

/// The `L7Packet` of one frame (TCP or UDP over IPv4/IPv6); `None` for
/// anything else, and for non-first fragments.
fn decode(eth: &[u8], ts_ns: u64, orig_len: u32, snap: usize) -> Option<L7Packet> {
    let (vlan, ip_bytes) = strip_l2(eth)?;
    let cut = (orig_len as usize).saturating_sub(eth.len());
    let p = LaxSlicedPacket::from_ip(ip_bytes).ok()?;
    let (src, dst, frag) = match p.net? {
        LaxNetSlice::Ipv4(v4) => {
            let h = v4.header();
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                h.fragments_offset().value() != 0,
            )
        }
        LaxNetSlice::Ipv6(v6) => {
            let h = v6.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                false,
            )
        }
        LaxNetSlice::Arp(_) => return None,
    };
    if frag {
        return None;
    }
    let (proto, sport, dport, tcp, payload) = match p.transport? {
        TransportSlice::Tcp(t) => {
            let mut flags = 0u8;
            for (on, bit) in [
                (t.fin(), 0x01),
                (t.syn(), 0x02),
                (t.rst(), 0x04),
                (t.psh(), 0x08),
                (t.ack(), 0x10),
            ] {
                if on {
                    flags |= bit;
                }
            }
            let meta = TcpMeta {
                seq: t.sequence_number(),
                flags,
            };
            (
                ip::TCP,
                t.source_port(),
                t.destination_port(),
                Some(meta),
                t.payload(),
            )
        }
        TransportSlice::Udp(u) => (
            ip::UDP,
            u.source_port(),
            u.destination_port(),
            None,
            u.payload(),
        ),
        _ => return None,
    };
    let key = FlowKey {
        ifindex: 1,
        vlan,
        direction: DIR_INGRESS,
        proto,
        src: v6_addr(src),
        dst: v6_addr(dst),
        sport,
        dport,
    };
    Some(L7Packet {
        ts_ns,
        key,
        direction: DIR_INGRESS,
        tcp,
        payload: Bytes::copy_from_slice(&payload[..payload.len().min(snap)]),
        wire_payload_len: (payload.len() + cut) as u32,
    })
}

/// The engine's events for one capture, and its counters.
fn run(path: &Path, snap: usize) -> (Vec<L7Event>, l7::L7Stats) {
    let mut reader =
        CaptureReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // LLMNR (5355) is DNS on the wire, and tshark reads it as DNS: a
    // configured DNS port.
    let mut engine = Engine::new(L7Config {
        dns_ports: vec![5355],
        ..L7Config::default()
    });
    let mut events = Vec::new();
    let mut scratch = Vec::new();
    while let Some(pkt) = reader.next_packet().unwrap_or(None) {
        let Some(link) = LinkLayer::from_link_type(pkt.link_type) else {
            continue;
        };
        let eth = link.to_ethernet(pkt.data, MAX_CAPLEN as usize, &mut scratch);
        if let Some(p) = decode(eth, pkt.ts_ns, pkt.orig_len, snap) {
            engine.push(&p);
        }
        events.extend(engine.take_events());
    }
    engine.flush();
    events.extend(engine.take_events());
    (events, *engine.stats())
}

fn tuple(src: &str, dst: &str, sport: &str, dport: &str) -> String {
    format!("{src}:{sport}>{dst}:{dport}")
}

fn flowd_rows(events: &[L7Event]) -> Vec<Row> {
    events
        .iter()
        .map(|e| {
            let k = &e.key;
            let t = tuple(
                &record::addr(&k.src).to_string(),
                &record::addr(&k.dst).to_string(),
                &k.sport.to_string(),
                &k.dport.to_string(),
            );
            match &e.detail {
                Detail::Http(h) => (
                    "http",
                    t,
                    format!("{}|{}|{}", h.host.as_deref().unwrap_or(""), h.method, h.url),
                ),
                Detail::Dns(d) => (
                    "dns",
                    t,
                    format!(
                        "{}|{}|{}",
                        k.proto,
                        d.qname.as_deref().unwrap_or(""),
                        d.qtype.map(|q| q.to_string()).unwrap_or_default()
                    ),
                ),
                Detail::Tls(s) => (
                    "tls",
                    t,
                    format!("{}|{}", s.sni.as_deref().unwrap_or(""), s.alpn.join(",")),
                ),
            }
        })
        .collect()
}

/// tshark's fields, one line per frame, for `filter`.
fn tshark(path: &Path, decode_as: &[&str], filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    for d in decode_as {
        cmd.args(["-d", d]);
    }
    cmd.args(["-n", "-r"]).arg(path).args([
        "-o",
        "tcp.desegment_tcp_streams:TRUE",
        "-Y",
        filter,
        "-T",
        "fields",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=;",
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd
        .output()
        .expect("tshark runs (cargo xtask setup installs it)");
    // A file that ends inside a packet: tshark says so and exits 2 after
    // printing every whole frame, as flowd's reader stops there too.
    let cut_short = String::from_utf8_lossy(&out.stderr).contains("cut short");
    assert!(
        out.status.success() || cut_short,
        "tshark on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

fn tshark_rows(path: &Path, decode_as: &[&str]) -> Vec<Row> {
    let mut rows = Vec::new();
    // The first IP header (the outer one of a tunnel, as flowd keys it).
    let common = [
        "ip.src",
        "ip.dst",
        "ipv6.src",
        "ipv6.dst",
        "tcp.srcport",
        "tcp.dstport",
        "udp.srcport",
        "udp.dstport",
        "frame.protocols",
    ];
    let pick = |f: &[String], tcp: bool| {
        let first = |s: &str| s.split(';').next().unwrap_or("").to_owned();
        let stack: Vec<&str> = f[8].split(':').collect();
        let v4 = stack.iter().position(|p| *p == "ip");
        let v6 = stack.iter().position(|p| *p == "ipv6");
        let (src, dst) = match (v4, v6) {
            (Some(a), Some(b)) if b < a => (first(&f[2]), first(&f[3])),
            (None, Some(_)) => (first(&f[2]), first(&f[3])),
            _ => (first(&f[0]), first(&f[1])),
        };
        let (sp, dp) = if tcp { (&f[4], &f[5]) } else { (&f[6], &f[7]) };
        tuple(&src, &dst, &first(sp), &first(dp))
    };
    const X: usize = 9;
    let mut f = common.to_vec();
    f.extend(["http.host", "http.request.method", "http.request.uri"]);
    for l in tshark(path, decode_as, "http.request", &f) {
        let n = l[X + 1].split(';').count();
        for i in 0..n {
            let nth = |s: &str| s.split(';').nth(i).unwrap_or("").to_owned();
            rows.push((
                "http",
                pick(&l, true),
                format!("{}|{}|{}", nth(&l[X]), nth(&l[X + 1]), nth(&l[X + 2])),
            ));
        }
    }
    let mut f = common.to_vec();
    f.extend(["dns.qry.name", "dns.qry.type", "dns.flags.response"]);
    for l in tshark(path, decode_as, "dns.flags.response==0", &f) {
        let tcp = !l[4].is_empty();
        let proto = if tcp { 6 } else { 17 };
        // One frame may carry several messages (DNS over TCP): one row per query.
        for (i, resp) in l[X + 2].split(';').enumerate() {
            if resp != "0" && resp != "False" {
                continue;
            }
            let nth = |s: &str| s.split(';').nth(i).unwrap_or("").to_owned();
            rows.push((
                "dns",
                pick(&l, tcp),
                format!("{proto}|{}|{}", nth(&l[X]), nth(&l[X + 1])),
            ));
        }
    }
    let mut f = common.to_vec();
    f.extend([
        "tls.handshake.extensions_server_name",
        "tls.handshake.extensions_alpn_str",
    ]);
    for l in tshark(path, decode_as, "tls.handshake.type==1", &f) {
        rows.push((
            "tls",
            pick(&l, true),
            format!("{}|{}", l[X], l[X + 1].replace(';', ",")),
        ));
    }
    rows
}

fn count(rows: Vec<Row>) -> BTreeMap<Row, usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(r).or_default() += 1;
    }
    m
}

/// Rows in `a` beyond those in `b`.
fn minus(a: &BTreeMap<Row, usize>, b: &BTreeMap<Row, usize>) -> Vec<(Row, usize)> {
    a.iter()
        .filter_map(|(r, n)| {
            let m = b.get(r).copied().unwrap_or(0);
            (*n > m).then(|| (r.clone(), n - m))
        })
        .collect()
}

fn captures() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for d in std::fs::read_dir(pcaps()).unwrap() {
        let d = d.unwrap().path();
        if !d.is_dir() || d.ends_with("reference") {
            continue;
        }
        for f in std::fs::read_dir(&d).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".pcap") || name.ends_with(".pcapng") {
                v.push(f);
            }
        }
    }
    v.sort();
    v
}

#[test]
fn events_equal_tshark_per_five_tuple() {
    let root = pcaps();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    let (mut compared, mut with_l7) = (0usize, 0usize);
    for path in captures() {
        let name = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let decode_as = DECODE_AS
            .iter()
            .find(|d| d.0 == name)
            .map_or(&[][..], |d| d.1);
        let theirs = count(tshark_rows(&path, decode_as));
        let (events, stats) = run(&path, l7::DEFAULT_SNAP);
        let ours = count(flowd_rows(&events));
        // The whole payload gives the same compared fields: the 512-byte
        // snap (and the cut-message handling) loses none of them here.
        let (whole, _) = run(&path, usize::MAX);
        assert_eq!(
            count(flowd_rows(&whole)),
            ours,
            "{name}: snap 512 and whole payloads differ"
        );
        if theirs.is_empty() && ours.is_empty() {
            continue;
        }
        with_l7 += 1;
        compared += theirs.values().sum::<usize>();
        let only_ours = minus(&ours, &theirs);
        let only_theirs = minus(&theirs, &ours);
        let (n_ours, n_theirs) = (
            only_ours.iter().map(|x| x.1).sum::<usize>(),
            only_theirs.iter().map(|x| x.1).sum::<usize>(),
        );
        report.push(format!(
            "{name}: tshark {} flowd {} only-flowd {n_ours} only-tshark {n_theirs} parse errors http {} dns {} tls {}, truncated http {} dns {} tls {}",
            theirs.values().sum::<usize>(),
            ours.values().sum::<usize>(),
            stats.http_parse_errors,
            stats.dns_parse_errors,
            stats.tls_parse_errors,
            stats.http_truncated,
            stats.dns_truncated,
            stats.tls_truncated,
        ));
        let allowed = EXCEPTIONS
            .iter()
            .find(|e| e.0 == name)
            .map_or((0, 0), |e| (e.1, e.2));
        if (n_ours, n_theirs) != allowed {
            failures.push(format!(
                "{name}: only flowd {only_ours:#?}\nonly tshark {only_theirs:#?}"
            ));
        }
    }
    for (name, ..) in EXCEPTIONS {
        assert!(
            report.iter().any(|r| r.starts_with(&format!("{name}:"))),
            "{name} in EXCEPTIONS has no events"
        );
    }
    eprintln!("{}", report.join("\n"));
    eprintln!(
        "{with_l7} captures with application-layer events, {compared} tshark events compared"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The kernel half: `flowd replay --l7-log` (the programs select and copy
/// the packets, the ring carries them) gives the same events, field for
/// field, as the engine fed every packet of the capture here. Needs root.
#[test]
fn kernel_selection_gives_the_same_events() {
    use flowd::replay::{ReplayOptions, replay_file};
    for name in [
        "web/wikipedia.pcap",
        "web/dns_tcp.pcapng",
        "web/tls-conn-with-extensions.pcap",
    ] {
        let path = pcaps().join(name);
        let lines = |events: &[L7Event]| {
            let mut v: Vec<String> = events.iter().map(|e| e.to_line("x")).collect();
            v.sort();
            v
        };
        let (ours, _) = run(&path, l7::DEFAULT_SNAP);
        let replay = replay_file(
            &path,
            &ReplayOptions {
                l7: true,
                // As `run` has it: LLMNR.
                l7_dns_ports: vec![5355],
                ..ReplayOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e} (needs root)"));
        assert!(replay.error.is_none(), "{name}: {:?}", replay.error);
        assert!(!ours.is_empty(), "{name}: no events");
        assert_eq!(lines(&replay.l7_events), lines(&ours), "{name}");
    }
}

/// The value of the series `name{labels}` in a text exposition (labels in
/// the order the exporter writes them); `None` when absent.
fn series(text: &str, name: &str, labels: &str) -> Option<f64> {
    let head = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&head))
        .map(|v| v.parse().expect("a number"))
}

/// `flowd replay FILE --l7-log OUT --metrics M` gives the L7 families as
/// a live link would: DNS responses by rcode, HTTP responses by class and
/// TLS handshakes by version, counted against tshark's responses on the
/// same captures (every one is paired there), the latency histograms one
/// observation per response, and the engine's counters. Needs root.
#[test]
fn replay_metrics_have_the_l7_families() {
    use flowd::replay::{ReplayOptions, replay_file};
    let rcode = |n: &str| flowd::export::l7stats::rcode_label(n.parse().unwrap());
    let class = |c: &str| flowd::export::l7stats::status_class(c.parse().unwrap());
    for (name, device) in [
        ("web/wikipedia.pcap", "wikipedia"),
        ("web/dns_tcp.pcapng", "dns_tcp"),
        (
            "web/tls-conn-with-extensions.pcap",
            "tls-conn-with-extensions",
        ),
    ] {
        let path = pcaps().join(name);
        let replay = replay_file(
            &path,
            &ReplayOptions {
                l7: true,
                // tshark dissects LLMNR as DNS.
                l7_dns_ports: vec![5355],
                ..ReplayOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e} (needs root)"));
        assert!(replay.error.is_none(), "{name}: {:?}", replay.error);
        let text = replay.metrics_text();
        eprintln!("{text}");
        for e in &replay.l7_events {
            eprintln!("{}", e.to_line("x").trim());
        }
        let get = |metric: &str, labels: &str| series(&text, metric, labels).unwrap_or(0.0) as u64;
        let dev = format!("device=\"{device}\"");

        // tshark's responses, by the label flowd gives them.
        let mut dns: BTreeMap<String, u64> = BTreeMap::new();
        // Responses to a query (not mDNS announcements: unmatched).
        let paired = "dns.flags.response==1 && dns.response_to";
        for r in tshark(&path, &[], paired, &["dns.flags.rcode"]) {
            *dns.entry(rcode(&r[0])).or_default() += 1;
        }
        let mut http: BTreeMap<&str, u64> = BTreeMap::new();
        for r in tshark(&path, &[], "http.response", &["http.response.code"]) {
            *http.entry(class(&r[0])).or_default() += 1;
        }
        let mut tls: BTreeMap<&str, u64> = BTreeMap::new();
        for r in tshark(
            &path,
            &[],
            "tls.handshake.type==2",
            &[
                "tls.handshake.extensions.supported_version",
                "tls.handshake.version",
            ],
        ) {
            let v = if r[0].is_empty() { &r[1] } else { &r[0] };
            let v = u16::from_str_radix(v.trim_start_matches("0x"), 16).unwrap();
            *tls.entry(flowd::export::l7stats::tls_version_label(Some(v)))
                .or_default() += 1;
        }
        let count = |filter: &str| tshark(&path, &[], filter, &["frame.number"]).len() as u64;
        let queries = count("dns.flags.response==0");
        let unsolicited = count("dns.flags.response==1 && !dns.response_to");
        let requests = tshark(&path, &[], "http.request", &["http.request.method"]).len() as u64;
        let hellos =
            tshark(&path, &[], "tls.handshake.type==1", &["tls.handshake.type"]).len() as u64;
        // The captures' own numbers, so that tshark's cannot be empty.
        let want: (u64, u64, u64) = match device {
            "wikipedia" => (14, 15, 0),
            "dns_tcp" => (2, 0, 0),
            _ => (0, 0, 1),
        };
        assert_eq!(
            (
                dns.values().sum::<u64>(),
                http.values().sum::<u64>(),
                tls.values().sum::<u64>()
            ),
            want,
            "{name}: tshark"
        );

        for (rc, n) in &dns {
            let l = format!("{dev},rcode=\"{rc}\"");
            assert_eq!(get("flowd_dns_responses_total", &l), *n, "{name} {rc}");
        }
        for (c, n) in &http {
            let l = format!("{dev},class=\"{c}\"");
            assert_eq!(get("flowd_http_responses_total", &l), *n, "{name} {c}");
        }
        for (v, n) in &tls {
            let l = format!("{dev},version=\"{v}\"");
            assert_eq!(get("flowd_tls_handshakes_total", &l), *n, "{name} {v}");
        }
        let sum = |metric: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(&format!("{metric}{{")))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
                .sum()
        };
        // No response flowd has that tshark has not.
        assert_eq!(
            sum("flowd_dns_responses_total"),
            dns.values().sum::<u64>(),
            "{name}"
        );
        assert_eq!(
            sum("flowd_http_responses_total"),
            http.values().sum::<u64>(),
            "{name}"
        );
        // A handshake per ClientHello, its version from the ServerHello.
        assert_eq!(sum("flowd_tls_handshakes_total"), hellos, "{name}");
        assert_eq!(tls.values().sum::<u64>(), hellos, "{name}");
        // One latency observation per paired response (all peers).
        assert_eq!(
            sum("flowd_dns_latency_seconds_count"),
            dns.values().sum::<u64>(),
            "{name}"
        );
        assert_eq!(
            sum("flowd_http_latency_seconds_count"),
            http.values().sum::<u64>(),
            "{name}"
        );
        for (kind, n) in [("dns", queries), ("http", requests), ("tls", hellos)] {
            let l = format!("{dev},kind=\"{kind}\"");
            assert_eq!(get("flowd_l7_events_total", &l), n, "{name} {kind}");
        }
        // The engine's counters: clean captures, every packet recognised,
        // nothing dropped, nothing left waiting.
        let e = replay.l7_metrics.as_ref().unwrap().engine;
        assert_eq!(get("flowd_l7_packets_total", ""), e.packets, "{name}");
        assert!(e.packets > 0, "{name}");
        for kind in ["http", "dns", "tls"] {
            let l = format!("kind=\"{kind}\"");
            assert_eq!(get("flowd_l7_parse_errors_total", &l), 0, "{name} {kind}");
            let unmatched = if kind == "dns" { unsolicited } else { 0 };
            let got = get("flowd_l7_unmatched_responses_total", &l);
            assert_eq!(got, unmatched, "{name} {kind}");
        }
        // Queries without a response are still events, at the flush.
        let unanswered = queries - dns.values().sum::<u64>();
        let l = r#"reason="timeout""#;
        assert_eq!(
            get("flowd_l7_unanswered_requests_total", l),
            unanswered,
            "{name}"
        );
        assert_eq!(
            series(&text, "flowd_l7_pending_requests", ""),
            Some(0.0),
            "{name}"
        );
    }
}
