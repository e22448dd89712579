//! `flowd replay FILE`: runs a capture through the same XDP program with
//! `BPF_PROG_TEST_RUN`.

/// Arguments of `flowd replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The capture file (pcap or pcapng).
    pub file: std::path::PathBuf,
}

pub fn run(_args: &ReplayArgs) -> anyhow::Result<()> {
    anyhow::bail!("flowd replay: not written yet")
}
