//! Security signals from the application layer (issue 12): clients whose
//! HTTP requests, DNS queries and TLS handshakes look like malware, a
//! tunnel or a downgrade.
//!
//! | signal | an event shows it when |
//! |---|---|
//! | `dns_nxdomain` | a DNS response says NXDOMAIN (generated domains, DGA malware) |
//! | `dns_tunnel` | the query name is longer than [`TUNNEL_NAME_LEN`], or its labels left of the last two are at least [`TUNNEL_SUB_LEN`] characters with a Shannon entropy of at least [`TUNNEL_ENTROPY`] bits per character (names under `.arpa` excepted: IPv6 reverse names are 32 hex digits) |
//! | `http_to_tls_host` | a plain-HTTP request names (Host) a server seen in a TLS SNI before, and was not redirected (3xx: the usual upgrade to HTTPS) |
//! | `tls_unusual_port` | a ClientHello goes to a port not in [`TLS_PORTS`] (443 and the other implicit-TLS ports) |
//! | `http_on_443` | a plain-HTTP request goes to port 443 |
//!
//! Every event that shows a signal is counted; the client (the request's
//! source) becomes a suspect for that signal when more than the signal's
//! threshold ([`THRESHOLDS`]) of its events show it within one window of
//! [`WINDOW_NS`]; it stays one until [`SUSPECT_TTL_NS`] after its last such
//! event. The windows are fixed, as the scan detector's.
//!
//! Memory is bounded: [`MAX_CLIENTS`] clients counted per window (at the
//! bound the quietest tenth is dropped), [`MAX_TLS_HOSTS`] SNI names (the
//! oldest tenth dropped) and [`MAX_SUSPECTS`] suspects (a new one beyond is
//! not kept); each drop is counted. Names from the network live only here,
//! never in a label.

use std::collections::BTreeMap;

use flowd_common::FlowKey;
use hashbrown::HashMap;
use tracing::warn;

use crate::{
    l7::{L7Event, event::Detail},
    record::addr,
    scan::Suspect,
};

const SEC: u64 = 1_000_000_000;

/// The signals, in label order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    DnsNxdomain,
    DnsTunnel,
    HttpToTlsHost,
    TlsUnusualPort,
    HttpOn443,
}

impl Signal {
    pub const ALL: [Signal; 5] = [
        Self::DnsNxdomain,
        Self::DnsTunnel,
        Self::HttpToTlsHost,
        Self::TlsUnusualPort,
        Self::HttpOn443,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DnsNxdomain => "dns_nxdomain",
            Self::DnsTunnel => "dns_tunnel",
            Self::HttpToTlsHost => "http_to_tls_host",
            Self::TlsUnusualPort => "tls_unusual_port",
            Self::HttpOn443 => "http_on_443",
        }
    }
}

/// Events showing a signal that one client may have in a window without
/// becoming a suspect, by [`Signal`] (in [`Signal::ALL`] order).
pub const THRESHOLDS: [u64; 5] = [20, 10, 10, 10, 0];
/// The counting window.
pub const WINDOW_NS: u64 = 60 * SEC;
/// How long a suspect is kept after its last event showing the signal.
pub const SUSPECT_TTL_NS: u64 = 600 * SEC;
/// A query name longer than this is a tunnel mark by itself.
pub const TUNNEL_NAME_LEN: usize = 100;
/// Characters (dots left out) left of the last two labels for the entropy test.
pub const TUNNEL_SUB_LEN: usize = 32;
/// Bits per character of those characters (a 36-letter alphabet gives at most 5.17).
pub const TUNNEL_ENTROPY: f64 = 3.5;
/// Ports where TLS from the first byte is expected (IANA's implicit-TLS
/// services: https, submissions, nntps, ldaps, domain-s, ftps-data, ftps,
/// telnets, imaps, ircs, pop3s, sips, ircs-u; and 8443, the usual
/// alternative HTTPS port).
pub const TLS_PORTS: [u16; 14] = [
    443, 465, 563, 636, 853, 989, 990, 992, 993, 994, 995, 5061, 6697, 8443,
];
/// Clients counted in one window.
pub const MAX_CLIENTS: usize = 10_000;
/// SNI names remembered for `http_to_tls_host`.
pub const MAX_TLS_HOSTS: usize = 10_000;
/// Suspects kept at once.
pub const MAX_SUSPECTS: usize = 1_000;
/// The longest `detail` a suspect carries (network data, cut).
const MAX_DETAIL: usize = 128;

/// Where the detector drops state at its bounds (label `table`).
pub const DROP_TABLES: [&str; 3] = ["clients", "tls_hosts", "suspects"];

/// Bounds and thresholds; the defaults are the constants above (tests
/// use small ones).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SignalConfig {
    pub thresholds: [u64; 5],
    pub window_ns: u64,
    pub suspect_ttl_ns: u64,
    pub max_clients: usize,
    pub max_tls_hosts: usize,
    pub max_suspects: usize,
}

