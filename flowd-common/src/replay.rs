//! The replay's wire format, written by the daemon (`flowd/src/replay`)
//! and read by the kernel's replay driver (`flowd-ebpf/src/replay.rs`).
//!
//! One `BPF_PROG_TEST_RUN` carries a batch of capture frames, chunks in
//! reverse capture order so the driver can walk from the end of the buffer
//! and only ever shrink the packet's tail:
//!
//! ```text
//! [end mark] [chunk n-1] ... [chunk 1] [chunk 0]
//! chunk    = ReplayMeta (16 B) | frame (len B, len >= 14) | len (u32 LE)
//! end mark = 12 zero bytes | 0xffff_ffff (u32 LE)
//! ```
//!
//! The driver hands each frame to the ingress code with its [`ReplayMeta`]
//! as the XDP metadata; a single frame run through `flowd_ingress` carries
//! the same 16 bytes as its metadata.

use core::mem::size_of;

/// Metadata a replay hands the XDP program in front of the frame (the XDP
/// metadata area): the frame's original length and its capture timestamp.
/// Timestamp 0: a live frame user space holds (an AF_XDP worker's): the
/// kernel clock stamps it and the L7 copy budget does not apply.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayMeta {
    pub magic: u32,
    pub wire_len: u32,
    pub ts_ns: u64,
}
const _: () = assert!(size_of::<ReplayMeta>() == 16);
pub const REPLAY_META_MAGIC: u32 = 0xf10d_0001;

/// Bytes of a [`ReplayMeta`] in front of each frame.
pub const META: usize = size_of::<ReplayMeta>();
/// Bytes after each frame: its length (u32 LE).
pub const TRAILER: usize = 4;
/// Per frame in a batch: the metadata in front, the length behind.
pub const CHUNK_OVERHEAD: usize = META + TRAILER;
/// The length that marks the end of a batch.
pub const END_MARK: u32 = u32::MAX;
/// The batch's first bytes: 12 zero bytes and the end mark.
pub const END_CHUNK: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
const _: () = assert!(END_CHUNK.len() == META);
/// The kernel keeps at least an Ethernet header between data and data_end.
pub const MIN_FRAME: usize = 14;
/// A batch is linear: at most a page minus XDP headroom and
/// `skb_shared_info`; the driver treats anything longer as malformed.
pub const MAX_BATCH: usize = 4096;
/// Upper bound of the driver's iterations: frames per batch
/// (4096 / (16 + 14 + 4) < 127) plus the end mark.
pub const MAX_STEPS: u32 = 128;
const _: () = assert!(MAX_BATCH / (CHUNK_OVERHEAD + MIN_FRAME) < MAX_STEPS as usize);
/// The driver's return value when the batch was not all linear data (the
/// kernel's linear limit is smaller than user space assumed); nothing ran.
/// Otherwise it returns its iterations: frames + 1 when every frame ran.
pub const NONLINEAR: u32 = 1 << 31;

impl ReplayMeta {
    /// The metadata of a frame of `wire_len` bytes captured at `ts_ns`. A
    /// zero timestamp tells the program "live, use the kernel clock", so a
    /// capture time of exactly 0 becomes 1 ns.
    pub const fn new(wire_len: u32, ts_ns: u64) -> Self {
        Self {
            magic: REPLAY_META_MAGIC,
            wire_len,
            ts_ns: if ts_ns == 0 { 1 } else { ts_ns },
        }
    }

    /// The 16 bytes as the XDP metadata area holds them (little endian,
    /// the BPF target's order).
    pub fn to_bytes(&self) -> [u8; META] {
        let mut m = [0u8; META];
        m[0..4].copy_from_slice(&self.magic.to_le_bytes());
        m[4..8].copy_from_slice(&self.wire_len.to_le_bytes());
        m[8..16].copy_from_slice(&self.ts_ns.to_le_bytes());
        m
    }
}

/// Writes one chunk (`meta | frame | len`) that ends at `end` in `buf`
/// and returns where it starts. The caller checked that it fits.
pub fn put_chunk(buf: &mut [u8], end: usize, meta: &[u8; META], frame: &[u8]) -> usize {
    let at = end - frame.len() - CHUNK_OVERHEAD;
    let (m, rest) = buf[at..end].split_at_mut(META);
    let (f, len) = rest.split_at_mut(frame.len());
    m.copy_from_slice(meta);
    f.copy_from_slice(frame);
    len.copy_from_slice(&(frame.len() as u32).to_le_bytes());
    at
}

/// The chunk that ends at `end` in `buf`: its metadata, its frame and
/// where it starts. None at the end mark or when it does not fit.
pub fn chunk_before(buf: &[u8], end: usize) -> Option<([u8; META], &[u8], usize)> {
    let len_at = end.checked_sub(TRAILER)?;
    let len = u32::from_le_bytes(buf.get(len_at..end)?.try_into().ok()?);
    if len == END_MARK {
        return None;
    }
    let meta_at = len_at.checked_sub(len as usize)?.checked_sub(META)?;
    let meta = buf.get(meta_at..meta_at + META)?.try_into().ok()?;
    Some((meta, &buf[meta_at + META..len_at], meta_at))
}

/// Writes the end mark in front of the chunk that starts at `start` and
/// returns where the batch starts.
pub fn put_end_mark(buf: &mut [u8], start: usize) -> usize {
    let at = start - END_CHUNK.len();
    buf[at..start].copy_from_slice(&END_CHUNK);
    at
}
