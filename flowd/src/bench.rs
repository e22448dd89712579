//! `flowd bench`: the measurements behind BENCHMARKS.md (run through `cargo xtask bench`).

/// Arguments of `flowd bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Fewer repetitions (finishes in minutes).
    #[arg(long)]
    pub quick: bool,
}

pub fn run(_args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("flowd bench: not written yet")
}
