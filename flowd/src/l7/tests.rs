//! Unit tests of the application layer: each parser on good, cut, garbage
//! and absurd input; JA4 against published values; the engine's
//! reassembly, pairing, bounds and counters; the event's JSON line.

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

// ---- the engine ----------------------------------------------------------

#[test]
fn http_request_split_across_segments_pairs_with_its_status() {
    let k = key(ip::TCP, C, 40000, S, 8081);
    let req = b"GET /split HTTP/1.1\r\nHost: example.com\r\nCookie: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let (a, b) = req.split_at(30);
    let mut e = Engine::new(L7Config::default());
    let evs = run(
        &mut e,
        &[
            tcp_pkt(1_000, k, 100, a),
            // A retransmission of the first part changes nothing.
            tcp_pkt(1_500, k, 100, a),
            tcp_pkt(2_000, k, 130, b),
            tcp_pkt(5_000_000, reverse(k), 9, b"HTTP/1.1 204 No Content\r\n\r\n"),
        ],
    );
    assert_eq!(evs.len(), 1);
    let Detail::Http(h) = &evs[0].detail else {
        panic!("http")
    };
    assert_eq!(
        (h.url.as_str(), h.host.as_deref(), h.status),
        ("/split", Some("example.com"), Some(204))
    );
    assert_eq!(evs[0].ts_ns, 1_000);
    assert_eq!(evs[0].latency_ns, Some(4_999_000));
    assert_eq!(e.stats().http_events, 1);
    assert_eq!(e.stats().unanswered, 0);
}

#[test]
fn pipelined_requests_pair_in_order() {
    let k = key(ip::TCP, C, 40001, S, 80);
    let two = b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut e = Engine::new(L7Config::default());
    let evs = run(
        &mut e,
        &[
            tcp_pkt(1, k, 1, two),
            tcp_pkt(
                2,
                reverse(k),
                1,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            ),
            tcp_pkt(3, reverse(k), 40, b"HTTP/1.1 404 Not Found\r\n\r\n"),
        ],
    );
    let got: Vec<(String, Option<u16>)> = evs
        .iter()
        .map(|e| match &e.detail {
            Detail::Http(h) => (h.url.clone(), h.status),
            _ => panic!("http"),
        })
        .collect();
    assert_eq!(
        got,
        [("/1".to_owned(), Some(200)), ("/2".to_owned(), Some(404))]
    );
}

#[test]
fn a_malformed_whole_response_is_a_parse_error_a_cut_one_truncated() {
    let k = key(ip::UDP, C, 5555, S, 53);
    let mut e = Engine::new(L7Config::default());
    let full = dns_msg(
        1,
        true,
        "a.example",
        1,
        &[[192, 0, 2, 1], [192, 0, 2, 2]],
        0,
    );
    // The second answer's name points at itself: the datagram is whole,
    // so it is malformed; the first answer is kept and it pairs.
    let mut looped = full.clone();
    let second = full.len() - 16;
    looped[second..second + 2].copy_from_slice(&[0xc0 | (second >> 8) as u8, second as u8]);
    e.push(&udp_pkt(10, k, &dns_msg(1, false, "a.example", 1, &[], 0)));
    e.push(&udp_pkt(20, reverse(k), &looped));
    // The same response cut by the snap length: truncated.
    e.push(&udp_pkt(30, k, &dns_msg(2, false, "a.example", 1, &[], 0)));
    let mut cut_msg = full.clone();
    cut_msg[1] = 2;
    let mut cut = udp_pkt(40, reverse(k), &cut_msg[..full.len() - 3]);
    cut.wire_payload_len = full.len() as u32;
    e.push(&cut);
    // Over TCP, a whole length-prefixed message with a looping answer.
    let t = key(ip::TCP, C, 5556, S, 53);
    let mut q = vec![0, 0];
    q.extend(dns_msg(3, false, "a.example", 1, &[], 0));
    q[1] = (q.len() - 2) as u8;
    e.push(&tcp_pkt(50, t, 100, &q));
    let mut r = vec![0, looped.len() as u8];
    let mut l3 = looped.clone();
    l3[1] = 3;
    r.extend(&l3);
    e.push(&tcp_pkt(60, reverse(t), 900, &r));
    let evs = e.take_events();
    let got: Vec<_> = evs
        .iter()
        .map(|ev| match &ev.detail {
            Detail::Dns(d) => (d.id, d.rcode, d.answers.clone()),
            _ => panic!("dns"),
        })
        .collect();
    let one = vec!["192.0.2.1".to_owned()];
    assert_eq!(
        got,
        [
            (1, Some(0), one.clone()),
            (2, Some(0), one.clone()),
            (3, Some(0), one)
        ]
    );
    let s = e.stats();
    assert_eq!((s.dns_parse_errors, s.dns_truncated), (2, 1), "{s:?}");
}

