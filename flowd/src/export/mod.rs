//! Everything that leaves flowd: Prometheus metrics and the JSON API.
pub mod aggregate;
pub mod budget;
pub mod groups;
pub mod metrics;
pub mod process;
pub mod records;
pub mod tcp;
