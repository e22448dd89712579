//! The state the daemon's threads share: the loaded datapath, the flow
//! table, the exporters' state and the drain's statistics. The drain loop
//! ([`crate::drain`]) writes it, the HTTP handlers ([`crate::server`]) read
//! it through the views in `views.rs`.

mod views;

pub use views::{CHUNK_FLOWS, CHUNK_SLOTS, FlowChunk};

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::{
    config::Config,
    export::{
        aggregate::{AggConfig, Aggregator},
        groups::PeerGroups,
        ipfix::IpfixExporter,
        metrics::HistogramSnapshot,
        recent::RecentTop,
        records::RecordSink,
        tcp::TcpSignals,
    },
    flowtable::FlowTable,
    loader::Datapath,
    scan::ScanDetector,
};

/// What the drains did, for the metrics.
#[derive(Debug, Clone)]
pub(crate) struct DrainStats {
    pub(crate) drains: u64,
    /// Drains started before the interval because the map was filling.
    pub(crate) early: u64,
    /// Entries in the generation being written, at the last check.
    pub(crate) fill: u64,
    pub(crate) entries: u64,
    pub(crate) last_entries: u64,
    pub(crate) errors: u64,
    pub(crate) seconds: HistogramSnapshot,
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

/// The L7 path of a daemon with `[l7] enabled` (fed by `drain/l7.rs`): the
/// engine, the event log (if one is configured), the recent events of
/// `/api/v1/l7` and the names-by-traffic counters.
pub struct L7Live {
    pub engine: crate::l7::Engine,
    pub sink: Option<RecordSink>,
    /// The `[l7] log` the sink was opened for (a reload compares).
    pub log: String,
    pub recent: crate::l7::recent::RecentEvents,
    /// Names by traffic, and events whose flow had left the table.
    pub names: crate::export::metrics::l7_top::NameBytes,
}

impl L7Live {
    pub fn new(settings: &crate::config_l7::L7Settings, sink: Option<RecordSink>) -> Self {
        Self {
            engine: crate::l7::Engine::new(crate::l7::L7Config {
                dns_ports: settings.dns_ports.clone(),
                ..crate::l7::L7Config::default()
            }),
            sink,
            log: settings.log.clone(),
            recent: crate::l7::recent::RecentEvents::new(settings.recent_events),
            names: Default::default(),
        }
    }
}

/// State shared by the drain loop and the HTTP handlers.
pub struct Shared {
    pub(crate) dp: Mutex<Datapath>,
    pub(crate) table: Mutex<FlowTable>,
    pub(crate) drain: Mutex<DrainStats>,
    pub(crate) ready: AtomicBool,
    /// Interface name per ifindex, of every interface attached in this run.
    pub(crate) names: Mutex<HashMap<u32, String>>,
    pub(crate) records: Mutex<Option<RecordSink>>,
    pub(crate) ipfix: Mutex<Option<IpfixExporter>>,
    /// The heaviest flows of the last drains, for the live view.
    pub(crate) recent: Mutex<RecentTop>,
    pub(crate) agg: Mutex<Aggregator>,
    pub(crate) scan: Mutex<ScanDetector>,
    pub(crate) tcp: Mutex<TcpSignals>,
    pub(crate) config: Mutex<Config>,
    /// Interface names whose attach failed, with the error last logged.
    pub(crate) attach_errors: Mutex<BTreeMap<String, String>>,
    /// Reading the flow map's fill failed at the last check (logged once).
    pub(crate) fill_failing: AtomicBool,
    /// The HTTP server's connections.
    pub http: Arc<crate::listen::ConnStats>,
    /// Configured interfaces without programs, as the last reconcile found.
    pub(crate) unattached: Mutex<Vec<String>>,
    /// The L7 path, when `[l7] enabled`.
    pub(crate) l7: Mutex<Option<L7Live>>,
    /// The L7 events' metrics and security signals (fed by `drain/l7.rs`).
    pub(crate) l7_metrics: Mutex<crate::export::l7stats::L7Metrics>,
    /// AF_XDP capture, one per `[af_xdp]` interface present. Lock order:
    /// `dp` first (stopping one needs both).
    pub(crate) afxdp: Mutex<Vec<crate::afxdp::AfXdpCapture>>,
}

impl Shared {
    /// The state of a daemon that has loaded `dp` and attached nothing yet.
    pub(crate) fn new(
        dp: Datapath,
        cfg: Config,
        agg: AggConfig,
        records: Option<RecordSink>,
        ipfix: Option<IpfixExporter>,
    ) -> Self {
        Self {
            dp: Mutex::new(dp),
            table: Mutex::new(FlowTable::new(cfg.table())),
            drain: Mutex::new(DrainStats::default()),
            ready: AtomicBool::new(false),
            names: Mutex::new(HashMap::new()),
            records: Mutex::new(records),
            ipfix: Mutex::new(ipfix),
            recent: Mutex::new(RecentTop::default()),
            scan: Mutex::new(ScanDetector::new(cfg.scan_config())),
            tcp: Mutex::new(TcpSignals::new(PeerGroups::new(
                &agg.peer_groups,
                &agg.peer_unmatched,
            ))),
            l7_metrics: Mutex::new(crate::export::l7stats::L7Metrics::new(
                PeerGroups::new(&agg.peer_groups, &agg.peer_unmatched),
                crate::export::l7signals::L7Signals::default(),
            )),
            agg: Mutex::new(Aggregator::new(agg)),
            config: Mutex::new(cfg),
            attach_errors: Mutex::new(BTreeMap::new()),
            fill_failing: AtomicBool::new(false),
            http: Arc::default(),
            unattached: Mutex::new(Vec::new()),
            l7: Mutex::new(None),
            afxdp: Mutex::new(Vec::new()),
        }
    }

    /// Whether the programs are attached and the leftovers drained.
    /// Ready: started, and every interface the configuration selects (or
    /// names) has its programs.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && lock(&self.unattached).is_empty()
    }

    /// The configured interfaces that have no program now (named in the
    /// configuration but absent, or selected and failing to attach).
    pub fn unattached(&self) -> Vec<String> {
        lock(&self.unattached).clone()
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// Locks `m`, also when another thread panicked holding it: a panic
/// elsewhere must not take the exporter down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