#[test]
fn dns_pairs_by_reversed_tuple_and_id_and_times_out() {
    let k = key(ip::UDP, C, 5555, S, 53);
    let mut e = Engine::new(L7Config::default());
    e.push(&udp_pkt(10, k, &dns_msg(1, false, "a.example", 1, &[], 0)));
    e.push(&udp_pkt(20, k, &dns_msg(2, false, "b.example", 1, &[], 0)));
    // A response with another ID, and one to another port: unmatched.
    e.push(&udp_pkt(
        30,
        reverse(k),
        &dns_msg(3, true, "a.example", 1, &[], 0),
    ));
    e.push(&udp_pkt(
        30,
        key(ip::UDP, S, 53, C, 5556),
        &dns_msg(1, true, "a.example", 1, &[], 0),
    ));
    e.push(&udp_pkt(
        40,
        reverse(k),
        &dns_msg(1, true, "a.example", 1, &[[192, 0, 2, 9]], 0),
    ));
    let evs = e.take_events();
    assert_eq!(evs.len(), 1);
    let Detail::Dns(d) = &evs[0].detail else {
        panic!("dns")
    };
    assert_eq!(
        (d.id, d.rcode, d.answers.clone()),
        (1, Some(0), vec!["192.0.2.9".to_owned()])
    );
    assert_eq!(evs[0].latency_ns, Some(30));
    assert_eq!(e.stats().dns_unmatched_responses, 2);
    // The other query, after the timeout: no response fields.
    e.poll(20 + 31_000_000_000);
    let evs = e.take_events();
    assert_eq!(evs.len(), 1);
    let Detail::Dns(d) = &evs[0].detail else {
        panic!("dns")
    };
    assert_eq!((d.id, d.rcode, evs[0].latency_ns), (2, None, None));
    assert_eq!(e.stats().unanswered, 1);
    assert_eq!(e.pending(), 0);
}

#[test]
fn tls_handshake_pairs_client_and_server_hello() {
    let k = key(ip::TCP, C, 40002, S, 8443);
    let ch = chrome_client_hello("tls.example");
    let (a, b) = ch.split_at(300);
    let mut e = Engine::new(L7Config::default());
    let evs = run(
        &mut e,
        &[
            tcp_pkt(100, k, 1, a),
            tcp_pkt(110, k, 301, b),
            tcp_pkt(400, reverse(k), 1, &server_hello(0x0304, 0x1302)),
        ],
    );
    assert_eq!(evs.len(), 1);
    let Detail::Tls(t) = &evs[0].detail else {
        panic!("tls")
    };
    assert_eq!(t.sni.as_deref(), Some("tls.example"));
    assert_eq!((t.version, t.cipher), (Some(0x0304), Some(0x1302)));
    assert_eq!(
        t.ja4.as_deref(),
        Some("t13d1516h2_8daaf6152771_e5627efa2ab1")
    );
    assert_eq!(evs[0].latency_ns, Some(300));
}

#[test]
fn reassembly_bounds_are_counted() {
    // A request that never ends: dropped at the segment bound, as a cut request.
    let k = key(ip::TCP, C, 40003, S, 80);
    let cfg = L7Config {
        reasm_max_segments: 3,
        reasm_max_flows: 2,
        ..L7Config::default()
    };
    let mut e = Engine::new(cfg);
    let mut seq = 1;
    let mut pkts = Vec::new();
    for part in [
        &b"GET /long HTTP/1.1\r\n"[..],
        b"X-A: 1\r\n",
        b"X-B: 2\r\n",
        b"X-C: 3\r\n",
    ] {
        pkts.push(tcp_pkt(1, k, seq, part));
        seq += part.len() as u32;
    }
    for p in &pkts {
        e.push(p);
    }
    assert_eq!(e.stats().reasm_limit, 1);
    assert_eq!(e.stats().http_truncated, 1);
    // A gap drops the buffer.
    let k2 = key(ip::TCP, C, 40004, S, 80);
    e.push(&tcp_pkt(1, k2, 1, b"GET /gap HTTP/1.1\r\n"));
    e.push(&tcp_pkt(2, k2, 500, b"X: y\r\n\r\n"));
    assert_eq!(e.stats().reasm_gap, 1);
    // Three open buffers with room for two: the oldest goes.
    for (i, port) in [40005u16, 40006, 40007].into_iter().enumerate() {
        e.push(&tcp_pkt(
            10 + i as u64,
            key(ip::TCP, C, port, S, 80),
            1,
            b"GET /open HTTP/1.1\r\n",
        ));
    }
    assert_eq!(e.stats().reasm_evicted, 1);
    assert_eq!(e.reassembling(), 2);
}

