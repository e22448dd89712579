//! Protocol tables, the one copy the kernel and user space share: IP
//! protocol numbers and names, TCP flag bits and names, directions and
//! their names. A name here is what every output shows (metrics labels,
//! records, the replay table, `flowd top`).

/// Direction of a packet relative to the monitored interface.
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

/// A direction in flow records and JSON: `ingress` / `egress`.
#[inline(always)]
pub const fn direction_name(direction: u8) -> &'static str {
    if direction == DIR_INGRESS {
        "ingress"
    } else {
        "egress"
    }
}

/// A direction as a metric label value, as node_exporter names it:
/// `receive` / `transmit`.
#[inline(always)]
pub const fn direction_label(direction: u8) -> &'static str {
    if direction == DIR_INGRESS {
        "receive"
    } else {
        "transmit"
    }
}

/// IANA protocol numbers (IP protocol / IPv6 next header).
pub mod ip {
    pub const HOPOPTS: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const IGMP: u8 = 2;
    pub const IPIP: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const DCCP: u8 = 33;
    pub const IPV6: u8 = 41;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const GRE: u8 = 47;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const DSTOPTS: u8 = 60;
    pub const OSPF: u8 = 89;
    pub const PIM: u8 = 103;
    pub const VRRP: u8 = 112;
    pub const SCTP: u8 = 132;
    pub const MH: u8 = 135;
    pub const UDPLITE: u8 = 136;

    /// Protocols with a name (lower case, as labels and records show it);
    /// others are shown by number.
    pub const NAMES: [(u8, &str); 15] = [
        (ICMP, "icmp"),
        (IGMP, "igmp"),
        (IPIP, "ipip"),
        (TCP, "tcp"),
        (UDP, "udp"),
        (IPV6, "ipv6"),
        (GRE, "gre"),
        (ESP, "esp"),
        (AH, "ah"),
        (ICMPV6, "icmpv6"),
        (OSPF, "ospf"),
        (PIM, "pim"),
        (VRRP, "vrrp"),
        (SCTP, "sctp"),
        (UDPLITE, "udplite"),
    ];

    /// The protocol's name, if [`NAMES`] has one.
    pub fn name(proto: u8) -> Option<&'static str> {
        NAMES.iter().find(|(p, _)| *p == proto).map(|(_, n)| *n)
    }

    /// Protocols whose flow keys carry ports: the ones the parser reads
    /// ports from.
    #[inline(always)]
    pub const fn has_ports(proto: u8) -> bool {
        matches!(proto, TCP | UDP | UDPLITE | SCTP)
    }

    /// ICMP and ICMPv6: the key's `dport` is type * 256 + code, `sport` 0.
    #[inline(always)]
    pub const fn is_icmp(proto: u8) -> bool {
        matches!(proto, ICMP | ICMPV6)
    }
}

/// TCP flag bits as `FlowStats::tcp_flags` holds them: header byte 13,
/// plus NS (the low bit of byte 12) as 0x100.
pub mod tcp {
    pub const FIN: u16 = 0x01;
    pub const SYN: u16 = 0x02;
    pub const RST: u16 = 0x04;
    pub const PSH: u16 = 0x08;
    pub const ACK: u16 = 0x10;
    pub const URG: u16 = 0x20;
    pub const ECE: u16 = 0x40;
    pub const CWR: u16 = 0x80;
    pub const NS: u16 = 0x100;

    /// The flags nfdump shows, in its order (`UAPRSF`), with their letters.
    pub const LETTERS: [(u16, char); 6] = [
        (URG, 'U'),
        (ACK, 'A'),
        (PSH, 'P'),
        (RST, 'R'),
        (SYN, 'S'),
        (FIN, 'F'),
    ];
}
