//! The live L7 path (issue 12): the samples the programs selected, read
//! from their ring at every fill check and every drain, go through the L7 engine; its events go
//! to the event log (`[l7] log`, `--l7-log`, with the flow records'
//! whole-line rules: a [`RecordSink`], reopened on SIGHUP), to the recent
//! events of `/api/v1/l7`, and as names onto their flows.
//!
//! Ordering: a drain reads the L7 ring before it flips and reads the flow
//! map, and the events are absorbed after the drain's deltas are in the
//! table and before its timeouts run. A request's packet was counted
//! before its sample was written, and an event is made at the response
//! (or after the response timeout), so its flow is in the table unless it
//! already ended; such events are counted
//! (`flowd_l7_events_without_flow_total`), not held back for a later flow
//! with the same key, which is another connection.
//!
//! [`RecordSink`]: crate::export::records::RecordSink

use flowd_common::l7::L7Sample;
use tracing::{error, warn};

use crate::{
    clock::{self, TimeBase},
    flowtable::Ended,
    loader::l7_packet,
    state::{Shared, lock},
};

impl Shared {
    /// Reads the L7 ring between drains (every fill check, 20 ms) and
    /// feeds its samples to the engine, so the ring (about 7,000 samples)
    /// does not fill within a drain interval under load. The events this
    /// makes wait in the engine for the next drain's [`Self::absorb_l7`],
    /// which keeps the ordering above.
    pub(crate) fn feed_l7(&self) {
        if lock(&self.l7).is_none() {
            return;
        }
        let mut samples = Vec::new();
        lock(&self.dp).drain_l7(|s| samples.push(*s));
        if samples.is_empty() {
            return;
        }
        let mut l7 = lock(&self.l7);
        if let Some(live) = l7.as_mut() {
            let time = TimeBase::live();
            for s in &samples {
                live.engine.push(&l7_packet(s, time.to_unix_ns(s.ts_ns)));
            }
        }
    }

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
        lock(&self.l7_metrics).observe(&events, &lock(&self.names), clock::realtime_ns());
        if events.is_empty() {
            return;
        }
        let mut unmatched = 0;
        {
            let mut table = lock(&self.table);
            for e in &events {
                let names = e.flow_names();
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
        live.names.without_flow += unmatched;
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

#[cfg(test)]
mod tests {
    use flowd_common::{DIR_EGRESS, DIR_INGRESS, FlowCounts, FlowKey, FlowStats, ipv4_mapped};

    use super::*;
    use crate::{
        flowtable::{Annotated, FlowTable, TableConfig},
        l7::{DnsInfo, HttpInfo, L7Event, TlsInfo, event::Detail},
        record,
    };

    const SEC: u64 = 1_000_000_000;

    fn key(client_port: u16, server_port: u16, proto: u8, direction: u8) -> FlowKey {
        FlowKey {
            ifindex: 2,
            direction,
            proto,
            src: ipv4_mapped([198, 18, 0, 1]),
            dst: ipv4_mapped([198, 18, 0, 2]),
            sport: client_port,
            dport: server_port,
            ..Default::default()
        }
    }

    /// The server→client key of a client→server one, as a host sees it.
    fn rev(k: &FlowKey) -> FlowKey {
        FlowKey {
            src: k.dst,
            dst: k.src,
            sport: k.dport,
            dport: k.sport,
            direction: 1 - k.direction,
            ..*k
        }
    }

    fn delta(bytes: u64, at: u64) -> FlowStats {
        FlowStats {
            counts: FlowCounts {
                packets: 1,
                bytes,
                ..Default::default()
            },
            first_seen_ns: at,
            last_seen_ns: at,
            ..Default::default()
        }
    }

    fn event(key: FlowKey, detail: Detail) -> L7Event {
        L7Event {
            ts_ns: 5 * SEC,
            key,
            direction: key.direction,
            latency_ns: None,
            detail,
        }
    }

    fn http(host: Option<&str>, url: &str) -> Detail {
        Detail::Http(HttpInfo {
            method: "GET".into(),
            url: url.into(),
            host: host.map(Into::into),
            ..Default::default()
        })
    }

    fn names_of(t: &FlowTable, k: &FlowKey) -> Vec<(String, String)> {
        let v = record::flow_json(t.get(k).unwrap(), "eth0");
        ["http_host", "http_url", "dns_qname", "tls_sni"]
            .into_iter()
            .filter_map(|n| {
                v.get(n)
                    .map(|s| (n.to_owned(), s.as_str().unwrap().to_owned()))
            })
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn a_sequence_of_events_names_both_directions_once() {
        let mut t = FlowTable::new(TableConfig {
            active_timeout_ns: 100 * SEC,
            ..TableConfig::default()
        });
        let web = key(40000, 80, 6, DIR_EGRESS);
        let tls = key(40001, 443, 6, DIR_EGRESS);
        let dns = key(40002, 53, 17, DIR_EGRESS);
        let plain = key(40003, 22, 6, DIR_EGRESS);
        for k in [web, rev(&web), tls, rev(&tls), dns, plain] {
            t.apply(&k, &delta(100, SEC), TimeBase::Capture);
        }
        let mut annotate = |e: &L7Event| t.annotate(&e.key, &e.flow_names());
        let both = Annotated {
            flow: true,
            reverse: true,
        };
        // Two requests on one connection: the first one's names stay.
        assert_eq!(annotate(&event(web, http(Some("a.test:8080"), "/1"))), both);
        assert_eq!(annotate(&event(web, http(Some("b.test"), "/2"))), both);
        // A ClientHello without SNI names nothing; the next one does.
        let hello = |sni: Option<&str>| {
            Detail::Tls(TlsInfo {
                sni: sni.map(Into::into),
                ..Default::default()
            })
        };
        assert_eq!(annotate(&event(tls, hello(None))), both);
        assert_eq!(annotate(&event(tls, hello(Some("s.test")))), both);
        // A query whose response flow is not in the table: its own flow only.
        let q = Detail::Dns(DnsInfo {
            id: 7,
            qname: Some("q.test".into()),
            ..Default::default()
        });
        let one = Annotated {
            flow: true,
            reverse: false,
        };
        assert_eq!(annotate(&event(dns, q)), one);
        // A flow that is not in the table (ended): nothing.
        let gone = key(40009, 80, 6, DIR_EGRESS);
        assert_eq!(
            annotate(&event(gone, http(None, "/"))),
            Annotated::default()
        );
        let web_names = pairs(&[("http_host", "a.test:8080"), ("http_url", "/1")]);
        assert_eq!(names_of(&t, &web), web_names);
        assert_eq!(names_of(&t, &rev(&web)), web_names);
        assert_eq!(names_of(&t, &tls), pairs(&[("tls_sni", "s.test")]));
        assert_eq!(names_of(&t, &rev(&tls)), pairs(&[("tls_sni", "s.test")]));
        assert_eq!(names_of(&t, &dns), pairs(&[("dns_qname", "q.test")]));
        assert_eq!(names_of(&t, &plain), vec![]);
        assert!(t.get(&plain).unwrap().l7.is_none(), "no allocation");
        // A request without Host names the target alone.
        let bare = key(40004, 80, 6, DIR_INGRESS);
        t.apply(&bare, &delta(1, SEC), TimeBase::Capture);
        t.annotate(&bare, &event(bare, http(None, "/x")).flow_names());
        assert_eq!(names_of(&t, &bare), pairs(&[("http_url", "/x")]));

        // The active timeout ends a record: both records carry the names.
        t.apply(&web, &delta(50, 90 * SEC), TimeBase::Capture);
        let ended = t.expire(101 * SEC);
        let web_ended: Vec<_> = ended.iter().filter(|e| e.flow.key == web).collect();
        assert_eq!(web_ended.len(), 1);
        assert_eq!(web_ended[0].flow.counts.bytes, 150);
        let v = record::ended_json(web_ended[0], "eth0");
        assert_eq!(
            (v["http_host"].as_str(), v["http_url"].as_str()),
            (Some("a.test:8080"), Some("/1"))
        );
        assert_eq!(names_of(&t, &web), web_names, "the next record keeps them");
    }
}
