//! Unit tests of the application layer: each parser on good, cut, garbage
//! and absurd input; JA4 against published values; the engine's
//! reassembly, pairing, bounds and counters; the event's JSON line
//! (`engine.rs`).

use bytes::Bytes;
use flowd_common::{DIR_EGRESS, DIR_INGRESS, FlowKey, proto::ip};

use super::{
    Engine, L7Config, L7Event, L7Packet, Parsed, TcpMeta, detect, dns,
    event::Detail,
    http,
    ja4::{self, Ja4Input},
    tls,
};

// ---- builders ------------------------------------------------------------

fn v4(a: [u8; 4]) -> [u8; 16] {
    std::net::Ipv4Addr::from(a).to_ipv6_mapped().octets()
}

fn key(proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> FlowKey {
    FlowKey {
        ifindex: 2,
        vlan: 0,
        direction: DIR_EGRESS,
        proto,
        src: v4(src),
        dst: v4(dst),
        sport,
        dport,
    }
}

const C: [u8; 4] = [198, 18, 0, 1];
const S: [u8; 4] = [198, 18, 0, 2];

fn tcp_pkt(ts_ns: u64, k: FlowKey, seq: u32, payload: &[u8]) -> L7Packet {
    L7Packet {
        ts_ns,
        key: k,
        direction: DIR_EGRESS,
        tcp: Some(TcpMeta { seq, flags: 0x18 }),
        payload: Bytes::copy_from_slice(payload),
        wire_payload_len: payload.len() as u32,
    }
}

fn udp_pkt(ts_ns: u64, k: FlowKey, payload: &[u8]) -> L7Packet {
    L7Packet {
        ts_ns,
        key: k,
        direction: DIR_INGRESS,
        tcp: None,
        payload: Bytes::copy_from_slice(payload),
        wire_payload_len: payload.len() as u32,
    }
}

fn reverse(k: FlowKey) -> FlowKey {
    FlowKey {
        src: k.dst,
        dst: k.src,
        sport: k.dport,
        dport: k.sport,
        ..k
    }
}

/// A DNS query for `name` (type `qtype`), optionally a response with
/// A answers compressed against the question.
fn dns_msg(
    id: u16,
    response: bool,
    name: &str,
    qtype: u16,
    answers: &[[u8; 4]],
    rcode: u8,
) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend(id.to_be_bytes());
    m.push(if response { 0x81 } else { 0x01 });
    m.push(if response { 0x80 | rcode } else { 0 });
    m.extend(1u16.to_be_bytes());
    m.extend((answers.len() as u16).to_be_bytes());
    m.extend([0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend(label.as_bytes());
    }
    m.push(0);
    m.extend(qtype.to_be_bytes());
    m.extend(1u16.to_be_bytes());
    for a in answers {
        m.extend([0xc0, 12]);
        m.extend(1u16.to_be_bytes());
        m.extend(1u16.to_be_bytes());
        m.extend(300u32.to_be_bytes());
        m.extend(4u16.to_be_bytes());
        m.extend(a);
    }
    m
}

fn ext(t: u16, body: &[u8]) -> Vec<u8> {
    let mut v = t.to_be_bytes().to_vec();
    v.extend((body.len() as u16).to_be_bytes());
    v.extend(body);
    v
}

fn u16s(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_be_bytes()).collect()
}

fn with_len16(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u16).to_be_bytes().to_vec();
    v.extend(body);
    v
}

