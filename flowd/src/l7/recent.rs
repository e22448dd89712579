//! The most recent events, for `/api/v1/l7`: a bounded ring of event log
//! lines (`[l7] recent_events`), newest served first. The lines are the
//! event log's JSON objects, encoded once when the event is made.

use std::collections::VecDeque;

use super::L7Kind;

#[derive(Debug, Default)]
pub struct RecentEvents {
    cap: usize,
    ring: VecDeque<(L7Kind, Box<str>)>,
}

impl RecentEvents {
    /// Keeps at most `cap` events (0: none).
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            ring: VecDeque::with_capacity(cap.min(4096)),
        }
    }

    /// A new bound; the oldest events beyond it go.
    pub fn set_capacity(&mut self, cap: usize) {
        self.cap = cap;
        while self.ring.len() > cap {
            self.ring.pop_front();
        }
        self.ring.shrink_to(cap.min(4096));
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Adds one event's JSON object (no newline); the oldest goes when full.
    pub fn push(&mut self, kind: L7Kind, json: &str) {
        if self.cap == 0 {
            return;
        }
        if self.ring.len() == self.cap {
            self.ring.pop_front();
        }
        self.ring.push_back((kind, json.into()));
    }

    /// Up to `limit` events of `kind` (all kinds: `None`), newest first, as
    /// one JSON array.
    pub fn newest_json(&self, kind: Option<L7Kind>, limit: usize) -> String {
        let mut out = String::from("[");
        for (i, (_, line)) in self
            .ring
            .iter()
            .rev()
            .filter(|(k, _)| kind.is_none_or(|want| *k == want))
            .take(limit)
            .enumerate()
        {
            if i > 0 {
                out.push(',');
            }
            out.push_str(line);
        }
        out.push(']');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(json: &str) -> Vec<u64> {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["n"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn bounded_newest_first_filtered_by_kind() {
        let mut r = RecentEvents::new(5);
        let kinds = [L7Kind::Dns, L7Kind::Http, L7Kind::Tls];
        for n in 0..8u64 {
            r.push(kinds[n as usize % 3], &format!("{{\"n\":{n}}}"));
        }
        assert_eq!(r.len(), 5, "the bound holds");
        assert_eq!(ids(&r.newest_json(None, 100)), [7, 6, 5, 4, 3]);
        assert_eq!(ids(&r.newest_json(None, 2)), [7, 6]);
        assert_eq!(ids(&r.newest_json(Some(L7Kind::Dns), 100)), [6, 3]);
        assert_eq!(ids(&r.newest_json(Some(L7Kind::Http), 1)), [7]);
        assert_eq!(ids(&r.newest_json(Some(L7Kind::Tls), 100)), [5]);
        r.set_capacity(2);
        assert_eq!(ids(&r.newest_json(None, 100)), [7, 6]);
        r.push(L7Kind::Dns, "{\"n\":8}");
        assert_eq!(ids(&r.newest_json(None, 100)), [8, 7]);
        let mut none = RecentEvents::new(0);
        none.push(L7Kind::Dns, "{\"n\":1}");
        assert!(none.is_empty());
        assert_eq!(none.newest_json(None, 10), "[]");
    }
}
