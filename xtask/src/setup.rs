//! `cargo xtask setup`: checks cheaply, installs only what is missing.
//!
//! Every check is a file test or a short command, so a machine that has
//! everything is done in well under a second. Anything that cannot be fixed
//! here prints one line saying what is missing and how to fix it.

use std::{
    ffi::OsStr,
    fs::{self, File},
    io,
    os::fd::{FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Debian packages: the eBPF toolchain (Debian's rustc with its library
/// source, and what bpf-linker links against), then the test peers.
const PACKAGES: &[&str] = &[
    "rustc-web",
    "rust-web-src",
    "llvm-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "libpolly-22-dev",
    "iproute2",
    "nftables",
    "tshark",
    "tcpreplay",
    "nfdump",
    "prometheus",
    "ethtool",
    "bpftool",
    "python3-scapy",
    "python3-yaml",
    "curl",
    "openssl",
    // The live application-layer tests (tests/e2e/l7.rs): DNS server and
    // client, and the capture replayed against the live events.
    "dnsmasq-base",
    "bind9-dnsutils",
    "tcpdump",
    "systemd",
    "util-linux",
    "procps",
];

/// The packages bpf-linker is built against.
const LLVM_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "libpolly-22-dev",
];

/// The rustup toolchain linked to Debian's rustc; `flowd/build.rs` uses it.
const BPF_TOOLCHAIN: &str = "flowd-bpf";
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPFFS: &str = "/sys/fs/bpf";
const BTF: &str = "/sys/kernel/btf/vmlinux";
/// The oldest kernel flowd supports.
const MIN_KERNEL: (u32, u32) = (6, 6);
/// Bit of CAP_BPF in /proc/self/status's CapEff.
const CAP_BPF: u32 = 39;

/// Runs every check, fixes what it can and fails if anything is left missing.
pub(crate) fn setup(root: &Path) -> Result<()> {
    let mut s = Setup {
        root,
        actions: 0,
        problems: 0,
    };
    s.run();
    if s.problems > 0 {
        bail!("setup could not fix {} problem(s) listed above", s.problems);
    }
    if s.actions == 0 {
        eprintln!("setup: everything present");
    }
    Ok(())
}

struct Setup<'a> {
    root: &'a Path,
    actions: usize,
    problems: usize,
}

impl Setup<'_> {
    /// Prints one line for an action taken.
    fn action(&mut self, what: &str) {
        self.actions += 1;
        eprintln!("setup: {what}");
    }

    /// Prints one line for something missing that setup could not fix.
    fn problem(&mut self, what: &str) {
        self.problems += 1;
        eprintln!("setup: MISSING {what}");
    }

    fn run(&mut self) {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let privileged = root || has_cap_bpf();
        if !privileged {
            self.problem("root privileges (or CAP_BPF): run `cargo xtask` as root");
        }

        if !Path::new(BTF).exists() {
            self.problem(&format!(
                "kernel BTF ({BTF}): boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux >= 6.6)"
            ));
        }
        if let Some((major, minor)) = kernel_version()
            && (major, minor) < MIN_KERNEL
        {
            self.problem(&format!(
                "Linux >= {}.{} (running {major}.{minor}): boot a newer kernel",
                MIN_KERNEL.0, MIN_KERNEL.1
            ));
        }

        let missing_packages = self.packages(root);
        let has = |pkgs: &[&str]| !pkgs.iter().any(|p| missing_packages.contains(p));
        self.toolchain(has(&["rustc-web", "rust-web-src"]));
        self.bpf_linker(has(LLVM_PACKAGES));
        self.bpffs(root);
        if privileged && let Err(e) = bpf_syscall_usable() {
            self.problem(&format!(
                "a usable bpf() syscall (BPF_MAP_CREATE failed: {e}): run on a host or VM, \
                 or in a privileged container without a seccomp filter"
            ));
        }
    }

    /// Installs missing Debian packages; returns those still missing.
    fn packages(&mut self, root: bool) -> Vec<&'static str> {
        let missing = match missing_packages(PACKAGES) {
            Ok(m) => m,
            Err(e) => {
                self.problem(&format!("dpkg-query ({e:#}): setup needs a Debian system"));
                return PACKAGES.to_vec();
            }
        };
        if missing.is_empty() {
            return missing;
        }
        let list = missing.join(" ");
        if !root {
            self.problem(&format!(
                "Debian packages {list}: run `cargo xtask setup` as root \
                 (or `apt-get install --no-install-recommends {list}`)"
            ));
            return missing;
        }
        self.action(&format!("installing Debian packages: {list}"));
        let log = self.log_file("apt");
        let result = self.install_packages(&missing, &log);
        let still = missing_packages(&missing).unwrap_or_else(|_| missing.clone());
        match result {
            Ok(()) if still.is_empty() => {}
            // Service start-up in a postinst (prometheus) may fail without
            // an init system; what counts is that the packages are there.
            Err(e) if still.is_empty() => {
                eprintln!("setup: note: {e:#}, but every package is installed");
            }
            Ok(()) | Err(_) => {
                let why = result.err().map(|e| format!("{e:#}; ")).unwrap_or_default();
                self.problem(&format!(
                    "Debian packages {} ({why}see {}): fix apt and rerun `cargo xtask setup`",
                    still.join(" "),
                    log.display()
                ));
            }
        }
        still
    }

    fn install_packages(&self, missing: &[&str], log: &Path) -> Result<()> {
        if missing.contains(&"tshark") {
            // Otherwise wireshark-common asks whether non-root users may capture.
            let mut cmd = Command::new("debconf-set-selections");
            cmd.stdin(Stdio::piped());
            let mut child = cmd
                .stdout(logged(log)?)
                .stderr(logged(log)?)
                .spawn()
                .context("running debconf-set-selections")?;
            if let Some(mut stdin) = child.stdin.take() {
                io::Write::write_all(
                    &mut stdin,
                    b"wireshark-common wireshark-common/install-setuid boolean false\n",
                )?;
            }
            check(child.wait()?, "debconf-set-selections")?;
        }
        let apt = |args: &[&str]| -> Result<()> {
            let status = Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                // A file, not a pipe: a service started by a postinst could
                // keep a pipe open and hang us.
                .stdout(logged(log)?)
                .stderr(logged(log)?)
                .status()
                .context("running apt-get")?;
            check(status, &format!("apt-get {}", args[0]))
        };
        apt(&["update"])?;
        let mut args = vec![
            "install",
            "-y",
            "--no-install-recommends",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
        ];
        args.extend_from_slice(missing);
        apt(&args)
    }

    /// The rustup toolchain `flowd-bpf`, linked to Debian's rustc in /usr.
    fn toolchain(&mut self, rustc_web: bool) {
        let works = Command::new("rustup")
            .args(["run", BPF_TOOLCHAIN, "rustc", "--version"])
            .stdin(Stdio::null())
            .output();
        match works {
            Ok(o) if o.status.success() => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.problem("rustup: install stable Rust with rustup (https://rustup.rs)");
                return;
            }
            Err(e) => {
                self.problem(&format!("a working rustup ({e}): reinstall rustup"));
                return;
            }
        }
        if !rustc_web {
            // Reported with the packages already.
            return;
        }
        self.action(&format!(
            "linking rustup toolchain {BPF_TOOLCHAIN} to Debian's rustc (/usr)"
        ));
        let out = Command::new("rustup")
            .args(["toolchain", "link", BPF_TOOLCHAIN, "/usr"])
            .stdin(Stdio::null())
            .output();
        let ok = match &out {
            Ok(o) if o.status.success() => Command::new("rustup")
                .args(["run", BPF_TOOLCHAIN, "rustc", "--version"])
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success()),
            _ => false,
        };
        if !ok {
            let why = match out {
                Ok(o) => String::from_utf8_lossy(&o.stderr)
                    .trim()
                    .replace('\n', "; "),
                Err(e) => e.to_string(),
            };
            self.problem(&format!(
                "rustup toolchain {BPF_TOOLCHAIN} ({why}): check /usr/bin/rustc, then \
                 `rustup toolchain link {BPF_TOOLCHAIN} /usr`"
            ));
        }
    }

    /// bpf-linker 0.13.0 built against LLVM 22, in ~/.cargo/bin.
    fn bpf_linker(&mut self, llvm: bool) {
        let bin = cargo_home().join("bin/bpf-linker");
        if linker_version_ok(&bin) {
            return;
        }
        if !llvm {
            // Reported with the packages already.
            return;
        }
        self.action(&format!(
            "building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"
        ));
        let log = self.log_file("bpf-linker");
        let result = (|| -> Result<()> {
            let status = Command::new(cargo())
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--locked",
                    "--force",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("LLVM_PREFIX", LLVM_PREFIX)
                // Outside the workspace, so its config does not apply.
                .current_dir(cargo_home())
                .stdin(Stdio::null())
                .stdout(logged(&log)?)
                .stderr(logged(&log)?)
                .status()
                .context("running cargo install")?;
            check(status, "cargo install bpf-linker")
        })();
        if result.is_err() || !linker_version_ok(&bin) {
            let why = result.err().map(|e| format!("{e:#}; ")).unwrap_or_default();
            self.problem(&format!(
                "bpf-linker {BPF_LINKER_VERSION} ({why}see {}): `LLVM_PREFIX={LLVM_PREFIX} cargo \
                 install bpf-linker --version {BPF_LINKER_VERSION} --locked \
                 --no-default-features --features llvm-22`",
                log.display()
            ));
        }
    }

    /// bpffs at /sys/fs/bpf, where flowd pins its maps and links.
    fn bpffs(&mut self, root: bool) {
        if bpffs_mounted() {
            return;
        }
        if !root {
            self.problem(&format!(
                "bpffs at {BPFFS}: as root, `mount -t bpf bpf {BPFFS}`"
            ));
            return;
        }
        self.action(&format!("mounting bpffs at {BPFFS}"));
        if let Err(e) = mount_bpffs() {
            self.problem(&format!(
                "bpffs at {BPFFS} (mount failed: {e}): `mount -t bpf bpf {BPFFS}` on the host"
            ));
        }
    }

    /// A log file for a long, noisy step, under target/xtask/.
    fn log_file(&self, name: &str) -> PathBuf {
        let dir = crate::target_dir(self.root).join("xtask");
        let _ = fs::create_dir_all(&dir);
        let path = dir.join(format!("setup-{name}.log"));
        let _ = fs::remove_file(&path);
        path
    }
}

