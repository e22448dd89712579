//! The configuration file (`/etc/flowd/flowd.toml`), its defaults and its
//! validation. Every key is documented in `deploy/flowd.toml`.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use serde::Deserialize;
use thiserror::Error;

use crate::{
    export::{
        aggregate::AggConfig,
        groups::{PeerGroupConfig, ServiceConfig},
    },
    flowtable::TableConfig,
    loader::XdpAttachMode,
    scan::ScanConfig,
};

pub const DEFAULT_PATH: &str = "/etc/flowd/flowd.toml";

/// The largest configuration file read (`check-config /dev/zero` must end).
pub const MAX_BYTES: u64 = 1 << 20;

/// The fastest `interface_speeds` value accepted: 10 Tbit/s.
const MAX_SPEED_BPS: u64 = 10_000_000_000_000;

/// The smallest `ipfix.max_message_bytes` (the error text says 256).
const IPFIX_MIN_MESSAGE: usize = 256;
const _: () = assert!(IPFIX_MIN_MESSAGE >= crate::export::ipfix::MIN_MESSAGE);

#[derive(Debug, Error)]
pub enum ConfigError {
    /// The cause is in the message and not a `source()`, so a report that
    /// walks the chain does not print it twice.
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error(
        "{path}: larger than {MAX_BYTES} bytes (1 MiB); a flowd configuration is a few KiB: is this the right file?"
    )]
    TooLarge { path: String },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: key `{key}`: value {value} is not accepted; accepted: {accepted}")]
    Invalid {
        path: String,
        key: &'static str,
        value: String,
        accepted: &'static str,
    },
}

/// The whole configuration. Missing keys take the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Interface names or glob patterns (`*`, `?`); `!pattern` excludes.
    /// Empty: every interface that is up and not loopback.
    pub interfaces: Vec<String>,
    /// Address of /metrics and the JSON API.
    pub listen: String,
    /// How often the flow maps are drained, in milliseconds (100..=60000).
    pub drain_interval_ms: u64,
    /// Flows per generation map in the kernel (1..=16777216).
    pub flow_capacity: u32,
    /// Drain early once the generation being written holds this percentage
    /// of `flow_capacity` (checked every 20 ms), so a burst of new flows
    /// (a SYN flood, a scan) is drained before the map fills; 0 turns it
    /// off (drain only every `drain_interval_ms`). 0..=100.
    pub drain_at_fill_percent: u32,
    /// `auto` (native, else generic), `native` or `generic`.
    pub xdp_mode: String,
    /// Ended flow records as JSON lines: a file path, `-` for stdout, empty for none.
    pub records: String,
    /// Where maps and links are pinned (a directory in bpffs).
    pub pin_path: String,
    /// Detach the programs on a clean exit (false leaves them counting for an upgrade).
    pub detach_on_exit: bool,
    pub flow_table: FlowTableConfig,
    pub metrics: MetricsConfig,
    pub scan: ScanSettings,
    /// Link speed per interface in bits per second, overriding sysfs (for
    /// virtual links, or a link shaped below its line rate).
    pub interface_speeds: BTreeMap<String, u64>,
    pub web: WebConfig,
    pub ipfix: IpfixSettings,
    pub l7: crate::config_l7::L7Settings,
    pub af_xdp: crate::config_afxdp::AfXdpSettings,
    pub drops: crate::config_drops::DropSettings,
}

/// IPFIX export of ended flows (RFC 7011, UDP).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpfixSettings {
    /// The collector, IP address and port; empty: no IPFIX export.
    pub collector: String,
    /// Observation domain ID in every message header.
    pub observation_domain: u32,
    /// Seconds between template retransmissions (1 to 86400).
    pub template_refresh_s: u64,
    /// Largest message in bytes (MIN_MESSAGE to 65000); keep it under the path MTU.
    pub max_message_bytes: usize,
}

impl Default for IpfixSettings {
    fn default() -> Self {
        Self {
            collector: String::new(),
            observation_domain: 1,
            template_refresh_s: 60,
            max_message_bytes: 1400,
        }
    }
}

