//! The two directions of a connection: which one is the originator, and
//! the connection's Zeek `conn_state`.

use flowd_common::proto::ip;

use super::Flow;
use crate::connstate::{Side, conn_state};

/// Orders the two directions of a connection: the originator sent the first
/// SYN; without SYNs, the side talking to a service port (as Zeek guesses);
/// else the first packet's sender.
fn rank(f: &Flow) -> (bool, bool, u64) {
    (
        f.counts.syn == 0,
        is_service_side(f.key.sport, f.key.dport),
        f.first_ns,
    )
}

/// Whether a flow from `sport` to `dport` comes from the service side:
/// a well-known source port talking to an ephemeral one.
fn is_service_side(sport: u16, dport: u16) -> bool {
    sport < 1024 && dport >= 1024
}

/// Zeek's conn_state of `this` flow's connection, given its reverse
/// direction if the table has it (None for protocols other than TCP).
pub fn pair_conn_state(this: &Flow, rev: Option<&Flow>) -> Option<&'static str> {
    if this.key.proto != ip::TCP {
        return None;
    }
    let Some(rev) = rev else {
        // Only one direction seen: from a service port, it is the responder's.
        return Some(
            if this.counts.syn == 0 && is_service_side(this.key.sport, this.key.dport) {
                conn_state(&Side::default(), &this.side())
            } else {
                conn_state(&this.side(), &Side::default())
            },
        );
    };
    let (orig, resp) = if rank(this) <= rank(rev) {
        (this, rev)
    } else {
        (rev, this)
    };
    Some(conn_state(&orig.side(), &resp.side()))
}

/// Whether `this` is its connection's originator side, given its reverse.
pub(super) fn pair_is_originator(this: &Flow, rev: Option<&Flow>) -> bool {
    match rev {
        Some(rev) => rank(this) <= rank(rev),
        None => !(this.counts.syn == 0 && is_service_side(this.key.sport, this.key.dport)),
    }
}
