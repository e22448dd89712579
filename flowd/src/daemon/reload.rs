//! What changes while flowd runs: SIGHUP reloads the configuration and
//! reopens the records file and the L7 event log; the interfaces the
//! configuration selects are attached as they appear and forgotten when
//! they go.

use std::sync::Arc;

use tracing::{error, info, warn};

use super::{ConfigSource, ipfix_exporter};
use crate::{
    config_l7::L7Settings,
    export::records::RecordSink,
    interfaces, notify,
    state::{L7Live, Shared, lock},
};

/// Reloads on every SIGHUP (`systemctl reload`).
pub(super) async fn on_sighup(
    mut hup: tokio::signal::unix::Signal,
    shared: Arc<Shared>,
    source: ConfigSource,
) {
    while hup.recv().await.is_some() {
        let shared = Arc::clone(&shared);
        let source = source.clone();
        let _ = tokio::task::spawn_blocking(move || reload(&shared, &source)).await;
    }
}

/// Attaches what the configuration selects and is not attached yet;
/// marks attached interfaces that went away as detached.
pub(super) fn reconcile(shared: &Shared) {
    let (patterns, mode, af_xdp) = {
        let c = lock(&shared.config);
        (c.interfaces.clone(), c.xdp_attach_mode(), c.af_xdp.clone())
    };
    // A failed listing (EMFILE, say) is "unknown": nothing is forgotten or
    // attached. An interface is forgotten only when a listing that worked
    // lacks it.
    let present = match interfaces::list() {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "cannot list interfaces; keeping every attachment as it is");
            return;
        }
    };
    let afxdp_missing = super::afxdp::reconcile(shared, &present, &af_xdp, mode);
    let wanted = interfaces::in_kernel(&present, &patterns, &af_xdp.interfaces);
    let mut dp = lock(&shared.dp);
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
                lock(&shared.names).insert(i.ifindex, i.name.clone());
                lock(&shared.attach_errors).remove(&i.name);
            }
            Err(e) => {
                let msg = e.to_string();
                let mut errs = lock(&shared.attach_errors);
                if errs.get(&i.name) != Some(&msg) {
                    error!(iface = i.name, error = %msg, "attach failed; retrying while it is selected");
                    errs.insert(i.name.clone(), msg);
                }
            }
        }
    }
    // What /readyz reports: selected but not attached, and named but absent.
    let mut unattached: Vec<String> =
        interfaces::in_kernel(&present, &patterns, &af_xdp.interfaces)
            .into_iter()
            .filter(|i| !dp.interfaces.contains_key(&i.ifindex))
            .map(|i| i.name)
            .collect();
    unattached.extend(
        patterns
            .iter()
            .filter(|p| interfaces::is_plain_name(p) && !present.iter().any(|i| &i.name == *p))
            .cloned(),
    );
    unattached.extend(afxdp_missing);
    unattached.sort();
    unattached.dedup();
    *lock(&shared.unattached) = unattached;
}

/// SIGHUP: reopen the records file, then reload the configuration.
fn reload(shared: &Shared, source: &ConfigSource) {
    notify::reloading();
    reopen_records(shared);
    shared.reopen_l7_log();
    match source.load() {
        Err(e) => {
            error!(error = %format!("{e:#}"), "reload rejected; keeping the running configuration")
        }
        Ok(new) => {
            let old = lock(&shared.config).clone();
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
                    Ok(s) => *lock(&shared.records) = s,
                    Err(e) => {
                        error!(error = %e, "opening the new records target failed; keeping the old one")
                    }
                }
            }
            if old.ipfix != new.ipfix {
                match ipfix_exporter(&new) {
                    Ok(x) => {
                        let mut cur = lock(&shared.ipfix);
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
            reload_l7(shared, &old.l7, &new.l7);
            lock(&shared.table).set_config(new.table());
            *lock(&shared.config) = new;
            reconcile(shared);
            info!("configuration reloaded");
        }
    }
    notify::notify("READY=1");
}

/// SIGHUP: reopen the records file (logrotate).
fn reopen_records(shared: &Shared) {
    if let Some(sink) = lock(&shared.records).as_mut() {
        match sink.reopen() {
            Ok(()) => info!("flow records file reopened"),
            Err(e) => error!(error = %e, "reopening the flow records file failed"),
        }
    }
}

/// `[l7]` changed: the programs' settings (snap length, budget,
/// continuation, DNS ports) are rewritten in place; `enabled` switches the
/// selection and the engine on or off (off: the requests still waiting are
/// emitted first); a new `log` opens that file (if it fails, the events go
/// on without a log and the error is logged); `recent_events` rebounds the
/// ring, dropping the oldest.
pub(super) fn reload_l7(shared: &Shared, old: &L7Settings, new: &L7Settings) {
    if old == new {
        return;
    }
    if !new.enabled {
        if let Err(e) = lock(&shared.dp).set_l7(None) {
            error!(error = %e, "switching the L7 selection off failed");
            return;
        }
        shared.absorb_l7(&[], true);
        if lock(&shared.l7).take().is_some() {
            info!("application layer switched off");
        }
        return;
    }
    if let Err(e) = lock(&shared.dp).set_l7(Some(new.control())) {
        error!(error = %e, "writing the new L7 settings to the programs failed; keeping the old ones");
        return;
    }
    let open = |log: &str| match log {
        "" => None,
        t => RecordSink::open(t)
            .inspect_err(
                |e| error!(error = %e, "opening the L7 event log failed; events go on without it"),
            )
            .ok(),
    };
    let mut l7 = lock(&shared.l7);
    match l7.as_mut() {
        None => {
            let sink = open(&new.log);
            let mut live = L7Live::new(new, None);
            if sink.is_none() {
                live.log.clear();
            }
            live.sink = sink;
            *l7 = Some(live);
            info!("application layer switched on");
        }
        Some(live) => {
            live.engine.set_dns_ports(&new.dns_ports);
            live.recent.set_capacity(new.recent_events);
            if live.log != new.log {
                live.sink = open(&new.log);
                live.log = if live.sink.is_some() {
                    new.log.clone()
                } else {
                    String::new()
                };
            }
        }
    }
}
