//! Part 5: memory. The daemon's flow table (and the exporter's top-flows
//! window) per active flow, measured as the RSS growth of filling them in
//! this process; the kernel maps per configured capacity, from the
//! `memlock:` of their fds in /proc/self/fdinfo; per-CPU against shared
//! hash for the flow map, measured on this machine and computed for 64 CPUs.

use std::{
    collections::BTreeMap,
    mem::size_of,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    time::Instant,
};

use anyhow::{Context as _, ensure};
use flowd_common::{FlowCounts, FlowKey, FlowStats, maps};

use super::{
    Plan, Targets,
    drain::{bench_key, fill},
    raw::{
        self, Attr, BPF_MAP_LOOKUP_AND_DELETE_BATCH, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_HASH,
        bpf,
    },
    rss_bytes, sep, summarize, trim_heap,
};
use flowd::{
    clock::TimeBase,
    export::aggregate::{AggConfig, Aggregator},
    flowtable::{Flow, FlowTable, TableConfig},
    loader::Datapath,
};

const TARGET_BYTES_PER_FLOW: f64 = 200.0;

/// Buckets hashbrown allocates for `n` entries (load factor 7/8, power of two).
fn hashbrown_buckets(n: usize) -> usize {
    if n < 8 {
        return if n < 4 { 4 } else { 8 };
    }
    (n * 8 / 7).next_power_of_two()
}

fn delta(n: u32) -> FlowStats {
    FlowStats {
        counts: FlowCounts {
            packets: 1,
            bytes: 64,
            ..Default::default()
        },
        first_seen_ns: 1_000_000_000 + u64::from(n),
        last_seen_ns: 1_000_000_000 + u64::from(n),
        ..Default::default()
    }
}

/// RSS growth, bytes per flow: (flow table, flow table + top-flows window).
fn table_rss(n: u32) -> (f64, f64, f64) {
    trim_heap();
    let r0 = rss_bytes();
    let t = Instant::now();
    let mut table = FlowTable::new(TableConfig {
        max_flows: (n as usize).max(TableConfig::default().max_flows),
        ..TableConfig::default()
    });
    let time = TimeBase::Capture;
    for i in 0..n {
        table.apply(&bench_key(i), &delta(i), time);
    }
    let fill_s = t.elapsed().as_secs_f64();
    // Freed copies from the table's growth steps stay in the heap until
    // trimmed: measure what is live.
    trim_heap();
    let r1 = rss_bytes();
    let mut agg = Aggregator::new(AggConfig::default());
    for i in 0..n {
        agg.absorb(&bench_key(i), &delta(i), "eth0");
    }
    trim_heap();
    let r2 = rss_bytes();
    assert_eq!(table.len(), n as usize);
    drop(agg);
    drop(table);
    trim_heap();
    (
        r1.saturating_sub(r0) as f64 / f64::from(n),
        r2.saturating_sub(r0) as f64 / f64::from(n),
        fill_s,
    )
}

/// Drains a map of `n` entries with `LOOKUP_AND_DELETE_BATCH`, `value_bytes`
/// per entry (all CPUs' copies for a per-CPU map); returns the entries.
fn drain_raw(map: BorrowedFd<'_>, value_bytes: usize, n: usize) -> anyhow::Result<usize> {
    const BATCH: usize = 8192;
    let mut keys = vec![0u8; BATCH * size_of::<FlowKey>()];
    let mut values = vec![0u8; BATCH * value_bytes];
    let (mut in_b, mut out_b) = (0u64, 0u64);
    let mut first = true;
    let mut total = 0;
    loop {
        let mut attr = Attr::default();
        attr.words[0] = if first { 0 } else { &raw mut in_b as u64 };
        attr.words[1] = &raw mut out_b as u64;
        attr.words[2] = keys.as_mut_ptr() as u64;
        attr.words[3] = values.as_mut_ptr() as u64;
        attr.words[4] = BATCH as u64 | ((map.as_raw_fd() as u64) << 32);
        let r = bpf(BPF_MAP_LOOKUP_AND_DELETE_BATCH, &mut attr);
        total += (attr.words[4] & 0xffff_ffff) as usize;
        match r {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e).context("BPF_MAP_LOOKUP_AND_DELETE_BATCH"),
        }
        in_b = out_b;
        first = false;
    }
    ensure!(total == n, "drained {total} of {n}");
    Ok(total)
}

fn memlock(fd: BorrowedFd<'_>) -> u64 {
    raw::map_fdinfo(fd.as_raw_fd()).map_or(0, |m| m.memlock)
}

