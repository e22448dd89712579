//! Part 7: offline. `flowd replay` against tshark's conversation
//! statistics and Scapy's `rdpcap().sessions()` on one large capture,
//! concatenated with `mergecap -a` from the shared captures into a
//! temporary file (removed afterwards).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, ensure};

use std::os::fd::AsFd;

use super::{
    Plan, Targets,
    alternatives::{Script, python, require},
    children_cpu_ns,
    raw::{self, BPF_F_XDP_HAS_FRAGS, BPF_PROG_TYPE_XDP, XDP_PASS},
    sep, summarize,
};
use crate::{loader::Datapath, replay::ReplayOptions, sys};

const TARGET_RATIO: f64 = 5.0;

/// The captures merged into the benchmark capture (all Ethernet pcap).
const CAPTURES: [&str; 8] = [
    "misc/echo-connections.pcap",
    "dos/pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng",
    "dos/amp.TCP.reflection.SYNACK.pcap",
    "tcp/two_way_all_flags.pcap",
    "dos/amp.dns.RRSIG.fragmented.pcap",
    "web/bro.org.pcap",
    "web/quic.pcap",
    "web/wikipedia.pcap",
];

const SCAPY_SESSIONS: &str = r#"
import sys
from scapy.all import rdpcap
p = rdpcap(sys.argv[1])
s = p.sessions()
print(len(p), len(s))
"#;

/// Where the shared captures are: next to the repository (`../shared/pcaps`)
/// or at /work/shared/pcaps.
fn pcap_dir() -> anyhow::Result<PathBuf> {
    let candidates = [
        std::env::var_os("FLOWD_PCAPS").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps")),
        Some(PathBuf::from("/work/shared/pcaps")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join(CAPTURES[0]).exists())
        .context("the shared captures (set FLOWD_PCAPS to the pcaps directory)")
}

/// A temporary file, removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn frames_in(path: &Path) -> anyhow::Result<u64> {
    let out = Command::new("capinfos")
        .args(["-M", "-c"])
        .arg(path)
        .output()
        .context("capinfos")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Number of packets:"))
        .and_then(|v| v.trim().parse().ok())
        .context("capinfos: number of packets")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Flowd,
    Tshark,
    Scapy,
}

impl Tool {
    fn command(self) -> &'static str {
        match self {
            Self::Flowd => "`flowd replay FILE --format csv > /dev/null`",
            Self::Tshark => "`tshark -r FILE -q -z conv,tcp -z conv,udp > /dev/null`",
            Self::Scapy => "Scapy `rdpcap(FILE).sessions()`",
        }
    }
}

