//! `flowd run`: load, attach, drain on an interval, serve, and shut down
//! cleanly on SIGINT/SIGTERM.

use std::{
    collections::{BTreeMap, HashMap},
    net::TcpListener,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use flowd_common::{DIR_EGRESS, DIR_INGRESS, FlowKey, FlowStats, IfaceCounters};
use serde_json::Value;
use tracing::{error, info, warn};

use crate::{
    clock::TimeBase,
    config::Config,
    export::{
        aggregate::Aggregator,
        groups::PeerGroups,
        ipfix::IpfixExporter,
        metrics::{HistogramSnapshot, IfaceSnapshot, Snapshot, TopTcp},
        recent::{self, RecentTop},
        records::RecordSink,
        tcp::TcpSignals,
    },
    flowtable::{EndReason, Ended, FlowTable},
    interfaces,
    loader::Datapath,
    notify, record,
    scan::{ScanDetector, Suspect},
    server,
};

/// Command-line values that override the configuration file, kept so a
/// reload applies them on top of the new file too.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub interfaces: Vec<String>,
    pub listen: Option<String>,
    pub drain_interval_ms: Option<u64>,
    pub flow_capacity: Option<u32>,
    pub drain_at_fill_percent: Option<u32>,
    pub xdp_mode: Option<String>,
    pub idle_timeout_s: Option<u64>,
    pub active_timeout_s: Option<u64>,
    pub tcp_close_grace_s: Option<u64>,
    pub max_flows: Option<u64>,
    pub records: Option<String>,
    pub ipfix: Option<String>,
    pub pin_path: Option<String>,
}

impl Overrides {
    pub fn apply(&self, c: &mut Config) {
        if !self.interfaces.is_empty() {
            c.interfaces.clone_from(&self.interfaces);
        }
        macro_rules! set {
            ($($field:ident => $($path:ident).+),*) => {$(
                if let Some(v) = &self.$field {
                    c.$($path).+ = v.clone();
                }
            )*};
        }
        set!(listen => listen, drain_interval_ms => drain_interval_ms, flow_capacity => flow_capacity,
            drain_at_fill_percent => drain_at_fill_percent,
            xdp_mode => xdp_mode, records => records, pin_path => pin_path, ipfix => ipfix.collector,
            idle_timeout_s => flow_table.idle_timeout_s, active_timeout_s => flow_table.active_timeout_s,
            tcp_close_grace_s => flow_table.tcp_close_grace_s, max_flows => flow_table.max_flows);
    }
}

/// Where the configuration comes from: a file (reloadable) and overrides.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
}

