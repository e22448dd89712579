//! `flowd replay FILE`: runs a capture through the same XDP program with
//! `BPF_PROG_TEST_RUN`.
//!
//! Every frame goes through the compiled ingress program exactly as a live
//! packet would, with its original length and capture time in the XDP
//! metadata area ([`ReplayMeta`]); the flow maps are drained into a
//! [`FlowTable`] every [`ReplayOptions::drain_every`] frames and at the end.
//! Test runs see the loopback device (ifindex 1) as their ingress
//! interface, so the replay maps ifindex 1 to counter slot 1 and checks
//! that slot's exact totals against the number of frames it ran.

use std::{
    collections::HashSet,
    fs,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use flowd_common::{
    DIR_INGRESS, FlowKey, FlowStats, IfaceCounters, ReplayMeta, counter,
    proto::{ip, tcp},
    replay as wire,
};
use serde_json::{Value, json};
use thiserror::Error;

use crate::{
    clock::{TimeBase, rfc3339_ns},
    export::metrics::{self, IfaceSnapshot, Snapshot},
    export::{
        groups::PeerGroups,
        tcp::{TcpSignals, TcpSnapshot},
    },
    flowtable::{Ended, Flow, FlowTable, TableConfig},
    loader::{Datapath, LoadError, Programs},
    pcap::{CaptureError, CaptureErrorKind, CaptureReader, LinkLayer},
    record::{self, Field, Fields, ended_json},
    scan::{ScanConfig, ScanDetector, Suspect},
    sys::{self, SysError},
};

/// Test runs present frames on the loopback device: its ifindex is 1 in
/// every network namespace.
const TEST_RUN_IFINDEX: u32 = 1;
const SLOT: u32 = 1;
/// Bytes of a frame handed to the program; the parser reads at most about
/// 1.1 kB into a frame, and the kernel's limit for a test run's linear data
/// is a page minus head- and tailroom.
pub const MAX_FRAME: usize = 3000;
/// Progress is shown for files larger than this (on a terminal).
const PROGRESS_MIN_FILE: u64 = 50_000_000;
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// The kernel refuses test runs on frames shorter than an Ethernet header.
/// A runt goes in as this bare header instead: its EtherType (802.1Q)
/// announces a tag that is not there, so the program counts the frame as
/// truncated, as it would have counted the runt itself.
const RUNT_FRAME: [u8; 14] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 0x00];

/// Arguments of `flowd replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The capture file (pcap or pcapng).
    pub file: PathBuf,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Jsonl)]
    pub format: OutputFormat,
    /// One row per connection (a flow and its reverse), with both directions' counters.
    #[arg(long)]
    pub bidirectional: bool,
    /// Also write the Prometheus exposition (text format 0.0.4) of the replay to FILE.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Seconds of capture time without a packet before a flow's record ends.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: u64,
    /// Seconds of capture time after which a long flow's record ends.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub active_timeout: u64,
    /// Seconds a closed TCP connection stays before its record ends.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub tcp_close_grace: u64,
    /// Also send the flow records to an IPFIX collector (IP:port, UDP), as
    /// `flowd run --ipfix` does for live flows.
    #[arg(long, value_name = "ADDR")]
    pub ipfix: Option<std::net::SocketAddr>,
}

/// How `flowd replay` prints its flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON object per line, the record shape of `/api/v1/flows`.
    #[default]
    Jsonl,
    /// Aligned columns with human-readable units.
    Table,
    /// A header line and the same keys as jsonl.
    Csv,
}

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
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            capacity: 1 << 17,
            drain_every: 100_000,
            progress: false,
            table: TableConfig::default(),
            batched: true,
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

/// The replay's flow tables and the records ended so far. They live on a
/// thread of their own while the replay runs (the kernel work and the
/// table work overlap); it gets the drains in order, so the result is the
/// same as doing both on one thread.
struct Tables {
    cumulative: FlowTable,
    records: FlowTable,
    ended: Vec<Ended>,
    tcp: TcpSignals,
    scan: ScanDetector,
    device: String,
}

/// One drain for the tables: its entries, and the capture time at which to
/// scan and expire afterwards (none for the last drain, or after an error).
struct Drained {
    entries: Vec<(FlowKey, FlowStats)>,
    expire_at: Option<u64>,
}

impl Tables {
    fn run(mut self, drains: mpsc::Receiver<Drained>) -> Self {
        for d in drains {
            for (k, v) in &d.entries {
                self.cumulative.apply(k, v, TimeBase::Capture);
                self.records.apply(k, v, TimeBase::Capture);
                self.tcp.absorb(k, v, &self.device);
            }
            if let Some(ts) = d.expire_at {
                self.scan.observe(&self.records, ts);
                let ended = self.records.expire(ts);
                for e in &ended {
                    self.tcp.connection(e, &self.device);
                }
                self.ended.extend(ended);
            }
        }
        self
    }
}

