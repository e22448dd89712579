//! Top application-layer names by traffic (issue 12, "Prometheus"):
//! `flowd_l7_name_bytes_total{kind,name}` for the K DNS query names
//! (`kind="dns"`), HTTP hosts (`"http"`) and TLS server names (`"tls"`)
//! with the most bytes, plus one `name="other"` series per kind.
//!
//! The bytes are those of flow records that carry the name (see
//! [`crate::flowtable::FlowL7`]: both directions of the connection), added
//! when a record ends, so every byte counts once, at most an active
//! timeout late. A record with several names (a DNS flow has only a query
//! name; HTTP over TLS on one connection has an SNI and, seen in clear on
//! another port, a host) adds to each of its kinds.
//!
//! `flowd_l7_events_without_flow_total` counts the events whose flow had
//! already left the table (see `drain/l7.rs`).
//!
//! Bounded like the other top-K families: per kind, [`NameBytes`] tracks at
//! most 2K names (K = `[metrics] top_flows`); at each scrape the names
//! beyond the K with the most bytes, and those the series budget cut in
//! the scrape before, fold into `other` for good, which keeps every series
//! a counter that never goes down (a folded name that comes back starts a
//! new series from zero). Bytes of a name that arrives while 2K are
//! tracked go to `other` until a scrape makes room. So the series of a
//! kind sum to all its annotated bytes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use super::family::{Family, Num, labels};
use crate::{export::groups::OTHER, flowtable::FlowL7};

/// The kinds, in label order.
pub const KINDS: [&str; 3] = ["dns", "http", "tls"];

/// Names the scrape's budget cut, to fold at the next snapshot.
type Folds = Arc<Mutex<Vec<(usize, Box<str>)>>>;

/// The folds, also after a panic elsewhere held them.
fn lock(m: &Mutex<Vec<(usize, Box<str>)>>) -> MutexGuard<'_, Vec<(usize, Box<str>)>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One kind's names and its `other`.
#[derive(Debug, Default, Clone)]
struct Kind {
    names: HashMap<Box<str>, u64>,
    other: u64,
}

impl Kind {
    fn fold(&mut self, name: &str) {
        if let Some(b) = self.names.remove(name) {
            self.other += b;
        }
    }
}

/// Bytes per name, the state behind the family (in the L7 state).
#[derive(Debug, Default)]
pub struct NameBytes {
    kinds: [Kind; 3],
    /// Names tracked per kind at most (2K, set at each snapshot).
    cap: usize,
    folds: Folds,
    /// Events with a name whose flow (neither direction) was in the table
    /// any more: their names reached no record.
    pub without_flow: u64,
}

impl NameBytes {
    /// Adds the bytes of one ended record to each of its names.
    pub fn add(&mut self, l7: &FlowL7, bytes: u64) {
        let host = if l7.http_url.is_some() {
            // A request without a Host header: its bytes are `other`'s.
            Some(l7.http_host.as_deref().unwrap_or(OTHER))
        } else {
            None
        };
        for (i, name) in [l7.dns_qname.as_deref(), host, l7.tls_sni.as_deref()]
            .into_iter()
            .enumerate()
        {
            let Some(name) = name else { continue };
            let k = &mut self.kinds[i];
            if let Some(b) = k.names.get_mut(name) {
                *b += bytes;
            } else if name != OTHER && k.names.len() < self.cap.max(1) {
                k.names.insert(name.into(), bytes);
            } else {
                k.other += bytes;
            }
        }
    }

    /// The names for one scrape, after folding what the last scrape's
    /// budget cut and, per kind, everything beyond the `top_k` with the
    /// most bytes.
    pub fn snapshot(&mut self, top_k: usize) -> NamesSnapshot {
        self.cap = top_k.saturating_mul(2);
        for (i, name) in std::mem::take(&mut *lock(&self.folds)) {
            self.kinds[i].fold(&name);
        }
        let mut kinds: [Vec<(Box<str>, u64)>; 3] = Default::default();
        let mut others = [0; 3];
        for (i, k) in self.kinds.iter_mut().enumerate() {
            let mut ranked: Vec<(Box<str>, u64)> =
                k.names.iter().map(|(n, b)| (n.clone(), *b)).collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            for (name, _) in ranked.drain(top_k.min(ranked.len())..) {
                k.fold(&name);
            }
            kinds[i] = ranked;
            others[i] = k.other;
        }
        NamesSnapshot {
            kinds,
            others,
            folds: Arc::clone(&self.folds),
            without_flow: self.without_flow,
        }
    }
}

/// One scrape's names, most bytes first, and each kind's `other`.
#[derive(Debug, Clone, Default)]
pub struct NamesSnapshot {
    kinds: [Vec<(Box<str>, u64)>; 3],
    others: [u64; 3],
    folds: Folds,
    without_flow: u64,
}

