//! Kernel drop reasons (issue 14): packets and bytes the kernel freed as
//! dropped on a monitored interface, per `reason` (the running kernel's
//! `enum skb_drop_reason`, without `SKB_DROP_REASON_`, lower case). The
//! series are bounded by the tracer's map (`DROP_COUNTS_CAPACITY` (slot,
//! reason) pairs); a drop that finds it full is counted in
//! `flowd_kernel_drops_map_full_total`.

use super::{
    Snapshot,
    family::{Family, Num, labels},
};

/// One (device, reason) of the tracer at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelDropSnapshot {
    pub device: String,
    pub reason: String,
    pub packets: u64,
    /// `skb->len` at the drop, summed.
    pub bytes: u64,
}

/// The tracer's counts (the families are left out when it is off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelDrops {
    pub by_reason: Vec<KernelDropSnapshot>,
    /// Drops on monitored interfaces the count map had no room for.
    pub map_full: u64,
}

pub(super) fn families(s: &Snapshot, out: &mut Vec<Family>) {
    let Some(d) = &s.kernel_drops else {
        return;
    };
    let per = |f: fn(&KernelDropSnapshot) -> u64| {
        d.by_reason
            .iter()
            .map(|x| {
                (
                    labels([("device", &x.device), ("reason", &x.reason)]),
                    Num::U(f(x)),
                )
            })
            .collect::<Vec<_>>()
    };
    out.push(Family::counter(
        "flowd_kernel_drops",
        "Packets the kernel dropped (kfree_skb with a drop reason) whose device was a monitored interface, by the kernel's drop reason.",
        per(|x| x.packets),
    ));
    out.push(Family::counter(
        "flowd_kernel_drop_bytes",
        "Bytes (skb->len at the drop) of the packets in flowd_kernel_drops_total.",
        per(|x| x.bytes),
    ));
    out.push(Family::counter(
        "flowd_kernel_drops_map_full",
        "Drops on monitored interfaces not in flowd_kernel_drops_total because the tracer's (interface, reason) map was full.",
        vec![(Vec::new(), Num::U(d.map_full))],
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::metrics::{Format, encode};

    #[test]
    fn kernel_drop_families_per_device_and_reason() {
        let none = encode(Snapshot::default(), Format::Text004);
        assert!(
            !none.contains("flowd_kernel_drop"),
            "tracer off, no families"
        );
        let s = Snapshot {
            kernel_drops: Some(KernelDrops {
                by_reason: vec![KernelDropSnapshot {
                    device: "veth0".into(),
                    reason: "netfilter_drop".into(),
                    packets: 7,
                    bytes: 7 * 128,
                }],
                map_full: 2,
            }),
            ..Snapshot::default()
        };
        let text = encode(s, Format::Text004);
        for line in [
            "flowd_kernel_drops_total{device=\"veth0\",reason=\"netfilter_drop\"} 7",
            "flowd_kernel_drop_bytes_total{device=\"veth0\",reason=\"netfilter_drop\"} 896",
            "flowd_kernel_drops_map_full_total 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
