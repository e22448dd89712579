//! What an operator sees when something is wrong: one line saying what to do,
//! and a non-zero exit status. And SIGINT detaches cleanly.

use std::{
    net::TcpListener,
    process::{Command, Output},
};

use flowd_tests::{Flowd, Link, Netns, flowd_bin, has_xdp};

fn flowd_in(ns: &Netns, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(flowd_bin())
        .args(args)
        .env("FLOWD_LOG", "error")
        .output()
        .expect("run flowd")
}

fn one_error_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got:\n{err}");
    lines[0].to_owned()
}

#[test]
fn missing_interface_is_one_line_and_fails() {
    let ns = Netns::new("cli");
    let out = flowd_in(
        &ns,
        &["run", "--iface", "nosuchif0", "--listen", "127.0.0.1:29391"],
    );
    assert!(!out.status.success());
    let line = one_error_line(&out);
    assert!(
        line.contains("interface `nosuchif0` does not exist"),
        "{line}"
    );
    assert!(line.contains("--iface"), "says what to do: {line}");
}

#[test]
fn port_in_use_is_one_line_and_fails() {
    let link = Link::new();
    let taken: TcpListener = link.b.run(|| TcpListener::bind("127.0.0.1:29391").unwrap());
    let out = flowd_in(
        &link.b,
        &["run", "--iface", &link.if_b, "--listen", "127.0.0.1:29391"],
    );
    assert!(!out.status.success());
    let line = one_error_line(&out);
    assert!(line.contains("cannot listen on 127.0.0.1:29391"), "{line}");
    assert!(line.contains("--listen"), "{line}");
    assert!(
        !has_xdp(&link.b, &link.if_b),
        "nothing attached when the port is taken"
    );
    drop(taken);
}

#[test]
fn no_privileges_is_one_line_and_fails() {
    let link = Link::new();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &link.b.name,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(flowd_bin())
        .args(["run", "--iface", &link.if_b, "--listen", "127.0.0.1:29391"])
        .env("FLOWD_LOG", "error")
        .output()
        .expect("run flowd via setpriv");
    assert!(!out.status.success());
    let line = one_error_line(&out);
    assert!(line.contains("insufficient privileges"), "{line}");
    assert!(line.contains("CAP_BPF"), "{line}");
}

#[test]
fn sigint_detaches_and_exits_zero() {
    let link = Link::new();
    let mut flowd = Flowd::start(&link.b, &["--iface", &link.if_b]);
    assert!(has_xdp(&link.b, &link.if_b));
    // SAFETY: signalling the process we started, by its PID.
    unsafe { libc::kill(flowd.pid() as i32, libc::SIGINT) };
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
    assert!(!has_xdp(&link.b, &link.if_b));
}
