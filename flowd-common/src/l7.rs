//! The kernel half of the application layer (issue 12): selected packets'
//! first payload bytes go to user space through the `L7_EVENTS` ring, one
//! fixed-size [`L7Sample`] each.

use core::mem::size_of;

use crate::FlowKey;

/// The most payload bytes a sample carries (compile-time; `L7Control::snap_len`
/// may lower it).
pub const L7_SNAP_MAX: usize = 512;
/// Bytes of the ring buffer that carries samples to user space.
pub const L7_EVENTS_BYTES: u32 = 4 << 20;
/// Default copy budget: samples per second, per CPU.
pub const L7_DEFAULT_BUDGET_PER_S: u32 = 20_000;
/// Default continuation: segments of the same direction copied after a
/// selected request or ClientHello.
pub const L7_DEFAULT_CONTINUATION: u32 = 3;
/// DNS ports the kernel recognises (0 = unused slot).
pub const L7_DNS_PORTS: usize = 4;
/// `L7Sample::flags`: the packet is TCP (`tcp_seq`, `tcp_flags` are real).
pub const L7_SAMPLE_TCP: u8 = 1;
/// `L7Sample::flags`: selected as a continuation segment, not by content.
pub const L7_SAMPLE_CONTINUATION: u8 = 2;
/// The continuation mark lives in bits 1..7 of the flow value's
/// `counts.seq_valid` (bit 0 is the sequence state's valid bit): the
/// segments with payload still to copy after a selected request or
/// ClientHello, or [`L7_CONT_SPENT`]. A byte of a cache line the packet
/// already touches, and `FlowStats` keeps its 80 bytes (at 88 the
/// verifier's work grew by a sixth).
pub const L7_CONT_SHIFT: u32 = 1;
/// The mark once the continuation segments are spent: the next segment
/// with payload that is not selected by content counts
/// `counter::L7_CONTINUATION_LIMIT` (once) and clears it.
pub const L7_CONT_SPENT: u8 = 0x7f;

/// DNS ports the programs always know (the config cannot remove them).
pub const L7_FIXED_DNS_PORTS: [u16; 2] = [53, 5353];

/// `Control::l7_dns_ports` for a list of DNS ports (0 = unused slot): the
/// ports besides [`L7_FIXED_DNS_PORTS`], unused slots repeating 53.
/// `None` when more than two are left (the config allows two).
pub fn extra_dns_ports(ports: &[u16; L7_DNS_PORTS]) -> Option<[u16; 2]> {
    let mut out = [L7_FIXED_DNS_PORTS[0]; 2];
    let mut n = 0;
    for &p in ports {
        if p == 0 || L7_FIXED_DNS_PORTS.contains(&p) || out[..n].contains(&p) {
            continue;
        }
        *out.get_mut(n)? = p;
        n += 1;
    }
    Some(out)
}

/// Whether `port` is a DNS port: 53, 5353 or one of `extra`
/// (`Control::l7_dns_ports`).
#[inline(always)]
pub const fn is_dns_port(port: u16, extra: [u16; 2]) -> bool {
    port == L7_FIXED_DNS_PORTS[0]
        || port == L7_FIXED_DNS_PORTS[1]
        || port == extra[0]
        || port == extra[1]
}

/// Whether a TCP payload whose first two bytes are `lead` (big-endian)
/// can start what the selection takes by content: a TLS handshake record
/// (content type 22, version 3.x) or an HTTP/1.x request or status line
/// (`GET`, `PUT`, `POST`, `PATCH`, `HEAD`, `HTTP/1.`, `DELETE`, `OPTIONS`,
/// `CONNECT`, `TRACE`). First one mask test of the first byte (every other
/// first byte, TLS application data's 23 among them, is out there), then
/// the two-byte prefixes; the selection itself checks the rest.
#[inline(always)]
pub const fn may_start_l7(lead: u16) -> bool {
    const BASE: u8 = 22;
    const MASK: u64 = 1 << (22 - BASE)
        | 1 << (b'G' - BASE)
        | 1 << (b'P' - BASE)
        | 1 << (b'H' - BASE)
        | 1 << (b'D' - BASE)
        | 1 << (b'O' - BASE)
        | 1 << (b'C' - BASE)
        | 1 << (b'T' - BASE);
    let d = ((lead >> 8) as u8).wrapping_sub(BASE);
    if d >= 64 || MASK >> d & 1 == 0 {
        return false;
    }
    matches!(
        &lead.to_be_bytes(),
        [22, 3] | b"GE" | b"PU" | b"PO" | b"PA" | b"HE" | b"HT" | b"DE" | b"OP" | b"CO" | b"TR"
    )
}

