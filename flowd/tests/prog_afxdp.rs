//! Program tests of the AF_XDP program (`flowd_afxdp`, issue 13): it
//! loads (passes the verifier) and counts every frame per (slot, RX queue)
//! before its redirect; without a socket in the map it passes the frame
//! and counts it as `no_socket`. The redirect to a live socket is tested
//! in `afxdp_live.rs`. Needs root.

#[allow(
    dead_code,
    reason = "the helpers are shared with prog.rs; this file uses a part"
)]
mod common;

use common::*;
use flowd::sys::{self, XdpMd};
use flowd_common::afxdp::AfXdpCounts;

/// Runs `flowd_afxdp` once on `frame` as if it came in on (`ifindex`,
/// `queue`); returns its verdict.
fn run(h: &mut Harness, frame: &[u8], ifindex: u32, queue: u32) -> u32 {
    let fd = h.dp.afxdp_fd().expect("flowd_afxdp loads");
    let ctx = XdpMd {
        data: 0,
        data_end: frame.len() as u32,
        ingress_ifindex: ifindex,
        rx_queue_index: queue,
        ..Default::default()
    };
    sys::xdp_test_run_ctx(fd, frame, ctx, 1)
        .expect("XDP test run")
        .retval
}

#[test]
fn afxdp_counts_every_frame_and_passes_it_without_a_socket() {
    let mut h = Harness::new(1024);
    let frames = [
        v4(P_UDP, &udp(1000, 53, 10)),
        v4(P_TCP, &tcp(40000, 80, TCP_SYN)),
        v6(P_UDP, &udp(5353, 5353, 200)),
        l2(&[], ETH_ARP),
    ];
    let mut bytes = 0;
    for f in &frames {
        assert_eq!(run(&mut h, f, LO, 0), XDP_PASS, "no socket: passed");
        bytes += f.len() as u64;
    }
    assert_eq!(
        h.dp.afxdp_counts(SLOT, 0).unwrap(),
        AfXdpCounts {
            frames: 4,
            bytes,
            no_socket: 4,
            _reserved: 0,
        }
    );
    // Nothing in the other queues' or slots' entries.
    assert_eq!(h.dp.afxdp_counts(SLOT, 1).unwrap(), AfXdpCounts::default());
    assert_eq!(h.dp.afxdp_counts(0, 0).unwrap(), AfXdpCounts::default());
    // The program only counts and redirects: no flow, no totals.
    assert_eq!(h.ingress(), counters(&[]));
    assert!(h.drain().is_empty());
}

#[test]
fn afxdp_counts_an_unassigned_interface_in_slot_zero() {
    let mut h = Harness::without_slot(1024);
    let f = v4(P_UDP, &udp(1, 2, 3));
    for _ in 0..3 {
        assert_eq!(run(&mut h, &f, LO, 0), XDP_PASS);
    }
    let c = h.dp.afxdp_counts(0, 0).unwrap();
    assert_eq!((c.frames, c.bytes, c.no_socket), (3, 3 * f.len() as u64, 3));
    assert_eq!(c.redirected(), 0);
}

#[test]
fn afxdp_program_stays_a_few_instructions() {
    let mut h = Harness::new(1024);
    let fd = h.dp.afxdp_fd().expect("flowd_afxdp loads");
    let (xlated, processed) = sys::prog_verifier_work(fd).expect("program info");
    // Counting and a redirect: no parser, no flow map.
    assert!(xlated < 100, "{xlated} instructions");
    assert!(processed < 200, "the verifier processed {processed}");
}
