//! The scan detector: sources flagged now and since start.

use super::{
    Snapshot,
    family::{Family, one},
};

pub(super) fn families(s: &Snapshot, out: &mut Vec<Family>) {
    out.push(Family::gauge(
        "flowd_scan_suspects",
        "Sources whose failed connection attempts crossed the scan thresholds (see /api/v1/suspects).",
        one(s.scan_suspects),
    ));
    out.push(Family::counter(
        "flowd_scan_suspects_flagged",
        "Sources flagged as scanning since start.",
        one(s.scan_flagged),
    ));
}
