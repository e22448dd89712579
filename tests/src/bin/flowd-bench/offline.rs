//! Part 7: offline. `flowd replay` against tshark's conversation
//! statistics and Scapy's `rdpcap().sessions()` on one large capture,
//! concatenated with `mergecap -a` into a temporary file (removed
//! afterwards). Captures are looked up in `FLOWD_PCAPS` (larger ones, not
//! in the repository), then in the repository's `tests/data/pcaps`; the
//! merged-capture rows are skipped, saying which file is missing, when one
//! is in neither. Replay's fixed cost needs only a small capture that the
//! repository has.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, ensure};
use flowd_tests::packet::{Ipv4Ends, udp_frame};

use std::os::fd::AsFd;

use super::{
    Plan, Targets,
    alternatives::{Script, python, require},
    children_cpu_ns,
    raw::{self, BPF_F_XDP_HAS_FRAGS, BPF_PROG_TYPE_XDP, XDP_PASS},
    sep, summarize,
};
use flowd::{
    loader::{Datapath, Programs},
    replay::{BATCH_BYTES, ReplayOptions, replay_file},
    sys,
};

const TARGET_RATIO: f64 = 5.0;

/// The captures merged into the benchmark capture (all Ethernet pcap).
pub(super) const CAPTURES: [&str; 8] = [
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

/// The small capture for replay's fixed cost (136 frames; in the repository).
const TINY: &str = "web/wikipedia.pcap";

/// Where captures are looked up: `FLOWD_PCAPS` first (when set), then the
/// repository's `tests/data/pcaps`.
pub(super) struct Captures {
    large: Option<PathBuf>,
    repo: PathBuf,
}

impl Captures {
    pub(super) fn new() -> Self {
        Self {
            large: std::env::var_os("FLOWD_PCAPS").map(PathBuf::from),
            repo: flowd_tests::data_dir().join("pcaps"),
        }
    }

    pub(super) fn find(&self, rel: &str) -> Option<PathBuf> {
        self.large
            .iter()
            .chain([&self.repo])
            .map(|d| d.join(rel))
            .find(|p| p.is_file())
    }

    /// Where a missing capture was looked for, for the message.
    pub(super) fn looked_in(&self) -> String {
        format!(
            "FLOWD_PCAPS ({}) and {}",
            self.large
                .as_ref()
                .map_or_else(|| "not set".to_owned(), |d| d.display().to_string()),
            self.repo.display()
        )
    }
}

/// One line for the machine section: where larger captures come from.
pub(super) fn describe_captures() -> String {
    let c = Captures::new();
    let missing: Vec<&str> = CAPTURES
        .iter()
        .copied()
        .filter(|r| c.find(r).is_none())
        .collect();
    match (&c.large, missing.is_empty()) {
        (_, true) => format!("captures: all found ({})", c.looked_in()),
        (None, false) => format!(
            "captures: FLOWD_PCAPS is not set and {} is not in {}: part 7's merged-capture rows will be skipped (set FLOWD_PCAPS to a directory holding it)",
            missing.join(", "),
            c.repo.display()
        ),
        (Some(_), false) => format!(
            "captures: {} not found in {}: part 7's merged-capture rows will be skipped",
            missing.join(", "),
            c.looked_in()
        ),
    }
}

/// A temporary file, removed on drop.
pub(super) struct TempFile(pub(super) PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub(super) fn frames_in(path: &Path) -> anyhow::Result<u64> {
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
            let mut c = Command::new(flowd_tests::flowd_bin());
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

/// `mergecap -a` of `copies` copies of `set` into a temporary file.
pub(super) fn merged(set: &[PathBuf], copies: usize, tag: &str) -> anyhow::Result<TempFile> {
    let file = TempFile(std::env::temp_dir().join(format!(
        "flowd-bench-{}-replay-{tag}.pcap",
        std::process::id()
    )));
    let mut merge = Command::new("mergecap");
    merge.args(["-a", "-F", "pcap", "-w"]).arg(&file.0);
    for _ in 0..copies {
        merge.args(set);
    }
    let out = merge.output().context("mergecap")?;
    ensure!(
        out.status.success(),
        "mergecap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(file)
}

/// Copies of the capture set in the large capture, per copy in the plan's
/// (small) one: the issue's "a large one with mergecap", where flowd's
/// fixed cost no longer dominates.
pub(super) const LARGE_FACTOR: usize = 10;

pub(super) fn run(plan: &Plan, targets: &mut Targets) -> anyhow::Result<()> {
    for c in ["mergecap", "capinfos", "tshark"] {
        require(c)?;
    }
    let captures = Captures::new();
    let tiny = captures
        .find(TINY)
        .with_context(|| format!("{TINY} in neither {}", captures.looked_in()))?;
    let tiny_frames = frames_in(&tiny)?;
    let script = Script::new("sessions.py", SCAPY_SESSIONS)?;
    let set: Vec<(&str, Option<PathBuf>)> =
        CAPTURES.iter().map(|c| (*c, captures.find(c))).collect();
    let missing: Vec<&str> = set
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(c, _)| *c)
        .collect();
    let mut startup = Vec::new();
    let merged_files = if missing.is_empty() {
        let set: Vec<PathBuf> = set.into_iter().filter_map(|(_, p)| p).collect();
        Some(merged_rows(
            plan,
            targets,
            &set,
            &tiny,
            &script,
            &mut startup,
        )?)
    } else {
        println!(
            "## 7. offline: merged captures SKIPPED\n\n{} not found in {}: the small and large merged-capture rows (and the 5× target) are not measured in this run. Set FLOWD_PCAPS to a directory holding the larger captures to run them.\n",
            missing.join(", "),
            captures.looked_in()
        );
        None
    };
    while startup.len() < plan.offline_reps[0] {
        startup.push(run_tool(Tool::Flowd, &tiny, &script)?);
    }
    // tshark's own start-up, the same way: it is in every tshark row too.
    let mut tshark_startup = Vec::new();
    for _ in 0..plan.offline_reps[1] {
        tshark_startup.push(run_tool(Tool::Tshark, &tiny, &script)?);
    }
    let st = summarize(&startup.iter().map(|x| x.0).collect::<Vec<_>>());
    let tst = summarize(&tshark_startup.iter().map(|x| x.0).collect::<Vec<_>>());
    println!(
        "flowd replay's fixed cost (the same command on a {}-frame capture): {} s wall; tshark's start-up (its command on that capture): {} s wall.",
        tiny_frames,
        st.p(3),
        tst.p(3),
    );
    if let Some((files, flowd_fps, tshark_fps)) = &merged_files {
        println!(
            "\nestimates, not measurements: each tool's median wall time above minus its median on the {tiny_frames}-frame capture (the fixed cost), frames divided by what is left; the two medians come from different runs, so the spread of both goes into the result.\n"
        );
        println!(
            "| capture | flowd without fixed cost, frames/s (estimate) | tshark without start-up, frames/s (estimate) | ratio of the estimates | flowd's estimate / tshark as measured |"
        );
        println!("|---|---|---|---|---|");
        for (which, name) in [(0, "small"), (1, "large")] {
            let frames = frames_in(&files[which].0)? as f64;
            let flowd_net = frames / (frames / flowd_fps[which] - st.median).max(1e-6);
            let tshark_net = frames / (frames / tshark_fps[which] - tst.median).max(1e-6);
            println!(
                "| {name} | {} | {} | {:.2}× | {:.2}× |",
                sep(flowd_net as u64),
                sep(tshark_net as u64),
                flowd_net / tshark_net,
                flowd_net / tshark_fps[which],
            );
        }
        println!();
    }
    fixed_cost_rows(merged_files.as_ref().map(|m| m.0[1].0.as_path()))
}

/// The merged captures (small and large) with flowd, tshark and Scapy;
/// flowd's fixed cost measured interleaved with the small one's runs.
/// Returns the files and flowd's and tshark's frames/s on each.
fn merged_rows(
    plan: &Plan,
    targets: &mut Targets,
    set: &[PathBuf],
    tiny: &Path,
    script: &Script,
    startup: &mut Vec<(f64, f64)>,
) -> anyhow::Result<([TempFile; 2], [f64; 2], [f64; 2])> {
    let small_copies = plan.offline_copies;
    let large_copies = plan.offline_copies * LARGE_FACTOR;
    let files = [
        merged(set, small_copies, "small")?,
        merged(set, large_copies, "large")?,
    ];
    let mut tshark_fps = [0.0; 2];
    let mut flowd_fps = [0.0; 2];
    for (which, file) in files.iter().enumerate() {
        let frames = frames_in(&file.0)?;
        let bytes = std::fs::metadata(&file.0)?.len();
        let large = which == 1;
        // Scapy takes ~50 s on the small capture; not on the large one.
        let tools: &[Tool] = if large {
            &[Tool::Flowd, Tool::Tshark]
        } else {
            &[Tool::Flowd, Tool::Tshark, Tool::Scapy]
        };
        let reps = plan.offline_reps.iter().copied().max().unwrap_or(1);
        let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); tools.len()];
        for rep in 0..reps {
            for j in 0..tools.len() {
                let i = (j + rep) % tools.len();
                if rep >= plan.offline_reps[i] {
                    continue;
                }
                eprintln!(
                    "offline ({}): {:?}, repetition {}/{}",
                    if large { "large" } else { "small" },
                    tools[i],
                    rep + 1,
                    plan.offline_reps[i]
                );
                samples[i].push(run_tool(tools[i], &file.0, script)?);
            }
            if !large && rep < plan.offline_reps[0] {
                // flowd replay's fixed cost: the same command on a 136-frame capture.
                startup.push(run_tool(Tool::Flowd, tiny, script)?);
            }
        }

        println!(
            "## 7. offline{}: one capture, {} frames, {:.1} MB (`mergecap -a` of {} copies of: {}); median (min–max)\n",
            if large { " (large)" } else { " (small)" },
            sep(frames),
            bytes as f64 / 1e6,
            if large { large_copies } else { small_copies },
            CAPTURES.join(", ")
        );
        println!(
            "| tool | command | runs | wall s | CPU s (user+sys) | frames/s | ratio to tshark | result |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        let fps = |v: &[(f64, f64)]| {
            summarize(&v.iter().map(|x| frames as f64 / x.0).collect::<Vec<_>>())
        };
        let tshark = fps(&samples[1]).median;
        tshark_fps[which] = tshark;
        for (t, s) in tools.iter().zip(&samples) {
            let f = fps(s);
            let ratio = f.median / tshark;
            let result = if *t == Tool::Flowd {
                flowd_fps[which] = f.median;
                if large {
                    let pass = ratio >= TARGET_RATIO;
                    targets.add(
                        "replay frames/s against tshark conversation statistics (large capture)",
                        format!("≥ {TARGET_RATIO:.0}×"),
                        format!("{ratio:.2}× ({:.0} vs {:.0} frames/s)", f.median, tshark),
                        pass,
                    );
                    format!("{} (≥ {TARGET_RATIO:.0}×)", super::pm(pass))
                } else {
                    "(fixed cost dominates; see below)".to_owned()
                }
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
        println!();
    }
    Ok((files, flowd_fps, tshark_fps))
}

/// Where replay's fixed cost goes, and the per-frame floor of a test run
/// (with the large merged capture's frames per run, when it was made).
fn fixed_cost_rows(large: Option<&Path>) -> anyhow::Result<()> {
    // Where the fixed cost and the per-frame floor come from.
    let capacity = ReplayOptions::default().capacity;
    let replay_only = Programs {
        ingress: false,
        egress: false,
        replay: true,
    };
    let mut load_s = Vec::new();
    let mut live_s = Vec::new();
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let dp = Datapath::load_programs(capacity, replay_only)?;
        load_s.push(t.elapsed().as_secs_f64());
        sizes = vec![("flowd_replay (XDP)", raw::prog_sizes(dp.replay_fd()?)?)];
        drop(dp);
        let t = Instant::now();
        let dp = Datapath::load(capacity)?;
        live_s.push(t.elapsed().as_secs_f64());
        sizes.push(("flowd_ingress (XDP)", raw::prog_sizes(dp.ingress_fd()?)?));
        sizes.push(("flowd_egress (TC)", raw::prog_sizes(dp.egress_fd()?)?));
    }
    println!(
        "where the fixed cost goes: `Datapath::load_programs({}, replay driver only)` (what replay does first: the driver through the verifier, maps created) takes {} s (the daemon's `Datapath::load`, both live programs: {} s); the verifier processed {}.",
        sep(u64::from(capacity)),
        summarize(&load_s).p(3),
        summarize(&live_s).p(3),
        sizes
            .iter()
            .map(|(n, (x, v))| format!(
                "{} instructions for {n} ({} after verification)",
                sep(*v),
                sep(*x)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let empty = raw::load_prog(
        BPF_PROG_TYPE_XDP,
        &raw::ret_insns(XDP_PASS as i32),
        BPF_F_XDP_HAS_FRAGS,
        "empty_xdp",
    )?;
    let ends = Ipv4Ends {
        src_mac: [0x02, 0, 0, 0, 0, 1],
        dst_mac: [0x02, 0, 0, 0, 0, 2],
        src: [198, 18, 0, 1],
        dst: [198, 18, 0, 2],
    };
    let frame = udp_frame(&ends, 1, 2);
    let batch = vec![0u8; BATCH_BYTES];
    let calls = 200_000u32;
    let (mut floor, mut batch_floor) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..calls {
            sys::xdp_test_run(empty.as_fd(), &[], &frame, 1)?;
        }
        floor.push(t.elapsed().as_nanos() as f64 / f64::from(calls));
        let t = Instant::now();
        for _ in 0..calls {
            sys::xdp_test_run_buf(empty.as_fd(), &batch, 0, 1)?;
        }
        batch_floor.push(t.elapsed().as_nanos() as f64 / f64::from(calls));
    }
    let fl = summarize(&floor);
    let bf = summarize(&batch_floor);
    print!(
        "the per-frame floor: one `BPF_PROG_TEST_RUN` with an empty XDP program costs {} ns per call on a 60-byte frame and {} ns on a full {}-byte batch (wall, {} calls each)",
        fl.p(0),
        bf.p(0),
        BATCH_BYTES,
        sep(u64::from(calls)),
    );
    match large {
        Some(large) => {
            // Frames per test run on the large capture, from one replay in this process.
            let r = replay_file(large, &ReplayOptions::default())?;
            let per_run = r.frames as f64 / r.test_runs.max(1) as f64;
            println!(
                "; the large capture replays in {} test runs, {:.1} frames per run, so the floor is {:.0} ns per frame (one run per frame, as before: {:.0} ns).",
                sep(r.test_runs),
                per_run,
                bf.median / per_run,
                fl.median,
            );
        }
        None => println!(" (frames per run: skipped, no large capture)."),
    }
    Ok(())
}
