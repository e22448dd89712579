//! Part 3: the usual alternatives on the same traffic. A fixed burst of
//! 60-byte UDP packets (one 5-tuple per burst), paced at several rates, from
//! namespace `a` to `b`, where the flowd daemon runs (default settings) and,
//! one at a time, a Python Scapy `sniff(prn=callback)` loop that counts
//! 5-tuples or a tshark live capture with conversation statistics. Each
//! tool's share of the packets and the CPU it used (utime + stime from
//! /proc/PID/stat, with its children: tshark's dumpcap) over the same window.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Write as _},
    net::UdpSocket,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use flowd_tests::{Flowd, packet::udp_frame};

use super::{
    Plan, Targets,
    bed::{self, Generator, Pair, Proc},
    proc_cpu_ns, sep, summarize, tree_cpu_ns,
};

const DPORT: u16 = 9000;
/// After the burst: time the tools get to work off their backlog.
const GRACE: Duration = Duration::from_millis(1500);

/// The classic Scapy loop: count packets per 5-tuple in a callback.
/// Prints READY once capturing, reads "stop" on stdin, prints the counts.
pub(super) const SCAPY_SNIFF: &str = r#"
import json, sys
from scapy.all import AsyncSniffer, IP

counts = {}

def cb(p):
    ip = p.getlayer(IP)
    if ip is None:
        return
    l4 = ip.payload
    k = (ip.src, ip.dst, ip.proto, getattr(l4, "sport", 0), getattr(l4, "dport", 0))
    counts[k] = counts.get(k, 0) + 1

s = AsyncSniffer(iface=sys.argv[1], prn=cb, store=False,
                 started_callback=lambda: print("READY", flush=True))
s.start()
sys.stdin.readline()
s.stop()
print(json.dumps([list(k) + [n] for k, n in counts.items()]), flush=True)
"#;

/// The Python that has Scapy (Debian's python3-scapy), not a pyenv shim.
pub(super) fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// A script written to a temporary file, removed on drop.
pub(super) struct Script {
    pub(super) path: std::path::PathBuf,
}

impl Script {
    pub(super) fn new(name: &str, text: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("flowd-bench-{}-{name}", std::process::id()));
        std::fs::write(&path, text)?;
        Ok(Self { path })
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Scapy,
    Tshark,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Self::Scapy => "Scapy `sniff(prn=callback)` counting 5-tuples",
            Self::Tshark => "tshark `-i IF -q -z conv,udp` (live)",
        }
    }
}

/// A started capture tool.
struct Running {
    proc: Proc,
    tool: Tool,
    /// Scapy's stdout (after READY), or tshark's stdout reader.
    out: mpsc::Receiver<String>,
}

/// Running packet sockets bound to `ifc` in namespace `ns`: the lines of
/// the namespace's /proc/net/packet (`sk RefCnt Type Proto Iface R ...`)
/// with that ifindex and R = 1.
fn packet_sockets(ns: &str, ifc: &str) -> anyhow::Result<usize> {
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("ip").args(args).output()?;
        ensure!(out.status.success(), "ip {args:?}: {out:?}");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // `ip -o link show dev IF`: "INDEX: IF: ...".
    let link = run(&["-n", ns, "-o", "link", "show", "dev", ifc])?;
    let index = link.split(':').next().unwrap_or("").trim().to_owned();
    let table = run(&["netns", "exec", ns, "cat", "/proc/net/packet"])?;
    Ok(table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(4) == Some(&index.as_str()) && f.get(5) == Some(&"1")
        })
        .count())
}

fn start(tool: Tool, pair: &Pair, script: &Script) -> anyhow::Result<Running> {
    // The interface's packet sockets before the tool: its own shows that
    // its capture is live.
    let sockets_before = packet_sockets(&pair.b.name, &pair.if_b)?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &pair.b.name]);
    match tool {
        Tool::Scapy => {
            cmd.arg(python()).arg(&script.path).arg(&pair.if_b);
        }
        Tool::Tshark => {
            cmd.args(["tshark", "-i", &pair.if_b, "-q", "-z", "conv,udp"]);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {tool:?}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let stderr = child.stderr.take().context("stderr")?;
    let proc = Proc { child };
    let (ready_tx, ready_rx) = mpsc::channel();
    let (out_tx, out_rx) = mpsc::channel();
    // Readiness: Scapy prints READY on stdout, tshark "Capturing on" on stderr.
    let ready_tx2 = ready_tx.clone();
    thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let mut all = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if line.trim() == "READY" {
                let _ = ready_tx2.send(());
            } else {
                all.push_str(&line);
            }
            line.clear();
        }
        let _ = out_tx.send(all);
    });
    thread::spawn(move || {
        let mut r = BufReader::new(stderr);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if line.contains("Capturing on") {
                let _ = ready_tx.send(());
            }
            line.clear();
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .with_context(|| format!("{tool:?} did not start capturing within 30 s"))?;
    // dumpcap says "Capturing on" before it opens the interface (a run of
    // the L7 tests lost its first 30 frames to that): wait until the
    // tool's packet socket is bound to the interface and running.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while packet_sockets(&pair.b.name, &pair.if_b)? <= sockets_before {
        ensure!(
            std::time::Instant::now() < deadline,
            "{tool:?} said it was capturing, but no packet socket of {} was running after 30 s",
            pair.if_b
        );
        thread::sleep(Duration::from_millis(20));
    }
    Ok(Running {
        proc,
        tool,
        out: out_rx,
    })
}

