//! What one queue's worker counts, shared with whoever reads it (the
//! metrics, the tests) through atomics: the worker never waits on a lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The socket's own drop counters (`XDP_STATISTICS`), as last read.
///
/// In copy mode a frame the fill ring had no buffer for counts in both
/// `rx_dropped` and `rx_fill_ring_empty_descs`; so the frames a socket
/// lost are `rx_dropped + rx_ring_full + rx_invalid_descs`
/// ([`XskStats::lost`]), and `rx_fill_ring_empty_descs` says why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
}

impl XskStats {
    /// Frames the socket took from the program but never put on its RX ring.
    pub fn lost(&self) -> u64 {
        self.rx_dropped + self.rx_ring_full + self.rx_invalid_descs
    }
}

/// One RX queue's worker: frames through the parser, and the socket's own
/// counters (refreshed a few times a second and when the worker stops).
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Frames the replay driver ran (each is in `TOTALS` and a flow, or an
    /// outcome counter, exactly as on the in-kernel path).
    pub parsed: AtomicU64,
    /// Their bytes as received.
    pub parsed_bytes: AtomicU64,
    /// Frames whose test run failed (the device went away, say): received
    /// but not accounted.
    pub failed: AtomicU64,
    /// Frames longer than a replay frame (`replay::MAX_FRAME`): parsed from
    /// their first bytes, counted with their whole length.
    pub cut: AtomicU64,
    /// `BPF_PROG_TEST_RUN` calls.
    pub test_runs: AtomicU64,
    rx_dropped: AtomicU64,
    rx_invalid_descs: AtomicU64,
    rx_ring_full: AtomicU64,
    rx_fill_ring_empty_descs: AtomicU64,
}

/// A copy of [`QueueStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueSnapshot {
    pub queue: u32,
    pub parsed: u64,
    pub parsed_bytes: u64,
    pub failed: u64,
    pub cut: u64,
    pub test_runs: u64,
    pub xsk: XskStats,
}

impl QueueStats {
    pub(super) fn add_parsed(&self, frames: u64, bytes: u64) {
        self.parsed.fetch_add(frames, Relaxed);
        self.parsed_bytes.fetch_add(bytes, Relaxed);
    }

    pub(super) fn set_xsk(&self, s: &XskStats) {
        self.rx_dropped.store(s.rx_dropped, Relaxed);
        self.rx_invalid_descs.store(s.rx_invalid_descs, Relaxed);
        self.rx_ring_full.store(s.rx_ring_full, Relaxed);
        self.rx_fill_ring_empty_descs
            .store(s.rx_fill_ring_empty_descs, Relaxed);
    }

    pub fn snapshot(&self, queue: u32) -> QueueSnapshot {
        QueueSnapshot {
            queue,
            parsed: self.parsed.load(Relaxed),
            parsed_bytes: self.parsed_bytes.load(Relaxed),
            failed: self.failed.load(Relaxed),
            cut: self.cut.load(Relaxed),
            test_runs: self.test_runs.load(Relaxed),
            xsk: XskStats {
                rx_dropped: self.rx_dropped.load(Relaxed),
                rx_invalid_descs: self.rx_invalid_descs.load(Relaxed),
                rx_ring_full: self.rx_ring_full.load(Relaxed),
                rx_fill_ring_empty_descs: self.rx_fill_ring_empty_descs.load(Relaxed),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_ring_empty_is_a_reason_not_a_second_loss() {
        let s = XskStats {
            rx_dropped: 5,
            rx_invalid_descs: 1,
            rx_ring_full: 7,
            rx_fill_ring_empty_descs: 5,
        };
        assert_eq!(s.lost(), 13);
        let q = QueueStats::default();
        q.add_parsed(3, 180);
        q.set_xsk(&s);
        let snap = q.snapshot(2);
        assert_eq!(
            (snap.queue, snap.parsed, snap.parsed_bytes, snap.xsk),
            (2, 3, 180, s)
        );
    }
}
