//! `flowd replay FILE`: runs a capture through the same XDP program with
//! `BPF_PROG_TEST_RUN`.
//!
//! Every frame goes through the compiled ingress program exactly as a live
//! packet would, with its original length and capture time in the XDP
//! metadata area ([`flowd_common::ReplayMeta`]); the flow maps are drained into a
//! [`FlowTable`] every [`ReplayOptions::drain_every`] frames and at the end.
//! Test runs see the loopback device (ifindex 1) as their ingress
//! interface, so the replay maps ifindex 1 to counter slot 1 and checks
//! that slot's exact totals against the number of frames it ran.

use std::{
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use flowd_common::{IfaceCounters, counter};
use serde_json::Value;
use thiserror::Error;

use crate::{
    export::metrics::{self, IfaceSnapshot, Snapshot},
    export::{
        groups::PeerGroups,
        tcp::{TcpSignals, TcpSnapshot},
    },
    flowtable::{Ended, Flow, FlowTable, TableConfig},
    loader::LoadError,
    pcap::{CaptureError, CaptureReader},
    record::ended_json,
    scan::{ScanConfig, ScanDetector, Suspect},
    sys::SysError,
};

mod batch;
mod cli;
mod connections;
mod l7_names;
mod output;
mod runner;
#[cfg(test)]
mod tests;

pub use batch::BATCH_BYTES;
use batch::{Batch, flush};
pub use cli::{OutputFormat, ReplayArgs, run};
pub use connections::{Connection, connection_fields, connection_json, connections, reverse_key};
pub use output::{human_bytes, write_output};
use runner::{Drained, Runner, Tables, finish, replay_frames};

/// Test runs present frames on the loopback device: its ifindex is 1 in
/// every network namespace.
pub(super) const TEST_RUN_IFINDEX: u32 = 1;
pub(super) const SLOT: u32 = 1;
/// Bytes of a frame handed to the program; the parser reads at most about
/// 1.1 kB into a frame, and the kernel's limit for a test run's linear data
/// is a page minus head- and tailroom.
pub const MAX_FRAME: usize = 3000;
/// Progress is shown for files larger than this (on a terminal).
pub(super) const PROGRESS_MIN_FILE: u64 = 50_000_000;
pub(super) const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// The kernel refuses test runs on frames shorter than an Ethernet header.
/// A runt goes in as this bare header instead: its EtherType (802.1Q)
/// announces a tag that is not there, so the program counts the frame as
/// truncated, as it would have counted the runt itself.
pub(crate) const RUNT_FRAME: [u8; 14] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 0x00];

/// Tuning of a replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Entries of each flow generation map.
    pub capacity: u32,
    /// Frames between drains. Clamped to `capacity`: a generation then never
    /// holds more flows than it has room for, so no flow update is lost.
    pub drain_every: u64,
    /// A progress line on stderr, overwritten with `\r`.
    pub progress: bool,
    /// Timeouts for the records, on the capture's clock (the daemon's defaults).
    pub table: TableConfig,
    /// Many frames per test run through the replay driver (the default);
    /// `false` runs `flowd_ingress` once per frame. Both run the same
    /// per-frame code on the same frames in the same order.
    pub batched: bool,
    /// Select L7 packets and run them through the L7 engine
    /// ([`Replay::l7_events`]).
    pub l7: bool,
    /// DNS ports besides 53 and 5353 (at most 2 reach the kernel).
    pub l7_dns_ports: Vec<u16>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            capacity: 1 << 17,
            drain_every: 100_000,
            progress: false,
            table: TableConfig::default(),
            batched: true,
            l7: false,
            l7_dns_ports: Vec::new(),
        }
    }
}

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("{}: loading the XDP program for the replay failed: {source}", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: Box<LoadError>,
    },
    #[error("{}: byte {offset}: running packet {packet} through the XDP program failed: {source}", path.display())]
    TestRun {
        path: PathBuf,
        offset: u64,
        packet: u64,
        #[source]
        source: SysError,
    },
    #[error(
        "{}: byte {offset}: the replay driver stopped at packet {packet} of a batch (it returned {status:#x}): the batch was not laid out as it expects",
        path.display()
    )]
    Batch {
        path: PathBuf,
        offset: u64,
        packet: u64,
        status: u32,
    },
    #[error("{}: draining the flow maps failed: {source}", path.display())]
    Drain {
        path: PathBuf,
        #[source]
        source: Box<LoadError>,
    },
    #[error("{}: reading the program's totals failed: {source}", path.display())]
    Totals {
        path: PathBuf,
        #[source]
        source: Box<LoadError>,
    },
    #[error(
        "{}: the XDP program counted {counted} packets on ifindex {TEST_RUN_IFINDEX} but {frames} frames were replayed: test runs did not arrive on the loopback device",
        path.display()
    )]
    Miscounted {
        path: PathBuf,
        counted: u64,
        frames: u64,
    },
}

