//! IPFIX (RFC 7011) export of ended flows over UDP, for collectors such as
//! nfdump's `nfcapd`, pmacct or a SIEM.
//!
//! One data record per ended flow record (the same records as the JSON
//! lines: a unidirectional flow as one interface saw it, with delta counts
//! since the previous record of that flow). Two templates, IPv4 and IPv6,
//! sent with the first message, every `template_refresh_s` seconds after
//! that, and again after a send error (a collector that was down has lost
//! them). UDP export is best effort: a message the socket refuses is counted
//! as dropped with its records, and export goes on.
//!
//! A record whose connection has application-layer names (see
//! [`crate::flowtable::FlowL7`]) uses one of two more templates, the same
//! fields followed by four variable-length ones (RFC 7011 §7: a length
//! byte, or 255 and two length bytes; empty when the name is unknown):
//!
//! | name | element |
//! |---|---|
//! | `http_host` | IANA 460 httpRequestHost |
//! | `http_url` | IANA 461 httpRequestTarget |
//! | `dns_qname` | enterprise 35632 (ntop) element 205, DNS_QUERY |
//! | `tls_sni` | enterprise 35632 (ntop) element 188, SSL_SERVER_NAME |
//!
//! IANA has no element for a DNS query name or a TLS server name. flowd
//! has no Private Enterprise Number of its own, and inventing one would
//! squat someone else's, so it uses the elements nProbe publishes under
//! ntop's PEN with the same meaning, which tshark, ntopng and other
//! collectors already decode by name. A name longer than a message can
//! hold is cut (at a character boundary) so the record fits.

