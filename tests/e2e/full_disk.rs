//! Flow records on a full filesystem: records that do not fit are counted,
//! never half written, and writing resumes when space comes back.

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use flowd_tests::{Flowd, Link, metric, sh};

/// A tmpfs of `size` mounted on `<dir>/fs`, unmounted on drop (also when
/// the test fails).
struct TmpFs(PathBuf);

impl TmpFs {
    fn new(dir: &Path, size: &str) -> Self {
        let mnt = dir.join("fs");
        std::fs::create_dir_all(&mnt).unwrap();
        sh(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "flowd-test",
            mnt.to_str().unwrap(),
        ]);
        Self(mnt)
    }

    fn resize(&self, size: &str) {
        sh(&[
            "mount",
            "-o",
            &format!("remount,size={size}"),
            self.0.to_str().unwrap(),
        ]);
    }
}

impl Drop for TmpFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// (ended, written, dropped) from `/metrics`.
fn counts(link: &Link, flowd: &Flowd) -> (u64, u64, u64) {
    let (_, text) = link.b.http_get(flowd.listen, "/metrics").unwrap();
    let sum = |name: &str| {
        flowd_tests::parse_metrics(&text)
            .into_iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .map(|(_, v)| v as u64)
            .sum::<u64>()
    };
    let written = metric(&text, "flowd_records_written_total", &[("sink", "file")])
        .expect("flowd_records_written_total") as u64;
    (
        sum("flowd_flows_ended_total"),
        written,
        sum("flowd_records_dropped_total"),
    )
}

/// Waits until `want` flows have ended and every ended record is accounted for.
fn settle(link: &Link, flowd: &Flowd, want: u64) -> (u64, u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = counts(link, flowd);
        if c.0 >= want && c.0 == c.1 + c.2 {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: {c:?}; {}",
            flowd.log_text()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// Sends one datagram from each source port of `ports`: one flow each.
fn flows(link: &Link, dst: SocketAddr, ports: std::ops::Range<u16>) {
    let src_ip = link.ip_a.clone();
    link.a.run(move || {
        for port in ports {
            let s = UdpSocket::bind(format!("{src_ip}:{port}")).unwrap();
            s.send_to(&[0x5a; 32], dst).unwrap();
        }
    });
}

/// Every line is a whole JSON object; the number of lines.
fn whole_lines(path: &Path) -> u64 {
    let text = std::fs::read(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with(b"\n"),
        "the file ends inside a line"
    );
    let text = String::from_utf8(text).expect("UTF-8 records");
    for l in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"));
        assert!(v.get("end_reason").is_some(), "{l}");
    }
    text.lines().count() as u64
}

#[test]
fn full_disk_drops_whole_records_counts_them_and_recovers() {
    const FLOWS: usize = 5000;
    const MORE: usize = 200;
    let tmp = flowd_tests::TempDir::new("flowd-full");
    let fs = TmpFs::new(tmp.path(), "64k");
    let path = fs.0.join("flows.jsonl");
    let link = Link::new();
    let mut flowd = Flowd::start(
        &link.b,
        &[
            "--iface",
            &link.if_b,
            "--drain-interval-ms",
            "100",
            "--idle-timeout",
            "1",
            "--records",
            path.to_str().unwrap(),
        ],
    );
    let dst: SocketAddr = format!("{}:7000", link.ip_b).parse().unwrap();
    // A socket at the destination: no ICMP port-unreachable flows back.
    let _rx: UdpSocket = link.b.run(move || UdpSocket::bind(dst).unwrap());

    flows(&link, dst, 20_000..20_000 + FLOWS as u16);
    let (ended, written, dropped) = settle(&link, &flowd, FLOWS as u64);
    eprintln!("full 64 KiB tmpfs: {ended} ended, {written} written, {dropped} dropped");
    assert_eq!(ended, FLOWS as u64);
    assert_eq!(written + dropped, ended);
    assert!(dropped > 0 && written > 0, "the disk filled part way");
    assert_eq!(whole_lines(&path), written);
    // SIGHUP reopens the file even while the disk is full.
    flowd.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !flowd.log_text().contains("flow records file reopened") {
        assert!(Instant::now() < deadline, "{}", flowd.log_text());
        thread::sleep(Duration::from_millis(100));
    }

    // Space comes back: records are written again, from a line boundary.
    fs.resize("16m");
    flows(&link, dst, 30_000..30_000 + MORE as u16);
    let (ended2, written2, dropped2) = settle(&link, &flowd, (FLOWS + MORE) as u64);
    eprintln!("after freeing space: {ended2} ended, {written2} written, {dropped2} dropped");
    assert_eq!(ended2, (FLOWS + MORE) as u64);
    assert_eq!(dropped2, dropped, "nothing dropped once there is space");
    assert_eq!(written2, written + MORE as u64);
    assert_eq!(whole_lines(&path), written2);
    let (_, text) = link.b.http_get(flowd.listen, "/metrics").unwrap();
    assert_eq!(
        metric(
            &text,
            "flowd_records_dropped_total",
            &[("sink", "file"), ("reason", "no_space")]
        ),
        Some(dropped as f64)
    );
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
}
