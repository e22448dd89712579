//! The signals on hand-made events: exact counts, thresholds, windows,
//! expiry and every bound. The builders are shared with the metrics tests.

use flowd_common::{DIR_EGRESS, FlowKey, ipv4_mapped, proto::ip};

use super::*;
use crate::l7::{DnsInfo, HttpInfo, TlsInfo};

pub(crate) const T0: u64 = 1_700_000_000 * SEC;

pub(crate) fn key(proto: u8, src: [u8; 4], dst: [u8; 4], dport: u16) -> FlowKey {
    FlowKey {
        ifindex: 2,
        vlan: 0,
        direction: DIR_EGRESS,
        proto,
        src: ipv4_mapped(src),
        dst: ipv4_mapped(dst),
        sport: 40_000,
        dport,
    }
}

pub(crate) fn event(key: FlowKey, latency_ns: Option<u64>, detail: Detail) -> L7Event {
    L7Event {
        ts_ns: T0,
        key,
        direction: key.direction,
        latency_ns,
        detail,
    }
}

/// A DNS query from `client` to 198.18.0.53 with this name and rcode.
pub(crate) fn dns(client: u8, qname: &str, rcode: Option<u8>) -> L7Event {
    event(
        key(ip::UDP, [198, 18, 0, client], [198, 18, 0, 53], 53),
        rcode.map(|_| 1_000_000),
        Detail::Dns(DnsInfo {
            id: 1,
            qname: Some(qname.into()),
            qtype: Some(1),
            rcode,
            answers: Vec::new(),
        }),
    )
}

/// A plain-HTTP request from `client` to port `dport` with this Host.
pub(crate) fn http(client: u8, dport: u16, host: &str, status: Option<u16>) -> L7Event {
    event(
        key(ip::TCP, [198, 18, 0, client], [198, 18, 0, 80], dport),
        status.map(|_| 2_000_000),
        Detail::Http(HttpInfo {
            method: "GET".into(),
            url: "/".into(),
            host: Some(host.into()),
            user_agent: None,
            status,
        }),
    )
}

/// A ClientHello from `client` to port `dport` with this SNI.
pub(crate) fn tls(client: u8, dport: u16, sni: Option<&str>, version: Option<u16>) -> L7Event {
    event(
        key(ip::TCP, [198, 18, 0, client], [198, 18, 0, 43], dport),
        version.map(|_| 3_000_000),
        Detail::Tls(TlsInfo {
            sni: sni.map(Into::into),
            version,
            ..TlsInfo::default()
        }),
    )
}

fn nxdomain(client: u8, n: usize) -> Vec<L7Event> {
    (0..n)
        .map(|i| dns(client, &format!("q{i}.example"), Some(3)))
        .collect()
}

fn idx(s: Signal) -> usize {
    s as usize
}

#[test]
fn entropy_and_tunnel_names() {
    assert_eq!(entropy(b""), 0.0);
    assert_eq!(entropy(b"aaaa"), 0.0);
    assert_eq!(entropy(b"aAbB"), 1.0, "case folded");
    assert_eq!(entropy(b"abcd"), 2.0);
    assert_eq!(entropy(b"0123456789abcdef"), 4.0);
    assert!(!tunnel_name("www.example.com"));
    // 32 hex digits, each twice: 4 bits per character, over 3.5.
    assert!(tunnel_name(
        "0123456789abcdef.0123456789abcdef.t.example.com"
    ));
    // The same length in one repeated letter: no entropy.
    assert!(!tunnel_name(&format!("{}.example.com", "a".repeat(32))));
    // 31 high-entropy characters are not enough.
    assert!(!tunnel_name("0123456789abcdef0123456789abcde.example.com"));
    // The last two labels do not count, however random.
    assert!(!tunnel_name("x.0123456789abcdef0123456789abcdef.com"));
    // Longer than 100 characters, whatever its letters.
    let long = format!("b{}example.com", "a.".repeat(44));
    assert_eq!(long.len(), 100);
    assert!(!tunnel_name(&long));
    assert!(tunnel_name(&format!("a{long}")));
    // IPv6 reverse names: 32 hex digits, not a tunnel.
    assert!(!tunnel_name(
        "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa"
    ));
    assert!(!tunnel_name(&format!("{}IP6.ARPA.", "a.".repeat(60))));
    assert!(tunnel_name(&format!("{}.notarpa", "a".repeat(100))));
    assert!(!tunnel_name("arpa"));
    assert_eq!(host_name("Secure.Example.COM:8080"), "secure.example.com");
    assert_eq!(host_name("example.com."), "example.com");
    assert_eq!(host_name("[2001:db8::1]:80"), "2001:db8::1");
}

