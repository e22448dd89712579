//! The application layer under test (issue 12): real servers and clients
//! run inside a test's namespaces, a capture of the same traffic taken on
//! the monitored interface, and the event logs of `flowd run --l7-log` and
//! `flowd replay CAPTURE --l7-log`, compared per 5-tuple.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::{Netns, flowd_bin, read_records, stop_child, wait};

/// A program started by a test inside a namespace (`ip netns exec` execs
/// it, so the child's PID is the program's), its output in a log file;
/// stopped by that PID on drop, also when the test fails.
pub struct Proc {
    child: Child,
    what: String,
    log: PathBuf,
}

impl Proc {
    /// Runs `args` inside `ns` with stdin closed, stdout and stderr to `log`.
    pub fn spawn(ns: &Netns, args: &[&str], log: &Path) -> Self {
        let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone the log's handle");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
        Self {
            child,
            what: args.join(" "),
            log: log.to_owned(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics, with the program's output, when it has exited already.
    pub fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("{} exited ({st}):\n{}", self.what, self.log_text());
        }
    }

    /// Sends `sig` to the program by its PID and waits (10 s at most, then
    /// SIGKILL) for it to exit.
    pub fn stop_with(&mut self, sig: i32) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: signalling the child this test spawned, by its PID.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        stop_child(&mut self.child, 10);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        stop_child(&mut self.child, 5);
    }
}

/// A capture of one interface by `tcpdump`, inside the namespace that has
/// it. tcpdump, not dumpcap: dumpcap says "Capturing on" before it opens
/// the interface (a run here lost the first 30 frames to that), tcpdump
/// says "listening on" once its packet socket is bound.
pub struct Capture {
    proc: Proc,
    pub path: PathBuf,
    ns: String,
    ifc: String,
    /// The interface's packets (both ways) once tcpdump listened.
    at_start: u64,
}

impl Capture {
    /// Starts capturing `ifc` into `dir/<name>.pcap`; returns once tcpdump
    /// listens. Immediate mode and `-U`: every packet is written when it
    /// arrives (TPACKET_V3's blocks could hold the last ones back at stop).
    pub fn start(ns: &Netns, ifc: &str, dir: &Path, name: &str) -> Self {
        let path = dir.join(format!("{name}.pcap"));
        let proc = Proc::spawn(
            ns,
            &[
                "tcpdump",
                "-i",
                ifc,
                "-n",
                "--immediate-mode",
                "-U",
                // Debian's tcpdump would switch to its own user, which
                // cannot write into the test's directory.
                "-Z",
                "root",
                "-w",
                path.to_str().expect("UTF-8 path"),
            ],
            &dir.join(format!("{name}.tcpdump.log")),
        );
        let mut cap = Self {
            proc,
            path,
            ns: ns.name.clone(),
            ifc: ifc.to_owned(),
            at_start: 0,
        };
        wait::until(
            "tcpdump to listen",
            wait::DEADLINE,
            || {
                cap.proc.assert_running();
                cap.proc.log_text()
            },
            |log| log.contains("listening on"),
        );
        cap.at_start = cap.packets();
        cap
    }

