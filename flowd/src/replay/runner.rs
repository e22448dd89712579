//! The run of one capture: frames read in batches, test runs of the
//! replay driver, drains into the flow tables on a thread of their own,
//! and the exact totals checked at the end.

use std::{
    collections::HashMap,
    fs,
    io::{self, Write},
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use flowd_common::{
    DIR_INGRESS, FlowKey, FlowStats, IfaceCounters, ReplayMeta, counter,
    l7::{L7_DEFAULT_CONTINUATION, L7_SNAP_MAX, L7Control, L7Sample},
};

use crate::{
    clock::TimeBase,
    export::{
        groups::{DEFAULT_PEER_UNMATCHED, PeerGroups, default_peer_groups},
        l7signals::L7Signals,
        l7stats::{L7Metrics, L7Snapshot},
        tcp::{TcpSignals, TcpSnapshot},
    },
    flowtable::{Ended, FlowTable},
    l7::{Engine, L7Config, L7Event},
    loader::{Datapath, LoadError, Programs, drain_l7_ring, l7_packet},
    pcap::{CaptureError, CaptureErrorKind, CaptureReader, LinkLayer},
    scan::{ScanConfig, ScanDetector},
    sys::{self, SysError},
};

use super::{
    Batch, MAX_FRAME, PROGRESS_EVERY, RUNT_FRAME, Replay, ReplayError, ReplayOptions, SLOT,
    TEST_RUN_IFINDEX, device_name, flush, human_bytes,
};

/// The replay's flow tables and the records ended so far. They live on a
/// thread of their own while the replay runs (the kernel work and the
/// table work overlap); it gets the drains in order, so the result is the
/// same as doing both on one thread.
pub(super) struct Tables {
    pub(super) cumulative: FlowTable,
    pub(super) records: FlowTable,
    pub(super) ended: Vec<Ended>,
    pub(super) tcp: TcpSignals,
    pub(super) scan: ScanDetector,
    pub(super) device: String,
}

/// One drain for the tables: its entries, and the capture time at which to
/// scan and expire afterwards (none for the last drain, or after an error).
pub(super) struct Drained {
    pub(super) entries: Vec<(FlowKey, FlowStats)>,
    pub(super) expire_at: Option<u64>,
}

impl Tables {
    pub(super) fn run(mut self, drains: mpsc::Receiver<Drained>) -> Self {
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
pub(super) struct Runner {
    pub(super) dp: Datapath,
    /// With `--l7-log`: the L7 ring, read after every test run (a batch's
    /// samples fit in it), and the samples read so far.
    pub(super) l7: Option<std::cell::RefCell<(RingBuf<MapData>, Vec<L7Sample>)>>,
    pub(super) batched: bool,
    pub(super) test_runs: std::cell::Cell<u64>,
    pub(super) drains: u64,
    pub(super) drained_entries: u64,
    pub(super) last_drain_entries: u64,
}

impl Runner {
    /// Loads only the program the replay runs: the replay driver, or for
    /// one frame per test run `flowd_ingress`. Never the TC program.
    pub(super) fn load(
        capacity: u32,
        batched: bool,
        l7: Option<&[u16]>,
    ) -> Result<Self, LoadError> {
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
        let l7 = if let Some(extra) = l7 {
            let mut dns_ports = [53, 5353, 0, 0];
            for (slot, p) in dns_ports[2..].iter_mut().zip(extra) {
                *slot = *p;
            }
            // No budget on the capture's clock: every selected frame is kept.
            dp.set_l7(Some(L7Control {
                snap_len: L7_SNAP_MAX as u32,
                budget_per_s: u32::MAX,
                continuation: L7_DEFAULT_CONTINUATION,
                _pad: 0,
                dns_ports,
            }))?;
            dp.take_l7_ring()
                .map(|r| std::cell::RefCell::new((r, Vec::new())))
        } else {
            None
        };
        Ok(Self {
            dp,
            l7,
            batched,
            test_runs: Default::default(),
            drains: 0,
            drained_entries: 0,
            last_drain_entries: 0,
        })
    }

    /// Runs one frame through the ingress program.
    pub(super) fn run(&self, meta: &[u8], frame: &[u8]) -> Result<(), SysError> {
        let prog = self
            .dp
            .ingress_fd()
            .expect("the ingress program was found at load");
        self.test_runs.set(self.test_runs.get() + 1);
        let r = sys::xdp_test_run(prog, meta, frame, 1).map(drop);
        self.read_l7();
        r
    }

    /// Moves the L7 samples of the last test run out of the ring.
    fn read_l7(&self) {
        if let Some(l7) = &self.l7 {
            let (ring, samples) = &mut *l7.borrow_mut();
            drain_l7_ring(ring, |s| samples.push(*s));
        }
    }

    /// Runs a batch through the replay driver: its return value (the
    /// iterations of its walk, or [`wire::NONLINEAR`]).
    pub(super) fn run_batch(&self, batch: &mut Batch) -> Result<u32, SysError> {
        let prog = self
            .dp
            .replay_fd()
            .expect("the replay driver was found at load");
        self.test_runs.set(self.test_runs.get() + 1);
        let r = sys::xdp_test_run_buf(prog, batch.bytes(), 0, 1).map(|r| r.retval);
        self.read_l7();
        r
    }

    /// Drains the flow maps into `out` (also the entries read before an error).
    pub(super) fn drain(
        &mut self,
        both: bool,
        out: &mut Vec<(FlowKey, FlowStats)>,
    ) -> Result<(), LoadError> {
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

/// Runs every frame of the capture through the program and hands each
/// drain to `send`. The replay it returns has no flows yet (see [`finish`]).
pub(super) fn replay_frames(
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
            None => runner.insert(
                Runner::load(
                    opts.capacity,
                    opts.batched,
                    opts.l7.then_some(&opts.l7_dns_ports[..]),
                )
                .map_err(|source| ReplayError::Load {
                    path: path_buf.clone(),
                    source: Box::new(source),
                })?,
            ),
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
    let mut l7_samples = Vec::new();
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
        if let Some(l7) = r.l7.take() {
            l7_samples = l7.into_inner().1;
        }
        (drains, drained_entries, last_drain_entries, test_runs) = (
            r.drains,
            r.drained_entries,
            r.last_drain_entries,
            r.test_runs.get(),
        );
    }
    let mut replay = Replay {
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
        l7_events: Vec::new(),
        l7_metrics: None,
    };
    if opts.l7 {
        let (events, metrics) = l7_replay(&l7_samples, &opts.l7_dns_ports, &replay.device);
        replay.l7_events = events;
        replay.l7_metrics = Some(metrics);
    }
    Ok((replay, last_drain_ts))
}

/// The L7 engine's events for the samples of a replay, on the capture's
/// clock (a sample's time is its frame's capture time), and the L7
/// families as the live exporter has them: the events are counted (and
/// the signals fed) a second of capture time at a time, as the daemon's
/// drain does, and the engine's counters are taken after the flush.
fn l7_replay(samples: &[L7Sample], dns_ports: &[u16], device: &str) -> (Vec<L7Event>, L7Snapshot) {
    let mut engine = Engine::new(L7Config {
        dns_ports: dns_ports.to_vec(),
        ..L7Config::default()
    });
    let names = HashMap::from([(TEST_RUN_IFINDEX, device.to_owned())]);
    let mut metrics = L7Metrics::new(
        PeerGroups::new(&default_peer_groups(), DEFAULT_PEER_UNMATCHED),
        L7Signals::default(),
    );
    let mut events = Vec::new();
    let mut last_poll = 0;
    for s in samples {
        engine.push(&l7_packet(s, s.ts_ns));
        if s.ts_ns.saturating_sub(last_poll) >= 1_000_000_000 {
            engine.poll(s.ts_ns);
            last_poll = s.ts_ns;
            let got = engine.take_events();
            metrics.observe(&got, &names, s.ts_ns);
            events.extend(got);
        }
    }
    engine.flush();
    let got = engine.take_events();
    metrics.observe(&got, &names, samples.last().map_or(0, |s| s.ts_ns));
    events.extend(got);
    let snapshot = metrics.snapshot(engine.stats(), engine.pending(), engine.reassembling());
    (events, snapshot)
}

/// Ends the replay's records and fills in its flows, once every drain has
/// reached the tables.
pub(super) fn finish(
    replay: &mut Replay,
    mut tables: Tables,
    last_drain_ts: u64,
    reader: &CaptureReader,
) {
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
    super::l7_names::annotate(&mut ended, &replay.l7_events);
    replay.tcp = tables.tcp.snapshot();
    replay.suspects = tables.scan.suspects();
    replay.scan_flagged = tables.scan.flagged_total();
    replay.table = tables.cumulative;
    replay.ended = ended;
    replay.file_bytes = reader.offset();
}

pub(super) fn progress(path: &Path, offset: u64, file_len: u64, frames: u64, elapsed: Duration) {
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