/// The outcome of one replay.
#[derive(Debug)]
pub struct Replay {
    pub path: PathBuf,
    /// Device name in the records: the file's stem, or "replay".
    pub device: String,
    /// "pcap, little-endian" and the like.
    pub format: String,
    /// Every flow, cumulative over the whole capture (no timeouts): what
    /// the per-5-tuple references compare with.
    pub table: FlowTable,
    /// The flow records as the live daemon would write them: timeouts and
    /// TCP end-of-flow applied with the capture's clock, each with its
    /// `end_reason` (and `state` for TCP). Sorted by start, then key.
    pub ended: Vec<Ended>,
    /// Frames run through the program.
    pub frames: u64,
    /// Bytes of the file read.
    pub file_bytes: u64,
    /// The program's exact ingress counters for the replay.
    pub rx: IfaceCounters,
    pub capacity: u32,
    pub drains: u64,
    pub drained_entries: u64,
    pub last_drain_entries: u64,
    /// `BPF_PROG_TEST_RUN` calls: one per batch (or per frame, unbatched).
    pub test_runs: u64,
    pub elapsed: Duration,
    /// Why the replay stopped before the end of the file (a bad record, a
    /// failed test run) or disagrees with the program's totals. Everything
    /// before it is in `table`.
    pub error: Option<ReplayError>,
    /// TCP health and connection outcomes, as the live exporter has them.
    pub tcp: TcpSnapshot,
    /// Scan suspects found on the capture's clock.
    pub suspects: Vec<Suspect>,
    pub scan_flagged: u64,
    /// With [`ReplayOptions::l7`]: the L7 engine's events (HTTP requests,
    /// DNS queries, TLS handshakes), in the order the engine emitted them.
    pub l7_events: Vec<crate::l7::L7Event>,
    /// With [`ReplayOptions::l7`]: the L7 families (events by kind, DNS
    /// rcodes, HTTP classes, TLS versions, latency, signals, the engine's
    /// parse errors and drops) for [`Replay::metrics_text`].
    pub l7_metrics: Option<crate::export::l7stats::L7Snapshot>,
}

impl Replay {
    /// The flows, sorted by start time, then key.
    pub fn flows(&self) -> Vec<&Flow> {
        let mut v: Vec<&Flow> = self.table.iter().collect();
        v.sort_by(|a, b| (a.first_ns, &a.key).cmp(&(b.first_ns, &b.key)));
        v
    }

    /// The flow records (timeouts applied with the capture's clock), in
    /// the record schema of the live daemon.
    pub fn records(&self) -> Vec<Value> {
        self.ended
            .iter()
            .map(|e| ended_json(e, &self.device))
            .collect()
    }

    /// One [`connection_json`] row per connection.
    pub fn connection_records(&self) -> Vec<Value> {
        connections(&self.table)
            .iter()
            .map(|c| connection_json(c, &self.device))
            .collect()
    }

    /// Frames the program counted in a flow (the rest: non-IP, truncated,
    /// bad headers; or lost, which the summary reports separately).
    pub fn frames_in_flows(&self) -> u64 {
        [
            counter::OUT_FLOW,
            counter::OUT_FRAGMENT_JOINED,
            counter::OUT_FRAGMENT_ORPHAN,
            counter::OUT_L4_TRUNCATED,
        ]
        .iter()
        .map(|&i| self.rx.c[i])
        .sum()
    }