/// The family, in at most `room` series (at least the three `other`s,
/// and the count of events without a flow):
/// the names that do not fit go to `other` in this scrape and are folded
/// into it for good at the next snapshot.
pub(super) fn families(s: &NamesSnapshot, room: usize) -> Vec<Family> {
    let mut samples = Vec::new();
    let mut left = room.saturating_sub(KINDS.len() + 1);
    for (i, kind) in KINDS.iter().enumerate() {
        let mut other = s.others[i];
        for (name, bytes) in &s.kinds[i] {
            if left > 0 {
                left -= 1;
                samples.push((labels([("kind", kind), ("name", name)]), Num::U(*bytes)));
            } else {
                other += bytes;
                lock(&s.folds).push((i, name.clone()));
            }
        }
        samples.push((labels([("kind", kind), ("name", OTHER)]), Num::U(other)));
    }
    vec![
        Family::counter(
            "flowd_l7_name_bytes",
            "Bytes of flow records whose connection's first request named this DNS query name (kind=dns), HTTP Host (http) or TLS SNI (tls): the K names with the most, and other.",
            samples,
        ),
        Family::counter(
            "flowd_l7_events_without_flow",
            "Application-layer events with a name whose flow (neither direction) had left the flow table: the name reached no record.",
            vec![(Vec::new(), Num::U(s.without_flow))],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l7(dns: Option<&str>, host: Option<&str>, url: bool, sni: Option<&str>) -> FlowL7 {
        FlowL7 {
            http_host: host.map(Into::into),
            http_url: url.then(|| "/".into()),
            dns_qname: dns.map(Into::into),
            tls_sni: sni.map(Into::into),
        }
    }

    /// (kind, name, bytes) of a family's samples.
    fn samples(f: &[Family]) -> Vec<(String, String, u64)> {
        let super::super::family::Body::Counter(s) = &f[0].body else {
            panic!("a counter");
        };
        s.iter()
            .map(|(l, v)| {
                let Num::U(v) = v else { panic!() };
                (l[0].1.0.clone(), l[1].1.0.clone(), *v)
            })
            .collect()
    }

    #[test]
    fn top_k_per_kind_and_other_sum_to_every_annotated_byte() {
        let mut n = NameBytes::default();
        let _ = n.snapshot(2); // K = 2: 4 names tracked per kind
        n.add(&l7(Some("a.test"), None, false, None), 100);
        n.add(&l7(Some("b.test"), None, false, None), 300);
        n.add(&l7(Some("c.test"), None, false, None), 200);
        n.add(&l7(Some("a.test"), None, false, None), 5);
        n.add(&l7(None, Some("h.test:8080"), true, None), 70);
        n.add(&l7(None, None, true, None), 9); // no Host: other
        n.add(&l7(None, None, false, Some("s.test")), 40);
        let got = samples(&families(&n.snapshot(2), 1000));
        let want = [
            ("dns", "b.test", 300),
            ("dns", "c.test", 200),
            ("dns", "other", 105),
            ("http", "h.test:8080", 70),
            ("http", "other", 9),
            ("tls", "s.test", 40),
            ("tls", "other", 0),
        ];
        let got: Vec<_> = got
            .iter()
            .map(|(k, n, b)| (k.as_str(), n.as_str(), *b))
            .collect();
        assert_eq!(got, want);
        // a.test was folded for good: more of it goes to other, and other
        // never goes down.
        n.add(&l7(Some("a.test"), None, false, None), 1000);
        n.add(&l7(Some("b.test"), None, false, None), 1);
        let got = samples(&families(&n.snapshot(2), 1000));
        assert_eq!(
            got[0],
            ("dns".into(), "a.test".into(), 1000),
            "a new series from zero"
        );
        assert_eq!(got[1], ("dns".into(), "b.test".into(), 301));
        assert_eq!(got[2], ("dns".into(), "other".into(), 105 + 200));
    }

    #[test]
    fn names_the_budget_cuts_fold_into_other_for_good() {
        let mut n = NameBytes::default();
        let _ = n.snapshot(10);
        for (name, b) in [("a", 50), ("b", 40), ("c", 30)] {
            n.add(&l7(Some(name), None, false, None), b);
        }
        // Room for the three others, the events without a flow and two names.
        let f = families(&n.snapshot(10), 6);
        assert_eq!(f.iter().map(Family::series).sum::<usize>(), 6);
        let got = samples(&f);
        assert_eq!(got.len(), 5);
        assert_eq!(got[2], ("dns".into(), "other".into(), 30));
        // The next scrape, with room again: c, cut, is folded into other
        // with what it had since, and comes back as a new series.
        n.add(&l7(Some("c"), None, false, None), 1);
        let got = samples(&families(&n.snapshot(10), 1000));
        assert_eq!(
            got[..3],
            [
                ("dns".into(), "a".into(), 50),
                ("dns".into(), "b".into(), 40),
                ("dns".into(), "other".into(), 31),
            ]
        );
        n.add(&l7(Some("c"), None, false, None), 7);
        let got = samples(&families(&n.snapshot(10), 1000));
        assert_eq!(got[2], ("dns".into(), "c".into(), 7));
        assert_eq!(got[3], ("dns".into(), "other".into(), 31));
    }

    #[test]
    fn a_full_tracker_sends_new_names_to_other_until_a_scrape_makes_room() {
        let mut n = NameBytes::default();
        let _ = n.snapshot(1); // 2 tracked
        n.add(&l7(Some("a"), None, false, None), 10);
        n.add(&l7(Some("b"), None, false, None), 20);
        n.add(&l7(Some("c"), None, false, None), 99);
        let got = samples(&families(&n.snapshot(1), 1000));
        assert_eq!(got[0], ("dns".into(), "b".into(), 20));
        assert_eq!(got[1], ("dns".into(), "other".into(), 109));
        n.add(&l7(Some("c"), None, false, None), 99);
        let got = samples(&families(&n.snapshot(1), 1000));
        assert_eq!(got[0], ("dns".into(), "c".into(), 99), "c outgrew b");
        assert_eq!(got[1], ("dns".into(), "other".into(), 129));
    }
}
