//! Builds the eBPF object (flowd-ebpf) with Debian's rustc and embeds it.
//!
//! The eBPF target needs `core` built from source; the rustup toolchains here
//! have no rust-src, Debian's rustc-web does. `cargo xtask setup` links it as
//! the rustup toolchain named below and installs bpf-linker.
//!
//! aya-build relays every line of the inner cargo's output as a
//! `cargo:warning`, which cargo then prints on every build. Its output goes
//! to a file instead: on success only its directives (`rerun-if-...`) reach
//! cargo; on failure everything is printed.
use std::{
    env,
    fs::File,
    io::{Read as _, Seek as _, Write as _},
    os::fd::AsRawFd as _,
    process::Command,
};

use anyhow::{Context as _, bail};
use aya_build::{Package, Toolchain};

/// The rustup toolchain `cargo xtask setup` links to Debian's /usr rustc.
const TOOLCHAIN: &str = "flowd-bpf";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    check_toolchain()?;
    // SAFETY: build scripts are single-threaded; aya-build reads it below.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    let cargo_home = env::var("CARGO_HOME").unwrap_or_else(|_| {
        format!(
            "{}/.cargo",
            env::var("HOME").unwrap_or_else(|_| "/root".into())
        )
    });
    let path = env::var("PATH").unwrap_or_default();
    // SAFETY: as above.
    unsafe { env::set_var("PATH", format!("{cargo_home}/bin:{path}")) };
    let (result, output) = with_stdout_captured(|| {
        aya_build::build_ebpf(
            [Package {
                name: "flowd-ebpf",
                root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../flowd-ebpf"),
                ..Default::default()
            }],
            Toolchain::Custom(TOOLCHAIN),
        )
    })?;
    for line in output.lines() {
        if result.is_err() || !line.starts_with("cargo:warning=") {
            println!("{line}");
        }
    }
    result.context(
        "building the eBPF object failed (its output is above); `cargo xtask setup` installs the toolchain it needs",
    )
}

/// Runs `f` with this process's stdout sent to a temporary file and returns
/// what it printed.
fn with_stdout_captured<T>(f: impl FnOnce() -> T) -> anyhow::Result<(T, String)> {
    let out_dir = env::var("OUT_DIR").context("OUT_DIR not set")?;
    let path = format!("{out_dir}/ebpf-build.log");
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating {path}"))?;
    std::io::stdout().flush()?;
    // SAFETY: dup/dup2 on this process's own descriptors; stdout is flushed
    // before each switch, so no buffered byte goes to the wrong place.
    let saved = unsafe { libc::dup(1) };
    if saved < 0 {
        anyhow::bail!("duplicating stdout: {}", std::io::Error::last_os_error());
    }
    // SAFETY: as above; `file` outlives the redirection.
    if unsafe { libc::dup2(file.as_raw_fd(), 1) } < 0 {
        anyhow::bail!("redirecting stdout: {}", std::io::Error::last_os_error());
    }
    let value = f();
    std::io::stdout().flush()?;
    // SAFETY: as above; `saved` is the descriptor dup'd from stdout.
    unsafe {
        libc::dup2(saved, 1);
        libc::close(saved);
    }
    let mut text = String::new();
    file.rewind()?;
    file.read_to_string(&mut text)?;
    Ok((value, text))
}

fn check_toolchain() -> anyhow::Result<()> {
    let ok = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        bail!(
            "the eBPF toolchain `{TOOLCHAIN}` (Debian's rustc-web linked into rustup) is missing: run `cargo xtask setup`"
        );
    }
    if !std::path::Path::new("/usr/lib/rustlib/src/rust/library/core").exists() {
        bail!(
            "Debian's rust-web-src is missing (core's source for -Z build-std): run `cargo xtask setup`"
        );
    }
    Ok(())
}
