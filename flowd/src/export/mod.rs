//! Everything that leaves flowd: Prometheus metrics, the JSON API and IPFIX.
pub mod aggregate;
pub mod budget;
pub mod groups;
pub mod ipfix;
pub mod metrics;
pub mod process;
pub mod records;
pub mod tcp;
