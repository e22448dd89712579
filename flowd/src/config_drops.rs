//! The `[drops]` section of the configuration (issue 14): the kernel drop
//! tracer on `kfree_skb`.

use serde::Deserialize;

/// `[drops]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DropSettings {
    /// The tracer on (the default): dropped packets and bytes per
    /// monitored interface and kernel drop reason,
    /// `flowd_kernel_drops_total` and `flowd_kernel_drop_bytes_total`.
    /// Read at start; a reload does not switch it.
    pub enabled: bool,
}

impl Default for DropSettings {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_by_default_and_off_when_asked() {
        let d: DropSettings = toml::from_str("").unwrap();
        assert!(d.enabled);
        let d: DropSettings = toml::from_str("enabled = false").unwrap();
        assert!(!d.enabled);
        let e = toml::from_str::<DropSettings>("enable = false").unwrap_err();
        assert!(e.to_string().contains("unknown field `enable`"), "{e}");
    }
}
