//! Basic auth under attack: wrong passwords from 200 clients do not slow an
//! authorized scrape, unknown and known users take the same time, and
//! hashes that can never match are refused when the config is checked.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use flowd_tests::{BpfFs, Flowd, Link, flowd_bin};

/// The cost `htpasswd -B` uses by default (about 50 to 100 ms here).
const COST: u32 = 10;

/// A GET with basic auth (HTTP/1.0, one connection); (status, elapsed).
fn get(addr: SocketAddr, path: &str, user_pass: &str) -> std::io::Result<(u16, Duration)> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let cred = base64(user_pass.as_bytes());
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Basic {cred}\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let status = String::from_utf8_lossy(&buf[..buf.len().min(16)])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, t0.elapsed()))
}

fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn median(v: Vec<Duration>) -> Duration {
    percentile(v, 0.5)
}

/// flowd with basic auth for `prometheus` / `scrape-pass`, served plainly.
fn start(link: &Link, fs: &BpfFs, dir: &std::path::Path) -> Flowd {
    let hash = bcrypt::hash("scrape-pass", COST).unwrap();
    let cfg = dir.join("flowd.toml");
    std::fs::write(
        &cfg,
        format!("[web.basic_auth_users]\nprometheus = {hash:?}\n"),
    )
    .unwrap();
    let flowd = Flowd::spawn(
        &link.b,
        &["--iface", &link.if_b, "--config", cfg.to_str().unwrap()],
        &fs.pin_path(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(link.b.http_get(flowd.listen, "/healthz"), Ok((200, _))) {
        assert!(Instant::now() < deadline, "{}", flowd.log_text());
        thread::sleep(Duration::from_millis(100));
    }
    flowd
}

fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn wrong_passwords_from_200_clients_do_not_slow_an_authorized_scrape() {
    const HAMMERS: usize = 200;
    const SCRAPES: usize = 40;
    let link = Link::new();
    let fs = BpfFs::new();
    let tmp = flowd_tests::TempDir::new("flowd-auth");
    let mut flowd = start(&link, &fs, tmp.path());
    let addr = flowd.listen;

    // The scraper's first scrape runs bcrypt once; later ones hit the cache.
    let first = link
        .b
        .run(move || get(addr, "/metrics", "prometheus:scrape-pass"))
        .unwrap();
    assert_eq!(first.0, 200);

    let stop = Arc::new(AtomicBool::new(false));
    // Stops the hammer also when an assertion below fails.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_guard = StopOnDrop(Arc::clone(&stop));
    let answers: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let hammers: Vec<_> = (0..HAMMERS)
        .map(|i| {
            let (stop, answers) = (Arc::clone(&stop), Arc::clone(&answers));
            link.b.spawn(move || {
                let user = if i % 2 == 0 { "prometheus" } else { "mallory" };
                let cred = format!("{user}:guess{i}");
                while !stop.load(Ordering::Relaxed) {
                    let slot = match get(addr, "/metrics", &cred) {
                        Ok((401, _)) => 0,
                        Ok((429, _)) => 1,
                        Ok((s, _)) => panic!("a wrong password got {s}"),
                        Err(_) => 2,
                    };
                    answers[slot].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(2));
    let mut lat = Vec::new();
    let mut most_threads = 0;
    for _ in 0..SCRAPES {
        let (status, d) = link
            .b
            .run(move || get(addr, "/metrics", "prometheus:scrape-pass"))
            .unwrap();
        assert_eq!(status, 200);
        lat.push(d);
        most_threads = most_threads.max(threads(flowd.pid()));
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for h in hammers {
        h.join().unwrap();
    }
    let [denied, busy, failed] = [0, 1, 2].map(|i| answers[i].load(Ordering::Relaxed));
    let (p50, p90) = (percentile(lat.clone(), 0.5), percentile(lat.clone(), 0.9));
    eprintln!(
        "authorized scrape under {HAMMERS} wrong-password clients: p50 {p50:?}, p90 {p90:?}, \
         max {:?}; hammer answers: {denied} x 401, {busy} x 429, {failed} failed; flowd threads at most {most_threads}",
        lat.iter().max().unwrap()
    );
    assert!(p90 < Duration::from_millis(100), "p90 {p90:?} of {lat:?}");
    assert!(
        denied + busy > 1000,
        "the hammer was real: {denied} + {busy}"
    );
    assert!(busy > 0, "the bcrypt pool was full at times");
    assert!(most_threads < 40, "threads stay bounded: {most_threads}");
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
}

#[test]
fn unknown_and_known_users_take_the_same_time() {
    const N: usize = 31;
    let link = Link::new();
    let fs = BpfFs::new();
    let tmp = flowd_tests::TempDir::new("flowd-auth");
    let mut flowd = start(&link, &fs, tmp.path());
    let addr = flowd.listen;
    let (known, unknown) = link.b.run(move || {
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        for i in 0..N {
            // Alternating, so load on the host hits both alike.
            let (s, d) = get(addr, "/metrics", &format!("prometheus:wrong{i}")).unwrap();
            assert_eq!(s, 401);
            known.push(d);
            let (s, d) = get(addr, "/metrics", &format!("nobody{i}:wrong{i}")).unwrap();
            assert_eq!(s, 401);
            unknown.push(d);
        }
        (known, unknown)
    });
    // The lower quartile: each path's own cost (what an attacker who
    // repeats requests learns), little moved by load from parallel tests,
    // which only adds time.
    let q1 = |v: &[Duration]| percentile(v.to_vec(), 0.25);
    let ratio = q1(&unknown).as_secs_f64() / q1(&known).as_secs_f64();
    let (mk, mu) = (median(known.clone()), median(unknown.clone()));
    eprintln!(
        "401 time, known user: p25 {:?}, median {mk:?}; unknown user: p25 {:?}, median {mu:?}; ratio of p25s {ratio:.3}, of medians {:.3}",
        q1(&known),
        q1(&unknown),
        mu.as_secs_f64() / mk.as_secs_f64()
    );
    assert!(
        q1(&known) > Duration::from_millis(5),
        "bcrypt ran for the known user: {known:?}"
    );
    assert!((0.8..=1.2).contains(&ratio), "{known:?} vs {unknown:?}");
    assert_eq!(flowd.stop(), Some(0), "{}", flowd.log_text());
}

#[test]
fn check_config_refuses_hashes_and_names_that_can_never_match() {
    let tmp = flowd_tests::TempDir::new("flowd-auth-cfg");
    let good = bcrypt::hash("p", 4).unwrap();
    let cost99 = good.replacen("$04$", "$99$", 1);
    for (user, hash, says) in [
        ("prom", "$2b$", "is not a bcrypt hash that can match"),
        ("prom", cost99.as_str(), "has cost 99, outside 4 to 31"),
        ("a:b", good.as_str(), "contains ':'"),
        ("", good.as_str(), "the user name is empty"),
        ("prom", "secret", "does not start with $2a$, $2b$ or $2y$"),
    ] {
        let file = tmp.path().join("flowd.toml");
        std::fs::write(
            &file,
            format!("[web.basic_auth_users]\n{user:?} = {hash:?}\n"),
        )
        .unwrap();
        let out = Command::new(flowd_bin())
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{user} = {hash} accepted");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("web.basic_auth_users") && err.contains(says),
            "{user} = {hash}: {err}"
        );
    }
    let file = tmp.path().join("flowd.toml");
    std::fs::write(&file, format!("[web.basic_auth_users]\nprom = {good:?}\n")).unwrap();
    let out = Command::new(flowd_bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
