//! Waiting for a condition instead of sleeping: a counter reaching N, a
//! socket bound, a file's size settling. Each wait polls with a bounded
//! deadline and, when the deadline passes, panics with what it waited for
//! and the last value it saw, so a slow machine makes a test slower, never
//! wrong, and a broken product fails with the evidence.

use std::{
    fmt::Debug,
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use crate::{Flowd, Netns, metric};

/// How long a condition may take on a busy 2-core machine before the wait
/// gives up. Generous: waits end as soon as the condition holds.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Time between two polls.
const POLL: Duration = Duration::from_millis(50);

/// Calls `probe` until `done` holds for its value, and returns that value.
/// Panics after `deadline` with `what` and the last value seen.
pub fn until<T: Debug>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let end = Instant::now() + deadline;
    loop {
        let v = probe();
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}; last value: {v:?}"
        );
        thread::sleep(POLL);
    }
}

/// Waits until a counter that only grows reaches `want`, and returns the
/// value then seen: equal to `want`, or larger, which the caller's exact
/// assert then reports (waiting for `>=` instead of `==` makes an
/// overshoot fail at once instead of at the deadline).
pub fn reaches(what: &str, want: u64, mut probe: impl FnMut() -> u64) -> u64 {
    until(
        &format!("{what} to reach {want}"),
        DEADLINE,
        &mut probe,
        |v| *v >= want,
    )
}

/// Waits until `probe` returns the same value for `quiet` in a row (a file
/// that stopped growing, a counter that stopped moving), and returns it.
pub fn settled<T: Debug + PartialEq + Clone>(
    what: &str,
    quiet: Duration,
    mut probe: impl FnMut() -> T,
) -> T {
    let end = Instant::now() + DEADLINE;
    let mut last = probe();
    let mut since = Instant::now();
    loop {
        thread::sleep(POLL);
        let v = probe();
        if v != last {
            last = v;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {DEADLINE:?} waiting for {what} to settle; last value: {last:?}"
        );
    }
}

/// The size of a file, 0 while it does not exist.
pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Waits until a file exists.
pub fn file_exists(path: &Path) {
    until(
        &format!("{} to exist", path.display()),
        DEADLINE,
        || path.exists(),
        |e| *e,
    );
}

/// Waits until `text` appears in `log()` (a daemon's log), and returns the log.
pub fn log_contains(text: &str, mut log: impl FnMut() -> String) -> String {
    until(&format!("{text:?} in the log"), DEADLINE, &mut log, |l| {
        l.contains(text)
    })
}

/// True when a socket of `proto` ("udp" or "tcp") in `ns` is bound to
/// `addr` (a listening socket, for TCP). Reads the namespace's
/// `/proc/net/{udp,tcp}[6]` from a thread inside it.
pub fn is_bound(ns: &Netns, proto: &'static str, addr: SocketAddr) -> bool {
    ns.run(move || {
        let (file, want) = match addr {
            SocketAddr::V4(a) => (
                proto.to_owned(),
                // /proc/net shows the address as the u32 in host order, in hex.
                format!(
                    "{:08X}:{:04X}",
                    u32::from_ne_bytes(a.ip().octets()),
                    a.port()
                ),
            ),
            SocketAddr::V6(a) => {
                let o = a.ip().octets();
                let words: String = o
                    .chunks(4)
                    .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
                    .collect();
                (format!("{proto}6"), format!("{words}:{:04X}", a.port()))
            }
        };
        // TCP_LISTEN is 0A; an unconnected UDP socket shows TCP_CLOSE, 07.
        let state = if proto == "tcp" { "0A" } else { "07" };
        let table = std::fs::read_to_string(format!("/proc/thread-self/net/{file}"))
            .unwrap_or_else(|e| panic!("read /proc/thread-self/net/{file}: {e}"));
        table.lines().skip(1).any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(1) == Some(&want.as_str()) && cols.get(3) == Some(&state)
        })
    })
}

/// Waits until a socket of `proto` in `ns` is bound to `addr` (a collector
/// started as a child process is ready to receive).
pub fn bound(ns: &Netns, proto: &'static str, addr: SocketAddr) {
    until(
        &format!("a {proto} socket bound to {addr}"),
        DEADLINE,
        || is_bound(ns, proto, addr),
        |b| *b,
    );
}

/// One scrape of flowd's `/metrics` from inside `ns`; panics unless the
/// status is 200.
pub fn scrape(ns: &Netns, flowd: &Flowd) -> String {
    let (status, text) = ns
        .http_get(flowd.listen, "/metrics")
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(status, 200, "GET /metrics: {text}");
    text
}

/// Scrapes until `name{labels}` reaches `want` (a counter: see [`reaches`]),
/// and returns that scrape's whole text for further exact asserts.
pub fn metric_reaches(
    ns: &Netns,
    flowd: &Flowd,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
) -> String {
    let mut text = String::new();
    until(
        &format!("{name}{labels:?} to reach {want}"),
        DEADLINE,
        || {
            text = scrape(ns, flowd);
            metric(&text, name, labels)
        },
        |v| v.is_some_and(|v| v >= want),
    );
    text
}

/// Bytes written to a TCP socket and not yet acknowledged (SIOCOUTQ).
pub fn unacked_bytes(s: &TcpStream) -> i32 {
    let mut n: i32 = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &raw mut n) };
    assert_eq!(r, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
    n
}

/// Waits until the peer has acknowledged every byte written to `s`: its
/// last ACK has arrived (and crossed any hook on the way in).
pub fn all_acked(s: &TcpStream) {
    until(
        "the peer to acknowledge every byte",
        DEADLINE,
        || unacked_bytes(s),
        |n| *n == 0,
    );
}
