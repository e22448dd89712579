//! Part 4: draining a generation of 10k, 100k and 1M flows: wall and CPU
//! time of `Datapath::drain_all`, the batch syscall alone and a key-by-key
//! loop.

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    time::Instant,
};

use anyhow::{Context as _, bail, ensure};
use flowd_common::{
    DEFAULT_FLOW_CAPACITY, DIR_INGRESS, FlowCounts, FlowKey, FlowStats, ipv4_mapped, maps,
};

use super::{
    Plan, Targets,
    raw::{
        Attr, BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY, BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_BATCH,
        BPF_OBJ_GET_INFO_BY_FD, bpf,
    },
    summarize, thread_cpu_ns,
};
use flowd::{drain, loader::Datapath};

/// Target: a 1M-flow generation drained in at most this long.
const TARGET_DRAIN_1M_MS: f64 = 1000.0;

/// The fd of one of flowd's maps, found through the ingress program's map ids
/// (the loader does not hand out the flow maps).
pub(super) fn flow_map(dp: &Datapath, name: &str) -> anyhow::Result<aya::maps::MapFd> {
    // The head of struct bpf_prog_info, up to and including map_ids.
    #[repr(C)]
    #[derive(Default)]
    struct ProgInfoHead {
        prog_type: u32,
        id: u32,
        tag: [u8; 8],
        jited_prog_len: u32,
        xlated_prog_len: u32,
        jited_prog_insns: u64,
        xlated_prog_insns: u64,
        load_time: u64,
        created_by_uid: u32,
        nr_map_ids: u32,
        map_ids: u64,
    }
    let mut ids = [0u32; 32];
    let mut info = ProgInfoHead {
        nr_map_ids: ids.len() as u32,
        map_ids: ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    let prog = dp.ingress_fd()?;
    let mut attr = Attr::default();
    attr.words[0] = prog.as_raw_fd() as u64 | ((size_of::<ProgInfoHead>() as u64) << 32);
    attr.words[1] = &raw mut info as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("BPF_OBJ_GET_INFO_BY_FD on flowd_ingress")?;
    let n = (info.nr_map_ids as usize).min(ids.len());
    for &id in &ids[..n] {
        let m = aya::maps::MapInfo::from_id(id)?;
        if m.name_as_str() == Some(name) {
            return Ok(m.fd()?);
        }
    }
    bail!("map {name} is not among flowd_ingress's {n} maps")
}

/// Fills a map with flows `0..n` (distinct keys) by `BPF_MAP_UPDATE_BATCH`;
/// `copies` values per key (1 for a shared hash, the CPU count for a
/// per-CPU hash).
pub(super) fn fill(map: BorrowedFd<'_>, n: u32, copies: usize) -> anyhow::Result<()> {
    const CHUNK: u32 = 8192;
    let mut keys = Vec::with_capacity(CHUNK as usize);
    let mut values = Vec::with_capacity(CHUNK as usize * copies);
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        keys.clear();
        values.clear();
        for i in start..end {
            keys.push(bench_key(i));
            for _ in 0..copies {
                values.push(FlowStats {
                    counts: FlowCounts {
                        packets: 1,
                        bytes: 64,
                        ..Default::default()
                    },
                    first_seen_ns: 1,
                    last_seen_ns: 1,
                    ..Default::default()
                });
            }
        }
        let mut attr = Attr::default();
        attr.words[2] = keys.as_ptr() as u64;
        attr.words[3] = values.as_ptr() as u64;
        attr.words[4] = keys.len() as u64 | ((map.as_raw_fd() as u64) << 32);
        bpf(BPF_MAP_UPDATE_BATCH, &mut attr).context("BPF_MAP_UPDATE_BATCH")?;
        ensure!(
            attr.words[4] & 0xffff_ffff == keys.len() as u64,
            "BPF_MAP_UPDATE_BATCH wrote {} of {}",
            attr.words[4] & 0xffff_ffff,
            keys.len()
        );
        start = end;
    }
    Ok(())
}

pub(super) fn bench_key(i: u32) -> FlowKey {
    FlowKey {
        ifindex: 1,
        vlan: 0,
        direction: DIR_INGRESS,
        proto: 17,
        src: ipv4_mapped([198, 18, (i >> 16) as u8, (i >> 8) as u8]),
        dst: ipv4_mapped([198, 19, 0, 1]),
        sport: i as u16,
        dport: 53,
    }
}