#[test]
fn pending_bound_emits_the_oldest_unanswered() {
    let cfg = L7Config {
        max_pending: 2,
        ..L7Config::default()
    };
    let mut e = Engine::new(cfg);
    for (i, port) in [1000u16, 1001, 1002].into_iter().enumerate() {
        e.push(&udp_pkt(
            i as u64,
            key(ip::UDP, C, port, S, 53),
            &dns_msg(1, false, "x.example", 1, &[], 0),
        ));
    }
    let evs = e.take_events();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].key.sport, 1000);
    assert_eq!(e.stats().pending_evicted, 1);
    assert_eq!(e.pending(), 2);
}

#[test]
fn garbage_never_panics_and_is_counted() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut e = Engine::new(L7Config::default());
    let mut n = 0u64;
    for round in 0..3000u32 {
        let len = (rng.next() % 600) as usize;
        let mut payload = rng.bytes(len);
        // Give the detectors something to bite on.
        match round % 5 {
            0 if len > 6 => {
                let (l0, l1) = (payload[3], payload[4]);
                payload[..6].copy_from_slice(&[22, 3, 1, l0, l1, 1]);
            }
            1 if len > 4 => payload[..4].copy_from_slice(b"GET "),
            2 if len > 7 => payload[..7].copy_from_slice(b"HTTP/1."),
            _ => {}
        }
        let port = [53u16, 80, 443, 5353][(round % 4) as usize];
        let k = key(
            if round % 2 == 0 { ip::TCP } else { ip::UDP },
            C,
            30000 + (round % 50) as u16,
            S,
            port,
        );
        let mut p = tcp_pkt(u64::from(round), k, rng.next() as u32, &payload);
        if k.proto == ip::UDP {
            p.tcp = None;
        }
        // Sometimes cut, as the snap length does.
        if round % 3 == 0 {
            p.wire_payload_len += 100;
        }
        e.push(&p);
        n += 1;
        // The parsers directly, too.
        let _ = tls::parse_client_hello(&payload, round % 2 == 0);
        let _ = tls::parse_server_hello(&payload, round % 2 == 0);
        let _ = http::parse_request(&payload, round % 2 == 0);
        let _ = http::parse_status(&payload, round % 2 == 0);
        let _ = dns::parse_message(&payload);
        let _ = dns::parse_tcp(&payload, round % 2 == 0);
    }
    e.flush();
    let _ = e.take_events();
    let s = e.stats();
    assert_eq!(s.packets, n);
    assert!(s.parse_errors() > 0, "{s:?}");
}

// ---- the event's JSON line -------------------------------------------------

#[test]
fn event_json_keys() {
    let k = key(ip::UDP, C, 5555, S, 53);
    let mut e = Engine::new(L7Config::default());
    e.push(&udp_pkt(
        1_700_000_000_123_456_789,
        k,
        &dns_msg(4, false, "j.example", 1, &[], 0),
    ));
    e.push(&udp_pkt(
        1_700_000_000_125_456_789,
        reverse(k),
        &dns_msg(4, true, "j.example", 1, &[[192, 0, 2, 4]], 0),
    ));
    let evs = e.take_events();
    let v = evs[0].to_json("eth0");
    assert_eq!(v["ts"], "2023-11-14T22:13:20.123456789Z");
    assert_eq!(v["device"], "eth0");
    assert_eq!(v["direction"], "ingress");
    assert_eq!(v["src"], "198.18.0.1");
    assert_eq!(v["dst"], "198.18.0.2");
    assert_eq!(
        (
            v["sport"].as_u64(),
            v["dport"].as_u64(),
            v["proto"].as_u64()
        ),
        (Some(5555), Some(53), Some(17))
    );
    assert_eq!(v["kind"], "dns");
    assert_eq!(v["dns_qname"], "j.example");
    assert_eq!(
        (
            v["dns_qtype"].as_u64(),
            v["dns_id"].as_u64(),
            v["dns_rcode"].as_u64()
        ),
        (Some(1), Some(4), Some(0))
    );
    assert_eq!(v["dns_answers"], serde_json::json!(["192.0.2.4"]));
    assert_eq!(v["dns_latency_ms"].as_f64(), Some(2.0));
    // An unanswered HTTP request: no status, no latency, no user agent.
    let mut e = Engine::new(L7Config::default());
    let evs = run(
        &mut e,
        &[tcp_pkt(
            5,
            key(ip::TCP, C, 1, S, 80),
            1,
            b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n",
        )],
    );
    let v = evs[0].to_json("eth1");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    for absent in ["http_status", "http_latency_ms", "http_user_agent"] {
        assert!(!keys.contains(&absent), "{keys:?}");
    }
    assert_eq!(
        (
            v["http_method"].as_str(),
            v["http_url"].as_str(),
            v["http_host"].as_str()
        ),
        (Some("GET"), Some("/x"), Some("h"))
    );
    assert!(evs[0].to_line("eth1").ends_with("}\n"));
}
