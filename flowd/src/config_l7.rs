//! The `[l7]` section of the configuration (issue 12): the kernel's
//! selection of packets with application metadata and the event log.

use flowd_common::l7::{
    L7_DEFAULT_BUDGET_PER_S, L7_DEFAULT_CONTINUATION, L7_DNS_PORTS, L7_SNAP_MAX, L7Control,
};
use serde::Deserialize;

/// The most recent events `/api/v1/l7` can show, at most.
pub const MAX_RECENT_EVENTS: usize = 65_536;

/// `[l7]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct L7Settings {
    /// The selection and the engine on (the default: the application layer
    /// is part of the in-kernel path); `flowd run --no-l7` switches it off.
    pub enabled: bool,
    /// Event log, one JSON line per HTTP request, DNS query and TLS
    /// handshake: a file path (reopened on SIGHUP), `-` for stdout, empty
    /// for none (the events still reach `/api/v1/l7`, the flow records
    /// and the metrics).
    pub log: String,
    /// Events `/api/v1/l7` keeps in memory, newest first (0..=65536; 0
    /// keeps none).
    pub recent_events: usize,
    /// Payload bytes copied per selected packet (1..=512).
    pub snap_len: u32,
    /// Packets copied per second and CPU at most (1..=10000000); the rest
    /// are counted in `flowd_l7_skipped_total{reason="budget"}`.
    pub budget_per_s: u32,
    /// Segments copied after a request or ClientHello on the same flow
    /// direction (0..=126).
    pub continuation_segments: u32,
    /// DNS ports besides 53 and 5353 (at most 2).
    pub dns_ports: Vec<u16>,
}

impl Default for L7Settings {
    fn default() -> Self {
        Self {
            enabled: true,
            log: String::new(),
            recent_events: 1024,
            snap_len: L7_SNAP_MAX as u32,
            budget_per_s: L7_DEFAULT_BUDGET_PER_S,
            continuation_segments: L7_DEFAULT_CONTINUATION,
            dns_ports: Vec::new(),
        }
    }
}

impl L7Settings {
    /// The first key with a value out of range: (key, value, accepted).
    pub fn invalid(&self) -> Option<(&'static str, String, &'static str)> {
        if !(1..=L7_SNAP_MAX as u32).contains(&self.snap_len) {
            return Some(("l7.snap_len", self.snap_len.to_string(), "1 to 512"));
        }
        if !(1..=10_000_000).contains(&self.budget_per_s) {
            return Some((
                "l7.budget_per_s",
                self.budget_per_s.to_string(),
                "1 to 10000000 (packets per second and CPU)",
            ));
        }
        if self.continuation_segments > 126 {
            return Some((
                "l7.continuation_segments",
                self.continuation_segments.to_string(),
                "0 to 126",
            ));
        }
        if self.dns_ports.len() > L7_DNS_PORTS - 2 || self.dns_ports.contains(&0) {
            return Some((
                "l7.dns_ports",
                format!("{:?}", self.dns_ports),
                "at most 2 ports from 1 to 65535 (53 and 5353 are always DNS)",
            ));
        }
        if self.recent_events > MAX_RECENT_EVENTS {
            return Some((
                "l7.recent_events",
                self.recent_events.to_string(),
                "0 (none) to 65536 events",
            ));
        }
        None
    }

    /// The programs' settings.
    pub fn control(&self) -> L7Control {
        let mut dns_ports = [53, 5353, 0, 0];
        for (slot, p) in dns_ports[2..].iter_mut().zip(&self.dns_ports) {
            *slot = *p;
        }
        L7Control {
            snap_len: self.snap_len,
            budget_per_s: self.budget_per_s,
            continuation: self.continuation_segments,
            _pad: 0,
            dns_ports,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> L7Settings {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn on_by_default_and_every_value_is_checked() {
        let d = L7Settings::default();
        assert!(
            d.enabled,
            "the application layer is part of the default path"
        );
        assert_eq!((d.log.as_str(), d.recent_events), ("", 1024));
        assert_eq!(parse(""), d);
        let s = parse("enabled = false\nrecent_events = 0\nlog = \"-\"");
        assert!(!s.enabled);
        assert_eq!((s.log.as_str(), s.recent_events), ("-", 0));
        assert_eq!(s.invalid(), None);
        let bad = |text: &str| parse(text).invalid().map(|(k, v, a)| (k, v, a.to_owned()));
        assert_eq!(
            bad("recent_events = 65537"),
            Some((
                "l7.recent_events",
                "65537".into(),
                "0 (none) to 65536 events".into()
            ))
        );
        assert_eq!(bad("recent_events = 65536"), None);
        assert_eq!(
            bad("snap_len = 0"),
            Some(("l7.snap_len", "0".into(), "1 to 512".into()))
        );
        assert_eq!(
            bad("dns_ports = [5300, 5301, 5302]"),
            Some((
                "l7.dns_ports",
                "[5300, 5301, 5302]".into(),
                "at most 2 ports from 1 to 65535 (53 and 5353 are always DNS)".into()
            ))
        );
        let e = toml::from_str::<L7Settings>("enabled = \"yes\"").unwrap_err();
        assert!(e.to_string().contains("enabled"), "{e}");
        let e = toml::from_str::<L7Settings>("recent = 5").unwrap_err();
        assert!(
            e.to_string().contains("recent_events"),
            "lists what is accepted: {e}"
        );
    }
}
