//! Bounded traffic groups: protocol names, services from a port map and peer
//! groups from CIDR prefixes. Every label value comes from a fixed list, so a
//! group dimension has at most as many series as its list has names, plus
//! `other`, whatever the traffic.

use std::{
    borrow::Cow,
    fmt,
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
};

use flowd_common::proto::ip;
use thiserror::Error;

/// The group of everything no list names, and the target of folding.
pub const OTHER: &str = "other";

/// Protocols with a group of their own (named by [`ip::name`]); the rest
/// are `other` in the `proto` dimension.
pub const PROTOCOLS: [u8; 8] = [
    ip::TCP,
    ip::UDP,
    ip::ICMP,
    ip::ICMPV6,
    ip::SCTP,
    ip::GRE,
    ip::ESP,
    ip::IGMP,
];

/// The name of a protocol of [`PROTOCOLS`] (each has one in the table).
fn group_name(proto: u8) -> &'static str {
    ip::name(proto).unwrap_or(OTHER)
}

/// Group names of the `proto` dimension, `other` last.
pub fn proto_names() -> Vec<String> {
    PROTOCOLS
        .iter()
        .map(|p| group_name(*p).to_owned())
        .chain([OTHER.to_owned()])
        .collect()
}

/// Index of a protocol's group in [`proto_names`].
pub fn proto_group(proto: u8) -> usize {
    PROTOCOLS
        .iter()
        .position(|p| *p == proto)
        .unwrap_or(PROTOCOLS.len())
}

/// A protocol as a label value: its name when it has a group, else its
/// number (at most 256 values).
pub fn proto_label(proto: u8) -> Cow<'static, str> {
    if PROTOCOLS.contains(&proto) {
        Cow::Borrowed(group_name(proto))
    } else {
        Cow::Owned(proto.to_string())
    }
}

/// One service of the port map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Label value, e.g. `https`.
    pub name: String,
    /// TCP/UDP/SCTP ports that mean this service.
    pub ports: Vec<u16>,
}

impl ServiceConfig {
    pub fn new(name: &str, ports: &[u16]) -> Self {
        Self {
            name: name.to_owned(),
            ports: ports.to_vec(),
        }
    }
}

/// The default port map: the services an SRE looks for first.
pub fn default_services() -> Vec<ServiceConfig> {
    [
        ("dns", &[53, 853, 5353][..]),
        ("http", &[80, 8080, 8000]),
        ("https", &[443, 8443]),
        ("ssh", &[22]),
        ("ntp", &[123]),
        ("smtp", &[25, 465, 587]),
        ("imap", &[143, 993]),
        ("pop3", &[110, 995]),
        ("ldap", &[389, 636]),
        ("kerberos", &[88]),
        ("dhcp", &[67, 68, 546, 547]),
        ("snmp", &[161, 162]),
        ("syslog", &[514, 6514]),
        ("bgp", &[179]),
        ("mysql", &[3306]),
        ("postgres", &[5432]),
        ("redis", &[6379]),
        ("memcached", &[11211]),
        ("mongodb", &[27017]),
        ("kafka", &[9092]),
        ("etcd", &[2379, 2380]),
        ("nfs", &[2049]),
        ("smb", &[445]),
        ("rdp", &[3389]),
    ]
    .iter()
    .map(|(n, p)| ServiceConfig::new(n, p))
    .collect()
}

/// Ports to services, looked up in O(1).
#[derive(Debug, Clone)]
pub struct ServiceMap {
    names: Vec<String>,
    /// Group index per port; `NONE` for unmapped ports.
    by_port: Vec<u16>,
}

const NONE: u16 = u16::MAX;
/// More names than this are ignored (they would be `other`): a bound on the
/// `service` label whatever the configuration.
pub const MAX_SERVICES: usize = 1024;

