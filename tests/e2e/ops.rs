//! Daemon operations: restarts that keep counting, reloads that lose
//! nothing, interfaces that come and go, systemd's notify protocol.

use std::{
    net::{SocketAddr, UdpSocket},
    os::unix::net::UnixDatagram,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use flowd_tests::{
    BpfFs, Flowd, Link, Netns, api_flows, find_flows, flowd_bin, metric, send_udp_on, wait,
};

/// Polls /metrics until `name{labels}` equals `want`; returns it (panics
/// with the last value after the deadline).
fn metric_when(
    ns: &Netns,
    f: &Flowd,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
) -> Option<f64> {
    wait::until(
        &format!("{name}{labels:?} = {want}"),
        wait::DEADLINE,
        || metric(&wait::scrape(ns, f), name, labels),
        |v| *v == Some(want),
    )
}

/// Polls the flow API until the ingress flows to `dport` hold `want`
/// packets; returns the count (panics with the last one after the deadline).
fn flow_packets_when(ns: &Netns, f: &Flowd, dport: u16, want: u64) -> u64 {
    wait::until(
        &format!("{want} packets in the flows to port {dport}"),
        wait::DEADLINE,
        || {
            find_flows(
                &api_flows(ns, f),
                &[("direction", "ingress"), ("dport", &dport.to_string())],
            )
            .iter()
            .map(|f| f["packets"].as_u64().unwrap())
            .sum::<u64>()
        },
        |&got| got == want,
    )
}

fn udp_pair(link: &Link, port: u16) -> (UdpSocket, SocketAddr, UdpSocket) {
    let dst: SocketAddr = format!("{}:{port}", link.ip_b).parse().unwrap();
    let src: SocketAddr = format!("{}:{}", link.ip_a, port + 1).parse().unwrap();
    let rx = link.b.run(move || UdpSocket::bind(dst).unwrap());
    let tx = link.a.run(move || UdpSocket::bind(src).unwrap());
    (tx, dst, rx)
}

/// kill -9, traffic while flowd is down, start again: the totals go on
/// from where they were, and the flows the maps held are drained.
#[test]
fn kill9_and_restart_keeps_counting() {
    let link = Link::new();
    let fs = BpfFs::new();
    let pin = fs.pin_path();
    let args = ["--iface", link.if_b.as_str(), "--drain-interval-ms", "100"];
    let mut first = Flowd::start_pinned(&link.b, &args, &pin);
    let (tx, dst, _rx) = udp_pair(&link, 7100);
    let dev = [("device", link.if_b.as_str())];
    send_udp_on(&tx, dst, 500, 58); // 100-byte frames
    assert_eq!(
        metric_when(&link.b, &first, "flowd_receive_packets_total", &dev, 500.0),
        Some(500.0)
    );
    // Let the first flowd drain those 500 into its (in-memory) table first.
    assert_eq!(flow_packets_when(&link.b, &first, 7100, 500), 500);
    first.kill9();
    // Nobody drains now, but the pinned programs still count.
    send_udp_on(&tx, dst, 300, 58);
    let mut second = Flowd::start_pinned(&link.b, &args, &pin);
    send_udp_on(&tx, dst, 200, 58);
    assert_eq!(
        metric_when(
            &link.b,
            &second,
            "flowd_receive_packets_total",
            &dev,
            1000.0
        ),
        Some(1000.0)
    );
    let text = wait::scrape(&link.b, &second);
    assert_eq!(
        metric(&text, "flowd_receive_bytes_total", &dev),
        Some(100_000.0)
    );
    // The 300 left in the maps plus the 200 after: nothing drained twice or lost.
    assert_eq!(
        flow_packets_when(&link.b, &second, 7100, 500),
        500,
        "{}",
        second.log_text()
    );
    assert_eq!(second.stop(), Some(0));
}

/// A bad config on SIGHUP keeps the old one; a good one adds an interface;
/// traffic during the reloads is all counted.
#[test]
fn reload_rejects_bad_config_and_applies_good_one() {
    let link = Link::new();
    // A second interface in flowd's namespace (a veth pair with both ends there).
    link.b.exec(&[
        "ip", "link", "add", "fdum0", "type", "veth", "peer", "name", "fdum1",
    ]);
    link.b.exec(&["ip", "link", "set", "fdum0", "up"]);
    let tmp = flowd_tests::TempDir::new("flowd-reload");
    let dir = tmp.path().to_path_buf();
    let cfg = dir.join("flowd.toml");
    let write = |body: &str| std::fs::write(&cfg, body).unwrap();
    write(&format!(
        "interfaces = [\"{}\"]\ndrain_interval_ms = 100\n",
        link.if_b
    ));
    let flowd = Flowd::start(&link.b, &["--config", cfg.to_str().unwrap()]);
    let (tx, dst, _rx) = udp_pair(&link, 7200);
    let sender = {
        let tx = tx.try_clone().unwrap();
        thread::spawn(move || {
            for _ in 0..10 {
                send_udp_on(&tx, dst, 100, 58);
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    write("drain_interval_ms = 5\n");
    flowd.signal(libc::SIGHUP);
    let log = wait::log_contains("reload rejected", || flowd.log_text());
    assert!(log.contains("drain_interval_ms"), "the log names the key");
    assert_eq!(link.b.http_get(flowd.listen, "/readyz").unwrap().0, 200);

    write(&format!(
        "interfaces = [\"{}\", \"fdum*\"]\ndrain_interval_ms = 100\n",
        link.if_b
    ));
    flowd.signal(libc::SIGHUP);
    let attached = [("device", "fdum0"), ("hook", "xdp")];
    assert_eq!(
        metric_when(&link.b, &flowd, "flowd_program_attached", &attached, 1.0),
        Some(1.0)
    );
    sender.join().unwrap();
    let dev = [("device", link.if_b.as_str())];
    assert_eq!(
        metric_when(&link.b, &flowd, "flowd_receive_packets_total", &dev, 1000.0),
        Some(1000.0)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An interface deleted and re-created while flowd runs: detached in the
/// metrics while gone, counted again (on the same totals) when back.
#[test]
fn interface_that_goes_away_and_returns() {
    let link = Link::new();
    let pattern = format!("{}*", &link.if_b[..link.if_b.len() - 1]);
    let flowd = Flowd::start(
        &link.b,
        &["--iface", &pattern, "--drain-interval-ms", "100"],
    );
    let dev = [("device", link.if_b.as_str())];
    let xdp = [("device", link.if_b.as_str()), ("hook", "xdp")];
    {
        let (tx, dst, _rx) = udp_pair(&link, 7300);
        send_udp_on(&tx, dst, 100, 58);
    }
    assert_eq!(
        metric_when(&link.b, &flowd, "flowd_receive_packets_total", &dev, 100.0),
        Some(100.0)
    );
    link.delete_pair();
    assert_eq!(
        metric_when(&link.b, &flowd, "flowd_program_attached", &xdp, 0.0),
        Some(0.0)
    );
    assert_eq!(
        link.b.http_get(flowd.listen, "/healthz").unwrap().0,
        200,
        "still alive"
    );
    link.recreate_pair();
    assert_eq!(
        metric_when(&link.b, &flowd, "flowd_program_attached", &xdp, 1.0),
        Some(1.0)
    );
    let (tx, dst, _rx) = udp_pair(&link, 7300);
    send_udp_on(&tx, dst, 50, 58);
    assert_eq!(
        metric_when(&link.b, &flowd, "flowd_receive_packets_total", &dev, 150.0),
        Some(150.0)
    );
}

/// /readyz is 503, naming the interface, while an interface the config
/// names is gone, and 200 again once it is back and attached.
#[test]
fn not_ready_while_a_named_interface_has_no_program() {
    let link = Link::new();
    let flowd = Flowd::start(&link.b, &["--iface", &link.if_b]);
    let readyz_when = |want: u16| -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = link.b.http_get(flowd.listen, "/readyz").unwrap();
            if status == want {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz stayed {status} ({body}), waiting for {want}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(readyz_when(200), "ready\n");
    link.delete_pair();
    let body = readyz_when(503);
    assert_eq!(body, format!("not ready: no program on {}\n", link.if_b));
    link.recreate_pair();
    assert_eq!(readyz_when(200), "ready\n");
    assert!(flowd_tests::has_xdp(&link.b, &link.if_b));
}

/// READY after attach, WATCHDOG pings, RELOADING/READY around a reload,
/// STOPPING at the end, on a real NOTIFY_SOCKET.
#[test]
fn notify_protocol_on_a_real_socket() {
    let link = Link::new();
    let fs = BpfFs::new();
    let tmp = flowd_tests::TempDir::new("flowd-notify");
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut flowd = Flowd::spawn_env(
        &link.b,
        &["--iface", &link.if_b],
        &fs.pin_path(),
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut buf = [0u8; 512];
    let mut next = || {
        // A signal for another test's child can interrupt the wait: retry.
        let n = loop {
            match sock.recv(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r.expect("a notification within 10 s"),
            }
        };
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m == "READY=1") {
        seen.push(next());
    }
    // A reload the moment flowd says it is ready (systemd allows one from
    // then on) is handled, not the default action of SIGHUP, which ends
    // the process.
    flowd.signal(libc::SIGHUP);
    let mut reload = Vec::new();
    while reload.last().map(String::as_str) != Some("READY=1") {
        let m = next();
        if m != "WATCHDOG=1" {
            reload.push(m);
        }
    }
    assert!(
        reload[0].starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reload:?}"
    );
    flowd.wait_ready(&link.b);
    let mut m = next();
    while m == "READY=1" {
        m = next();
    }
    assert_eq!(m, "WATCHDOG=1");
    flowd.signal(libc::SIGTERM);
    let mut last = next();
    while last == "WATCHDOG=1" {
        last = next();
    }
    assert_eq!(last, "STOPPING=1");
    assert_eq!(flowd.wait_exit(20), Some(0));
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/flowd.service"
    ))
    .unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    // systemd-analyze checks that ExecStart exists: point it at the built binary.
    let tmp = flowd_tests::TempDir::new("flowd-unit");
    let dir = tmp.path().to_path_buf();
    let path = dir.join("flowd.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/flowd", flowd_bin().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_config_names_the_bad_key() {
    let tmp = flowd_tests::TempDir::new("flowd-cc");
    let dir = tmp.path().to_path_buf();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[flow_table]\nidle_timeout_s = 0\n").unwrap();
    let out = Command::new(flowd_bin())
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("flow_table.idle_timeout_s")
            && err.contains("1 to 86400")
            && err.contains("value 0"),
        "{err}"
    );
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/flowd.toml");
    let out = Command::new(flowd_bin())
        .arg("check-config")
        .arg(shipped)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// HTTPS with basic auth: a scrape without credentials is rejected, with
/// them it works, /healthz stays open.
#[test]
fn tls_and_basic_auth() {
    let link = Link::new();
    let tmp = flowd_tests::TempDir::new("flowd-tls");
    let dir = tmp.path().to_path_buf();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=flowd-test",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = bcrypt::hash("scrape-pass", 6).unwrap();
    let cfg = dir.join("flowd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[web]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n[web.basic_auth_users]\nprometheus = {hash:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    let fs = BpfFs::new();
    let mut flowd = Flowd::spawn(
        &link.b,
        &["--iface", &link.if_b, "--config", cfg.to_str().unwrap()],
        &fs.pin_path(),
    );
    let curl = |extra: &[&str], path: &str| -> String {
        let mut args = vec![
            "netns",
            "exec",
            &link.b.name,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
        ];
        let cert = cert.to_str().unwrap().to_owned();
        args.push(&cert);
        args.extend_from_slice(extra);
        let url = format!("https://127.0.0.1:29391{path}");
        args.push(&url);
        let out = Command::new("ip").args(&args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while curl(&[], "/healthz") != "200" {
        assert!(
            Instant::now() < deadline,
            "flowd did not serve HTTPS: {}",
            flowd.log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(curl(&[], "/metrics"), "401");
    assert_eq!(curl(&["-u", "prometheus:wrong"], "/metrics"), "401");
    assert_eq!(curl(&["-u", "prometheus:scrape-pass"], "/metrics"), "200");
    assert_eq!(
        curl(&["-u", "prometheus:scrape-pass"], "/api/v1/flows"),
        "200"
    );
    // Plain HTTP on the TLS port is not served.
    assert_ne!(
        link.b
            .http_get(flowd.listen, "/metrics")
            .map(|r| r.0)
            .unwrap_or(0),
        200
    );
    assert_eq!(flowd.stop(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Pins an earlier flowd made for another map layout version are detected
/// and removed cleanly, with a log line; flowd then starts on fresh maps.
#[test]
fn pins_of_another_abi_version_are_reset() {
    let link = Link::new();
    let fs = BpfFs::new();
    let pin = fs.pin_path();
    let old = std::path::Path::new(&pin).join("v0");
    std::fs::create_dir_all(old.join("links")).unwrap();
    // The marker flowd leaves in each directory it makes (loader::PIN_MARKER).
    std::os::unix::fs::symlink("flowd", old.join("flowd_pins")).unwrap();
    let mut flowd = Flowd::start_pinned(&link.b, &["--iface", &link.if_b], &pin);
    assert!(!old.exists(), "old layout's pins removed");
    assert!(
        flowd
            .log_text()
            .contains("removing pins of another map layout version"),
        "{}",
        flowd.log_text()
    );
    let current = std::path::Path::new(&pin).join(format!("v{}", flowd_common::ABI_VERSION));
    assert!(
        current.join("FLOWS_0").exists(),
        "maps pinned under {}",
        current.display()
    );
    assert_eq!(flowd.stop(), Some(0));
}
