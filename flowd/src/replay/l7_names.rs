//! Names on a replay's records (with `--l7-log`): the daemon annotates its
//! flows as events come (`drain/l7.rs`); a replay has all its events at
//! the end, so each one is matched to the records it would have reached,
//! on the capture's clock:
//!
//! - of its own key, the record whose span holds the request;
//! - of the reverse key, the record whose span holds the response (the
//!   request time when there was none);
//!
//! each name set once (the first request's), and handed on to the next
//! record of the same flow after an `active` end, as the live table does.

use std::collections::HashMap;

use flowd_common::FlowKey;

use crate::{
    flowtable::{EndReason, Ended},
    l7::L7Event,
};

/// The reverse keys a record of the other direction may have: in a
/// replay every frame is ingress, so the same direction first.
fn reverse(k: &FlowKey) -> [FlowKey; 2] {
    let r = FlowKey {
        src: k.dst,
        dst: k.src,
        sport: k.dport,
        dport: k.sport,
        ..*k
    };
    [
        r,
        FlowKey {
            direction: 1 - k.direction,
            ..r
        },
    ]
}

/// Gives `ended` the names of `events` (see the module's rules).
pub(super) fn annotate(ended: &mut [Ended], events: &[L7Event]) {
    if events.is_empty() {
        return;
    }
    // Record indexes per key, in time order.
    let mut by_key: HashMap<FlowKey, Vec<usize>> = HashMap::new();
    for (i, e) in ended.iter().enumerate() {
        by_key.entry(e.flow.key).or_default().push(i);
    }
    for v in by_key.values_mut() {
        v.sort_by_key(|&i| ended[i].flow.first_ns);
    }
    // In request order: the first request of a connection names it.
    let mut order: Vec<&L7Event> = events.iter().collect();
    order.sort_by_key(|e| e.ts_ns);
    for ev in order {
        let names = ev.flow_names();
        if names.is_empty() {
            continue;
        }
        let response = ev.ts_ns + ev.latency_ns.unwrap_or(0);
        let targets = std::iter::once((ev.key, ev.ts_ns))
            .chain(reverse(&ev.key).into_iter().map(|k| (k, response)));
        for (key, at) in targets {
            let Some(idx) = by_key.get(&key) else {
                continue;
            };
            if let Some(&i) = idx
                .iter()
                .find(|&&i| ended[i].flow.first_ns <= at && at <= ended[i].flow.last_ns)
            {
                ended[i].flow.annotate(&names);
            }
        }
    }
    // The next record of a flow after an active end goes on with its names.
    for idx in by_key.values() {
        for w in idx.windows(2) {
            if ended[w[0]].reason == EndReason::Active
                && let Some(l7) = ended[w[0]].flow.l7.clone()
            {
                ended[w[1]].flow.annotate(&l7);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use flowd_common::{DIR_INGRESS, FlowCounts};

    use super::*;
    use crate::{
        flowtable::{Flow, FlowL7},
        l7::{HttpInfo, event::Detail},
    };

    const S: u64 = 1_000_000_000;

    fn key(reverse: bool) -> FlowKey {
        let (a, b) = ([1; 16], [2; 16]);
        FlowKey {
            ifindex: 1,
            direction: DIR_INGRESS,
            proto: 6,
            src: if reverse { b } else { a },
            dst: if reverse { a } else { b },
            sport: if reverse { 80 } else { 40000 },
            dport: if reverse { 40000 } else { 80 },
            ..Default::default()
        }
    }

    fn record(reverse: bool, first: u64, last: u64, reason: EndReason) -> Ended {
        Ended {
            flow: Flow {
                key: key(reverse),
                counts: FlowCounts {
                    packets: 1,
                    ..Default::default()
                },
                first_ns: first * S,
                last_ns: last * S,
                ..Flow::default()
            },
            state: None,
            reason,
            originator: !reverse,
        }
    }

    fn get(at: u64, latency: Option<u64>, url: &str) -> L7Event {
        L7Event {
            ts_ns: at * S,
            key: key(false),
            direction: DIR_INGRESS,
            latency_ns: latency.map(|l| l * S),
            detail: Detail::Http(HttpInfo {
                method: "GET".into(),
                url: url.into(),
                host: Some("h.test".into()),
                ..Default::default()
            }),
        }
    }

    fn url(e: &Ended) -> Option<&str> {
        e.flow.l7.as_ref().and_then(|l| l.http_url.as_deref())
    }

    #[test]
    fn requests_name_the_records_that_hold_them_and_active_successors() {
        let mut ended = vec![
            // One connection: the request record is split by the active
            // timeout; the response direction starts with the SYN-ACK.
            record(false, 10, 20, EndReason::Active),
            record(false, 20, 30, EndReason::EndOfFlow),
            record(true, 10, 30, EndReason::EndOfFlow),
            // The same ports again later: another connection, its own names.
            record(false, 100, 110, EndReason::Idle),
            record(true, 100, 110, EndReason::Idle),
        ];
        let events = [
            // Out of order on purpose: the earlier request wins.
            get(15, Some(1), "/second"),
            get(12, Some(1), "/first"),
            get(105, None, "/later"),
        ];
        annotate(&mut ended, &events);
        let urls: Vec<_> = ended.iter().map(url).collect();
        assert_eq!(
            urls,
            [
                Some("/first"),
                Some("/first"),
                Some("/first"),
                Some("/later"),
                Some("/later"),
            ]
        );
        assert_eq!(
            ended[0].flow.l7.as_deref(),
            Some(&FlowL7 {
                http_host: Some("h.test".into()),
                http_url: Some("/first".into()),
                ..FlowL7::default()
            })
        );
        // An event outside every record's span names nothing.
        let mut lone = vec![record(false, 10, 20, EndReason::Idle)];
        annotate(&mut lone, &[get(50, None, "/x")]);
        assert!(lone[0].flow.l7.is_none());
    }
}