impl ServiceMap {
    /// Services with the same name share a group; a port listed twice keeps
    /// its first service; a service named `other` is the `other` group.
    pub fn new(services: &[ServiceConfig]) -> Self {
        let mut names: Vec<String> = Vec::new();
        let mut by_port = vec![NONE; 1 << 16];
        for s in services {
            let ix = match names.iter().position(|n| *n == s.name) {
                Some(i) => i,
                None if s.name == OTHER || names.len() >= MAX_SERVICES => continue,
                None => {
                    names.push(s.name.clone());
                    names.len() - 1
                }
            };
            for p in &s.ports {
                if by_port[usize::from(*p)] == NONE && *p != 0 {
                    by_port[usize::from(*p)] = ix as u16;
                }
            }
        }
        names.push(OTHER.to_owned());
        Self { names, by_port }
    }

    /// Group names, `other` last.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The service of a flow: of the two ports that are in the map, the
    /// lower (servers listen on the lower port as a rule); `other` when
    /// neither is, or the protocol has no ports.
    pub fn group(&self, proto: u8, sport: u16, dport: u16) -> usize {
        let other = self.names.len() - 1;
        if !ip::has_ports(proto) {
            return other;
        }
        let (lo, hi) = if sport <= dport {
            (sport, dport)
        } else {
            (dport, sport)
        };
        for p in [lo, hi] {
            let g = self.by_port[usize::from(p)];
            if g != NONE {
                return usize::from(g);
            }
        }
        other
    }
}

/// An address prefix. IPv4 prefixes are kept IPv4-mapped (`::ffff:0:0/96`),
/// the form flow keys use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: [u8; 16],
    /// Prefix length over the 16-byte form (IPv4 lengths plus 96).
    len: u8,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "`{0}` is not a CIDR prefix (accepted: an address and a length, e.g. 10.0.0.0/8 or fc00::/7)"
)]
pub struct CidrError(pub String);

impl Cidr {
    /// Whether a 16-byte key address is inside the prefix.
    pub fn contains(&self, a: &[u8; 16]) -> bool {
        let full = usize::from(self.len / 8);
        if a[..full] != self.addr[..full] {
            return false;
        }
        let rest = self.len % 8;
        rest == 0 || {
            let mask = 0xffu8 << (8 - rest);
            a[full] & mask == self.addr[full] & mask
        }
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_owned());
        let (ip, len) = s.split_once('/').ok_or_else(err)?;
        let ip: IpAddr = ip.parse().map_err(|_| err())?;
        let len: u8 = len.parse().map_err(|_| err())?;
        let (mut addr, len) = match ip {
            IpAddr::V4(v4) if len <= 32 => (v4.to_ipv6_mapped().octets(), len + 96),
            IpAddr::V6(v6) if len <= 128 => (v6.octets(), len),
            _ => return Err(err()),
        };
        // Host bits are ignored, as `ip route` does.
        for (i, b) in addr.iter_mut().enumerate() {
            let bit = i as u32 * 8;
            let keep = u32::from(len).saturating_sub(bit).min(8);
            *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        }
        Ok(Self { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.len >= 96 => write!(f, "{v4}/{}", self.len - 96),
            _ => write!(f, "{v6}/{}", self.len),
        }
    }
}

/// One peer group: a name and its prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGroupConfig {
    pub name: String,
    pub cidrs: Vec<Cidr>,
}

impl PeerGroupConfig {
    /// Panics on a malformed prefix: for built-in lists and tests.
    pub fn new(name: &str, cidrs: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            cidrs: cidrs
                .iter()
                .map(|c| c.parse().unwrap_or_else(|e| panic!("{e}")))
                .collect(),
        }
    }
}

/// More peer group names than this are ignored (their prefixes are `other`).
pub const MAX_PEER_GROUPS: usize = 1024;

/// The group of addresses no prefix matches, by default.
pub const DEFAULT_PEER_UNMATCHED: &str = "public";