impl ConfigSource {
    /// The file (if any) with the overrides applied, validated.
    pub fn load(&self) -> Result<Config> {
        let mut c = match &self.path {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        self.overrides.apply(&mut c);
        let origin = self.path.as_ref().map_or_else(
            || "command line".to_owned(),
            |p| format!("{} with command-line overrides", p.display()),
        );
        c.validate(&origin)?;
        Ok(c)
    }
}

#[derive(Debug, Clone)]
struct DrainStats {
    drains: u64,
    /// Drains started before the interval because the map was filling.
    early: u64,
    /// Entries in the generation being written, at the last check.
    fill: u64,
    entries: u64,
    last_entries: u64,
    errors: u64,
    seconds: HistogramSnapshot,
}

impl Default for DrainStats {
    fn default() -> Self {
        Self {
            drains: 0,
            early: 0,
            fill: 0,
            entries: 0,
            last_entries: 0,
            errors: 0,
            seconds: HistogramSnapshot::with_bounds(&[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ]),
        }
    }
}

/// State shared by the drain loop and the HTTP handlers.
pub struct Shared {
    dp: Mutex<Datapath>,
    table: Mutex<FlowTable>,
    drain: Mutex<DrainStats>,
    ready: AtomicBool,
    names: Mutex<HashMap<u32, String>>,
    records: Mutex<Option<RecordSink>>,
    ipfix: Mutex<Option<IpfixExporter>>,
    /// The heaviest flows of the last drains, for the live view.
    recent: Mutex<RecentTop>,
    agg: Mutex<Aggregator>,
    scan: Mutex<ScanDetector>,
    tcp: Mutex<TcpSignals>,
    config: Mutex<Config>,
    /// Interface names whose attach failed, with the error last logged.
    attach_errors: Mutex<BTreeMap<String, String>>,
    /// Reading the flow map's fill failed at the last check (logged once).
    fill_failing: AtomicBool,
}

impl Shared {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Every interface seen in this run, attached or gone, with its exact
    /// totals; and the flow map capacity.
    fn interfaces(&self) -> (Vec<IfaceSnapshot>, u64) {
        let speeds = lock(&self.config).interface_speeds.clone();
        let dp = lock(&self.dp);
        let mut ifaces = Vec::new();
        for (name, slot) in dp.slots() {
            let attached = dp.interfaces.values().find(|a| &a.name == name);
            let rx = dp.totals(*slot, DIR_INGRESS).unwrap_or_else(|e| {
                warn!(iface = name, error = %e, "reading totals failed");
                IfaceCounters::default()
            });
            let tx = dp.totals(*slot, DIR_EGRESS).unwrap_or_default();
            ifaces.push(IfaceSnapshot {
                device: name.clone(),
                rx,
                tx,
                xdp_mode: attached
                    .filter(|a| a.xdp_attached())
                    .map(|a| a.xdp_mode.as_str()),
                tc_attached: attached.is_some_and(|a| a.tc_attached()),
                speed_bps: speeds
                    .get(name)
                    .copied()
                    .or_else(|| interfaces::speed_bps(name)),
            });
        }
        (ifaces, u64::from(dp.capacity()))
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        (s.ifaces, s.flow_map_capacity) = self.interfaces();
        {
            let table = lock(&self.table);
            s.flows_active = table.len() as u64;
            s.flows_max = table.config().max_flows as u64;
            let st = table.stats();
            s.flows_started = st.started;
            let scan = lock(&self.scan);
            s.scan_suspects = scan.suspects().len() as u64;
            s.scan_flagged = scan.flagged_total();
            s.tcp = lock(&self.tcp).snapshot();
            s.flows_ended = EndReason::ALL
                .iter()
                .map(|r| (r.as_str(), st.ended[*r as usize]))
                .collect();
        }
        let d = lock(&self.drain).clone();
        s.drain_seconds = d.seconds;
        s.ipfix = lock(&self.ipfix).as_ref().map(|x| x.stats);
        s.records = lock(&self.records).as_ref().map(RecordSink::stats);
        s.groups = lock(&self.agg).snapshot();
        s.top_tcp = self.top_tcp(&s.groups);
        s.drains = d.drains;
        s.drains_early = d.early;
        s.flow_map_fill = d.fill;
        s.drained_entries = d.entries;
        s.last_drain_entries = d.last_entries;
        s.drain_errors = d.errors;
        s
    }

    /// TCP details of each top flow from the flow table: its segments and
    /// retransmissions, and RTT from its own samples or its reverse's
    /// (samples land on the flow whose packet closed them: the ACKs).
    fn top_tcp(&self, g: &crate::export::aggregate::AggSnapshot) -> Vec<Option<TopTcp>> {
        let names = lock(&self.names).clone();
        let table = lock(&self.table);
        g.top
            .iter()
            .map(|(k, _)| {
                if k.proto != 6 {
                    return None;
                }
                let side = g.sides.get(usize::from(k.side))?;
                let ifindex = names
                    .iter()
                    .find(|(_, n)| **n == side.device)
                    .map(|(i, _)| *i)?;
                // Top flows merge VLANs; the untagged flow carries the details.
                let key = FlowKey {
                    ifindex,
                    vlan: 0,
                    direction: side.direction,
                    proto: k.proto,
                    src: k.src,
                    dst: k.dst,
                    sport: k.sport,
                    dport: k.dport,
                };
                let f = table.get(&key)?;
                let with = if f.rtt_samples > 0 {
                    Some(f)
                } else {
                    table.reverse(&key).filter(|r| r.rtt_samples > 0)
                };
                Some(TopTcp {
                    rtt: with.map(|f| (f.rtt_min_ns, f.rtt_srtt_ns)),
                    segments: f.packets,
                    retransmitted: u64::from(f.retrans),
                })
            })
            .collect()
    }

