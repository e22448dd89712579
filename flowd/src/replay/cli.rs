//! The `flowd replay` command: its arguments, and the glue from them to a
//! replay, its output and an optional IPFIX export.

use std::{
    fs,
    io::{self, BufWriter},
    path::PathBuf,
    time::Duration,
};

use anyhow::Context as _;

use crate::flowtable::{Ended, TableConfig};

use super::{PROGRESS_MIN_FILE, ReplayOptions, replay_file, write_output};

/// Arguments of `flowd replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The capture file (pcap or pcapng).
    pub file: PathBuf,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Jsonl)]
    pub format: OutputFormat,
    /// One row per connection (a flow and its reverse), with both directions' counters.
    #[arg(long)]
    pub bidirectional: bool,
    /// Also write the Prometheus exposition (text format 0.0.4) of the replay
    /// to FILE; with --l7-log, with the application layer's families.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Seconds of capture time without a packet before a flow's record ends.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: u64,
    /// Seconds of capture time after which a long flow's record ends.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub active_timeout: u64,
    /// Seconds a closed TCP connection stays before its record ends.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub tcp_close_grace: u64,
    /// Also send the flow records to an IPFIX collector (IP:port, UDP), as
    /// `flowd run --ipfix` does for live flows.
    #[arg(long, value_name = "ADDR")]
    pub ipfix: Option<std::net::SocketAddr>,
    /// Also select the packets that carry application metadata (HTTP/1.x,
    /// TLS handshakes, DNS) as the live programs do, and write one JSON line
    /// per HTTP request, DNS query and TLS handshake to FILE.
    #[arg(long, value_name = "FILE")]
    pub l7_log: Option<PathBuf>,
}

/// How `flowd replay` prints its flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON object per line, the record shape of `/api/v1/flows`.
    #[default]
    Jsonl,
    /// Aligned columns with human-readable units.
    Table,
    /// A header line and the same keys as jsonl.
    Csv,
}

fn stderr_is_terminal() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(2) == 1 }
}

pub fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    let file_len = fs::metadata(&args.file).map(|m| m.len()).unwrap_or(0);
    const SEC: u64 = 1_000_000_000;
    let opts = ReplayOptions {
        progress: stderr_is_terminal() && file_len > PROGRESS_MIN_FILE,
        table: TableConfig {
            idle_timeout_ns: args.idle_timeout * SEC,
            active_timeout_ns: args.active_timeout * SEC,
            tcp_close_grace_ns: args.tcp_close_grace * SEC,
            max_flows: 0,
        },
        l7: args.l7_log.is_some(),
        ..ReplayOptions::default()
    };
    let mut replay = replay_file(&args.file, &opts)?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match write_output(&mut out, &replay, args.format, args.bidirectional) {
        Ok(()) => {}
        // `flowd replay x | head`: the reader has seen enough.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e).context("writing the flows to stdout"),
    }
    if let Some(path) = &args.metrics {
        fs::write(path, replay.metrics_text())
            .with_context(|| format!("writing the metrics to {}", path.display()))?;
    }
    if let Some(path) = &args.l7_log {
        let mut text = String::new();
        for e in &replay.l7_events {
            text.push_str(&e.to_line(&replay.device));
        }
        fs::write(path, text)
            .with_context(|| format!("writing the L7 events to {}", path.display()))?;
    }
    eprintln!("{}", replay.summary());
    if let Some(addr) = args.ipfix {
        send_ipfix(addr, &replay.ended)?;
    }
    match replay.error.take() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Sends a replay's records to an IPFIX collector (paced by the exporter).
fn send_ipfix(addr: std::net::SocketAddr, ended: &[Ended]) -> anyhow::Result<()> {
    use crate::export::ipfix::IpfixExporter;
    let mut x = IpfixExporter::connect(addr, 1, Duration::from_secs(60), 1400)?;
    let now_s = (crate::clock::realtime_ns() / 1_000_000_000) as u32;
    let sent = x.export(ended, now_s);
    let st = x.stats;
    eprintln!(
        "IPFIX: {} records in {} messages to {addr}",
        st.records, st.messages
    );
    sent.with_context(|| {
        format!(
            "IPFIX: {} of {} records could not be sent to {addr}",
            st.records_dropped,
            ended.len()
        )
    })
}
