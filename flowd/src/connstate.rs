//! TCP connection state in Zeek's `conn_state` vocabulary, from the two
//! directions of a connection.
//!
//! | state  | meaning |
//! |--------|---------|
//! | S0     | SYN seen from the originator, no reply |
//! | S1     | established, not terminated |
//! | SF     | established and closed with FIN both ways |
//! | REJ    | SYN answered by RST (rejected) |
//! | S2     | established, only the originator sent FIN |
//! | S3     | established, only the responder sent FIN |
//! | RSTO   | established, the originator aborted (RST) |
//! | RSTR   | established, the responder aborted (RST) |
//! | RSTOS0 | originator sent SYN then RST, no SYN-ACK seen |
//! | RSTRH  | responder sent SYN-ACK then RST, no SYN seen |
//! | SH     | originator sent SYN then FIN, no SYN-ACK seen |
//! | SHR    | responder sent SYN-ACK then FIN, no SYN seen |
//! | OTH    | no SYN seen: midstream traffic |
//!
//! flowd sees counters per direction (SYN, FIN and RST counts and the OR of
//! all flags), not the order of every packet, so it decides from those: a
//! SYN in the originator's direction is its SYN, one in the responder's
//! direction is the SYN-ACK.

/// What one direction of a connection showed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Side {
    pub packets: u64,
    pub syn: u64,
    pub fin: u64,
    pub rst: u64,
}

/// An endpoint's TCP state as Zeek tracks it, derived from counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Inactive,
    SynSent,
    SynAckSent,
    /// Traffic without a SYN seen (mid-stream).
    Partial,
    Established,
    /// Sent a FIN.
    Closed,
    /// Sent a RST.
    Reset,
}

fn endpoint(me: &Side, peer: &Side, originator: bool) -> Endpoint {
    if me.packets == 0 {
        Endpoint::Inactive
    } else if me.rst > 0 {
        Endpoint::Reset
    } else if me.fin > 0 {
        Endpoint::Closed
    } else if me.syn > 0 && peer.syn > 0 {
        Endpoint::Established
    } else if me.syn > 0 {
        if originator {
            Endpoint::SynSent
        } else {
            Endpoint::SynAckSent
        }
    } else {
        Endpoint::Partial
    }
}

/// Zeek's conn_state for a connection whose originator sent `orig` and
/// responder sent `resp` (`resp.packets == 0` when no reply was seen).
/// It follows Zeek's `conn_state()` (base/protocols/conn/main.zeek) over
/// endpoint states derived from the counters.
pub fn conn_state(orig: &Side, resp: &Side) -> &'static str {
    use Endpoint::*;
    let os = endpoint(orig, resp, true);
    let rs = endpoint(resp, orig, false);
    let o_inactive = matches!(os, Inactive | Partial);
    let r_inactive = matches!(rs, Inactive | Partial);
    if rs == Reset {
        if matches!(os, SynSent | SynAckSent) {
            "REJ"
        } else if o_inactive {
            "RSTRH"
        } else {
            "RSTR"
        }
    } else if os == Reset {
        if r_inactive {
            // SYN, then RST, nothing from the responder in between.
            if orig.syn > 0 && resp.packets == 0 {
                "RSTOS0"
            } else {
                "OTH"
            }
        } else {
            "RSTO"
        }
    } else if rs == Closed && os == Closed {
        "SF"
    } else if os == Closed {
        if r_inactive { "SH" } else { "S2" }
    } else if rs == Closed {
        if o_inactive { "SHR" } else { "S3" }
    } else if os == SynSent && rs == Inactive {
        "S0"
    } else if os == Established && rs == Established {
        "S1"
    } else {
        "OTH"
    }
}

/// Whether a TCP connection is over: FIN both ways, or an RST.
pub fn is_closed(orig: &Side, resp: &Side) -> bool {
    (orig.fin > 0 && resp.fin > 0) || orig.rst > 0 || resp.rst > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(syn: u64, fin: u64, rst: u64) -> Side {
        Side {
            packets: syn + fin + rst + 1,
            syn,
            fin,
            rst,
        }
    }
    const NONE: Side = Side {
        packets: 0,
        syn: 0,
        fin: 0,
        rst: 0,
    };

    #[test]
    fn every_state() {
        let cases = [
            (side(1, 0, 0), NONE, "S0"),
            (side(1, 0, 0), side(1, 0, 0), "S1"),
            (side(1, 1, 0), side(1, 1, 0), "SF"),
            (side(1, 0, 0), side(0, 0, 1), "REJ"),
            (side(1, 1, 0), side(1, 0, 0), "S2"),
            (side(1, 0, 0), side(1, 1, 0), "S3"),
            (side(1, 0, 1), side(1, 0, 0), "RSTO"),
            (side(1, 0, 0), side(1, 0, 1), "RSTR"),
            (side(1, 0, 1), NONE, "RSTOS0"),
            (side(0, 0, 0), side(1, 0, 1), "RSTRH"),
            (side(1, 1, 0), NONE, "SH"),
            (side(0, 0, 0), side(1, 1, 0), "SHR"),
            (side(0, 0, 0), side(0, 1, 0), "SHR"),
            (side(0, 0, 0), side(0, 0, 0), "OTH"),
            (side(0, 1, 0), side(0, 1, 0), "SF"),
        ];
        for (o, r, want) in cases {
            assert_eq!(conn_state(&o, &r), want, "orig {o:?} resp {r:?}");
        }
    }

    #[test]
    fn closed_after_fin_both_ways_or_rst() {
        assert!(is_closed(&side(1, 1, 0), &side(1, 1, 0)));
        assert!(!is_closed(&side(1, 1, 0), &side(1, 0, 0)));
        assert!(is_closed(&side(1, 0, 0), &side(0, 0, 1)));
    }
}