    /// The live view: the heaviest flows of the last `seconds` (at most
    /// [`recent::HISTORY`]), with rates, and the interfaces' exact totals.
    pub fn top_json(&self, seconds: f64, limit: usize) -> Value {
        let now = crate::clock::realtime_ns();
        let w = lock(&self.recent).window(now, (seconds * 1e9) as u64, limit);
        let names = lock(&self.names).clone();
        let span_s = w.span_ns as f64 / 1e9;
        let per_s = |n: u64| if span_s > 0.0 { n as f64 / span_s } else { 0.0 };
        let flows: Vec<Value> = w
            .flows
            .iter()
            .map(|(k, packets, bytes)| {
                serde_json::json!({
                    "device": names.get(&k.ifindex).cloned().unwrap_or_else(|| format!("if{}", k.ifindex)),
                    "direction": record::direction(k),
                    "vlan": k.vlan,
                    "src": record::addr(&k.src).to_string(),
                    "dst": record::addr(&k.dst).to_string(),
                    "sport": k.sport,
                    "dport": k.dport,
                    "proto": k.proto,
                    "packets": packets,
                    "bytes": bytes,
                    "packets_per_second": per_s(*packets),
                    "bits_per_second": per_s(*bytes) * 8.0,
                })
            })
            .collect();
        let (ifaces, _) = self.interfaces();
        let flows_active = lock(&self.table).len() as u64;
        let interfaces: Vec<Value> = ifaces
            .iter()
            .map(|i| {
                serde_json::json!({
                    "device": i.device,
                    "receive_packets": i.rx.c[flowd_common::counter::PACKETS],
                    "receive_bytes": i.rx.c[flowd_common::counter::BYTES],
                    "transmit_packets": i.tx.c[flowd_common::counter::PACKETS],
                    "transmit_bytes": i.tx.c[flowd_common::counter::BYTES],
                    "speed_bits_per_second": i.speed_bps,
                })
            })
            .collect();
        serde_json::json!({
            "time": crate::clock::rfc3339_ns(now),
            "seconds": span_s,
            "drains": w.drains,
            "max_flows_per_drain": w.max_flows_per_drain,
            "flows_kept_per_drain": recent::PER_DRAIN,
            "flows_active": flows_active,
            "flows": flows,
            "interfaces": interfaces,
        })
    }

    /// Current scan suspects, most ports first.
    pub fn suspects(&self) -> Vec<Suspect> {
        lock(&self.scan).suspects()
    }

    pub fn flows_json(&self) -> Vec<Value> {
        let names = lock(&self.names).clone();
        let table = lock(&self.table);
        table
            .iter()
            .map(|f| {
                let dev = names
                    .get(&f.key.ifindex)
                    .cloned()
                    .unwrap_or_else(|| format!("if{}", f.key.ifindex));
                let mut v = record::flow_json(f, &dev);
                if let Some(state) = table.conn_state(&f.key) {
                    v["state"] = state.into();
                }
                v
            })
            .collect()
    }

    /// One drain into the flow table. Deltas are absorbed in chunks while
    /// the drain runs, so a drain never holds its whole batch (65,536
    /// deltas are 8 MiB).
    fn drain_once(&self) {
        let mut samples: Vec<flowd_common::RttSample> = Vec::new();
        let mut chunk: Vec<(FlowKey, FlowStats)> = Vec::with_capacity(ABSORB_CHUNK);
        let mut absorbed = 0;
        let mut absorbing = Duration::ZERO;
        let t0 = Instant::now();
        let r = {
            let mut dp = lock(&self.dp);
            dp.drain_rtt(|s| samples.push(*s));
            dp.drain(|k, v| {
                chunk.push((*k, *v));
                if chunk.len() == ABSORB_CHUNK {
                    let t = Instant::now();
                    self.apply(&chunk);
                    absorbed += chunk.len();
                    chunk.clear();
                    absorbing += t.elapsed();
                }
            })
        };
        // The drain's own time, as before chunking.
        lock(&self.drain)
            .seconds
            .observe(t0.elapsed().saturating_sub(absorbing).as_secs_f64());
        self.apply(&chunk);
        absorbed += chunk.len();
        drop(chunk);
        self.finish(r.map(|_| absorbed), false);
        self.absorb_rtt(&samples);
        release_freed_memory();
    }

