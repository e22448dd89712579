//! The `[af_xdp]` section of the configuration (issue 13): the mirror
//! ports captured through AF_XDP ([`crate::afxdp`]) instead of the
//! in-kernel path.

use serde::Deserialize;

/// `[af_xdp]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AfXdpSettings {
    /// Interface names or glob patterns (`!pattern` excludes) whose every
    /// frame goes to flowd through AF_XDP and never reaches the host's
    /// stack: mirror (SPAN) ports and TAPs only. Empty: none. They need
    /// no `interfaces` entry; with `interfaces` empty and this set, no
    /// interface takes the in-kernel path ([`crate::interfaces::in_kernel`]).
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
        };
        let (key, value, _) = bad.invalid().unwrap();
        assert_eq!((key, value.as_str()), ("af_xdp.interfaces", "\"a/b\""));
    }
}