#[test]
fn nxdomain_over_the_threshold_flags_the_client_once() {
    let mut d = L7Signals::default();
    // Client .1: exactly the threshold (20) in the window: not a suspect.
    d.observe(&nxdomain(1, 20), T0);
    // Client .2: 25 answered queries and 5 NXDOMAIN: not a suspect.
    let mut ok: Vec<L7Event> = (0..25)
        .map(|i| dns(2, &format!("n{i}.example"), Some(0)))
        .collect();
    ok.extend(nxdomain(2, 5));
    d.observe(&ok, T0 + SEC);
    assert!(d.suspects().is_empty());
    assert_eq!(d.snapshot().events[idx(Signal::DnsNxdomain)], 25);
    // The 21st NXDOMAIN of .1 in the window flags it.
    d.observe(&nxdomain(1, 1), T0 + 2 * SEC);
    let s = d.suspects();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].src, "198.18.0.1");
    assert_eq!(s[0].signal, "dns_nxdomain");
    assert_eq!(s[0].attempts, 21);
    assert_eq!(s[0].detail.as_deref(), Some("q0.example"));
    assert_eq!(s[0].first_flagged_ns, T0 + 2 * SEC);
    // More of them update the suspect, not the flagged count.
    d.observe(&nxdomain(1, 4), T0 + 3 * SEC);
    let snap = d.snapshot();
    assert_eq!(snap.events[idx(Signal::DnsNxdomain)], 30);
    assert_eq!(snap.flagged[idx(Signal::DnsNxdomain)], 1);
    assert_eq!(snap.suspects[idx(Signal::DnsNxdomain)], 1);
    assert_eq!(d.suspects()[0].attempts, 25);
    assert_eq!(d.suspects()[0].last_seen_ns, T0 + 3 * SEC);
    // A new window starts from zero: 20 more do not flag .2.
    d.observe(&nxdomain(2, 20), T0 + 61 * SEC);
    assert_eq!(d.suspects().len(), 1);
    // The suspect goes 600 s after its last event.
    d.observe(&[], T0 + 602 * SEC);
    assert_eq!(d.suspects().len(), 1);
    d.observe(&[], T0 + 603 * SEC);
    assert!(d.suspects().is_empty());
    assert_eq!(d.snapshot().suspects, [0; 5]);
    assert_eq!(d.snapshot().flagged[idx(Signal::DnsNxdomain)], 1);
}

#[test]
fn tunnel_names_flag_after_ten() {
    let mut d = L7Signals::default();
    let q = |i: usize| {
        dns(
            7,
            &format!("{i:02}456789abcdef0123456789abcdef01.t.example.com"),
            None,
        )
    };
    d.observe(&(0..10).map(q).collect::<Vec<_>>(), T0);
    assert!(d.suspects().is_empty());
    d.observe(&[q(10), dns(7, "www.example.com", Some(0))], T0 + SEC);
    let s = d.suspects();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].signal, "dns_tunnel");
    assert_eq!(s[0].attempts, 11);
    assert_eq!(
        s[0].detail.as_deref(),
        Some("10456789abcdef0123456789abcdef01.t.example.com")
    );
    assert_eq!(d.snapshot().events[idx(Signal::DnsTunnel)], 11);
}

#[test]
fn plain_http_to_a_tls_host_unless_redirected() {
    let mut d = L7Signals::new(SignalConfig {
        thresholds: [0; 5],
        ..SignalConfig::default()
    });
    // Before any TLS to it, plain HTTP to the host is no signal.
    d.observe(&[http(1, 80, "secure.example.com", Some(200))], T0);
    assert_eq!(d.snapshot().events, [0; 5]);
    d.observe(
        &[
            tls(2, 443, Some("Secure.Example.com."), Some(0x0304)),
            // Redirected to HTTPS: the usual upgrade.
            http(1, 80, "secure.example.com", Some(301)),
            // Another host.
            http(1, 80, "plain.example.com", Some(200)),
            // The TLS host, port in Host, no response yet.
            http(3, 8080, "SECURE.example.com:8080", None),
            http(3, 80, "secure.example.com", Some(200)),
        ],
        T0 + SEC,
    );
    let snap = d.snapshot();
    assert_eq!(snap.events[idx(Signal::HttpToTlsHost)], 2);
    assert_eq!(snap.events[idx(Signal::TlsUnusualPort)], 0, "443");
    let s = d.suspects();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].src, "198.18.0.3");
    assert_eq!(s[0].attempts, 2);
    assert_eq!(s[0].detail.as_deref(), Some("secure.example.com"));
}

#[test]
fn tls_off_its_ports_and_http_on_443() {
    let mut d = L7Signals::default();
    let mut evs = vec![
        tls(1, 443, Some("a.example"), Some(0x0304)),
        tls(1, 993, Some("imap.example"), Some(0x0303)),
        tls(1, 8443, None, None),
    ];
    evs.extend((0..11).map(|_| tls(4, 4444, Some("c2.example"), None)));
    evs.push(tls(5, 80, None, Some(0x0303)));
    evs.push(http(6, 443, "tunnel.example", Some(200)));
    d.observe(&evs, T0);
    let snap = d.snapshot();
    assert_eq!(snap.events[idx(Signal::TlsUnusualPort)], 12);
    assert_eq!(snap.events[idx(Signal::HttpOn443)], 1);
    let s = d.suspects();
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(
        (s[0].src.as_str(), s[0].signal, s[0].attempts),
        ("198.18.0.4", "tls_unusual_port", 11)
    );
    assert_eq!(s[0].detail.as_deref(), Some("c2.example port 4444"));
    // The first HTTP request to 443 is enough (threshold 0).
    assert_eq!(
        (s[1].src.as_str(), s[1].signal, s[1].attempts),
        ("198.18.0.6", "http_on_443", 1)
    );
    assert_eq!(s[1].detail.as_deref(), Some("tunnel.example"));
    // .5's one handshake on port 80 is under the threshold of 10.
    assert_eq!(snap.suspects, [0, 0, 0, 1, 1]);
}

