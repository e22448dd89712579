//! The systemd unit's hardening against the daemon. systemd is not PID 1 in
//! the test environment, so the unit cannot run as a service here; instead:
//! - `systemd-analyze security --offline` rates the unit file itself;
//! - flowd runs with the unit's capability bounding set and no new
//!   privileges (setpriv), under strace, through start, traffic, scrapes,
//!   SIGHUP and SIGTERM; every syscall it makes must be in the unit's
//!   `SystemCallFilter`, every socket family in `RestrictAddressFamilies`,
//!   every file it opens for writing outside `/sys` and `/proc` (which
//!   `ProtectKernelTunables` makes read-only) or in its bpffs, and every
//!   `/proc/<pid>` it reads its own (`ProtectProc=invisible`).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use flowd_tests::{BpfFs, Link, flowd_bin, metric, send_udp_on, stop_child};

fn unit_text() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/flowd.service");
    std::fs::read_to_string(p).unwrap()
}

/// The values of `key=` lines of the unit, words split.
fn directive(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// Every syscall `SystemCallFilter` allows, its `@groups` expanded by
/// `systemd-analyze syscall-filter`.
fn allowed_syscalls(entries: &[String]) -> BTreeSet<String> {
    let out = Command::new("systemd-analyze")
        .arg("syscall-filter")
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for l in text.lines() {
        if l.starts_with('@') {
            current = Some(l.trim().to_owned());
            groups.entry(l.trim().to_owned()).or_default();
        } else if let Some(g) = &current {
            let t = l.trim();
            if !t.is_empty() && !t.starts_with('#') {
                groups.get_mut(g).unwrap().push(t.to_owned());
            }
        }
    }
    fn expand(e: &str, groups: &BTreeMap<String, Vec<String>>, out: &mut BTreeSet<String>) {
        match groups.get(e) {
            Some(members) => {
                for m in members {
                    expand(m, groups, out);
                }
            }
            None => {
                out.insert(e.to_owned());
            }
        }
    }
    let mut allowed = BTreeSet::new();
    for e in entries {
        expand(e, &groups, &mut allowed);
    }
    allowed
}

#[test]
fn the_unit_is_hardened_and_rated() {
    let unit = unit_text();
    for (key, want) in [
        ("ProtectKernelTunables", "yes"),
        ("ProtectProc", "invisible"),
        ("LimitNOFILE", "65536"),
        ("SystemCallErrorNumber", "EPERM"),
    ] {
        assert_eq!(directive(&unit, key), [want], "{key}");
    }
    assert_eq!(
        directive(&unit, "SystemCallFilter"),
        ["@system-service", "bpf"]
    );
    assert_eq!(
        directive(&unit, "RestrictAddressFamilies"),
        ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]
    );
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/flowd.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&p)
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for flowd.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    eprintln!("systemd-analyze security: exposure {level} (4.1 before the hardening)");
    assert!(level <= 2.5, "exposure {level}");
}

