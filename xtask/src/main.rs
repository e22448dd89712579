//! `cargo xtask`: flowd's toolchain bootstrap and every privileged step.
//!
//! `setup` installs what is missing (Debian packages, bpf-linker, the
//! `flowd-bpf` rustup toolchain, bpffs) and checks the kernel; `build`, `run`,
//! `test` and `bench` run it first, so a fresh clone needs nothing else.

mod setup;

use std::{
    env,
    ffi::{OsStr, OsString},
    fs,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Command, ExitCode, ExitStatus},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "flowd's setup, build, run, test and bench tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing (Debian packages, bpf-linker, the flowd-bpf
    /// toolchain, bpffs) and check the kernel. Needs root.
    Setup,
    /// Setup, then `cargo build --release -p flowd [CARGO_ARGS...]`.
    Build {
        /// Extra arguments for cargo build.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CARGO_ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Setup, build (release), then replace this process with
    /// `target/release/flowd run [ARGS...]`.
    Run {
        /// Arguments for `flowd run`, after `--` (default: none, i.e. every
        /// up non-loopback interface, listening on 127.0.0.1:29391).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Setup, build flowd (debug), then `cargo test --workspace --exclude
    /// flowd-ebpf [ARGS...]` and the promtool rule tests. With FLOWD_LINT=1,
    /// clippy and rustfmt first.
    Test {
        /// Arguments for cargo test, after `--` (a filter, `-- --nocapture`, ...).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Setup, build the release flowd and flowd-bench, then
    /// `target/release/flowd-bench --flowd target/release/flowd [ARGS...]`
    /// (as root; `cargo xtask bench -- --help` lists its options). Larger
    /// captures come from the directory in FLOWD_PCAPS (optional).
    Bench {
        /// Arguments for flowd-bench, e.g. `--quick` or `--only 2,8`.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.task) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<ExitCode> {
    let root = workspace_root();
    match task {
        Task::Setup => setup::setup(&root).map(|()| ExitCode::SUCCESS),
        Task::Build { args } => {
            setup::setup(&root)?;
            Ok(exit_code(cargo(
                &root,
                ["build", "--release", "-p", "flowd"],
                &args,
            )?))
        }
        Task::Run { args } => {
            setup::setup(&root)?;
            build_release(&root)?;
            Err(exec_flowd(&root, "run", &args))
        }
        Task::Test { args } => test(&root, &args),
        Task::Bench { args } => {
            setup::setup(&root)?;
            let status = cargo(
                &root,
                [
                    "build",
                    "--release",
                    "-p",
                    "flowd",
                    "-p",
                    "flowd-tests",
                    "--bin",
                    "flowd",
                    "--bin",
                    "flowd-bench",
                ],
                &[],
            )?;
            if !status.success() {
                bail!("cargo build --release of flowd and flowd-bench failed ({status})");
            }
            Err(exec_bench(&root, &args))
        }
    }
}

/// `cargo xtask test`: lints (with FLOWD_LINT=1), promtool, cargo test, and
/// a closing summary line.
/// Runs every step it can and exits with the first failing status.
fn test(root: &Path, args: &[OsString]) -> Result<ExitCode> {
    setup::setup(root)?;
    let mut failed: Vec<(&str, ExitStatus)> = Vec::new();
    if env::var_os("FLOWD_LINT").is_some_and(|v| v == "1") {
        let fmt = cargo(root, ["fmt", "--all", "--check"], &[])?;
        if !fmt.success() {
            failed.push(("cargo fmt --check", fmt));
        }
        let clippy = cargo(
            root,
            [
                "clippy",
                "--workspace",
                "--exclude",
                "flowd-ebpf",
                "--all-targets",
            ],
            &["--".into(), "-D".into(), "warnings".into()],
        )?;
        if !clippy.success() {
            failed.push(("cargo clippy", clippy));
        }
    }
    // The end-to-end tests run target/debug/flowd.
    let build = cargo(root, ["build", "-p", "flowd"], &[])?;
    if !build.success() {
        eprintln!("xtask: cargo build -p flowd failed; not running the tests");
        return Ok(exit_code(build));
    }
    match promtool(root) {
        Ok(Some(status)) if !status.success() => failed.push(("promtool test rules", status)),
        Ok(_) => {}
        Err(e) => {
            eprintln!("xtask: {e:#}");
            failed.push(("promtool test rules", ExitStatus::from_raw(1 << 8)));
        }
    }
    let (tests, counts) = cargo_test(root, args)?;
    if !tests.success() {
        failed.push(("cargo test", tests));
    }
    // One closing line over every test binary (cargo prints one per binary,
    // the last often a doc-test run with nothing in it).
    println!(
        "summary: {} passed, {} failed, {} skipped in {} test binaries ({} of them ended without a result line)",
        counts.passed,
        counts.failed,
        counts.ignored,
        counts.binaries,
        counts.binaries.saturating_sub(counts.results)
    );
    match failed.first() {
        None => Ok(ExitCode::SUCCESS),
        Some(&(_, status)) => {
            let names: Vec<&str> = failed.iter().map(|(n, _)| *n).collect();
            eprintln!("xtask: failed: {}", names.join(", "));
            Ok(exit_code(status))
        }
    }
}

/// Test counts summed over cargo's `test result:` lines.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
    /// Test binaries cargo ran (`Running`, `Doc-tests` lines).
    binaries: u64,
    /// `test result:` lines: a binary that crashed prints none.
    results: u64,
}

/// `cargo test --workspace --exclude flowd-ebpf --no-fail-fast ARGS`: every
/// test binary runs even when one fails; its output is passed through line
/// by line and its `test result:` lines summed.
fn cargo_test(root: &Path, args: &[OsString]) -> Result<(ExitStatus, Counts)> {
    use std::io::{BufRead as _, BufReader};
    let mut child = Command::new(setup::cargo())
        .args([
            "test",
            "--workspace",
            "--exclude",
            "flowd-ebpf",
            "--no-fail-fast",
        ])
        .args(args)
        .current_dir(root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    // Cargo names each test binary it runs on stderr: passed through and
    // counted on a thread of its own.
    let stderr = child.stderr.take().map(|err| {
        std::thread::spawn(move || {
            let mut binaries = 0;
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let trimmed = line.trim_start();
                if trimmed.starts_with("Running ") || trimmed.starts_with("Doc-tests ") {
                    binaries += 1;
                }
            }
            binaries
        })
    });
    let mut counts = Counts::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.context("reading cargo test's output")?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                counts.results += 1;
                let num = |what: &str| -> u64 {
                    rest.split(';')
                        .find_map(|part| part.trim().strip_suffix(what))
                        .and_then(|n| n.trim().rsplit(' ').next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0)
                };
                counts.passed += num(" passed");
                counts.failed += num(" failed");
                counts.ignored += num(" ignored");
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if let Some(thread) = stderr {
        counts.binaries = thread.join().unwrap_or(0);
    }
    Ok((status, counts))
}

/// `promtool test rules` for each deploy/prometheus/tests/*.yml. Prints one
/// summary line; a failing file's output in full. A missing directory or one
/// without test files is an error, not a skip.
fn promtool(root: &Path) -> Result<Option<ExitStatus>> {
    let dir = root.join("deploy/prometheus/tests");
    if !dir.is_dir() {
        bail!(
            "promtool: the rule tests' directory {} is missing",
            dir.display()
        );
    }
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension() == Some(OsStr::new("yml")) && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("promtool: no *.yml rule test files in {}", dir.display());
    }
    let mut first_failure = None;
    let mut bad = Vec::new();
    for file in &files {
        let out = Command::new("promtool")
            .args(["test", "rules"])
            .arg(file)
            .current_dir(root)
            .output()
            .context("running promtool (setup installs it with the prometheus package)")?;
        if !out.status.success() {
            eprint!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            bad.push(
                file.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
            first_failure.get_or_insert(out.status);
        }
    }
    match first_failure {
        None => {
            eprintln!("promtool: {} rule test files passed", files.len());
            Ok(Some(ExitStatus::default()))
        }
        Some(status) => {
            eprintln!(
                "promtool: {} of {} rule test files failed: {}",
                bad.len(),
                files.len(),
                bad.join(", ")
            );
            Ok(Some(status))
        }
    }
}

fn build_release(root: &Path) -> Result<()> {
    let status = cargo(root, ["build", "--release", "-p", "flowd"], &[])?;
    if !status.success() {
        bail!("cargo build --release -p flowd failed ({status})");
    }
    Ok(())
}

/// Replaces this process with `flowd SUBCOMMAND ARGS...` (so signals reach
/// flowd). Only returns on failure.
fn exec_flowd(root: &Path, subcommand: &str, args: &[OsString]) -> anyhow::Error {
    let bin = target_dir(root).join("release/flowd");
    let err = Command::new(&bin).arg(subcommand).args(args).exec();
    anyhow::Error::new(err).context(format!("executing {}", bin.display()))
}

/// Replaces this process with `flowd-bench --flowd target/release/flowd
/// ARGS...`. Only returns on failure.
fn exec_bench(root: &Path, args: &[OsString]) -> anyhow::Error {
    let release = target_dir(root).join("release");
    let bin = release.join("flowd-bench");
    let err = Command::new(&bin)
        .arg("--flowd")
        .arg(release.join("flowd"))
        .args(args)
        .exec();
    anyhow::Error::new(err).context(format!("executing {}", bin.display()))
}

/// Runs cargo in the workspace root with stdio inherited.
fn cargo<const N: usize>(root: &Path, fixed: [&str; N], extra: &[OsString]) -> Result<ExitStatus> {
    Command::new(setup::cargo())
        .args(fixed)
        .args(extra)
        .current_dir(root)
        .status()
        .with_context(|| format!("running cargo {}", fixed.join(" ")))
}

/// A child's status as our exit code (1 when it was killed by a signal).
fn exit_code(status: ExitStatus) -> ExitCode {
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).ok().filter(|&c| c != 0).unwrap_or(1)),
        None => ExitCode::FAILURE,
    }
}

/// The workspace root: xtask's manifest directory's parent.
fn workspace_root() -> PathBuf {
    let manifest = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// Cargo's target directory: CARGO_TARGET_DIR if set, else `<root>/target`.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}
