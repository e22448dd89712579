//! Everything that leaves flowd: Prometheus metrics and the JSON API.
pub mod aggregate;
pub mod metrics;
pub mod records;
