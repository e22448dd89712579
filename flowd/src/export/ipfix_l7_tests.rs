//! The application-layer templates and fields of [`super`]: the exact
//! bytes, cutting to the message limit, and tshark decoding them.

use std::process::Command;

use flowd_common::{DIR_INGRESS, FlowKey, ipv4_mapped};

use super::*;
use crate::flowtable::{Flow, FlowL7};

fn ended(src: [u8; 16], dst: [u8; 16], bytes: u64, l7: Option<FlowL7>) -> Ended {
    Ended {
        flow: Flow {
            key: FlowKey {
                src,
                dst,
                sport: 40000,
                dport: 80,
                proto: 6,
                direction: DIR_INGRESS,
                ifindex: 7,
                ..FlowKey::default()
            },
            counts: flowd_common::FlowCounts {
                packets: 3,
                bytes,
                ..Default::default()
            },
            first_ns: 1_700_000_000_123_456_789,
            last_ns: 1_700_000_001_987_654_321,
            l7: l7.map(Box::new),
            ..Flow::default()
        },
        state: None,
        reason: EndReason::EndOfFlow,
        originator: true,
    }
}

fn names(host: Option<&str>, url: Option<&str>, qname: Option<&str>, sni: Option<&str>) -> FlowL7 {
    FlowL7 {
        http_host: host.map(Into::into),
        http_url: url.map(Into::into),
        dns_qname: qname.map(Into::into),
        tls_sni: sni.map(Into::into),
    }
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// The data sets of a message: (set id, its body).
fn sets(m: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut i = HEADER_LEN;
    while i < m.len() {
        let (id, len) = (u16_at(m, i), usize::from(u16_at(m, i + 2)));
        out.push((id, &m[i + 4..i + len]));
        i += len;
    }
    assert_eq!(i, m.len(), "the sets fill the message");
    out
}

#[test]
fn the_application_layer_template_and_a_record_byte_by_byte() {
    let e = ended(
        ipv4_mapped([198, 18, 0, 1]),
        ipv4_mapped([198, 18, 0, 2]),
        300,
        Some(names(
            Some("h.test:8080"),
            Some("/x?y=1"),
            None,
            Some("s.test"),
        )),
    );
    let msgs = Encoder::new(9, 1400).messages(&[e], 0, true);
    assert_eq!(msgs.len(), 1);
    let s = sets(&msgs[0].1);
    assert_eq!(s.len(), 3);
    // The second template set: 258 with 17 + 4 fields, 259 likewise.
    let (id, t) = s[1];
    assert_eq!(id, 2);
    assert_eq!((u16_at(t, 0), u16_at(t, 2)), (TEMPLATE_V4_L7, 21));
    let tail = &t[4 + 17 * 4..4 + 17 * 4 + 24];
    assert_eq!(
        tail,
        [
            1, 204, 255, 255, // 460, variable
            1, 205, 255, 255, // 461, variable
            0x80, 205, 255, 255, 0, 0, 0x8b, 0x30, // enterprise 205, PEN 35632
            0x80, 188, 255, 255, 0, 0, 0x8b, 0x30, // enterprise 188, PEN 35632
        ]
    );
    let (id, d) = s[2];
    assert_eq!(id, TEMPLATE_V4_L7);
    assert_eq!(&d[..8], &300u64.to_be_bytes());
    let var = &d[RECORD_LEN_V4..];
    let mut want = vec![11];
    want.extend_from_slice(b"h.test:8080");
    want.push(6);
    want.extend_from_slice(b"/x?y=1");
    want.push(0); // no query name
    want.push(6);
    want.extend_from_slice(b"s.test");
    assert_eq!(var, want);
}

#[test]
fn long_names_take_three_length_bytes_and_are_cut_to_fit_the_limit() {
    let url = format!("/{}", "a".repeat(299));
    let e = ended(
        [0xfd; 16],
        [0xfe; 16],
        1,
        Some(names(None, Some(&url), None, None)),
    );
    let msgs = Encoder::new(1, 1400).messages(&[e], 0, false);
    let s = sets(&msgs[0].1);
    let var = &s[0].1[RECORD_LEN_V6..];
    assert_eq!(s[0].0, TEMPLATE_V6_L7);
    assert_eq!(var[0], 0, "no host");
    assert_eq!((var[1], u16_at(var, 2)), (255, 300));
    assert_eq!(&var[4..304], url.as_bytes());
    assert_eq!(&var[304..], [0, 0]);

    // At the smallest limit the two template sets go in a message each,
    // and a 2,000-byte target is cut (at a character boundary) so the
    // record fits in one.
    let long = format!("/{}", "é".repeat(1000));
    let e = ended(
        [0xfd; 16],
        [0xfe; 16],
        1,
        Some(names(Some("h"), Some(&long), Some("q.test"), Some("s"))),
    );
    let plain = ended([0xfd; 16], [0xfe; 16], 2, None);
    let msgs = Encoder::new(1, MIN_MESSAGE).messages(&[plain, e], 0, true);
    assert_eq!(
        msgs.len(),
        4,
        "templates, L7 templates, plain record, the record"
    );
    assert!(msgs.iter().all(|(_, m)| m.len() <= MIN_MESSAGE));
    let counts: Vec<usize> = msgs.iter().map(|(n, _)| *n).collect();
    assert_eq!(counts, [0, 0, 1, 1]);
    assert_eq!(sets(&msgs[1].1)[0].0, 2);
    assert_eq!(u16_at(sets(&msgs[1].1)[0].1, 0), TEMPLATE_V4_L7);
    assert_eq!(sets(&msgs[2].1)[0].0, TEMPLATE_V6);
    let m = &msgs[3].1;
    let (id, d) = sets(m)[0];
    assert_eq!(id, TEMPLATE_V6_L7);
    let var = &d[RECORD_LEN_V6..];
    assert_eq!(&var[..2], [1, b'h']);
    let url_len = usize::from(var[2]);
    let got = std::str::from_utf8(&var[3..3 + url_len]).expect("cut at a character boundary");
    assert!(long.starts_with(got));
    let rest = &var[3 + url_len..];
    assert_eq!(rest, [&[6u8][..], b"q.test", &[1], b"s"].concat());
    // The record fills the message up to the character boundary.
    assert!(MIN_MESSAGE - m.len() < 2, "{} of {MIN_MESSAGE}", m.len());
}

#[test]
fn names_are_cut_at_character_boundaries_within_the_room() {
    let f = fit_names([Some("ab"), Some("ééé"), None, Some("x")], 4 + 2 + 3);
    // The shorter first: "x", "ab", then "ééé" gets 2 bytes: one "é".
    assert_eq!(f, ["ab", "é", "", "x"]);
    let f = fit_names([Some("ab"), Some("ééé"), None, Some("xyz")], 4 + 2 + 3);
    assert_eq!(f, ["ab", "", "", "xyz"], "é does not fit in the byte left");
    let u = "u".repeat(600);
    let f = fit_names([None, Some(&u), None, None], 4 + 400);
    assert_eq!(f[1].len(), 398, "255 or more: two more length bytes");
    assert_eq!(varlen_size(&f), 404);
    let f = fit_names([None, Some(&u), None, None], 4 + 256);
    assert_eq!(
        f[1].len(),
        254,
        "not enough room for 255 and its 3 length bytes"
    );
}

/// A pcap of the messages as UDP datagrams to port 4739 (IPFIX).
fn pcap(msgs: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        // magic; version 2.4 (as two LE u16 in one LE u32); zone; sigfigs; snaplen; Ethernet
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (i, (_, m)) in msgs.iter().enumerate() {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        let ip_len = (20 + 8 + m.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&ip_len.to_be_bytes());
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

/// tshark's IPFIX dissector reads the elements back by name: IANA's
/// httpRequestHost/httpRequestTarget and ntop's DNS_QUERY/SSL_SERVER_NAME,
/// with the base fields still in place around them.
#[test]
fn tshark_decodes_the_names_exactly() {
    let url = format!("/{}", "p".repeat(299));
    let batch = [
        ended(
            ipv4_mapped([198, 18, 0, 1]),
            ipv4_mapped([198, 18, 0, 2]),
            1111,
            Some(names(
                Some("h.test:8080"),
                Some("/a?b=c"),
                None,
                Some("sni.test"),
            )),
        ),
        ended(
            [0xfd; 16],
            [0xfe; 16],
            2222,
            Some(names(None, None, Some("q.example.test"), None)),
        ),
        ended(
            ipv4_mapped([198, 18, 0, 3]),
            ipv4_mapped([198, 18, 0, 4]),
            3333,
            None,
        ),
        ended(
            [0xfd; 16],
            [0xfe; 16],
            4444,
            Some(names(Some("long.test"), Some(&url), None, None)),
        ),
    ];
    let msgs = Encoder::new(1, 1400).messages(&batch, 1_700_000_000, true);
    assert_eq!(msgs.len(), 1);
    let path = std::env::temp_dir().join(format!("flowd-ipfix-l7-{}.pcap", std::process::id()));
    std::fs::write(&path, pcap(&msgs)).unwrap();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .args(["-T", "fields", "-E", "aggregator=|", "-E", "occurrence=a"])
        .args(["-e", "cflow.octets"])
        .args(["-e", "cflow.http_request_host"])
        .args(["-e", "cflow.http_request_target"])
        .args(["-e", "cflow.pie.ntop.dns_query"])
        .args(["-e", "cflow.pie.ntop.ssl_server_name"])
        .output()
        .expect("run tshark (Debian package `tshark`)");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let cols: Vec<&str> = text.trim_end_matches('\n').split('\t').collect();
    assert_eq!(
        cols,
        [
            "1111|2222|3333|4444",
            // In record order; tshark lists no value for an empty field.
            "h.test:8080|long.test",
            &format!("/a?b=c|{url}"),
            "q.example.test",
            "sni.test",
        ],
        "{text}"
    );
}
