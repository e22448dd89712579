use std::{
    collections::HashSet,
    io::Write as _,
    process::{Command, Stdio},
    time::Instant,
};

use flowd_common::{
    DIR_EGRESS, DIR_INGRESS, FlowCounts, FlowKey, FlowStats, IfaceCounters, counter, ipv4_mapped,
};

use super::*;
use crate::export::{
    aggregate::{AggConfig, Aggregator},
    ipfix::IpfixStats,
    process::ProcessStats,
    tcp::{RTT_BUCKETS, TcpSnapshot},
};

fn sample() -> Snapshot {
    let mut rx = IfaceCounters::default();
    rx.c[counter::PACKETS] = 1000;
    rx.c[counter::BYTES] = 142_000;
    rx.c[counter::OUT_FLOW] = 1000;
    Snapshot {
        ifaces: vec![IfaceSnapshot {
            device: "veth0".into(),
            rx,
            tx: IfaceCounters::default(),
            xdp_mode: Some("native"),
            tc_attached: true,
            af_xdp: false,
            speed_bps: None,
        }],
        flows_active: 3,
        flow_map_capacity: 65536,
        ..Default::default()
    }
}

/// A snapshot with every kind of family: groups both ways, top flows,
/// IPv6, a drain histogram and process metrics.
fn rich() -> Snapshot {
    let mut a = Aggregator::default();
    a.tick(1_000_000_000_000);
    let flows = [
        (
            DIR_INGRESS,
            17,
            [198, 18, 0, 1],
            [198, 18, 0, 2],
            40000,
            9999,
            3000,
            1_500_000,
        ),
        (
            DIR_INGRESS,
            6,
            [8, 8, 8, 8],
            [10, 0, 0, 1],
            51000,
            443,
            20,
            20_000,
        ),
        (
            DIR_EGRESS,
            6,
            [10, 0, 0, 1],
            [8, 8, 8, 8],
            443,
            51000,
            10,
            800,
        ),
        (DIR_EGRESS, 1, [10, 0, 0, 1], [10, 0, 0, 2], 0, 2048, 1, 98),
    ];
    for (dir, proto, src, dst, sport, dport, p, b) in flows {
        let k = FlowKey {
            ifindex: 3,
            direction: dir,
            proto,
            src: ipv4_mapped(src),
            dst: ipv4_mapped(dst),
            sport,
            dport,
            ..Default::default()
        };
        a.absorb(&k, &stats(p, b), "veth0");
    }
    let mut v6 = [0u8; 16];
    v6[0] = 0xfd;
    v6[15] = 1;
    let k = FlowKey {
        ifindex: 3,
        direction: DIR_INGRESS,
        proto: 58,
        src: v6,
        dst: v6,
        dport: 128 * 256,
        ..Default::default()
    };
    a.absorb(&k, &stats(7, 658), "veth0");
    let mut s = sample();
    s.groups = a.snapshot();
    s.drain_seconds = HistogramSnapshot::with_bounds(&[0.001, 0.01, 0.1]);
    for v in [0.0005, 0.002, 0.002, 0.05, 3.0] {
        s.drain_seconds.observe(v);
    }
    s.flows_ended = vec![("idle", 4), ("end-of-flow", 1)];
    s.process = ProcessStats::read_self();
    s
}

fn stats(packets: u64, bytes: u64) -> FlowStats {
    FlowStats {
        counts: FlowCounts {
            packets,
            bytes,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// (series, value) of every sample line.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample line");
            (k.to_owned(), v.parse().unwrap_or_else(|_| panic!("{l}")))
        })
        .collect()
}

fn value(text: &str, series: &str) -> Option<f64> {
    samples(text)
        .into_iter()
        .find_map(|(k, v)| (k == series).then_some(v))
}

fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("promtool not found: install Debian's prometheus package")
        }
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn text004_names_counters_with_total() {
    let t = encode(sample(), Format::Text004);
    assert!(
        t.contains("# TYPE flowd_receive_packets_total counter\n"),
        "{t}"
    );
    assert!(
        t.contains("flowd_receive_packets_total{device=\"veth0\"} 1000\n"),
        "{t}"
    );
    assert!(
        t.contains("flowd_receive_bytes_total{device=\"veth0\"} 142000\n"),
        "{t}"
    );
    assert!(t.contains("# TYPE flowd_build_info gauge\n"), "{t}");
    assert!(!t.contains("# EOF"));
}

