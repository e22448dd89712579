//! End-to-end tests: real namespaces, veth pairs, traffic and a real flowd.
//! They need root (CAP_SYS_ADMIN for namespaces, CAP_BPF for flowd).

mod afxdp;
mod afxdp_l7;
mod auth;
mod basic;
mod cli;
mod congestion;
mod dashboard;
mod deploy;
mod drops;
mod flows;
mod flows_api;
mod fresh_totals;
mod full_disk;
mod host_overflows;
mod ipfix;
mod l7;
mod l7_bad_input;
mod l7_load;
mod l7_outputs;
mod l7_scenarios;
mod limits;
mod live_replay;
mod operator_errors;
mod ops;
mod pin_path;
mod prometheus;
mod records;
mod rtt;
mod signals;
mod top;
mod unit;
