//! The flowd daemon under test: which binary, a private bpffs for its pins,
//! `flowd run` started inside a namespace and stopped by its PID.

use std::{
    fs::File,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::{Netns, host::try_sh, unique_tag};

static FLOWD_BIN: OnceLock<PathBuf> = OnceLock::new();

/// Makes [`flowd_bin`] return `path` for the rest of this process (the
/// bench's `--flowd`). Returns false when a path was already chosen.
pub fn use_flowd_bin(path: PathBuf) -> bool {
    FLOWD_BIN.set(path).is_ok()
}

/// Path of the flowd binary the tests run (`cargo xtask test` builds it):
/// the one given to [`use_flowd_bin`], `FLOWD_BIN`, or `target/debug/flowd`.
pub fn flowd_bin() -> PathBuf {
    if let Some(p) = FLOWD_BIN.get() {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("FLOWD_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join("debug/flowd");
    assert!(
        p.exists(),
        "{} not found: build it first (`cargo build -p flowd`; `cargo xtask test` does)",
        p.display()
    );
    p
}

/// A private bpf filesystem for one test's pins (every bpffs mount is its
/// own instance), unmounted and removed on drop.
pub struct BpfFs {
    pub path: PathBuf,
}

impl BpfFs {
    pub fn new() -> Self {
        Self::try_new().unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Like [`BpfFs::new`], returning the error.
    pub fn try_new() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("flowd-bpffs-{}", unique_tag()));
        std::fs::create_dir_all(&path).context("create bpffs mount point")?;
        let fs = Self { path };
        try_sh(&["mount", "-t", "bpf", "bpf", &fs.path.display().to_string()])?;
        Ok(fs)
    }

    pub fn pin_path(&self) -> String {
        self.path.join("flowd").display().to_string()
    }
}

impl Default for BpfFs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A flowd process started by a test, inside a namespace; stopped with
/// SIGTERM (then SIGKILL) by its PID on drop.
pub struct Flowd {
    child: Option<Child>,
    pub listen: SocketAddr,
    ns: String,
    log: PathBuf,
    _bpffs: Option<BpfFs>,
}

impl Flowd {
    /// Starts `flowd run` inside `ns` with `args`, listening on loopback
    /// there, with its pins on a private bpffs.
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        Self::try_start_env(ns, args, &[]).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Like [`Flowd::start`], with extra environment variables, returning
    /// the error.
    pub fn try_start_env(ns: &Netns, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let fs = BpfFs::try_new()?;
        let mut f = Self::try_spawn_env(ns, args, &fs.pin_path(), env)?;
        f._bpffs = Some(fs);
        f.try_wait_ready(ns)?;
        Ok(f)
    }

    /// Like [`Flowd::start`], with pins under `pin_path` (which outlives it).
    pub fn start_pinned(ns: &Netns, args: &[&str], pin_path: &str) -> Self {
        let mut f = Self::spawn(ns, args, pin_path);
        f.wait_ready(ns);
        f
    }

    /// Starts flowd without waiting for it to become ready.
    pub fn spawn(ns: &Netns, args: &[&str], pin_path: &str) -> Self {
        Self::spawn_env(ns, args, pin_path, &[])
    }

    /// Like [`Flowd::spawn`], with extra environment variables.
    pub fn spawn_env(ns: &Netns, args: &[&str], pin_path: &str, env: &[(&str, &str)]) -> Self {
        Self::try_spawn_env(ns, args, pin_path, env).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Like [`Flowd::spawn_env`], returning the error.
    pub fn try_spawn_env(
        ns: &Netns,
        args: &[&str],
        pin_path: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let listen: SocketAddr = "127.0.0.1:29391".parse().expect("address");
        let log = std::env::temp_dir().join(format!("flowd-test-{}.log", unique_tag()));
        let logf = File::create(&log).context("create log")?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(flowd_bin())
            .arg("run")
            .args(["--listen", &listen.to_string(), "--pin-path", pin_path])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .context("spawn flowd")?;
        Ok(Self {
            child: Some(child),
            listen,
            ns: ns.name.clone(),
            log,
            _bpffs: None,
        })
    }

    /// Waits until `/readyz` answers 200 (30 s at most).
    pub fn wait_ready(&mut self, ns: &Netns) {
        self.try_wait_ready(ns).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Like [`Flowd::wait_ready`], returning the error.
    pub fn try_wait_ready(&mut self, ns: &Netns) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                bail!("flowd exited early ({st}); log:\n{}", self.log_text());
            }
            if let Ok((200, _)) = ns.http_get(self.listen, "/readyz") {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "flowd did not become ready in 30 s; log:\n{}",
            self.log_text()
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait (at most 20 s); returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: signalling the child we spawned, by its PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits (up to 60 s) for a clean exit: how long the
    /// shutdown took (final drain, every record ended) and the peak RSS of
    /// the process over its life (`ru_maxrss` from `wait4`), bytes. `flowd`
    /// runs under `ip netns exec`, which execs it: the child is flowd itself.
    pub fn stop_measured(&mut self) -> anyhow::Result<(Duration, u64)> {
        let child = self.child.take().context("flowd already stopped")?;
        let pid = child.id() as i32;
        let t = Instant::now();
        // SAFETY: signalling the child we spawned, by its PID.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        loop {
            // SAFETY: an all-zero rusage is valid output space.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            let mut status = 0;
            // SAFETY: `pid` is our child, not reaped yet (`child` is never
            // waited on); the out-pointers are valid.
            let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
            ensure!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
            if r == pid {
                ensure!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "flowd exited with status {status:#x}; log:\n{}",
                    self.log_text()
                );
                return Ok((t.elapsed(), ru.ru_maxrss as u64 * 1024));
            }
            if t.elapsed() > Duration::from_secs(60) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let mut status = 0;
                // SAFETY: reaping our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                bail!("flowd did not exit within 60 s of SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// SIGKILL, as a crash would; the pinned programs keep counting.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling the child we spawned, by its PID.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Sends a signal to flowd by its PID.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: signalling the child we spawned, by its PID.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Waits for flowd to exit by itself (at most `secs`); its exit code.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return st.code();
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Flowd {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_file(&self.log);
    }
}
