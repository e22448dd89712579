//! Requests waiting for their responses: HTTP requests and ClientHellos in
//! order per connection, DNS queries by 5-tuple and ID. Bounded: at the
//! bound the oldest request is emitted without a response (it is still an
//! event, counted in `pending_evicted`), as it is after the timeout.

use std::collections::{HashMap, VecDeque};

use flowd_common::FlowKey;

use super::{L7Event, L7Kind, L7Stats};

/// A connection as the client sees it: the request packet's key without
/// its direction. The response's key, reversed, is the same.
pub fn conn_key(k: &FlowKey, reverse: bool) -> FlowKey {
    let mut c = *k;
    c.direction = 0;
    if reverse {
        std::mem::swap(&mut c.src, &mut c.dst);
        std::mem::swap(&mut c.sport, &mut c.dport);
    }
    c
}

pub struct Pending {
    fifo: HashMap<(L7Kind, FlowKey), VecDeque<L7Event>>,
    dns: HashMap<(FlowKey, u16), L7Event>,
    len: usize,
    max: usize,
    max_per_conn: usize,
}

impl Pending {
    pub fn new(max: usize, max_per_conn: usize) -> Self {
        Self {
            fifo: HashMap::new(),
            dns: HashMap::new(),
            len: 0,
            max: max.max(1),
            max_per_conn: max_per_conn.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn make_room(&mut self, out: &mut Vec<L7Event>, stats: &mut L7Stats) {
        while self.len >= self.max {
            let oldest_fifo = self
                .fifo
                .iter()
                .filter_map(|(k, q)| q.front().map(|e| (e.ts_ns, *k)))
                .min_by_key(|(ts, _)| *ts);
            let oldest_dns = self
                .dns
                .iter()
                .map(|(k, e)| (e.ts_ns, *k))
                .min_by_key(|(ts, _)| *ts);
            let ev = match (oldest_fifo, oldest_dns) {
                (Some((tf, kf)), Some((td, _))) if tf <= td => self.pop_fifo(kf.0, &kf.1),
                (_, Some((_, kd))) => self.pop_dns(&kd.0, kd.1),
                (Some((_, kf)), None) => self.pop_fifo(kf.0, &kf.1),
                (None, None) => None,
            };
            let Some(ev) = ev else { break };
            stats.pending_evicted += 1;
            out.push(ev);
        }
    }

    /// Queues an HTTP request or ClientHello on connection `conn`.
    pub fn push_fifo(
        &mut self,
        kind: L7Kind,
        conn: FlowKey,
        ev: L7Event,
        out: &mut Vec<L7Event>,
        stats: &mut L7Stats,
    ) {
        self.make_room(out, stats);
        let q = self.fifo.entry((kind, conn)).or_default();
        if q.len() >= self.max_per_conn
            && let Some(old) = q.pop_front()
        {
            stats.pending_evicted += 1;
            out.push(old);
            self.len -= 1;
        }
        q.push_back(ev);
        self.len += 1;
    }

    /// The oldest request waiting on `conn`.
    pub fn pop_fifo(&mut self, kind: L7Kind, conn: &FlowKey) -> Option<L7Event> {
        let q = self.fifo.get_mut(&(kind, *conn))?;
        let ev = q.pop_front();
        if q.is_empty() {
            self.fifo.remove(&(kind, *conn));
        }
        if ev.is_some() {
            self.len -= 1;
        }
        ev
    }

    /// Queues a DNS query; a repeated query (same 5-tuple and ID) emits the
    /// earlier one unanswered.
    pub fn push_dns(
        &mut self,
        conn: FlowKey,
        id: u16,
        ev: L7Event,
        out: &mut Vec<L7Event>,
        stats: &mut L7Stats,
    ) {
        if let Some(old) = self.dns.remove(&(conn, id)) {
            self.len -= 1;
            stats.unanswered += 1;
            out.push(old);
        }
        self.make_room(out, stats);
        self.dns.insert((conn, id), ev);
        self.len += 1;
    }

    pub fn pop_dns(&mut self, conn: &FlowKey, id: u16) -> Option<L7Event> {
        let ev = self.dns.remove(&(*conn, id));
        if ev.is_some() {
            self.len -= 1;
        }
        ev
    }

    /// Emits every request older than `timeout_ns` at `now_ns` unanswered.
    pub fn expire(
        &mut self,
        now_ns: u64,
        timeout_ns: u64,
        out: &mut Vec<L7Event>,
        stats: &mut L7Stats,
    ) {
        let old = |e: &L7Event| e.ts_ns.saturating_add(timeout_ns) < now_ns;
        let mut n = 0;
        self.fifo.retain(|_, q| {
            while q.front().is_some_and(old) {
                out.extend(q.pop_front());
                n += 1;
            }
            !q.is_empty()
        });
        self.dns.retain(|_, e| {
            if old(e) {
                out.push(e.clone());
                n += 1;
                false
            } else {
                true
            }
        });
        self.len -= n;
        stats.unanswered += n as u64;
    }

    /// Emits everything still waiting, oldest first.
    pub fn flush(&mut self, out: &mut Vec<L7Event>, stats: &mut L7Stats) {
        let mut all: Vec<L7Event> = self.fifo.drain().flat_map(|(_, q)| q).collect();
        all.extend(self.dns.drain().map(|(_, e)| e));
        all.sort_by_key(|e| e.ts_ns);
        stats.unanswered += all.len() as u64;
        self.len = 0;
        out.extend(all);
    }
}
