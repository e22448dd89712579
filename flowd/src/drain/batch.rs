//! Batch syscalls on a flow map, 8,192 entries a call: every entry read
//! and deleted (`BPF_MAP_LOOKUP_AND_DELETE_BATCH`), or every entry read
//! (`BPF_MAP_LOOKUP_BATCH`).

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::sys::{Attr, SysError, bpf};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;

/// Entries per batch syscall.
pub(crate) const DRAIN_BATCH: usize = 8192;

/// Reads and deletes every entry of a hash map with
/// `BPF_MAP_LOOKUP_AND_DELETE_BATCH`, calling `sink` for each. Returns the
/// number of entries drained.
///
/// K and V must be the map's exact key and value types (plain data).
pub fn drain_hash<K: Copy + Default, V: Copy + Default>(
    map: BorrowedFd<'_>,
    map_name: &str,
    batch: usize,
    mut sink: impl FnMut(&K, &V),
) -> Result<usize, SysError> {
    // Entries copied out were deleted, also when the call reports an error.
    walk_hash(
        BPF_MAP_LOOKUP_AND_DELETE_BATCH,
        "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
        map,
        map_name,
        batch,
        |keys: &[K], values: &[V]| {
            for (k, v) in keys.iter().zip(values) {
                sink(k, v);
            }
            Ok(())
        },
    )
}

/// Reads every entry of a hash map with `BPF_MAP_LOOKUP_BATCH` (deleting
/// nothing), handing `chunk` the entries of each call. Stops at the first
/// error `chunk` returns. Returns the number of entries read.
///
/// Only exact on a map nothing writes to meanwhile (a drained generation
/// after the grace period). K and V as in [`drain_hash`].
pub(crate) fn read_hash<K: Copy + Default, V: Copy + Default>(
    map: BorrowedFd<'_>,
    map_name: &str,
    batch: usize,
    chunk: impl FnMut(&[K], &[V]) -> Result<(), SysError>,
) -> Result<usize, SysError> {
    walk_hash(
        BPF_MAP_LOOKUP_BATCH,
        "BPF_MAP_LOOKUP_BATCH",
        map,
        map_name,
        batch,
        chunk,
    )
}

/// One pass of a hash batch command (`cmd`: lookup, or lookup and delete)
/// over every entry of `map`, `chunk` called with what each call copied out.
fn walk_hash<K: Copy + Default, V: Copy + Default>(
    cmd: libc::c_long,
    cmd_name: &'static str,
    map: BorrowedFd<'_>,
    map_name: &str,
    batch: usize,
    mut chunk: impl FnMut(&[K], &[V]) -> Result<(), SysError>,
) -> Result<usize, SysError> {
    let mut keys = vec![K::default(); batch];
    let mut values = vec![V::default(); batch];
    // Hash batch cursors are bucket indexes (u32); give them 8 bytes.
    let mut in_batch: u64 = 0;
    let mut out_batch: u64 = 0;
    let mut first = true;
    let mut total = 0;
    loop {
        let mut attr = Attr::default();
        attr.words[0] = if first { 0 } else { &raw mut in_batch as u64 };
        attr.words[1] = &raw mut out_batch as u64;
        attr.words[2] = keys.as_mut_ptr() as u64;
        attr.words[3] = values.as_mut_ptr() as u64;
        attr.words[4] = keys.len() as u64 | ((map.as_raw_fd() as u64) << 32);
        let r = bpf(cmd, &mut attr);
        let count = ((attr.words[4] & 0xffff_ffff) as usize).min(keys.len());
        chunk(&keys[..count], &values[..count])?;
        total += count;
        match r {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(total),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && count == 0 => {
                // One bucket holds more entries than the buffer: grow it.
                let n = keys.len() * 2;
                keys.resize(n, K::default());
                values.resize(n, V::default());
                continue;
            }
            Err(source) => {
                return Err(SysError::Map {
                    cmd: cmd_name,
                    map: map_name.to_owned(),
                    source,
                });
            }
        }
        in_batch = out_batch;
        first = false;
    }
}
