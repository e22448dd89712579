//! The host's socket-level overflow counters and softnet (issue 14), read
//! from flowd's own network namespace (`/proc/net` is the reading
//! thread's namespace) at scrape time: the kernel keeps them cumulative,
//! so a read per scrape is as exact as one per drain and costs nothing
//! between scrapes.
//!
//! - `/proc/net/snmp` `Udp: RcvbufErrors`, `/proc/net/snmp6`
//!   `Udp6RcvbufErrors` (absent without IPv6);
//! - `/proc/net/netstat` `TcpExt: ListenOverflows ListenDrops TCPBacklogDrop`;
//! - `/proc/net/softnet_stat`, per CPU `dropped` and `time_squeeze` (hex
//!   columns 2 and 3; the CPU is column 13 where the kernel prints it,
//!   else the line's position).
//!
//! Hand-written: the `procfs` crate is not in the tree and its `snmp`
//! reader covers neither `TcpExt` nor `softnet_stat`; the formats are a
//! header line of names over a line of values, a name/value list, and
//! hex columns. A file that is missing or unparsable leaves its counters
//! out (`None`), is logged once and counted in [`HostStats::read_errors`];
//! nothing here panics.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use tracing::warn;

/// One CPU's softnet counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Softnet {
    pub cpu: u32,
    /// Packets dropped because the CPU's input queue (backlog) was full.
    pub dropped: u64,
    /// Times `net_rx_action` ran out of budget or time with work left.
    pub time_squeeze: u64,
}

/// One reading of the host counters; `None`: the file or field was not there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostStats {
    pub udp_rcvbuf_errors: Option<u64>,
    pub udp6_rcvbuf_errors: Option<u64>,
    pub listen_overflows: Option<u64>,
    pub listen_drops: Option<u64>,
    pub tcp_backlog_drops: Option<u64>,
    pub softnet: Option<Vec<Softnet>>,
    /// (file, reads that failed since start), every file.
    pub read_errors: Vec<(&'static str, u64)>,
}

/// The files read, in the order of [`HostStats::read_errors`] (the
/// `file` label; the reader's root replaces `/proc/net`).
pub const FILES: [&str; 4] = [
    "/proc/net/snmp",
    "/proc/net/snmp6",
    "/proc/net/netstat",
    "/proc/net/softnet_stat",
];

/// Reads the files under one root and counts their failed reads (the
/// daemon has one, [`HostReader::proc`], for all scrapes).
#[derive(Debug)]
pub struct HostReader {
    root: PathBuf,
    errors: [AtomicU64; 4],
    logged: [AtomicBool; 4],
}

impl HostReader {
    /// `/proc/net`: the reading process' network namespace.
    pub fn proc() -> Self {
        Self::new("/proc/net")
    }

