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

/// Zeek's conn_state for a connection whose originator sent `orig` and
/// responder sent `resp` (`resp.packets == 0` when no reply was seen).
pub fn conn_state(orig: &Side, resp: &Side) -> &'static str {
    let syn = orig.syn > 0;
    let synack = resp.syn > 0;
    match (syn, synack) {
        (false, false) => "OTH",
        (true, false) => {
            if orig.rst > 0 {
                "RSTOS0"
            } else if resp.rst > 0 {
                "REJ"
            } else if orig.fin > 0 {
                "SH"
            } else {
                "S0"
            }
        }
        (false, true) => {
            if resp.rst > 0 {
                "RSTRH"
            } else if resp.fin > 0 {
                "SHR"
            } else {
                "OTH"
            }
        }
        (true, true) => {
            if orig.rst > 0 {
                "RSTO"
            } else if resp.rst > 0 {
                "RSTR"
            } else if orig.fin > 0 && resp.fin > 0 {
                "SF"
            } else if orig.fin > 0 {
                "S2"
            } else if resp.fin > 0 {
                "S3"
            } else {
                "S1"
            }
        }
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
            (NONE, side(1, 1, 0), "SHR"),
            (side(0, 0, 0), side(0, 0, 0), "OTH"),
            (side(0, 1, 0), side(0, 1, 0), "OTH"),
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
