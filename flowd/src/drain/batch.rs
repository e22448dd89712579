//! The batch drain: every entry of a flow map read and deleted with a
//! handful of `BPF_MAP_LOOKUP_AND_DELETE_BATCH` calls, 8,192 entries each.

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::sys::{Attr, SysError, bpf};

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
        let r = bpf(BPF_MAP_LOOKUP_AND_DELETE_BATCH, &mut attr);
        // Entries copied out were deleted, also when the call reports an error.
        let count = (attr.words[4] & 0xffff_ffff) as usize;
        for i in 0..count.min(keys.len()) {
            sink(&keys[i], &values[i]);
        }
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
                    cmd: "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
                    map: map_name.to_owned(),
                    source,
                });
            }
        }
        in_batch = out_batch;
        first = false;
    }
}