pub(super) fn run(plan: &Plan, targets: &mut Targets) -> anyhow::Result<()> {
    // ---- daemon: flow table per active flow
    let slot = flowd::flowtable::SLOT_BYTES;
    let wheel = flowd::flowtable::WHEEL_BYTES;
    let mut rows = Vec::new();
    for &n in plan.mem_flows {
        let mut t = Vec::new();
        let mut ta = Vec::new();
        let mut fill = Vec::new();
        for rep in 0..plan.mem_reps {
            eprintln!(
                "memory: flow table with {n} flows, repetition {}/{}",
                rep + 1,
                plan.mem_reps
            );
            let (a, b, s) = table_rss(n);
            t.push(a);
            ta.push(b);
            fill.push(s);
        }
        rows.push((n, t, ta, fill));
    }
    println!("## 5. memory\n");
    println!(
        "### daemon: bytes of RSS per active flow (VmRSS growth while filling a `FlowTable` with distinct flows, then also the exporter's `Aggregator` top-flows window, in this process; median (min–max) of {} runs)\n",
        plan.mem_reps
    );
    println!(
        "| active flows | `FlowTable` | + `Aggregator` (window ≤ 100,000 flows) | predicted `FlowTable` (slot + index buckets × (4 B slot + 1 control byte) / flows + wheel / flows) | fill time s | target | result |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut worst = 0f64;
    for (n, t, ta, fill) in &rows {
        let t = summarize(t);
        let buckets = hashbrown_buckets(*n as usize);
        let predicted = (*n as usize * slot + buckets * 5 + wheel) as f64 / f64::from(*n);
        worst = worst.max(t.median);
        println!(
            "| {} | {} | {} | {:.0} ({slot} B + {} buckets × 5 B + {} KiB) | {} | ≤ {TARGET_BYTES_PER_FLOW:.0} B | {} |",
            sep(u64::from(*n)),
            t.p(0),
            summarize(ta).p(0),
            predicted,
            sep(buckets as u64),
            wheel / 1024,
            summarize(fill).p(2),
            super::pm(t.median <= TARGET_BYTES_PER_FLOW)
        );
    }
    println!(
        "\nslot = `Flow` {} B (the key stored once) + wheel links 8 B + marks 1 B, in a slab (`Vec`s grown by realloc); the index is a `hashbrown::HashTable<u32>` of slots. RSS is read after `malloc_trim(0)`, so freed copies from the index's growth steps are not counted.",
        size_of::<Flow>()
    );
    targets.add(
        "daemon memory per active flow (`FlowTable`, worst of 100k / 1M)",
        format!("≤ {TARGET_BYTES_PER_FLOW:.0} B"),
        format!("{worst:.0} B"),
        worst <= TARGET_BYTES_PER_FLOW,
    );

    // ---- kernel maps per configured capacity
    println!(
        "\n### kernel: map memory per configured flow capacity (`memlock:` in /proc/self/fdinfo of every map `Datapath::load(capacity)` creates)\n"
    );
    println!(
        "| capacity (flows per generation) | FLOWS_0 + FLOWS_1 | per configured flow | all maps | all maps per configured flow |"
    );
    println!("|---|---|---|---|---|");
    let mut breakdown = None;
    for &cap in plan.capacities {
        let before: Vec<i32> = raw::all_map_fds().iter().map(|m| m.fd).collect();
        let dp = Datapath::load(cap).with_context(|| format!("loading with capacity {cap}"))?;
        let new: Vec<raw::MapFdInfo> = raw::all_map_fds()
            .into_iter()
            .filter(|m| !before.contains(&m.fd))
            .collect();
        let mut by_name: BTreeMap<String, (u32, u64, u64)> = BTreeMap::new();
        for m in &new {
            let name = aya::maps::MapInfo::from_id(m.map_id)
                .ok()
                .and_then(|i| i.name_as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("id {}", m.map_id));
            let e = by_name
                .entry(name)
                .or_insert((m.map_type, m.max_entries, 0));
            e.2 += m.memlock;
        }
        let flows: u64 = [maps::FLOWS_0, maps::FLOWS_1]
            .iter()
            .filter_map(|n| by_name.get(*n).map(|e| e.2))
            .sum();
        let all: u64 = by_name.values().map(|e| e.2).sum();
        println!(
            "| {} | {:.1} MiB | {:.0} B | {:.1} MiB | {:.0} B |",
            sep(u64::from(cap)),
            flows as f64 / 1048576.0,
            flows as f64 / f64::from(cap),
            all as f64 / 1048576.0,
            all as f64 / f64::from(cap)
        );
        if breakdown.is_none() {
            breakdown = Some((cap, by_name));
        }
        drop(dp);
    }
    if let Some((cap, by_name)) = breakdown {
        println!(
            "\nper map at capacity {} (map type numbers as in `enum bpf_map_type`; the two 1-entry maps without a name are `ProgramWait`'s):\n",
            sep(u64::from(cap))
        );
        println!("| map | type | max_entries | memlock |");
        println!("|---|---|---|---|");
        for (name, (ty, max, ml)) in &by_name {
            println!("| {name} | {ty} | {} | {} |", sep(*max), sep(*ml));
        }
    }

    // ---- per-CPU against shared hash
    let ncpu = flowd::sys::possible_cpus()?;
    const N: u32 = 65_536;
    let key = size_of::<FlowKey>() as u32;
    let val = size_of::<FlowStats>() as u32;
    let shared = raw::map_create(BPF_MAP_TYPE_HASH, key, val, N)?;
    let percpu = raw::map_create(BPF_MAP_TYPE_PERCPU_HASH, key, val, N)?;
    let shared8 = raw::map_create(BPF_MAP_TYPE_HASH, key, val + 8, N)?;
    let percpu8 = raw::map_create(BPF_MAP_TYPE_PERCPU_HASH, key, val + 8, N)?;
    let (ms, mp) = (memlock(shared.as_fd()), memlock(percpu.as_fd()));
    let (ms8, mp8) = (memlock(shared8.as_fd()), memlock(percpu8.as_fd()));
    drop((shared8, percpu8));
    // Per-CPU: every entry holds one value per possible CPU; +8 B of value
    // costs 8 B × entries × CPUs. Shared: 8 B × (entries + one spare per CPU).
    let cpus_charged = (mp8 - mp) as f64 / (8.0 * f64::from(N));
    let shared_entries = (ms8 - ms) as f64 / 8.0;
    // Going from this machine's CPUs to 64 (kernel/bpf/hashtab.c,
    // htab_map_mem_usage): per-CPU adds value_size × entries per CPU and
    // 32 B of bucket locks per CPU; shared adds one spare element per CPU,
    // an 8-byte free-list pointer and 32 B of locks per CPU.
    let extra = 64usize.saturating_sub(ncpu) as f64;
    let elem = (ms as f64 - 16.0 * f64::from(N)) / shared_entries;
    let mp64 = mp as f64 + extra * (f64::from(N) * f64::from(val) + 32.0);
    let ms64 = ms as f64 + extra * (elem + 8.0 + 32.0);
    // Drain cost of each, measured: N entries, batch lookup-and-delete.
    let mut drain_ns = [Vec::new(), Vec::new()];
    for rep in 0..plan.mem_reps {
        for j in 0..2 {
            let which = (j + rep) % 2;
            let (fd, copies) = if which == 0 {
                (shared.as_fd(), 1)
            } else {
                (percpu.as_fd(), ncpu)
            };
            fill(fd, N, copies)?;
            let t = Instant::now();
            drain_raw(fd, val as usize * copies, N as usize)?;
            drain_ns[which].push(t.elapsed().as_nanos() as f64 / f64::from(N));
        }
    }
    let (ds, dpc) = (summarize(&drain_ns[0]), summarize(&drain_ns[1]));
    println!(
        "\n### per-CPU hash against shared hash for the flow map (key {key} B, value {val} B, {} entries, preallocated)\n",
        sep(u64::from(N))
    );
    println!(
        "| map type | memlock on this machine ({ncpu} possible CPUs, measured) | per entry | on 64 CPUs (computed) | per entry on 64 CPUs | drain ns per entry (measured, batch) |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| `BPF_MAP_TYPE_HASH` (flowd: shared, atomic adds) | {:.2} MiB | {:.0} B | {:.2} MiB | {:.0} B | {} |",
        ms as f64 / 1048576.0,
        ms as f64 / f64::from(N),
        ms64 / 1048576.0,
        ms64 / f64::from(N),
        ds
    );
    println!(
        "| `BPF_MAP_TYPE_PERCPU_HASH` | {:.2} MiB | {:.0} B | {:.2} MiB | {:.0} B | {} |",
        mp as f64 / 1048576.0,
        mp as f64 / f64::from(N),
        mp64 / 1048576.0,
        mp64 / f64::from(N),
        dpc
    );
    println!(
        "\nhow the 64-CPU column is computed: a second pair of maps with an 8-byte larger value measured {cpus_charged:.2} CPUs × {} entries of per-CPU value for PERCPU_HASH (so memlock grows by value_size × entries for every CPU) and {} value copies for HASH (entries + one spare per CPU). From this machine to 64 CPUs: PERCPU_HASH + (64 − {ncpu}) × ({} entries × {val} B + 32 B of locks); HASH + (64 − {ncpu}) × (one spare element of {elem:.0} B + 8 B + 32 B). Two generations double every number; flowd's default is 2 × {}.",
        sep(u64::from(N)),
        sep(shared_entries as u64),
        sep(u64::from(N)),
        sep(u64::from(N)),
    );
    Ok(())
}