/// The ClientHello of FoxIO's JA4 example (technical_details/JA4.md:
/// `t13d1516h2_8daaf6152771_e5627efa2ab1`), built from its published raw
/// lists in wire order (`JA4_ro`), with GREASE cipher, extensions, group
/// and version as Chrome sends them, and padded to a 517-byte record as
/// Chrome pads (so a 512-byte snap cuts it inside the padding).
fn chrome_client_hello(sni: &str) -> Vec<u8> {
    let ciphers = [
        0x5a5a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
        0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
    ];
    let sigs = [
        0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
    ];
    let mut sni_body = vec![0];
    sni_body.extend(with_len16(sni.as_bytes()));
    let mut key_share = 0x001du16.to_be_bytes().to_vec();
    key_share.extend(with_len16(&[7; 32]));
    let mut alpn = vec![2];
    alpn.extend(b"h2");
    alpn.push(8);
    alpn.extend(b"http/1.1");
    let mut exts = Vec::new();
    exts.extend(ext(0xfafa, &[]));
    exts.extend(ext(0x0000, &with_len16(&sni_body)));
    exts.extend(ext(0x0033, &with_len16(&key_share)));
    exts.extend(ext(0x000d, &with_len16(&u16s(&sigs))));
    exts.extend(ext(0x0023, &[]));
    exts.extend(ext(0x000b, &[1, 0]));
    exts.extend(ext(0xff01, &[0]));
    exts.extend(ext(
        0x000a,
        &with_len16(&u16s(&[0x3a3a, 0x001d, 0x0017, 0x0018])),
    ));
    exts.extend(ext(0x001b, &[2, 0, 2]));
    exts.extend(ext(0x4469, &[0, 3, 2, b'h', b'2']));
    exts.extend(ext(0x0012, &[]));
    exts.extend(ext(0x002d, &[1, 1]));
    exts.extend(ext(0x0010, &with_len16(&alpn)));
    exts.extend(ext(0x0005, &[1, 0, 0, 0, 0]));
    let mut versions = vec![6];
    versions.extend(u16s(&[0x0a0a, 0x0304, 0x0303]));
    exts.extend(ext(0x002b, &versions));
    exts.extend(ext(0x0017, &[]));
    exts.extend(ext(0x1a1a, &[0]));
    let mut body = 0x0303u16.to_be_bytes().to_vec();
    body.extend([0x11; 32]);
    body.push(32);
    body.extend([0x22; 32]);
    body.extend(with_len16(&u16s(&ciphers)));
    body.extend([1, 0]);
    // Padding to a 512-byte record body, as Chrome does.
    let fixed = 4 + body.len() + 2 + exts.len() + 4;
    let pad = 512usize.saturating_sub(fixed);
    exts.extend(ext(0x0015, &vec![0; pad]));
    body.extend(with_len16(&exts));
    let mut hs = vec![1, 0];
    hs.extend((body.len() as u16).to_be_bytes());
    hs.extend(body);
    let mut rec = vec![22, 3, 1];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

fn server_hello(version: u16, cipher: u16) -> Vec<u8> {
    let mut body = 0x0303u16.to_be_bytes().to_vec();
    body.extend([0x33; 32]);
    body.push(0);
    body.extend(cipher.to_be_bytes());
    body.push(0);
    body.extend(with_len16(&ext(0x002b, &version.to_be_bytes())));
    let mut hs = vec![2, 0];
    hs.extend((body.len() as u16).to_be_bytes());
    hs.extend(body);
    let mut rec = vec![22, 3, 3];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

/// A small deterministic generator for the garbage loops.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn run(engine: &mut Engine, pkts: &[L7Packet]) -> Vec<L7Event> {
    for p in pkts {
        engine.push(p);
    }
    engine.flush();
    engine.take_events()
}

// ---- JA4 -----------------------------------------------------------------

#[test]
fn ja4_hashes_match_the_published_raw_lists() {
    // FoxIO's example: the sorted lists (JA4_r) hash to the published parts.
    assert_eq!(
        ja4::hash12("002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"),
        "8daaf6152771"
    );
    assert_eq!(
        ja4::hash12(
            "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_0403,0804,0401,0503,0805,0501,0806,0601"
        ),
        "e5627efa2ab1"
    );
    assert_eq!(ja4::hash12(""), "000000000000");
}

#[test]
fn ja4_of_the_foxio_example_client_hello() {
    let rec = chrome_client_hello("example.com");
    assert_eq!(rec.len(), 517);
    let Parsed::Done(ch, used) = tls::parse_client_hello(&rec, false) else {
        panic!("a whole ClientHello parses");
    };
    assert_eq!(used, rec.len());
    assert_eq!(
        ch.info.ja4.as_deref(),
        Some("t13d1516h2_8daaf6152771_e5627efa2ab1")
    );
    assert_eq!(ch.info.sni.as_deref(), Some("example.com"));
    assert_eq!(ch.info.alpn, ["h2", "http/1.1"]);
    assert_eq!(ch.info.versions_offered, [0x0304, 0x0303]);
    let (a, b, c) = ja4::ja4_raw(&ch.ja4);
    assert_eq!(a, "t13d1516h2");
    assert_eq!(
        b,
        "002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"
    );
    assert_eq!(
        c,
        "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_0403,0804,0401,0503,0805,0501,0806,0601"
    );
}

#[test]
fn a_client_hello_cut_in_its_padding_is_exact() {
    let rec = chrome_client_hello("example.com");
    // The kernel's 512 bytes: five short, inside the padding extension.
    let Parsed::Done(ch, _) = tls::parse_client_hello(&rec[..512], true) else {
        panic!("cut in the padding: still whole");
    };
    assert_eq!(
        ch.info.ja4.as_deref(),
        Some("t13d1516h2_8daaf6152771_e5627efa2ab1")
    );
    // Cut before ALPN: SNI kept, no ALPN, no JA4.
    let Parsed::Cut(ch) = tls::parse_client_hello(&rec[..200], true) else {
        panic!("cut early: the fields captured");
    };
    assert_eq!(ch.info.sni.as_deref(), Some("example.com"));
    assert!(ch.info.alpn.is_empty());
    assert_eq!(ch.info.ja4, None);
    // Not the last bytes: wait for more.
    assert_eq!(tls::parse_client_hello(&rec[..200], false), Parsed::More);
    // Cut inside the cipher list: nothing usable.
    assert_eq!(tls::parse_client_hello(&rec[..60], true), Parsed::Error);
}

#[test]
fn ja4_edge_cases() {
    let mut i = Ja4Input {
        tcp: true,
        legacy_version: 0x0303,
        ..Ja4Input::default()
    };
    // No extensions, no ciphers: i, 00, zeros.
    assert_eq!(ja4::ja4(&i), "t12i000000_000000000000_000000000000");
    // ALPN with non-alphanumeric ends: first and last hex digits.
    i.alpn_first = Some(vec![0xab, b'x', 0x2f]);
    i.extensions = vec![0x0010];
    assert!(ja4::ja4(&i).starts_with("t12i0001af_"), "{}", ja4::ja4(&i));
    // GREASE is counted nowhere; the highest supported version wins.
    i.ciphers = vec![0x0a0a, 0x1301];
    i.extensions = vec![0x2a2a, 0x002b];
    i.supported_versions = Some(vec![0x7a7a, 0x0303, 0x0304]);
    i.alpn_first = None;
    assert!(ja4::ja4(&i).starts_with("t13i010100_"), "{}", ja4::ja4(&i));
    assert!(ja4::is_grease(0xfafa) && !ja4::is_grease(0xfafb) && !ja4::is_grease(0x0a1a));
}

// ---- TLS -----------------------------------------------------------------

#[test]
fn server_hello_gives_version_and_cipher() {
    let Parsed::Done(sh, _) = tls::parse_server_hello(&server_hello(0x0304, 0x1301), false) else {
        panic!("a ServerHello parses");
    };
    assert_eq!((sh.version, sh.cipher), (0x0304, 0x1301));
}

#[test]
fn absurd_tls_lengths_are_errors() {
    // Handshake length larger than the record, and larger than 2^14.
    assert_eq!(
        tls::parse_client_hello(&[22, 3, 1, 0, 10, 1, 0, 0, 200, 0, 0], true),
        Parsed::Error
    );
    assert_eq!(
        tls::parse_client_hello(&[22, 3, 1, 0xff, 0xff, 1, 0xff, 0xff, 0xff], false),
        Parsed::Error
    );
    // A record header alone: more, or an error when nothing follows.
    assert_eq!(
        tls::parse_client_hello(&[22, 3, 1, 0, 50], false),
        Parsed::More
    );
    assert_eq!(
        tls::parse_client_hello(&[22, 3, 1, 0, 50], true),
        Parsed::Error
    );
    // An extension that claims more than its block.
    let mut rec = chrome_client_hello("a.example");
    let at = rec.len() - 2 - 0x10; // somewhere in the padding's body: harmless
    rec[at] = 0xff;
    let _ = tls::parse_client_hello(&rec, true);
}

// ---- HTTP ----------------------------------------------------------------

#[test]
fn http_request_and_status() {
    let req = b"GET /a?b=c HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: curl/8\r\n\r\n";
    let Parsed::Done(h, used) = http::parse_request(req, false) else {
        panic!("a request parses");
    };
    assert_eq!(used, req.len());
    assert_eq!((h.method.as_str(), h.url.as_str()), ("GET", "/a?b=c"));
    assert_eq!(h.host.as_deref(), Some("example.com:8080"));
    assert_eq!(h.user_agent.as_deref(), Some("curl/8"));
    assert_eq!(http::parse_request(&req[..30], false), Parsed::More);
    let Parsed::Cut(h) = http::parse_request(&req[..50], true) else {
        panic!("a cut request gives its complete lines");
    };
    assert_eq!(h.host.as_deref(), Some("example.com:8080"));
    assert_eq!(h.user_agent, None);
    assert_eq!(
        http::parse_request(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", false),
        Parsed::Error
    );
    assert!(matches!(
        http::parse_status(b"HTTP/1.1 404 Not Found\r\n", false),
        Parsed::Done(404, _)
    ));
    assert_eq!(http::parse_status(b"HTTP/1.1 40", false), Parsed::More);
    assert_eq!(
        http::parse_status(b"HTTP/1.1 4x4 Nope\r\n", false),
        Parsed::Error
    );
}

// ---- DNS -----------------------------------------------------------------

#[test]
fn dns_query_response_and_cut_response() {
    let q = dns::parse_message(&dns_msg(7, false, "www.example.com", 28, &[], 0)).unwrap();
    assert_eq!((q.id, q.response), (7, false));
    assert_eq!(
        (q.qname.as_deref(), q.qtype),
        (Some("www.example.com"), Some(28))
    );
    let full = dns_msg(
        7,
        true,
        "a.example",
        1,
        &[[192, 0, 2, 1], [192, 0, 2, 2], [192, 0, 2, 3]],
        0,
    );
    let r = dns::parse_message(&full).unwrap();
    assert_eq!(r.answers, ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    assert!(!r.truncated);
    // Cut in the third answer: the two that fit.
    let r = dns::parse_message(&full[..full.len() - 3]).unwrap();
    assert_eq!(r.answers, ["192.0.2.1", "192.0.2.2"]);
    assert!(r.truncated);
    // NXDOMAIN.
    assert_eq!(
        dns::parse_message(&dns_msg(1, true, "no.example", 1, &[], 3))
            .unwrap()
            .rcode,
        3
    );
}

#[test]
fn dns_compression_loops_and_absurd_lengths_are_errors() {
    // The question's name points at itself.
    let mut m = dns_msg(1, false, "x", 1, &[], 0);
    m.truncate(12);
    m.extend([0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(dns::parse_message(&m), None);
    // Two pointers pointing at each other.
    let mut m = dns_msg(1, false, "x", 1, &[], 0);
    m.truncate(12);
    m.extend([0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(dns::parse_message(&m), None);
    // A label longer than the message; 65535 questions announced.
    let mut m = dns_msg(1, false, "x", 1, &[], 0);
    m[12] = 63;
    assert_eq!(dns::parse_message(&m), None);
    let mut m = dns_msg(1, false, "x", 1, &[], 0);
    m[4] = 0xff;
    m[5] = 0xff;
    assert_eq!(dns::parse_message(&m), None);
    // A response announcing 65535 answers with none there: bounded search.
    let mut m = dns_msg(1, true, "x", 1, &[], 0);
    m[6] = 0xff;
    m[7] = 0xff;
    let r = dns::parse_message(&m).unwrap();
    assert!(r.answers.is_empty() && r.truncated);
    assert_eq!(dns::parse_message(&[0; 11]), None);
}

#[test]
fn dns_over_tcp_length_prefix() {
    let q = dns_msg(9, false, "tcp.example", 1, &[], 0);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend(&q);
    assert!(
        matches!(dns::parse_tcp(&framed, false), Parsed::Done(ref m, n) if m.id == 9 && n == framed.len())
    );
    assert_eq!(dns::parse_tcp(&framed[..10], false), Parsed::More);
    assert_eq!(dns::parse_tcp(&[0, 3, 1, 2, 3], false), Parsed::Error);
}

// ---- detection -----------------------------------------------------------

#[test]
fn detection_is_by_content_not_port() {
    use detect::Start;
    let ch = chrome_client_hello("x.example");
    assert_eq!(
        detect::classify(&ch, true, false),
        Some(Start::TlsClientHello)
    );
    assert_eq!(
        detect::classify(b"POST /x HTTP/1.0\r\n", true, false),
        Some(Start::HttpRequest)
    );
}

mod engine;