    /// The interface's received and sent packets, as the kernel counts them.
    fn packets(&self) -> u64 {
        let out = crate::sh(&[
            "ip", "-n", &self.ns, "-j", "-s", "link", "show", "dev", &self.ifc,
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        let n = |dir: &str| {
            v[0]["stats64"][dir]["packets"]
                .as_u64()
                .unwrap_or_else(|| panic!("no {dir} packets in {v}"))
        };
        n("rx") + n("tx")
    }

    /// Stops the capture once its file stopped growing (SIGINT: tcpdump
    /// closes the file) and returns the file; panics when the kernel
    /// dropped packets for it.
    pub fn stop(mut self) -> PathBuf {
        wait::settled("the capture file", Duration::from_millis(300), || {
            wait::file_size(&self.path)
        });
        let during = self.packets() - self.at_start;
        self.proc.stop_with(libc::SIGINT);
        let log = self.proc.log_text();
        assert!(
            log.contains("\n0 packets dropped by kernel"),
            "tcpdump dropped packets:\n{log}"
        );
        // Everything the interface carried while tcpdump listened is in
        // the file (and maybe a packet or two from just before).
        let frames = pcap_frames(&self.path);
        assert!(
            frames >= during,
            "{}: {frames} frames, but the interface carried {during} packets while tcpdump listened",
            self.path.display()
        );
        self.path.clone()
    }
}

/// The number of frames in a capture, read with flowd's own reader.
pub fn pcap_frames(path: &Path) -> u64 {
    let mut r = flowd::pcap::CaptureReader::open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    while r
        .next_packet()
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .is_some()
    {}
    r.packets()
}

/// The events of an event log (none while it does not exist).
pub fn read_events(path: &Path) -> Vec<Value> {
    read_records(path)
}

/// Waits until the live event log has `n` events (or more, which the
/// caller's exact asserts then report) and stays so for 300 ms.
pub fn events_settled(path: &Path, n: usize) -> Vec<Value> {
    wait::until(
        &format!("{n} events in {}", path.display()),
        wait::DEADLINE,
        || read_events(path).len(),
        |&got| got >= n,
    );
    let n = wait::settled("the event log", Duration::from_millis(300), || {
        read_events(path).len()
    });
    let events = read_events(path);
    assert_eq!(events.len(), n);
    events
}

/// `flowd replay CAPTURE --l7-log OUT`: the events of a capture.
pub fn replay_events(capture: &Path, out: &Path) -> Vec<Value> {
    let run = Command::new(flowd_bin())
        .arg("replay")
        .arg(capture)
        .arg("--l7-log")
        .arg(out)
        .env("FLOWD_LOG", "error")
        .stdout(Stdio::null())
        .output()
        .expect("run flowd replay");
    assert!(
        run.status.success(),
        "flowd replay {}: {}",
        capture.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    read_events(out)
}

/// `flowd replay CAPTURE --l7-log OUT --metrics M`: the replay's
/// Prometheus text, with the L7 families.
pub fn replay_metrics(capture: &Path, dir: &Path) -> String {
    let m = dir.join("replay.prom");
    let run = Command::new(flowd_bin())
        .arg("replay")
        .arg(capture)
        .arg("--l7-log")
        .arg(dir.join("replay-metrics.jsonl"))
        .arg("--metrics")
        .arg(&m)
        .env("FLOWD_LOG", "error")
        .stdout(Stdio::null())
        .output()
        .expect("run flowd replay");
    assert!(
        run.status.success(),
        "flowd replay {}: {}",
        capture.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read_to_string(&m).unwrap_or_else(|e| panic!("{}: {e}", m.display()))
}

/// The samples of `name` summed by the value of their `label` (over the
/// other labels: device, peer), zero-valued ones left out.
pub fn series_by(text: &str, name: &str, label: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (k, v) in crate::http::parse_metrics(text) {
        let Some((n, rest)) = k.split_once('{') else {
            continue;
        };
        let at = format!("{label}=\"");
        if n != name || v == 0.0 {
            continue;
        }
        let Some(i) = rest.find(&at) else {
            continue;
        };
        let val = &rest[i + at.len()..];
        let val = &val[..val.find('"').expect("a closing quote")];
        *out.entry(val.to_owned()).or_default() += v as u64;
    }
    out
}

/// The expected events' `key` (a number), counted by `label` of it.
pub fn events_by(
    want: &BTreeMap<Tuple, Vec<Value>>,
    key: &str,
    label: impl Fn(u64) -> String,
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for e in want.values().flatten() {
        let v = e[key].as_u64().unwrap_or_else(|| panic!("no {key} in {e}"));
        *out.entry(label(v)).or_default() += 1;
    }
    out
}

/// The live daemon's and the capture's replay's `family` by `label` both
/// equal `want` (exact counts), and their latency histogram (if any) has
/// one observation per response.
pub fn assert_family(
    live: &str,
    replay: &str,
    family: &str,
    label: &str,
    want: &BTreeMap<String, u64>,
    latency: Option<&str>,
) {
    assert_eq!(&series_by(live, family, label), want, "live {family}");
    assert_eq!(&series_by(replay, family, label), want, "replay {family}");
    if let Some(h) = latency {
        let n: u64 = want.values().sum();
        let count = |text: &str| -> u64 {
            crate::http::parse_metrics(text)
                .iter()
                .filter(|(k, _)| k.starts_with(&format!("{h}_count{{")))
                .map(|(_, v)| *v as u64)
                .sum()
        };
        assert_eq!(
            (count(live), count(replay)),
            (n, n),
            "{h}_count live, replay"
        );
    }
}

/// An event's 5-tuple (client to server, as in the flow records) and kind.
pub type Tuple = (String, String, u64, u64, u64, String);

pub fn tuple(e: &Value) -> Tuple {
    let s = |k: &str| {
        e[k].as_str()
            .unwrap_or_else(|| panic!("{k} missing in {e}"))
            .to_owned()
    };
    let n = |k: &str| {
        e[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {e}"))
    };
    (
        s("src"),
        s("dst"),
        n("sport"),
        n("dport"),
        n("proto"),
        s("kind"),
    )
}

/// Events per 5-tuple and kind, in the order of their timestamps (several
/// HTTP requests or DNS queries can share a connection).
pub fn by_tuple(events: &[Value]) -> BTreeMap<Tuple, Vec<Value>> {
    let mut m: BTreeMap<Tuple, Vec<Value>> = BTreeMap::new();
    for e in events {
        m.entry(tuple(e)).or_default().push(e.clone());
    }
    for v in m.values_mut() {
        v.sort_by(|a, b| a["ts"].as_str().cmp(&b["ts"].as_str()));
    }
    m
}

/// The event's keys that depend on where the packets were seen: `ts` and
/// the latency (the programs' hook clock live, the capture's timestamps in
/// a replay) and `device` (the interface's name live, the capture file's
/// stem in a replay).
const CAPTURE_POINT_KEYS: [&str; 4] = ["ts", "device", "http_latency_ms", "dns_latency_ms"];

fn without_capture_point(e: &Value) -> Value {
    let mut e = e.clone();
    let m = e.as_object_mut().expect("an event is an object");
    for k in CAPTURE_POINT_KEYS {
        m.remove(k);
    }
    e
}

/// Wall-clock ns of an RFC 3339 UTC timestamp as flowd writes them
/// (`2026-12-03T12:35:55.421403266Z`).
pub fn ts_ns(ts: &str) -> i128 {
    let nums = |s: &str, sep: char| -> Vec<i64> {
        s.split(sep)
            .map(|x| x.parse().unwrap_or_else(|_| panic!("timestamp {ts:?}")))
            .collect()
    };
    let (date, time) = ts
        .strip_suffix('Z')
        .and_then(|t| t.split_once('T'))
        .unwrap_or_else(|| panic!("timestamp {ts:?}"));
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let (d, t) = (nums(date, '-'), nums(hms, ':'));
    assert!(
        d.len() == 3 && t.len() == 3 && frac.len() <= 9,
        "timestamp {ts:?}"
    );
    // Days from the civil date (Howard Hinnant's days_from_civil).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    let ns = nums(&format!("{frac:0<9}"), ' ')[0];
    i128::from(secs) * 1_000_000_000 + i128::from(ns)
}

/// Asserts that a replay of a capture taken on the monitored interface
/// gives the live events: per 5-tuple and kind the same events, equal on
/// every key but those of [`CAPTURE_POINT_KEYS`]. Of these, `ts` must be
/// within 100 ms (the same packets, timestamped by the XDP/TC hook live and
/// by the packet socket in the capture: microseconds apart, plus the
/// daemon's conversion of the kernel clock to wall-clock time) and the
/// latency within 5 ms, present in both or in neither. `direction` is
/// compared: a replay presents every frame as received, and live the
/// event's direction is that of the request, which arrives on the
/// server's interface where these tests capture, so both say `ingress`.
pub fn assert_replay_equals_live(
    live: &[Value],
    replay: &[Value],
    live_device: &str,
    capture: &Path,
) {
    let stem = capture
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("capture file name");
    for e in live {
        assert_eq!(e["device"], live_device, "{e}");
    }
    for e in replay {
        assert_eq!(e["device"], stem, "{e}");
    }
    let (l, r) = (by_tuple(live), by_tuple(replay));
    assert_eq!(
        l.keys().collect::<Vec<_>>(),
        r.keys().collect::<Vec<_>>(),
        "5-tuples live vs replay"
    );
    for (k, lv) in &l {
        let rv = &r[k];
        assert_eq!(
            lv.len(),
            rv.len(),
            "{k:?}: events live {lv:#?} replay {rv:#?}"
        );
        for (a, b) in lv.iter().zip(rv) {
            assert_eq!(without_capture_point(a), without_capture_point(b), "{k:?}");
            let dt = ts_ns(a["ts"].as_str().unwrap()) - ts_ns(b["ts"].as_str().unwrap());
            assert!(dt.abs() <= 100_000_000, "{k:?}: ts live {a} replay {b}");
            for key in ["http_latency_ms", "dns_latency_ms"] {
                match (a[key].as_f64(), b[key].as_f64()) {
                    (Some(x), Some(y)) => {
                        assert!((x - y).abs() <= 5.0, "{k:?}: {key} live {x} replay {y}")
                    }
                    (None, None) => {}
                    other => panic!("{k:?}: {key} live/replay {other:?}"),
                }
            }
        }
    }
}

/// The keys of an event after removing `ts` and the latency: what a test
/// compares exactly with the event it expects.
pub fn exact_part(e: &Value) -> Value {
    let mut e = e.clone();
    let m = e.as_object_mut().expect("an event is an object");
    for k in ["ts", "http_latency_ms", "dns_latency_ms"] {
        m.remove(k);
    }
    e
}
