//! The application layer in user space: HTTP/1.x requests, DNS queries and
//! TLS handshakes out of the first bytes of selected packets (issue 12).
//!
//! The kernel (or a capture) hands [`L7Packet`]s to an [`Engine`]; the
//! engine detects the protocol by content ([`detect`]), reassembles requests
//! and ClientHellos split across a few TCP segments ([`reasm`]), parses them
//! with maintained crates ([`http`]: httparse, [`tls`]: tls-parser, [`dns`]:
//! simple-dns), pairs each request with its response ([`pair`]) and emits
//! one [`L7Event`] per request, query or handshake ([`event`]). Every
//! parse failure and every dropped buffer is counted in [`L7Stats`]; nothing
//! here panics on input.
//!
//! What the kernel half (issue 12's ring buffer) must hand over, per
//! selected packet: the flow key as the flow table has it, the direction,
//! the wall-clock timestamp (converted from the kernel clock), the TCP
//! sequence number and flags, the first snap-length bytes of the L4
//! payload and its length on the wire (so a cut is known). Continuation
//! segments of a marked flow come in order of arrival; the engine checks
//! their sequence numbers itself (gaps and retransmissions are counted).
//! The daemon calls [`Engine::poll`] about once a second and
//! [`Engine::flush`] at shutdown.
//!
//! Pairing is per interface: a response is matched on the same `ifindex`
//! and VLAN as its request (a host sees both on one interface; a router
//! that sees them on two does not pair them, and both are still counted).

pub mod detect;
pub mod dns;
pub mod engine;
pub mod event;
pub mod http;
pub mod ja4;
mod names;
pub mod pair;
pub mod reasm;
pub mod recent;
pub mod stats;
pub mod tls;

#[cfg(test)]
mod tests;

use bytes::Bytes;
use flowd_common::FlowKey;

pub use engine::{Engine, L7Config};
pub use event::{DnsInfo, HttpInfo, L7Event, L7Kind, TlsInfo};
pub use stats::L7Stats;

/// The bytes the kernel copies per selected packet by default.
pub const DEFAULT_SNAP: usize = 512;

/// TCP fields the reassembly needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpMeta {
    pub seq: u32,
    /// `flowd_common::proto::tcp` flag bits.
    pub flags: u8,
}

/// One selected packet: its flow key (as in the flow table), direction,
/// and the first bytes of its L4 payload.
#[derive(Clone, Debug)]
pub struct L7Packet {
    /// Wall-clock nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub key: FlowKey,
    /// `DIR_INGRESS` or `DIR_EGRESS`.
    pub direction: u8,
    /// `Some` for TCP.
    pub tcp: Option<TcpMeta>,
    /// At most the first snap-length bytes of the L4 payload.
    pub payload: Bytes,
    /// The payload's length on the wire (`payload` may be shorter).
    pub wire_payload_len: u32,
}

impl L7Packet {
    /// The payload was cut by the snap length: what follows is missing.
    pub fn truncated(&self) -> bool {
        (self.payload.len() as u64) < u64::from(self.wire_payload_len)
    }
}

/// A parser's answer on the bytes it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// A whole message, and how many bytes it took.
    Done(T, usize),
    /// The fields that were there, from a message cut short (snap length,
    /// reassembly bound): emitted, and counted as truncated.
    Cut(T),
    /// Not enough bytes yet.
    More,
    /// Not this protocol, or malformed.
    Error,
}