#[test]
fn openmetrics_ends_with_eof() {
    let t = encode(sample(), Format::OpenMetrics);
    assert!(t.ends_with("# EOF\n"), "{t}");
    assert!(t.contains("# TYPE flowd_receive_packets counter\n"), "{t}");
}

#[test]
fn an_af_xdp_device_has_one_hook_af_xdp_and_no_in_kernel_hooks() {
    let mut s = sample();
    let dev = |name: &str, mode| IfaceSnapshot {
        device: name.into(),
        rx: IfaceCounters::default(),
        tx: IfaceCounters::default(),
        xdp_mode: mode,
        tc_attached: false,
        speed_bps: None,
        af_xdp: true,
    };
    s.ifaces.push(dev("span0", Some("generic")));
    s.ifaces.push(dev("span1", None));
    let t = encode(s, Format::Text004);
    let attached: Vec<_> = samples(&t)
        .into_iter()
        .filter(|(k, _)| k.starts_with("flowd_program_attached{"))
        .collect();
    let want = [
        (r#"{device="veth0",hook="xdp",mode="native"}"#, 1.0),
        (r#"{device="veth0",hook="tc_egress",mode="tc"}"#, 1.0),
        (r#"{device="span0",hook="af_xdp",mode="generic"}"#, 1.0),
        (r#"{device="span1",hook="af_xdp",mode="none"}"#, 0.0),
    ]
    .map(|(l, v)| (format!("flowd_program_attached{l}"), v));
    assert_eq!(attached, want, "{t}");
    promtool_check(&t);
}

#[test]
fn histogram_buckets_are_cumulative_once() {
    let t = encode(rich(), Format::Text004);
    let b = |le: &str| {
        value(
            &t,
            &format!("flowd_drain_duration_seconds_bucket{{le=\"{le}\"}}"),
        )
    };
    assert_eq!(b("0.001"), Some(1.0), "{t}");
    assert_eq!(b("0.01"), Some(3.0));
    assert_eq!(b("0.1"), Some(4.0));
    assert_eq!(b("+Inf"), Some(5.0));
    assert_eq!(value(&t, "flowd_drain_duration_seconds_count"), Some(5.0));
}

#[test]
fn groups_and_top_flows_are_exported() {
    // Burn at least 0.2 s of CPU first, so the process' CPU counter has
    // something to show at the kernel's 1/HZ tick resolution.
    let cpu_now = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer to a timespec for the call.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    };
    let start = cpu_now();
    let mut x = 0u64;
    while cpu_now() - start < 0.2 {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
    }
    let t = encode(rich(), Format::Text004);
    let cpu_after = cpu_now();
    let rx = "device=\"veth0\",direction=\"receive\"";
    let tx = "device=\"veth0\",direction=\"transmit\"";
    let v = |s: String| value(&t, &s).unwrap_or_else(|| panic!("{s} missing:\n{t}"));
    assert_eq!(
        v(format!("flowd_proto_packets_total{{{rx},proto=\"udp\"}}")),
        3000.0
    );
    assert_eq!(
        v(format!("flowd_proto_bytes_total{{{rx},proto=\"tcp\"}}")),
        20_000.0
    );
    assert_eq!(
        v(format!(
            "flowd_proto_packets_total{{{rx},proto=\"icmpv6\"}}"
        )),
        7.0
    );
    assert_eq!(
        v(format!("flowd_proto_packets_total{{{rx},proto=\"other\"}}")),
        0.0
    );
    assert_eq!(
        v(format!(
            "flowd_service_bytes_total{{{rx},service=\"https\"}}"
        )),
        20_000.0
    );
    assert_eq!(
        v(format!(
            "flowd_service_bytes_total{{{tx},service=\"https\"}}"
        )),
        800.0
    );
    assert_eq!(
        v(format!(
            "flowd_service_packets_total{{{rx},service=\"other\"}}"
        )),
        3007.0
    );
    assert_eq!(
        v(format!(
            "flowd_peer_packets_total{{{rx},peer=\"benchmark\"}}"
        )),
        3000.0
    );
    assert_eq!(
        v(format!("flowd_peer_packets_total{{{rx},peer=\"public\"}}")),
        20.0
    );
    assert_eq!(
        v(format!("flowd_peer_packets_total{{{rx},peer=\"private\"}}")),
        7.0
    );
    assert_eq!(
        v(format!("flowd_peer_packets_total{{{tx},peer=\"public\"}}")),
        10.0
    );
    assert_eq!(
        v(format!("flowd_peer_packets_total{{{tx},peer=\"private\"}}")),
        1.0
    );
    let heavy = format!(
        "{{{rx},proto=\"udp\",src=\"198.18.0.1\",dst=\"198.18.0.2\",sport=\"40000\",dport=\"9999\"}}"
    );
    assert_eq!(
        v(format!("flowd_top_flow_window_bytes{heavy}")),
        1_500_000.0
    );
    assert_eq!(v(format!("flowd_top_flow_window_packets{heavy}")), 3000.0);
    let v6 = format!(
        "{{{rx},proto=\"icmpv6\",src=\"fd00::1\",dst=\"fd00::1\",sport=\"0\",dport=\"32768\"}}"
    );
    assert_eq!(v(format!("flowd_top_flow_window_packets{v6}")), 7.0);
    let other = "proto=\"other\",src=\"other\",dst=\"other\",sport=\"other\",dport=\"other\"";
    assert_eq!(
        v(format!("flowd_top_flow_window_bytes{{{rx},{other}}}")),
        0.0
    );
    assert_eq!(v("flowd_top_window_flows".into()), 5.0);
    assert_eq!(v("flowd_top_flows_max".into()), 100.0);
    assert_eq!(v("flowd_top_flows_window_seconds".into()), 60.0);
    assert_eq!(v("flowd_series_budget".into()), 10_000.0);
    assert_eq!(
        v("flowd_scrape_series_folded{reason=\"top_k\"}".into()),
        0.0
    );
    assert!(v("process_resident_memory_bytes".into()) > 0.0);
    // /proc/self/stat counts whole ticks of this process' CPU time: at
    // least the 0.2 s burnt above (less one tick), at most what the process
    // had used right after the reading.
    let cpu = v("process_cpu_seconds_total".into());
    assert!(
        cpu >= 0.2 - 0.011 && cpu <= cpu_after + 0.011,
        "process_cpu_seconds_total {cpu}, process CPU time {cpu_after}"
    );
}

#[test]
fn scrape_series_counts_every_sample_once() {
    for format in [Format::Text004, Format::OpenMetrics] {
        let t = encode(rich(), format);
        let all = samples(&t);
        let distinct: HashSet<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(distinct.len(), all.len(), "duplicate series:\n{t}");
        assert_eq!(
            value(&t, "flowd_scrape_series"),
            Some(all.len() as f64),
            "{t}"
        );
    }
}

#[test]
fn label_values_are_escaped() {
    let mut s = sample();
    s.ifaces[0].device = "we\"ird\\dev".into();
    let t = encode(s, Format::Text004);
    assert!(
        t.contains("flowd_receive_packets_total{device=\"we\\\"ird\\\\dev\"} 1000\n"),
        "{t}"
    );
    promtool_check(&t);
}

#[test]
fn promtool_accepts_the_exposition() {
    promtool_check(&encode(rich(), Format::Text004));
    promtool_check(&encode(Snapshot::default(), Format::Text004));
}

/// 1,000,000 distinct flows in one window, through the aggregator with the
/// defaults and with K far beyond the budget: the exposition stays within
/// the budget and the folded series account for every flow not shown.
#[test]
fn a_million_flows_stay_within_the_budget() {
    for (k, window_max) in [(100, 100_000), (50_000, 300_000)] {
        let mut a = Aggregator::new(AggConfig {
            top_flows: k,
            window_max_flows: window_max,
            ..Default::default()
        });
        a.tick(1_000_000_000_000);
        let t0 = Instant::now();
        for i in 0..1_000_000u32 {
            let [_, b, c, d] = i.to_be_bytes();
            let key = FlowKey {
                ifindex: 3,
                direction: (i % 2) as u8,
                proto: [6, 17, 1, 58, 132, 47, 99][i as usize % 7],
                src: ipv4_mapped([10 + (i % 200) as u8, b, c, d]),
                dst: ipv4_mapped([198, 18, 0, 2]),
                sport: (i % 65_536) as u16,
                dport: [53, 80, 443, 22, 9999, 5432][i as usize % 6],
                ..Default::default()
            };
            a.absorb(
                &key,
                &stats(1, 60 + u64::from(i % 1400)),
                &format!("eth{}", i % 4),
            );
        }
        a.tick(1_000_500_000_000);
        let absorbed = t0.elapsed();
        let t1 = Instant::now();
        let snap = Snapshot {
            groups: a.snapshot(),
            ..sample()
        };
        let window_flows = snap.groups.window_flows;
        let text = encode(snap, Format::Text004);
        let scrape = t1.elapsed();
        eprintln!(
            "K={k}: 1M deltas absorbed in {absorbed:?}; snapshot and encode in {scrape:?}; {} bytes",
            text.len()
        );
        let n = samples(&text).len();
        assert!(n <= 10_000, "{n} series");
        assert_eq!(value(&text, "flowd_scrape_series"), Some(n as f64));
        assert_eq!(window_flows, window_max);
        let shown = samples(&text)
            .iter()
            .filter(|(s, _)| {
                s.starts_with("flowd_top_flow_window_bytes{") && !s.contains("src=\"other\"")
            })
            .count();
        let folded = |r: &str| {
            value(
                &text,
                &format!("flowd_scrape_series_folded{{reason=\"{r}\"}}"),
            )
            .unwrap()
        };
        assert_eq!(folded("top_k"), 2.0 * (window_max - k) as f64);
        if k == 100 {
            assert_eq!(shown, 100);
            assert_eq!(folded("budget"), 0.0);
        } else {
            // The budget cut the top: the folded series account for the rest.
            assert!(shown < k);
            assert_eq!(folded("budget"), 2.0 * (k - shown) as f64);
            assert!(n > 9_990, "the budget is used, not wasted: {n}");
        }
        let overflow = value(&text, "flowd_top_window_overflow_deltas_total").unwrap();
        assert_eq!(overflow, (1_000_000 - window_max) as f64);
        // The window gauges of each device and direction sum to its traffic.
        let total: f64 = samples(&text)
            .iter()
            .filter(|(s, _)| s.starts_with("flowd_top_flow_window_packets{"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(total, 1_000_000.0);
        let by_proto: f64 = samples(&text)
            .iter()
            .filter(|(s, _)| s.starts_with("flowd_proto_packets_total{"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(by_proto, 1_000_000.0);
    }
}

/// With a budget that fits only some groups, every scrape stays within it,
/// folded groups stay folded, and no `other` counter ever goes down.
#[test]
fn budget_folds_groups_for_good_and_other_only_grows() {
    let mut a = Aggregator::new(AggConfig {
        series_budget: 150,
        ..Default::default()
    });
    let mut prev: std::collections::HashMap<String, f64> = Default::default();
    let mut seen_folded = HashSet::new();
    for round in 0..20u64 {
        // Each round a different service and device gets the most traffic.
        for (i, port) in [22u16, 25, 53, 80, 443, 3306, 5432, 6379, 11211, 27017]
            .into_iter()
            .enumerate()
        {
            let key = FlowKey {
                direction: (i % 2) as u8,
                proto: 6,
                src: ipv4_mapped([8, 8, 8, i as u8]),
                dst: ipv4_mapped([10, 0, 0, 1]),
                sport: 50000,
                dport: port,
                ..Default::default()
            };
            let heavy = (i as u64 + round).is_multiple_of(10);
            let bytes = if heavy { 1_000_000 } else { 100 + i as u64 };
            a.absorb(
                &key,
                &stats(1, bytes),
                &format!("eth{}", (i as u64 + round) % 3),
            );
        }
        let text = encode(
            Snapshot {
                groups: a.snapshot(),
                ..sample()
            },
            Format::Text004,
        );
        a.tick(round * 1_000_000_000);
        let all = samples(&text);
        assert!(all.len() <= 150, "round {round}: {} series", all.len());
        for (k, v) in &all {
            if k.starts_with("flowd_service_bytes_total{") {
                if let Some(p) = prev.get(k) {
                    assert!(v >= p, "{k} went down: {p} -> {v}");
                }
                prev.insert(k.clone(), *v);
            }
        }
        // A series that disappeared is a folded group: it never comes back.
        for k in prev.keys() {
            if !all.iter().any(|(s, _)| s == k) {
                seen_folded.insert(k.clone());
            }
        }
        for k in &seen_folded {
            assert!(!all.iter().any(|(s, _)| s == k), "{k} came back");
        }
        promtool_check(&text);
    }
    assert!(!seen_folded.is_empty(), "the budget never folded a group");
    let text = encode(
        Snapshot {
            groups: a.snapshot(),
            ..sample()
        },
        Format::Text004,
    );
    assert!(value(&text, "flowd_series_folded_total{reason=\"budget\"}").unwrap() > 0.0);
}

mod golden;
