//! Frames built by hand: the Internet checksum, Ethernet headers, and the
//! 60-byte IPv4 UDP and TCP SYN frames the live benchmarks transmit.

/// The Internet checksum (RFC 1071) of `data`: the one copy every
/// hand-built header in the harness and the bench uses.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `aa:bb:cc:dd:ee:ff` as bytes; panics on anything else.
pub fn parse_mac(s: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let part = parts.next().unwrap_or_else(|| panic!("MAC {s:?}"));
        *b = u8::from_str_radix(part, 16).unwrap_or_else(|_| panic!("MAC {s:?}"));
    }
    assert!(parts.next().is_none(), "MAC {s:?}");
    mac
}

/// An Ethernet header, with an 802.1Q tag when `vlan` is given.
pub fn eth(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>, ethertype: u16) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    if let Some(vid) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// Link-layer and IPv4 addresses of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Ends {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

/// A 20-byte IPv4 header (no options, DF, TTL 64) with its checksum.
fn ipv4_header(ends: &Ipv4Ends, proto: u8, total_len: u16) -> Vec<u8> {
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&total_len.to_be_bytes());
    ip.extend_from_slice(&ends.src);
    ip.extend_from_slice(&ends.dst);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip
}

/// Ethernet + IPv4 + UDP (no UDP checksum) from `sport` to `dport`, 60 bytes.
pub fn udp_frame(ends: &Ipv4Ends, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = eth(ends.dst_mac, ends.src_mac, None, 0x0800);
    let total = 60 - 14;
    f.extend_from_slice(&ipv4_header(ends, 17, total as u16));
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((total - 20) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(60, 0);
    f
}

/// Ethernet + IPv4 + TCP SYN (no TCP checksum) from `sport` to `dport`, 60 bytes.
pub fn syn_frame(ends: &Ipv4Ends, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = eth(ends.dst_mac, ends.src_mac, None, 0x0800);
    f.extend_from_slice(&ipv4_header(ends, 6, 40));
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[
        0, 0, 0x10, 0, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    f.resize(60, 0);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_header_with_its_checksum_is_zero() {
        let ends = Ipv4Ends {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: [198, 18, 0, 1],
            dst: [198, 18, 0, 2],
        };
        let f = udp_frame(&ends, 1, 2);
        assert_eq!(f.len(), 60);
        assert_eq!(checksum(&f[14..34]), 0);
        assert_eq!(
            parse_mac("02:f1:0d:be:00:99"),
            [2, 0xf1, 0x0d, 0xbe, 0, 0x99]
        );
    }
}
