//! The application layer's families (issue 12): what the L7 events say
//! (see [`crate::export::l7stats`]), the security signals (see
//! [`crate::export::l7signals`]) and the engine's own counters
//! ([`crate::l7::L7Stats`]: parse errors and everything it dropped).
//! Written only when the L7 selection is on.

use std::collections::BTreeMap;

use super::{
    Snapshot,
    family::{Body, Family, Labels, Num, labels, one},
};
use crate::export::{
    histogram::HistogramSnapshot,
    l7signals::{DROP_TABLES, Signal},
    l7stats::PeerKey,
};

fn per_device<K: AsRef<str>>(
    m: &BTreeMap<(String, K), u64>,
    label: &'static str,
) -> Vec<(Labels, Num)> {
    m.iter()
        .map(|((d, v), n)| (labels([("device", d), (label, v.as_ref())]), Num::U(*n)))
        .collect()
}

fn histograms(m: &BTreeMap<PeerKey, HistogramSnapshot>) -> Body {
    Body::Histogram(
        m.iter()
            .map(|((d, p), h)| (labels([("device", d), ("peer", p)]), h.clone()))
            .collect(),
    )
}

fn by(label: &'static str, pairs: &[(&str, u64)]) -> Vec<(Labels, Num)> {
    pairs
        .iter()
        .map(|(v, n)| (labels([(label, v)]), Num::U(*n)))
        .collect()
}

pub(super) fn families(s: &Snapshot, out: &mut Vec<Family>) {
    let Some(l) = &s.l7_metrics else {
        return;
    };
    out.push(Family::counter(
        "flowd_l7_events",
        "Application-layer events (HTTP requests, DNS queries, TLS ClientHellos), by device and kind.",
        per_device(&l.events, "kind"),
    ));
    out.push(Family::counter(
        "flowd_dns_responses",
        "DNS responses paired with their query, by rcode (noerror, formerr, servfail, nxdomain, notimp, refused, ..., else its number).",
        per_device(&l.dns_responses, "rcode"),
    ));
    out.push(Family {
        name: "flowd_dns_latency_seconds",
        help: "DNS response time (response minus query, packet timestamps), by device and the remote end's peer group.",
        body: histograms(&l.dns_latency),
    });
    out.push(Family::counter(
        "flowd_http_responses",
        "HTTP/1.x responses paired with their request, by status class (1xx-5xx, other).",
        per_device(&l.http_responses, "class"),
    ));
    out.push(Family {
        name: "flowd_http_latency_seconds",
        help: "HTTP response time (status line minus request, packet timestamps), by device and the remote end's peer group.",
        body: histograms(&l.http_latency),
    });
    out.push(Family::counter(
        "flowd_tls_handshakes",
        "TLS ClientHellos, by negotiated version (ssl3, 1.0-1.3, other; none: no ServerHello seen).",
        per_device(&l.tls_handshakes, "version"),
    ));
    signals(s, out);
    engine(s, out);
}

fn signals(s: &Snapshot, out: &mut Vec<Family>) {
    let Some(l) = &s.l7_metrics else {
        return;
    };
    let g = &l.signals;
    let per_signal = |v: &[u64; 5]| -> Vec<(Labels, Num)> {
        Signal::ALL
            .iter()
            .map(|sig| (labels([("signal", sig.as_str())]), Num::U(v[*sig as usize])))
            .collect()
    };
    out.push(Family::counter(
        "flowd_l7_signals",
        "Application-layer events showing a security signal: dns_nxdomain, dns_tunnel (long or high-entropy query name), http_to_tls_host (plain HTTP to a host seen with TLS), tls_unusual_port, http_on_443.",
        per_signal(&g.events),
    ));
    out.push(Family::gauge(
        "flowd_l7_suspects",
        "Clients over a signal's threshold within a window (see /api/v1/suspects), by signal.",
        per_signal(&g.suspects),
    ));
    out.push(Family::counter(
        "flowd_l7_suspects_flagged",
        "Clients flagged by an application-layer signal since start.",
        per_signal(&g.flagged),
    ));
    out.push(Family::counter(
        "flowd_l7_signal_state_dropped",
        "Entries the signal detector dropped at its memory bounds: clients (the quietest, with their counts), tls_hosts (the oldest SNI names), suspects (new suspects not kept).",
        DROP_TABLES
            .iter()
            .zip(g.dropped)
            .map(|(t, n)| (labels([("table", t)]), Num::U(n)))
            .collect(),
    ));
}

fn engine(s: &Snapshot, out: &mut Vec<Family>) {
    let Some(l) = &s.l7_metrics else {
        return;
    };
    let e = &l.engine;
    out.push(Family::counter(
        "flowd_l7_packets",
        "Selected packets handed to the L7 engine.",
        one(e.packets),
    ));
    out.push(Family::counter(
        "flowd_l7_unrecognised_packets",
        "Selected packets whose payload started no HTTP, TLS or DNS message.",
        one(e.unrecognised),
    ));
    out.push(Family::counter(
        "flowd_l7_parse_errors",
        "Messages the parser rejected (malformed, not the protocol, DNS compression loops), by kind.",
        by(
            "kind",
            &[
                ("http", e.http_parse_errors),
                ("dns", e.dns_parse_errors),
                ("tls", e.tls_parse_errors),
            ],
        ),
    ));
    out.push(Family::counter(
        "flowd_l7_truncated",
        "Messages cut short (snap length, reassembly bound) whose fields that fitted were kept, by kind.",
        by(
            "kind",
            &[
                ("http", e.http_truncated),
                ("dns", e.dns_truncated),
                ("tls", e.tls_truncated),
            ],
        ),
    ));
    out.push(Family::counter(
        "flowd_l7_retransmitted_segments",
        "TCP segments repeating bytes the L7 engine already parsed.",
        one(e.retransmissions),
    ));
    out.push(Family::counter(
        "flowd_l7_reassembly_dropped",
        "Messages being reassembled that were dropped, by reason: gap (a missing segment), limit (the per-message segment or byte bound), expired (incomplete after the timeout), evicted (the flow bound, oldest first).",
        by(
            "reason",
            &[
                ("gap", e.reasm_gap),
                ("limit", e.reasm_limit),
                ("expired", e.reasm_expired),
                ("evicted", e.reasm_evicted),
            ],
        ),
    ));
    out.push(Family::counter(
        "flowd_l7_unmatched_responses",
        "Responses with no request waiting (its request not seen, or already answered), by kind.",
        by(
            "kind",
            &[
                ("http", e.http_unmatched_responses),
                ("dns", e.dns_unmatched_responses),
                ("tls", e.tls_unmatched_responses),
            ],
        ),
    ));
    out.push(Family::counter(
        "flowd_l7_unanswered_requests",
        "Requests emitted without a response, by reason: timeout (none within the response timeout, a repeated DNS query ID, or shutdown), evicted (the pending bound, oldest first). They are still events.",
        by(
            "reason",
            &[("timeout", e.unanswered), ("evicted", e.pending_evicted)],
        ),
    ));
    out.push(Family::gauge(
        "flowd_l7_pending_requests",
        "Requests waiting for their response.",
        one(l.pending),
    ));
    out.push(Family::gauge(
        "flowd_l7_reassembly_buffers",
        "Messages being reassembled across TCP segments.",
        one(l.reassembling),
    ));
}
