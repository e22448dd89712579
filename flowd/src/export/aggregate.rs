//! Bounded aggregates for the exporter: traffic by protocol, service and
//! peer group, and the top flows of the recent window. Fed with every
//! drained delta; read at scrape time.

use flowd_common::{FlowKey, FlowStats};

/// Settings of the aggregates.
#[derive(Debug, Clone, Default)]
pub struct AggConfig {}

/// What the exporter shows of the aggregates.
#[derive(Debug, Clone, Default)]
pub struct AggSnapshot {}

/// The aggregates, updated on every drain.
#[derive(Debug, Default)]
pub struct Aggregator {}

impl Aggregator {
    pub fn new(_config: AggConfig) -> Self {
        Self {}
    }

    /// Adds one drained delta of a flow seen on `device`.
    pub fn absorb(&mut self, _key: &FlowKey, _delta: &FlowStats, _device: &str) {}

    /// Called after every drain with the current Unix time in ns.
    pub fn tick(&mut self, _now_ns: u64) {}

    pub fn snapshot(&self) -> AggSnapshot {
        AggSnapshot {}
    }
}
