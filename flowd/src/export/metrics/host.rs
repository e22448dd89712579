//! The host's socket-level overflow counters and softnet (issue 14), from
//! flowd's own network namespace (see [`crate::export::hoststats`]). A
//! counter whose file or field is missing is left out; the softnet
//! families are per CPU up to [`SOFTNET_MAX_CPUS`] CPUs, one `cpu="all"`
//! series (the sum) above, to bound the series.

use super::{
    Snapshot,
    family::{Family, Num, labels},
};
use crate::export::hoststats::{HostStats, Softnet};

/// Above this many CPUs the softnet families are summed.
pub(super) const SOFTNET_MAX_CPUS: usize = 64;

fn one(out: &mut Vec<Family>, name: &'static str, help: &'static str, v: Option<u64>) {
    if let Some(v) = v {
        out.push(Family::counter(name, help, vec![(Vec::new(), Num::U(v))]));
    }
}

pub(super) fn families(s: &Snapshot, out: &mut Vec<Family>) {
    let Some(h) = &s.host else {
        return;
    };
    udp(h, out);
    one(
        out,
        "flowd_tcp_listen_overflows",
        "Connections a listening socket's full accept queue refused (TcpExt ListenOverflows of flowd's network namespace).",
        h.listen_overflows,
    );
    one(
        out,
        "flowd_tcp_listen_drops",
        "Connection requests a listening socket dropped, overflows included (TcpExt ListenDrops of flowd's network namespace).",
        h.listen_drops,
    );
    one(
        out,
        "flowd_tcp_backlog_drops",
        "Segments dropped because a socket's backlog was full while the socket was owned by user space (TcpExt TCPBacklogDrop of flowd's network namespace).",
        h.tcp_backlog_drops,
    );
    if let Some(cpus) = &h.softnet {
        softnet(cpus, out);
    }
    out.push(Family::counter(
        "flowd_host_stats_read_errors",
        "Scrapes at which a host counter file could not be read or parsed (its families are left out of that scrape).",
        h.read_errors
            .iter()
            .map(|(f, n)| (labels([("file", f)]), Num::U(*n)))
            .collect(),
    ));
}

fn udp(h: &HostStats, out: &mut Vec<Family>) {
    let series: Vec<_> = [("4", h.udp_rcvbuf_errors), ("6", h.udp6_rcvbuf_errors)]
        .into_iter()
        .filter_map(|(ip, v)| Some((labels([("ip_version", ip)]), Num::U(v?))))
        .collect();
    if !series.is_empty() {
        out.push(Family::counter(
            "flowd_udp_rcvbuf_errors",
            "Datagrams dropped because the receiving UDP socket's buffer was full (Udp RcvbufErrors, Udp6RcvbufErrors of flowd's network namespace).",
            series,
        ));
    }
}

fn softnet(cpus: &[Softnet], out: &mut Vec<Family>) {
    let per = |f: fn(&Softnet) -> u64| {
        if cpus.len() > SOFTNET_MAX_CPUS {
            let sum = cpus.iter().map(f).sum();
            return vec![(labels([("cpu", "all")]), Num::U(sum))];
        }
        cpus.iter()
            .map(|c| (labels([("cpu", &c.cpu.to_string())]), Num::U(f(c))))
            .collect()
    };
    out.push(Family::counter(
        "flowd_softnet_dropped",
        "Packets dropped because a CPU's input queue (netdev backlog) was full (/proc/net/softnet_stat column 2).",
        per(|c| c.dropped),
    ));
    out.push(Family::counter(
        "flowd_softnet_time_squeeze",
        "Times a CPU's receive softirq ran out of budget or time with packets left (/proc/net/softnet_stat column 3).",
        per(|c| c.time_squeeze),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::metrics::{Format, encode};

    fn host(cpus: u32) -> HostStats {
        HostStats {
            udp_rcvbuf_errors: Some(13),
            udp6_rcvbuf_errors: None,
            listen_overflows: Some(31),
            listen_drops: Some(37),
            tcp_backlog_drops: None,
            softnet: Some(
                (0..cpus)
                    .map(|cpu| Softnet {
                        cpu,
                        dropped: u64::from(cpu),
                        time_squeeze: 2,
                    })
                    .collect(),
            ),
            read_errors: vec![("/proc/net/snmp", 0), ("/proc/net/netstat", 3)],
        }
    }

    #[test]
    fn host_families_exact_and_missing_left_out() {
        let none = encode(Snapshot::default(), Format::Text004);
        assert!(!none.contains("flowd_softnet") && !none.contains("flowd_udp_rcvbuf"));
        let s = Snapshot {
            host: Some(host(2)),
            ..Snapshot::default()
        };
        let text = encode(s, Format::Text004);
        for line in [
            "flowd_udp_rcvbuf_errors_total{ip_version=\"4\"} 13",
            "flowd_tcp_listen_overflows_total 31",
            "flowd_tcp_listen_drops_total 37",
            "flowd_softnet_dropped_total{cpu=\"0\"} 0",
            "flowd_softnet_dropped_total{cpu=\"1\"} 1",
            "flowd_softnet_time_squeeze_total{cpu=\"1\"} 2",
            "flowd_host_stats_read_errors_total{file=\"/proc/net/netstat\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("ip_version=\"6\""), "{text}");
        assert!(!text.contains("flowd_tcp_backlog_drops"), "{text}");
    }

    #[test]
    fn softnet_summed_above_the_cpu_bound() {
        let n = SOFTNET_MAX_CPUS as u32 + 1;
        let s = Snapshot {
            host: Some(host(n)),
            ..Snapshot::default()
        };
        let text = encode(s, Format::Text004);
        let want = (0..u64::from(n)).sum::<u64>();
        for line in [
            format!("flowd_softnet_dropped_total{{cpu=\"all\"}} {want}"),
            format!("flowd_softnet_time_squeeze_total{{cpu=\"all\"}} {}", 2 * n),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("cpu=\"0\""));
    }
}
