//! Two namespaces joined by a veth pair: the link every end-to-end test
//! and the live benchmarks send their traffic over.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::{
    Netns,
    host::try_sh,
    packet::{Ipv4Ends, parse_mac},
    unique_tag,
};

/// Addresses one end of a veth pair (`ip6`: its and its peer's IPv6
/// address, or None for IPv4 only), brings it up, and pins the peer's MAC
/// as a static neighbour: no router solicitation, DAD, ARP or NDP on the wire.
fn configure_end(
    ns: &Netns,
    ifc: &str,
    ip4: &str,
    peer_ip4: &str,
    peer_mac: &str,
    ip6: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    let v6 = if ip6.is_some() { "0" } else { "1" };
    ns.try_exec(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{ifc}.disable_ipv6={v6}"),
    ])?;
    if ip6.is_some() {
        for key in ["accept_ra=0", "dad_transmits=0", "router_solicitations=0"] {
            ns.try_exec(&["sysctl", "-qw", &format!("net.ipv6.conf.{ifc}.{key}")])?;
        }
    }
    ns.try_exec(&["ip", "addr", "add", &format!("{ip4}/30"), "dev", ifc])?;
    if let Some((mine, _)) = ip6 {
        ns.try_exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{mine}/64"),
            "dev",
            ifc,
            "nodad",
        ])?;
    }
    ns.try_exec(&["ip", "link", "set", ifc, "up"])?;
    let neigh = |family: &str, ip: &str| {
        ns.try_exec(&[
            "ip",
            family,
            "neigh",
            "replace",
            ip,
            "lladdr",
            peer_mac,
            "dev",
            ifc,
            "nud",
            "permanent",
        ])
        .map(drop)
    };
    neigh("-4", peer_ip4)?;
    if let Some((_, peer)) = ip6 {
        neigh("-6", peer)?;
    }
    Ok(())
}

/// Two namespaces joined by a veth pair, addressed from 198.18.0.0/15 and
/// fd00::/8, with static neighbours and no IPv6 autoconfiguration chatter,
/// so the only packets on the link are the ones a test sends.
pub struct Link {
    pub a: Netns,
    pub b: Netns,
    pub if_a: String,
    pub if_b: String,
    pub ip_a: String,
    pub ip_b: String,
    pub ip6_a: String,
    pub ip6_b: String,
    pub mac_a: String,
    pub mac_b: String,
}

static SUBNET: AtomicU32 = AtomicU32::new(0);

impl Link {
    /// An IPv4-only link: not a single packet crosses it unless a test sends it.
    pub fn new() -> Self {
        Self::try_new().unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Like [`Link::new`], returning the error.
    pub fn try_new() -> anyhow::Result<Self> {
        Self::build(false)
    }

    /// A dual-stack link. IPv6 brings MLD reports the kernel sends by itself,
    /// so tests on it check per-flow numbers, not interface totals.
    pub fn dual_stack() -> Self {
        Self::build(true).unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn build(ipv6: bool) -> anyhow::Result<Self> {
        let a = Netns::try_new("a")?;
        let b = Netns::try_new("b")?;
        let tag = unique_tag();
        let if_a = format!("fa{tag}");
        let if_b = format!("fb{tag}");
        // Distinct /30s per link in this process (198.18.0.0/15 is 2^17 addresses).
        let n = SUBNET.fetch_add(1, Ordering::Relaxed) % 16_000;
        let base = 4 * n;
        let ip = |host: u32| {
            let v = base + host;
            format!("198.{}.{}.{}", 18 + (v >> 16), (v >> 8) & 0xff, v & 0xff)
        };
        let (ip_a, ip_b) = (ip(1), ip(2));
        // Through Ipv6Addr, so the text is canonical ("fd00:f10d::1", not
        // "fd00:f10d:0::1") and compares equal to what flowd prints.
        let v6 = |host: u16| {
            std::net::Ipv6Addr::new(0xfd00, 0xf10d, n as u16, 0, 0, 0, 0, host).to_string()
        };
        let (ip6_a, ip6_b) = (v6(1), v6(2));
        let mac_a = format!("02:f1:0d:{:02x}:{:02x}:01", (n >> 8) & 0xff, n & 0xff);
        let mac_b = format!("02:f1:0d:{:02x}:{:02x}:02", (n >> 8) & 0xff, n & 0xff);
        try_sh(&[
            "ip", "link", "add", &if_a, "netns", &a.name, "address", &mac_a, "type", "veth",
            "peer", "name", &if_b, "netns", &b.name, "address", &mac_b,
        ])?;
        for (ns, ifc, ip4, ip6, peer_ip4, peer_ip6, peer_mac) in [
            (&a, &if_a, &ip_a, &ip6_a, &ip_b, &ip6_b, &mac_b),
            (&b, &if_b, &ip_b, &ip6_b, &ip_a, &ip6_a, &mac_a),
        ] {
            let v6 = ipv6.then_some((ip6.as_str(), peer_ip6.as_str()));
            configure_end(ns, ifc, ip4, peer_ip4, peer_mac, v6)?;
        }
        Ok(Self {
            a,
            b,
            if_a,
            if_b,
            ip_a,
            ip_b,
            ip6_a,
            ip6_b,
            mac_a,
            mac_b,
        })
    }

    /// Deletes the veth pair (both ends go).
    pub fn delete_pair(&self) {
        self.a.exec(&["ip", "link", "del", &self.if_a]);
    }

    /// Creates the veth pair again with the same names, addresses and
    /// neighbours (the interfaces get new ifindexes).
    pub fn recreate_pair(&self) {
        try_sh(&[
            "ip",
            "link",
            "add",
            &self.if_a,
            "netns",
            &self.a.name,
            "address",
            &self.mac_a,
            "type",
            "veth",
            "peer",
            "name",
            &self.if_b,
            "netns",
            &self.b.name,
            "address",
            &self.mac_b,
        ])
        .unwrap_or_else(|e| panic!("{e:#}"));
        for (ns, ifc, ip4, peer_ip4, peer_mac) in [
            (&self.a, &self.if_a, &self.ip_a, &self.ip_b, &self.mac_b),
            (&self.b, &self.if_b, &self.ip_b, &self.ip_a, &self.mac_a),
        ] {
            configure_end(ns, ifc, ip4, peer_ip4, peer_mac, None)
                .unwrap_or_else(|e| panic!("{e:#}"));
        }
    }

    /// The IPv4 addresses of a frame from `a` to `b` on this link.
    pub fn ipv4_a_to_b(&self) -> Ipv4Ends {
        let ip = |s: &str| {
            s.parse::<std::net::Ipv4Addr>()
                .expect("IPv4 address")
                .octets()
        };
        Ipv4Ends {
            src_mac: parse_mac(&self.mac_a),
            dst_mac: parse_mac(&self.mac_b),
            src: ip(&self.ip_a),
            dst: ip(&self.ip_b),
        }
    }

    /// Turns off segmentation offloads so every packet is a wire-sized frame.
    pub fn no_offloads(&self) {
        for (ns, ifc) in [(&self.a, &self.if_a), (&self.b, &self.if_b)] {
            ns.exec(&[
                "ethtool", "-K", ifc, "tso", "off", "gso", "off", "gro", "off",
            ]);
        }
    }
}

impl Default for Link {
    fn default() -> Self {
        Self::new()
    }
}
