//! Kernel drop reasons (issue 14), user-space side: the running kernel's
//! `enum skb_drop_reason` and the field offsets the tracer needs, both
//! from its BTF at load (no table in flowd: the enum changes between
//! kernels). The tracer itself is `flowd-ebpf/src/drops.rs`; loading and
//! reading it is `crate::loader` (`drops.rs`).

pub mod btf;

use std::collections::BTreeMap;

use flowd_common::drops::DropConfig;

pub use self::btf::{Btf, BtfError};

/// The prefix the exported `reason` label drops.
const PREFIX: &str = "SKB_DROP_REASON_";

/// The kernel's drop reasons: value -> exported name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reasons {
    names: BTreeMap<u32, String>,
    consumed: u32,
    not_dropped_yet: u32,
}

impl Reasons {
    /// Reads `enum skb_drop_reason` from `btf`.
    pub fn from_btf(btf: &Btf) -> Result<Self, BtfError> {
        let values = btf.enum_values("skb_drop_reason")?;
        let find = |want: &str| {
            values
                .iter()
                .find(|(_, n)| n.as_str() == want)
                .map(|(&v, _)| v as u32)
                .ok_or_else(|| BtfError::NotFound {
                    kind: "enumerator of skb_drop_reason",
                    name: want.to_string(),
                })
        };
        Ok(Self {
            consumed: find("SKB_CONSUMED")?,
            not_dropped_yet: find("SKB_NOT_DROPPED_YET")?,
            names: values.iter().map(|(&v, n)| (v as u32, label(n))).collect(),
        })
    }

    /// The `reason` label of `value`; a value this kernel's enum does not
    /// name (a subsystem's reason, e.g. mac80211's) is `unknown_<value>`.
    pub fn name(&self, value: u32) -> String {
        self.names
            .get(&value)
            .cloned()
            .unwrap_or_else(|| format!("unknown_{value}"))
    }
}

/// `SKB_DROP_REASON_NETFILTER_DROP` -> `netfilter_drop`; the two names
/// without the prefix (`SKB_CONSUMED`, `SKB_NOT_DROPPED_YET`) keep theirs.
pub fn label(enumerator: &str) -> String {
    enumerator
        .strip_prefix(PREFIX)
        .unwrap_or(enumerator)
        .to_ascii_lowercase()
}

/// The tracer's configuration for the running kernel (`enabled` set).
pub fn config(btf: &Btf, reasons: &Reasons) -> Result<DropConfig, BtfError> {
    Ok(DropConfig {
        enabled: 1,
        reason_consumed: reasons.consumed,
        reason_not_dropped_yet: reasons.not_dropped_yet,
        off_skb_dev: btf.member_offset("sk_buff", &["dev"])?,
        off_skb_len: btf.member_offset("sk_buff", &["len"])?,
        off_dev_ifindex: btf.member_offset("net_device", &["ifindex"])?,
        off_dev_nd_net: btf.member_offset("net_device", &["nd_net", "net"])?,
        off_net_ns_inum: btf.member_offset("net", &["ns", "inum"])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_drop_the_prefix_and_lower_case() {
        assert_eq!(label("SKB_DROP_REASON_NETFILTER_DROP"), "netfilter_drop");
        assert_eq!(label("SKB_DROP_REASON_NO_SOCKET"), "no_socket");
        assert_eq!(label("SKB_CONSUMED"), "skb_consumed");
    }

    #[test]
    fn the_running_kernels_reasons_and_offsets() {
        let btf = Btf::from_sys_fs().unwrap();
        let r = Reasons::from_btf(&btf).unwrap();
        assert_ne!(r.consumed, r.not_dropped_yet);
        let nf = r
            .names
            .iter()
            .find(|(_, n)| n.as_str() == "netfilter_drop")
            .map(|(&v, _)| v)
            .unwrap();
        assert_eq!(r.name(nf), "netfilter_drop");
        assert_eq!(r.name(0xdead_0000), "unknown_3735879680");
        let c = config(&btf, &r).unwrap();
        assert_eq!(c.enabled, 1);
        assert_ne!(c.off_skb_dev, c.off_skb_len);
    }
}
