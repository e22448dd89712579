//! Header parsing shared by the XDP and TC programs: L2 (Ethernet, two VLAN
//! tags, MPLS, PPPoE) to L4 ports, into a [`FlowKey`].
//!
//! Every read goes through [`Frame::ptr`], a constant-size bounds check
//! against the end of the frame; variable offsets (IHL, extension headers)
//! are clamped first so the verifier can bound them.

use flowd_common::{FlowKey, FragKey, FragPorts, MAX_IPV6_EXT_HEADERS, counter, proto::ip};

use crate::maps::FRAGS;

/// The linear part of a frame, `[start, end)`.
#[derive(Clone, Copy)]
pub(crate) struct Frame {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Offsets beyond this are treated as truncated; keeps the verifier's ranges small.
const MAX_OFFSET: usize = 1024;

impl Frame {
    #[inline(always)]
    fn ptr<const N: usize>(&self, off: usize) -> Option<*const [u8; N]> {
        if off > MAX_OFFSET {
            return None;
        }
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        Some(p as *const [u8; N])
    }

    /// The N bytes at `off`, read in place (no copy onto the 512-byte stack).
    #[inline(always)]
    pub(crate) fn bytes<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        // SAFETY: `ptr` checked that N bytes at `off` lie inside the frame,
        // which stays valid and unchanged for the program run; u8 has no
        // alignment requirement.
        self.ptr::<N>(off).map(|p| unsafe { &*p })
    }

    #[inline(always)]
    fn u8_at(&self, off: usize) -> Option<u8> {
        self.bytes::<1>(off).map(|b| b[0])
    }

    #[inline(always)]
    fn u16_at(&self, off: usize) -> Option<u16> {
        self.bytes::<2>(off).map(|b| u16::from_be_bytes(*b))
    }
}

/// What the parser learned beyond the key. All-zero is its empty state
/// (the caller zeroes it in place: see `account::zero_in_place`).
#[repr(C)]
pub(crate) struct L4Info {
    /// TCP flag bits (byte 13, plus NS as 0x100).
    pub(crate) tcp_flags: u16,
    /// Offset of the end of the L4 header (for GSO packet sizes).
    pub(crate) header_end: u32,
    /// A first fragment's ports could not be remembered.
    pub(crate) frag_map_failed: bool,
    /// IPv4 TOS / IPv6 traffic class (DSCP << 2 | ECN).
    pub(crate) tos: u8,
    /// TCP: the first two payload bytes (big-endian) when the 8 bytes the
    /// L7 selection reads its content from are in the linear data;
    /// otherwise the urgent pointer (0 in practice, which cannot start
    /// L7). Either way a value the verifier does not know, so the tests of
    /// it (`l7::candidate`) do not split its walk of the code between.
    pub(crate) lead: u16,
    /// IP payload length from the IP header (0 when unknown).
    pub(crate) ip_payload: u32,
    /// TCP: sequence and acknowledgement numbers, window, payload bytes.
    pub(crate) tcp_seq: u32,
    pub(crate) tcp_ack: u32,
    pub(crate) tcp_window: u16,
    pub(crate) tcp_payload: u32,
    /// TCP timestamp option, when found in the usual places.
    pub(crate) has_ts: bool,
    /// A whole TCP header was parsed (seq, ack, window are real).
    pub(crate) tcp_full: bool,
    pub(crate) ts_val: u32,
    pub(crate) ts_ecr: u32,
}

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_LLDP: u16 = 0x88cc;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_P_QINQ_OLD: u16 = 0x9100;
const ETH_P_MPLS_UC: u16 = 0x8847;
const ETH_P_MPLS_MC: u16 = 0x8848;
const ETH_P_PPPOE_SESS: u16 = 0x8864;

const MAX_MPLS_LABELS: usize = 4;

