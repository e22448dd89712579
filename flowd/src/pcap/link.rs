//! Link types: how the frames of each link type flowd replays become the
//! Ethernet frames the XDP program parses, and their names.

/// The link types flowd replays, and how each becomes an Ethernet frame.
///
/// The XDP program parses Ethernet. Other link layers get a synthesized
/// 14-byte Ethernet header (zero MAC addresses) in front of their L3
/// payload, with the EtherType taken from:
/// - Linux SLL / SLL2: the header's protocol field. It is an EtherType, so
///   an 802.1Q tag that libpcap put back after the cooked header (protocol
///   0x8100) is parsed as a VLAN tag as usual.
/// - raw IP: the IP version nibble (4 or 6; anything else: no EtherType,
///   counted as non-IP); IPv4 / IPv6 link types: their family.
/// - NULL: the 4-byte address family in the writer's byte order (detected);
///   LOOP: the same in network byte order. AF_INET (2) is IPv4; 24, 28 and
///   30 (the BSDs' and macOS' AF_INET6) are IPv6; others count as non-IP.
///
/// A frame whose link header is cut short becomes an empty frame, which the
/// program counts as truncated. SLL's packet type (incoming / outgoing) is
/// not used: a replay counts every frame as ingress of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkLayer {
    Ethernet,
    LinuxSll,
    LinuxSll2,
    RawIp,
    Ipv4,
    Ipv6,
    Null,
    Loop,
}

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_HLEN: usize = 14;

impl LinkLayer {
    /// The link layer of a pcap/pcapng link type, `None` if flowd does not
    /// replay it.
    pub fn from_link_type(link_type: u32) -> Option<Self> {
        Some(match link_type {
            1 => Self::Ethernet,
            113 => Self::LinuxSll,
            276 => Self::LinuxSll2,
            // LINKTYPE_RAW, and the DLT_RAW values some writers put in files.
            101 | 12 | 14 => Self::RawIp,
            228 => Self::Ipv4,
            229 => Self::Ipv6,
            0 => Self::Null,
            108 => Self::Loop,
            _ => return None,
        })
    }

    /// `data` as an Ethernet frame of at most `max` bytes: a prefix of
    /// `data` itself for Ethernet, else built in `scratch`.
    pub fn to_ethernet<'a>(self, data: &'a [u8], max: usize, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        let (ethertype, payload) = match self {
            Self::Ethernet => return &data[..data.len().min(max)],
            Self::LinuxSll => match data.get(..16) {
                Some(h) => (u16::from_be_bytes([h[14], h[15]]), &data[16..]),
                None => return &[],
            },
            Self::LinuxSll2 => match data.get(..20) {
                Some(h) => (u16::from_be_bytes([h[0], h[1]]), &data[20..]),
                None => return &[],
            },
            Self::RawIp => match data.first().map(|b| b >> 4) {
                Some(4) => (ETH_P_IPV4, data),
                Some(6) => (ETH_P_IPV6, data),
                Some(_) => (0, data),
                None => return &[],
            },
            Self::Ipv4 => (ETH_P_IPV4, data),
            Self::Ipv6 => (ETH_P_IPV6, data),
            Self::Null | Self::Loop => {
                let Some(h) = data.get(..4) else {
                    return &[];
                };
                let raw = [h[0], h[1], h[2], h[3]];
                let af = if self == Self::Loop {
                    u32::from_be_bytes(raw)
                } else {
                    // Host order of the writer: a family fits in 16 bits.
                    let le = u32::from_le_bytes(raw);
                    if le > 0xffff { le.swap_bytes() } else { le }
                };
                let ethertype = match af {
                    2 => ETH_P_IPV4,
                    24 | 28 | 30 => ETH_P_IPV6,
                    _ => 0,
                };
                (ethertype, &data[4..])
            }
        };
        scratch.clear();
        scratch.extend_from_slice(&[0; 12]);
        scratch.extend_from_slice(&ethertype.to_be_bytes());
        let take = payload.len().min(max.saturating_sub(ETH_HLEN));
        scratch.extend_from_slice(&payload[..take]);
        scratch
    }
}

/// The name of a link type (tcpdump.org's `LINKTYPE_` names, without the
/// prefix), "unknown" for numbers not in this list.
pub fn link_type_name(link_type: u32) -> &'static str {
    match link_type {
        0 => "NULL",
        1 => "ETHERNET",
        3 => "AX25",
        6 => "IEEE802_5",
        7 => "ARCNET_BSD",
        8 => "SLIP",
        9 => "PPP",
        10 => "FDDI",
        12 | 14 => "RAW (DLT_RAW)",
        50 => "PPP_HDLC",
        51 => "PPP_ETHER",
        100 => "ATM_RFC1483",
        101 => "RAW",
        104 => "C_HDLC",
        105 => "IEEE802_11",
        107 => "FRELAY",
        108 => "LOOP",
        113 => "LINUX_SLL",
        114 => "LTALK",
        117 => "PFLOG",
        119 => "IEEE802_11_PRISM",
        122 => "IP_OVER_FC",
        123 => "SUNATM",
        127 => "IEEE802_11_RADIOTAP",
        129 => "ARCNET_LINUX",
        143 => "DOCSIS",
        144 => "LINUX_IRDA",
        147..=162 => "USER0..USER15",
        163 => "IEEE802_11_AVS",
        166 => "PPP_PPPD",
        177 => "LINUX_LAPD",
        187 => "BLUETOOTH_HCI_H4",
        189 => "USB_LINUX",
        192 => "PPI",
        195 => "IEEE802_15_4_WITHFCS",
        201 => "BLUETOOTH_HCI_H4_WITH_PHDR",
        220 => "USB_LINUX_MMAPPED",
        227 => "CAN_SOCKETCAN",
        228 => "IPV4",
        229 => "IPV6",
        239 => "NFLOG",
        240 => "NETANALYZER",
        241 => "NETANALYZER_TRANSPARENT",
        249 => "USBPCAP",
        251 => "BLUETOOTH_LE_LL",
        252 => "WIRESHARK_UPPER_PDU",
        253 => "NETLINK",
        254 => "BLUETOOTH_LINUX_MONITOR",
        264 => "PKTAP",
        276 => "LINUX_SLL2",
        _ => "unknown",
    }
}