/// The classic drain: `GET_NEXT_KEY`, `LOOKUP`, `DELETE` per key. The next
/// key is fetched before the current one is deleted (a deleted key would
/// restart the walk from the first bucket).
fn drain_key_by_key(
    map: BorrowedFd<'_>,
    mut sink: impl FnMut(&FlowKey, &FlowStats),
) -> io::Result<usize> {
    let fd = map.as_raw_fd() as u64;
    let next_key = |prev: Option<&FlowKey>, out: &mut FlowKey| -> io::Result<bool> {
        let mut attr = Attr::default();
        attr.words[0] = fd;
        attr.words[1] = prev.map_or(0, |k| k as *const FlowKey as u64);
        attr.words[2] = out as *mut FlowKey as u64;
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    };
    let mut key = FlowKey::default();
    if !next_key(None, &mut key)? {
        return Ok(0);
    }
    let mut count = 0;
    loop {
        let mut next = FlowKey::default();
        let more = next_key(Some(&key), &mut next)?;
        let mut value = FlowStats::default();
        let mut attr = Attr::default();
        attr.words[0] = fd;
        attr.words[1] = &raw const key as u64;
        attr.words[2] = &raw mut value as u64;
        bpf(BPF_MAP_LOOKUP_ELEM, &mut attr)?;
        let mut attr = Attr::default();
        attr.words[0] = fd;
        attr.words[1] = &raw const key as u64;
        bpf(BPF_MAP_DELETE_ELEM, &mut attr)?;
        sink(&key, &value);
        count += 1;
        if !more {
            return Ok(count);
        }
        key = next;
    }
}

#[derive(Clone, Copy)]
enum Method {
    DrainAll,
    Batch,
    KeyByKey,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Self::DrainAll => "`Datapath::drain_all` (2 flips + RCU waits + batch)",
            Self::Batch => {
                "`BPF_MAP_LOOKUP_AND_DELETE_BATCH` alone (`drain::drain_hash`, 8192/call)"
            }
            Self::KeyByKey => "`GET_NEXT_KEY` + `LOOKUP` + `DELETE` per key",
        }
    }
}

