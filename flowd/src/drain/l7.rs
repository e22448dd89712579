//! The live L7 path (issue 12): the samples the programs selected, read
//! from their ring at every drain, go through the L7 engine; its events go
//! to the event log (`[l7] log`, `--l7-log`, with the flow records'
//! whole-line rules: a [`RecordSink`], reopened on SIGHUP), to the recent
//! events of `/api/v1/l7`, and as names onto their flows.
//!
//! Ordering: a drain reads the L7 ring before it flips and reads the flow
//! map, and the events are absorbed after the drain's deltas are in the
//! table and before its timeouts run. A request's packet was counted
//! before its sample was written, and an event is made at the response
//! (or after the response timeout), so its flow is in the table unless it
//! already ended; such events are counted as unmatched, not held back (a
//! later flow with the same key is another connection).
//!
//! [`RecordSink`]: crate::export::records::RecordSink

use flowd_common::l7::L7Sample;
use tracing::{error, warn};

use crate::{
    clock::{self, TimeBase},
    flowtable::{Ended, FlowL7},
    l7::{L7Event, event::Detail},
    loader::l7_packet,
    state::{Shared, lock},
};

/// The names an event gives its flow.
pub(crate) fn flow_names(e: &L7Event) -> FlowL7 {
    let mut n = FlowL7::default();
    match &e.detail {
        Detail::Http(h) => {
            n.http_host = h.host.as_deref().map(Into::into);
            n.http_url = Some(h.url.as_str().into());
        }
        Detail::Dns(d) => n.dns_qname = d.qname.as_deref().map(Into::into),
        Detail::Tls(t) => n.tls_sni = t.sni.as_deref().map(Into::into),
    }
    n
}

impl Shared {
    /// Feeds the samples of one drain to the engine and hands its events
    /// on. `last`: the daemon stops, so requests still waiting are emitted.
    pub(crate) fn absorb_l7(&self, samples: &[L7Sample], last: bool) {
        // The locks are taken one at a time (ended records are counted
        // under the table's lock, which then takes this one).
        let events = {
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
            live.engine.take_events()
        };
        if events.is_empty() {
            return;
        }
        let mut unmatched = 0;
        {
            let mut table = lock(&self.table);
            for e in &events {
                let names = flow_names(e);
                if names.is_empty() {
                    continue;
                }
                let a = table.annotate(&e.key, &names);
                if !a.flow && !a.reverse {
                    unmatched += 1;
                }
            }
        }
        let lines: Vec<String> = {
            let names = lock(&self.names);
            events
                .iter()
                .map(|e| {
                    let dev = names.get(&e.key.ifindex).map_or("", String::as_str);
                    e.to_json(dev).to_string()
                })
                .collect()
        };
        let mut l7 = lock(&self.l7);
        let Some(live) = l7.as_mut() else {
            return;
        };
        live.unmatched += unmatched;
        for (e, line) in events.iter().zip(&lines) {
            live.recent.push(e.kind(), line);
        }
        if let Some(sink) = live.sink.as_mut()
            && let Err(e) = sink.write_encoded(&lines)
        {
            warn!(error = %e, "writing L7 events failed");
        }
    }

    /// Ended records' bytes to the names-by-traffic counters.
    pub(crate) fn count_l7_names(&self, ended: &[Ended]) {
        if !ended.iter().any(|e| e.flow.l7.is_some()) {
            return;
        }
        if let Some(live) = lock(&self.l7).as_mut() {
            for e in ended {
                if let Some(l7) = &e.flow.l7 {
                    live.names.add(l7, e.flow.counts.bytes);
                }
            }
        }
    }

    /// SIGHUP: reopen the L7 event log (logrotate).
    pub(crate) fn reopen_l7_log(&self) {
        if let Some(live) = lock(&self.l7).as_mut()
            && let Some(sink) = live.sink.as_mut()
            && let Err(e) = sink.reopen()
        {
            error!(error = %e, "reopening the L7 event log failed");
        }
    }
}
