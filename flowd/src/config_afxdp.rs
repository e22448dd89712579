//! The `[af_xdp]` section of the configuration (issue 13): the mirror
//! ports captured through AF_XDP ([`crate::afxdp`]) instead of the
//! in-kernel path.

use serde::Deserialize;

/// `[af_xdp]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AfXdpSettings {
    /// Interface names or glob patterns (`!pattern` excludes) whose every
    /// frame goes to flowd through AF_XDP and never reaches the host's
    /// stack: mirror (SPAN) ports and TAPs only. Empty: none. They need
    /// no `interfaces` entry; with `interfaces` empty and this set, no
    /// interface takes the in-kernel path ([`crate::interfaces::in_kernel`]).
    pub interfaces: Vec<String>,
    /// Entries of each socket's fill and RX rings (a power of two, 64 to
    /// 16384): the frames a worker may fall behind by before the socket
    /// drops. Each RX queue's UMEM holds twice as many 4 KiB frames (2048:
    /// 16 MiB per queue).
    pub ring_size: u32,
}

impl Default for AfXdpSettings {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            ring_size: 2048,
        }
    }
}

impl AfXdpSettings {
    pub fn enabled(&self) -> bool {
        !self.interfaces.is_empty()
    }

    /// The first pattern that is not accepted: (key, value, accepted).
    pub fn invalid(&self) -> Option<(&'static str, String, &'static str)> {
        if !(64..=16_384).contains(&self.ring_size) || !self.ring_size.is_power_of_two() {
            return Some((
                "af_xdp.ring_size",
                self.ring_size.to_string(),
                "a power of two from 64 to 16384",
            ));
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ..AfXdpSettings::default()
        };
        let (key, value, _) = bad.invalid().unwrap();
        assert_eq!((key, value.as_str()), ("af_xdp.interfaces", "\"a/b\""));
        for ring in [32, 100, 32_768] {
            let bad = AfXdpSettings {
                ring_size: ring,
                ..AfXdpSettings::default()
            };
            let (key, value, _) = bad.invalid().unwrap();
            assert_eq!((key, value), ("af_xdp.ring_size", ring.to_string()));
        }
    }
}
