//! Settings of the aggregates and their validation.

use std::time::Duration;

use thiserror::Error;

use crate::export::groups::{
    DEFAULT_PEER_UNMATCHED, MAX_SERVICES, OTHER, PeerGroupConfig, ServiceConfig,
    default_peer_groups, default_services,
};

/// Default of [`AggConfig::series_budget`].
pub const DEFAULT_SERIES_BUDGET: usize = 10_000;

/// Settings of the aggregates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggConfig {
    /// K: flows exported one by one, those with the most bytes in the
    /// window. 0 exports only the `other` series. Default 100.
    pub top_flows: usize,
    /// The recent window top flows are ranked and measured over. Default 60 s.
    pub window: Duration,
    /// Most flows the window tracks (keep it at 10 * K or more, so the top
    /// is ranked over enough candidates); deltas of flows beyond it count
    /// only in `other`. Default 100,000.
    pub window_max_flows: usize,
    /// Most series one scrape may have. Default 10,000.
    pub series_budget: usize,
    /// The port map of the `service` dimension.
    pub services: Vec<ServiceConfig>,
    /// CIDR groups of the `peer` dimension (remote address: the source for
    /// receive, the destination for transmit).
    pub peer_groups: Vec<PeerGroupConfig>,
    /// Peer group of addresses no prefix matches. Default `public`.
    pub peer_unmatched: String,
}

impl Default for AggConfig {
    fn default() -> Self {
        Self {
            top_flows: 100,
            window: Duration::from_secs(60),
            window_max_flows: 100_000,
            series_budget: DEFAULT_SERIES_BUDGET,
            services: default_services(),
            peer_groups: default_peer_groups(),
            peer_unmatched: DEFAULT_PEER_UNMATCHED.to_owned(),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("key `{key}`: value {value} is not accepted; accepted: {accepted}")]
pub struct AggConfigError {
    pub key: &'static str,
    pub value: String,
    pub accepted: &'static str,
}

impl AggConfig {
    /// Checks every value; the error names the key, the value and what is
    /// accepted.
    pub fn validate(&self) -> Result<(), AggConfigError> {
        let bad = |key, value: String, accepted| {
            Err(AggConfigError {
                key,
                value,
                accepted,
            })
        };
        if self.top_flows > 100_000 {
            return bad("top_flows", self.top_flows.to_string(), "0 to 100000");
        }
        if !(1..=3600).contains(&self.window.as_secs()) {
            return bad("window", format!("{:?}", self.window), "1 to 3600 seconds");
        }
        if self.window_max_flows < self.top_flows || self.window_max_flows > 10_000_000 {
            return bad(
                "window_max_flows",
                self.window_max_flows.to_string(),
                "top_flows to 10000000",
            );
        }
        if !(100..=10_000_000).contains(&self.series_budget) {
            return bad(
                "series_budget",
                self.series_budget.to_string(),
                "100 to 10000000",
            );
        }
        let names = self
            .services
            .iter()
            .map(|s| ("services", &s.name))
            .chain(self.peer_groups.iter().map(|g| ("peer_groups", &g.name)))
            .chain([("peer_unmatched", &self.peer_unmatched)]);
        for (key, name) in names {
            if !valid_group_name(name) {
                return bad(
                    key,
                    format!("{name:?}"),
                    "names of 1 to 64 letters, digits, '-', '_' or '.', other than \"other\"",
                );
            }
        }
        if self.services.len() > MAX_SERVICES {
            return bad(
                "services",
                format!("{} services", self.services.len()),
                "at most 1024 services",
            );
        }
        Ok(())
    }
}

fn valid_group_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n != OTHER
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