/// What `/metrics` exports beyond the interface totals.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// K: flows exported one by one (most bytes in the window), 0 to 100000.
    pub top_flows: usize,
    /// The recent window of the top flows, seconds (1 to 3600).
    pub window_s: u64,
    /// Most flows the window tracks (top_flows to 10000000).
    pub window_max_flows: usize,
    /// Most series one scrape may have (100 to 10000000); beyond, the
    /// lowest-volume groups fold into `other`.
    pub series_budget: usize,
    /// Peer group of addresses no prefix matches.
    pub peer_unmatched: String,
    /// The port map of the `service` label; empty: the built-in map.
    pub services: Vec<ServiceEntry>,
    /// CIDR groups of the `peer` label; empty: the built-in groups.
    pub peer_groups: Vec<PeerGroupEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    pub name: String,
    pub ports: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerGroupEntry {
    pub name: String,
    pub cidrs: Vec<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        let a = AggConfig::default();
        Self {
            top_flows: a.top_flows,
            window_s: a.window.as_secs(),
            window_max_flows: a.window_max_flows,
            series_budget: a.series_budget,
            peer_unmatched: a.peer_unmatched,
            services: Vec::new(),
            peer_groups: Vec::new(),
        }
    }
}

/// Scan detection: failed connection attempts per source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanSettings {
    /// Distinct ports of one host that flag a source (1 to 65535).
    pub ports: usize,
    /// Distinct hosts that flag a source (1 to 1000000).
    pub hosts: usize,
    /// The counting window, seconds (1 to 3600).
    pub window_s: u64,
}

impl Default for ScanSettings {
    fn default() -> Self {
        let d = ScanConfig::default();
        Self {
            ports: d.ports,
            hosts: d.hosts,
            window_s: d.window_ns / SEC,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowTableConfig {
    /// Seconds without a packet before a flow ends (1..=86400).
    pub idle_timeout_s: u64,
    /// Seconds after which a long flow's record ends and a new one starts (1..=86400).
    pub active_timeout_s: u64,
    /// Seconds a closed TCP connection stays before it ends (0..=3600).
    pub tcp_close_grace_s: u64,
    /// Most flows in the table; beyond, the longest-idle are evicted (1..=100000000).
    pub max_flows: u64,
}

/// TLS and basic auth for the HTTP endpoints, in the style of Prometheus'
/// exporter web config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// PEM certificate chain; with `tls_key_file`, serve HTTPS.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// user name -> bcrypt hash; when set, every endpoint but /healthz needs basic auth.
    pub basic_auth_users: BTreeMap<String, String>,
    /// HTTP connections open at once; more are closed when accepted.
    pub max_connections: usize,
    /// Seconds from a request's first byte (or a TLS handshake's) to the
    /// end of its header.
    pub header_read_timeout_s: u64,
    /// Seconds in which no byte moves either way before a connection closes.
    pub idle_timeout_s: u64,
}

impl Default for WebConfig {
    fn default() -> Self {
        let limits = crate::listen::Limits::default();
        Self {
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            basic_auth_users: BTreeMap::new(),
            max_connections: limits.max_connections,
            header_read_timeout_s: limits.header_read_timeout.as_secs(),
            idle_timeout_s: limits.idle_timeout.as_secs(),
        }
    }
}

impl WebConfig {
    /// The HTTP server's connection limits.
    pub fn limits(&self) -> crate::listen::Limits {
        crate::listen::Limits {
            max_connections: self.max_connections,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_s),
            idle_timeout: Duration::from_secs(self.idle_timeout_s),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            listen: "127.0.0.1:29391".into(),
            drain_interval_ms: 1000,
            flow_capacity: flowd_common::DEFAULT_FLOW_CAPACITY,
            drain_at_fill_percent: 50,
            xdp_mode: "auto".into(),
            records: String::new(),
            pin_path: "/sys/fs/bpf/flowd".into(),
            detach_on_exit: true,
            flow_table: FlowTableConfig::default(),
            metrics: MetricsConfig::default(),
            scan: ScanSettings::default(),
            interface_speeds: BTreeMap::new(),
            web: WebConfig::default(),
            ipfix: IpfixSettings::default(),
            l7: crate::config_l7::L7Settings::default(),
            af_xdp: crate::config_afxdp::AfXdpSettings::default(),
            drops: crate::config_drops::DropSettings::default(),
        }
    }
}

impl Default for FlowTableConfig {
    fn default() -> Self {
        let t = TableConfig::default();
        Self {
            idle_timeout_s: t.idle_timeout_ns / SEC,
            active_timeout_s: t.active_timeout_ns / SEC,
            tcp_close_grace_s: t.tcp_close_grace_ns / SEC,
            max_flows: t.max_flows as u64,
        }
    }
}

const SEC: u64 = 1_000_000_000;

impl Config {
    /// Reads (at most [`MAX_BYTES`]) and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        use std::io::Read as _;
        let name = path.display().to_string();
        let read = |error| ConfigError::Read {
            path: name.clone(),
            error,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_BYTES + 1).read_to_string(&mut text))
            .map_err(read)?;
        if text.len() as u64 > MAX_BYTES {
            return Err(ConfigError::TooLarge { path: name });
        }
        Self::parse(&text, &name)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let c: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.into(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        c.validate(origin)?;
        Ok(c)
    }