/// The loaded program and the drain bookkeeping.
struct Runner {
    dp: Datapath,
    batched: bool,
    test_runs: std::cell::Cell<u64>,
    drains: u64,
    drained_entries: u64,
    last_drain_entries: u64,
}

impl Runner {
    /// Loads only the program the replay runs: the replay driver, or for
    /// one frame per test run `flowd_ingress`. Never the TC program.
    fn load(capacity: u32, batched: bool) -> Result<Self, LoadError> {
        let mut dp = Datapath::load_programs(
            capacity,
            Programs {
                ingress: !batched,
                egress: false,
                replay: batched,
            },
        )?;
        dp.set_slot(TEST_RUN_IFINDEX, SLOT)?;
        // A capture is all "ingress": no RTT sample could be paired, and
        // nothing reads the RTT ring. The flow counters do not depend on it.
        dp.set_rtt(false)?;
        // Fails here, not per frame, if the program is missing.
        if batched {
            dp.replay_fd()?;
        } else {
            dp.ingress_fd()?;
        }
        Ok(Self {
            dp,
            batched,
            test_runs: Default::default(),
            drains: 0,
            drained_entries: 0,
            last_drain_entries: 0,
        })
    }

    /// Runs one frame through the ingress program.
    fn run(&self, meta: &[u8], frame: &[u8]) -> Result<(), SysError> {
        let prog = self
            .dp
            .ingress_fd()
            .expect("the ingress program was found at load");
        self.test_runs.set(self.test_runs.get() + 1);
        sys::xdp_test_run(prog, meta, frame, 1).map(drop)
    }

    /// Runs a batch through the replay driver: its return value (the
    /// iterations of its walk, or [`wire::NONLINEAR`]).
    fn run_batch(&self, batch: &mut Batch) -> Result<u32, SysError> {
        let prog = self
            .dp
            .replay_fd()
            .expect("the replay driver was found at load");
        self.test_runs.set(self.test_runs.get() + 1);
        sys::xdp_test_run_buf(prog, batch.bytes(), 0, 1).map(|r| r.retval)
    }

    /// Drains the flow maps into `out` (also the entries read before an error).
    fn drain(&mut self, both: bool, out: &mut Vec<(FlowKey, FlowStats)>) -> Result<(), LoadError> {
        let sink = |k: &FlowKey, v: &FlowStats| out.push((*k, *v));
        let n = if both {
            self.dp.drain_all(sink)?
        } else {
            self.dp.drain(sink)?
        } as u64;
        self.drains += 1;
        self.drained_entries += n;
        self.last_drain_entries = n;
        Ok(())
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

/// Runs every frame of the capture through the program and hands each
/// drain to `send`. The replay it returns has no flows yet (see [`finish`]).
fn replay_frames(
    path: &Path,
    opts: &ReplayOptions,
    reader: &mut CaptureReader,
    send: impl Fn(Drained),
) -> Result<(Replay, u64), ReplayError> {
    let started = Instant::now();
    let file_len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let drain_every = opts.drain_every.clamp(1, u64::from(opts.capacity.max(1)));
    let mut last_drain_ts = 0u64;
    // Loaded at the first frame: a file that fails early needs no program.
    let mut runner: Option<Runner> = None;
    let mut scratch = Vec::with_capacity(MAX_FRAME);
    let mut batch = Batch::new();
    // Frames run through the program; `queued` also counts those waiting
    // in `batch` (the drain schedule counts frames as they are read).
    let mut frames = 0u64;
    let mut queued = 0u64;
    let mut error = None;
    let mut last_progress = Instant::now();
    let path_buf = path.to_path_buf();

    loop {
        let p = match reader.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                error = Some(ReplayError::Capture(e));
                break;
            }
        };
        let Some(layer) = LinkLayer::from_link_type(p.link_type) else {
            error = Some(ReplayError::Capture(CaptureError {
                path: path_buf.clone(),
                offset: p.offset,
                kind: CaptureErrorKind::UnsupportedLinkType {
                    link_type: p.link_type,
                    packet: p.number,
                },
            }));
            break;
        };
        let r = match &mut runner {
            Some(r) => r,
            None => runner.insert(Runner::load(opts.capacity, opts.batched).map_err(|source| {
                ReplayError::Load {
                    path: path_buf.clone(),
                    source: Box::new(source),
                }
            })?),
        };
        let mut frame = layer.to_ethernet(p.data, MAX_FRAME, &mut scratch);
        if frame.len() < RUNT_FRAME.len() {
            frame = &RUNT_FRAME;
        }
        let meta = ReplayMeta::new(p.orig_len, p.ts_ns).to_bytes();
        if r.batched {
            if !batch.fits(frame.len())
                && let Err(e) = flush(r, &mut batch, &mut frames, &path_buf)
            {
                error = Some(e);
                break;
            }
            batch.push(&meta, frame, p.offset, p.number);
        } else {
            if let Err(source) = r.run(&meta, frame) {
                error = Some(ReplayError::TestRun {
                    path: path_buf.clone(),
                    offset: p.offset,
                    packet: p.number,
                    source,
                });
                break;
            }
            frames += 1;
        }
        queued += 1;
        // Drain every `drain_every` frames, and every second of capture
        // time so timeouts run on the capture's clock as they would live.
        let ts = p.ts_ns;
        if last_drain_ts == 0 {
            last_drain_ts = ts;
        }
        if queued.is_multiple_of(drain_every) || ts.saturating_sub(last_drain_ts) >= 1_000_000_000 {
            // The frames before the drain run before it, as one by one.
            if let Err(e) = flush(r, &mut batch, &mut frames, &path_buf) {
                error = Some(e);
                break;
            }
            let mut entries = Vec::new();
            let drained = r.drain(false, &mut entries);
            send(Drained {
                entries,
                expire_at: drained.is_ok().then_some(ts),
            });
            if let Err(source) = drained {
                error = Some(ReplayError::Drain {
                    path: path_buf.clone(),
                    source: Box::new(source),
                });
                break;
            }
            last_drain_ts = ts;
        }
        if opts.progress && queued.is_multiple_of(4096) && last_progress.elapsed() >= PROGRESS_EVERY
        {
            last_progress = Instant::now();
            progress(path, reader.offset(), file_len, frames, started.elapsed());
        }
    }
    if opts.progress {
        // Clear the progress line.
        eprint!("\r\x1b[2K");
    }