/// The settings of the selection, written by the daemon (`L7_CONTROL[0]`).
/// `snap_len == 0` switches the selection off (the default of a new map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L7Control {
    /// Payload bytes copied per sample, 1..=`L7_SNAP_MAX`.
    pub snap_len: u32,
    /// Samples per second per CPU (0: none).
    pub budget_per_s: u32,
    /// Continuation segments after a request / ClientHello (at most 126).
    pub continuation: u32,
    pub _pad: u32,
    /// UDP/TCP ports that carry DNS (0 = unused).
    pub dns_ports: [u16; L7_DNS_PORTS],
}
const _: () = assert!(size_of::<L7Control>() == 24);

/// The per-CPU copy budget's window (`L7_BUDGET[0]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L7Budget {
    /// Start of the current one-second window (the packet clock).
    pub window_ns: u64,
    /// Samples taken in it.
    pub used: u64,
    /// Scratch: the packet's payload offset and wire length, stored and
    /// read back so the verifier sees unknown values and checks the
    /// selection once for all parse paths, not once per header layout.
    pub off: u32,
    pub wire: u32,
    /// Scratch: TCP sequence number and flags byte, and whether TCP.
    pub seq: u32,
    pub tcp_flags: u8,
    pub tcp: u8,
    pub _pad: u16,
}
const _: () = assert!(size_of::<L7Budget>() == 32);

/// One selected packet. 584 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L7Sample {
    /// Kernel monotonic clock, or the capture time in replay (as the flow
    /// maps' first-seen).
    pub ts_ns: u64,
    /// As in the flow map (ifindex and direction set).
    pub key: FlowKey,
    pub direction: u8,
    /// TCP flag bits (byte 13).
    pub tcp_flags: u8,
    /// `L7_SAMPLE_*`.
    pub flags: u8,
    pub _pad0: u8,
    pub tcp_seq: u32,
    /// L4 payload length on the wire.
    pub wire_len: u32,
    /// Bytes of `payload` that are valid.
    pub cap_len: u32,
    pub _pad1: u32,
    pub payload: [u8; L7_SNAP_MAX],
}
const _: () = assert!(size_of::<L7Sample>() == 72 + L7_SNAP_MAX);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_dns_ports_are_those_besides_53_and_5353() {
        assert_eq!(extra_dns_ports(&[53, 5353, 0, 0]), Some([53, 53]));
        assert_eq!(extra_dns_ports(&[53, 5353, 5300, 0]), Some([5300, 53]));
        assert_eq!(extra_dns_ports(&[5300, 53, 5353, 8053]), Some([5300, 8053]));
        assert_eq!(extra_dns_ports(&[1, 2, 3, 0]), None);
        let extra = [5300, 53];
        for p in [53, 5353, 5300] {
            assert!(is_dns_port(p, extra), "{p}");
        }
        for p in [0, 52, 80, 443, 5301, 40000] {
            assert!(!is_dns_port(p, extra), "{p}");
        }
    }

    #[test]
    fn first_two_bytes_that_may_start_l7() {
        let yes: Vec<[u8; 2]> = (0..=u16::MAX)
            .filter(|&w| may_start_l7(w))
            .map(u16::to_be_bytes)
            .collect();
        let mut want: Vec<[u8; 2]> = [
            [22, 3],
            *b"GE",
            *b"PU",
            *b"PO",
            *b"PA",
            *b"HE",
            *b"HT",
            *b"DE",
            *b"OP",
            *b"CO",
            *b"TR",
        ]
        .to_vec();
        want.sort();
        assert_eq!(yes, want);
        // Every method and status line the selection takes passes.
        for s in [
            &b"GET "[..],
            b"PUT ",
            b"POST",
            b"PATCH",
            b"HEAD",
            b"HTTP/1.",
            b"DELETE",
            b"OPTIONS",
            b"CONNECT",
            b"TRACE",
            &[22, 3, 1],
        ] {
            assert!(may_start_l7(u16::from_be_bytes([s[0], s[1]])), "{s:?}");
        }
    }
}
