//! Re-runs the eBPF build when bpf-linker changes (aya-template does the same).
use which::which;

fn main() {
    let bpf_linker = which("bpf-linker").expect(
        "bpf-linker not found on PATH: run `cargo xtask setup` (it installs bpf-linker 0.13 for LLVM 22)",
    );
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
