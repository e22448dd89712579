//! The `flowd` command line.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use flowd::flowtable::TableConfig;
use flowd::{
    daemon::{self, RunOptions},
    loader::XdpAttachMode,
};
use flowd_common::DEFAULT_FLOW_CAPACITY;

const SEC: u64 = 1_000_000_000;

/// Default metrics address: loopback, and a port outside 9100-9999, the
/// range Prometheus' default port allocations have filled.
const DEFAULT_LISTEN: &str = "127.0.0.1:29391";

#[derive(Debug, Parser)]
#[command(
    name = "flowd",
    version,
    about = "eBPF flow collector: per-flow counters in the kernel, Prometheus metrics and flow records"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum XdpModeArg {
    /// Native (driver) mode, falling back to generic when the driver lacks it.
    Auto,
    Native,
    Generic,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Monitor interfaces and serve metrics until SIGINT/SIGTERM.
    Run {
        /// Interface to monitor (repeatable). Default: every interface that is up and not loopback.
        #[arg(long = "iface", short = 'i')]
        interfaces: Vec<String>,
        /// Address for /metrics and the JSON API.
        #[arg(long, default_value = DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Drain interval in milliseconds (100 to 60000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
        drain_interval_ms: u64,
        /// Flows per generation map (1 to 16777216).
        #[arg(long, default_value_t = DEFAULT_FLOW_CAPACITY, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
        flow_capacity: u32,
        /// XDP attach mode.
        #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
        xdp_mode: XdpModeArg,
        /// Seconds without a packet before a flow ends (idle).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        idle_timeout: u64,
        /// Seconds after which a long flow's record ends and a new one starts (active).
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        active_timeout: u64,
        /// Seconds a closed TCP connection stays before it ends (end-of-flow).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3_600))]
        tcp_close_grace: u64,
        /// Flows the table holds at most; beyond, the longest-idle are evicted.
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        max_flows: u64,
        /// Write ended flow records as JSON lines here (`-` for stdout); SIGHUP reopens the file.
        #[arg(long)]
        records: Option<String>,
    },
    /// Run a pcap/pcapng capture through the same eBPF program and print its flows.
    Replay(flowd::replay::ReplayArgs),
    /// Measure flowd (used by `cargo xtask bench`).
    Bench(flowd::bench::BenchArgs),
}

fn init_tracing() {
    // The subscriber's init also installs tracing-log's LogTracer, so aya's
    // `log` records arrive here too.
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOWD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // journald stamps lines itself.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run {
            interfaces,
            listen,
            drain_interval_ms,
            flow_capacity,
            xdp_mode,
            idle_timeout,
            active_timeout,
            tcp_close_grace,
            max_flows,
            records,
        } => daemon::run(RunOptions {
            interfaces,
            listen,
            drain_interval: Duration::from_millis(drain_interval_ms),
            flow_capacity,
            xdp_mode: match xdp_mode {
                XdpModeArg::Auto => None,
                XdpModeArg::Native => Some(XdpAttachMode::Native),
                XdpModeArg::Generic => Some(XdpAttachMode::Generic),
            },
            table: TableConfig {
                idle_timeout_ns: idle_timeout * SEC,
                active_timeout_ns: active_timeout * SEC,
                tcp_close_grace_ns: tcp_close_grace * SEC,
                max_flows: max_flows as usize,
            },
            records,
        }),
        Command::Replay(args) => flowd::replay::run(&args),
        Command::Bench(args) => flowd::bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
