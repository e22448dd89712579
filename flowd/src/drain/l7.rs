//! The live L7 path (issue 12): the samples the programs selected, read
//! from their ring at every drain, go through the L7 engine; its events
//! go to the event log (`[l7] log`, `--l7-log`) with the flow records'
//! whole-line rules (a [`RecordSink`], reopened on SIGHUP).

use flowd_common::l7::L7Sample;
use tracing::{error, warn};

use crate::{
    clock::{self, TimeBase},
    loader::l7_packet,
    state::{Shared, lock},
};

impl Shared {
    /// Feeds the samples of one drain to the engine and writes its events.
    /// `last`: the daemon stops, so requests still waiting are emitted.
    pub(crate) fn absorb_l7(&self, samples: &[L7Sample], last: bool) {
        let mut l7 = lock(&self.l7);
        let Some(live) = l7.as_mut() else {
            return;
        };
        // Kernel monotonic ns -> wall clock, as flow timestamps.
        let time = TimeBase::live();
        for s in samples {
            live.engine.push(&l7_packet(s, time.to_unix_ns(s.ts_ns)));
        }
        if last {
            live.engine.flush();
        } else {
            live.engine.poll(clock::realtime_ns());
        }
        let events = live.engine.take_events();
        lock(&self.l7_metrics).observe(&events, &lock(&self.names), clock::realtime_ns());
        if events.is_empty() {
            return;
        }
        let names = lock(&self.names);
        let lines: Vec<_> = events
            .iter()
            .map(|e| {
                let dev = names.get(&e.key.ifindex).map_or("", String::as_str);
                e.to_json(dev)
            })
            .collect();
        drop(names);
        if let Err(e) = live.sink.write(&lines) {
            warn!(error = %e, "writing L7 events failed");
        }
    }

    /// SIGHUP: reopen the L7 event log (logrotate).
    pub(crate) fn reopen_l7_log(&self) {
        if let Some(live) = lock(&self.l7).as_mut()
            && let Err(e) = live.sink.reopen()
        {
            error!(error = %e, "reopening the L7 event log failed");
        }
    }
}
