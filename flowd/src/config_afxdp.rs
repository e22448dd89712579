//! The `[af_xdp]` section of the configuration (issue 13): the mirror
//! ports captured through AF_XDP ([`crate::afxdp`]) instead of the
//! in-kernel path.

use serde::Deserialize;

use crate::{
    config::selects,
    interfaces::{self, Iface},
};

/// `[af_xdp]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AfXdpSettings {
    /// Interface names or glob patterns (`!pattern` excludes) whose every
    /// frame goes to flowd through AF_XDP and never reaches the host's
    /// stack: mirror (SPAN) ports and TAPs only. Empty: none. They need
    /// no `interfaces` entry; with `interfaces` empty and this set, no
    /// interface takes the in-kernel path.
    pub interfaces: Vec<String>,
}

impl AfXdpSettings {
    pub fn enabled(&self) -> bool {
        !self.interfaces.is_empty()
    }

    /// The first pattern that is not accepted: (key, value, accepted).
    pub fn invalid(&self) -> Option<(&'static str, String, &'static str)> {
        self.interfaces
            .iter()
            .find(|p| {
                let pat = p.strip_prefix('!').unwrap_or(p);
                pat.is_empty()
                    || pat.len() > 15
                    || pat.contains('/')
                    || pat.contains(char::is_whitespace)
            })
            .map(|p| {
                (
                    "af_xdp.interfaces",
                    format!("{p:?}"),
                    "interface names or glob patterns of at most 15 characters, optionally starting with ! to exclude",
                )
            })
    }

    /// The present interfaces captured through AF_XDP (never loopback).
    pub fn selected(&self, all: &[Iface]) -> Vec<Iface> {
        if !self.enabled() {
            return Vec::new();
        }
        all.iter()
            .filter(|i| !i.loopback && selects(&self.interfaces, &i.name))
            .cloned()
            .collect()
    }

    /// The interfaces the in-kernel path takes: what `patterns` selects,
    /// without the AF_XDP ones; nothing when only AF_XDP is configured.
    pub fn in_kernel(&self, all: &[Iface], patterns: &[String]) -> Vec<Iface> {
        if self.enabled() && patterns.is_empty() {
            return Vec::new();
        }
        interfaces::selected(all, patterns)
            .into_iter()
            .filter(|i| !self.enabled() || !selects(&self.interfaces, &i.name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(name: &str, ifindex: u32) -> Iface {
        Iface {
            name: name.into(),
            ifindex,
            up: true,
            loopback: name == "lo",
        }
    }

    #[test]
    fn af_xdp_interfaces_leave_the_in_kernel_path() {
        let all = [i("lo", 1), i("eth0", 2), i("span0", 3), i("span1", 4)];
        let s = AfXdpSettings {
            interfaces: vec!["span*".into(), "!span1".into()],
        };
        let names = |v: Vec<Iface>| v.into_iter().map(|i| i.name).collect::<Vec<_>>();
        assert_eq!(names(s.selected(&all)), ["span0"]);
        assert_eq!(names(s.in_kernel(&all, &[])), Vec::<String>::new());
        assert_eq!(
            names(s.in_kernel(&all, &["eth0".into(), "span*".into()])),
            ["eth0", "span1"]
        );
        let off = AfXdpSettings::default();
        assert!(off.selected(&all).is_empty());
        assert_eq!(names(off.in_kernel(&all, &[])), ["eth0", "span0", "span1"]);
    }

    #[test]
    fn parses_and_names_a_bad_pattern() {
        #[derive(Deserialize)]
        struct T {
            af_xdp: AfXdpSettings,
        }
        let t: T = toml::from_str("[af_xdp]\ninterfaces = [\"span*\"]\n").unwrap();
        assert_eq!(t.af_xdp.interfaces, ["span*"]);
        assert!(t.af_xdp.invalid().is_none());
        assert!(toml::from_str::<T>("[af_xdp]\nqueues = 2\n").is_err());
        let bad = AfXdpSettings {
            interfaces: vec!["a/b".into()],
        };
        let (key, value, _) = bad.invalid().unwrap();
        assert_eq!((key, value.as_str()), ("af_xdp.interfaces", "\"a/b\""));
    }
}