/// The default peer groups (RFC 6890 special-purpose ranges).
pub fn default_peer_groups() -> Vec<PeerGroupConfig> {
    vec![
        PeerGroupConfig::new(
            "private",
            &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"],
        ),
        PeerGroupConfig::new("loopback", &["127.0.0.0/8", "::1/128"]),
        PeerGroupConfig::new("link-local", &["169.254.0.0/16", "fe80::/10"]),
        PeerGroupConfig::new("multicast", &["224.0.0.0/4", "ff00::/8"]),
        PeerGroupConfig::new("broadcast", &["255.255.255.255/32"]),
        PeerGroupConfig::new("unspecified", &["0.0.0.0/8", "::/128"]),
        PeerGroupConfig::new("benchmark", &["198.18.0.0/15", "2001:2::/48"]),
    ]
}

/// Remote addresses to peer groups by longest prefix match, so a configured
/// `10.1.0.0/16` wins over `private`'s `10.0.0.0/8`.
#[derive(Debug, Clone)]
pub struct PeerGroups {
    /// Configured names, then the unmatched group, then `other`.
    names: Vec<String>,
    /// Longest prefix first.
    prefixes: Vec<(Cidr, usize)>,
    unmatched: usize,
}

impl PeerGroups {
    /// Groups with the same name merge; a group named `other` is the
    /// `other` group; names beyond [`MAX_PEER_GROUPS`] are ignored.
    pub fn new(groups: &[PeerGroupConfig], unmatched: &str) -> Self {
        fn index(names: &mut Vec<String>, n: &str) -> Option<usize> {
            match names.iter().position(|x| x == n) {
                Some(i) => Some(i),
                None if n == OTHER || names.len() >= MAX_PEER_GROUPS => None,
                None => {
                    names.push(n.to_owned());
                    Some(names.len() - 1)
                }
            }
        }
        let mut names: Vec<String> = Vec::new();
        let mut prefixes = Vec::new();
        let mut to_other = Vec::new();
        for g in groups {
            match index(&mut names, &g.name) {
                Some(ix) => prefixes.extend(g.cidrs.iter().map(|c| (*c, ix))),
                None => to_other.extend(g.cidrs.iter().copied()),
            }
        }
        let unmatched = index(&mut names, unmatched);
        let other = names.len();
        names.push(OTHER.to_owned());
        prefixes.extend(to_other.into_iter().map(|c| (c, other)));
        // Stable: of two equal prefixes, the first configured wins.
        prefixes.sort_by_key(|(c, _)| std::cmp::Reverse(c.len));
        Self {
            names,
            prefixes,
            unmatched: unmatched.unwrap_or(other),
        }
    }

    /// Group names, `other` last.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn group(&self, addr: &[u8; 16]) -> usize {
        self.prefixes
            .iter()
            .find(|(c, _)| c.contains(addr))
            .map_or(self.unmatched, |(_, g)| *g)
    }
}

#[cfg(test)]
mod tests {
    use flowd_common::ipv4_mapped;

    use super::*;

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    #[test]
    fn protocols_by_name_else_other() {
        let names = proto_names();
        assert_eq!(names[proto_group(6)], "tcp");
        assert_eq!(names[proto_group(58)], "icmpv6");
        assert!(PROTOCOLS.iter().all(|p| ip::name(*p).is_some()));
        assert_eq!(names[proto_group(89)], "other");
        assert_eq!(proto_label(17), "udp");
        assert_eq!(proto_label(89), "89");
    }

    #[test]
    fn service_is_the_lower_mapped_port() {
        let m = ServiceMap::new(&default_services());
        let name = |p, s, d| m.names()[m.group(p, s, d)].as_str();
        assert_eq!(name(6, 51000, 443), "https");
        assert_eq!(name(6, 443, 51000), "https");
        assert_eq!(name(17, 53, 123), "dns");
        assert_eq!(name(17, 123, 53), "dns");
        assert_eq!(name(6, 8080, 5432), "postgres");
        assert_eq!(name(6, 40000, 9999), "other");
        // ICMP echo request: dport 2048 is type/code, not a port.
        assert_eq!(name(1, 0, 2048), "other");
        assert_eq!(name(1, 0, 80), "other");
        assert_eq!(m.names().last().map(String::as_str), Some("other"));
    }