    /// A reader of the four files under `root` (a test's directory).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            errors: Default::default(),
            logged: Default::default(),
        }
    }

    fn path(&self, i: usize) -> PathBuf {
        let name = FILES[i].rsplit('/').next().unwrap_or(FILES[i]);
        self.root.join(name)
    }

    /// Counts a failed read of file `i`, logging only the first.
    fn failed(&self, i: usize, why: &str) {
        self.errors[i].fetch_add(1, Ordering::Relaxed);
        if !self.logged[i].swap(true, Ordering::Relaxed) {
            warn!(
                file = %self.path(i).display(),
                error = why,
                "host counter file unreadable; its metrics are left out (logged once, counted in flowd_host_stats_read_errors_total)"
            );
        }
    }

    /// Reads and parses file `i` with `parse`; `None` (counted) on failure.
    fn file<T>(&self, i: usize, parse: impl Fn(&str) -> Option<T>) -> Option<T> {
        match std::fs::read_to_string(self.path(i)) {
            Ok(text) => {
                let v = parse(&text);
                if v.is_none() {
                    self.failed(i, "none of the fields flowd reads parsed");
                }
                v
            }
            Err(e) => {
                self.failed(i, &e.to_string());
                None
            }
        }
    }

    /// One reading of the four files.
    pub fn read(&self) -> HostStats {
        let snmp = self.file(0, |t| pair_table(t, "Udp", "RcvbufErrors"));
        // snmp6 is absent on a kernel without IPv6: that is no error.
        let udp6 = if self.path(1).exists() {
            self.file(1, |t| name_value(t, "Udp6RcvbufErrors"))
        } else {
            None
        };
        let netstat = self.file(2, |t| {
            let f = |n| pair_table(t, "TcpExt", n);
            let v = (f("ListenOverflows"), f("ListenDrops"), f("TCPBacklogDrop"));
            (v != (None, None, None)).then_some(v)
        });
        let (listen_overflows, listen_drops, tcp_backlog_drops) =
            netstat.unwrap_or((None, None, None));
        HostStats {
            udp_rcvbuf_errors: snmp,
            udp6_rcvbuf_errors: udp6,
            listen_overflows,
            listen_drops,
            tcp_backlog_drops,
            softnet: self.file(3, softnet_stat),
            read_errors: FILES
                .iter()
                .zip(&self.errors)
                .map(|(f, n)| (*f, n.load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

/// `field` of `proto` in the `/proc/net/snmp` and `/proc/net/netstat`
/// layout: a line `Proto: Name1 Name2 ...` followed by `Proto: v1 v2 ...`.
pub fn pair_table(text: &str, proto: &str, field: &str) -> Option<u64> {
    let prefix = format!("{proto}:");
    let mut lines = text.lines();
    while let Some(names) = lines.next() {
        let Some(names) = names.strip_prefix(&prefix) else {
            continue;
        };
        let values = lines.next()?.strip_prefix(&prefix)?;
        let at = names.split_whitespace().position(|n| n == field)?;
        return values.split_whitespace().nth(at)?.parse().ok();
    }
    None
}

/// `name`'s value in the `/proc/net/snmp6` layout (`Name <spaces> value`).
pub fn name_value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == name).then(|| it.next()?.parse().ok())?
    })
}

