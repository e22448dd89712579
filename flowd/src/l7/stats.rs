//! What the engine counted: events, parse errors per kind, and everything it
//! dropped. Plain counters, for the metrics to export.

/// Counters of one [`super::Engine`]; they only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L7Stats {
    /// Packets handed to the engine.
    pub packets: u64,
    /// Packets whose payload matched no protocol.
    pub unrecognised: u64,

    /// Events taken from the engine, by kind.
    pub http_events: u64,
    pub dns_events: u64,
    pub tls_events: u64,

    /// HTTP request or status lines httparse rejected.
    pub http_parse_errors: u64,
    /// HTTP requests emitted from a header block cut short (snap length,
    /// reassembly bound): the fields that were there.
    pub http_truncated: u64,
    /// TLS handshake records tls-parser rejected, or cut short.
    pub tls_parse_errors: u64,
    /// ClientHellos cut by the snap length inside an extension other than
    /// padding: emitted with the fields captured, without JA4.
    pub tls_truncated: u64,
    /// DNS messages that were not DNS (bad header, name, compression loop);
    /// also whole responses whose answers do not parse (a looping answer
    /// name, more answers announced than present): those still pair with
    /// their query, with the answers before the bad one.
    pub dns_parse_errors: u64,
    /// DNS responses cut short (snap length, reassembly bound): the answers
    /// that fitted were kept.
    pub dns_truncated: u64,

    /// TCP segments that repeat bytes already parsed (not new requests).
    pub retransmissions: u64,
    /// Reassembly buffers dropped at a sequence gap.
    pub reasm_gap: u64,
    /// Reassembly buffers dropped at the per-flow segment or byte bound.
    pub reasm_limit: u64,
    /// Reassembly buffers evicted, oldest first, at the flow bound.
    pub reasm_evicted: u64,
    /// Reassembly buffers dropped by age.
    pub reasm_expired: u64,

    /// Responses with no request waiting (HTTP, DNS, TLS).
    pub http_unmatched_responses: u64,
    pub dns_unmatched_responses: u64,
    pub tls_unmatched_responses: u64,
    /// Requests emitted without a response because the pending table was
    /// full (oldest first); they are still events.
    pub pending_evicted: u64,
    /// Requests emitted without a response after the timeout or at flush.
    pub unanswered: u64,
}

impl L7Stats {
    /// All parse errors, for a single total.
    pub fn parse_errors(&self) -> u64 {
        self.http_parse_errors + self.tls_parse_errors + self.dns_parse_errors
    }
}