use std::{
    io,
    net::{Ipv6Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use flowd_common::{DIR_INGRESS, FlowKey, proto::ip};

use crate::flowtable::{EndReason, Ended};

pub const VERSION: u16 = 10;
pub const TEMPLATE_V4: u16 = 256;
pub const TEMPLATE_V6: u16 = 257;
/// The templates of records with application-layer names.
pub const TEMPLATE_V4_L7: u16 = 258;
pub const TEMPLATE_V6_L7: u16 = 259;
/// ntop's Private Enterprise Number (nProbe's elements).
pub const PEN_NTOP: u32 = 35632;
/// A variable-length field (RFC 7011 §7).
const VARLEN: u16 = 65535;
/// The enterprise bit of a field specifier's element id.
const ENTERPRISE: u16 = 0x8000;
/// The application-layer fields after the base ones: (element, PEN; 0 for IANA).
const FIELDS_L7: [(u16, u32); 4] = [
    (460, 0),        // httpRequestHost
    (461, 0),        // httpRequestTarget
    (205, PEN_NTOP), // DNS_QUERY
    (188, PEN_NTOP), // SSL_SERVER_NAME
];
const SET_TEMPLATE: u16 = 2;
const HEADER_LEN: usize = 16;
const SET_HEADER_LEN: usize = 4;

/// Information elements (IANA registry number, length in bytes), in record order.
const FIELDS_V4: [(u16, u16); 17] = [
    (1, 8),   // octetDeltaCount
    (2, 8),   // packetDeltaCount
    (152, 8), // flowStartMilliseconds
    (153, 8), // flowEndMilliseconds
    (8, 4),   // sourceIPv4Address
    (12, 4),  // destinationIPv4Address
    (7, 2),   // sourceTransportPort
    (11, 2),  // destinationTransportPort
    (32, 2),  // icmpTypeCodeIPv4
    (4, 1),   // protocolIdentifier
    (6, 2),   // tcpControlBits
    (5, 1),   // ipClassOfService
    (61, 1),  // flowDirection (0 ingress, 1 egress)
    (10, 4),  // ingressInterface
    (14, 4),  // egressInterface
    (58, 2),  // vlanId
    (136, 1), // flowEndReason
];
const FIELDS_V6: [(u16, u16); 17] = [
    (1, 8),
    (2, 8),
    (152, 8),
    (153, 8),
    (27, 16), // sourceIPv6Address
    (28, 16), // destinationIPv6Address
    (7, 2),
    (11, 2),
    (139, 2), // icmpTypeCodeIPv6
    (4, 1),
    (6, 2),
    (5, 1),
    (61, 1),
    (10, 4),
    (14, 4),
    (58, 2),
    (136, 1),
];

const fn record_len(fields: &[(u16, u16)]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < fields.len() {
        n += fields[i].1 as usize;
        i += 1;
    }
    n
}
pub const RECORD_LEN_V4: usize = record_len(&FIELDS_V4);
pub const RECORD_LEN_V6: usize = record_len(&FIELDS_V6);
const TEMPLATE_SET_LEN: usize = SET_HEADER_LEN + 2 * 4 + (FIELDS_V4.len() + FIELDS_V6.len()) * 4;
/// The set of the two application-layer templates (enterprise fields
/// take 4 more bytes for the PEN).
const L7_TEMPLATE_SET_LEN: usize = TEMPLATE_SET_LEN + 2 * (FIELDS_L7.len() * 4) + 2 * 2 * 4;

/// The smallest message limit that holds a header, the templates and one
/// record (the application-layer templates go in a message of their own
/// when they do not fit in this one).
pub const MIN_MESSAGE: usize = HEADER_LEN + TEMPLATE_SET_LEN + SET_HEADER_LEN + RECORD_LEN_V6;
// At the smallest limit, the application-layer templates fit in a message
// of their own, and a record with names (cut to fit) in another.
const _: () = assert!(HEADER_LEN + L7_TEMPLATE_SET_LEN <= MIN_MESSAGE);
const _: () = assert!(HEADER_LEN + SET_HEADER_LEN + RECORD_LEN_V6 + FIELDS_L7.len() <= MIN_MESSAGE);

/// flowEndReason (RFC 7012): flowd's end reasons are exactly IPFIX's.
fn end_reason(r: EndReason) -> u8 {
    match r {
        EndReason::Idle => 1,
        EndReason::Active => 2,
        EndReason::EndOfFlow => 3,
        EndReason::Forced => 4,
        EndReason::Evicted => 5,
    }
}

/// Builds IPFIX messages; keeps the sequence number of one observation domain.
#[derive(Debug)]
pub struct Encoder {
    domain: u32,
    /// Data records exported before the next message (RFC 7011 §3.1).
    sequence: u32,
    max_len: usize,
}

impl Encoder {
    /// `max_len`: the largest message, bytes (at least [`MIN_MESSAGE`]).
    pub fn new(domain: u32, max_len: usize) -> Self {
        Self {
            domain,
            sequence: 0,
            max_len: max_len.clamp(MIN_MESSAGE, usize::from(u16::MAX)),
        }
    }

    /// The messages carrying `ended` (none if it is empty), the templates
    /// first if `templates`. Each message as a record count and its bytes.
    pub fn messages(
        &mut self,
        ended: &[Ended],
        export_time_s: u32,
        templates: bool,
    ) -> Vec<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        if ended.is_empty() {
            return out;
        }
        let mut msg = Message::start(export_time_s, self.domain, self.sequence, self.max_len);
        if templates {
            msg.templates();
            if msg.buf.len() + L7_TEMPLATE_SET_LEN > self.max_len {
                let done = std::mem::replace(
                    &mut msg,
                    Message::start(export_time_s, self.domain, self.sequence, self.max_len),
                );
                out.push(done.finish());
            }
            msg.l7_templates();
        }
        for e in ended {
            let v4 = Ipv6Addr::from(e.flow.key.src).to_ipv4_mapped().is_some()
                && Ipv6Addr::from(e.flow.key.dst).to_ipv4_mapped().is_some();
            let base = if v4 { RECORD_LEN_V4 } else { RECORD_LEN_V6 };
            // Names cut so the record fits in a message of its own.
            let names = e.flow.l7.as_deref().map(|l7| {
                fit_names(
                    [
                        l7.http_host.as_deref(),
                        l7.http_url.as_deref(),
                        l7.dns_qname.as_deref(),
                        l7.tls_sni.as_deref(),
                    ],
                    self.max_len - HEADER_LEN - SET_HEADER_LEN - base,
                )
            });
            let template = match (v4, names.is_some()) {
                (true, false) => TEMPLATE_V4,
                (false, false) => TEMPLATE_V6,
                (true, true) => TEMPLATE_V4_L7,
                (false, true) => TEMPLATE_V6_L7,
            };
            let len = base + names.as_ref().map_or(0, varlen_size);
            if !msg.fits(template, len) {
                let done = std::mem::replace(
                    &mut msg,
                    Message::start(export_time_s, self.domain, self.sequence, self.max_len),
                );
                out.push(done.finish());
            }
            msg.record(e, v4, template, names.as_ref());
            self.sequence = self.sequence.wrapping_add(1);
        }
        out.push(msg.finish());
        out
    }
}

/// The names as the four variable-length fields will carry them: cut at
/// a character boundary so all four, with their length bytes, take at most
/// `room` bytes (an absent name is an empty field). The shortest take
/// their room first, so only the longest are cut.
fn fit_names(names: [Option<&str>; 4], room: usize) -> [&str; 4] {
    let names = names.map(|n| n.unwrap_or(""));
    let mut order = [0, 1, 2, 3];
    order.sort_by_key(|&i| names[i].len());
    // One length byte per field is always needed.
    let mut left = room.saturating_sub(names.len());
    let mut out = [""; 4];
    for i in order {
        let n = names[i];
        // 255 bytes or more take two more length bytes.
        let max = if left >= 255 + 2 {
            (left - 2).min(usize::from(VARLEN) - 1)
        } else {
            left.min(254)
        };
        let mut cut = n.len().min(max);
        while !n.is_char_boundary(cut) {
            cut -= 1;
        }
        out[i] = &n[..cut];
        left -= cut + if cut >= 255 { 2 } else { 0 };
    }
    out
}

/// Bytes the variable-length fields take, length bytes included.
fn varlen_size(names: &[&str; 4]) -> usize {
    names
        .iter()
        .map(|n| n.len() + if n.len() >= 255 { 3 } else { 1 })
        .sum()
}

struct Message {
    buf: Vec<u8>,
    max_len: usize,
    /// The open data set: its template and where its header starts.
    set: Option<(u16, usize)>,
    records: usize,
}

impl Message {
    fn start(export_time_s: u32, domain: u32, sequence: u32, max_len: usize) -> Self {
        let mut buf = Vec::with_capacity(max_len);
        buf.extend_from_slice(&VERSION.to_be_bytes());
        buf.extend_from_slice(&0u16.to_be_bytes()); // length, set in finish
        buf.extend_from_slice(&export_time_s.to_be_bytes());
        buf.extend_from_slice(&sequence.to_be_bytes());
        buf.extend_from_slice(&domain.to_be_bytes());
        Self {
            buf,
            max_len,
            set: None,
            records: 0,
        }
    }

    fn templates(&mut self) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&SET_TEMPLATE.to_be_bytes());
        self.buf.extend_from_slice(&0u16.to_be_bytes());
        for (id, fields) in [(TEMPLATE_V4, &FIELDS_V4), (TEMPLATE_V6, &FIELDS_V6)] {
            self.buf.extend_from_slice(&id.to_be_bytes());
            self.buf
                .extend_from_slice(&(fields.len() as u16).to_be_bytes());
            for (ie, len) in fields {
                self.buf.extend_from_slice(&ie.to_be_bytes());
                self.buf.extend_from_slice(&len.to_be_bytes());
            }
        }
        self.set_len(start);
    }

    /// The templates of records with names: the base fields, then
    /// [`FIELDS_L7`], variable-length.
    fn l7_templates(&mut self) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&SET_TEMPLATE.to_be_bytes());
        self.buf.extend_from_slice(&0u16.to_be_bytes());
        for (id, fields) in [(TEMPLATE_V4_L7, &FIELDS_V4), (TEMPLATE_V6_L7, &FIELDS_V6)] {
            self.buf.extend_from_slice(&id.to_be_bytes());
            self.buf
                .extend_from_slice(&((fields.len() + FIELDS_L7.len()) as u16).to_be_bytes());
            for (ie, len) in fields {
                self.buf.extend_from_slice(&ie.to_be_bytes());
                self.buf.extend_from_slice(&len.to_be_bytes());
            }
            for (ie, pen) in FIELDS_L7 {
                let id = if pen == 0 { ie } else { ie | ENTERPRISE };
                self.buf.extend_from_slice(&id.to_be_bytes());
                self.buf.extend_from_slice(&VARLEN.to_be_bytes());
                if pen != 0 {
                    self.buf.extend_from_slice(&pen.to_be_bytes());
                }
            }
        }
        self.set_len(start);
    }

    /// Whether a record of `len` bytes of `template` fits; a message
    /// without records or templates takes any (names are cut to fit one).
    fn fits(&self, template: u16, len: usize) -> bool {
        let mut need = len;
        if self.set.map(|s| s.0) != Some(template) {
            need += SET_HEADER_LEN;
        }
        (self.records == 0 && self.buf.len() == HEADER_LEN) || self.buf.len() + need <= self.max_len
    }

    fn record(&mut self, e: &Ended, v4: bool, template: u16, names: Option<&[&str; 4]>) {
        if self.set.map(|s| s.0) != Some(template) {
            self.close_set();
            self.set = Some((template, self.buf.len()));
            self.buf.extend_from_slice(&template.to_be_bytes());
            self.buf.extend_from_slice(&0u16.to_be_bytes());
        }
        let f = &e.flow;
        let k: &FlowKey = &f.key;
        let b = &mut self.buf;
        b.extend_from_slice(&f.counts.bytes.to_be_bytes());
        b.extend_from_slice(&f.counts.packets.to_be_bytes());
        b.extend_from_slice(&(f.first_ns / 1_000_000).to_be_bytes());
        b.extend_from_slice(&(f.last_ns / 1_000_000).to_be_bytes());
        if v4 {
            b.extend_from_slice(&k.src[12..]);
            b.extend_from_slice(&k.dst[12..]);
        } else {
            b.extend_from_slice(&k.src);
            b.extend_from_slice(&k.dst);
        }
        // ICMP keeps type * 256 + code where a port would be.
        let (sport, dport, icmp) = if ip::is_icmp(k.proto) {
            (0, 0, k.dport)
        } else {
            (k.sport, k.dport, 0)
        };
        b.extend_from_slice(&sport.to_be_bytes());
        b.extend_from_slice(&dport.to_be_bytes());
        b.extend_from_slice(&icmp.to_be_bytes());
        b.push(k.proto);
        // tcpControlBits: the 12 flag bits of the TCP header.
        b.extend_from_slice(&(f.counts.tcp_flags & 0x0fff).to_be_bytes());
        b.push(f.counts.dscp << 2);
        let ingress = k.direction == DIR_INGRESS;
        b.push(u8::from(!ingress));
        let (in_if, out_if) = if ingress {
            (k.ifindex, 0)
        } else {
            (0, k.ifindex)
        };
        b.extend_from_slice(&in_if.to_be_bytes());
        b.extend_from_slice(&out_if.to_be_bytes());
        b.extend_from_slice(&k.vlan.to_be_bytes());
        b.push(end_reason(e.reason));
        for n in names.into_iter().flatten() {
            // RFC 7011 §7: one length byte, or 255 and two.
            if n.len() < 255 {
                b.push(n.len() as u8);
            } else {
                b.push(255);
                b.extend_from_slice(&(n.len() as u16).to_be_bytes());
            }
            b.extend_from_slice(n.as_bytes());
        }
        self.records += 1;
    }

    fn close_set(&mut self) {
        if let Some((_, start)) = self.set.take() {
            self.set_len(start);
        }
    }

    fn set_len(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn finish(mut self) -> (usize, Vec<u8>) {
        self.close_set();
        let len = self.buf.len() as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        (self.records, self.buf)
    }
}

