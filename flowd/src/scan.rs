//! Scan detection: sources whose failed connection attempts touch more than
//! N distinct ports of one host, or more than M distinct hosts, within a
//! window.
//!
//! Only failed attempts count: a TCP connection that was never answered
//! (S0, SH, RSTOS0) or was refused (REJ), and a UDP flow that got no reply.
//! A browser or a backup job makes connections that succeed, so they are
//! never counted, however many hosts they reach.

use std::collections::BTreeMap;

use flowd_common::proto::{ip, tcp};
use hashbrown::HashMap;

use serde::Serialize;
use tracing::warn;

use crate::{
    flowtable::{Flow, FlowTable, pair_conn_state},
    record::addr,
};

/// Thresholds and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanConfig {
    /// Distinct ports of one host that make a (vertical) scan.
    pub ports: usize,
    /// Distinct hosts that make a (horizontal) scan.
    pub hosts: usize,
    /// Length of the counting window.
    pub window_ns: u64,
    /// How long a flagged source stays a suspect after its last attempt.
    pub suspect_ttl_ns: u64,
    /// A flow counts as unanswered when it is at least this old.
    pub answer_grace_ns: u64,
    /// Sources tracked at once; beyond, the quietest are dropped.
    pub max_sources: usize,
    /// Suspects kept at once.
    pub max_suspects: usize,
}

impl Default for ScanConfig {
    /// 100 ports or 100 hosts in 60 s; suspects kept 10 minutes.
    fn default() -> Self {
        Self {
            ports: 100,
            hosts: 100,
            window_ns: 60 * SEC,
            suspect_ttl_ns: 600 * SEC,
            answer_grace_ns: 2 * SEC,
            max_sources: 10_000,
            max_suspects: 1_000,
        }
    }
}

const SEC: u64 = 1_000_000_000;

/// A flagged source, as `/api/v1/suspects` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suspect {
    pub src: String,
    /// Most distinct ports of one host in a window.
    pub ports: usize,
    /// Most distinct hosts in a window.
    pub hosts: usize,
    /// Failed attempts counted.
    pub attempts: u64,
    pub first_flagged_ns: u64,
    pub last_seen_ns: u64,
    /// What flagged the source: `scan` here, an application-layer signal
    /// (`crate::export::l7signals`) otherwise; there `ports` and `hosts`
    /// are 0 and `attempts` counts the events that showed the signal.
    pub signal: &'static str,
    /// For an application-layer signal: the last name or server that
    /// showed it (network data, cut to 128 bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Default)]
struct Source {
    /// dst -> distinct dports in this window: at most `hosts + 1` dsts of
    /// at most `ports + 1` ports, so vectors (a SYN flood from random
    /// sources makes many sources with one port each).
    ports: Vec<([u8; 16], Vec<u16>)>,
    attempts: u64,
    last_ns: u64,
}

/// The detector: fed from the flow table after every drain.
#[derive(Debug, Default)]
pub struct ScanDetector {
    config: ScanConfig,
    window_start_ns: u64,
    sources: HashMap<[u8; 16], Source>,
    suspects: BTreeMap<[u8; 16], Suspect>,
    flagged_total: u64,
}