    /// Whether the generation the programs write to has reached
    /// `drain_at_fill_percent` of its capacity (and records its fill).
    fn filling(&self) -> bool {
        let percent = lock(&self.config).drain_at_fill_percent;
        let (fill, capacity) = {
            let dp = lock(&self.dp);
            match dp.active_inserts() {
                Ok(n) => (n, u64::from(dp.capacity())),
                Err(e) => {
                    // Once, not every 20 ms.
                    if !self.fill_failing.swap(true, Ordering::Relaxed) {
                        warn!(error = %e, "reading the flow map's fill failed; draining every interval only until it works again");
                    }
                    return false;
                }
            }
        };
        if self.fill_failing.swap(false, Ordering::Relaxed) {
            info!("reading the flow map's fill works again");
        }
        lock(&self.drain).fill = fill;
        percent > 0 && fill * 100 >= capacity * u64::from(percent)
    }

    /// RTT samples to their flows (after the drain, so new flows exist)
    /// and to the per-device histograms.
    fn absorb_rtt(&self, samples: &[flowd_common::RttSample]) {
        if samples.is_empty() {
            return;
        }
        let names = lock(&self.names).clone();
        let mut table = lock(&self.table);
        let mut tcp = lock(&self.tcp);
        for s in samples {
            let dev = names.get(&s.key.ifindex).map_or("unknown", String::as_str);
            let min = table.rtt(&s.key, s.rtt_ns);
            tcp.rtt(&s.key, dev, s.rtt_ns, min);
        }
    }

    /// Adds a drained batch to the table, then ends what timed out (or,
    /// at shutdown, everything) and writes those records.
    fn absorb(&self, r: Result<Vec<(FlowKey, FlowStats)>, crate::loader::LoadError>, last: bool) {
        let r = r.map(|batch| {
            self.apply(&batch);
            batch.len()
        });
        self.finish(r, last);
    }

    /// Adds drained deltas to the table and the exporters.
    fn apply(&self, batch: &[(FlowKey, FlowStats)]) {
        if batch.is_empty() {
            return;
        }
        let mut table = lock(&self.table);
        let time = TimeBase::live();
        let names = lock(&self.names);
        let mut agg = lock(&self.agg);
        let mut tcp = lock(&self.tcp);
        for (k, v) in batch {
            table.apply(k, v, time);
            let dev = names.get(&k.ifindex).map_or("unknown", String::as_str);
            agg.absorb(k, v, dev);
            tcp.absorb(k, v, dev);
        }
        lock(&self.recent).add(batch);
    }

    /// Counts a drain of `r` deltas (already applied), then ends what timed
    /// out (or, at shutdown, everything) and writes those records.
    fn finish(&self, r: Result<usize, crate::loader::LoadError>, last: bool) {
        let ended = {
            let mut d = lock(&self.drain);
            let mut table = lock(&self.table);
            match r {
                Ok(n) => {
                    lock(&self.agg).tick(crate::clock::realtime_ns());
                    d.drains += 1;
                    d.entries += n as u64;
                    d.last_entries = n as u64;
                }
                Err(e) => {
                    d.errors += 1;
                    error!(error = %e, "drain failed");
                }
            }
            lock(&self.recent).close(crate::clock::realtime_ns());
            if last {
                // Written chunk by chunk: with a million flows, all the
                // records at once would double the daemon's memory.
                table.end_all_in_chunks(END_CHUNK, |chunk| self.write_records(&chunk));
                Vec::new()
            } else {
                let now = crate::clock::realtime_ns();
                lock(&self.scan).observe(&table, now);
                table.expire(now)
            }
        };
        self.write_records(&ended);
    }

    fn device(&self, ifindex: u32) -> String {
        lock(&self.names)
            .get(&ifindex)
            .cloned()
            .unwrap_or_else(|| format!("if{ifindex}"))
    }

    fn write_records(&self, ended: &[Ended]) {
        if ended.is_empty() {
            return;
        }
        let devices: Vec<String> = ended
            .iter()
            .map(|e| self.device(e.flow.key.ifindex))
            .collect();
        {
            let mut tcp = lock(&self.tcp);
            for (e, dev) in ended.iter().zip(&devices) {
                tcp.connection(e, dev);
            }
        }
        if let Some(x) = lock(&self.ipfix).as_mut() {
            let now_s = (crate::clock::realtime_ns() / 1_000_000_000) as u32;
            if let Err(e) = x.export(ended, now_s)
                && x.should_log_error()
            {
                warn!(collector = %x.collector(), error = %e, dropped_total = x.stats.records_dropped,
                    "sending IPFIX records failed (counted in flowd_ipfix_records_dropped_total)");
            }
        }
        let mut sink = lock(&self.records);
        let Some(sink) = sink.as_mut() else {
            return;
        };
        if let Err(e) = sink.write_ended(ended, &devices) {
            error!(error = %e, records = ended.len(), "writing flow records failed");
        }
    }