    let mut rx = IfaceCounters::default();
    let (mut drains, mut drained_entries, mut last_drain_entries, mut test_runs) = (0, 0, 0, 0);
    if let Some(mut r) = runner {
        // Frames read before a bad record (or the end) still count.
        if let Err(e) = flush(&r, &mut batch, &mut frames, &path_buf) {
            error.get_or_insert(e);
        }
        let mut entries = Vec::new();
        let drained = r.drain(true, &mut entries);
        send(Drained {
            entries,
            expire_at: None,
        });
        if let Err(source) = drained {
            error.get_or_insert(ReplayError::Drain {
                path: path_buf.clone(),
                source: Box::new(source),
            });
        }
        match r.dp.totals(SLOT, DIR_INGRESS) {
            Ok(t) => rx = t,
            Err(source) => {
                error.get_or_insert(ReplayError::Totals {
                    path: path_buf.clone(),
                    source: Box::new(source),
                });
            }
        }
        if rx.c[counter::PACKETS] != frames {
            error.get_or_insert(ReplayError::Miscounted {
                path: path_buf.clone(),
                counted: rx.c[counter::PACKETS],
                frames,
            });
        }
        (drains, drained_entries, last_drain_entries, test_runs) = (
            r.drains,
            r.drained_entries,
            r.last_drain_entries,
            r.test_runs.get(),
        );
    }
    let replay = Replay {
        tcp: TcpSnapshot::default(),
        suspects: Vec::new(),
        scan_flagged: 0,
        device: device_name(path),
        path: path_buf,
        format: reader.format_name(),
        table: FlowTable::default(),
        ended: Vec::new(),
        frames,
        file_bytes: reader.offset(),
        rx,
        capacity: opts.capacity,
        drains,
        drained_entries,
        last_drain_entries,
        test_runs,
        elapsed: started.elapsed(),
        error,
    };
    Ok((replay, last_drain_ts))
}

/// Ends the replay's records and fills in its flows, once every drain has
/// reached the tables.
fn finish(replay: &mut Replay, mut tables: Tables, last_drain_ts: u64, reader: &CaptureReader) {
    // Judge the last flows as if the capture had gone on a little longer.
    let grace = ScanConfig::default().answer_grace_ns;
    tables
        .scan
        .observe(&tables.records, last_drain_ts.saturating_add(grace));
    let mut ended = tables.ended;
    let last = tables.records.end_all();
    for e in &last {
        tables.tcp.connection(e, &tables.device);
    }
    ended.extend(last);
    ended.sort_by(|a, b| (a.flow.first_ns, &a.flow.key).cmp(&(b.flow.first_ns, &b.flow.key)));
    replay.tcp = tables.tcp.snapshot();
    replay.suspects = tables.scan.suspects();
    replay.scan_flagged = tables.scan.flagged_total();
    replay.table = tables.cumulative;
    replay.ended = ended;
    replay.file_bytes = reader.offset();
}

/// Bytes of one batch: a test run's linear data is at most a page minus
/// the XDP headroom (256) and `skb_shared_info` (320 bytes on this kernel
/// kind); the driver refuses a batch that is not linear, and [`flush`] then
/// runs its frames one per batch and lowers the size for the rest.
pub const BATCH_BYTES: usize = 4096 - 256 - 320;
const _: () = assert!(BATCH_BYTES <= wire::MAX_BATCH);

/// Frames waiting for one test run of the replay driver, laid out as it
/// reads them ([`flowd_common::replay`]): the end mark, then chunks of
/// `meta | frame | len` in reverse capture order, filled from the end of
/// the buffer toward its front.
struct Batch {
    buf: Box<[u8; BATCH_BYTES]>,
    /// The chunks occupy `buf[start..]`.
    start: usize,
    /// Bytes a batch may use (lowered if the kernel's linear limit is smaller).
    limit: usize,
    /// (file offset, packet number) of each frame, in capture order.
    frames: Vec<(u64, u64)>,
}

