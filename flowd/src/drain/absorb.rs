//! Absorbing a drain: the deltas go into the flow table and the exporters
//! that keep their own state (aggregates, TCP signals, the live view); then
//! the flows that timed out end, and their records are written.

use flowd_common::{FlowKey, FlowStats, RttSample};
use tracing::{error, warn};

use crate::{
    clock::{self, TimeBase},
    flowtable::Ended,
    loader::LoadError,
    state::{Shared, lock},
};

/// Records written at a time when every flow ends (shutdown).
const END_CHUNK: usize = 16_384;

impl Shared {
    /// Adds a drained batch to the table, then ends what timed out (or,
    /// at shutdown, everything) and writes those records.
    pub(crate) fn absorb(&self, r: Result<Vec<(FlowKey, FlowStats)>, LoadError>, last: bool) {
        let r = r.map(|batch| {
            self.apply(&batch);
            batch.len()
        });
        self.finish(r, last);
    }

    /// Adds drained deltas to the table and the exporters.
    pub(crate) fn apply(&self, batch: &[(FlowKey, FlowStats)]) {
        if batch.is_empty() {
            return;
        }
        let mut table = lock(&self.table);
        let time = TimeBase::live();
        let names = lock(&self.names);
        let mut agg = lock(&self.agg);
        let mut tcp = lock(&self.tcp);
        for (k, v) in batch {
            table.apply(k, v, time);
            let dev = names.get(&k.ifindex).map_or("unknown", String::as_str);
            agg.absorb(k, v, dev);
            tcp.absorb(k, v, dev);
        }
        lock(&self.recent).add(batch);
    }

    /// Counts a drain of `r` deltas (already applied), then ends what timed
    /// out (or, at shutdown, everything) and writes those records.
    pub(crate) fn finish(&self, r: Result<usize, LoadError>, last: bool) {
        let ended = {
            let mut d = lock(&self.drain);
            let mut table = lock(&self.table);
            match r {
                Ok(n) => {
                    lock(&self.agg).tick(clock::realtime_ns());
                    d.drains += 1;
                    d.entries += n as u64;
                    d.last_entries = n as u64;
                }
                Err(e) => {
                    d.errors += 1;
                    error!(error = %e, "drain failed");
                }
            }
            lock(&self.recent).close(clock::realtime_ns());
            if last {
                // Written chunk by chunk: with a million flows, all the
                // records at once would double the daemon's memory.
                table.end_all_in_chunks(END_CHUNK, |chunk| self.write_records(&chunk));
                Vec::new()
            } else {
                let now = clock::realtime_ns();
                lock(&self.scan).observe(&table, now);
                table.expire(now)
            }
        };
        self.write_records(&ended);
    }

    /// RTT samples to their flows (after the drain, so new flows exist)
    /// and to the per-device histograms.
    pub(crate) fn absorb_rtt(&self, samples: &[RttSample]) {
        if samples.is_empty() {
            return;
        }
        let names = lock(&self.names).clone();
        let mut table = lock(&self.table);
        let mut tcp = lock(&self.tcp);
        for s in samples {
            let dev = names.get(&s.key.ifindex).map_or("unknown", String::as_str);
            let min = table.rtt(&s.key, s.rtt_ns);
            tcp.rtt(&s.key, dev, s.rtt_ns, min);
        }
    }

    fn device(&self, ifindex: u32) -> String {
        lock(&self.names)
            .get(&ifindex)
            .cloned()
            .unwrap_or_else(|| format!("if{ifindex}"))
    }

    /// Ended flows to the TCP connection stats, IPFIX and the records file.
    fn write_records(&self, ended: &[Ended]) {
        if ended.is_empty() {
            return;
        }
        let devices: Vec<String> = ended
            .iter()
            .map(|e| self.device(e.flow.key.ifindex))
            .collect();
        {
            let mut tcp = lock(&self.tcp);
            for (e, dev) in ended.iter().zip(&devices) {
                tcp.connection(e, dev);
            }
        }
        self.count_l7_names(ended);
        if let Some(x) = lock(&self.ipfix).as_mut() {
            let now_s = (clock::realtime_ns() / 1_000_000_000) as u32;
            if let Err(e) = x.export(ended, now_s)
                && x.should_log_error()
            {
                warn!(collector = %x.collector(), error = %e, dropped_total = x.stats.records_dropped,
                    "sending IPFIX records failed (counted in flowd_ipfix_records_dropped_total)");
            }
        }
        let mut sink = lock(&self.records);
        let Some(sink) = sink.as_mut() else {
            return;
        };
        if let Err(e) = sink.write_ended(ended, &devices) {
            error!(error = %e, records = ended.len(), "writing flow records failed");
        }
    }
}