    /// Checks every value's range; the error names the key, the value and
    /// what is accepted.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key, value: String, accepted| ConfigError::Invalid {
            path: origin.into(),
            key,
            value,
            accepted,
        };
        if !self
            .listen
            .parse::<SocketAddr>()
            .is_ok_and(|a| a.port() != 0)
        {
            return Err(bad(
                "listen",
                format!("{:?}", self.listen),
                "an IP address and a port from 1 to 65535, e.g. \"127.0.0.1:29391\" or \"[::1]:29391\"",
            ));
        }
        if let Some((key, value, accepted)) = self.l7.invalid() {
            return Err(bad(key, value, accepted));
        }
        if let Some((key, value, accepted)) = self.af_xdp.invalid() {
            return Err(bad(key, value, accepted));
        }
        if !(100..=60_000).contains(&self.drain_interval_ms) {
            return Err(bad(
                "drain_interval_ms",
                self.drain_interval_ms.to_string(),
                "100 to 60000",
            ));
        }
        if !(1..=16_777_216).contains(&self.flow_capacity) {
            return Err(bad(
                "flow_capacity",
                self.flow_capacity.to_string(),
                "1 to 16777216",
            ));
        }
        if self.drain_at_fill_percent > 100 {
            return Err(bad(
                "drain_at_fill_percent",
                self.drain_at_fill_percent.to_string(),
                "0 (off) to 100",
            ));
        }
        if parse_xdp_mode(&self.xdp_mode).is_none() {
            return Err(bad(
                "xdp_mode",
                format!("{:?}", self.xdp_mode),
                "\"auto\", \"native\" or \"generic\"",
            ));
        }
        if !self.pin_path.starts_with('/') {
            return Err(bad(
                "pin_path",
                format!("{:?}", self.pin_path),
                "an absolute path in bpffs, e.g. \"/sys/fs/bpf/flowd\"",
            ));
        }
        for p in &self.interfaces {
            let pat = p.strip_prefix('!').unwrap_or(p);
            if pat.is_empty()
                || pat.len() > 15
                || pat.contains('/')
                || pat.contains(char::is_whitespace)
            {
                return Err(bad(
                    "interfaces",
                    format!("{p:?}"),
                    "interface names or glob patterns of at most 15 characters, optionally starting with ! to exclude",
                ));
            }
        }
        let t = &self.flow_table;
        if !(1..=86_400).contains(&t.idle_timeout_s) {
            return Err(bad(
                "flow_table.idle_timeout_s",
                t.idle_timeout_s.to_string(),
                "1 to 86400",
            ));
        }
        if !(1..=86_400).contains(&t.active_timeout_s) {
            return Err(bad(
                "flow_table.active_timeout_s",
                t.active_timeout_s.to_string(),
                "1 to 86400",
            ));
        }
        if t.tcp_close_grace_s > 3_600 {
            return Err(bad(
                "flow_table.tcp_close_grace_s",
                t.tcp_close_grace_s.to_string(),
                "0 to 3600",
            ));
        }
        if !(1..=100_000_000).contains(&t.max_flows) {
            return Err(bad(
                "flow_table.max_flows",
                t.max_flows.to_string(),
                "1 to 100000000",
            ));
        }
        self.aggregates(origin)?;
        let sc = &self.scan;
        if !(1..=65_535).contains(&sc.ports) {
            return Err(bad("scan.ports", sc.ports.to_string(), "1 to 65535"));
        }
        if !(1..=1_000_000).contains(&sc.hosts) {
            return Err(bad("scan.hosts", sc.hosts.to_string(), "1 to 1000000"));
        }
        if !(1..=3_600).contains(&sc.window_s) {
            return Err(bad("scan.window_s", sc.window_s.to_string(), "1 to 3600"));
        }
        for (name, bps) in &self.interface_speeds {
            if !(1..=MAX_SPEED_BPS).contains(bps) {
                return Err(bad(
                    "interface_speeds",
                    format!("{name} = {bps}"),
                    "bits per second from 1 to 10000000000000 (10 Tbit/s); leave an interface out to use the speed the kernel reports",
                ));
            }
        }
        let ix = &self.ipfix;
        if !ix.collector.is_empty()
            && !ix
                .collector
                .parse::<SocketAddr>()
                .is_ok_and(|a| a.port() != 0)
        {
            return Err(bad(
                "ipfix.collector",
                format!("{:?}", ix.collector),
                "empty (no export) or an IP address and UDP port (1 to 65535), e.g. \"192.0.2.10:4739\" or \"[2001:db8::10]:4739\"",
            ));
        }
        if !(1..=86_400).contains(&ix.template_refresh_s) {
            return Err(bad(
                "ipfix.template_refresh_s",
                ix.template_refresh_s.to_string(),
                "1 to 86400",
            ));
        }
        if !(IPFIX_MIN_MESSAGE..=65_000).contains(&ix.max_message_bytes) {
            return Err(bad(
                "ipfix.max_message_bytes",
                ix.max_message_bytes.to_string(),
                "256 to 65000",
            ));
        }
        let w = &self.web;
        if !(1..=65_536).contains(&w.max_connections) {
            return Err(bad(
                "web.max_connections",
                w.max_connections.to_string(),
                "1 to 65536",
            ));
        }
        for (key, v) in [
            ("web.header_read_timeout_s", w.header_read_timeout_s),
            ("web.idle_timeout_s", w.idle_timeout_s),
        ] {
            if !(1..=3600).contains(&v) {
                return Err(bad(key, v.to_string(), "1 to 3600 seconds"));
            }
        }
        if w.tls_cert_file.is_empty() != w.tls_key_file.is_empty() {
            return Err(bad(
                "web.tls_cert_file",
                format!("{:?}", w.tls_cert_file),
                "both web.tls_cert_file and web.tls_key_file, or neither",
            ));
        }
        for (user, hash) in &w.basic_auth_users {
            if let Err(why) = check_user(user, hash) {
                return Err(bad(
                    "web.basic_auth_users",
                    format!("{user:?} = {hash:?} ({why})"),
                    "user names without ':' and bcrypt hashes ($2a$, $2b$ or $2y$, cost 4 to 31), e.g. from `htpasswd -nbBC 10 USER PASS`",
                ));
            }
        }
        Ok(())
    }

    /// The exporter's aggregate settings, validated.
    pub fn aggregates(&self, origin: &str) -> Result<AggConfig, ConfigError> {
        let m = &self.metrics;
        let mut a = AggConfig {
            top_flows: m.top_flows,
            window: Duration::from_secs(m.window_s),
            window_max_flows: m.window_max_flows,
            series_budget: m.series_budget,
            peer_unmatched: m.peer_unmatched.clone(),
            ..AggConfig::default()
        };
        if !m.services.is_empty() {
            a.services = m
                .services
                .iter()
                .map(|s| ServiceConfig::new(&s.name, &s.ports))
                .collect();
        }
        if !m.peer_groups.is_empty() {
            let mut groups = Vec::new();
            for g in &m.peer_groups {
                let mut cidrs = Vec::new();
                for c in &g.cidrs {
                    cidrs.push(c.parse().map_err(|_| ConfigError::Invalid {
                        path: origin.into(),
                        key: "metrics.peer_groups",
                        value: format!("{c:?} in group {:?}", g.name),
                        accepted: "CIDR prefixes such as \"10.0.0.0/8\" or \"fd00::/8\"",
                    })?);
                }
                groups.push(PeerGroupConfig {
                    name: g.name.clone(),
                    cidrs,
                });
            }
            a.peer_groups = groups;
        }
        a.validate().map_err(|e| ConfigError::Invalid {
            path: origin.into(),
            key: match e.key {
                "top_flows" => "metrics.top_flows",
                "window" => "metrics.window_s",
                "window_max_flows" => "metrics.window_max_flows",
                "series_budget" => "metrics.series_budget",
                "services" => "metrics.services",
                "peer_groups" => "metrics.peer_groups",
                _ => "metrics.peer_unmatched",
            },
            value: e.value,
            accepted: e.accepted,
        })?;
        Ok(a)
    }

    pub fn scan_config(&self) -> ScanConfig {
        ScanConfig {
            ports: self.scan.ports,
            hosts: self.scan.hosts,
            window_ns: self.scan.window_s * SEC,
            ..ScanConfig::default()
        }
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen.parse().expect("validated")
    }

    pub fn drain_interval(&self) -> Duration {
        Duration::from_millis(self.drain_interval_ms)
    }

    pub fn xdp_attach_mode(&self) -> Option<XdpAttachMode> {
        parse_xdp_mode(&self.xdp_mode).flatten()
    }

    pub fn table(&self) -> TableConfig {
        let t = &self.flow_table;
        TableConfig {
            idle_timeout_ns: t.idle_timeout_s * SEC,
            active_timeout_ns: t.active_timeout_s * SEC,
            tcp_close_grace_ns: t.tcp_close_grace_s * SEC,
            max_flows: t.max_flows as usize,
        }
    }
}