impl Default for SignalConfig {
    fn default() -> Self {
        Self {
            thresholds: THRESHOLDS,
            window_ns: WINDOW_NS,
            suspect_ttl_ns: SUSPECT_TTL_NS,
            max_clients: MAX_CLIENTS,
            max_tls_hosts: MAX_TLS_HOSTS,
            max_suspects: MAX_SUSPECTS,
        }
    }
}

/// What the metrics show of the detector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalSnapshot {
    /// Events that showed each signal, since start.
    pub events: [u64; 5],
    /// Suspects now, by signal.
    pub suspects: [u64; 5],
    /// Clients flagged since start, by signal.
    pub flagged: [u64; 5],
    /// Entries dropped at the bounds, by [`DROP_TABLES`].
    pub dropped: [u64; 3],
}

#[derive(Debug, Default)]
struct Client {
    counts: [u64; 5],
    last_ns: u64,
}

/// The detector, fed with every drain's events.
#[derive(Debug)]
pub struct L7Signals {
    cfg: SignalConfig,
    window_start_ns: u64,
    clients: HashMap<[u8; 16], Client>,
    /// SNI name (lower case) -> last seen.
    tls_hosts: HashMap<String, u64>,
    suspects: BTreeMap<([u8; 16], Signal), Suspect>,
    snap: SignalSnapshot,
}

impl Default for L7Signals {
    fn default() -> Self {
        Self::new(SignalConfig::default())
    }
}

impl L7Signals {
    pub fn new(cfg: SignalConfig) -> Self {
        Self {
            cfg,
            window_start_ns: 0,
            clients: HashMap::new(),
            tls_hosts: HashMap::new(),
            suspects: BTreeMap::new(),
            snap: SignalSnapshot::default(),
        }
    }

    pub fn snapshot(&self) -> SignalSnapshot {
        let mut s = self.snap;
        s.suspects = [0; 5];
        for (_, sig) in self.suspects.keys() {
            s.suspects[*sig as usize] += 1;
        }
        s
    }

    /// Current suspects: by signal, then most events first.
    pub fn suspects(&self) -> Vec<Suspect> {
        let mut v: Vec<(Signal, Suspect)> = self
            .suspects
            .iter()
            .map(|((_, sig), s)| (*sig, s.clone()))
            .collect();
        v.sort_by(|(a, x), (b, y)| a.cmp(b).then(y.attempts.cmp(&x.attempts)));
        v.into_iter().map(|(_, s)| s).collect()
    }

    /// Looks at one drain's events; `now_ns` (wall clock) moves the window
    /// and ages the suspects.
    pub fn observe(&mut self, events: &[L7Event], now_ns: u64) {
        if now_ns.saturating_sub(self.window_start_ns) >= self.cfg.window_ns {
            self.window_start_ns = now_ns;
            self.clients.clear();
        }
        let ttl = self.cfg.suspect_ttl_ns;
        self.suspects
            .retain(|_, s| now_ns.saturating_sub(s.last_seen_ns) < ttl);
        for e in events {
            self.event(e, now_ns);
        }
    }

    fn event(&mut self, e: &L7Event, now_ns: u64) {
        let k = &e.key;
        match &e.detail {
            Detail::Dns(d) => {
                if d.rcode == Some(3) {
                    self.show(k, Signal::DnsNxdomain, d.qname.as_deref(), now_ns);
                }
                if let Some(q) = &d.qname
                    && tunnel_name(q)
                {
                    self.show(k, Signal::DnsTunnel, Some(q), now_ns);
                }
            }
            Detail::Http(h) => {
                if k.dport == 443 {
                    self.show(k, Signal::HttpOn443, h.host.as_deref(), now_ns);
                }
                let redirected = h.status.is_some_and(|s| (300..400).contains(&s));
                if let Some(host) = h.host.as_deref().map(host_name)
                    && !redirected
                    && self.tls_hosts.contains_key(&host)
                {
                    self.show(k, Signal::HttpToTlsHost, Some(&host), now_ns);
                }
            }
            Detail::Tls(t) => {
                if let Some(sni) = &t.sni {
                    self.remember_tls_host(sni, now_ns);
                }
                if !TLS_PORTS.contains(&k.dport) {
                    let server = t.sni.clone().unwrap_or_else(|| addr(&k.dst).to_string());
                    let detail = format!("{server} port {}", k.dport);
                    self.show(k, Signal::TlsUnusualPort, Some(&detail), now_ns);
                }
            }
        }
    }