    /// SIGHUP: reopen the records file (logrotate).
    fn reopen_records(&self) {
        if let Some(sink) = lock(&self.records).as_mut() {
            match sink.reopen() {
                Ok(()) => info!("flow records file reopened"),
                Err(e) => error!(error = %e, "reopening the flow records file failed"),
            }
        }
    }
}

/// Deltas absorbed at a time while a drain runs (512 KiB).
const ABSORB_CHUNK: usize = 4096;

/// Serves every allocation of 128 KiB or more with its own mapping, given
/// back when freed: a drain's large, short-lived buffers (ended records,
/// growth steps) then never leave holes among long-lived allocations.
/// glibc would otherwise raise this threshold as large blocks are freed.
fn map_large_allocations() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt has no preconditions; it runs before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Hands the heap memory a drain freed (its batch, ended records) back to
/// the kernel, so RSS follows the live flows rather than the largest drain.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: glibc's malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not take the exporter down with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Fails with one line when flowd lacks the privileges to load programs.
pub fn check_privileges() -> Result<()> {
    crate::caps::require()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_BPF: u32 = 39;
    if cap_eff & (1 << CAP_NET_ADMIN) != 0 && cap_eff & (1 << CAP_BPF) != 0 {
        return Ok(());
    }
    bail!(
        "insufficient privileges: flowd needs root or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (run it with sudo, or through deploy/flowd.service)"
    )
}

impl Shared {
    /// Attaches what the configuration selects and is not attached yet;
    /// marks attached interfaces that went away as detached.
    fn reconcile(&self) {
        let (patterns, mode) = {
            let c = lock(&self.config);
            (c.interfaces.clone(), c.xdp_attach_mode())
        };
        let present = interfaces::list();
        let wanted = interfaces::selected(&present, &patterns);
        let mut dp = lock(&self.dp);
        let attached: Vec<(u32, String)> = dp
            .interfaces
            .values()
            .map(|a| (a.ifindex, a.name.clone()))
            .collect();
        for (ifindex, name) in attached {
            let here = present
                .iter()
                .any(|i| i.ifindex == ifindex && i.name == name);
            if !here {
                dp.forget(ifindex);
            } else if !wanted.iter().any(|i| i.ifindex == ifindex) {
                dp.detach(ifindex);
            }
        }
        for i in wanted {
            if dp.interfaces.contains_key(&i.ifindex) {
                continue;
            }
            match dp.attach(&i.name, mode) {
                Ok(()) => {
                    lock(&self.names).insert(i.ifindex, i.name.clone());
                    lock(&self.attach_errors).remove(&i.name);
                }
                Err(e) => {
                    let msg = e.to_string();
                    let mut errs = lock(&self.attach_errors);
                    if errs.get(&i.name) != Some(&msg) {
                        error!(iface = i.name, error = %msg, "attach failed; retrying while it is selected");
                        errs.insert(i.name.clone(), msg);
                    }
                }
            }
        }
    }