/// Parses one frame. Fills `key` (which the caller zeroed) except ifindex and
/// direction, and returns the outcome counter index. The key is meaningful
/// only for the flow outcomes (`OUT_FLOW`, fragments, `OUT_L4_TRUNCATED`).
///
/// `INLINE_IP`: the IP parsers inline (about 11 ns less per packet) or as a
/// BPF-to-BPF call. XDP inlines them; TC calls them, because inlined the
/// verifier walks ~800k instructions for the TC program (of its 1M limit),
/// against ~300k called.
#[inline(always)]
pub(crate) fn parse<const INLINE_IP: bool>(
    f: &Frame,
    key: &mut FlowKey,
    info: &mut L4Info,
) -> usize {
    let Some(mut ethertype) = f.u16_at(12) else {
        return counter::OUT_TRUNCATED;
    };
    let mut off: usize = 14;

    // Up to two VLAN tags; the outer VLAN ID goes in the key.
    let mut tags = 0;
    while tags < 3 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD && ethertype != ETH_P_QINQ_OLD {
            break;
        }
        if tags == 2 {
            return counter::OUT_TOO_MANY_VLANS;
        }
        let (Some(tci), Some(inner)) = (f.u16_at(off), f.u16_at(off + 2)) else {
            return counter::OUT_TRUNCATED;
        };
        if tags == 0 {
            key.vlan = tci & 0x0fff;
        }
        ethertype = inner;
        off += 4;
        tags += 1;
    }

    // Find the IP header: plain, behind PPPoE, or behind an MPLS stack.
    let (family, off) = match ethertype {
        ETH_P_IPV4 => (4, off),
        ETH_P_IPV6 => (6, off),
        ETH_P_PPPOE_SESS => match f.u16_at(off + 6) {
            // PPPoE session header (6 bytes) + PPP protocol (2 bytes).
            None => return counter::OUT_TRUNCATED,
            Some(0x0021) => (4, off + 8),
            Some(0x0057) => (6, off + 8),
            Some(_) => return counter::OUT_NON_IP_OTHER,
        },
        ETH_P_MPLS_UC | ETH_P_MPLS_MC => match mpls_payload(f, off) {
            Ok(v) => v,
            Err(outcome) => return outcome,
        },
        ETH_P_ARP => return counter::OUT_NON_IP_ARP,
        ETH_P_LLDP => return counter::OUT_NON_IP_LLDP,
        _ => return counter::OUT_NON_IP_OTHER,
    };
    if INLINE_IP {
        parse_ip(f, family, off, key, info)
    } else {
        parse_ip_call(f, family, off, key, info)
    }
}

/// [`parse_ip`] as a subprogram of its own.
#[inline(never)]
fn parse_ip_call(f: &Frame, family: u8, off: usize, key: &mut FlowKey, info: &mut L4Info) -> usize {
    parse_ip(f, family, off, key, info)
}

/// Walks an MPLS label stack; returns the payload's IP version and offset.
#[inline(always)]
fn mpls_payload(f: &Frame, mut off: usize) -> Result<(u8, usize), usize> {
    for _ in 0..MAX_MPLS_LABELS {
        let Some(label) = f.bytes::<4>(off) else {
            return Err(counter::OUT_TRUNCATED);
        };
        off += 4;
        if label[2] & 0x01 != 0 {
            // Bottom of stack: the payload's version nibble says what it is.
            return match f.u8_at(off).map(|b| b >> 4) {
                None => Err(counter::OUT_TRUNCATED),
                Some(v @ (4 | 6)) => Ok((v, off)),
                Some(_) => Err(counter::OUT_NON_IP_OTHER),
            };
        }
    }
    Err(counter::OUT_NON_IP_OTHER)
}

/// One copy of the IP parsers, whatever the L2 path: keeps the verifier's
/// work linear in the number of L2 variants.
#[inline(always)]
fn parse_ip(f: &Frame, family: u8, off: usize, key: &mut FlowKey, info: &mut L4Info) -> usize {
    if family == 4 {
        parse_ipv4(f, off, key, info)
    } else {
        parse_ipv6(f, off, key, info)
    }
}

#[inline(always)]
fn parse_ipv4(f: &Frame, off: usize, key: &mut FlowKey, info: &mut L4Info) -> usize {
    let Some(h) = f.bytes::<20>(off) else {
        return counter::OUT_TRUNCATED;
    };
    if h[0] >> 4 != 4 {
        return counter::OUT_BAD_IP_VERSION;
    }
    let ihl = (h[0] & 0x0f) as usize;
    if ihl < 5 {
        return counter::OUT_BAD_HEADER_LENGTH;
    }
    let l4 = off + ihl * 4;
    if f.ptr::<1>(l4 - 1).is_none() {
        // Options run past the end of the frame.
        return counter::OUT_TRUNCATED;
    }
    key.proto = h[9];
    set_v4(&mut key.src, [h[12], h[13], h[14], h[15]]);
    set_v4(&mut key.dst, [h[16], h[17], h[18], h[19]]);
    info.tos = h[1];
    info.ip_payload = (u16::from_be_bytes([h[2], h[3]]) as u32).saturating_sub(ihl as u32 * 4);
    let frag = u16::from_be_bytes([h[6], h[7]]);
    let more_fragments = frag & 0x2000 != 0;
    let frag_offset = frag & 0x1fff;
    let id = u16::from_be_bytes([h[4], h[5]]) as u32;
    finish_l3(f, l4, key, info, frag_offset != 0, more_fragments, id, h[9])
}