    #[test]
    fn configured_services_merge_by_name_and_first_port_wins() {
        let m = ServiceMap::new(&[
            ServiceConfig::new("web", &[80]),
            ServiceConfig::new("alt", &[80, 81]),
            ServiceConfig::new("web", &[8080]),
            ServiceConfig::new("other", &[9000]),
        ]);
        assert_eq!(m.names(), ["web", "alt", "other"]);
        assert_eq!(m.group(6, 1, 80), 0);
        assert_eq!(m.group(6, 81, 9), 1);
        assert_eq!(m.group(6, 8080, 60000), 0);
        assert_eq!(m.group(6, 9000, 60000), 2);
    }

    #[test]
    fn cidr_parse_print_and_match() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains(&ipv4_mapped([10, 200, 0, 1])));
        assert!(!c.contains(&ipv4_mapped([11, 0, 0, 1])));
        let c: Cidr = "fc00::/7".parse().unwrap();
        assert!(c.contains(&v6("fd00::1")));
        assert!(!c.contains(&v6("fe00::1")));
        let c: Cidr = "172.16.0.0/12".parse().unwrap();
        assert!(c.contains(&ipv4_mapped([172, 31, 255, 255])));
        assert!(!c.contains(&ipv4_mapped([172, 32, 0, 0])));
        let all: Cidr = "::/0".parse().unwrap();
        assert!(all.contains(&v6("2001:db8::1")));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "::/129",
            "x/8",
            "10.0.0.0/-1",
            "",
        ] {
            assert_eq!(bad.parse::<Cidr>(), Err(CidrError(bad.into())), "{bad}");
        }
        assert!(
            CidrError("x".into())
                .to_string()
                .contains("e.g. 10.0.0.0/8")
        );
    }

    #[test]
    fn peer_groups_by_longest_prefix() {
        let mut cfg = default_peer_groups();
        cfg.push(PeerGroupConfig::new("office", &["10.1.0.0/16"]));
        let g = PeerGroups::new(&cfg, DEFAULT_PEER_UNMATCHED);
        let name = |a: [u8; 16]| g.names()[g.group(&a)].as_str();
        assert_eq!(name(ipv4_mapped([10, 1, 2, 3])), "office");
        assert_eq!(name(ipv4_mapped([10, 2, 2, 3])), "private");
        assert_eq!(name(ipv4_mapped([192, 168, 1, 1])), "private");
        assert_eq!(name(ipv4_mapped([127, 0, 0, 1])), "loopback");
        assert_eq!(name(ipv4_mapped([169, 254, 9, 9])), "link-local");
        assert_eq!(name(ipv4_mapped([239, 1, 1, 1])), "multicast");
        assert_eq!(name(ipv4_mapped([198, 19, 0, 1])), "benchmark");
        assert_eq!(name(ipv4_mapped([198, 20, 0, 1])), "public");
        assert_eq!(name(ipv4_mapped([8, 8, 8, 8])), "public");
        assert_eq!(name(ipv4_mapped([0, 0, 0, 0])), "unspecified");
        assert_eq!(name(ipv4_mapped([255, 255, 255, 255])), "broadcast");
        assert_eq!(name(v6("::1")), "loopback");
        assert_eq!(name(v6("fe80::1")), "link-local");
        assert_eq!(name(v6("ff02::16")), "multicast");
        assert_eq!(name(v6("fd00:f10d::1")), "private");
        assert_eq!(name(v6("2001:db8::1")), "public");
        assert_eq!(g.names().last().map(String::as_str), Some("other"));
    }
}