    /// SIGHUP: reopen the records file, then reload the configuration.
    fn reload(&self, source: &ConfigSource) {
        notify::reloading();
        self.reopen_records();
        match source.load() {
            Err(e) => {
                error!(error = %format!("{e:#}"), "reload rejected; keeping the running configuration")
            }
            Ok(new) => {
                let old = lock(&self.config).clone();
                for (key, changed) in [
                    ("listen", old.listen != new.listen),
                    ("metrics", old.metrics != new.metrics),
                    ("flow_capacity", old.flow_capacity != new.flow_capacity),
                    ("pin_path", old.pin_path != new.pin_path),
                    ("web", old.web != new.web),
                ] {
                    if changed {
                        warn!(
                            key,
                            "changed in the configuration; it takes effect at the next restart"
                        );
                    }
                }
                if old.records != new.records {
                    let sink = match new.records.as_str() {
                        "" => Ok(None),
                        t => RecordSink::open(t).map(Some),
                    };
                    match sink {
                        Ok(s) => *lock(&self.records) = s,
                        Err(e) => {
                            error!(error = %e, "opening the new records target failed; keeping the old one")
                        }
                    }
                }
                if old.ipfix != new.ipfix {
                    match ipfix_exporter(&new) {
                        Ok(x) => {
                            let mut cur = lock(&self.ipfix);
                            // The counters go on across a change of collector.
                            let stats = cur.as_ref().map(|c| c.stats);
                            *cur = x.map(|mut x| {
                                if let Some(st) = stats {
                                    x.stats = st;
                                }
                                x
                            });
                        }
                        Err(e) => {
                            error!(error = %e, "opening the new IPFIX collector failed; keeping the old one")
                        }
                    }
                }
                lock(&self.table).set_config(new.table());
                *lock(&self.config) = new;
                self.reconcile();
                info!("configuration reloaded");
            }
        }
        notify::notify("READY=1");
    }
}

/// Records written at a time when every flow ends (shutdown).
const END_CHUNK: usize = 16_384;

/// How often the drain loop reads the flow map's fill.
const FILL_CHECK: Duration = Duration::from_millis(20);

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(source: ConfigSource) -> Result<()> {
    map_large_allocations();
    let cfg = source.load()?;
    check_privileges()?;
    let present = interfaces::list();
    for p in cfg
        .interfaces
        .iter()
        .filter(|p| interfaces::is_plain_name(p))
    {
        if !present.iter().any(|i| &i.name == p) {
            bail!(
                "interface `{p}` does not exist (`ip link` lists the interfaces; choose with --iface)"
            );
        }
    }
    if interfaces::selected(&present, &cfg.interfaces).is_empty() {
        bail!(
            "no interface matches {:?} (apart from loopback): name one with --iface",
            cfg.interfaces
        );
    }
    let listen = cfg.listen_addr();
    let listener = TcpListener::bind(listen).map_err(|e| {
        anyhow::anyhow!("cannot listen on {listen}: {e} (choose another address with --listen)")
    })?;
    listener.set_nonblocking(true)?;
    let records = match cfg.records.as_str() {
        "" => None,
        t => Some(RecordSink::open(t)?),
    };
    let ipfix = ipfix_exporter(&cfg)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The handlers exist before READY=1: a SIGHUP (`systemctl reload`) or
    // SIGTERM that arrives early is handled, never the default action,
    // which for SIGHUP would end the daemon.
    let signals = {
        let _rt = rt.enter();
        Signals::install()?
    };
    let tls = rt.block_on(crate::web::tls(&cfg.web))?;

    let agg_cfg = cfg.aggregates("configuration")?;
    let mut dp = Datapath::load_pinned(cfg.flow_capacity, std::path::Path::new(&cfg.pin_path))?;
    // Whatever an earlier flowd left in the maps is drained, not lost.
    let mut leftover = Vec::new();
    let n = dp.drain_all(|k, v| leftover.push((*k, *v)))?;
    if n > 0 {
        info!(
            flows = n,
            "drained flows an earlier flowd left in the pinned maps"
        );
    }
    let shared = Arc::new(Shared {
        dp: Mutex::new(dp),
        table: Mutex::new(FlowTable::new(cfg.table())),
        drain: Mutex::new(DrainStats::default()),
        ready: AtomicBool::new(false),
        names: Mutex::new(HashMap::new()),
        records: Mutex::new(records),
        ipfix: Mutex::new(ipfix),
        recent: Mutex::new(RecentTop::default()),
        agg: Mutex::new(Aggregator::new(agg_cfg.clone())),
        scan: Mutex::new(ScanDetector::new(cfg.scan_config())),
        tcp: Mutex::new(TcpSignals::new(PeerGroups::new(
            &agg_cfg.peer_groups,
            &agg_cfg.peer_unmatched,
        ))),
        config: Mutex::new(cfg.clone()),
        attach_errors: Mutex::new(BTreeMap::new()),
        fill_failing: AtomicBool::new(false),
    });
    shared.reconcile();
    {
        let dp = lock(&shared.dp);
        if dp.interfaces.is_empty() {
            let errs = lock(&shared.attach_errors);
            let why = errs
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; ");
            drop(errs);
            drop(dp);
            lock(&shared.dp).detach_all();
            bail!("no interface could be attached ({why})");
        }
    }
    shared.absorb(Ok(leftover), false);
    shared.ready.store(true, Ordering::Relaxed);
    notify::notify("READY=1");
    info!(listen = %listen, "flowd running");

    let stop = Arc::new(AtomicBool::new(false));
    let drainer = {
        let shared = Arc::clone(&shared);
        let stop = Arc::clone(&stop);
        let watchdog = notify::watchdog_interval().map(|w| w / 2);
        thread::Builder::new().name("drain".into()).spawn(move || {
            let mut next = Instant::now();
            let mut next_scan = Instant::now() + Duration::from_secs(1);
            let mut next_ping = Instant::now();
            let mut next_fill = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if let Some(w) = watchdog
                    && now >= next_ping
                {
                    notify::notify("WATCHDOG=1");
                    next_ping = now + w;
                }
                if now >= next_scan {
                    shared.reconcile();
                    next_scan = now + Duration::from_secs(1);
                }
                if now >= next_fill {
                    next_fill = now + FILL_CHECK;
                    if shared.filling() {
                        lock(&shared.drain).early += 1;
                        shared.drain_once();
                        continue;
                    }
                }
                if now < next {
                    thread::sleep(
                        (next - now)
                            .min(next_fill - now)
                            .min(Duration::from_millis(50)),
                    );
                    continue;
                }
                let interval = lock(&shared.config).drain_interval();
                next += interval;
                if next < now {
                    next = now + interval;
                }
                shared.drain_once();
            }
        })?
    };