/// `Some(None)` is auto.
fn parse_xdp_mode(s: &str) -> Option<Option<XdpAttachMode>> {
    match s {
        "auto" => Some(None),
        "native" => Some(Some(XdpAttachMode::Native)),
        "generic" => Some(Some(XdpAttachMode::Generic)),
        _ => None,
    }
}

/// Whether `name` is selected by `patterns` (empty: everything). Excludes
/// (`!pat`) win over includes; with only excludes, everything else is in.
pub fn selects(patterns: &[String], name: &str) -> bool {
    let mut included = patterns.iter().all(|p| p.starts_with('!'));
    for p in patterns {
        match p.strip_prefix('!') {
            Some(ex) if glob(ex, name) => return false,
            Some(_) => {}
            None if glob(p, name) => included = true,
            None => {}
        }
    }
    included
}

/// Shell-style glob with `*` and `?`.
pub fn glob(pattern: &str, name: &str) -> bool {
    fn m(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], n) || (!n.is_empty() && m(p, &n[1..])),
            (Some(b'?'), Some(_)) => m(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &n[1..]),
            _ => false,
        }
    }
    m(pattern.as_bytes(), name.as_bytes())
}

/// bcrypt costs the bcrypt crate computes (`$2b$04$` to `$2b$31$`).
pub(crate) const COSTS: std::ops::RangeInclusive<u32> = 4..=31;

/// Why a `[web.basic_auth_users]` entry is refused, or `Ok` (used at load
/// and by the web server's auth).
pub fn check_user(user: &str, hash: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("the user name is empty".into());
    }
    if user.contains(':') {
        return Err(format!(
            "user name {user:?} contains ':', which ends the user name in a basic auth header"
        ));
    }
    if user.chars().any(char::is_control) {
        return Err(format!("user name {user:?} contains a control character"));
    }
    let prefix = hash.get(..4).unwrap_or(hash);
    if !matches!(prefix, "$2a$" | "$2b$" | "$2y$") {
        return Err(format!(
            "the hash of {user:?} does not start with $2a$, $2b$ or $2y$"
        ));
    }
    let cost = hash.get(4..6).and_then(|c| c.parse::<u32>().ok());
    if let Some(c) = cost
        && !COSTS.contains(&c)
    {
        return Err(format!(
            "the hash of {user:?} has cost {c}, outside 4 to 31"
        ));
    }
    <bcrypt::HashParts as std::str::FromStr>::from_str(hash)
        .map(drop)
        .map_err(|e| format!("the hash of {user:?} is not a bcrypt hash that can match ({e})"))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