impl Batch {
    fn new() -> Self {
        Self {
            buf: Box::new([0; BATCH_BYTES]),
            start: BATCH_BYTES,
            limit: BATCH_BYTES,
            frames: Vec::with_capacity(BATCH_BYTES / (wire::CHUNK_OVERHEAD + wire::MIN_FRAME)),
        }
    }

    fn fits(&self, frame_len: usize) -> bool {
        BATCH_BYTES - self.start + frame_len + wire::CHUNK_OVERHEAD + wire::END_CHUNK.len()
            <= self.limit
    }

    /// Adds a frame (the caller checked [`Batch::fits`], or the batch is
    /// empty: one frame of at most [`MAX_FRAME`] bytes always fits).
    fn push(&mut self, meta: &[u8; 16], frame: &[u8], offset: u64, number: u64) {
        self.start = wire::put_chunk(&mut self.buf[..], self.start, meta, frame);
        self.frames.push((offset, number));
    }

    /// The test run's data: the end mark and the chunks.
    fn bytes(&mut self) -> &[u8] {
        let at = wire::put_end_mark(&mut self.buf[..], self.start);
        &self.buf[at..]
    }

    fn clear(&mut self) {
        self.start = BATCH_BYTES;
        self.frames.clear();
    }
}

/// Runs the frames waiting in `batch` and counts them into `frames`.
fn flush(r: &Runner, batch: &mut Batch, frames: &mut u64, path: &Path) -> Result<(), ReplayError> {
    let n = batch.frames.len();
    if n == 0 {
        return Ok(());
    }
    let first = batch.frames[0];
    let status = r.run_batch(batch).map_err(|source| ReplayError::TestRun {
        path: path.to_path_buf(),
        offset: first.0,
        packet: first.1,
        source,
    })?;
    if status == wire::NONLINEAR && n > 1 {
        // Nothing ran: the kernel's linear limit is smaller than assumed.
        return rerun_one_by_one(r, batch, frames, path);
    }
    // Iterations of the driver's walk: every frame, then the end mark.
    if status as usize == n + 1 {
        *frames += n as u64;
        batch.clear();
        return Ok(());
    }
    let ran = (status as usize).saturating_sub(1).min(n - 1);
    *frames += ran as u64;
    let at = batch.frames[ran];
    Err(ReplayError::Batch {
        path: path.to_path_buf(),
        offset: at.0,
        packet: at.1,
        status,
    })
}

/// Runs a batch the kernel would not take as linear data one frame per
/// batch, and keeps later batches to that size.
fn rerun_one_by_one(
    r: &Runner,
    batch: &mut Batch,
    frames: &mut u64,
    path: &Path,
) -> Result<(), ReplayError> {
    let all = std::mem::replace(batch, Batch::new());
    batch.limit = MAX_FRAME + wire::CHUNK_OVERHEAD + wire::END_CHUNK.len();
    // Chunks from the buffer's end: the first frame's is last.
    let mut end = BATCH_BYTES;
    for &(offset, number) in &all.frames {
        let (meta, frame, start) =
            wire::chunk_before(&all.buf[..], end).expect("a chunk this batch wrote");
        batch.push(&meta, frame, offset, number);
        flush(r, batch, frames, path)?;
        end = start;
    }
    Ok(())
}

fn progress(path: &Path, offset: u64, file_len: u64, frames: u64, elapsed: Duration) {
    let pct = if file_len > 0 {
        offset as f64 * 100.0 / file_len as f64
    } else {
        0.0
    };
    let rate = frames as f64 / elapsed.as_secs_f64().max(1e-9);
    eprint!(
        "\r\x1b[2K{}: {pct:5.1}% of {}, {frames} frames, {rate:.0} frames/s",
        path.display(),
        human_bytes(file_len)
    );
    let _ = io::stderr().flush();
}

/// One connection: a flow and, when it was seen, its reverse.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// The initiator's direction: the earlier flow (for ICMP echo, the
    /// requests).
    pub fwd: &'a Flow,
    pub rev: Option<&'a Flow>,
}

impl Connection<'_> {
    pub fn start_ns(&self) -> u64 {
        self.rev
            .map_or(self.fwd.first_ns, |r| r.first_ns.min(self.fwd.first_ns))
    }

    pub fn end_ns(&self) -> u64 {
        self.rev
            .map_or(self.fwd.last_ns, |r| r.last_ns.max(self.fwd.last_ns))
    }
}

/// Whether an ICMP "port" (type * 256 + code) is an echo request.
fn is_echo_request(key: &FlowKey) -> bool {
    let t = key.dport >> 8;
    (key.proto == ip::ICMP && t == 8) || (key.proto == ip::ICMPV6 && t == 128)
}