    let served = rt.block_on(async {
        let app = server::router(Arc::clone(&shared));
        let Signals { hup, term, int } = signals;
        tokio::spawn(on_sighup(hup, Arc::clone(&shared), source.clone()));
        crate::web::serve(listener, app, &cfg.web, tls, shutdown_signal(term, int)).await
    });

    notify::notify("STOPPING=1");
    stop.store(true, Ordering::Relaxed);
    let _ = drainer.join();
    shared.ready.store(false, Ordering::Relaxed);
    let detach = lock(&shared.config).detach_on_exit;
    let final_batch = {
        let mut dp = lock(&shared.dp);
        if detach {
            // Detach first so nothing arrives after the final drain.
            dp.detach_all();
        } else {
            dp.release_all();
        }
        let mut batch = Vec::new();
        let r = dp.drain_all(|k, v| batch.push((*k, *v)));
        r.map(|_| batch)
    };
    shared.absorb(final_batch, true);
    info!(flows = lock(&shared.table).len(), "flowd stopped");
    served.context("HTTP server failed")?;
    Ok(())
}

/// The daemon's signal streams, installed before it reports ready.
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Needs a runtime context (`Runtime::enter`).
    fn install() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let ctx =
            |name: &'static str| move |e| anyhow::anyhow!("cannot install the {name} handler: {e}");
        Ok(Signals {
            hup: signal(SignalKind::hangup()).map_err(ctx("SIGHUP"))?,
            term: signal(SignalKind::terminate()).map_err(ctx("SIGTERM"))?,
            int: signal(SignalKind::interrupt()).map_err(ctx("SIGINT"))?,
        })
    }
}

async fn on_sighup(
    mut hup: tokio::signal::unix::Signal,
    shared: Arc<Shared>,
    source: ConfigSource,
) {
    while hup.recv().await.is_some() {
        let shared = Arc::clone(&shared);
        let source = source.clone();
        let _ = tokio::task::spawn_blocking(move || shared.reload(&source)).await;
    }
}

async fn shutdown_signal(
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
) {
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
}

/// The IPFIX exporter the configuration asks for, if any.
fn ipfix_exporter(cfg: &Config) -> std::io::Result<Option<IpfixExporter>> {
    let c = &cfg.ipfix;
    if c.collector.is_empty() {
        return Ok(None);
    }
    let addr = c.collector.parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("ipfix.collector {:?}: {e}", c.collector),
        )
    })?;
    IpfixExporter::connect(
        addr,
        c.observation_domain,
        Duration::from_secs(c.template_refresh_s),
        c.max_message_bytes,
    )
    .map(Some)
}
