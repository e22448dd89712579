//! The test bed shared by flowd's end-to-end tests (`tests/e2e`) and its
//! benchmarks (`flowd-bench`): network namespaces joined by veth pairs,
//! traffic sent from inside them, flowd started and stopped by PID, HTTP
//! fetched from inside a namespace, frames built by hand.
//!
//! Everything is removed in `Drop`, so a failing test cleans up too. Names
//! are unique per process and call, so tests can run in parallel. Each
//! helper that can fail has a panicking form for tests (`Link::new`) and a
//! `try_` form returning the error for the bench (`Link::try_new`).
//!
//! - [`host`]: unique names, temporary directories, commands, child processes;
//! - [`netns`]: namespaces, threads inside them, interface counters;
//! - [`link`]: two namespaces joined by a veth pair;
//! - [`daemon`]: the flowd binary, a private bpffs, `flowd run` under test;
//! - [`traffic`]: UDP and ICMP sent through sockets;
//! - [`http`]: GETs, the Prometheus exposition, the JSON API, records;
//! - [`l7`]: servers and captures in namespaces, L7 event logs live and replayed;
//! - [`packet`]: the checksum and hand-built frames.

use std::path::PathBuf;

pub mod daemon;
pub mod host;
pub mod http;
pub mod l7;
pub mod link;
pub mod netns;
pub mod packet;
pub mod traffic;
pub mod wait;

pub use daemon::{BpfFs, Flowd, flowd_bin, use_flowd_bin};
pub use host::{TempDir, sh, stop_child, try_sh, unique_tag};
pub use http::{api_flows, find_flows, http_get, metric, parse_metrics, read_records};
pub use link::Link;
pub use netns::{LinkStats, Netns, has_xdp, in_ns};
pub use traffic::{ping, send_udp, send_udp_on};

/// The repository's test data (`tests/data`): captures under `pcaps/`, each
/// listed in `pcaps/MANIFEST.md`. Nothing outside the clone is read.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}
