//! `flowd run`: load, attach, drain on an interval, serve, and shut down
//! cleanly on SIGINT/SIGTERM.

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpListener},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use flowd_common::{DIR_EGRESS, DIR_INGRESS, FlowKey, FlowStats};
use serde_json::Value;
use tracing::{error, info, warn};

use crate::{
    clock::TimeBase,
    export::records::RecordSink,
    export::{
        aggregate::{AggConfig, Aggregator},
        metrics::{HistogramSnapshot, IfaceSnapshot, Snapshot},
    },
    flowtable::{EndReason, Ended, FlowTable, TableConfig},
    loader::{Datapath, XdpAttachMode},
    record, server,
};

/// What `flowd run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Interfaces to monitor; empty: every interface that is up and not loopback.
    pub interfaces: Vec<String>,
    pub listen: SocketAddr,
    pub drain_interval: Duration,
    pub flow_capacity: u32,
    pub xdp_mode: Option<XdpAttachMode>,
    pub table: TableConfig,
    /// Where ended flow records go: `-` for stdout, else a file.
    pub records: Option<String>,
}

#[derive(Debug, Clone)]
struct DrainStats {
    drains: u64,
    entries: u64,
    last_entries: u64,
    errors: u64,
    seconds: HistogramSnapshot,
}