    /// The Prometheus exposition of the replay (text format 0.0.4).
    pub fn metrics_text(&self) -> String {
        let snapshot = Snapshot {
            ifaces: vec![IfaceSnapshot {
                device: self.device.clone(),
                rx: self.rx,
                tx: IfaceCounters::default(),
                xdp_mode: None,
                tc_attached: false,
                af_xdp: false,
                speed_bps: None,
            }],
            flows_active: 0,
            flows_started: self.ended.len() as u64,
            flows_ended: crate::flowtable::EndReason::ALL
                .iter()
                .map(|r| {
                    (
                        r.as_str(),
                        self.ended.iter().filter(|e| e.reason == *r).count() as u64,
                    )
                })
                .collect(),
            tcp: self.tcp.clone(),
            scan_suspects: self.suspects.len() as u64,
            scan_flagged: self.scan_flagged,
            flow_map_capacity: u64::from(self.capacity),
            drains: self.drains,
            drained_entries: self.drained_entries,
            last_drain_entries: self.last_drain_entries,
            l7_metrics: self.l7_metrics.clone(),
            ..Snapshot::default()
        };
        metrics::encode(snapshot, metrics::Format::Text004)
    }

    /// The one-line summary for stderr.
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.frames as f64 / secs
        } else {
            0.0
        };
        let mut s = format!(
            "flowd replay: {} ({}): {} frames, {} flows, {} on the wire",
            self.path.display(),
            self.format,
            self.frames,
            self.table.len(),
            human_bytes(self.rx.c[counter::BYTES]),
        );
        let outside = self.frames.saturating_sub(self.frames_in_flows());
        if outside > 0 {
            let parts: Vec<String> = counter::OUTCOMES
                .filter(|&i| {
                    !matches!(
                        i,
                        counter::OUT_FLOW
                            | counter::OUT_FRAGMENT_JOINED
                            | counter::OUT_FRAGMENT_ORPHAN
                            | counter::OUT_L4_TRUNCATED
                    ) && self.rx.c[i] > 0
                })
                .map(|i| format!("{} {}", self.rx.c[i], counter::NAMES[i]))
                .collect();
            s += &format!("; {outside} frames in no flow ({})", parts.join(", "));
        }
        let lost = self.rx.c[counter::OVERFLOW_PACKETS];
        if lost > 0 {
            s += &format!("; {lost} packets LOST to a full flow map");
        }
        s += &format!("; {secs:.3} s, {rate:.0} frames/s");
        s
    }
}

/// The device name for a capture: its file stem, or "replay".
pub fn device_name(path: &Path) -> String {
    match path.file_stem().map(|s| s.to_string_lossy()) {
        Some(s) if !s.is_empty() => s.into_owned(),
        _ => "replay".into(),
    }
}

/// Replays one capture file.
///
/// `Err` means nothing was replayed: the file could not be opened or has no
/// valid header, or the program could not be loaded. A bad record later in
/// the file, an unsupported link type, a failed test run or totals that
/// disagree end up in [`Replay::error`], with every frame before it counted.
pub fn replay_file(path: &Path, opts: &ReplayOptions) -> Result<Replay, ReplayError> {
    let started = Instant::now();
    let mut reader = CaptureReader::open(path)?;
    // Two views: cumulative per key (no timeouts, no bound), and records
    // with the live daemon's timeouts on the capture's clock.
    let tables = Tables {
        cumulative: FlowTable::new(TableConfig {
            max_flows: 0,
            ..TableConfig::default()
        }),
        records: FlowTable::new(TableConfig {
            max_flows: 0,
            ..opts.table
        }),
        ended: Vec::new(),
        tcp: TcpSignals::new(PeerGroups::new(
            &crate::export::groups::default_peer_groups(),
            crate::export::groups::DEFAULT_PEER_UNMATCHED,
        )),
        scan: ScanDetector::new(ScanConfig::default()),
        device: device_name(path),
    };
    std::thread::scope(|s| {
        let (to_tables, drains) = mpsc::sync_channel(4);
        let worker = s.spawn(move || tables.run(drains));
        // `move`: the sender goes when replay_frames is done with it,
        // which ends the table thread's loop.
        let send = move |d: Drained| {
            // Fails only if the table thread panicked: join() reports that.
            let _ = to_tables.send(d);
        };
        let r = replay_frames(path, opts, &mut reader, send);
        let tables = worker
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        let (mut replay, last_drain_ts) = r?;
        finish(&mut replay, tables, last_drain_ts, &reader);
        replay.elapsed = started.elapsed();
        Ok(replay)
    })
}
