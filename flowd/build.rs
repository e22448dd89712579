//! Builds the eBPF object (flowd-ebpf) with Debian's rustc and embeds it.
//!
//! The eBPF target needs `core` built from source; the rustup toolchains here
//! have no rust-src, Debian's rustc-web does. `cargo xtask setup` links it as
//! the rustup toolchain named below and installs bpf-linker.
use std::{env, process::Command};

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
    aya_build::build_ebpf(
        [Package {
            name: "flowd-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../flowd-ebpf"),
            ..Default::default()
        }],
        Toolchain::Custom(TOOLCHAIN),
    )
    .context("building the eBPF object failed; `cargo xtask setup` installs the toolchain it needs")
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