#[test]
fn the_daemon_runs_within_the_units_restrictions() {
    let unit = unit_text();
    let allowed = allowed_syscalls(&directive(&unit, "SystemCallFilter"));
    assert!(allowed.contains("bpf") && allowed.contains("read"));
    let families = directive(&unit, "RestrictAddressFamilies");
    let bounding: Vec<String> = directive(&unit, "CapabilityBoundingSet")
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();

    let link = Link::new();
    let fs = BpfFs::new();
    let tmp = flowd_tests::TempDir::new("flowd-unit");
    let trace = tmp.path().join("strace.txt");
    let log = std::fs::File::create(tmp.path().join("flowd.log")).unwrap();
    let listen: SocketAddr = "127.0.0.1:29391".parse().unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &link.b.name, "setpriv", "--no-new-privs"])
        .arg(format!("--bounding-set=-all,{}", bounding.join(",")))
        .args(["strace", "-f", "-qq", "-o"])
        .arg(&trace)
        .arg(flowd_bin())
        .args(["run", "--iface", &link.if_b, "--listen", "127.0.0.1:29391"])
        .args(["--pin-path", &fs.pin_path(), "--drain-interval-ms", "100"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(link.b.http_get(listen, "/readyz"), Ok((200, _))) {
        let log = std::fs::read_to_string(tmp.path().join("flowd.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "flowd not ready:\n{log}");
        assert!(child.try_wait().unwrap().is_none(), "flowd exited:\n{log}");
        thread::sleep(Duration::from_millis(200));
    }
    let dst: SocketAddr = format!("{}:7000", link.ip_b).parse().unwrap();
    let src: SocketAddr = format!("{}:7001", link.ip_a).parse().unwrap();
    let _rx: UdpSocket = link.b.run(move || UdpSocket::bind(dst).unwrap());
    let tx: UdpSocket = link.a.run(move || UdpSocket::bind(src).unwrap());
    send_udp_on(&tx, dst, 50, 58);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, text) = link.b.http_get(listen, "/metrics").unwrap();
        let rx = metric(
            &text,
            "flowd_receive_packets_total",
            &[("device", &link.if_b)],
        );
        if rx == Some(50.0) {
            break;
        }
        assert!(Instant::now() < deadline, "50 packets not counted: {rx:?}");
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(link.b.http_get(listen, "/api/v1/flows").unwrap().0, 200);
    // strace neither forwards signals nor ends its tracee: signal flowd
    // itself, by the PID strace logs for it (its first line).
    let flowd_pid: i32 = std::fs::read_to_string(&trace)
        .unwrap()
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("flowd's PID in the trace");
    // SAFETY: signalling the flowd this test started, by its PID.
    unsafe { libc::kill(flowd_pid, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(tmp.path().join("flowd.log"))
        .unwrap_or_default()
        .contains("reload")
    {
        assert!(Instant::now() < deadline, "no reload after SIGHUP");
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(link.b.http_get(listen, "/metrics").unwrap().0, 200);
    // SAFETY: as above.
    unsafe { libc::kill(flowd_pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { libc::kill(flowd_pid, libc::SIGKILL) };
            stop_child(&mut child, 5);
            panic!("flowd did not stop on SIGTERM");
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "flowd (through strace) exited with {status}"
    );
    let log = std::fs::read_to_string(tmp.path().join("flowd.log")).unwrap_or_default();

    let trace = std::fs::read_to_string(&trace).unwrap();
    let mut pids = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for line in trace.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        pids.insert(pid.to_owned());
        let rest = rest.trim_start();
        let name = match rest.strip_prefix("<... ") {
            Some(r) => r.split_whitespace().next().unwrap_or(""),
            None => rest.split('(').next().unwrap_or(""),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // signals, exits
        }
        used.insert(name.to_owned());
        if name == "socket" {
            let fam = rest["socket(".len()..].split(',').next().unwrap_or("");
            if !families.iter().any(|f| f == fam) {
                problems.push(format!("socket family {fam}: {line}"));
            }
        }
        let writes = ["O_WRONLY", "O_RDWR", "O_CREAT"]
            .iter()
            .any(|f| rest.contains(f));
        if (name == "openat" || name == "open") && writes {
            let path = rest.split('"').nth(1).unwrap_or("");
            let bpffs = path.starts_with(&fs.pin_path()) || path.starts_with("/sys/fs/bpf");
            if (path.starts_with("/sys") || path.starts_with("/proc")) && !bpffs {
                problems.push(format!("write to a read-only tree: {line}"));
            }
        }
    }
    for line in trace.lines() {
        if let Some(p) = line.split("\"/proc/").nth(1) {
            let id: String = p.chars().take_while(char::is_ascii_digit).collect();
            if !id.is_empty() && !pids.contains(&id) {
                problems.push(format!("another process's /proc entry: {line}"));
            }
        }
    }
    let outside: Vec<&String> = used.iter().filter(|s| !allowed.contains(*s)).collect();
    eprintln!(
        "flowd used {} distinct syscalls under the unit's bounding set: {used:?}",
        used.len()
    );
    assert!(used.contains("bpf"), "the trace saw flowd work: {used:?}");
    assert!(
        outside.is_empty(),
        "syscalls outside SystemCallFilter: {outside:?}\n{log}"
    );
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(log.contains("flowd running"), "{log}");
}
