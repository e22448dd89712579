//! The exporter against a real Prometheus (Debian's `prometheus`), and the
//! series budget against 100,000 distinct flows.

use std::{
    fs::File,
    io::Write as _,
    net::{SocketAddr, UdpSocket},
    os::fd::{AsRawFd, FromRawFd},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use flowd_tests::{Flowd, Link, Netns, metric, parse_metrics, send_udp_on, unique_tag};
use serde_json::Value;

/// A Prometheus server started inside a namespace, on its loopback, with
/// its own storage directory; killed by PID and its directory removed on drop.
pub(crate) struct Prometheus {
    child: Option<Child>,
    dir: PathBuf,
    listen: SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus in `ns`, scraping `target` every second as job `flowd`.
    pub(crate) fn start(ns: &Netns, target: SocketAddr) -> Self {
        Self::start_with_rules(ns, target, None)
    }

    /// Like [`Prometheus::start`], evaluating the rules in `rules` every second.
    pub(crate) fn start_with_rules(ns: &Netns, target: SocketAddr, rules: Option<&str>) -> Self {
        let dir = std::env::temp_dir().join(format!("flowd-prom-{}", unique_tag()));
        std::fs::create_dir_all(&dir).expect("create the Prometheus directory");
        let config = dir.join("prometheus.yml");
        let rule_files = match rules {
            Some(text) => {
                let path = dir.join("rules.yml");
                std::fs::write(&path, text).unwrap();
                format!("rule_files:\n  - {}\n", path.display())
            }
            None => String::new(),
        };
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 {rule_files}scrape_configs:\n  - job_name: flowd\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let listen: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        let log = File::create(dir.join("prometheus.log")).unwrap();
        // `ip netns exec` execs the program: the child's PID is Prometheus'.
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus (Debian package `prometheus`)");
        let mut p = Self {
            child: Some(child),
            dir,
            listen,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(st))) = p.child.as_mut().map(Child::try_wait) {
                panic!("prometheus exited early ({st}); log:\n{}", p.log());
            }
            if let Ok((200, _)) = ns.http_get(listen, "/-/ready") {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 30 s; log:\n{}",
                p.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query, at `time` (Unix seconds) or now: (labels, value) per series.
    pub(crate) fn query(&self, ns: &Netns, promql: &str, time: Option<f64>) -> Vec<(Value, f64)> {
        let mut path = format!("/api/v1/query?query={}", urlencode(promql));
        if let Some(t) = time {
            path.push_str(&format!("&time={t:.3}"));
        }
        let (status, body) = ns.http_get(self.listen, &path).expect("query prometheus");
        assert_eq!(status, 200, "{promql}: {body}");
        let v: Value = serde_json::from_str(&body).expect("query JSON");
        v["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{promql}: {body}"))
            .iter()
            .map(|r| {
                let val = r["value"][1].as_str().unwrap().parse().unwrap();
                (r["metric"].clone(), val)
            })
            .collect()
    }

    /// The value of a query that returns at most one series.
    pub(crate) fn value(&self, ns: &Netns, promql: &str, time: Option<f64>) -> Option<f64> {
        let r = self.query(ns, promql, time);
        assert!(r.len() <= 1, "{promql}: {r:?}");
        r.first().map(|(_, v)| *v)
    }

    /// Raw samples (Unix seconds, value) of a range selector.
    fn samples(&self, ns: &Netns, selector: &str) -> Vec<(f64, f64)> {
        let path = format!("/api/v1/query?query={}", urlencode(selector));
        let (status, body) = ns.http_get(self.listen, &path).expect("query prometheus");
        assert_eq!(status, 200, "{selector}: {body}");
        let v: Value = serde_json::from_str(&body).expect("query JSON");
        let Some(series) = v["data"]["result"].as_array().and_then(|r| r.first()) else {
            return Vec::new();
        };
        series["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_f64().unwrap(),
                    p[1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    /// Polls `promql` until `done` holds for its value (at most `secs` seconds).
    pub(crate) fn wait_for(
        &self,
        ns: &Netns,
        promql: &str,
        secs: u64,
        done: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.value(ns, promql, None);
            if let Some(v) = v.filter(|v| done(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{promql} = {v:?} after {secs} s; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            flowd_tests::stop_child(&mut child, 10);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Pipes an exposition into `promtool check metrics`.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package `prometheus`)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 3000 UDP datagrams of 458 payload bytes (500-byte frames) from A to B,
/// scraped every second by Prometheus: the exact totals, an exact rate()
/// over a window that holds all of them, the groups and the top flow.
#[test]
fn prometheus_scrapes_exact_totals_rate_and_top_flow() {
    const COUNT: usize = 3000;
    const PAYLOAD: usize = 458;
    const FRAME: u64 = 14 + 20 + 8 + PAYLOAD as u64;

    let link = Link::new();
    let flowd = Flowd::start(
        &link.b,
        &["--iface", &link.if_b, "--drain-interval-ms", "100"],
    );
    let prom = Prometheus::start(&link.b, flowd.listen);
    let ns = &link.b;
    let dev = format!("device=\"{}\"", link.if_b);
    let rx_packets = format!("flowd_receive_packets_total{{{dev}}}");

    // Samples of the untouched counter first, so the range below starts at 0.
    prom.wait_for(ns, &format!("count_over_time({rx_packets}[1m])"), 30, |n| {
        n >= 2.0
    });

    let dst: SocketAddr = format!("{}:9999", link.ip_b).parse().unwrap();
    let _rx: UdpSocket = link.b.run(move || UdpSocket::bind(dst).unwrap());
    let src: SocketAddr = format!("{}:40000", link.ip_a).parse().unwrap();
    let tx: UdpSocket = link.a.run(move || UdpSocket::bind(src).unwrap());
    // Spread over about 1.5 s, so the rate is seen across several scrapes.
    for _ in 0..15 {
        send_udp_on(&tx, dst, COUNT / 15, PAYLOAD);
        thread::sleep(Duration::from_millis(100));
    }

    prom.wait_for(ns, &rx_packets, 20, |v| v == COUNT as f64);
    let q = |promql: &str, t: Option<f64>| prom.value(ns, promql, t);
    assert_eq!(
        q(&format!("flowd_receive_bytes_total{{{dev}}}"), None),
        Some((COUNT as u64 * FRAME) as f64)
    );
    assert_eq!(
        q(&format!("flowd_transmit_packets_total{{{dev}}}"), None),
        Some(0.0)
    );
    assert_eq!(q("up{job=\"flowd\"}", None), Some(1.0));

    // Two more scrapes, then rate() at the last sample over a window that
    // reaches back before the traffic: no extrapolation, so exactly the count.
    let scrapes = format!("count_over_time({rx_packets}[2m])");
    let n0 = prom.value(ns, &scrapes, None).unwrap();
    prom.wait_for(ns, &scrapes, 30, |n| n >= n0 + 2.0);
    let samples = prom.samples(ns, &format!("{rx_packets}[2m]"));
    let (first, last) = (samples[0], *samples.last().unwrap());
    assert_eq!(first.1, 0.0, "{samples:?}");
    assert_eq!(last.1, COUNT as f64, "{samples:?}");
    assert!(
        samples.iter().any(|(_, v)| *v > 0.0 && *v < COUNT as f64),
        "no scrape saw the traffic under way: {samples:?}"
    );
    let t = Some(last.0);
    let rate = q(&format!("rate({rx_packets}[2m])"), t).unwrap();
    assert!(rate > 0.0);
    assert!(
        (rate * 120.0 - COUNT as f64).abs() < 1e-6,
        "rate {rate}/s over 120 s is not {COUNT}"
    );
    assert_eq!(
        q(&format!("increase({rx_packets}[2m])"), t),
        Some(COUNT as f64)
    );
    let byte_rate = q(&format!("rate(flowd_receive_bytes_total{{{dev}}}[2m])"), t).unwrap();
    assert!((byte_rate * 120.0 - (COUNT as u64 * FRAME) as f64).abs() < 1e-3);
    // Over 2 s windows the peak is the sending rate (about 2000/s), far above
    // the 25/s average of the long window; loose bounds, the host may be busy.
    let peak = q(
        &format!("max_over_time(rate({rx_packets}[2s])[1m:500ms])"),
        t,
    )
    .unwrap();
    assert!(peak > 100.0 && peak <= COUNT as f64, "peak rate {peak}/s");

    // Groups: UDP, port 9999 (no service), from the benchmarking range.
    let rx = format!("{dev},direction=\"receive\"");
    assert_eq!(
        q(
            &format!("flowd_proto_packets_total{{{rx},proto=\"udp\"}}"),
            None
        ),
        Some(COUNT as f64)
    );
    assert_eq!(
        q(
            &format!("flowd_service_bytes_total{{{rx},service=\"other\"}}"),
            None
        ),
        Some((COUNT as u64 * FRAME) as f64)
    );
    assert_eq!(
        q(
            &format!("flowd_peer_packets_total{{{rx},peer=\"benchmark\"}}"),
            None
        ),
        Some(COUNT as f64)
    );

    // The heaviest flow is a top-flows series with its window totals.
    let top = prom.query(
        ns,
        &format!("topk(1, flowd_top_flow_window_bytes{{{rx},src!=\"other\"}})"),
        None,
    );
    assert_eq!(top.len(), 1, "{top:?}");
    let (labels, bytes) = &top[0];
    assert_eq!(*bytes, (COUNT as u64 * FRAME) as f64);
    for (k, v) in [
        ("src", link.ip_a.as_str()),
        ("dst", link.ip_b.as_str()),
        ("sport", "40000"),
        ("dport", "9999"),
        ("proto", "udp"),
    ] {
        assert_eq!(labels[k].as_str(), Some(v), "{labels}");
    }
    let flow = format!(
        "{rx},src=\"{}\",dst=\"{}\",sport=\"40000\",dport=\"9999\",proto=\"udp\"",
        link.ip_a, link.ip_b
    );
    assert_eq!(
        q(&format!("flowd_top_flow_window_packets{{{flow}}}"), None),
        Some(COUNT as f64)
    );

    // flowd counts its series as Prometheus does.
    assert_eq!(
        q(
            "scrape_samples_scraped{job=\"flowd\"} - flowd_scrape_series",
            t
        ),
        Some(0.0)
    );
    assert!(q("process_resident_memory_bytes{job=\"flowd\"}", None).unwrap() > 0.0);

    let (status, text) = link.b.http_get(flowd.listen, "/metrics").unwrap();
    assert_eq!(status, 200);
    promtool_check(&text);
}

/// A minimal Ethernet/IPv4/UDP frame (UDP checksum 0: none).
fn udp_frame(
    mac_src: [u8; 6],
    mac_dst: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: usize,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42 + payload);
    f.extend_from_slice(&mac_dst);
    f.extend_from_slice(&mac_src);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&(8 + payload as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(f.len() + payload, 0x5a);
    f
}

fn mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (b, part) in m.iter_mut().zip(s.split(':')) {
        *b = u8::from_str_radix(part, 16).unwrap();
    }
    m
}

/// Writes frames onto `ifc` in namespace `ns` through an AF_PACKET socket.
pub(crate) fn send_frames(ns: &Netns, ifc: &str, frames: Vec<Vec<u8>>) {
    let ifc = std::ffi::CString::new(ifc).unwrap();
    ns.run(move || {
        // SAFETY: plain libc calls on a socket this closure owns and closes.
        unsafe {
            let ifindex = libc::if_nametoindex(ifc.as_ptr());
            assert!(ifindex > 0, "if_nametoindex");
            // Protocol 0: the socket sends and receives nothing back.
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
            let sock = File::from(std::os::fd::OwnedFd::from_raw_fd(fd));
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            sll.sll_halen = 6;
            for f in &frames {
                sll.sll_addr[..6].copy_from_slice(&f[..6]);
                loop {
                    let r = libc::sendto(
                        sock.as_raw_fd(),
                        f.as_ptr().cast(),
                        f.len(),
                        0,
                        (&raw const sll).cast(),
                        size_of::<libc::sockaddr_ll>() as u32,
                    );
                    if r == f.len() as isize {
                        break;
                    }
                    let e = std::io::Error::last_os_error();
                    assert_eq!(e.raw_os_error(), Some(libc::ENOBUFS), "sendto: {e}");
                    thread::sleep(Duration::from_micros(200));
                }
            }
        }
    });
}

/// 100,000 distinct UDP flows (50,000 source ports to two destination
/// ports) through the veth: the exposition stays within the default budget
/// of 10,000 series, shows the K = 100 top flows, and the folded series
/// account for every other flow in the window.
#[test]
fn cardinality_100k_flows_stay_within_the_series_budget() {
    const FLOWS: usize = 100_000;
    const BUDGET: usize = 10_000;
    const K: usize = 100;

    let link = Link::new();
    let flowd = Flowd::start(
        &link.b,
        &[
            "--iface",
            &link.if_b,
            "--drain-interval-ms",
            "100",
            "--flow-capacity",
            "262144",
        ],
    );
    // Listeners on both ports, so B answers with no ICMP port-unreachable.
    let ip_b: std::net::Ipv4Addr = link.ip_b.parse().unwrap();
    let _listeners: Vec<UdpSocket> = [9000u16, 9001]
        .into_iter()
        .map(|p| link.b.run(move || UdpSocket::bind((ip_b, p)).unwrap()))
        .collect();
    let ip_a: std::net::Ipv4Addr = link.ip_a.parse().unwrap();
    let (mac_a, mac_b) = (mac(&link.mac_a), mac(&link.mac_b));
    let frames: Vec<Vec<u8>> = (0..FLOWS)
        .map(|i| {
            let sport = 10_000 + (i / 2) as u16;
            let dport = 9000 + (i % 2) as u16;
            udp_frame(mac_a, mac_b, ip_a.octets(), ip_b.octets(), sport, dport, 18)
        })
        .collect();
    let started = Instant::now();
    send_frames(&link.a, &link.if_a, frames);
    eprintln!("{FLOWS} frames sent in {:?}", started.elapsed());

    // Every flow drained into the window.
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (status, text) = link.b.http_get(flowd.listen, "/metrics").unwrap();
        assert_eq!(status, 200);
        if metric(&text, "flowd_top_window_flows", &[]) == Some(FLOWS as f64) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "window flows: {:?}\n{}",
            metric(&text, "flowd_top_window_flows", &[]),
            flowd.log_text()
        );
        thread::sleep(Duration::from_millis(200));
    };
    let dev = [("device", link.if_b.as_str())];
    assert_eq!(
        metric(&text, "flowd_receive_packets_total", &dev),
        Some(FLOWS as f64)
    );
    let samples = parse_metrics(&text);
    let n = samples.len();
    assert!(n <= BUDGET, "{n} series in one scrape");
    assert_eq!(metric(&text, "flowd_scrape_series", &[]), Some(n as f64));
    let top_rx = |name: &str| -> Vec<f64> {
        samples
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")) && k.contains("\"receive\""))
            .map(|(_, v)| *v)
            .collect()
    };
    let bytes = top_rx("flowd_top_flow_window_bytes");
    let packets = top_rx("flowd_top_flow_window_packets");
    // K flows, one packet of 60 bytes each, and `other` with the rest.
    assert_eq!(bytes.len(), K + 1, "{text}");
    assert_eq!(packets.iter().sum::<f64>(), FLOWS as f64);
    let other = [
        ("direction", "receive"),
        ("src", "other"),
        ("dport", "other"),
    ];
    assert_eq!(
        metric(&text, "flowd_top_flow_window_packets", &other),
        Some((FLOWS - K) as f64)
    );
    assert_eq!(
        metric(&text, "flowd_top_flow_window_bytes", &other),
        Some(60.0 * (FLOWS - K) as f64)
    );
    // Each flow not shown is two series (bytes, packets) folded into `other`.
    let folded = |r: &str| metric(&text, "flowd_scrape_series_folded", &[("reason", r)]);
    assert_eq!(folded("top_k"), Some(2.0 * (FLOWS - K) as f64));
    assert_eq!(folded("budget"), Some(0.0));
    assert!(
        metric(&text, "flowd_series_folded_total", &[("reason", "top_k")]).unwrap()
            >= 2.0 * (FLOWS - K) as f64
    );
    assert_eq!(
        metric(
            &text,
            "flowd_proto_packets_total",
            &[("direction", "receive"), ("proto", "udp")]
        ),
        Some(FLOWS as f64)
    );
    promtool_check(&text);
}
