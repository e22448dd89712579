//! Everything that leaves flowd: Prometheus metrics, the JSON API, the live
//! view and IPFIX.
pub mod aggregate;
pub mod budget;
pub mod groups;
pub mod histogram;
pub mod hoststats;
pub mod ipfix;
pub mod l7signals;
pub mod l7stats;
pub mod metrics;
pub mod process;
pub mod recent;
pub mod records;
pub mod tcp;