impl ScanDetector {
    pub fn new(config: ScanConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Sources flagged since start.
    pub fn flagged_total(&self) -> u64 {
        self.flagged_total
    }

    /// Current suspects, most ports first.
    pub fn suspects(&self) -> Vec<Suspect> {
        let mut v: Vec<Suspect> = self.suspects.values().cloned().collect();
        v.sort_by_key(|s| std::cmp::Reverse((s.ports, s.hosts)));
        v
    }

    /// Looks at the flows old enough to judge and counts the failed ones.
    /// Each flow is judged once (the table hands out each flow once), and
    /// only flows not judged yet are looked at.
    pub fn observe(&mut self, table: &FlowTable, now_ns: u64) {
        let c = self.config;
        if now_ns.saturating_sub(self.window_start_ns) >= c.window_ns {
            self.window_start_ns = now_ns;
            self.sources.clear();
        }
        self.suspects
            .retain(|_, s| now_ns.saturating_sub(s.last_seen_ns) < c.suspect_ttl_ns);
        for f in table.take_settled(now_ns, c.answer_grace_ns) {
            if failed_attempt(f, table.reverse(&f.key)) {
                self.count(f, now_ns);
            }
        }
        if self.sources.len() > c.max_sources {
            // Keep the busiest sources.
            let mut v: Vec<([u8; 16], u64)> =
                self.sources.iter().map(|(k, s)| (*k, s.attempts)).collect();
            v.sort_by_key(|s| std::cmp::Reverse(s.1));
            for (k, _) in v.into_iter().skip(c.max_sources) {
                self.sources.remove(&k);
            }
            // A burst of sources must not keep its table.
            self.sources.shrink_to(c.max_sources);
        }
    }

    fn count(&mut self, f: &Flow, now_ns: u64) {
        let c = self.config;
        let k = &f.key;
        let s = self.sources.entry(k.src).or_default();
        s.attempts += 1;
        s.last_ns = now_ns;
        let i = match s.ports.iter().position(|(d, _)| *d == k.dst) {
            Some(i) => i,
            None => {
                s.ports.push((k.dst, Vec::new()));
                s.ports.len() - 1
            }
        };
        let ports = &mut s.ports[i].1;
        // No need to remember more than the threshold.
        if ports.len() <= c.ports && !ports.contains(&k.dport) {
            ports.push(k.dport);
        }
        if s.ports.len() > c.hosts + 1 {
            // Bound the per-source list: one more than the threshold is enough.
            let drop = s
                .ports
                .iter()
                .position(|(d, _)| *d != k.dst)
                .expect("more than one");
            s.ports.remove(drop);
        }
        let max_ports = s.ports.iter().map(|(_, p)| p.len()).max().unwrap_or(0);
        let hosts = s.ports.len();
        let attempts = s.attempts;
        if max_ports > c.ports || hosts > c.hosts {
            let src = addr(&k.src).to_string();
            let room = self.suspects.len() < c.max_suspects;
            match self.suspects.get_mut(&k.src) {
                Some(sus) => {
                    sus.ports = sus.ports.max(max_ports);
                    sus.hosts = sus.hosts.max(hosts);
                    sus.attempts = sus.attempts.max(attempts);
                    sus.last_seen_ns = now_ns;
                }
                None if room => {
                    warn!(
                        src,
                        ports = max_ports,
                        hosts,
                        attempts,
                        "scan suspect: failed attempts over the threshold"
                    );
                    self.flagged_total += 1;
                    self.suspects.insert(
                        k.src,
                        Suspect {
                            src,
                            ports: max_ports,
                            hosts,
                            attempts,
                            first_flagged_ns: now_ns,
                            last_seen_ns: now_ns,
                            signal: "scan",
                            detail: None,
                        },
                    );
                }
                None => {}
            }
        }
    }
}

/// A TCP connection attempt that was not answered or was refused, or a UDP
/// flow with no reply at all, from the flow's source.
/// Whether flow `f` (with its reverse direction `rev`, if the table has
/// it) is a failed attempt: a SYN nobody answered or that was refused, a
/// UDP datagram without an answer.
fn failed_attempt(f: &Flow, rev: Option<&Flow>) -> bool {
    match f.key.proto {
        ip::TCP => {
            // Only the originator's side (it sent the SYN) counts.
            if f.counts.syn == 0
                || f.counts.tcp_flags & tcp::ACK != 0 && rev.is_some_and(|r| r.counts.syn > 0)
            {
                return false;
            }
            matches!(
                pair_conn_state(f, rev),
                Some("S0" | "REJ" | "RSTOS0" | "SH")
            )
        }
        ip::UDP => rev.is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use flowd_common::{FlowCounts, FlowKey, FlowStats};

    use super::*;
    use crate::clock::TimeBase;

    fn key(src: u8, dst: u8, sport: u16, dport: u16, proto: u8, dir: u8) -> FlowKey {
        FlowKey {
            direction: dir,
            proto,
            src: flowd_common::ipv4_mapped([198, 18, 0, src]),
            dst: flowd_common::ipv4_mapped([198, 18, 0, dst]),
            sport,
            dport,
            ..Default::default()
        }
    }

    fn stats(syn: u32, rst: u32, flags: u16, t: u64) -> FlowStats {
        FlowStats {
            counts: FlowCounts {
                packets: 1,
                bytes: 60,
                syn,
                fin: 0,
                rst,
                tcp_flags: flags,
                ..Default::default()
            },
            first_seen_ns: t,
            last_seen_ns: t,
            ..Default::default()
        }
    }

    #[test]
    fn refused_ports_flag_the_source_and_answered_ones_do_not() {
        let mut t = FlowTable::default();
        let mut d = ScanDetector::new(ScanConfig {
            ports: 100,
            ..ScanConfig::default()
        });
        // 150 refused ports from .1 to .2: SYN in, RST-ACK out.
        for p in 0..150u16 {
            t.apply(
                &key(1, 2, 40000, 1000 + p, 6, 0),
                &stats(1, 0, 0x02, SEC),
                TimeBase::Capture,
            );
            t.apply(
                &key(2, 1, 1000 + p, 40000, 6, 1),
                &stats(0, 1, 0x14, SEC),
                TimeBase::Capture,
            );
        }
        // 150 answered connections from .3 to 150 ports: a busy but normal client.
        for p in 0..150u16 {
            t.apply(
                &key(3, 2, 40000 + p, 443, 6, 0),
                &stats(1, 0, 0x12, SEC),
                TimeBase::Capture,
            );
            t.apply(
                &key(2, 3, 443, 40000 + p, 6, 1),
                &stats(1, 0, 0x12, SEC),
                TimeBase::Capture,
            );
        }
        d.observe(&t, SEC + SEC / 2);
        assert!(d.suspects().is_empty(), "too young to judge");
        d.observe(&t, 4 * SEC);
        let s = d.suspects();
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].src, "198.18.0.1");
        assert_eq!(s[0].ports, 101, "counting stops just over the threshold");
        assert_eq!(d.flagged_total(), 1);
        // Judged flows are not counted twice.
        d.observe(&t, 5 * SEC);
        assert_eq!(d.flagged_total(), 1);
    }

    #[test]
    fn suspects_expire() {
        let mut t = FlowTable::default();
        let mut d = ScanDetector::new(ScanConfig {
            hosts: 3,
            suspect_ttl_ns: 10 * SEC,
            ..ScanConfig::default()
        });
        for h in 10..20u8 {
            t.apply(
                &key(1, h, 5000, 161, 17, 1),
                &stats(0, 0, 0, SEC),
                TimeBase::Capture,
            );
        }
        d.observe(&t, 4 * SEC);
        assert_eq!(d.suspects().len(), 1);
        assert_eq!(d.suspects()[0].hosts, 4);
        d.observe(&t, 30 * SEC);
        assert!(d.suspects().is_empty());
    }
}