pub(super) fn run(plan: &Plan, targets: &mut Targets) -> anyhow::Result<()> {
    const METHODS: [Method; 3] = [Method::DrainAll, Method::Batch, Method::KeyByKey];
    let mut rows = Vec::new();
    let mut fixed = Vec::new();
    for &(n, reps) in plan.drains {
        let capacity = n.max(DEFAULT_FLOW_CAPACITY);
        let mut dp = Datapath::load(capacity)
            .with_context(|| format!("loading flowd with {capacity} flows"))?;
        let map = flow_map(&dp, maps::FLOWS_0)?;
        // (wall ns, CPU ns) per method.
        let mut samples = vec![Vec::new(); METHODS.len()];
        for rep in 0..reps {
            eprintln!("drain {n} flows, repetition {}/{reps}", rep + 1);
            for j in 0..METHODS.len() {
                // Rotate the order from one repetition to the next.
                let m = (j + rep) % METHODS.len();
                fill(map.as_fd(), n, 1)?;
                let mut packets = 0u64;
                let sink = |_: &FlowKey, v: &FlowStats| packets += v.counts.packets;
                let cpu = thread_cpu_ns();
                let t = Instant::now();
                let count = match METHODS[m] {
                    Method::DrainAll => dp.drain_all(sink)?,
                    Method::Batch => drain::drain_hash(map.as_fd(), maps::FLOWS_0, 8192, sink)?,
                    Method::KeyByKey => drain_key_by_key(map.as_fd(), sink)?,
                };
                let ns = t.elapsed().as_nanos() as f64;
                let cpu = (thread_cpu_ns() - cpu) as f64;
                ensure!(
                    count == n as usize && packets == n as u64,
                    "{} drained {count} entries ({packets} packets) of {n}",
                    METHODS[m].name()
                );
                samples[m].push((ns, cpu));
            }
        }
        if fixed.is_empty() {
            // drain_all's fixed cost: two generation flips and RCU waits.
            for _ in 0..reps {
                let t = Instant::now();
                ensure!(dp.drain_all(|_, _| {})? == 0, "map not empty");
                fixed.push(t.elapsed().as_nanos() as f64);
            }
        }
        rows.push((n, capacity, reps, samples));
    }

    println!(
        "## 4. drain (median (min–max); wall clock and getrusage(RUSAGE_THREAD) user+sys CPU)\n"
    );
    println!(
        "| flows | map capacity | method | wall ms | CPU ms | ns per flow (wall) | wall ratio to batch alone | result |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (n, capacity, _reps, samples) in &rows {
        let batch = summarize(&samples[1].iter().map(|s| s.0).collect::<Vec<_>>()).median;
        for (m, s) in METHODS.iter().zip(samples) {
            let ms = summarize(&s.iter().map(|x| x.0 / 1e6).collect::<Vec<_>>());
            let cpu = summarize(&s.iter().map(|x| x.1 / 1e6).collect::<Vec<_>>());
            let per = summarize(&s.iter().map(|x| x.0 / *n as f64).collect::<Vec<_>>());
            let wall = summarize(&s.iter().map(|x| x.0).collect::<Vec<_>>()).median;
            let result = if *n == 1_000_000 && matches!(m, Method::DrainAll) {
                let pass = ms.median <= TARGET_DRAIN_1M_MS;
                targets.add(
                    "drain of 1M flows (`Datapath::drain_all`), wall",
                    format!("≤ {TARGET_DRAIN_1M_MS:.0} ms"),
                    format!("{:.0} ms (CPU {:.0} ms)", ms.median, cpu.median),
                    pass,
                );
                format!("{} (≤ 1 s)", super::pm(pass))
            } else {
                String::new()
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {:.2} | {result} |",
                super::sep(u64::from(*n)),
                super::sep(u64::from(*capacity)),
                m.name(),
                ms.p(1),
                cpu.p(1),
                per,
                wall / batch,
            );
        }
    }
    let us: Vec<f64> = fixed.iter().map(|ns| ns / 1e3).collect();
    println!(
        "\ndrain_all on empty maps (its fixed cost: two flips, two RCU waits, two empty batch calls): {} µs",
        summarize(&us)
    );
    println!(
        "repetitions: {}",
        rows.iter()
            .map(|(n, _, r, _)| format!("{n} flows × {r}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    absorb_into_a_full_table(if plan.rounds > 5 { 5 } else { 3 });
    Ok(())
}

/// New flows absorbed into a full `FlowTable` (1M flows, so every 15,625th
/// new flow evicts the longest-idle 1/64), with the default idle timeout
/// and with idle timeouts beyond one turn of the expiry wheel (1,126 s),
/// where eviction takes its candidates from a full scan.
fn absorb_into_a_full_table(reps: usize) {
    use flowd::{
        clock::TimeBase,
        flowtable::{FlowTable, TableConfig},
    };
    const SEC: u64 = 1_000_000_000;
    const MAX: usize = 1_000_000;
    const NEW: u64 = 2_000_000;
    let configs: [(&str, u64, u64); 3] = [
        ("idle 60 s, active 300 s (defaults)", 60, 300),
        ("idle 3,600 s, active 300 s", 3_600, 300),
        ("idle 86,400 s, active 86,400 s", 86_400, 86_400),
    ];
    let mut rows = Vec::new();
    for (name, idle, active) in configs {
        let mut wall = Vec::new();
        for rep in 0..reps {
            eprintln!(
                "absorb into a full table: {name}, repetition {}/{reps}",
                rep + 1
            );
            let mut t = FlowTable::new(TableConfig {
                idle_timeout_ns: idle * SEC,
                active_timeout_ns: active * SEC,
                max_flows: MAX,
                ..TableConfig::default()
            });
            let base = 1_700_000_000 * SEC;
            let start = Instant::now();
            for i in 0..NEW {
                let mut key = FlowKey {
                    proto: 6,
                    sport: 40_000,
                    dport: 80,
                    ..FlowKey::default()
                };
                key.src[..8].copy_from_slice(&i.to_le_bytes());
                // A million new flows per second of capture clock.
                let ts = base + i * 1_000;
                let d = FlowStats {
                    counts: FlowCounts {
                        packets: 1,
                        bytes: 60,
                        syn: 1,
                        ..Default::default()
                    },
                    first_seen_ns: ts,
                    last_seen_ns: ts,
                    ..FlowStats::default()
                };
                t.apply(&key, &d, TimeBase::Capture);
                if i % 65_536 == 65_535 {
                    std::hint::black_box(t.expire(ts));
                }
            }
            wall.push(start.elapsed().as_nanos() as f64);
        }
        rows.push((name, wall));
    }
    println!(
        "\nabsorbing {} new flows into a full `FlowTable` of {} (evicting the longest-idle 1/64 at a time; {reps} repetitions; median (min–max)):\n",
        super::sep(NEW),
        super::sep(MAX as u64)
    );
    println!("| timeouts | wall ms | ns per new flow | ratio to the defaults |");
    println!("|---|---|---|---|");
    let base = summarize(&rows[0].1).median;
    for (name, wall) in &rows {
        let ms = summarize(&wall.iter().map(|w| w / 1e6).collect::<Vec<_>>());
        let per = summarize(&wall.iter().map(|w| w / NEW as f64).collect::<Vec<_>>());
        println!(
            "| {name} | {} | {} | {:.2} |",
            ms.p(0),
            per.p(0),
            summarize(wall).median / base
        );
    }
}
