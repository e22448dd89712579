//! Where the configuration comes from: the file, with the command line's
//! overrides on top (kept, so a reload applies them to the new file too).

use std::path::PathBuf;

use anyhow::Result;

use crate::config::Config;

/// Command-line values that override the configuration file, kept so a
/// reload applies them on top of the new file too.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub interfaces: Vec<String>,
    /// `--af-xdp`: replaces `af_xdp.interfaces` when given.
    pub af_xdp: Vec<String>,
    pub listen: Option<String>,
    pub drain_interval_ms: Option<u64>,
    pub flow_capacity: Option<u32>,
    pub drain_at_fill_percent: Option<u32>,
    pub xdp_mode: Option<String>,
    pub idle_timeout_s: Option<u64>,
    pub active_timeout_s: Option<u64>,
    pub tcp_close_grace_s: Option<u64>,
    pub max_flows: Option<u64>,
    pub records: Option<String>,
    pub l7_log: Option<String>,
    /// `--no-l7`: `[l7] enabled = false`.
    pub no_l7: bool,
    pub ipfix: Option<String>,
    pub pin_path: Option<String>,
}

impl Overrides {
    pub fn apply(&self, c: &mut Config) {
        if !self.interfaces.is_empty() {
            c.interfaces.clone_from(&self.interfaces);
        }
        if !self.af_xdp.is_empty() {
            c.af_xdp.interfaces.clone_from(&self.af_xdp);
        }
        if self.no_l7 {
            c.l7.enabled = false;
        }
        macro_rules! set {
            ($($field:ident => $($path:ident).+),*) => {$(
                if let Some(v) = &self.$field {
                    c.$($path).+ = v.clone();
                }
            )*};
        }
        set!(listen => listen, drain_interval_ms => drain_interval_ms, flow_capacity => flow_capacity,
            drain_at_fill_percent => drain_at_fill_percent,
            xdp_mode => xdp_mode, records => records, l7_log => l7.log, pin_path => pin_path, ipfix => ipfix.collector,
            idle_timeout_s => flow_table.idle_timeout_s, active_timeout_s => flow_table.active_timeout_s,
            tcp_close_grace_s => flow_table.tcp_close_grace_s, max_flows => flow_table.max_flows);
    }
}

/// Where the configuration comes from: a file (reloadable) and overrides.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
}

impl ConfigSource {
    /// The file (if any) with the overrides applied, validated.
    pub fn load(&self) -> Result<Config> {
        let mut c = match &self.path {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        self.overrides.apply(&mut c);
        let origin = self.path.as_ref().map_or_else(
            || "command line".to_owned(),
            |p| format!("{} with command-line overrides", p.display()),
        );
        c.validate(&origin)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_l7_switches_the_application_layer_off_over_the_file() {
        let mut c = Config::parse("[l7]\nenabled = true\nlog = \"/x\"", "f").unwrap();
        Overrides::default().apply(&mut c);
        assert!(c.l7.enabled);
        Overrides {
            no_l7: true,
            ..Default::default()
        }
        .apply(&mut c);
        assert!(!c.l7.enabled);
        assert_eq!(c.l7.log, "/x", "the rest is left as it is");
    }
}