/// Messages sent back to back before a short pause (about 90 kB at the
/// default message size, under a default 208 kB socket buffer).
pub const PACE_MESSAGES: usize = 64;

/// Counters of the exporter, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpfixStats {
    pub messages: u64,
    pub records: u64,
    /// Records in messages the socket refused (collector down, no route).
    pub records_dropped: u64,
    pub send_errors: u64,
}

/// Sends ended flows to one collector.
#[derive(Debug)]
pub struct IpfixExporter {
    collector: SocketAddr,
    socket: UdpSocket,
    encoder: Encoder,
    refresh: Duration,
    templates_sent: Option<Instant>,
    last_error_log: Option<Instant>,
    pub stats: IpfixStats,
}

impl IpfixExporter {
    pub fn connect(
        collector: SocketAddr,
        domain: u32,
        refresh: Duration,
        max_len: usize,
    ) -> io::Result<Self> {
        let bind: SocketAddr = if collector.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(bind)
            .and_then(|s| s.connect(collector).map(|()| s))
            .map_err(|e| io::Error::new(e.kind(), format!("IPFIX collector {collector}: {e}")))?;
        Ok(Self {
            collector,
            socket,
            encoder: Encoder::new(domain, max_len),
            refresh,
            templates_sent: None,
            last_error_log: None,
            stats: IpfixStats::default(),
        })
    }