#[inline(always)]
fn parse_ipv6(f: &Frame, off: usize, key: &mut FlowKey, info: &mut L4Info) -> usize {
    let Some(h) = f.bytes::<40>(off) else {
        return counter::OUT_TRUNCATED;
    };
    if h[0] >> 4 != 6 {
        return counter::OUT_BAD_IP_VERSION;
    }
    let mut next = h[6];
    copy16(&mut key.src, &h, 8);
    copy16(&mut key.dst, &h, 24);
    info.tos = (h[0] << 4) | (h[1] >> 4);
    let payload_len = u16::from_be_bytes([h[4], h[5]]) as u32;
    let mut l4 = off + 40;
    let mut later_fragment = false;
    let mut more_fragments = false;
    let mut frag_id = 0u32;
    let mut frag_next = 0u8;
    let mut i = 0;
    loop {
        match next {
            ip::HOPOPTS | ip::ROUTING | ip::DSTOPTS | ip::MH => {
                let Some(e) = f.bytes::<2>(l4) else {
                    return counter::OUT_TRUNCATED;
                };
                next = e[0];
                l4 += (e[1] as usize + 1) * 8;
            }
            ip::AH => {
                let Some(e) = f.bytes::<2>(l4) else {
                    return counter::OUT_TRUNCATED;
                };
                next = e[0];
                l4 += (e[1] as usize + 2) * 4;
            }
            ip::FRAGMENT => {
                let Some(e) = f.bytes::<8>(l4) else {
                    return counter::OUT_TRUNCATED;
                };
                next = e[0];
                frag_next = e[0];
                let off_flags = u16::from_be_bytes([e[2], e[3]]);
                later_fragment = off_flags >> 3 != 0;
                more_fragments = off_flags & 1 != 0;
                frag_id = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
                l4 += 8;
            }
            _ => break,
        }
        i += 1;
        if i > MAX_IPV6_EXT_HEADERS {
            return counter::OUT_TOO_MANY_EXT_HEADERS;
        }
        if later_fragment {
            // The rest of the chain is in the first fragment.
            break;
        }
    }
    key.proto = next;
    info.ip_payload = payload_len.saturating_sub((l4 - off - 40) as u32);
    finish_l3(
        f,
        l4,
        key,
        info,
        later_fragment,
        more_fragments,
        frag_id,
        frag_next,
    )
}

/// Writes an IPv4 address into a key field, IPv4-mapped, byte by byte
/// (a 16-byte array literal would become a memset loop in BPF).
#[inline(always)]
fn set_v4(dst: &mut [u8; 16], a: [u8; 4]) {
    dst[10] = 0xff;
    dst[11] = 0xff;
    dst[12] = a[0];
    dst[13] = a[1];
    dst[14] = a[2];
    dst[15] = a[3];
}

/// Copies 16 bytes at `at` of `h` into `dst`, unrolled (no memmove loop).
#[inline(always)]
fn copy16<const N: usize>(dst: &mut [u8; 16], h: &[u8; N], at: usize) {
    let mut i = 0;
    while i < 16 {
        dst[i] = h[at + i];
        i += 1;
    }
}

/// Common tail of IPv4 and IPv6: fragments, then the L4 ports.
/// Common tail of IPv4 and IPv6: fragments, then the L4 ports.
/// `frag_proto` identifies the datagram's fragments: IPv4's protocol, or
/// the next header after IPv6's fragment header (the same in every fragment).
#[expect(
    clippy::too_many_arguments,
    reason = "one call site per IP version, inlined"
)]
#[inline(always)]
fn finish_l3(
    f: &Frame,
    l4: usize,
    key: &mut FlowKey,
    info: &mut L4Info,
    later_fragment: bool,
    more_fragments: bool,
    frag_id: u32,
    frag_proto: u8,
) -> usize {
    info.header_end = l4 as u32;
    if later_fragment {
        // No L4 header here: take the ports the first fragment left behind.
        let fk = frag_key(key, frag_id, frag_proto);
        // SAFETY: FRAGS values are plain data; a concurrent update can only
        // replace the ports with the same datagram's ports.
        return match unsafe { FRAGS.get(&fk) } {
            Some(p) => {
                key.sport = p.sport;
                key.dport = p.dport;
                key.proto = p.proto;
                counter::OUT_FRAGMENT_JOINED
            }
            None => counter::OUT_FRAGMENT_ORPHAN,
        };
    }
    let outcome = parse_l4(f, l4, key, info);
    if more_fragments && outcome == counter::OUT_FLOW {
        let fk = frag_key(key, frag_id, frag_proto);
        let ports = FragPorts {
            sport: key.sport,
            dport: key.dport,
            proto: key.proto,
            _pad: [0; 3],
        };
        info.frag_map_failed = FRAGS.insert(&fk, &ports, 0).is_err();
    }
    outcome
}