/// Runs one tool on `file`: (wall s, CPU s of the child).
fn run_tool(tool: Tool, file: &Path, script: &Script) -> anyhow::Result<(f64, f64)> {
    let mut cmd = match tool {
        Tool::Flowd => {
            let mut c = Command::new(std::env::current_exe()?);
            c.arg("replay").arg(file).args(["--format", "csv"]);
            c.env("FLOWD_LOG", "warn");
            c
        }
        Tool::Tshark => {
            let mut c = Command::new("tshark");
            c.arg("-r")
                .arg(file)
                .args(["-q", "-z", "conv,tcp", "-z", "conv,udp"]);
            c
        }
        Tool::Scapy => {
            let mut c = Command::new(python());
            c.arg(&script.path).arg(file);
            c
        }
    };
    let cpu0 = children_cpu_ns();
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {tool:?}"))?;
    let wall = t.elapsed().as_secs_f64();
    let cpu = (children_cpu_ns() - cpu0) as f64 / 1e9;
    ensure!(
        out.status.success(),
        "{tool:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((wall, cpu))
}

pub(super) fn run(plan: &Plan, targets: &mut Targets) -> anyhow::Result<()> {
    for c in ["mergecap", "capinfos", "tshark"] {
        require(c)?;
    }
    let dir = pcap_dir()?;
    let file = TempFile(
        std::env::temp_dir().join(format!("flowd-bench-{}-replay.pcap", std::process::id())),
    );
    let mut merge = Command::new("mergecap");
    merge.args(["-a", "-F", "pcap", "-w"]).arg(&file.0);
    for _ in 0..plan.offline_copies {
        for c in CAPTURES {
            merge.arg(dir.join(c));
        }
    }
    let out = merge.output().context("mergecap")?;
    ensure!(
        out.status.success(),
        "mergecap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames = frames_in(&file.0)?;
    let bytes = std::fs::metadata(&file.0)?.len();
    let small = dir.join("web/wikipedia.pcap");
    let small_frames = frames_in(&small)?;
    let script = Script::new("sessions.py", SCAPY_SESSIONS)?;

    let tools = [Tool::Flowd, Tool::Tshark, Tool::Scapy];
    let reps = plan.offline_reps.iter().copied().max().unwrap_or(1);
    let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); tools.len()];
    let mut startup = Vec::new();
    for rep in 0..reps {
        for j in 0..tools.len() {
            let i = (j + rep) % tools.len();
            if rep >= plan.offline_reps[i] {
                continue;
            }
            eprintln!(
                "offline: {:?}, repetition {}/{}",
                tools[i],
                rep + 1,
                plan.offline_reps[i]
            );
            samples[i].push(run_tool(tools[i], &file.0, &script)?);
        }
        if rep < plan.offline_reps[0] {
            // flowd replay's fixed cost: the same command on a 136-frame capture.
            startup.push(run_tool(Tool::Flowd, &small, &script)?);
        }
    }

    println!(
        "## 7. offline: one capture, {} frames, {:.1} MB (`mergecap -a` of {} copies of: {}); median (min–max)\n",
        sep(frames),
        bytes as f64 / 1e6,
        plan.offline_copies,
        CAPTURES.join(", ")
    );
    println!(
        "| tool | command | runs | wall s | CPU s (user+sys) | frames/s | ratio to tshark | result |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let fps =
        |v: &[(f64, f64)]| summarize(&v.iter().map(|x| frames as f64 / x.0).collect::<Vec<_>>());
    let tshark = fps(&samples[1]).median;
    for (t, s) in tools.iter().zip(&samples) {
        let f = fps(s);
        let ratio = f.median / tshark;
        let result = if *t == Tool::Flowd {
            let pass = ratio >= TARGET_RATIO;
            targets.add(
                "replay frames/s against tshark conversation statistics",
                format!("≥ {TARGET_RATIO:.0}×"),
                format!("{ratio:.2}× ({:.0} vs {:.0} frames/s)", f.median, tshark),
                pass,
            );
            format!("{} (≥ {TARGET_RATIO:.0}×)", super::pm(pass))
        } else {
            String::new()
        };
        println!(
            "| {t:?} | {} | {} | {} | {} | {} | {ratio:.2} | {result} |",
            t.command(),
            s.len(),
            summarize(&s.iter().map(|x| x.0).collect::<Vec<_>>()).p(2),
            summarize(&s.iter().map(|x| x.1).collect::<Vec<_>>()).p(2),
            f.p(0),
        );
    }
    // Where the fixed cost and the per-frame floor come from.
    let mut load_s = Vec::new();
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let dp = Datapath::load(ReplayOptions::default().capacity)?;
        load_s.push(t.elapsed().as_secs_f64());
        sizes = vec![
            ("flowd_ingress (XDP)", raw::prog_sizes(dp.ingress_fd()?)?),
            ("flowd_egress (TC)", raw::prog_sizes(dp.egress_fd()?)?),
        ];
    }
    let empty = raw::load_prog(
        BPF_PROG_TYPE_XDP,
        &raw::ret_insns(XDP_PASS as i32),
        BPF_F_XDP_HAS_FRAGS,
        "empty_xdp",
    )?;
    let frame = super::netns::udp_frame(super::netns::MAC_B, 1, 2);
    let calls = 200_000u32;
    let mut floor = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..calls {
            sys::xdp_test_run(empty.as_fd(), &[], &frame, 1)?;
        }
        floor.push(t.elapsed().as_nanos() as f64 / f64::from(calls));
    }
    let st = summarize(&startup.iter().map(|x| x.0).collect::<Vec<_>>());
    let flowd_wall = summarize(&samples[0].iter().map(|x| x.0).collect::<Vec<_>>()).median;
    let marginal = frames as f64 / (flowd_wall - st.median).max(1e-6);
    println!(
        "\nflowd replay's fixed cost (the same command on a {}-frame capture): {} s wall; without it, {} frames/s ({:.2}× tshark).",
        small_frames,
        st.p(3),
        sep(marginal as u64),
        marginal / tshark
    );
    println!(
        "\nwhere the fixed cost goes: `Datapath::load({})` (what replay does first: both programs through the verifier, maps created) takes {} s; the verifier processed {}.",
        sep(u64::from(ReplayOptions::default().capacity)),
        summarize(&load_s).p(3),
        sizes
            .iter()
            .map(|(n, (x, v))| format!(
                "{} instructions for {n} ({} after verification)",
                sep(*v),
                sep(*x)
            ))
            .collect::<Vec<_>>()
            .join(" and ")
    );
    let fl = summarize(&floor);
    println!(
        "the per-frame floor: one `BPF_PROG_TEST_RUN` per frame with an empty XDP program costs {} ns per call (wall, {} calls), i.e. at most {} frames/s = {:.2}× tshark before flowd does any work.",
        fl.p(0),
        sep(u64::from(calls)),
        sep((1e9 / fl.median) as u64),
        1e9 / fl.median / tshark
    );
    Ok(())
}
