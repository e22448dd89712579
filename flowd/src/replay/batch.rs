//! Capture batching: frames laid out for one test run of the replay
//! driver ([`flowd_common::replay`]), run, and rerun one per batch when the
//! kernel will not take the batch as linear data.

use std::path::Path;

use flowd_common::replay as wire;

use super::{MAX_FRAME, ReplayError, Runner};

/// Bytes of one batch: a test run's linear data is at most a page minus
/// the XDP headroom (256) and `skb_shared_info` (320 bytes on this kernel
/// kind); the driver refuses a batch that is not linear, and [`flush`] then
/// runs its frames one per batch and lowers the size for the rest.
pub const BATCH_BYTES: usize = 4096 - 256 - 320;
const _: () = assert!(BATCH_BYTES <= wire::MAX_BATCH);

/// Frames waiting for one test run of the replay driver, laid out as it
/// reads them ([`flowd_common::replay`]): the end mark, then chunks of
/// `meta | frame | len` in reverse capture order, filled from the end of
/// the buffer toward its front.
pub(super) struct Batch {
    pub(super) buf: Box<[u8; BATCH_BYTES]>,
    /// The chunks occupy `buf[start..]`.
    pub(super) start: usize,
    /// Bytes a batch may use (lowered if the kernel's linear limit is smaller).
    pub(super) limit: usize,
    /// (file offset, packet number) of each frame, in capture order.
    pub(super) frames: Vec<(u64, u64)>,
}

impl Batch {
    pub(super) fn new() -> Self {
        Self {
            buf: Box::new([0; BATCH_BYTES]),
            start: BATCH_BYTES,
            limit: BATCH_BYTES,
            frames: Vec::with_capacity(BATCH_BYTES / (wire::CHUNK_OVERHEAD + wire::MIN_FRAME)),
        }
    }

    pub(super) fn fits(&self, frame_len: usize) -> bool {
        BATCH_BYTES - self.start + frame_len + wire::CHUNK_OVERHEAD + wire::END_CHUNK.len()
            <= self.limit
    }

    /// Adds a frame (the caller checked [`Batch::fits`], or the batch is
    /// empty: one frame of at most [`MAX_FRAME`] bytes always fits).
    pub(super) fn push(&mut self, meta: &[u8; 16], frame: &[u8], offset: u64, number: u64) {
        self.start = wire::put_chunk(&mut self.buf[..], self.start, meta, frame);
        self.frames.push((offset, number));
    }

    /// The test run's data: the end mark and the chunks.
    pub(super) fn bytes(&mut self) -> &[u8] {
        let at = wire::put_end_mark(&mut self.buf[..], self.start);
        &self.buf[at..]
    }

    pub(super) fn clear(&mut self) {
        self.start = BATCH_BYTES;
        self.frames.clear();
    }
}

/// Runs the frames waiting in `batch` and counts them into `frames`.
pub(super) fn flush(
    r: &Runner,
    batch: &mut Batch,
    frames: &mut u64,
    path: &Path,
) -> Result<(), ReplayError> {
    let n = batch.frames.len();
    if n == 0 {
        return Ok(());
    }
    let first = batch.frames[0];
    let status = r.run_batch(batch).map_err(|source| ReplayError::TestRun {
        path: path.to_path_buf(),
        offset: first.0,
        packet: first.1,
        source,
    })?;
    if status == wire::NONLINEAR && n > 1 {
        // Nothing ran: the kernel's linear limit is smaller than assumed.
        return rerun_one_by_one(r, batch, frames, path);
    }
    // Iterations of the driver's walk: every frame, then the end mark.
    if status as usize == n + 1 {
        *frames += n as u64;
        batch.clear();
        return Ok(());
    }
    let ran = (status as usize).saturating_sub(1).min(n - 1);
    *frames += ran as u64;
    let at = batch.frames[ran];
    Err(ReplayError::Batch {
        path: path.to_path_buf(),
        offset: at.0,
        packet: at.1,
        status,
    })
}

/// Runs a batch the kernel would not take as linear data one frame per
/// batch, and keeps later batches to that size.
pub(super) fn rerun_one_by_one(
    r: &Runner,
    batch: &mut Batch,
    frames: &mut u64,
    path: &Path,
) -> Result<(), ReplayError> {
    let all = std::mem::replace(batch, Batch::new());
    batch.limit = MAX_FRAME + wire::CHUNK_OVERHEAD + wire::END_CHUNK.len();
    // Chunks from the buffer's end: the first frame's is last.
    let mut end = BATCH_BYTES;
    for &(offset, number) in &all.frames {
        let (meta, frame, start) =
            wire::chunk_before(&all.buf[..], end).expect("a chunk this batch wrote");
        batch.push(&meta, frame, offset, number);
        flush(r, batch, frames, path)?;
        end = start;
    }
    Ok(())
}
