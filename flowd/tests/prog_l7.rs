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
    DIR_INGRESS, IfaceCounters,
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
    h.dp.set_l7(Some(L7Control {
        snap_len: 512,
        budget_per_s,
        continuation,
        _pad: 0,
        dns_ports: [53, 5353, 0, 0],
    }))
    .unwrap();
}

/// A TCP segment 40000 -> 80 with PSH|ACK, sequence `seq` and `payload`.
fn seg(seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut t = tcp(40000, 80, TCP_PSH | TCP_ACK);
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(payload);
    v4(P_TCP, &t)
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