/// Stops the tool and returns the packets it counted per source port of
/// the pair's `a` → `b`:`DPORT` (one 5-tuple per burst).
fn stop(mut r: Running, pair: &Pair) -> anyhow::Result<HashMap<u16, u64>> {
    match r.tool {
        Tool::Scapy => {
            let stdin = r.proc.child.stdin.as_mut().context("stdin")?;
            writeln!(stdin, "stop")?;
        }
        Tool::Tshark => r.proc.interrupt_and_wait(30)?,
    }
    let out = r
        .out
        .recv_timeout(Duration::from_secs(60))
        .context("the tool's output")?;
    let _ = r.proc.child.wait();
    let mut counts = HashMap::new();
    match r.tool {
        Tool::Scapy => {
            let v: serde_json::Value = serde_json::from_str(out.trim())
                .with_context(|| format!("Scapy output: {out:?}"))?;
            for row in v.as_array().into_iter().flatten() {
                let f = |i: usize| row.get(i).cloned().unwrap_or_default();
                if f(0) == pair.ip_a.as_str() && f(4) == u64::from(DPORT) {
                    let sport = f(3).as_u64().unwrap_or(0) as u16;
                    *counts.entry(sport).or_default() += f(5).as_u64().unwrap_or(0);
                }
            }
        }
        Tool::Tshark => {
            let b = format!("{}:{DPORT}", pair.ip_b);
            let a_prefix = format!("{}:", pair.ip_a);
            for line in out.lines() {
                let t: Vec<&str> = line.split_whitespace().collect();
                let Some(p) = t.iter().position(|x| *x == "<->") else {
                    continue;
                };
                if p == 0 || t.len() < p + 9 {
                    continue;
                }
                let (l, r) = (t[p - 1], t[p + 1]);
                let a = if r == b {
                    l
                } else if l == b {
                    r
                } else {
                    continue;
                };
                let Some(sport) = a
                    .strip_prefix(a_prefix.as_str())
                    .and_then(|p| p.parse().ok())
                else {
                    continue;
                };
                *counts.entry(sport).or_default() +=
                    t[p + 8].replace(',', "").parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(counts)
}

/// The packets flowd's table holds per source port of the bursts'
/// 5-tuples (`/api/v1/flows?limit=all`: every flow, not one page).
fn flowd_counts(d: &Flowd, pair: &Pair) -> anyhow::Result<HashMap<u16, u64>> {
    let (status, body, _) = bed::get(d, "/api/v1/flows?limit=all")?;
    ensure!(status == 200, "GET /api/v1/flows: {status}");
    let v: serde_json::Value = serde_json::from_str(&body).context("flows JSON")?;
    let mut counts = HashMap::new();
    for f in v.as_array().into_iter().flatten() {
        if f["dport"] == u64::from(DPORT) && f["src"] == pair.ip_a.as_str() {
            let sport = f["sport"].as_u64().unwrap_or(0) as u16;
            *counts.entry(sport).or_default() += f["packets"].as_u64().unwrap_or(0);
        }
    }
    Ok(counts)
}

/// One run: (tool count, tool CPU ns, flowd count, flowd CPU ns, sent).
struct Run {
    tool: u64,
    tool_cpu: u64,
    flowd: u64,
    flowd_cpu: u64,
    sent: u64,
    received: u64,
}

pub(super) fn run(plan: &Plan, targets: &mut Targets) -> anyhow::Result<()> {
    require("tshark")?;
    let pair = Pair::new()?;
    let ip_b = pair.ip_b.clone();
    let _socket = pair
        .b
        .run_scoped(move || Ok(UdpSocket::bind((ip_b.as_str(), DPORT))?))?;
    let daemon = pair.start_daemon(&[])?;
    let script = Script::new("sniff.py", SCAPY_SNIFF)?;
    let tools = [Tool::Scapy, Tool::Tshark];
    let mut results: Vec<(u32, Tool, Vec<Run>)> = Vec::new();
    for &rate in plan.alt_rates {
        for &t in &tools {
            results.push((rate, t, Vec::new()));
        }
    }
    let mut sport = 20_000u16;
    for (k, &rate) in plan.alt_rates.iter().enumerate() {
        for j in 0..tools.len() {
            let tool = tools[(j + k) % tools.len()];
            // One tool session, `alt_reps` bursts, each its own 5-tuple.
            let running = start(tool, &pair, &script)?;
            let pid = running.proc.pid();
            let mut bursts = Vec::new();
            for rep in 0..plan.alt_reps {
                sport += 1;
                eprintln!(
                    "alternatives: {tool:?} at {rate} packets/s, burst {}/{}",
                    rep + 1,
                    plan.alt_reps
                );
                let g = Generator::fixed(&pair, udp_frame(&pair.ends, sport, DPORT))?;
                let b0 = pair.b.try_link_stats(&pair.if_b)?;
                let (c0, f0) = (tree_cpu_ns(pid), proc_cpu_ns(daemon.pid()).unwrap_or(0));
                let (sent, _wall) = g.paced(u64::from(rate), plan.alt_secs)?;
                thread::sleep(GRACE);
                let (c1, f1) = (tree_cpu_ns(pid), proc_cpu_ns(daemon.pid()).unwrap_or(0));
                let b1 = pair.b.try_link_stats(&pair.if_b)?;
                bursts.push((
                    sport,
                    Run {
                        tool: 0,
                        tool_cpu: c1.saturating_sub(c0),
                        flowd: 0,
                        flowd_cpu: f1.saturating_sub(f0),
                        sent,
                        received: (b1 - b0).rx_packets,
                    },
                ));
            }
            let counted = stop(running, &pair)?;
            // flowd drains every second: wait for the drain after the last burst.
            let mut flowd = HashMap::new();
            for _ in 0..30 {
                flowd = flowd_counts(&daemon, &pair)?;
                if bursts
                    .iter()
                    .all(|(p, r)| flowd.get(p).copied().unwrap_or(0) >= r.sent)
                {
                    break;
                }
                thread::sleep(Duration::from_millis(200));
            }
            let row = results
                .iter_mut()
                .find(|r| r.0 == rate && r.1 == tool)
                .context("result row")?;
            for (p, mut r) in bursts {
                r.tool = counted.get(&p).copied().unwrap_or(0);
                r.flowd = flowd.get(&p).copied().unwrap_or(0);
                row.2.push(r);
            }
        }
    }
    drop(daemon);

    let kernel_ns = targets.flowd_xdp_ns;
    println!(
        "## 3. alternatives on the same traffic (60-byte UDP, one 5-tuple per burst, {:.0} s bursts paced in 1 ms slices, {} bursts per tool session; median (min–max) over the bursts)\n",
        plan.alt_secs, plan.alt_reps
    );
    println!(
        "CPU = utime + stime from /proc/PID/stat (tool: with its children, i.e. tshark's dumpcap) over the burst + {:.1} s; clock-tick resolution (10 ms). flowd = the `flowd run` daemon (defaults, RTT on), its share from /api/v1/flows. flowd's kernel side runs in softirq, in no process: estimated as packets × {}; the tools' AF_PACKET copies in softirq are not counted either.\n",
        GRACE.as_secs_f64(),
        kernel_ns.map_or(
            "(run part 1 for the per-packet estimate)".to_owned(),
            |ns| format!("{ns:.0} ns (part 1: XDP existing-flow path, flowd − empty)")
        )
    );
    println!(
        "| rate (packets/s) | packets | tool | tool accounted | tool CPU ms | flowd accounted | flowd daemon CPU ms | flowd kernel est. ms | tool share / flowd share | tool CPU / flowd CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut flowd_always_all = true;
    for (rate, tool, runs) in &results {
        let share = |f: &dyn Fn(&Run) -> u64| {
            summarize(
                &runs
                    .iter()
                    .map(|r| 100.0 * f(r) as f64 / r.sent.max(1) as f64)
                    .collect::<Vec<_>>(),
            )
        };
        let tool_share = share(&|r| r.tool);
        let flowd_share = share(&|r| r.flowd);
        flowd_always_all &= runs
            .iter()
            .all(|r| r.flowd == r.sent && r.received == r.sent);
        let tool_cpu = summarize(
            &runs
                .iter()
                .map(|r| r.tool_cpu as f64 / 1e6)
                .collect::<Vec<_>>(),
        );
        let flowd_cpu = summarize(
            &runs
                .iter()
                .map(|r| r.flowd_cpu as f64 / 1e6)
                .collect::<Vec<_>>(),
        );
        let sent = runs.first().map_or(0, |r| r.sent);
        let kernel_ms = kernel_ns.map(|ns| sent as f64 * ns / 1e6);
        let flowd_total = flowd_cpu.median + kernel_ms.unwrap_or(0.0);
        println!(
            "| {} | {} | {} | {} % | {} | {} % | {} | {} | {:.3} | {} |",
            sep(u64::from(*rate)),
            sep(sent),
            tool.name(),
            tool_share.p(1),
            tool_cpu.p(0),
            flowd_share.p(1),
            flowd_cpu.p(0),
            kernel_ms.map_or("n/a".into(), |m| format!("{m:.1}")),
            tool_share.median / flowd_share.median.max(1e-9),
            if flowd_total > 0.0 {
                format!("{:.1}", tool_cpu.median / flowd_total)
            } else {
                "∞ (flowd < 1 tick)".into()
            }
        );
    }
    targets.add(
        "alternatives: flowd accounts for every packet sent, at every rate",
        "100 %",
        if flowd_always_all {
            "100 %".into()
        } else {
            "below 100 % in some run".into()
        },
        flowd_always_all,
    );
    Ok(())
}

/// Fails unless `cmd` exists on PATH.
pub(super) fn require(cmd: &str) -> anyhow::Result<()> {
    match Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        _ => bail!("{cmd} is not installed"),
    }
}