#[test]
fn clients_beyond_the_bound_drop_the_quietest() {
    let mut d = L7Signals::new(SignalConfig {
        thresholds: [2, 0, 0, 0, 0],
        max_clients: 10,
        ..SignalConfig::default()
    });
    // Clients .1-.10 one NXDOMAIN each, a second apart; .10 has two.
    for c in 1..=10u8 {
        d.observe(&nxdomain(c, 1), T0 + u64::from(c) * SEC);
    }
    d.observe(&nxdomain(10, 1), T0 + 11 * SEC);
    assert_eq!(d.snapshot().dropped, [0; 3]);
    // An eleventh client drops two (down to nine with it): the quietest
    // and oldest, .1 and .2.
    d.observe(&nxdomain(11, 1), T0 + 12 * SEC);
    assert_eq!(d.snapshot().dropped, [2, 0, 0]);
    // .1 starts again from zero: two more are not over 2; .3 kept its one.
    d.observe(&[nxdomain(1, 2), nxdomain(3, 2)].concat(), T0 + 13 * SEC);
    let s = d.suspects();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!((s[0].src.as_str(), s[0].attempts), ("198.18.0.3", 3));
    assert_eq!(d.snapshot().dropped, [2, 0, 0], ".1 came back into room");
    // The next new client evicts again: of those with one event, the
    // oldest, .4 and .5 (.1 and .10 have two, .3 three).
    d.observe(&nxdomain(12, 1), T0 + 14 * SEC);
    assert_eq!(d.snapshot().dropped, [4, 0, 0]);
    d.observe(&[nxdomain(4, 3), nxdomain(6, 2)].concat(), T0 + 15 * SEC);
    let s: Vec<_> = d
        .suspects()
        .into_iter()
        .map(|s| (s.src, s.attempts))
        .collect();
    assert_eq!(
        s,
        [
            ("198.18.0.3".to_owned(), 3),
            ("198.18.0.4".to_owned(), 3),
            ("198.18.0.6".to_owned(), 3)
        ],
        ".4 counted from zero, .6 from its one"
    );
}

#[test]
fn tls_hosts_and_suspects_are_bounded() {
    let mut d = L7Signals::new(SignalConfig {
        thresholds: [0; 5],
        max_tls_hosts: 10,
        max_suspects: 2,
        ..SignalConfig::default()
    });
    for i in 0..11u64 {
        d.observe(
            &[tls(1, 443, Some(&format!("h{i}.example")), None)],
            T0 + i * SEC,
        );
    }
    assert_eq!(d.snapshot().dropped, [0, 2, 0], "h0 and h1 dropped");
    d.observe(
        &[
            http(2, 80, "h0.example", None),
            http(3, 80, "h1.example", None),
            http(4, 80, "h2.example", None),
            http(5, 80, "h10.example", None),
            http(6, 80, "h3.example", None),
        ],
        T0 + 20 * SEC,
    );
    let snap = d.snapshot();
    assert_eq!(snap.events[idx(Signal::HttpToTlsHost)], 3);
    // Three clients crossed the threshold; two are kept, one dropped.
    assert_eq!(snap.flagged[idx(Signal::HttpToTlsHost)], 2);
    assert_eq!(snap.suspects[idx(Signal::HttpToTlsHost)], 2);
    assert_eq!(snap.dropped, [0, 2, 1]);
    let srcs: Vec<_> = d.suspects().into_iter().map(|s| s.src).collect();
    assert_eq!(srcs, ["198.18.0.4", "198.18.0.5"]);
}

#[test]
fn detail_is_cut_on_a_character_boundary() {
    let mut d = L7Signals::default();
    let host = "é".repeat(100);
    d.observe(&[http(1, 443, &host, None)], T0);
    let s = d.suspects();
    assert_eq!(s[0].detail.as_deref(), Some("é".repeat(64).as_str()));
}

#[test]
fn suspect_json_keeps_the_scan_keys() {
    let mut d = L7Signals::default();
    d.observe(&[http(1, 443, "tunnel.example", None)], T0);
    let v = serde_json::to_value(&d.suspects()[0]).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "src": "198.18.0.1",
            "ports": 0,
            "hosts": 0,
            "attempts": 1,
            "first_flagged_ns": T0,
            "last_seen_ns": T0,
            "signal": "http_on_443",
            "detail": "tunnel.example",
        })
    );
}
