//! DNS messages, with simple-dns.
//!
//! simple-dns rather than hickory-proto: it parses borrowed slices without
//! building a resolver's object model, has no dependencies, and bounds
//! names (255 bytes, which also ends compression-pointer loops) and label
//! lengths itself: a loop or an absurd length is an error, never a hang.
//! Its parser wants whole sections, so a response cut by the snap length is
//! parsed again with fewer answers announced (a binary search over the
//! answer count): the answers that fit are kept and it counts as truncated.

use std::net::{Ipv4Addr, Ipv6Addr};

use simple_dns::{Packet, rdata::RData};

use super::Parsed;

/// One DNS message's fields for the event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsMsg {
    pub id: u16,
    pub response: bool,
    /// The header's RCODE (4 bits).
    pub rcode: u8,
    pub qname: Option<String>,
    pub qtype: Option<u16>,
    pub answers: Vec<String>,
    /// Answers dropped so that the rest parses: cut short (only the
    /// answers that fitted) or malformed; the caller knows which.
    pub truncated: bool,
}

/// The 12-byte header's counts.
const HEADER: usize = 12;

/// A message over UDP (or TCP without its prefix).
/// `None`: not DNS, or malformed.
pub fn parse_message(p: &[u8]) -> Option<DnsMsg> {
    if p.len() < HEADER {
        return None;
    }
    let id = u16::from_be_bytes([p[0], p[1]]);
    let response = p[2] & 0x80 != 0;
    let rcode = p[3] & 0x0f;
    if let Ok(pkt) = Packet::parse(p) {
        return Some(fields(&pkt, id, response, rcode, false));
    }
    if !response {
        return None;
    }
    // Cut short: the largest answer count that still parses.
    let announced = u16::from_be_bytes([p[6], p[7]]);
    let mut copy = p.to_vec();
    copy[8..12].fill(0);
    let try_with = |copy: &mut Vec<u8>, n: u16| {
        copy[6..8].copy_from_slice(&n.to_be_bytes());
        Packet::parse(copy)
            .ok()
            .map(|pkt| fields(&pkt, id, response, rcode, true))
    };
    let mut best = try_with(&mut copy, 0)?;
    let (mut lo, mut hi) = (1u32, u32::from(announced));
    while lo <= hi {
        let mid = (lo + hi) / 2;
        match try_with(&mut copy, mid as u16) {
            Some(m) => {
                best = m;
                lo = mid + 1;
            }
            None => hi = mid - 1,
        }
    }
    Some(best)
}

fn fields(pkt: &Packet<'_>, id: u16, response: bool, rcode: u8, truncated: bool) -> DnsMsg {
    let q = pkt.questions.first();
    DnsMsg {
        id,
        response,
        rcode,
        qname: q.map(|q| q.qname.to_string()),
        qtype: q.map(|q| u16::from(q.qtype)),
        answers: pkt
            .answers
            .iter()
            .filter_map(|rr| answer(&rr.rdata))
            .collect(),
        truncated,
    }
}

fn answer(r: &RData<'_>) -> Option<String> {
    Some(match r {
        RData::A(a) => Ipv4Addr::from(a.address).to_string(),
        RData::AAAA(a) => Ipv6Addr::from(a.address).to_string(),
        RData::CNAME(n) => n.0.to_string(),
        RData::PTR(n) => n.0.to_string(),
        RData::NS(n) => n.0.to_string(),
        RData::MX(mx) => mx.exchange.to_string(),
        _ => return None,
    })
}

/// A message over TCP at `p`'s start: a 2-byte length, then the message.
pub fn parse_tcp(p: &[u8], last: bool) -> Parsed<DnsMsg> {
    if p.len() < 2 {
        return if last { Parsed::Error } else { Parsed::More };
    }
    let len = usize::from(u16::from_be_bytes([p[0], p[1]]));
    if len < HEADER {
        return Parsed::Error;
    }
    match p.get(2..2 + len) {
        Some(m) => parse_message(m).map_or(Parsed::Error, |m| Parsed::Done(m, 2 + len)),
        None if !last => Parsed::More,
        // Cut: a response keeps the answers that fit.
        None => match parse_message(&p[2..]) {
            Some(m) if m.response => Parsed::Cut(m),
            _ => Parsed::Error,
        },
    }
}