/// The key of the other direction of `key`'s connection: addresses and
/// ports swapped, same interface, direction, VLAN and protocol. ICMP has no
/// ports; only echo request and reply (8/0, ICMPv6 128/129) pair up, other
/// ICMP flows have no reverse.
pub fn reverse_key(key: &FlowKey) -> Option<FlowKey> {
    let mut r = *key;
    r.src = key.dst;
    r.dst = key.src;
    let (t, code) = (key.dport >> 8, key.dport & 0xff);
    let rev_type = match (key.proto, t) {
        (ip::ICMP, 8) => 0,
        (ip::ICMP, 0) => 8,
        (ip::ICMPV6, 128) => 129,
        (ip::ICMPV6, 129) => 128,
        (ip::ICMP | ip::ICMPV6, _) => return None,
        _ => {
            r.sport = key.dport;
            r.dport = key.sport;
            return (r != *key).then_some(r);
        }
    };
    r.dport = (rev_type << 8) | code;
    Some(r)
}

/// Pairs every flow with its reverse, sorted by start time, then key.
pub fn connections(table: &FlowTable) -> Vec<Connection<'_>> {
    let mut flows: Vec<&Flow> = table.iter().collect();
    flows.sort_by(|a, b| (a.first_ns, &a.key).cmp(&(b.first_ns, &b.key)));
    let mut paired: HashSet<FlowKey> = HashSet::new();
    let mut out = Vec::new();
    for f in flows {
        if paired.contains(&f.key) {
            continue;
        }
        let rev = reverse_key(&f.key)
            .and_then(|k| table.get(&k))
            .filter(|r| !paired.contains(&r.key));
        let c = match rev {
            Some(r) => {
                paired.insert(r.key);
                if is_echo_request(&r.key) {
                    Connection {
                        fwd: r,
                        rev: Some(f),
                    }
                } else {
                    Connection {
                        fwd: f,
                        rev: Some(r),
                    }
                }
            }
            None => Connection { fwd: f, rev: None },
        };
        paired.insert(f.key);
        out.push(c);
    }
    out.sort_by(|a, b| (a.start_ns(), &a.fwd.key).cmp(&(b.start_ns(), &b.fwd.key)));
    out
}

/// One connection as a JSON object: the forward flow's addresses and ports,
/// both directions' counters.
pub fn connection_json(c: &Connection<'_>, device: &str) -> Value {
    let k = &c.fwd.key;
    let (packets_rev, bytes_rev, flags_rev) = c.rev.map_or((0, 0, 0), |r| {
        (r.counts.packets, r.counts.bytes, r.counts.tcp_flags)
    });
    json!({
        "start": rfc3339_ns(c.start_ns()),
        "end": rfc3339_ns(c.end_ns()),
        "device": device,
        "vlan": k.vlan,
        "proto": k.proto,
        "src": record::addr(&k.src).to_string(),
        "dst": record::addr(&k.dst).to_string(),
        "sport": k.sport,
        "dport": k.dport,
        "packets_fwd": c.fwd.counts.packets,
        "bytes_fwd": c.fwd.counts.bytes,
        "packets_rev": packets_rev,
        "bytes_rev": bytes_rev,
        "tcp_flags_fwd": c.fwd.counts.tcp_flags,
        "tcp_flags_rev": flags_rev,
        "first_seen_ns": c.start_ns(),
        "last_seen_ns": c.end_ns(),
    })
}

/// One connection as [`record::Fields`]: the keys and values of
/// [`connection_json`].
pub fn connection_fields<'a>(c: &Connection<'a>, device: &'a str) -> Fields<'a> {
    use record::key;
    let k = &c.fwd.key;
    let (packets_rev, bytes_rev, flags_rev) = c.rev.map_or((0, 0, 0), |r| {
        (r.counts.packets, r.counts.bytes, r.counts.tcp_flags)
    });
    let mut r = Fields::new();
    r.set(key::START, Field::Time(c.start_ns()));
    r.set(key::END, Field::Time(c.end_ns()));
    r.set(key::DEVICE, Field::Str(device));
    r.set(key::VLAN, Field::Uint(k.vlan.into()));
    r.set(key::PROTO, Field::Uint(k.proto.into()));
    r.set(key::SRC, Field::Addr(&k.src));
    r.set(key::DST, Field::Addr(&k.dst));
    r.set(key::SPORT, Field::Uint(k.sport.into()));
    r.set(key::DPORT, Field::Uint(k.dport.into()));
    r.set(key::PACKETS_FWD, Field::Uint(c.fwd.counts.packets));
    r.set(key::BYTES_FWD, Field::Uint(c.fwd.counts.bytes));
    r.set(key::PACKETS_REV, Field::Uint(packets_rev));
    r.set(key::BYTES_REV, Field::Uint(bytes_rev));
    r.set(
        key::TCP_FLAGS_FWD,
        Field::Uint(c.fwd.counts.tcp_flags.into()),
    );
    r.set(key::TCP_FLAGS_REV, Field::Uint(flags_rev.into()));
    r.set(key::FIRST_SEEN_NS, Field::Uint(c.start_ns()));
    r.set(key::LAST_SEEN_NS, Field::Uint(c.end_ns()));
    r
}

