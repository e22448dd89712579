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
    Flowd, Link, has_xdp, metric,
    packet::{Ipv4Ends, syn_frame, udp_frame},
    read_records,
    wait::{self, metric_reaches},
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

/// Three flows, 6,000 frames of 60 bytes, interleaved: (proto, sport,
/// dport, frames).
const FLOWS: [(u8, u16, u16, u64); 3] = [
    (proto::ip::UDP, 40_000, 53, 3_000),
    (proto::ip::UDP, 40_001, 53, 2_000),
    (proto::ip::TCP, 40_002, 80, 1_000),
];
const SENT: u64 = 6_000;

fn frames(ends: &Ipv4Ends) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for i in 0..3_000u64 {
        for &(p, sport, dport, n) in &FLOWS {
            if i < n {
                frames.push(if p == proto::ip::TCP {
                    syn_frame(ends, sport, dport)
                } else {
                    udp_frame(ends, sport, dport)
                });
            }
        }
    }
    assert_eq!(frames.len() as u64, SENT);
    frames
}

#[test]
fn afxdp_worker_accounts_every_frame_of_each_flow_exactly() {
    let link = Link::new();
    let ends = link.ipv4_a_to_b();
    let flows = FLOWS;
    let frames = frames(&ends);
    let sent = SENT;

    let if_b = link.if_b.clone();
    let (mut dp, cap) = link
        .b
        .run_scoped(|| {
            let mut dp = Datapath::load(1 << 14)?;
            let cap = AfXdpCapture::start(&mut dp, &if_b, None, 2048)?;
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
    let view = cap.stop(&mut dp, flowd::drain::grace_period);

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

#[test]
fn flowd_run_af_xdp_counts_each_flow_exactly_in_metrics_and_records() {
    let tmp = flowd_tests::TempDir::new("flowd-afxdp");
    let records = tmp.path().join("flows.jsonl");
    let link = Link::new();
    let ends = link.ipv4_a_to_b();
    // --af-xdp alone: no --iface, no in-kernel path anywhere.
    let mut flowd = Flowd::start(
        &link.b,
        &[
            "--af-xdp",
            &link.if_b,
            "--drain-interval-ms",
            "100",
            "--records",
            records.to_str().unwrap(),
        ],
    );
    // `ss --xdp` cannot list the sockets on this kernel (no
    // CONFIG_XDP_SOCKETS_DIAG); the program that feeds them is visible.
    assert!(has_xdp(&link.b, &link.if_b), "AF_XDP program attached");
    let dev = [("device", link.if_b.as_str()), ("queue", "0")];
    let mut so_far = 0;
    // Rounds smaller than the fill ring, each taken off the ring before
    // the next (see the library test): no loss however slow the worker.
    for round in frames(&ends).chunks(1_000) {
        so_far += round.len() as u64;
        send_frames(&link.a, &link.if_a, round.to_vec());
        metric_reaches(
            &link.b,
            &flowd,
            "flowd_af_xdp_parsed_frames_total",
            &dev,
            so_far as f64,
        );
    }
    let text = metric_reaches(
        &link.b,
        &flowd,
        "flowd_receive_packets_total",
        &[("device", link.if_b.as_str())],
        SENT as f64,
    );
    let m = |name: &str, labels: &[(&str, &str)]| {
        metric(&text, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?}:\n{text}"))
    };
    assert_eq!(m("flowd_af_xdp_frames_total", &dev), SENT as f64);
    assert_eq!(m("flowd_af_xdp_bytes_total", &dev), (SENT * 60) as f64);
    assert_eq!(m("flowd_af_xdp_parsed_frames_total", &dev), SENT as f64);
    assert_eq!(m("flowd_af_xdp_no_socket_frames_total", &dev), 0.0);
    assert_eq!(m("flowd_af_xdp_parse_failed_frames_total", &dev), 0.0);
    for reason in ["dropped", "ring_full", "invalid_desc"] {
        let l = [dev[0], dev[1], ("reason", reason)];
        assert_eq!(m("flowd_af_xdp_socket_dropped_frames_total", &l), 0.0);
    }
    let mode = [dev[0], dev[1], ("mode", "copy")];
    assert_eq!(m("flowd_af_xdp_mode", &mode), 1.0);
    let d = [("device", link.if_b.as_str())];
    assert_eq!(m("flowd_receive_packets_total", &d), SENT as f64);
    assert_eq!(m("flowd_receive_bytes_total", &d), (SENT * 60) as f64);

    assert_eq!(flowd.stop(), Some(0), "log:\n{}", flowd.log_text());
    assert!(!has_xdp(&link.b, &link.if_b), "program detached on exit");
    // Every flow ended at the stop, with its exact packets and bytes.
    let recs = wait::until(
        "the records of the three flows",
        wait::DEADLINE,
        || read_records(&records),
        |r| r.len() >= FLOWS.len(),
    );
    assert_eq!(recs.len(), FLOWS.len(), "{recs:#?}");
    for &(p, sport, dport, n) in &FLOWS {
        let r = recs
            .iter()
            .find(|r| r["sport"] == sport && r["dport"] == dport)
            .unwrap_or_else(|| panic!("no record of {sport}->{dport}: {recs:#?}"));
        assert_eq!(r["device"], link.if_b.as_str(), "{r}");
        assert_eq!(r["proto"], p, "{r}");
        assert_eq!(
            (r["src"].as_str(), r["dst"].as_str()),
            (Some(link.ip_a.as_str()), Some(link.ip_b.as_str()))
        );
        assert_eq!(
            (r["packets"].as_u64(), r["bytes"].as_u64()),
            (Some(n), Some(n * 60)),
            "{r}"
        );
    }
}

#[test]
fn afxdp_overload_loss_adds_up_exactly() {
    let link = Link::new();
    let ends = link.ipv4_a_to_b();
    let if_b = link.if_b.clone();
    // 64-entry rings and 6,000 frames in one burst: the (unoptimised)
    // worker falls behind and the socket drops.
    let (mut dp, cap) = link
        .b
        .run_scoped(|| {
            let mut dp = Datapath::load(1 << 14)?;
            let cap = AfXdpCapture::start(&mut dp, &if_b, None, 64)?;
            Ok((dp, cap))
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    let slot = cap.slot;
    send_frames(&link.a, &link.if_a, frames(&ends));
    settle(&cap, &dp, SENT);
    let view = cap.stop(&mut dp, flowd::drain::grace_period);
    let q = &view[0];
    assert_eq!((q.kernel.frames, q.kernel.no_socket), (SENT, 0), "{q:#?}");
    // Every frame the kernel counted is parsed or in the socket's drops.
    assert_eq!(q.unaccounted(), 0, "{q:#?}");
    assert_eq!(q.worker.parsed + q.worker.xsk.lost(), SENT, "{q:#?}");
    assert_eq!(q.worker.failed, 0);
    // In copy mode a frame without a fill-ring buffer is in both.
    assert!(q.worker.xsk.rx_fill_ring_empty_descs <= q.worker.xsk.rx_dropped);
    // What was parsed is exactly what the totals and the flows hold.
    let rx = dp.totals(slot, DIR_INGRESS).unwrap();
    assert_eq!(rx.c[counter::PACKETS], q.worker.parsed);
    let mut packets = 0;
    dp.drain_all(|_, v| packets += v.counts.packets).unwrap();
    assert_eq!(packets, q.worker.parsed);
    assert!(
        q.worker.xsk.lost() > 0,
        "the burst overran the rings: {q:#?}"
    );
}

#[test]
fn afxdp_two_rx_queues_both_carry_traffic_and_totals_are_exact() {
    let link = Link::new();
    let ends = link.ipv4_a_to_b();
    // The pair again, with two queues each way: veth hands a frame to the
    // receiver's RX queue numbered like the sender's TX queue, which the
    // sender picks by the flow's hash (so by source port).
    link.delete_pair();
    flowd_tests::sh(&[
        "ip",
        "link",
        "add",
        &link.if_a,
        "netns",
        &link.a.name,
        "numtxqueues",
        "2",
        "numrxqueues",
        "2",
        "type",
        "veth",
        "peer",
        "name",
        &link.if_b,
        "netns",
        &link.b.name,
        "numtxqueues",
        "2",
        "numrxqueues",
        "2",
    ]);
    // No IPv6 on them (no DAD, router solicitation or MLD frames): only
    // the test's frames cross the link.
    for (ns, ifc) in [(&link.a, &link.if_a), (&link.b, &link.if_b)] {
        let key = format!("net.ipv6.conf.{ifc}.disable_ipv6=1");
        ns.exec(&["sysctl", "-qw", &key]);
        ns.exec(&["ip", "link", "set", ifc, "up"]);
    }
    // 16 UDP flows of 100 frames each: all on one queue has odds of 2^-15.
    let flows: Vec<u16> = (0..16).map(|i| 41_000 + i).collect();
    let mut frames = Vec::new();
    for _ in 0..100 {
        for &sport in &flows {
            frames.push(udp_frame(&ends, sport, 9));
        }
    }
    let sent = frames.len() as u64;
    let if_b = link.if_b.clone();
    let (mut dp, cap) = link
        .b
        .run_scoped(|| {
            let mut dp = Datapath::load(1 << 14)?;
            let cap = AfXdpCapture::start(&mut dp, &if_b, None, 2048)?;
            Ok((dp, cap))
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (slot, ifindex) = (cap.slot, cap.ifindex);
    send_frames(&link.a, &link.if_a, frames);
    settle(&cap, &dp, sent);
    let view = cap.stop(&mut dp, flowd::drain::grace_period);
    assert_eq!(view.len(), 2, "a worker per RX queue: {view:#?}");
    for q in &view {
        assert!(
            q.kernel.frames > 0,
            "queue {} carried none: {view:#?}",
            q.queue
        );
        assert_eq!(q.unaccounted(), 0, "{q:#?}");
        assert_eq!((q.worker.xsk.lost(), q.worker.failed), (0, 0), "{q:#?}");
        assert_eq!(q.worker.parsed, q.kernel.frames, "{q:#?}");
    }
    let total: u64 = view.iter().map(|q| q.kernel.frames).sum();
    assert_eq!(total, sent);
    assert_eq!(
        dp.totals(slot, DIR_INGRESS).unwrap().c[counter::PACKETS],
        sent
    );
    let mut got = BTreeMap::<FlowKey, FlowStats>::new();
    dp.drain_all(|k, v| {
        got.entry(*k).or_default().merge(v);
    })
    .unwrap();
    assert_eq!(got.len(), flows.len(), "{got:#?}");
    for (k, v) in &got {
        assert_eq!((k.ifindex, k.proto, k.dport), (ifindex, proto::ip::UDP, 9));
        assert_eq!((v.counts.packets, v.counts.bytes), (100, 6_000), "{k:?}");
    }
}

#[test]
fn flowd_run_af_xdp_follows_an_interface_that_goes_and_comes_back() {
    let link = Link::new();
    let ends = link.ipv4_a_to_b();
    let mut flowd = Flowd::start(
        &link.b,
        &["--af-xdp", &link.if_b, "--drain-interval-ms", "100"],
    );
    let dev = [("device", link.if_b.as_str())];
    let q0 = [dev[0], ("queue", "0")];
    let burst = |n: usize| {
        let f = udp_frame(&ends, 42_000, 9);
        send_frames(&link.a, &link.if_a, vec![f; n]);
    };
    burst(500);
    metric_reaches(
        &link.b,
        &flowd,
        "flowd_af_xdp_parsed_frames_total",
        &q0,
        500.0,
    );

    // Gone: the capture stops (its series go with it).
    let hook = [dev[0], ("hook", "af_xdp")];
    let up = [hook[0], hook[1], ("mode", "native")];
    let text = wait::scrape(&link.b, &flowd);
    assert_eq!(metric(&text, "flowd_program_attached", &up), Some(1.0));
    link.delete_pair();
    let text = wait::until(
        "the capture of the deleted interface to stop",
        wait::DEADLINE,
        || wait::scrape(&link.b, &flowd),
        |t| metric(t, "flowd_af_xdp_frames_total", &q0).is_none(),
    );
    // Selected but not captured: the alert's `0`, on its own hook.
    let down = [hook[0], hook[1], ("mode", "none")];
    assert_eq!(
        metric(&text, "flowd_program_attached", &down),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "flowd_program_attached", &[dev[0], ("hook", "xdp")]),
        None
    );
    // Back (a new ifindex): captured again within a reconcile; the
    // interface's totals go on from where they were.
    link.recreate_pair();
    wait::until(
        "the capture of the recreated interface",
        wait::DEADLINE,
        || wait::scrape(&link.b, &flowd),
        |t| metric(t, "flowd_af_xdp_frames_total", &q0).is_some(),
    );
    burst(300);
    let text = metric_reaches(&link.b, &flowd, "flowd_receive_packets_total", &dev, 800.0);
    assert_eq!(
        metric(&text, "flowd_receive_packets_total", &dev),
        Some(800.0)
    );
    assert_eq!(
        metric(&text, "flowd_receive_bytes_total", &dev),
        Some(800.0 * 60.0)
    );
    assert_eq!(
        metric(&text, "flowd_af_xdp_parsed_frames_total", &q0),
        Some(300.0)
    );
    assert_eq!(metric(&text, "flowd_program_attached", &up), Some(1.0));
    assert_eq!(flowd.stop(), Some(0), "log:\n{}", flowd.log_text());
    assert!(!has_xdp(&link.b, &link.if_b), "program detached on exit");
}

#[test]
fn one_daemon_serves_an_af_xdp_port_and_an_in_kernel_interface() {
    let link = Link::new();
    let ends = link.ipv4_a_to_b();
    // A second pair between the same namespaces, for the in-kernel path.
    let tag = flowd_tests::unique_tag();
    let (x_a, x_b) = (format!("xa{tag}"), format!("xb{tag}"));
    flowd_tests::sh(&[
        "ip",
        "link",
        "add",
        &x_a,
        "netns",
        &link.a.name,
        "type",
        "veth",
        "peer",
        "name",
        &x_b,
        "netns",
        &link.b.name,
    ]);
    for (ns, ifc) in [(&link.a, &x_a), (&link.b, &x_b)] {
        let key = format!("net.ipv6.conf.{ifc}.disable_ipv6=1");
        ns.exec(&["sysctl", "-qw", &key]);
        ns.exec(&["ip", "link", "set", ifc, "up"]);
    }
    let mut flowd = Flowd::start(
        &link.b,
        &[
            "--af-xdp",
            &link.if_b,
            "--iface",
            &x_b,
            "--drain-interval-ms",
            "100",
        ],
    );
    send_frames(&link.a, &link.if_a, vec![udp_frame(&ends, 44_000, 9); 400]);
    send_frames(&link.a, &x_a, vec![udp_frame(&ends, 44_001, 9); 300]);
    let af = [("device", link.if_b.as_str())];
    let kern = [("device", x_b.as_str())];
    metric_reaches(&link.b, &flowd, "flowd_receive_packets_total", &af, 400.0);
    let text = metric_reaches(&link.b, &flowd, "flowd_receive_packets_total", &kern, 300.0);
    assert_eq!(
        metric(&text, "flowd_receive_packets_total", &af),
        Some(400.0)
    );
    assert_eq!(
        metric(&text, "flowd_receive_packets_total", &kern),
        Some(300.0)
    );
    let q0 = [af[0], ("queue", "0")];
    assert_eq!(
        metric(&text, "flowd_af_xdp_parsed_frames_total", &q0),
        Some(400.0)
    );
    assert_eq!(
        metric(&text, "flowd_af_xdp_frames_total", &[kern[0]]),
        None,
        "the in-kernel interface has no AF_XDP series"
    );
    let xdp = [kern[0], ("hook", "xdp")];
    assert_eq!(metric(&text, "flowd_program_attached", &xdp), Some(1.0));
    // The AF_XDP port: its own program as hook `af_xdp`, and none of the
    // in-kernel hooks it does not use (which would read 0: "detached").
    let hook = [af[0], ("hook", "af_xdp"), ("mode", "native")];
    assert_eq!(
        metric(&text, "flowd_program_attached", &hook),
        Some(1.0),
        "{text}"
    );
    for h in ["xdp", "tc_egress"] {
        let in_kernel = [af[0], ("hook", h)];
        assert_eq!(
            metric(&text, "flowd_program_attached", &in_kernel),
            None,
            "{text}"
        );
    }
    assert_eq!(flowd.stop(), Some(0), "log:\n{}", flowd.log_text());
    assert!(!has_xdp(&link.b, &link.if_b) && !has_xdp(&link.b, &x_b));
}

/// `flowd check` says whether AF_XDP sockets can be created here, and
/// which interfaces of the configuration it names would use AF_XDP, with
/// their RX queues.
#[test]
fn check_reports_af_xdp_sockets_and_the_interfaces_that_use_them() {
    let link = Link::new();
    let dir = flowd_tests::TempDir::new("flowdt-afxdp-check");
    let check = |conf: &str| {
        let file = dir.path().join("flowd.toml");
        std::fs::write(&file, conf).unwrap();
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &link.b.name])
            .arg(flowd_tests::flowd_bin())
            .args(["check", "--config", file.to_str().unwrap()])
            .output()
            .expect("run flowd check");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let find = |text: &str, what: &str| {
        text.lines()
            .find(|l| l.get(5..).is_some_and(|r| r.starts_with(what)))
            .unwrap_or_else(|| panic!("no `{what}` line:\n{text}"))
            .to_owned()
    };
    let text = check(&format!("[af_xdp]\ninterfaces = [\"{}\"]\n", link.if_b));
    assert_eq!(
        find(&text, "AF_XDP "),
        format!(
            "ok   {:<22} sockets, UMEM and rings can be created",
            "AF_XDP"
        )
    );
    assert_eq!(
        find(&text, "AF_XDP interfaces"),
        format!(
            "info {:<22} {} (1 RX queue)",
            "AF_XDP interfaces", link.if_b
        )
    );
    let file = dir.path().join("flowd.toml");
    let text = check("[af_xdp]\ninterfaces = [\"span-absent*\"]\n");
    assert_eq!(
        find(&text, "AF_XDP interfaces"),
        format!(
            "info {:<22} [\"span-absent*\"] ({}) select no interface present",
            "AF_XDP interfaces",
            file.display()
        )
    );
    let text = check("");
    assert_eq!(
        find(&text, "AF_XDP interfaces"),
        format!(
            "info {:<22} none configured ({}: [af_xdp] interfaces, or --af-xdp)",
            "AF_XDP interfaces",
            file.display()
        )
    );
}
