//! `flowd top`: the live view in a terminal. Polls a running flowd's
//! `/api/v1/top` and shows interface rates and the heaviest flows of the
//! last seconds, like iftop, without capturing anything itself.

use std::{
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use flowd_common::{
    DIR_INGRESS,
    proto::{direction_name, ip},
};
use serde_json::Value;

use crate::replay::human_bytes;

#[derive(Debug, Args)]
pub struct TopArgs {
    /// The address flowd serves on (its `listen`).
    #[arg(long, default_value = "127.0.0.1:29391")]
    pub listen: SocketAddr,
    /// The flows' window: the drains of the last S seconds (0 < S <= 10).
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Flows shown (1 to 1000).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Print one view and exit (no screen clearing): for scripts.
    #[arg(long)]
    pub once: bool,
    /// Basic auth as USER:PASSWORD, when flowd's web config requires it
    /// (also from FLOWD_TOP_AUTH).
    #[arg(long)]
    pub auth: Option<String>,
}

/// One GET over plain HTTP/1.0; returns the body of a 200.
fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).with_context(|| {
        format!("cannot connect to flowd at {addr} (is `flowd run` serving there? set --listen)")
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n");
    if let Some(a) = auth {
        req.push_str(&format!(
            "Authorization: Basic {}\r\n",
            base64(a.as_bytes())
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {addr}"))?;
    if raw.first() == Some(&0x15) || raw.first() == Some(&0x16) {
        bail!(
            "{addr} answered with TLS; flowd top speaks plain HTTP (use curl https://{addr}{path})"
        );
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{addr} did not answer with HTTP"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    match status {
        "200" => Ok(body.to_owned()),
        "401" => bail!("{addr} wants basic auth: pass --auth USER:PASSWORD (or FLOWD_TOP_AUTH)"),
        "404" => bail!("{addr} has no {path}: is it a flowd of this version?"),
        _ => bail!("{addr}{path}: HTTP {status}: {}", body.trim()),
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Bits per second with a unit, as link speeds are written.
pub fn human_bits(bps: f64) -> String {
    let units = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
    let mut v = bps;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", units[u])
    } else {
        format!("{v:.2} {}", units[u])
    }
}

fn endpoint(addr: &str, port: u64, proto: u64) -> String {
    let a = if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr.to_owned()
    };
    let proto = u8::try_from(proto).unwrap_or(0);
    if ip::is_icmp(proto) {
        format!("{a} icmp {}/{}", port >> 8, port & 0xff)
    } else if ip::has_ports(proto) {
        format!("{a}:{port}")
    } else {
        a
    }
}

fn proto_name(p: u64) -> String {
    match u8::try_from(p).ok().and_then(ip::name) {
        Some(n) => n.into(),
        None => p.to_string(),
    }
}

fn is_icmp(p: u64) -> bool {
    u8::try_from(p).is_ok_and(ip::is_icmp)
}

/// The text of one view. `prev`: the previous answer and when it came, for
/// interface rates.
pub fn render(addr: SocketAddr, now: &Value, prev: Option<(&Value, f64)>) -> String {
    let mut o = String::new();
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    o.push_str(&format!(
        "flowd top  {addr}  {}  flows in the table: {}\n\n",
        now["time"].as_str().unwrap_or(""),
        n(now, "flows_active")
    ));
    o.push_str(&format!(
        "{:<16} {:>14} {:>11} {:>14} {:>11} {:>14} {:>14}\n",
        "DEVICE", "RX", "RX pkt/s", "TX", "TX pkt/s", "RX total", "TX total"
    ));
    for i in now["interfaces"].as_array().into_iter().flatten() {
        let dev = i["device"].as_str().unwrap_or("?");
        let rates = prev.and_then(|(p, dt)| {
            let old = p["interfaces"]
                .as_array()?
                .iter()
                .find(|x| x["device"] == i["device"])?;
            let d = |k: &str| n(i, k).saturating_sub(n(old, k)) as f64 / dt;
            Some((
                d("receive_bytes") * 8.0,
                d("receive_packets"),
                d("transmit_bytes") * 8.0,
                d("transmit_packets"),
            ))
        });
        let (rx, rxp, tx, txp) = match rates {
            Some((a, b, c, d)) => (
                human_bits(a),
                format!("{b:.0}"),
                human_bits(c),
                format!("{d:.0}"),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        o.push_str(&format!(
            "{dev:<16} {rx:>14} {rxp:>11} {tx:>14} {txp:>11} {:>14} {:>14}\n",
            human_bytes(n(i, "receive_bytes")),
            human_bytes(n(i, "transmit_bytes")),
        ));
    }
    let secs = now["seconds"].as_f64().unwrap_or(0.0);
    o.push_str(&format!(
        "\nheaviest flows of the last {secs:.1} s ({} drains)\n",
        n(now, "drains")
    ));
    o.push_str(&format!(
        "{:>14} {:>9} {:>9} {:>10} {:<12} {:<3} {:<6} {:<28} {}\n",
        "RATE", "PKT/S", "PACKETS", "BYTES", "DEVICE", "DIR", "PROTO", "SOURCE", "DESTINATION"
    ));
    for f in now["flows"].as_array().into_iter().flatten() {
        let proto = n(f, "proto");
        o.push_str(&format!(
            "{:>14} {:>9.0} {:>9} {:>10} {:<12} {:<3} {:<6} {:<28} {}\n",
            human_bits(f["bits_per_second"].as_f64().unwrap_or(0.0)),
            f["packets_per_second"].as_f64().unwrap_or(0.0),
            n(f, "packets"),
            n(f, "bytes"),
            f["device"].as_str().unwrap_or("?"),
            if f["direction"] == direction_name(DIR_INGRESS) {
                "in"
            } else {
                "out"
            },
            proto_name(proto),
            endpoint(
                f["src"].as_str().unwrap_or("?"),
                if is_icmp(proto) { 0 } else { n(f, "sport") },
                if is_icmp(proto) { 0 } else { proto }
            ),
            endpoint(f["dst"].as_str().unwrap_or("?"), n(f, "dport"), proto),
        ));
    }
    if n(now, "max_flows_per_drain") > n(now, "flows_kept_per_drain") {
        o.push_str(&format!(
            "\n(a drain had {} flows; the view merges the {} heaviest of each drain)\n",
            n(now, "max_flows_per_drain"),
            n(now, "flows_kept_per_drain")
        ));
    }
    o
}

pub fn run(a: &TopArgs) -> Result<()> {
    if !(a.seconds > 0.0 && a.seconds <= crate::export::recent::HISTORY.as_secs_f64()) {
        bail!("--seconds {}: accepted: more than 0, at most 10", a.seconds);
    }
    if !(1..=1000).contains(&a.limit) {
        bail!("--limit {}: accepted: 1 to 1000", a.limit);
    }
    if !(a.interval >= 0.1 && a.interval <= 3600.0) {
        bail!("--interval {}: accepted: 0.1 to 3600 seconds", a.interval);
    }
    let path = format!("/api/v1/top?seconds={}&limit={}", a.seconds, a.limit);
    // The environment keeps the password out of `ps`.
    let auth = a
        .auth
        .clone()
        .or_else(|| std::env::var("FLOWD_TOP_AUTH").ok());
    let mut prev: Option<(Value, Instant)> = None;
    loop {
        let body = get(a.listen, &path, auth.as_deref())?;
        let now: Value = serde_json::from_str(&body)
            .with_context(|| format!("{}{path} did not answer with JSON", a.listen))?;
        let t = Instant::now();
        let view = render(
            a.listen,
            &now,
            prev.as_ref()
                .map(|(p, at)| (p, t.duration_since(*at).as_secs_f64())),
        );
        let mut out = io::stdout().lock();
        if a.once {
            out.write_all(view.as_bytes())?;
            return Ok(());
        }
        // Home, clear, then the view.
        write!(out, "\x1b[H\x1b[2J{view}")?;
        out.flush()?;
        prev = Some((now, t));
        std::thread::sleep(Duration::from_secs_f64(a.interval));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_units() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(human_bits(999.0), "999 bit/s");
        assert_eq!(human_bits(1_250_000.0), "1.25 Mbit/s");
    }

    #[test]
    fn renders_rates_from_two_answers() {
        let a: Value = serde_json::json!({
            "time": "t", "seconds": 2.0, "drains": 2, "flows_active": 1,
            "max_flows_per_drain": 1, "flows_kept_per_drain": 1000,
            "interfaces": [{"device": "eth0", "receive_bytes": 1000, "receive_packets": 10,
                            "transmit_bytes": 0, "transmit_packets": 0}],
            "flows": [{"device": "eth0", "direction": "ingress", "src": "198.18.0.1", "dst": "fd00::2",
                       "sport": 5, "dport": 53, "proto": 17, "packets": 4, "bytes": 400,
                       "packets_per_second": 2.0, "bits_per_second": 1600.0}],
        });
        let mut b = a.clone();
        b["interfaces"][0]["receive_bytes"] = 126_000.into();
        b["interfaces"][0]["receive_packets"] = 1010.into();
        let v = render("127.0.0.1:29391".parse().unwrap(), &b, Some((&a, 1.0)));
        assert!(v.contains("1.00 Mbit/s"), "{v}");
        assert!(v.contains(" 1000 "), "{v}");
        assert!(v.contains("198.18.0.1:5"), "{v}");
        assert!(v.contains("[fd00::2]:53"), "{v}");
        assert!(v.contains("1.60 kbit/s"), "{v}");
    }
}