    fn remember_tls_host(&mut self, sni: &str, now_ns: u64) {
        let name = host_name(sni);
        if let Some(t) = self.tls_hosts.get_mut(&name) {
            *t = now_ns;
            return;
        }
        if self.tls_hosts.len() >= self.cfg.max_tls_hosts {
            let mut v: Vec<(u64, String)> = self
                .tls_hosts
                .iter()
                .map(|(n, t)| (*t, n.clone()))
                .collect();
            v.sort();
            let n = drop_count(self.tls_hosts.len(), self.cfg.max_tls_hosts);
            for (_, name) in v.into_iter().take(n) {
                self.tls_hosts.remove(&name);
            }
            self.snap.dropped[1] += n as u64;
        }
        self.tls_hosts.insert(name, now_ns);
    }

    /// Counts one event of `key`'s client showing `sig`, and flags the
    /// client when the window's count crosses the threshold.
    fn show(&mut self, key: &FlowKey, sig: Signal, detail: Option<&str>, now_ns: u64) {
        let i = sig as usize;
        self.snap.events[i] += 1;
        if !self.clients.contains_key(&key.src) && self.clients.len() >= self.cfg.max_clients {
            self.evict_clients();
        }
        let c = self.clients.entry(key.src).or_default();
        c.counts[i] += 1;
        c.last_ns = now_ns;
        let n = c.counts[i];
        if n <= self.cfg.thresholds[i] {
            return;
        }
        let detail = detail.map(|d| cut(d, MAX_DETAIL));
        if let Some(s) = self.suspects.get_mut(&(key.src, sig)) {
            s.attempts = s.attempts.max(n);
            s.last_seen_ns = now_ns;
            if detail.is_some() {
                s.detail = detail;
            }
            return;
        }
        if self.suspects.len() >= self.cfg.max_suspects {
            self.snap.dropped[2] += 1;
            return;
        }
        let src = addr(&key.src).to_string();
        warn!(
            src,
            signal = sig.as_str(),
            events = n,
            "L7 suspect: events over the signal's threshold"
        );
        self.snap.flagged[i] += 1;
        self.suspects.insert(
            (key.src, sig),
            Suspect {
                src,
                ports: 0,
                hosts: 0,
                attempts: n,
                first_flagged_ns: now_ns,
                last_seen_ns: now_ns,
                signal: sig.as_str(),
                detail,
            },
        );
    }

    /// Drops the quietest tenth of the clients (fewest events, then oldest).
    fn evict_clients(&mut self) {
        let mut v: Vec<(u64, u64, [u8; 16])> = self
            .clients
            .iter()
            .map(|(a, c)| (c.counts.iter().sum(), c.last_ns, *a))
            .collect();
        v.sort();
        let n = drop_count(self.clients.len(), self.cfg.max_clients);
        for (_, _, a) in v.into_iter().take(n) {
            self.clients.remove(&a);
        }
        self.snap.dropped[0] += n as u64;
    }
}

/// Entries to drop from a table of `len` at bound `max`: down to nine
/// tenths of the bound (at least one), so eviction is rare.
fn drop_count(len: usize, max: usize) -> usize {
    (len + 1).saturating_sub(max - max / 10).max(1).min(len)
}

/// A Host header or SNI as a name: lower case, no port, no trailing dot.
pub fn host_name(h: &str) -> String {
    let h = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        h.split(':').next().unwrap_or(h)
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// Shannon entropy of `s`'s bytes, in bits per byte (ASCII case folded).
pub fn entropy(s: &[u8]) -> f64 {
    entropy_of(s.iter().copied())
}

fn entropy_of(bytes: impl Iterator<Item = u8>) -> f64 {
    let mut n = [0u32; 256];
    let mut len = 0u32;
    for b in bytes {
        n[usize::from(b.to_ascii_lowercase())] += 1;
        len += 1;
    }
    let len = f64::from(len);
    n.iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / len;
            -p * p.log2()
        })
        .sum()
}

/// Whether a query name looks like data carried in DNS (see the table
/// above). No allocation: it runs on every query.
pub fn tunnel_name(qname: &str) -> bool {
    let q = qname.trim_end_matches('.').as_bytes();
    let arpa = q.len() >= 4
        && q[q.len() - 4..].eq_ignore_ascii_case(b"arpa")
        && (q.len() == 4 || q[q.len() - 5] == b'.');
    if arpa {
        return false;
    }
    if q.len() > TUNNEL_NAME_LEN {
        return true;
    }
    // The labels left of the last two.
    let Some(last) = q.iter().rposition(|b| *b == b'.') else {
        return false;
    };
    let Some(second) = q[..last].iter().rposition(|b| *b == b'.') else {
        return false;
    };
    let sub = q[..second].iter().copied().filter(|b| *b != b'.');
    sub.clone().count() >= TUNNEL_SUB_LEN && entropy_of(sub) >= TUNNEL_ENTROPY
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
#[path = "l7signals_tests.rs"]
pub(crate) mod tests;
