//! Mistakes and missing privileges an operator meets, each answered with
//! one line that names the cause once and what is accepted.

use std::process::{Command, Output};

use flowd_tests::{Link, flowd_bin};

fn check_config(file: &str) -> Output {
    Command::new(flowd_bin())
        .args(["check-config", file])
        .env("FLOWD_LOG", "error")
        .output()
        .expect("run flowd check-config")
}

fn one_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err.trim().to_owned()
}

#[test]
fn config_mistakes_are_one_line_each() {
    // /dev/zero never ends: the read stops at 1 MiB.
    let out = check_config("/dev/zero");
    assert!(!out.status.success());
    assert_eq!(
        one_line(&out),
        "flowd: error: /dev/zero: larger than 1048576 bytes (1 MiB); a flowd configuration is a few KiB: is this the right file?"
    );
    let out = check_config("/");
    assert_eq!(
        one_line(&out),
        "flowd: error: cannot read /: Is a directory (os error 21)"
    );
    let tmp = flowd_tests::TempDir::new("flowd-cfgerr");
    for (text, says) in [
        (
            "[interface_speeds]\neth0 = 0\n",
            "key `interface_speeds`: value eth0 = 0 is not accepted; accepted: bits per second from 1 to 10000000000000",
        ),
        (
            "listen = \"127.0.0.1:0\"\n",
            "key `listen`: value \"127.0.0.1:0\" is not accepted; accepted: an IP address and a port from 1 to 65535",
        ),
    ] {
        let f = tmp.path().join("flowd.toml");
        std::fs::write(&f, text).unwrap();
        let out = check_config(f.to_str().unwrap());
        assert!(!out.status.success(), "{text}");
        let line = one_line(&out);
        assert!(line.contains(says), "{line}");
    }
}

/// Root without CAP_PERFMON (and CAP_SYS_ADMIN: a container, a unit's
/// bounding set): `flowd
/// check` fails on privileges and `flowd run` stops with one line naming
/// CAP_PERFMON, before any program meets the verifier.
#[test]
fn root_without_cap_perfmon_is_told_so() {
    let link = Link::new();
    let without_perfmon = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &link.b.name, "setpriv"])
            // CAP_SYS_ADMIN would stand in for CAP_PERFMON: drop both.
            .args([
                "--bounding-set=-perfmon,-sys_admin",
                "--inh-caps=-perfmon,-sys_admin",
            ])
            .arg(flowd_bin())
            .args(args)
            .env("FLOWD_LOG", "error")
            .output()
            .expect("run flowd via setpriv")
    };
    let out = without_perfmon(&["check"]);
    assert!(!out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    let privs = report
        .lines()
        .find(|l| l.contains("privileges"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        privs.starts_with("FAIL") && privs.contains("missing CAP_PERFMON"),
        "{report}"
    );
    assert!(
        !report.contains("eBPF programs"),
        "no load attempted: {report}"
    );

    let out = without_perfmon(&["run", "--iface", &link.if_b, "--listen", "127.0.0.1:29391"]);
    assert!(!out.status.success());
    let line = one_line(&out);
    assert!(
        line.contains("insufficient privileges: missing CAP_PERFMON"),
        "{line}"
    );
    assert!(!line.contains("CAP_BPF to"), "only what is missing: {line}");
}