/// Writes the replay's flows (or connections) in `format`. JSON lines and
/// CSV are written straight from the flows ([`record::Fields`]): the same
/// bytes as serializing [`Replay::records`] / [`Replay::connection_records`].
pub fn write_output(
    out: &mut impl Write,
    replay: &Replay,
    format: OutputFormat,
    bidirectional: bool,
) -> io::Result<()> {
    let device = replay.device.as_str();
    match format {
        OutputFormat::Jsonl if bidirectional => {
            for c in &connections(&replay.table) {
                connection_fields(c, device).write_json_line(out)?;
            }
        }
        OutputFormat::Jsonl => {
            for e in &replay.ended {
                Fields::ended(e, device).write_json_line(out)?;
            }
        }
        OutputFormat::Csv if bidirectional => {
            let conns = connections(&replay.table);
            write_csv(out, conns.iter().map(|c| connection_fields(c, device)))?;
        }
        OutputFormat::Csv => {
            write_csv(out, replay.ended.iter().map(|e| Fields::ended(e, device)))?;
        }
        OutputFormat::Table => {
            let rows = if bidirectional {
                connection_table(replay)
            } else {
                flow_table(replay)
            };
            write_table(out, &rows)?;
        }
    }
    out.flush()
}

/// A header line with the keys any record has (in [`record::KEYS`] order:
/// the documented columns, then the others sorted), then one line per
/// record. No records: nothing at all.
fn write_csv<'a>(
    out: &mut impl Write,
    records: impl Iterator<Item = Fields<'a>> + Clone,
) -> io::Result<()> {
    let columns = records.clone().fold(0, |m, r| m | r.mask());
    if columns == 0 {
        return Ok(());
    }
    record::write_csv_header(out, columns)?;
    for r in records {
        r.write_csv_line(out, columns)?;
    }
    Ok(())
}

/// A table: header row first; `true` marks right-aligned (numeric) columns.
struct Rows {
    header: Vec<(&'static str, bool)>,
    rows: Vec<Vec<String>>,
}

fn write_table(out: &mut impl Write, t: &Rows) -> io::Result<()> {
    let mut widths: Vec<usize> = t.header.iter().map(|(h, _)| h.len()).collect();
    for r in &t.rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let w = widths[i];
            if t.header[i].1 {
                s.push_str(&format!("{cell:>w$}"));
            } else {
                s.push_str(&format!("{cell:<w$}"));
            }
        }
        s.trim_end().to_string()
    };
    writeln!(out, "{}", line(t.header.iter().map(|(h, _)| *h).collect()))?;
    for r in &t.rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// The leading columns of both tables: time, protocol and endpoints.
fn endpoint_cells(key: &FlowKey, start_ns: u64, end_ns: u64) -> Vec<String> {
    let (sport, dport) = ports_text(key);
    vec![
        table_time(start_ns),
        duration_text(end_ns.saturating_sub(start_ns)),
        proto_name(key.proto),
        record::addr(&key.src).to_string(),
        sport,
        record::addr(&key.dst).to_string(),
        dport,
        if key.vlan == 0 {
            "-".into()
        } else {
            key.vlan.to_string()
        },
    ]
}

const ENDPOINT_HEADER: [(&str, bool); 8] = [
    ("START (UTC)", false),
    ("DURATION", true),
    ("PROTO", false),
    ("SRC", false),
    ("SPORT", true),
    ("DST", false),
    ("DPORT", true),
    ("VLAN", true),
];

fn flow_table(replay: &Replay) -> Rows {
    let mut header = ENDPOINT_HEADER.to_vec();
    header.extend([
        ("PACKETS", true),
        ("BYTES", true),
        ("FLAGS", false),
        ("STATE", false),
        ("END", false),
    ]);
    let rows = replay
        .ended
        .iter()
        .map(|e| {
            let f = &e.flow;
            let mut r = endpoint_cells(&f.key, f.first_ns, f.last_ns);
            r.push(f.counts.packets.to_string());
            r.push(human_bytes(f.counts.bytes));
            r.push(tcp_flags_text(f.key.proto, f.counts.tcp_flags));
            r.push(e.state.unwrap_or("-").to_owned());
            r.push(e.reason.as_str().to_owned());
            r
        })
        .collect();
    Rows { header, rows }
}

fn connection_table(replay: &Replay) -> Rows {
    let mut header = ENDPOINT_HEADER.to_vec();
    header.extend([
        ("PKTS_FWD", true),
        ("BYTES_FWD", true),
        ("PKTS_REV", true),
        ("BYTES_REV", true),
    ]);
    let rows = connections(&replay.table)
        .iter()
        .map(|c| {
            let mut r = endpoint_cells(&c.fwd.key, c.start_ns(), c.end_ns());
            r.push(c.fwd.counts.packets.to_string());
            r.push(human_bytes(c.fwd.counts.bytes));
            r.push(c.rev.map_or(0, |f| f.counts.packets).to_string());
            r.push(human_bytes(c.rev.map_or(0, |f| f.counts.bytes)));
            r
        })
        .collect();
    Rows { header, rows }
}

