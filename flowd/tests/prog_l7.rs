//! Program tests of the L7 selection (issue 12): frames built here run
//! through the real ingress program (`BPF_PROG_TEST_RUN`, with replay
//! metadata for exact times), then the `L7_EVENTS` ring and the exact
//! counters are read back. Needs root.

#[allow(
    dead_code,
    reason = "the helpers are shared with prog.rs; this file uses a part"
)]
mod common;

use common::*;
use flowd_common::{
    DIR_EGRESS, DIR_INGRESS, IfaceCounters,
    counter::{L7_BUDGET, L7_CONTINUATION_LIMIT, L7_RING_FULL},
    l7::{L7_SAMPLE_CONTINUATION, L7_SAMPLE_TCP, L7Control, L7Sample},
};

/// Keeps this thread on one CPU: the copy budget is per CPU.
fn pin_cpu() {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

fn l7_on(h: &mut Harness, budget_per_s: u32, continuation: u32) {
    l7_on_ports(h, budget_per_s, continuation, [53, 5353, 0, 0]);
}

fn l7_on_ports(h: &mut Harness, budget_per_s: u32, continuation: u32, dns_ports: [u16; 4]) {
    h.dp.set_l7(Some(L7Control {
        snap_len: 512,
        budget_per_s,
        continuation,
        _pad: 0,
        dns_ports,
    }))
    .unwrap();
}

/// A TCP segment `sport` -> `dport` with PSH|ACK, sequence `seq` and `payload`.
fn seg_ports(sport: u16, dport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut t = tcp(sport, dport, TCP_PSH | TCP_ACK);
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(payload);
    v4(P_TCP, &t)
}

/// A TCP segment 40000 -> 80 with PSH|ACK, sequence `seq` and `payload`.
fn seg(seq: u32, payload: &[u8]) -> Vec<u8> {
    seg_ports(40000, 80, seq, payload)
}

fn samples(h: &mut Harness) -> Vec<L7Sample> {
    let mut v = Vec::new();
    h.dp.drain_l7(|s| v.push(*s));
    v
}

fn run(h: &Harness, f: &[u8], ts: u64) {
    h.replay(f, f.len() as u32, ts);
}

fn l7_counts(c: &IfaceCounters) -> [u64; 3] {
    [
        c.c[L7_RING_FULL],
        c.c[L7_BUDGET],
        c.c[L7_CONTINUATION_LIMIT],
    ]
}

#[test]
fn off_by_default() {
    let mut h = Harness::new(64);
    run(&h, &seg(1, b"GET / HTTP/1.1\r\n\r\n"), 1_000);
    assert!(samples(&mut h).is_empty());
}

#[test]
fn http_request_is_sampled_with_exact_bytes() {
    pin_cpu();
    let mut h = Harness::new(64);
    l7_on(&mut h, 1_000, 3);
    let req = b"GET /index.html HTTP/1.1\r\nHost: example.test\r\nUser-Agent: t\r\n\r\n";
    run(&h, &seg(7, req), 5_000);
    let s = samples(&mut h);
    assert_eq!(s.len(), 1);
    let s = &s[0];
    assert_eq!(s.ts_ns, 5_000);
    assert_eq!(s.key, key4(P_TCP, 40000, 80));
    assert_eq!(s.direction, DIR_INGRESS);
    assert_eq!(s.flags, L7_SAMPLE_TCP);
    assert_eq!(s.tcp_seq, 7);
    assert_eq!(s.tcp_flags as u16, TCP_PSH | TCP_ACK);
    assert_eq!(s.wire_len as usize, req.len());
    assert_eq!(s.cap_len as usize, req.len());
    assert_eq!(&s.payload[..req.len()], req);
    // A status line is selected too; the engine's packet carries the bytes.
    let resp = b"HTTP/1.1 200 OK\r\n\r\n";
    run(&h, &seg(100, resp), 6_000);
    let s = samples(&mut h);
    assert_eq!(s.len(), 1);
    let p = flowd::loader::l7_packet(&s[0], 6_000);
    assert_eq!(&p.payload[..], resp);
    assert_eq!(p.tcp.unwrap().seq, 100);
    assert_eq!(l7_counts(&h.ingress()), [0, 0, 0]);
}

#[test]
fn non_l7_tcp_is_not_sampled() {
    pin_cpu();
    let mut h = Harness::new(64);
    l7_on(&mut h, 1_000, 3);
    run(&h, &seg(1, b"hello, this is not HTTP at all"), 1_000);
    run(&h, &seg(2, b"GETX / HTTP/1.1\r\n"), 2_000);
    run(&h, &v4(P_TCP, &tcp(40000, 80, TCP_ACK)), 3_000);
    assert!(samples(&mut h).is_empty());
    // DNS by port, over UDP: selected.
    run(&h, &v4(P_UDP, &udp(40000, 53, 30)), 4_000);
    let s = samples(&mut h);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].flags, 0);
    assert_eq!(s[0].cap_len, 30);
}

