//! The drain: moves what the programs counted from the kernel's flow maps
//! into the flow table, every `drain_interval_ms` and early when the map
//! being written fills.
//!
//! ```text
//!  drain loop (run)          every interval, or when the fill reaches drain_at_fill_percent
//!   -> flip.rs               flip the generation, grace period, batch-read the old one,
//!                            carry its TCP sequence state, delete it
//!       -> batch.rs          BPF_MAP_LOOKUP_BATCH, then BPF_MAP_LOOKUP_AND_DELETE_BATCH,
//!                            8,192 entries a call
//!   -> absorb.rs             deltas -> flow table, aggregates, TCP signals, live view
//!                            (in chunks, while the batch drain runs)
//!   -> l7.rs                 L7 samples -> engine -> events -> event log, recent
//!                            events, names on their flows
//!   -> absorb.rs             timeouts -> ended flows -> records, IPFIX
//! ```

mod absorb;
mod batch;
mod flip;
mod l7;

use std::{
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

pub use batch::drain_hash;
pub use flip::grace_period;
use flowd_common::{FlowKey, FlowStats, RttSample};
use tracing::{info, warn};

use crate::state::{Shared, lock};

/// Deltas absorbed at a time while a drain runs (512 KiB).
const ABSORB_CHUNK: usize = 4096;

/// How often the drain loop reads the flow map's fill.
const FILL_CHECK: Duration = Duration::from_millis(20);

/// The drain thread: drains every `drain_interval`, and early when the
/// generation being written reaches `drain_at_fill_percent` of its
/// capacity, until `stop` is set. `tick` runs on every pass (at least
/// every 50 ms) for the daemon's own chores.
pub fn run(shared: &Shared, stop: &AtomicBool, mut tick: impl FnMut(Instant)) {
    // The start drained what an earlier flowd left: the first periodic
    // drain is one interval later (not at once, which raced with the first
    // packets after READY and split their flows over two generations).
    let mut next = Instant::now() + lock(&shared.config).drain_interval();
    let mut next_fill = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        tick(now);
        if now >= next_fill {
            next_fill = now + FILL_CHECK;
            shared.feed_l7();
            if shared.filling() {
                lock(&shared.drain).early += 1;
                shared.drain_once();
                continue;
            }
        }
        if now < next {
            thread::sleep(
                (next - now)
                    .min(next_fill - now)
                    .min(Duration::from_millis(50)),
            );
            continue;
        }
        let interval = lock(&shared.config).drain_interval();
        next += interval;
        if next < now {
            next = now + interval;
        }
        shared.drain_once();
    }
}

impl Shared {
    /// One drain into the flow table. Deltas are absorbed in chunks while
    /// the drain runs, so a drain never holds its whole batch (65,536
    /// deltas are 8 MiB).
    pub(crate) fn drain_once(&self) {
        let mut samples: Vec<RttSample> = Vec::new();
        let mut l7_samples = Vec::new();
        let mut chunk: Vec<(FlowKey, FlowStats)> = Vec::with_capacity(ABSORB_CHUNK);
        let mut absorbed = 0;
        let mut absorbing = Duration::ZERO;
        let t0 = Instant::now();
        let r = {
            let mut dp = lock(&self.dp);
            dp.drain_rtt(|s| samples.push(*s));
            dp.drain_l7(|s| l7_samples.push(*s));
            dp.flush_kernel_log();
            dp.drain(|k, v| {
                chunk.push((*k, *v));
                if chunk.len() == ABSORB_CHUNK {
                    let t = Instant::now();
                    self.apply(&chunk);
                    absorbed += chunk.len();
                    chunk.clear();
                    absorbing += t.elapsed();
                }
            })
        };
        // The drain's own time, as before chunking.
        lock(&self.drain)
            .seconds
            .observe(t0.elapsed().saturating_sub(absorbing).as_secs_f64());
        self.apply(&chunk);
        absorbed += chunk.len();
        drop(chunk);
        // After the deltas (the flows exist), before the timeouts (the
        // names reach the records that end in this drain).
        self.absorb_l7(&l7_samples, false);
        self.finish(r.map(|_| absorbed), false);
        self.absorb_rtt(&samples);
        release_freed_memory();
    }

    /// Whether the generation the programs write to has reached
    /// `drain_at_fill_percent` of its capacity (and records its fill).
    fn filling(&self) -> bool {
        let percent = lock(&self.config).drain_at_fill_percent;
        let (fill, capacity) = {
            let dp = lock(&self.dp);
            match dp.active_inserts() {
                Ok(n) => (n, u64::from(dp.capacity())),
                Err(e) => {
                    // Once, not every 20 ms.
                    if !self.fill_failing.swap(true, Ordering::Relaxed) {
                        warn!(error = %e, "reading the flow map's fill failed; draining every interval only until it works again");
                    }
                    return false;
                }
            }
        };
        if self.fill_failing.swap(false, Ordering::Relaxed) {
            info!("reading the flow map's fill works again");
        }
        lock(&self.drain).fill = fill;
        percent > 0 && fill * 100 >= capacity * u64::from(percent)
    }
}

/// Hands the heap memory a drain freed (its batch, ended records) back to
/// the kernel, so RSS follows the live flows rather than the largest drain.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: glibc's malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