/// `/proc/net/softnet_stat`: one line per online CPU, hex columns; column
/// 2 is `dropped`, 3 `time_squeeze`, 13 (since 5.10) the CPU. `None`
/// when a line is short or not hex, or there is none.
pub fn softnet_stat(text: &str) -> Option<Vec<Softnet>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let cols = line
            .split_whitespace()
            .map(|c| u64::from_str_radix(c, 16).ok())
            .collect::<Option<Vec<u64>>>()?;
        if cols.len() < 3 {
            return None;
        }
        let cpu = cols.get(12).map_or(i as u64, |c| *c);
        out.push(Softnet {
            cpu: u32::try_from(cpu).ok()?,
            dropped: cols[1],
            time_squeeze: cols[2],
        });
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `/proc/net/snmp` (6.8 kernel), values edited to be distinct.
    const SNMP: &str = "\
Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards InDelivers OutRequests OutDiscards OutNoRoutes ReasmTimeout ReasmReqds ReasmOKs ReasmFails FragOKs FragFails FragCreates OutTransmits
Ip: 1 64 1234 0 0 0 0 0 1230 1500 0 0 0 0 0 0 0 0 0 1500
Icmp: InMsgs InErrors InCsumErrors InDestUnreachs InTimeExcds InParmProbs InSrcQuenchs InRedirects InEchos InEchoReps InTimestamps InTimestampReps InAddrMasks InAddrMaskReps OutMsgs OutErrors OutRateLimitGlobal OutRateLimitHost OutDestUnreachs OutTimeExcds OutParmProbs OutSrcQuenchs OutRedirects OutEchos OutEchoReps OutTimestamps OutTimestampReps OutAddrMasks OutAddrMaskReps
Icmp: 3 0 0 3 0 0 0 0 0 0 0 0 0 0 3 0 0 0 3 0 0 0 0 0 0 0 0 0 0
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 40 20 0 0 2 900 950 1 0 4 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 210 5 17 216 13 0 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 99 0 0 0 0
";

    /// A real `/proc/net/netstat` (6.8 kernel, trimmed of its `IpExt` and
    /// `MPTcpExt` tails), values edited to be distinct.
    const NETSTAT: &str = "\
TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts PruneCalled RcvPruned OfoPruned OutOfWindowIcmps LockDroppedIcmps ArpFilter TW TWRecycled TWKilled PAWSActive PAWSEstab BeyondWindow TSEcrRejected PAWSOldAck PAWSTimewait DelayedACKs DelayedACKLocked DelayedACKLost ListenOverflows ListenDrops TCPHPHits TCPPureAcks TCPHPAcks TCPRenoRecovery TCPSackRecovery TCPSACKReneging TCPSACKReorder TCPRenoReorder TCPTSReorder TCPFullUndo TCPPartialUndo TCPDSACKUndo TCPLossUndo TCPLostRetransmit TCPRenoFailures TCPSackFailures TCPLossFailures TCPFastRetrans TCPSlowStartRetrans TCPTimeouts TCPLossProbes TCPLossProbeRecovery TCPRenoRecoveryFail TCPSackRecoveryFail TCPRcvCollapsed TCPDSACKOldSent TCPDSACKOfoSent TCPDSACKRecv TCPDSACKOfoRecv TCPAbortOnData TCPAbortOnClose TCPAbortOnMemory TCPAbortOnTimeout TCPAbortOnLinger TCPAbortFailed TCPMemoryPressures TCPMemoryPressuresChrono TCPSACKDiscard TCPDSACKIgnoredOld TCPDSACKIgnoredNoUndo TCPSpuriousRTOs TCPMD5NotFound TCPMD5Unexpected TCPMD5Failure TCPSackShifted TCPSackMerged TCPSackShiftFallback TCPBacklogCoalesce TCPBacklogDrop
TcpExt: 0 0 0 0 0 0 0 0 0 0 72 0 0 0 0 0 0 0 0 5 0 8 31 37 253 361 435 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 7 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 12 41
IpExt: InNoRoutes InTruncatedPkts InMcastPkts OutMcastPkts InBcastPkts OutBcastPkts InOctets OutOctets
IpExt: 0 0 0 0 0 0 123456 654321
";

    /// A real `/proc/net/snmp6` excerpt.
    const SNMP6: &str = "\
Udp6InDatagrams                 	44
Udp6NoPorts                     	1
Udp6InErrors                    	9
Udp6OutDatagrams                	40
Udp6RcvbufErrors                	9
Udp6SndbufErrors                	0
UdpLite6RcvbufErrors            	0
";

    /// A real 6.8 `/proc/net/softnet_stat` of 2 CPUs, CPU 1's dropped set.
    const SOFTNET: &str = "\
06e6ee57 00000000 00000011 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000
0718b063 0000002a 00000009 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000000 00000000
";

    #[test]
    fn snmp_udp_rcvbuf_errors_not_udplites() {
        assert_eq!(pair_table(SNMP, "Udp", "RcvbufErrors"), Some(13));
        assert_eq!(pair_table(SNMP, "UdpLite", "RcvbufErrors"), Some(99));
        assert_eq!(pair_table(SNMP, "Tcp", "MaxConn"), None, "-1 is no u64");
        assert_eq!(pair_table(SNMP, "Udp", "NoSuchField"), None);
    }

    #[test]
    fn netstat_listen_and_backlog_counters() {
        assert_eq!(pair_table(NETSTAT, "TcpExt", "ListenOverflows"), Some(31));
        assert_eq!(pair_table(NETSTAT, "TcpExt", "ListenDrops"), Some(37));
        assert_eq!(pair_table(NETSTAT, "TcpExt", "TCPBacklogDrop"), Some(41));
        assert_eq!(pair_table(NETSTAT, "IpExt", "OutOctets"), Some(654_321));
    }

    #[test]
    fn snmp6_name_value() {
        assert_eq!(name_value(SNMP6, "Udp6RcvbufErrors"), Some(9));
        assert_eq!(name_value(SNMP6, "Udp6InErrors"), Some(9));
        assert_eq!(name_value(SNMP6, "Udp6Nope"), None);
    }

    #[test]
    fn softnet_per_cpu_hex_columns() {
        assert_eq!(
            softnet_stat(SOFTNET),
            Some(vec![
                Softnet {
                    cpu: 0,
                    dropped: 0,
                    time_squeeze: 0x11
                },
                Softnet {
                    cpu: 1,
                    dropped: 42,
                    time_squeeze: 9
                },
            ])
        );
        // An old kernel's 10 columns: the CPU is the line.
        let old = "00000001 00000002 00000003 0 0 0 0 0 0 0\n0 0000000a 0000000b 0 0 0 0 0 0 0\n";
        assert_eq!(softnet_stat(old).unwrap()[1].time_squeeze, 11);
        assert_eq!(softnet_stat(old).unwrap()[1].cpu, 1);
    }

    #[test]
    fn unparsable_and_truncated_files_are_none_not_panics() {
        assert_eq!(softnet_stat(""), None);
        assert_eq!(softnet_stat("zz 00 00\n"), None);
        assert_eq!(softnet_stat("00000001 00000002\n"), None);
        assert_eq!(
            pair_table("Udp: InDatagrams RcvbufErrors\n", "Udp", "RcvbufErrors"),
            None
        );
        assert_eq!(
            pair_table("Udp: RcvbufErrors\nUdp: x\n", "Udp", "RcvbufErrors"),
            None
        );
        assert_eq!(
            pair_table("Udp: RcvbufErrors\nTcp: 1\n", "Udp", "RcvbufErrors"),
            None
        );
        assert_eq!(name_value("Udp6RcvbufErrors\n", "Udp6RcvbufErrors"), None);
    }

    #[test]
    fn missing_and_unparsable_files_left_out_and_counted() {
        let dir = std::env::temp_dir().join(format!("flowd-hoststats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("snmp"), SNMP).unwrap();
        std::fs::write(dir.join("softnet_stat"), "not hex at all\n").unwrap();
        // No snmp6 (a kernel without IPv6: no error), no netstat.
        let r = HostReader::new(&dir);
        for round in 1..=2 {
            let h = r.read();
            assert_eq!(h.udp_rcvbuf_errors, Some(13));
            assert_eq!(h.udp6_rcvbuf_errors, None);
            assert_eq!(
                (h.listen_overflows, h.listen_drops, h.tcp_backlog_drops),
                (None, None, None)
            );
            assert_eq!(h.softnet, None);
            assert_eq!(
                h.read_errors,
                vec![
                    ("/proc/net/snmp", 0),
                    ("/proc/net/snmp6", 0),
                    ("/proc/net/netstat", round),
                    ("/proc/net/softnet_stat", round),
                ]
            );
        }
        std::fs::write(dir.join("netstat"), NETSTAT).unwrap();
        std::fs::write(dir.join("snmp6"), SNMP6).unwrap();
        let h = r.read();
        assert_eq!(
            (h.listen_overflows, h.listen_drops, h.tcp_backlog_drops),
            (Some(31), Some(37), Some(41))
        );
        assert_eq!(h.udp6_rcvbuf_errors, Some(9));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_this_namespace() {
        let h = HostReader::proc().read();
        // Every Linux with procfs has these two; the errors list names all files.
        assert!(h.udp_rcvbuf_errors.is_some() && h.listen_overflows.is_some());
        assert_eq!(h.read_errors.len(), FILES.len());
    }
}
