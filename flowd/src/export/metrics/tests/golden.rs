//! The exposition of a fixed snapshot against the files in `golden/`
//! (`FLOWD_BLESS=1` rewrites them).

use super::*;

/// A snapshot with a value in every family, and nothing read from the
/// host or the clock: the golden file's input.
fn golden_snapshot() -> Snapshot {
    use std::collections::BTreeMap;

    use crate::export::tcp::{IpCounts, TcpCounts};

    let mut s = rich();
    let mut tx = IfaceCounters::default();
    for (i, c) in tx.c.iter_mut().enumerate() {
        *c = 10 * i as u64 + 1;
    }
    s.ifaces[0].tx = tx;
    s.ifaces[0].speed_bps = Some(10_000_000_000);
    s.ifaces.push(IfaceSnapshot {
        device: "eth\"1\\\n".into(),
        rx: IfaceCounters::default(),
        tx: IfaceCounters::default(),
        xdp_mode: None,
        tc_attached: false,
        af_xdp: false,
        speed_bps: None,
    });
    s.flows_max = 1_000_000;
    s.flows_started = 12;
    s.drains = 7;
    s.drains_early = 2;
    s.flow_map_fill = 33;
    s.drained_entries = 40;
    s.last_drain_entries = 5;
    s.drain_errors = 1;
    s.scan_suspects = 2;
    s.scan_flagged = 3;
    s.ipfix = Some(IpfixStats {
        messages: 4,
        records: 9,
        records_dropped: 1,
        send_errors: 1,
    });
    s.process = Some(ProcessStats {
        cpu_seconds: 1.25,
        resident_memory_bytes: 10_485_760,
        virtual_memory_bytes: 104_857_600,
        start_time_seconds: 1_700_000_000.5,
        open_fds: 17,
        max_fds: 1024,
    });
    let peer = |d: &str, p: &str| (d.to_owned(), p.to_owned());
    let mut rtt = HistogramSnapshot::with_bounds(&RTT_BUCKETS);
    for v in [0.000_2, 0.003, 0.003, 0.04, 7.0] {
        rtt.observe(v);
    }
    let mut queueing = HistogramSnapshot::with_bounds(&RTT_BUCKETS);
    queueing.observe(0.001);
    s.tcp = TcpSnapshot {
        tcp: BTreeMap::from([
            (
                ("veth0".to_owned(), "receive", "public".to_owned()),
                TcpCounts {
                    segments: 20,
                    retransmitted: 2,
                    syn: 1,
                    synack: 0,
                    rst: 1,
                    zero_window: 3,
                },
            ),
            (
                ("veth0".to_owned(), "transmit", "public".to_owned()),
                TcpCounts {
                    segments: 10,
                    synack: 1,
                    ..Default::default()
                },
            ),
        ]),
        ip: BTreeMap::from([(
            ("veth0".to_owned(), "receive"),
            IpCounts {
                ect0: 5,
                ect1: 1,
                ce: 2,
            },
        )]),
        dscp: BTreeMap::from([
            (("veth0".to_owned(), "receive", "cs0"), 3020),
            (("veth0".to_owned(), "transmit", "ef"), 11),
        ]),
        connections: BTreeMap::from([
            (("veth0".to_owned(), "public".to_owned(), "SF"), 1),
            (("veth0".to_owned(), "private".to_owned(), "S0"), 2),
        ]),
        rtt: BTreeMap::from([(peer("veth0", "public"), rtt)]),
        queueing: BTreeMap::from([(peer("veth0", "public"), queueing)]),
        rtt_samples: 5,
    };
    s.top_tcp = s
        .groups
        .top
        .iter()
        .enumerate()
        .map(|(i, (k, _))| {
            (k.proto == 6).then_some(TopTcp {
                rtt: (i % 2 == 0).then_some((1_500_000, 2_250_000)),
                segments: 20 + i as u64,
                retransmitted: i as u64,
            })
        })
        .collect();
    s.http = HttpSnapshot {
        open: 3,
        max: 256,
        rejected: 7,
        accept_errors: 1,
    };
    s.records = Some(crate::export::records::RecordStats {
        sink: "file",
        written: 4_860,
        dropped: [140, 2],
    });
    let mut names = l7_top::NameBytes::default();
    let _ = names.snapshot(s.groups.top_k);
    for (dns, host, sni, bytes) in [
        (Some("example.test"), None, None, 420),
        (None, Some("www.example.test:8080"), None, 9_000),
        (None, None, Some("api.example.test"), 12_345),
        (Some("a\"quote.test"), None, None, 7),
    ] {
        names.add(
            &crate::flowtable::FlowL7 {
                http_host: host.map(Into::into),
                http_url: host.map(|_| "/".into()),
                dns_qname: dns.map(Into::into),
                tls_sni: sni.map(Into::into),
            },
            bytes,
        );
    }
    names.without_flow = 3;
    s.l7_names = Some(names.snapshot(s.groups.top_k));
    s.l7_metrics = Some(golden_l7());
    s.host = Some(crate::export::hoststats::HostStats {
        udp_rcvbuf_errors: Some(13),
        udp6_rcvbuf_errors: Some(2),
        listen_overflows: Some(31),
        listen_drops: Some(37),
        tcp_backlog_drops: Some(41),
        softnet: Some(vec![
            crate::export::hoststats::Softnet {
                cpu: 0,
                dropped: 0,
                time_squeeze: 17,
            },
            crate::export::hoststats::Softnet {
                cpu: 1,
                dropped: 42,
                time_squeeze: 9,
            },
        ]),
        read_errors: crate::export::hoststats::FILES
            .iter()
            .map(|f| (*f, 0))
            .collect(),
    });
    s
}