/// `2011-03-18 16:26:07.096`: the record's RFC 3339 time to milliseconds.
fn table_time(ns: u64) -> String {
    let s = rfc3339_ns(ns);
    s.get(..23).unwrap_or(&s).replacen('T', " ", 1)
}

fn duration_text(ns: u64) -> String {
    let secs = ns as f64 / 1e9;
    if secs < 1000.0 {
        format!("{secs:.3}s")
    } else {
        format!("{secs:.0}s")
    }
}

/// Ports as a person reads them: ICMP type/code, "-" where there are none.
fn ports_text(key: &FlowKey) -> (String, String) {
    if ip::is_icmp(key.proto) {
        (
            "-".into(),
            format!("{}/{}", key.dport >> 8, key.dport & 0xff),
        )
    } else if ip::has_ports(key.proto) {
        (key.sport.to_string(), key.dport.to_string())
    } else {
        ("-".into(), "-".into())
    }
}

fn proto_name(proto: u8) -> String {
    match ip::name(proto) {
        Some(n) => n.into(),
        None => proto.to_string(),
    }
}

/// TCP flags nfdump-style: `UAPRSF`, a dot for each flag not seen.
fn tcp_flags_text(proto: u8, flags: u16) -> String {
    if proto != ip::TCP {
        return String::new();
    }
    tcp::LETTERS
        .iter()
        .map(|&(bit, c)| if flags & bit != 0 { c } else { '.' })
        .collect()
}

/// Bytes in SI units, as tshark prints them: `870 B`, `28.5 kB`, `1.2 MB`.
pub fn human_bytes(n: u64) -> String {
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    for unit in ["kB", "MB", "GB", "TB", "PB"] {
        v /= 1000.0;
        if v < 999.95 {
            return format!("{v:.1} {unit}");
        }
    }
    format!("{:.1} EB", v / 1000.0)
}

fn stderr_is_terminal() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(2) == 1 }
}

pub fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    let file_len = fs::metadata(&args.file).map(|m| m.len()).unwrap_or(0);
    const SEC: u64 = 1_000_000_000;
    let opts = ReplayOptions {
        progress: stderr_is_terminal() && file_len > PROGRESS_MIN_FILE,
        table: TableConfig {
            idle_timeout_ns: args.idle_timeout * SEC,
            active_timeout_ns: args.active_timeout * SEC,
            tcp_close_grace_ns: args.tcp_close_grace * SEC,
            max_flows: 0,
        },
        ..ReplayOptions::default()
    };
    let mut replay = replay_file(&args.file, &opts)?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match write_output(&mut out, &replay, args.format, args.bidirectional) {
        Ok(()) => {}
        // `flowd replay x | head`: the reader has seen enough.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e).context("writing the flows to stdout"),
    }
    if let Some(path) = &args.metrics {
        fs::write(path, replay.metrics_text())
            .with_context(|| format!("writing the metrics to {}", path.display()))?;
    }
    eprintln!("{}", replay.summary());
    if let Some(addr) = args.ipfix {
        send_ipfix(addr, &replay.ended)?;
    }
    match replay.error.take() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Sends a replay's records to an IPFIX collector (paced by the exporter).
