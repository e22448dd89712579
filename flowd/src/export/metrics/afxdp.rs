//! AF_XDP capture (issue 13), per device and RX queue: what the kernel
//! counted, what the worker parsed, what the socket lost, and the mode.
//!
//! Per device and queue, exactly (once the worker has caught up):
//! `flowd_af_xdp_frames_total` = `flowd_af_xdp_no_socket_frames_total` +
//! `flowd_af_xdp_parsed_frames_total` + `flowd_af_xdp_parse_failed_frames_total`
//! + the sum over `reason` of `flowd_af_xdp_socket_dropped_frames_total`.

use super::{
    Snapshot,
    family::{Family, Num, labels},
};

/// One RX queue of an AF_XDP interface at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AfXdpQueueSnapshot {
    pub device: String,
    pub queue: u32,
    /// `copy` or `zero_copy`.
    pub mode: &'static str,
    /// The kernel program's count, every frame.
    pub frames: u64,
    pub bytes: u64,
    /// Passed to the stack: no socket in the map.
    pub no_socket: u64,
    /// Run through the parser by the worker.
    pub parsed: u64,
    pub parse_failed: u64,
    /// `XDP_STATISTICS`.
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub rx_invalid_descs: u64,
    pub rx_fill_ring_empty_descs: u64,
}

/// The `flowd_af_xdp_*` families; none when no interface uses AF_XDP.
pub(super) fn families(s: &Snapshot, out: &mut Vec<Family>) {
    if s.afxdp.is_empty() {
        return;
    }
    let per_queue = |f: fn(&AfXdpQueueSnapshot) -> u64| {
        s.afxdp
            .iter()
            .map(|q| {
                (
                    labels([("device", &q.device), ("queue", &q.queue.to_string())]),
                    Num::U(f(q)),
                )
            })
            .collect::<Vec<_>>()
    };
    out.push(Family::counter(
        "flowd_af_xdp_frames",
        "Frames the AF_XDP program counted on the device's RX queue, before its redirect.",
        per_queue(|q| q.frames),
    ));
    out.push(Family::counter(
        "flowd_af_xdp_bytes",
        "Bytes of the frames the AF_XDP program counted.",
        per_queue(|q| q.bytes),
    ));
    out.push(Family::counter(
        "flowd_af_xdp_no_socket_frames",
        "Frames passed to the host's stack because the queue had no AF_XDP socket (starting or stopping).",
        per_queue(|q| q.no_socket),
    ));
    out.push(Family::counter(
        "flowd_af_xdp_parsed_frames",
        "Frames the queue's worker ran through the parser into the flow maps.",
        per_queue(|q| q.parsed),
    ));
    out.push(Family::counter(
        "flowd_af_xdp_parse_failed_frames",
        "Frames the worker received but could not run through the parser.",
        per_queue(|q| q.parse_failed),
    ));
    let mut dropped = Vec::new();
    for q in &s.afxdp {
        let queue = q.queue.to_string();
        for (reason, v) in [
            ("dropped", q.rx_dropped),
            ("ring_full", q.rx_ring_full),
            ("invalid_desc", q.rx_invalid_descs),
        ] {
            dropped.push((
                labels([("device", &q.device), ("queue", &queue), ("reason", reason)]),
                Num::U(v),
            ));
        }
    }
    out.push(Family::counter(
        "flowd_af_xdp_socket_dropped_frames",
        "Frames the AF_XDP socket lost (XDP_STATISTICS: rx_dropped, rx_ring_full, rx_invalid_descs).",
        dropped,
    ));
    out.push(Family::counter(
        "flowd_af_xdp_fill_ring_empty",
        "Times the kernel found the fill ring empty (XDP_STATISTICS rx_fill_ring_empty_descs; in copy mode each such frame is also in reason=\"dropped\").",
        per_queue(|q| q.rx_fill_ring_empty_descs),
    ));
    out.push(Family::gauge(
        "flowd_af_xdp_mode",
        "1 for the mode of the queue's AF_XDP socket: copy or zero_copy.",
        s.afxdp
            .iter()
            .map(|q| {
                (
                    labels([
                        ("device", &q.device),
                        ("queue", &q.queue.to_string()),
                        ("mode", q.mode),
                    ]),
                    Num::U(1),
                )
            })
            .collect(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::metrics::{Format, encode};

    #[test]
    fn af_xdp_families_per_device_and_queue() {
        let none = encode(Snapshot::default(), Format::Text004);
        assert!(!none.contains("flowd_af_xdp"), "no AF_XDP, no families");
        let s = Snapshot {
            afxdp: vec![AfXdpQueueSnapshot {
                device: "span0".into(),
                queue: 1,
                mode: "copy",
                frames: 100,
                bytes: 6000,
                no_socket: 3,
                parsed: 90,
                parse_failed: 1,
                rx_dropped: 4,
                rx_ring_full: 2,
                rx_invalid_descs: 0,
                rx_fill_ring_empty_descs: 4,
            }],
            ..Snapshot::default()
        };
        let text = encode(s, Format::Text004);
        for line in [
            "flowd_af_xdp_frames_total{device=\"span0\",queue=\"1\"} 100",
            "flowd_af_xdp_bytes_total{device=\"span0\",queue=\"1\"} 6000",
            "flowd_af_xdp_no_socket_frames_total{device=\"span0\",queue=\"1\"} 3",
            "flowd_af_xdp_parsed_frames_total{device=\"span0\",queue=\"1\"} 90",
            "flowd_af_xdp_parse_failed_frames_total{device=\"span0\",queue=\"1\"} 1",
            "flowd_af_xdp_socket_dropped_frames_total{device=\"span0\",queue=\"1\",reason=\"dropped\"} 4",
            "flowd_af_xdp_socket_dropped_frames_total{device=\"span0\",queue=\"1\",reason=\"ring_full\"} 2",
            "flowd_af_xdp_socket_dropped_frames_total{device=\"span0\",queue=\"1\",reason=\"invalid_desc\"} 0",
            "flowd_af_xdp_fill_ring_empty_total{device=\"span0\",queue=\"1\"} 4",
            "flowd_af_xdp_mode{device=\"span0\",queue=\"1\",mode=\"copy\"} 1",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
    }
}
