//! `flowd run`: start (load, attach, drain what an earlier flowd left),
//! run until SIGINT/SIGTERM with a reload on SIGHUP, and stop cleanly (a
//! final drain, every flow ended and recorded).
//!
//! The stages it wires together have modules of their own: the loader
//! ([`crate::loader`]), the drain ([`crate::drain`]), the shared state and
//! its views ([`crate::state`]) and the HTTP server ([`crate::server`]).

mod afxdp;
mod reload;
mod source;

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use tracing::info;

pub use self::source::{ConfigSource, Overrides};
use crate::{
    config::Config,
    doctor, drain,
    export::{ipfix::IpfixExporter, records::RecordSink},
    interfaces,
    loader::Datapath,
    notify, server,
    state::{Shared, lock},
};

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(source: ConfigSource) -> Result<()> {
    map_large_allocations();
    let cfg = source.load()?;
    doctor::check_privileges()?;
    raise_fd_limit();
    check_interfaces(&cfg)?;
    let listen = cfg.listen_addr();
    let listener = TcpListener::bind(listen).map_err(|e| {
        anyhow::anyhow!("cannot listen on {listen}: {e} (choose another address with --listen)")
    })?;
    listener.set_nonblocking(true)?;

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

    let shared = Arc::new(start(&cfg, listen)?);
    let stop_drain = Arc::new(AtomicBool::new(false));
    let drainer = {
        let shared = Arc::clone(&shared);
        let stop = Arc::clone(&stop_drain);
        let watchdog = notify::watchdog_interval().map(|w| w / 2);
        thread::Builder::new().name("drain".into()).spawn(move || {
            let mut next_scan = Instant::now() + Duration::from_secs(1);
            let mut next_ping = Instant::now();
            drain::run(&shared, &stop, |now| {
                if let Some(w) = watchdog
                    && now >= next_ping
                {
                    notify::notify("WATCHDOG=1");
                    next_ping = now + w;
                }
                if now >= next_scan {
                    reload::reconcile(&shared);
                    next_scan = now + Duration::from_secs(1);
                }
            });
        })?
    };

    let served = rt.block_on(async {
        let app = server::router(Arc::clone(&shared));
        let Signals { hup, term, int } = signals;
        tokio::spawn(reload::on_sighup(hup, Arc::clone(&shared), source.clone()));
        let conns = Arc::clone(&shared.http);
        crate::web::serve(
            listener,
            app,
            &cfg.web,
            tls,
            conns,
            shutdown_signal(term, int),
        )
        .await
    });

    notify::notify("STOPPING=1");
    stop_drain.store(true, Ordering::Relaxed);
    let _ = drainer.join();
    stop(&shared);
    served.context("HTTP server failed")?;
    Ok(())
}

/// Raises the soft open-file limit to the hard limit: the default soft limit
/// (1024 under systemd) is what a few idle HTTP clients can exhaust, and the
/// hard limit is what the host allows this process anyway.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let soft = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            info!(from = soft, to = lim.rlim_max, "raised the open-file limit");
        } else {
            tracing::warn!(soft, error = %std::io::Error::last_os_error(), "could not raise the open-file limit");
        }
    }
}

/// Fails when an interface named plainly (not a pattern) does not exist,
/// or when nothing matches at all.
fn check_interfaces(cfg: &Config) -> Result<()> {
    let present = interfaces::list()?;
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
    for p in cfg
        .af_xdp
        .interfaces
        .iter()
        .filter(|p| interfaces::is_plain_name(p))
    {
        if !present.iter().any(|i| &i.name == p) {
            bail!(
                "AF_XDP interface `{p}` does not exist (`ip link` lists the interfaces; choose with --af-xdp)"
            );
        }
    }
    if interfaces::in_kernel(&present, &cfg.interfaces, &cfg.af_xdp.interfaces).is_empty()
        && interfaces::af_xdp_selected(&present, &cfg.af_xdp.interfaces).is_empty()
    {
        bail!(
            "no interface matches {:?} (apart from loopback): name one with --iface or --af-xdp",
            if cfg.af_xdp.enabled() {
                &cfg.af_xdp.interfaces
            } else {
                &cfg.interfaces
            }
        );
    }
    Ok(())
}

/// Loads (taking over what an earlier flowd pinned), drains its leftovers,
/// attaches, and reports ready.
fn start(cfg: &Config, listen: SocketAddr) -> Result<Shared> {
    let records = match cfg.records.as_str() {
        "" => None,
        t => Some(RecordSink::open(t)?),
    };
    let ipfix = ipfix_exporter(cfg)?;
    let agg_cfg = cfg.aggregates("configuration")?;
    let mut dp = Datapath::load_pinned(cfg.flow_capacity, Path::new(&cfg.pin_path))?;
    // Whatever an earlier flowd left in the maps is drained, not lost.
    let mut leftover = Vec::new();
    let n = dp.drain_all(|k, v| leftover.push((*k, *v)))?;
    if n > 0 {
        info!(
            flows = n,
            "drained flows an earlier flowd left in the pinned maps"
        );
    }
    let l7 = if cfg.l7.enabled {
        let sink = match cfg.l7.log.as_str() {
            "" => None,
            t => Some(RecordSink::open(t)?),
        };
        dp.set_l7(Some(cfg.l7.control()))?;
        Some(crate::state::L7Live::new(&cfg.l7, sink))
    } else {
        // An earlier flowd's setting is not left on.
        dp.set_l7(None)?;
        None
    };
    if cfg.drops.enabled {
        // Drop reasons are an addition: the flows are counted without them.
        if let Err(e) = dp.start_drops() {
            tracing::warn!(error = %e, "kernel drop reasons are off ([drops] enabled = false hides this)");
        }
    }
    let shared = Shared::new(dp, cfg.clone(), agg_cfg, records, ipfix);
    *lock(&shared.l7) = l7;
    reload::reconcile(&shared);
    {
        let mut dp = lock(&shared.dp);
        if dp.interfaces.is_empty() && lock(&shared.afxdp).is_empty() {
            let why = lock(&shared.attach_errors)
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; ");
            dp.detach_all();
            bail!("no interface could be attached ({why})");
        }
    }
    shared.absorb(Ok(leftover), false);
    shared.set_ready(true);
    notify::notify("READY=1");
    info!(listen = %listen, "flowd running");
    Ok(shared)
}

/// Detaches (or, with `detach_on_exit = false`, leaves the programs pinned
/// for the next flowd), drains both generations and ends every flow.
fn stop(shared: &Shared) {
    shared.set_ready(false);
    let detach = lock(&shared.config).detach_on_exit;
    // AF_XDP first: its workers' last frames go into the final drain.
    afxdp::stop_all(shared);
    let mut l7_samples = Vec::new();
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
        dp.drain_l7(|s| l7_samples.push(*s));
        dp.flush_kernel_log();
        r.map(|_| batch)
    };
    // The last events name their flows before every flow ends.
    match final_batch {
        Ok(batch) => {
            shared.apply(&batch);
            shared.absorb_l7(&l7_samples, true);
            shared.finish(Ok(batch.len()), true);
        }
        Err(e) => {
            shared.absorb_l7(&l7_samples, true);
            shared.finish(Err(e), true);
        }
    }
    info!(flows = lock(&shared.table).len(), "flowd stopped");
}

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
