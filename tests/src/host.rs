//! The host side of the test bed: unique names, temporary directories,
//! commands run with their output checked, child processes stopped by PID.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short unique tag: interface names are limited to 15 bytes.
pub fn unique_tag() -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{n:x}", std::process::id() % 0xfffff)
}

/// A fresh directory under the system's temporary directory, removed with
/// everything in it when dropped, also when the test fails.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `<tmp>/<prefix>-<unique tag>`, created.
    pub fn new(prefix: &str) -> Self {
        Self::try_new(prefix).expect("creating a temporary directory")
    }

    /// Like [`TempDir::new`], returning the error.
    pub fn try_new(prefix: &str) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", unique_tag()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> Output {
    try_sh(args).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Runs a command; an error with its output if it cannot run or fails.
pub fn try_sh(args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("cannot run {args:?}"))?;
    ensure!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// Stops a child process this test spawned: SIGTERM by its PID, then
/// SIGKILL if it has not exited within `secs`.
pub fn stop_child(child: &mut Child, secs: u64) {
    // SAFETY: signalling the child we spawned, by its PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !matches!(child.try_wait(), Ok(Some(_))) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
}
