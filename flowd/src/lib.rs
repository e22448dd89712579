//! flowd: an eBPF flow collector. The daemon and CLI live in `main.rs`;
//! everything else is here so tests and the bench (`tests/src/bin/flowd-bench`) can use it.

pub mod afxdp;
pub mod caps;
pub mod clock;
pub mod config;
pub mod config_l7;
pub mod connstate;
pub mod daemon;
pub mod doctor;
pub mod drain;
pub mod export;
pub mod flowtable;
pub mod interfaces;
pub mod l7;
pub mod listen;
pub mod loader;
pub mod notify;
pub mod pcap;
pub mod record;
pub mod replay;
pub mod report;
pub mod scan;
pub mod server;
pub mod state;
pub mod sys;
pub mod top;
pub mod web;