/// Opens `log` for appending, for a child's stdout or stderr.
fn logged(log: &Path) -> Result<File> {
    File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))
}

fn check(status: std::process::ExitStatus, what: &str) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("{what} failed ({status})")
    }
}

/// The packages of `wanted` that dpkg does not have installed.
fn missing_packages<'a>(wanted: &[&'a str]) -> Result<Vec<&'a str>> {
    // One dpkg-query for all; it exits 1 when some are unknown, which is
    // an answer, not an error.
    let out = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${Status}\n")
        .args(wanted)
        .stdin(Stdio::null())
        .output()
        .context("running dpkg-query")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            // Status is "want flag status"; "installed" is the last word.
            (words.nth(2) == Some("installed")).then_some(name)
        })
        .collect();
    Ok(wanted
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect())
}

fn linker_version_ok(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .any(|w| w == BPF_LINKER_VERSION)
        })
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        })
}

/// The cargo that runs xtask (set by `cargo run`), else the one on PATH.
pub(crate) fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsStr::new("cargo").to_owned())
}

fn has_cap_bpf() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_BPF) != 0)
}

/// (major, minor) of the running kernel, if it can be read.
fn kernel_version() -> Option<(u32, u32)> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn bpffs_mounted() -> bool {
    fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().take(3).collect();
            f.len() == 3 && f[1] == BPFFS && f[2] == "bpf"
        })
    })
}

fn mount_bpffs() -> io::Result<()> {
    fs::create_dir_all(BPFFS)?;
    // SAFETY: all pointers are NUL-terminated string literals that outlive
    // the call; bpffs takes no mount data, so a null data pointer is allowed.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The leading fields of `union bpf_attr` that BPF_MAP_CREATE reads; the
/// kernel zero-fills the rest up to its own size.
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// Creates and closes a one-entry BPF_MAP_TYPE_ARRAY.
fn bpf_syscall_usable() -> io::Result<()> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 8,
        max_entries: 1,
        map_flags: 0,
    };
    let size = size_of::<MapCreateAttr>() as libc::c_long;
    // SAFETY: `attr` is a valid, initialised bpf_attr prefix of `size` bytes
    // that lives across the call; the kernel only reads it.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, &raw const attr, size) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf() returned a bad fd"))?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it;
    // dropping the OwnedFd closes it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}