#[test]
fn client_hello_split_over_segments_is_continued() {
    pin_cpu();
    let mut h = Harness::new(64);
    l7_on(&mut h, 1_000, 3);
    // A TLS record header (handshake, TLS 1.0 record version, 1,800 bytes)
    // and the ClientHello type; the rest of the record follows.
    let mut first = vec![22, 3, 1, 0x07, 0x08, 1, 0, 0x07, 0x04];
    first.resize(1_000, 0xab);
    run(&h, &seg(1, &first), 1_000);
    run(&h, &seg(1_001, &[0xcd; 800]), 2_000);
    let s = samples(&mut h);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].flags, L7_SAMPLE_TCP);
    assert_eq!(s[0].wire_len, 1_000);
    assert_eq!(s[0].cap_len, 512);
    assert_eq!(&s[0].payload[..512], &first[..512]);
    assert_eq!(s[1].flags, L7_SAMPLE_TCP | L7_SAMPLE_CONTINUATION);
    assert_eq!(s[1].tcp_seq, 1_001);
    assert_eq!(s[1].cap_len, 512);
    // Two more continuation segments, then the mark is spent: the next
    // segment is not copied and counts once.
    for i in 0..4 {
        run(&h, &seg(2_000 + i * 10, &[0xee; 10]), 3_000 + u64::from(i));
    }
    let s = samples(&mut h);
    assert_eq!(s.len(), 2);
    assert!(s.iter().all(|s| s.flags & L7_SAMPLE_CONTINUATION != 0));
    assert_eq!(l7_counts(&h.ingress()), [0, 0, 1]);
}

#[test]
fn budget_counts_exactly() {
    pin_cpu();
    let mut h = Harness::new(64);
    l7_on(&mut h, 2, 0);
    for i in 0..5 {
        run(
            &h,
            &seg(i * 100, b"GET / HTTP/1.1\r\n\r\n"),
            1_000 + u64::from(i),
        );
    }
    assert_eq!(samples(&mut h).len(), 2);
    assert_eq!(l7_counts(&h.ingress()), [0, 3, 0]);
    // A second later, a new window.
    run(&h, &seg(900, b"GET / HTTP/1.1\r\n\r\n"), 2_000_000_000);
    assert_eq!(samples(&mut h).len(), 1);
    assert_eq!(l7_counts(&h.ingress()), [0, 3, 0]);
}

/// An AF_XDP worker's frames (replay metadata with timestamp 0: live,
/// held by user space) are not limited by the per-CPU copy budget.
#[test]
fn afxdp_frames_are_not_budgeted() {
    pin_cpu();
    let mut h = Harness::new(64);
    l7_on(&mut h, 2, 0);
    for i in 0..5 {
        run(&h, &seg(i * 100, b"GET / HTTP/1.1\r\n\r\n"), 0);
    }
    let s = samples(&mut h);
    assert_eq!(s.len(), 5);
    assert!(
        s.iter().all(|s| s.ts_ns != 0),
        "the kernel clock stamps them"
    );
    assert_eq!(l7_counts(&h.ingress()), [0, 0, 0]);
    // The budget still holds for a capture's frames on the same CPU.
    for i in 0..5 {
        run(
            &h,
            &seg(1_000 + i * 100, b"GET / HTTP/1.1\r\n\r\n"),
            1_000 + u64::from(i),
        );
    }
    assert_eq!(samples(&mut h).len(), 2);
    assert_eq!(l7_counts(&h.ingress()), [0, 3, 0]);
}

#[test]
fn ring_full_counts_exactly() {
    pin_cpu();
    let mut h = Harness::new(64);
    l7_on(&mut h, 1_000_000, 0);
    let n = 7_200u32;
    for i in 0..n {
        run(&h, &seg(i * 100, b"GET / HTTP/1.1\r\n\r\n"), 1_000);
    }
    let taken = samples(&mut h).len() as u64;
    let [full, budget, cont] = l7_counts(&h.ingress());
    assert!(full > 0, "the ring should have filled: {taken} taken");
    assert_eq!(taken + full, u64::from(n));
    assert_eq!((budget, cont), (0, 0));
}