    pub fn collector(&self) -> SocketAddr {
        self.collector
    }

    /// Whether to log a send error now: at most once a minute.
    pub fn should_log_error(&mut self) -> bool {
        let due = self
            .last_error_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        if due {
            self.last_error_log = Some(Instant::now());
        }
        due
    }

    /// Sends the records; returns the first send error, after trying every
    /// message. A large batch (a drain can end 65k flows) is paced: a 1 ms
    /// pause after every [`PACE_MESSAGES`] messages, so a collector's socket
    /// buffer is not overrun by one burst.
    pub fn export(&mut self, ended: &[Ended], export_time_s: u32) -> io::Result<()> {
        let templates = self
            .templates_sent
            .is_none_or(|t| t.elapsed() >= self.refresh);
        let mut first_err = None;
        for (i, (records, msg)) in self
            .encoder
            .messages(ended, export_time_s, templates)
            .into_iter()
            .enumerate()
        {
            if i > 0 && i % PACE_MESSAGES == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            match self.socket.send(&msg) {
                Ok(_) => {
                    self.stats.messages += 1;
                    self.stats.records += records as u64;
                    if i == 0 && templates {
                        self.templates_sent = Some(Instant::now());
                    }
                }
                Err(e) => {
                    self.stats.send_errors += 1;
                    self.stats.records_dropped += records as u64;
                    // The collector may have lost the templates: resend them.
                    self.templates_sent = None;
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use flowd_common::{DIR_EGRESS, ipv4_mapped};

    use super::*;
    use crate::flowtable::Flow;

    fn ended(src: [u8; 16], dst: [u8; 16], proto: u8, packets: u64, dir: u8) -> Ended {
        let key = FlowKey {
            src,
            dst,
            sport: 40000,
            dport: 443,
            proto,
            direction: dir,
            ifindex: 7,
            ..FlowKey::default()
        };
        Ended {
            flow: Flow {
                key,
                counts: flowd_common::FlowCounts {
                    packets,
                    bytes: packets * 100,
                    tcp_flags: 0x1b,
                    dscp: 46,
                    ..Default::default()
                },
                first_ns: 1_700_000_000_123_456_789,
                last_ns: 1_700_000_001_987_654_321,
                ..Flow::default()
            },
            state: None,
            reason: EndReason::EndOfFlow,
            originator: true,
        }
    }

    fn u16_at(b: &[u8], i: usize) -> u16 {
        u16::from_be_bytes([b[i], b[i + 1]])
    }

    #[test]
    fn message_layout_templates_and_one_v4_record() {
        let e = ended(
            ipv4_mapped([198, 18, 0, 1]),
            ipv4_mapped([198, 18, 0, 2]),
            6,
            3,
            DIR_INGRESS,
        );
        let mut enc = Encoder::new(9, 1400);
        let msgs = enc.messages(&[e], 1_700_000_100, true);
        assert_eq!(msgs.len(), 1);
        let (n, m) = &msgs[0];
        assert_eq!(*n, 1);
        assert_eq!(u16_at(m, 0), 10);
        assert_eq!(usize::from(u16_at(m, 2)), m.len());
        assert_eq!(&m[4..8], &1_700_000_100u32.to_be_bytes());
        assert_eq!(&m[8..12], &0u32.to_be_bytes(), "sequence starts at 0");
        assert_eq!(&m[12..16], &9u32.to_be_bytes());
        // Template set, then a data set of template 256 with one 62-byte record.
        assert_eq!(u16_at(m, 16), 2);
        assert_eq!(usize::from(u16_at(m, 18)), TEMPLATE_SET_LEN);
        // The application-layer templates' set follows.
        let t = 16 + TEMPLATE_SET_LEN;
        assert_eq!(u16_at(m, t), 2);
        assert_eq!(usize::from(u16_at(m, t + 2)), L7_TEMPLATE_SET_LEN);
        assert_eq!(L7_TEMPLATE_SET_LEN, 196);
        let d = t + L7_TEMPLATE_SET_LEN;
        assert_eq!(u16_at(m, d), TEMPLATE_V4);
        assert_eq!(usize::from(u16_at(m, d + 2)), 4 + RECORD_LEN_V4);
        assert_eq!(RECORD_LEN_V4, 62);
        let r = &m[d + 4..];
        assert_eq!(&r[0..8], &300u64.to_be_bytes());
        assert_eq!(&r[8..16], &3u64.to_be_bytes());
        assert_eq!(&r[16..24], &1_700_000_000_123u64.to_be_bytes());
        assert_eq!(&r[24..32], &1_700_000_001_987u64.to_be_bytes());
        assert_eq!(&r[32..40], &[198, 18, 0, 1, 198, 18, 0, 2]);
        assert_eq!(
            (u16_at(r, 40), u16_at(r, 42), u16_at(r, 44)),
            (40000, 443, 0)
        );
        assert_eq!((r[46], u16_at(r, 47), r[49], r[50]), (6, 0x1b, 46 << 2, 0));
        assert_eq!(&r[51..59], &[0, 0, 0, 7, 0, 0, 0, 0]);
        assert_eq!((u16_at(r, 59), r[61]), (0, 3));
        // The next message continues the sequence and has no templates.
        let again = enc.messages(
            &[ended([0xfd; 16], [0xfd; 16], 17, 1, DIR_EGRESS)],
            0,
            false,
        );
        let m2 = &again[0].1;
        assert_eq!(&m2[8..12], &1u32.to_be_bytes());
        assert_eq!(u16_at(m2, 16), TEMPLATE_V6);
        assert_eq!(m2.len(), 16 + 4 + RECORD_LEN_V6);
        let r2 = &m2[20..];
        assert_eq!(r2[74], 1, "egress");
        assert_eq!(&r2[75..83], &[0, 0, 0, 0, 0, 0, 0, 7]);
    }

    #[test]
    fn icmp_type_code_goes_to_its_own_element() {
        let mut e = ended(
            ipv4_mapped([198, 18, 0, 1]),
            ipv4_mapped([198, 18, 0, 2]),
            1,
            1,
            DIR_INGRESS,
        );
        e.flow.key.sport = 0;
        e.flow.key.dport = 8 << 8; // echo request
        let msgs = Encoder::new(1, 1400).messages(&[e], 0, false);
        let r = &msgs[0].1[20..];
        assert_eq!(
            (u16_at(r, 40), u16_at(r, 42), u16_at(r, 44)),
            (0, 0, 0x0800)
        );
    }

    #[test]
    fn splits_at_the_size_limit_and_keeps_every_record() {
        let v4 = ended(
            ipv4_mapped([198, 18, 0, 1]),
            ipv4_mapped([198, 18, 0, 2]),
            17,
            1,
            DIR_INGRESS,
        );
        let v6 = ended([0xfd; 16], [0xfe; 16], 17, 1, DIR_INGRESS);
        let batch: Vec<Ended> = (0..100)
            .map(|i| if i % 3 == 0 { v6.clone() } else { v4.clone() })
            .collect();
        let mut enc = Encoder::new(1, 512);
        let msgs = enc.messages(&batch, 0, true);
        assert!(msgs.len() > 1);
        let mut seq = 0u32;
        for (n, m) in &msgs {
            assert!(m.len() <= 512, "{}", m.len());
            assert_eq!(usize::from(u16_at(m, 2)), m.len());
            assert_eq!(&m[8..12], &seq.to_be_bytes());
            // Walk the sets: their lengths add up and records are whole.
            let (mut i, mut recs) = (16, 0);
            while i < m.len() {
                let (id, len) = (u16_at(m, i), usize::from(u16_at(m, i + 2)));
                match id {
                    2 => {}
                    TEMPLATE_V4 => recs += (len - 4) / RECORD_LEN_V4,
                    TEMPLATE_V6 => recs += (len - 4) / RECORD_LEN_V6,
                    _ => panic!("set id {id}"),
                }
                i += len;
            }
            assert_eq!(i, m.len());
            assert_eq!(recs, *n);
            seq += *n as u32;
        }
        assert_eq!(seq, 100);
    }
}

#[cfg(test)]
#[path = "ipfix_l7_tests.rs"]
mod l7_tests;