fn send_ipfix(addr: std::net::SocketAddr, ended: &[Ended]) -> anyhow::Result<()> {
    use crate::export::ipfix::IpfixExporter;
    let mut x = IpfixExporter::connect(addr, 1, Duration::from_secs(60), 1400)?;
    let now_s = (crate::clock::realtime_ns() / 1_000_000_000) as u32;
    let sent = x.export(ended, now_s);
    let st = x.stats;
    eprintln!(
        "IPFIX: {} records in {} messages to {addr}",
        st.records, st.messages
    );
    sent.with_context(|| {
        format!(
            "IPFIX: {} of {} records could not be sent to {addr}",
            st.records_dropped,
            ended.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use flowd_common::{FlowCounts, FlowStats, REPLAY_META_MAGIC, ipv4_mapped};

    use super::*;

    fn key(proto: u8, src: u8, dst: u8, sport: u16, dport: u16) -> FlowKey {
        FlowKey {
            ifindex: 1,
            proto,
            src: ipv4_mapped([198, 18, 0, src]),
            dst: ipv4_mapped([198, 18, 0, dst]),
            sport,
            dport,
            ..Default::default()
        }
    }

    fn add(t: &mut FlowTable, k: FlowKey, packets: u64, first: u64) {
        let s = FlowStats {
            counts: FlowCounts {
                packets,
                bytes: packets * 100,
                ..Default::default()
            },
            first_seen_ns: first,
            last_seen_ns: first + 10,
            ..Default::default()
        };
        t.apply(&k, &s, TimeBase::Capture);
    }

    #[test]
    fn flows_pair_with_their_reverse() {
        let mut t = FlowTable::default();
        add(&mut t, key(6, 1, 2, 40000, 80), 5, 100);
        add(&mut t, key(6, 2, 1, 80, 40000), 4, 105);
        // Same ports, other VLAN: a connection of its own.
        let mut v = key(6, 2, 1, 80, 40000);
        v.vlan = 42;
        add(&mut t, v, 1, 90);
        // Echo reply seen before its request: the request is still forward.
        add(&mut t, key(1, 2, 1, 0, 0), 3, 50);
        add(&mut t, key(1, 1, 2, 0, 8 << 8), 3, 60);
        // Destination unreachable: no pair.
        add(&mut t, key(1, 2, 1, 0, 3 << 8 | 3), 1, 70);
        // ICMPv6 echo.
        add(&mut t, key(58, 1, 2, 0, 128 << 8), 2, 200);
        add(&mut t, key(58, 2, 1, 0, 129 << 8), 2, 201);
        let c = connections(&t);
        let got: Vec<(u8, u16, u16, u64, u64, u64)> = c
            .iter()
            .map(|c| {
                let k = c.fwd.key;
                (
                    k.proto,
                    k.vlan,
                    k.dport,
                    c.fwd.counts.packets,
                    c.rev.map_or(0, |r| r.counts.packets),
                    c.start_ns(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 0, 8 << 8, 3, 3, 50),
                (1, 0, 3 << 8 | 3, 1, 0, 70),
                (6, 42, 40000, 1, 0, 90),
                (6, 0, 80, 5, 4, 100),
                (58, 0, 128 << 8, 2, 2, 200),
            ]
        );
        let j = connection_json(&c[0], "x");
        assert_eq!(j["src"], "198.18.0.1");
        assert_eq!(j["packets_rev"], 3);
        assert_eq!(j["end"], rfc3339_ns(70));
    }

    #[test]
    fn same_endpoint_both_ways_is_one_flow() {
        let k = key(17, 1, 1, 5353, 5353);
        assert_eq!(reverse_key(&k), None);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1234), "1.2 kB");
        assert_eq!(human_bytes(28_495), "28.5 kB");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
        assert_eq!(human_bytes(999_999), "1.0 MB");
        assert_eq!(tcp_flags_text(6, 0x12), ".A..S.");
        assert_eq!(
            table_time(1_300_475_167_096_535_000),
            "2011-03-18 19:06:07.096"
        );
    }

    #[test]
    fn csv_quotes_and_orders() {
        let mut t = FlowTable::default();
        add(&mut t, key(17, 1, 2, 53, 53), 3, 100);
        let c = connections(&t);
        let mut out = Vec::new();
        write_csv(&mut out, c.iter().map(|c| connection_fields(c, "a,b"))).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "start,end,device,vlan,proto,src,sport,dst,dport,packets_fwd,bytes_fwd,packets_rev,bytes_rev,tcp_flags_fwd,tcp_flags_rev,first_seen_ns,last_seen_ns\n\
             1970-01-01T00:00:00.000000100Z,1970-01-01T00:00:00.000000110Z,\"a,b\",0,17,198.18.0.1,53,198.18.0.2,53,3,300,0,0,0,0,100,110\n"
        );
        let mut out = Vec::new();
        write_csv(&mut out, std::iter::empty::<Fields<'_>>()).unwrap();
        assert!(out.is_empty());
    }

    /// What a batch holds reads back chunk by chunk, newest first, as the
    /// driver walks it (and the one-by-one rerun reads it).
    #[test]
    fn batch_chunks_read_back_from_the_end() {
        let mut b = Batch::new();
        let frames: [&[u8]; 2] = [&[1; 14], &[2; 60]];
        for (i, f) in frames.iter().enumerate() {
            let meta = ReplayMeta::new(f.len() as u32, 10 + i as u64).to_bytes();
            b.push(&meta, f, i as u64, i as u64 + 1);
        }
        let n = b.bytes().len();
        assert_eq!(n, 16 + 2 * wire::CHUNK_OVERHEAD + 14 + 60);
        let mut end = BATCH_BYTES;
        for (i, f) in frames.iter().enumerate() {
            let (meta, frame, start) = wire::chunk_before(&b.buf[..], end).unwrap();
            assert_eq!(
                meta,
                ReplayMeta::new(f.len() as u32, 10 + i as u64).to_bytes()
            );
            assert_eq!(frame, *f);
            end = start;
        }
        assert_eq!(wire::chunk_before(&b.buf[..], end), None, "the end mark");
    }

    #[test]
    fn meta_is_little_endian_and_never_zero_time() {
        let m = ReplayMeta::new(1514, 0).to_bytes();
        assert_eq!(&m[0..4], &REPLAY_META_MAGIC.to_le_bytes());
        assert_eq!(&m[4..8], &1514u32.to_le_bytes());
        assert_eq!(&m[8..16], &1u64.to_le_bytes());
        assert_eq!(device_name(Path::new("/x/amp.dns.pcap")), "amp.dns");
        assert_eq!(device_name(Path::new("/")), "replay");
    }
}
