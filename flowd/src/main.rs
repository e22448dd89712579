//! The `flowd` command line.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use flowd::{
    config::{self, Config},
    daemon::{self, ConfigSource, Overrides},
};

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

/// `flowd run` flags: each overrides the configuration file's key.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Configuration file [default: /etc/flowd/flowd.toml when it exists].
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Interface name or glob pattern, `!pattern` excludes (repeatable)
    /// [default: every interface that is up and not loopback].
    #[arg(long = "iface", short = 'i')]
    interfaces: Vec<String>,
    /// Mirror port captured through AF_XDP: every frame goes to flowd and
    /// none to the host's stack; name or glob pattern (repeatable). Needs
    /// no --iface; other interfaces keep the in-kernel path.
    #[arg(long = "af-xdp", value_name = "PATTERN")]
    af_xdp: Vec<String>,
    /// Address for /metrics and the JSON API [default: 127.0.0.1:29391].
    #[arg(long)]
    listen: Option<String>,
    /// Drain interval in milliseconds, 100 to 60000 [default: 1000].
    #[arg(long)]
    drain_interval_ms: Option<u64>,
    /// Flows per generation map, 1 to 16777216 [default: 65536].
    #[arg(long)]
    flow_capacity: Option<u32>,
    /// Drain early when the kernel's flow map is this full, in percent;
    /// 0 drains only every interval, 0 to 100 [default: 50].
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100))]
    drain_at_fill_percent: Option<u32>,
    /// XDP attach mode [default: auto].
    #[arg(long, value_enum)]
    xdp_mode: Option<XdpModeArg>,
    /// Seconds without a packet before a flow ends [default: 60].
    #[arg(long)]
    idle_timeout: Option<u64>,
    /// Seconds after which a long flow's record ends and a new one starts [default: 300].
    #[arg(long)]
    active_timeout: Option<u64>,
    /// Seconds a closed TCP connection stays before it ends [default: 10].
    #[arg(long)]
    tcp_close_grace: Option<u64>,
    /// Flows the table holds at most [default: 1000000].
    #[arg(long)]
    max_flows: Option<u64>,
    /// Ended flow records as JSON lines: a file (reopened on SIGHUP) or `-` for stdout.
    #[arg(long)]
    records: Option<String>,
    /// L7 events (HTTP requests, DNS queries, TLS handshakes) as JSON lines:
    /// a file (reopened on SIGHUP) or `-` for stdout.
    #[arg(long, value_name = "FILE")]
    l7_log: Option<String>,
    /// Switch the application layer off (`[l7] enabled = false`): the
    /// programs select no packet, and there are no L7 events.
    #[arg(long, conflicts_with = "l7_log")]
    no_l7: bool,
    /// IPFIX collector (IP:port, UDP) for ended flow records; empty for none.
    #[arg(long, value_name = "ADDR")]
    ipfix: Option<String>,
    /// bpffs directory for pinned maps and links [default: /sys/fs/bpf/flowd].
    #[arg(long)]
    pin_path: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Monitor interfaces and serve metrics until SIGINT/SIGTERM; SIGHUP reloads.
    Run(RunArgs),
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Report whether this host can run flowd: kernel, BTF, bpffs, privileges, XDP, AF_XDP.
    Check {
        /// The configuration `flowd run` would read [default: /etc/flowd/flowd.toml].
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
    },
    /// Live view of a running flowd: interface rates and the heaviest flows now.
    Top(flowd::top::TopArgs),
    /// Run a pcap/pcapng capture through the same eBPF program and print its flows.
    Replay(flowd::replay::ReplayArgs),
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

fn source(a: RunArgs) -> ConfigSource {
    let path = a.config.or_else(|| {
        let p = PathBuf::from(config::DEFAULT_PATH);
        p.exists().then_some(p)
    });
    ConfigSource {
        path,
        overrides: Overrides {
            interfaces: a.interfaces,
            af_xdp: a.af_xdp,
            listen: a.listen,
            drain_interval_ms: a.drain_interval_ms,
            flow_capacity: a.flow_capacity,
            drain_at_fill_percent: a.drain_at_fill_percent,
            xdp_mode: a.xdp_mode.map(|m| {
                match m {
                    XdpModeArg::Auto => "auto",
                    XdpModeArg::Native => "native",
                    XdpModeArg::Generic => "generic",
                }
                .to_owned()
            }),
            idle_timeout_s: a.idle_timeout,
            active_timeout_s: a.active_timeout,
            tcp_close_grace_s: a.tcp_close_grace,
            max_flows: a.max_flows,
            records: a.records,
            l7_log: a.l7_log,
            no_l7: a.no_l7,
            ipfix: a.ipfix,
            pin_path: a.pin_path,
        },
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run(args) => daemon::run(source(args)),
        Command::CheckConfig { file } => Config::load(&file)
            .map_err(anyhow::Error::from)
            .map(|c| println!("{}: ok\n{c:#?}", file.display())),
        Command::Check { config } => flowd::doctor::run(config.as_deref()),
        Command::Replay(args) => flowd::replay::run(&args),
        Command::Top(args) => flowd::top::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowd: error: {}", flowd::report::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