impl Default for DrainStats {
    fn default() -> Self {
        Self {
            drains: 0,
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
    agg: Mutex<Aggregator>,
}

impl Shared {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        {
            let dp = lock(&self.dp);
            s.flow_map_capacity = u64::from(dp.capacity());
            for a in dp.interfaces.values() {
                let rx = dp.totals(a.slot, DIR_INGRESS);
                let tx = dp.totals(a.slot, DIR_EGRESS);
                match (rx, tx) {
                    (Ok(rx), Ok(tx)) => s.ifaces.push(IfaceSnapshot {
                        device: a.name.clone(),
                        rx,
                        tx,
                        xdp_mode: a.xdp.as_ref().map(|(_, m)| m.as_str()),
                        tc_attached: a.tc.is_some(),
                    }),
                    (Err(e), _) | (_, Err(e)) => {
                        warn!(iface = a.name, error = %e, "reading totals failed")
                    }
                }
            }
        }
        {
            let table = lock(&self.table);
            s.flows_active = table.len() as u64;
            s.flows_max = table.config().max_flows as u64;
            let st = table.stats();
            s.flows_started = st.started;
            s.flows_ended = EndReason::ALL
                .iter()
                .map(|r| (r.as_str(), st.ended[*r as usize]))
                .collect();
        }
        let d = lock(&self.drain).clone();
        s.drain_seconds = d.seconds;
        s.groups = lock(&self.agg).snapshot();
        s.drains = d.drains;
        s.drained_entries = d.entries;
        s.last_drain_entries = d.last_entries;
        s.drain_errors = d.errors;
        s
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

    /// One drain into the flow table.
    fn drain_once(&self) {
        let mut batch: Vec<(FlowKey, FlowStats)> = Vec::new();
        let t0 = Instant::now();
        let r = lock(&self.dp).drain(|k, v| batch.push((*k, *v)));
        lock(&self.drain)
            .seconds
            .observe(t0.elapsed().as_secs_f64());
        self.absorb(r.map(|_| batch), false);
    }

    /// Adds a drained batch to the table, then ends what timed out (or,
    /// at shutdown, everything) and writes those records.
    fn absorb(&self, r: Result<Vec<(FlowKey, FlowStats)>, crate::loader::LoadError>, last: bool) {
        let ended = {
            let mut d = lock(&self.drain);
            let mut table = lock(&self.table);
            match r {
                Ok(batch) => {
                    let time = TimeBase::live();
                    let names = lock(&self.names);
                    let mut agg = lock(&self.agg);
                    for (k, v) in &batch {
                        table.apply(k, v, time);
                        let dev = names.get(&k.ifindex).map_or("unknown", String::as_str);
                        agg.absorb(k, v, dev);
                    }
                    agg.tick(crate::clock::realtime_ns());
                    d.drains += 1;
                    d.entries += batch.len() as u64;
                    d.last_entries = batch.len() as u64;
                }
                Err(e) => {
                    d.errors += 1;
                    error!(error = %e, "drain failed");
                }
            }
            if last {
                table.end_all()
            } else {
                table.expire(crate::clock::realtime_ns())
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
        let mut sink = lock(&self.records);
        let Some(sink) = sink.as_mut() else {
            return;
        };
        let records: Vec<Value> = ended
            .iter()
            .map(|e| record::ended_json(e, &self.device(e.flow.key.ifindex)))
            .collect();
        if let Err(e) = sink.write(&records) {
            error!(error = %e, records = records.len(), "writing flow records failed");
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not take the exporter down with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Interfaces that are up and not loopback, from sysfs.
pub fn default_interfaces() -> Result<Vec<String>> {
    const IFF_UP: u32 = 0x1;
    const IFF_LOOPBACK: u32 = 0x8;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/class/net").context("reading /sys/class/net")? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let flags = std::fs::read_to_string(e.path().join("flags")).unwrap_or_default();
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
        if flags & IFF_UP != 0 && flags & IFF_LOOPBACK == 0 {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Fails with one line when flowd lacks the privileges to load programs.
pub fn check_privileges() -> Result<()> {
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

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(opts: RunOptions) -> Result<()> {
    check_privileges()?;
    let interfaces = if opts.interfaces.is_empty() {
        let found = default_interfaces()?;
        if found.is_empty() {
            bail!("no interface is up apart from loopback: name one with --iface");
        }
        found
    } else {
        opts.interfaces.clone()
    };
    for i in &interfaces {
        if crate::loader::ifindex(i).is_none() {
            bail!(
                "interface `{i}` does not exist (`ip link` lists the interfaces; choose with --iface)"
            );
        }
    }
    let listener = TcpListener::bind(opts.listen).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {}: {e} (choose another address with --listen)",
            opts.listen
        )
    })?;
    listener.set_nonblocking(true)?;
    let records = match &opts.records {
        Some(target) => Some(RecordSink::open(target)?),
        None => None,
    };

    let mut dp = Datapath::load(opts.flow_capacity)?;
    let mut names = HashMap::new();
    for i in &interfaces {
        if let Err(e) = dp.attach(i, opts.xdp_mode) {
            dp.detach_all();
            return Err(e.into());
        }
        if let Some(ix) = crate::loader::ifindex(i) {
            names.insert(ix, i.clone());
        }
    }
    let shared = Arc::new(Shared {
        dp: Mutex::new(dp),
        table: Mutex::new(FlowTable::new(opts.table)),
        drain: Mutex::new(DrainStats::default()),
        ready: AtomicBool::new(true),
        names: Mutex::new(names),
        records: Mutex::new(records),
        agg: Mutex::new(Aggregator::new(AggConfig::default())),
    });
    info!(listen = %opts.listen, interfaces = ?interfaces, "flowd running");

    let stop = Arc::new(AtomicBool::new(false));
    let drainer = {
        let shared = Arc::clone(&shared);
        let stop = Arc::clone(&stop);
        let interval = opts.drain_interval;
        thread::Builder::new().name("drain".into()).spawn(move || {
            let mut next = Instant::now() + interval;
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now < next {
                    thread::sleep((next - now).min(Duration::from_millis(50)));
                    continue;
                }
                next += interval;
                if next < now {
                    next = now + interval;
                }
                shared.drain_once();
            }
        })?
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = server::router(Arc::clone(&shared));
        tokio::spawn(on_sighup(Arc::clone(&shared)));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
    });

    stop.store(true, Ordering::Relaxed);
    let _ = drainer.join();
    // Detach first so nothing arrives after the final drain.
    shared.ready.store(false, Ordering::Relaxed);
    let final_batch = {
        let mut dp = lock(&shared.dp);
        dp.detach_all();
        let mut batch = Vec::new();
        let r = dp.drain_all(|k, v| batch.push((*k, *v)));
        r.map(|_| batch)
    };
    shared.absorb(final_batch, true);
    info!(flows = lock(&shared.table).len(), "flowd stopped");
    served.context("HTTP server failed")?;
    Ok(())
}

async fn on_sighup(shared: Arc<Shared>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        warn!("cannot install the SIGHUP handler");
        return;
    };
    while hup.recv().await.is_some() {
        let shared = Arc::clone(&shared);
        let _ = tokio::task::spawn_blocking(move || shared.reopen_records()).await;
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
}
