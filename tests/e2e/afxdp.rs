//! AF_XDP capture (issue 13) on a veth pair: frames sent from one
//! namespace into the other reach flowd's AF_XDP sockets (veth: copy
//! mode), run through the same parser as the in-kernel path, and every
//! frame is accounted exactly: frames the kernel counted = frames parsed +
//! the sockets' own drops, and each flow has its packets and bytes.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use flowd::{
    afxdp::{AfXdpCapture, QueueView, XskMode},
    loader::Datapath,
};
use flowd_common::{DIR_INGRESS, FlowKey, FlowStats, counter, ipv4_mapped, proto};
use flowd_tests::{
    Link,
    packet::{syn_frame, udp_frame},
};

use crate::prometheus::send_frames;

/// Waits (at most 10 s) until the workers have taken every frame the
/// kernel counted off their rings.
fn settle(cap: &AfXdpCapture, dp: &Datapath, sent: u64) -> Vec<QueueView> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = cap.view(dp);
        let done: u64 = view
            .iter()
            .map(|q| q.worker.parsed + q.worker.failed + q.worker.xsk.lost())
            .sum();
        if done >= sent || Instant::now() >= deadline {
            return view;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn afxdp_worker_accounts_every_frame_of_each_flow_exactly() {
    let link = Link::new();
    let ends = link.ipv4_a_to_b();
    // Three flows, 6,000 frames of 60 bytes, interleaved.
    let flows: [(u8, u16, u16, u64); 3] = [
        (proto::ip::UDP, 40_000, 53, 3_000),
        (proto::ip::UDP, 40_001, 53, 2_000),
        (proto::ip::TCP, 40_002, 80, 1_000),
    ];
    let mut frames = Vec::new();
    for i in 0..3_000u64 {
        for &(p, sport, dport, n) in &flows {
            if i < n {
                frames.push(if p == proto::ip::TCP {
                    syn_frame(&ends, sport, dport)
                } else {
                    udp_frame(&ends, sport, dport)
                });
            }
        }
    }
    let sent = frames.len() as u64;
    assert_eq!(sent, 6_000);

    let if_b = link.if_b.clone();
    let (mut dp, cap) = link
        .b
        .run_scoped(|| {
            let mut dp = Datapath::load(1 << 14)?;
            let cap = AfXdpCapture::start(&mut dp, &if_b, None)?;
            Ok((dp, cap))
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (slot, ifindex) = (cap.slot, cap.ifindex);
    // In rounds of fewer frames than the fill ring holds, each taken off
    // the ring before the next: no frame can be lost, however slow the
    // (unoptimised) worker is. Overload and loss are another test.
    let mut so_far = 0;
    for round in frames.chunks(1_000) {
        so_far += round.len() as u64;
        send_frames(&link.a, &link.if_a, round.to_vec());
        settle(&cap, &dp, so_far);
    }
    let live = settle(&cap, &dp, sent);
    let view = cap.stop(&mut dp);

    // One RX queue on a default veth; copy mode (veth has no zero-copy).
    assert_eq!(view.len(), 1, "{view:#?}");
    let q = &view[0];
    assert_eq!(q.mode, XskMode::Copy);
    assert_eq!(q.kernel.frames, sent, "kernel count: {q:#?}");
    assert_eq!(q.kernel.bytes, sent * 60);
    assert_eq!(q.kernel.no_socket, 0);
    assert_eq!(
        q.unaccounted(),
        0,
        "kernel = parsed + failed + lost: {q:#?}"
    );
    assert_eq!((q.worker.failed, q.worker.xsk.lost()), (0, 0), "{q:#?}");
    assert_eq!(q.worker.parsed, sent);
    assert_eq!(q.worker.parsed_bytes, sent * 60);
    assert!(q.worker.test_runs >= sent / 60, "batched: {q:#?}");
    assert_eq!(live[0].worker.parsed, sent, "all parsed before the stop");

    // The parser's exact totals for the interface's slot, as on the
    // in-kernel path.
    let rx = dp.totals(slot, DIR_INGRESS).unwrap();
    assert_eq!(rx.c[counter::PACKETS], sent);
    assert_eq!(rx.c[counter::BYTES], sent * 60);
    assert_eq!(rx.c[counter::OUT_FLOW], sent);

    let mut got = BTreeMap::<FlowKey, FlowStats>::new();
    dp.drain_all(|k, v| {
        got.entry(*k).or_default().merge(v);
    })
    .unwrap();
    assert_eq!(got.len(), flows.len(), "{got:#?}");
    for &(p, sport, dport, n) in &flows {
        let key = FlowKey {
            ifindex,
            vlan: 0,
            direction: DIR_INGRESS,
            proto: p,
            src: ipv4_mapped(ends.src),
            dst: ipv4_mapped(ends.dst),
            sport,
            dport,
        };
        let s = got
            .get(&key)
            .unwrap_or_else(|| panic!("no flow {key:?}: {got:#?}"));
        assert_eq!((s.counts.packets, s.counts.bytes), (n, n * 60), "{key:?}");
        if p == proto::ip::TCP {
            assert_eq!(s.counts.syn as u64, n);
        }
    }
}