/// The L7 families' input: one event of each kind with a response, an
/// unanswered query, one suspect, and a value in every engine counter.
fn golden_l7() -> crate::export::l7stats::L7Snapshot {
    use crate::export::{
        groups::PeerGroups,
        l7signals::{
            L7Signals,
            tests::{T0, dns, http, tls},
        },
        l7stats::L7Metrics,
    };
    let a = AggConfig::default();
    let mut m = L7Metrics::new(
        PeerGroups::new(&a.peer_groups, &a.peer_unmatched),
        L7Signals::default(),
    );
    let names = std::collections::HashMap::from([(2, "veth0".to_owned())]);
    m.observe(
        &[
            dns(1, "a.example", Some(0)),
            dns(1, "b.example", Some(3)),
            dns(1, "c.example", None),
            http(1, 443, "www.example", Some(200)),
            tls(1, 443, Some("www.example"), Some(0x0304)),
        ],
        &names,
        T0,
    );
    let mut e = crate::l7::L7Stats::default();
    let fields = [
        &mut e.packets,
        &mut e.unrecognised,
        &mut e.http_parse_errors,
        &mut e.http_truncated,
        &mut e.tls_parse_errors,
        &mut e.tls_truncated,
        &mut e.dns_parse_errors,
        &mut e.dns_truncated,
        &mut e.retransmissions,
        &mut e.reasm_gap,
        &mut e.reasm_limit,
        &mut e.reasm_evicted,
        &mut e.reasm_expired,
        &mut e.http_unmatched_responses,
        &mut e.dns_unmatched_responses,
        &mut e.tls_unmatched_responses,
        &mut e.pending_evicted,
        &mut e.unanswered,
    ];
    for (i, f) in fields.into_iter().enumerate() {
        *f = 100 + i as u64;
    }
    m.snapshot(&e, 2, 1)
}

/// The whole exposition of [`golden_snapshot`] in both formats, byte for
/// byte, against `golden/`. A change to the output shows up here first;
/// when it is meant, rewrite the files with `FLOWD_BLESS=1`.
#[test]
fn exposition_matches_the_golden_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/export/metrics/golden");
    for (format, file) in [
        (Format::Text004, "metrics.txt"),
        (Format::OpenMetrics, "metrics.openmetrics.txt"),
    ] {
        let got = encode(golden_snapshot(), format);
        let path = dir.join(file);
        if std::env::var_os("FLOWD_BLESS").is_some() {
            std::fs::create_dir_all(&dir).expect("golden directory");
            std::fs::write(&path, &got).expect("writing the golden file");
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (FLOWD_BLESS=1 writes it)", path.display()));
        if got != want {
            let line = got
                .lines()
                .zip(want.lines())
                .position(|(g, w)| g != w)
                .unwrap_or_else(|| got.lines().count().min(want.lines().count()));
            panic!(
                "{file} differs from the exposition at line {}:\n  got:  {:?}\n  want: {:?}",
                line + 1,
                got.lines().nth(line),
                want.lines().nth(line)
            );
        }
    }
}
