//! The AF_XDP interfaces over the daemon's life (issue 13): captured when
//! they appear (every second, with the in-kernel reconcile), stopped when
//! they go or leave the configuration, and stopped before the final drain
//! so their last frames are in it.

use tracing::{error, info};

use crate::{
    afxdp::AfXdpCapture,
    config_afxdp::AfXdpSettings,
    drain::grace_period,
    interfaces::{self, Iface},
    loader::XdpAttachMode,
    state::{Shared, lock},
};

/// Starts capture on the selected interfaces that have none, stops it on
/// those that went away or are no longer selected. Returns the selected
/// interfaces without a capture (named but absent, or failing to start).
pub(super) fn reconcile(
    shared: &Shared,
    present: &[Iface],
    settings: &AfXdpSettings,
    mode: Option<XdpAttachMode>,
) -> Vec<String> {
    let wanted = interfaces::af_xdp_selected(present, &settings.interfaces);
    let mut dp = lock(&shared.dp);
    let mut caps = lock(&shared.afxdp);
    let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut *caps).into_iter().partition(|c| {
        wanted
            .iter()
            .any(|i| i.ifindex == c.ifindex && i.name == c.iface)
    });
    *caps = keep;
    for c in gone {
        info!(iface = %c.iface, "AF_XDP: interface gone or no longer selected; stopping its capture");
        c.stop(&mut dp, grace_period);
    }
    let mut missing = Vec::new();
    for i in &wanted {
        if caps.iter().any(|c| c.ifindex == i.ifindex) {
            continue;
        }
        match AfXdpCapture::start(&mut dp, &i.name, mode, settings.ring_size) {
            Ok(c) => {
                lock(&shared.names).insert(i.ifindex, i.name.clone());
                lock(&shared.attach_errors).remove(&i.name);
                caps.push(c);
            }
            Err(e) => {
                let msg = e.to_string();
                let mut errs = lock(&shared.attach_errors);
                if errs.get(&i.name) != Some(&msg) {
                    error!(iface = i.name, error = %msg, "AF_XDP capture failed to start; retrying while it is selected");
                    errs.insert(i.name.clone(), msg);
                }
                missing.push(i.name.clone());
            }
        }
    }
    missing.extend(
        settings
            .interfaces
            .iter()
            .filter(|p| interfaces::is_plain_name(p) && !present.iter().any(|i| &i.name == *p))
            .cloned(),
    );
    missing
}

/// Stops every capture (before the final drain): their frames are then in
/// the flow maps, their sockets and UMEMs released, the program detached.
pub(super) fn stop_all(shared: &Shared) {
    let mut dp = lock(&shared.dp);
    for c in std::mem::take(&mut *lock(&shared.afxdp)) {
        c.stop(&mut dp, grace_period);
    }
}