#[inline(always)]
fn frag_key(key: &FlowKey, id: u32, proto: u8) -> FragKey {
    FragKey {
        src: key.src,
        dst: key.dst,
        id,
        proto,
        _pad: [0; 3],
    }
}

#[inline(always)]
fn parse_l4(f: &Frame, l4: usize, key: &mut FlowKey, info: &mut L4Info) -> usize {
    match key.proto {
        ip::TCP => {
            let Some(t) = f.bytes::<20>(l4) else {
                return counter::OUT_L4_TRUNCATED;
            };
            key.sport = u16::from_be_bytes([t[0], t[1]]);
            key.dport = u16::from_be_bytes([t[2], t[3]]);
            info.tcp_flags = t[13] as u16 | ((t[12] as u16 & 0x01) << 8);
            let doff = ((t[12] >> 4) as usize) * 4;
            info.header_end = (l4 + doff) as u32;
            info.tcp_seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
            info.tcp_ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
            info.tcp_window = u16::from_be_bytes([t[14], t[15]]);
            info.tcp_payload = info.ip_payload.saturating_sub(doff as u32);
            info.tcp_full = true;
            info.lead = match f.bytes::<8>(l4 + doff) {
                Some(b) => u16::from_be_bytes([b[0], b[1]]),
                None => u16::from_be_bytes([t[18], t[19]]),
            };
            tcp_timestamps(f, l4, doff, info);
            counter::OUT_FLOW
        }
        ip::UDP | ip::UDPLITE => {
            let Some(u) = f.bytes::<8>(l4) else {
                return counter::OUT_L4_TRUNCATED;
            };
            key.sport = u16::from_be_bytes([u[0], u[1]]);
            key.dport = u16::from_be_bytes([u[2], u[3]]);
            info.header_end = (l4 + 8) as u32;
            counter::OUT_FLOW
        }
        ip::SCTP => {
            let Some(s) = f.bytes::<12>(l4) else {
                return counter::OUT_L4_TRUNCATED;
            };
            key.sport = u16::from_be_bytes([s[0], s[1]]);
            key.dport = u16::from_be_bytes([s[2], s[3]]);
            counter::OUT_FLOW
        }
        ip::ICMP | ip::ICMPV6 => {
            let Some(c) = f.bytes::<2>(l4) else {
                return counter::OUT_L4_TRUNCATED;
            };
            key.dport = u16::from_be_bytes(*c);
            counter::OUT_FLOW
        }
        _ => counter::OUT_FLOW,
    }
}

/// The TCP timestamp option where Linux and most stacks put it: right after
/// two NOPs (data segments), or after MSS and SACK-permitted (SYNs).
#[inline(always)]
fn tcp_timestamps(f: &Frame, l4: usize, doff: usize, info: &mut L4Info) {
    const NOP: u8 = 1;
    const MSS: u8 = 2;
    const SACK_OK: u8 = 4;
    const TS: u8 = 8;
    if doff >= 32
        && let Some(o) = f.bytes::<12>(l4 + 20)
        && o[0] == NOP
        && o[1] == NOP
        && o[2] == TS
        && o[3] == 10
    {
        info.has_ts = true;
        info.ts_val = u32::from_be_bytes([o[4], o[5], o[6], o[7]]);
        info.ts_ecr = u32::from_be_bytes([o[8], o[9], o[10], o[11]]);
    } else if doff >= 36
        && let Some(o) = f.bytes::<16>(l4 + 20)
        && o[0] == MSS
        && o[1] == 4
        && o[4] == SACK_OK
        && o[5] == 2
        && o[6] == TS
        && o[7] == 10
    {
        info.has_ts = true;
        info.ts_val = u32::from_be_bytes([o[8], o[9], o[10], o[11]]);
        info.ts_ecr = u32::from_be_bytes([o[12], o[13], o[14], o[15]]);
    }
}