#[test]
fn switched_off_again_takes_nothing() {
    pin_cpu();
    let mut h = Harness::new(64);
    let get = b"GET / HTTP/1.1\r\n\r\n";
    l7_on(&mut h, 1_000, 3);
    run(&h, &seg(1, get), 1_000);
    assert_eq!(samples(&mut h).len(), 1);
    h.dp.set_l7(None).unwrap();
    run(&h, &seg(100, get), 2_000);
    run(&h, &v4(P_UDP, &udp(40000, 53, 30)), 3_000);
    assert!(samples(&mut h).is_empty());
    l7_on(&mut h, 1_000, 3);
    run(&h, &seg(200, get), 4_000);
    assert_eq!(samples(&mut h).len(), 1);
    assert_eq!(l7_counts(&h.ingress()), [0, 0, 0]);
}

/// DNS is selected by port whatever its first byte (over TCP a length,
/// which the content pre-check would turn away), on the configured
/// ports too; a neighbouring port is not.
#[test]
fn dns_by_port_whatever_the_first_byte() {
    pin_cpu();
    let mut h = Harness::new(64);
    l7_on_ports(&mut h, 1_000, 3, [53, 5353, 5300, 0]);
    let mut msg = vec![0, 28];
    msg.resize(30, 0x11);
    run(&h, &seg_ports(40001, 53, 9, &msg), 1_000);
    run(&h, &v4(P_UDP, &udp(40002, 5300, 20)), 2_000);
    run(&h, &v4(P_UDP, &udp(5353, 5353, 12)), 3_000);
    run(&h, &v4(P_UDP, &udp(40003, 5301, 20)), 4_000);
    run(&h, &seg_ports(40004, 5301, 9, &msg), 5_000);
    let s = samples(&mut h);
    let got: Vec<_> = s
        .iter()
        .map(|s| (s.key.dport, s.flags, s.cap_len))
        .collect();
    assert_eq!(got, [(53, L7_SAMPLE_TCP, 30), (5300, 0, 20), (5353, 0, 12)]);
}

/// Payloads the selection cannot read 8 bytes of, or whose first byte
/// could start L7 but the rest does not: nothing, and nothing counted.
#[test]
fn short_and_near_miss_payloads_are_not_sampled() {
    pin_cpu();
    let mut h = Harness::new(64);
    l7_on(&mut h, 1_000, 3);
    for (i, p) in [
        &b"GET"[..],
        b"GET /",
        b"HTTP/2.0 200",
        b"\x16\x03\x01\x00\x10\x04xx",
        b"Hello there",
    ]
    .iter()
    .enumerate()
    {
        run(&h, &seg(i as u32 * 100, p), 1_000 + i as u64);
    }
    assert!(samples(&mut h).is_empty());
    assert_eq!(l7_counts(&h.ingress()), [0, 0, 0]);
}

#[test]
fn egress_selects_by_the_same_rules() {
    pin_cpu();
    let mut h = Harness::new(64);
    l7_on(&mut h, 1_000, 3);
    let req = b"POST /api HTTP/1.1\r\nHost: a.test\r\n\r\n";
    h.tc(&seg(5, b"\x17\x03\x03\x00\x20 application data"));
    h.tc(&seg(6, req));
    let s = samples(&mut h);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].direction, DIR_EGRESS);
    assert_eq!(s[0].tcp_seq, 6);
    assert_eq!(&s[0].payload[..req.len()], req);
    assert_eq!(l7_counts(&h.egress()), [0, 0, 0]);
}

/// The programs know 53, 5353 and two more DNS ports; a third is refused,
/// not silently missed, and the settings stay as they were.
#[test]
fn more_than_two_extra_dns_ports_are_refused() {
    pin_cpu();
    let mut h = Harness::new(64);
    l7_on(&mut h, 1_000, 3);
    let err =
        h.dp.set_l7(Some(L7Control {
            snap_len: 512,
            budget_per_s: 1_000,
            continuation: 3,
            _pad: 0,
            dns_ports: [5300, 5301, 5302, 0],
        }))
        .unwrap_err();
    assert!(err.to_string().contains("at most 2"), "{err}");
    run(&h, &v4(P_UDP, &udp(40000, 53, 30)), 1_000);
    assert_eq!(samples(&mut h).len(), 1);
}
