//! Host-side stub: `flowd` has a build-dependency on this crate so that cargo
//! rebuilds the eBPF object when its sources change. The programs are in the
//! `flowd` binary target, which is only built for `bpfel-unknown-none`.
#![no_std]
