//! Long-lived state: what a state store and a global table cost per million entries.
//!
//! Three parts, each in its own child process so one part's freed memory does not hide the
//! next one's (resident memory is read from `/proc/self/status`; `VmHWM` is the peak):
//!
//! 1. **store** (no Kafka): a `KeyedStore` of realistic dedupe entries restored from N records
//!    in memory (time, resident bytes per entry), then N `put`s filling it and N/10 more past
//!    its `max_entries` (each evicting the oldest): the cost of a put at 10,000 entries, at N,
//!    and when full, as µs and as a ratio (flat = no scan). For comparison, the time of one scan
//!    and sort of the full store, which the store did on every put before its age index.
//!    **keys**: the same for a store of keys and ages only (the resolver's thread-link ages).
//! 2. **restore** (local stack): N dedupe entries written to one partition of
//!    `resolver.dedupe`, read back and restored the way the resolver does on assignment.
//! 3. **table** (local stack): N thread links written to `threads`, loaded by a `GlobalTable`
//!    the way every resolver does before it starts.
//!
//! `cargo run --release -p mailstream-bench --bin bench-state` (`--entries`, `--part`).

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use mailstream_bench::prefill::{self, Entry, admin, delete_topics, runtime_config, write};
use mailstream_runtime::avro::{AvroCodec, registry_settings};
use mailstream_runtime::records::{DedupeEntry, ThreadLink};
use mailstream_runtime::{GlobalTable, KeyedStore, Outputs, RestoreContext, Shutdown, StoreLimits};
use mailstream_tests::{Stack, TestEnv};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};

#[derive(Parser)]
struct Args {
    /// Entries per measurement.
    #[arg(long, default_value_t = 1_000_000)]
    entries: usize,
    /// One part only (`store`, `keys`, `restore`, `table`); default: each in its own process.
    #[arg(long)]
    part: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.part.as_deref() {
        None => each_part(args.entries),
        Some("store") => store(args.entries),
        Some("keys") => {
            keys_only(args.entries);
            Ok(())
        }
        Some("restore") => restore(args.entries).await,
        Some("table") => table(args.entries).await,
        Some(other) => bail!("unknown part `{other}`: store, keys, restore or table"),
    }
}

/// Runs every part in a child process of its own.
fn each_part(entries: usize) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("finding this binary")?;
    for part in ["store", "keys", "restore", "table"] {
        let status = Command::new(&me)
            .args(["--part", part, "--entries", &entries.to_string()])
            .status()
            .with_context(|| format!("running part {part}"))?;
        if !status.success() {
            bail!("part {part} failed: {status}");
        }
    }
    Ok(())
}

/// (resident, peak resident) of this process in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn per_entry(bytes: u64, entries: usize) -> f64 {
    bytes as f64 / entries.max(1) as f64
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Entry `i` is first seen (or linked) at this time plus `i` ms.
const T0: i64 = 1_790_000_000_000;

fn dedupe_entry(i: usize) -> DedupeEntry {
    prefill::dedupe_entry(i, T0 + i as i64)
}

fn limits(max_entries: usize) -> StoreLimits {
    StoreLimits {
        max_entries,
        max_age_ms: i64::MAX / 4,
    }
}

/// Part 1: restore and puts in memory.
fn store(entries: usize) -> anyhow::Result<()> {
    let (before, _) = memory();
    let records: Vec<(String, Option<DedupeEntry>, i64)> = (0..entries)
        .map(|i| {
            let e = dedupe_entry(i);
            (e.message_id.clone(), Some(e), i as i64)
        })
        .collect();
    let started = Instant::now();
    let mut store = KeyedStore::new("resolver.dedupe", limits(entries));
    store.restore(0, records);
    let restore_s = started.elapsed().as_secs_f64();
    let (after, _) = memory();
    println!(
        "store: restore of {entries} entries from memory {restore_s:.2} s; resident {:.0} MiB, {:.0} bytes per entry (keys, values, map and age index)",
        mib(after.saturating_sub(before)),
        per_entry(after.saturating_sub(before), entries),
    );
    drop(store);

    let mut store = KeyedStore::new("resolver.dedupe", limits(entries));
    let sample = 10_000.min(entries / 10).max(1);
    let _warm_up = puts(&mut store, 0, sample);
    let early = puts(&mut store, sample, sample);
    let _ = puts(&mut store, 2 * sample, entries - 3 * sample);
    let late = puts(&mut store, entries - sample, sample);
    let full = puts(&mut store, entries, entries / 10);
    println!(
        "store: put {early:.2} µs at {sample}-{} entries, {late:.2} µs at {entries}, {full:.2} µs full (evicting one per put): ratio full / {sample} = {:.2}",
        2 * sample,
        full / early
    );
    let scan = old_scan(entries);
    println!(
        "store: the scan and sort the store did per put before its age index: {:.0} ms at {entries} entries",
        scan * 1e3
    );
    Ok(())
}

/// Memory of a store that keeps keys and ages only (the resolver's thread-link ages).
fn keys_only(entries: usize) {
    let (before, _) = memory();
    let records: Vec<(String, Option<()>, i64)> = (0..entries)
        .map(|i| (prefill::message_id(i), Some(()), i as i64))
        .collect();
    let mut store: KeyedStore<()> = KeyedStore::new("threads", limits(entries));
    store.restore(0, records);
    let (after, _) = memory();
    println!(
        "store: keys and ages only (thread-link ages): resident {:.0} MiB, {:.0} bytes per entry",
        mib(after.saturating_sub(before)),
        per_entry(after.saturating_sub(before), entries),
    );
    std::hint::black_box(store.len(0));
}

/// Puts entries `from..from + count` (committing every 1,000, as batches do); µs per put.
fn puts(store: &mut KeyedStore<DedupeEntry>, from: usize, count: usize) -> f64 {
    let started = Instant::now();
    for i in from..from + count {
        let mut out = Outputs::default();
        let entry = dedupe_entry(i);
        let key = entry.message_id.clone();
        store.put(0, &key, entry, i as i64, &mut out);
        if i % 1_000 == 999 {
            store.commit();
        }
    }
    started.elapsed().as_secs_f64() * 1e6 / count.max(1) as f64
}

/// What one put on a full store cost before the age index: collect every entry past the age
/// (none), then every other entry, sorted by (time, key), to take the oldest.
fn old_scan(entries: usize) -> f64 {
    let map: HashMap<String, i64> = (0..entries)
        .map(|i| (prefill::message_id(i), i as i64))
        .collect();
    let started = Instant::now();
    let aged: Vec<(String, i64)> = map
        .iter()
        .filter(|(_, t)| **t < 0)
        .map(|(k, t)| (k.clone(), *t))
        .collect();
    let mut rest: Vec<(String, i64)> = map.iter().map(|(k, t)| (k.clone(), *t)).collect();
    rest.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let elapsed = started.elapsed().as_secs_f64();
    std::hint::black_box((aged, rest));
    elapsed
}

/// A fresh prefix on the local stack with `topic` created under it (compacted, as in the
/// topology), without `mailstream topology apply`: the schema is registered by the first write.
async fn env_with(name: &str, topic: &str, partitions: i32) -> anyhow::Result<TestEnv> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let env = TestEnv::with_prefix(Stack::get(), &format!("bench-{name}-{nanos:x}-"));
    let results = admin(&env)?
        .create_topics(
            &[
                NewTopic::new(&env.topic(topic), partitions, TopicReplication::Fixed(1))
                    .set("cleanup.policy", "compact"),
            ],
            &AdminOptions::new(),
        )
        .await?;
    for r in results {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    Ok(env)
}

/// Part 2: a changelog partition of N entries restored as on assignment.
async fn restore(entries: usize) -> anyhow::Result<()> {
    let env = env_with("restore", "resolver.dedupe", 1).await?;
    let config = runtime_config(&env)?;
    let wrote = write(&env, &config, "resolver.dedupe", entries, |i| {
        let e = dedupe_entry(i);
        Entry {
            key: e.message_id.clone(),
            value: e,
            partition: Some(0),
            timestamp_ms: None,
        }
    })
    .await?;
    let naming = mailstream_runtime::Naming::new(env.prefix.clone());
    let codec = AvroCodec::decoder(registry_settings(&config)?);
    let ctx = RestoreContext::new(&config, &naming, &codec);
    let (before, _) = memory();
    let started = Instant::now();
    let records = ctx
        .read_changelog::<DedupeEntry>("resolver.dedupe", 0)
        .await?;
    let read_s = started.elapsed().as_secs_f64();
    let mut store = KeyedStore::new("resolver.dedupe", limits(entries));
    store.restore(0, records);
    let total_s = started.elapsed().as_secs_f64();
    let (after, peak) = memory();
    println!(
        "restore: {entries} entries written in {wrote:.1} s; read and decoded {read_s:.1} s, restored {total_s:.1} s ({:.0} entries/s); resident {:.0} MiB after ({:.0} bytes per entry), peak {:.0} MiB",
        entries as f64 / total_s,
        mib(after.saturating_sub(before)),
        per_entry(after.saturating_sub(before), entries),
        mib(peak),
    );
    std::hint::black_box(store.len(0));
    delete_topics(&env).await.map(drop)
}

/// Part 3: a `threads` table of N links loaded as a resolver does at start.
async fn table(entries: usize) -> anyhow::Result<()> {
    let env = env_with("table", "threads", 6).await?;
    let config = runtime_config(&env)?;
    let wrote = write(&env, &config, "threads", entries, |i| {
        let link = prefill::thread_link(i, T0 + i as i64);
        Entry {
            key: link.message_id.clone(),
            value: link,
            partition: None,
            timestamp_ms: None,
        }
    })
    .await?;
    let naming = mailstream_runtime::Naming::new(env.prefix.clone());
    let (trigger, shutdown) = Shutdown::new();
    let (before, _) = memory();
    let started = Instant::now();
    let table = GlobalTable::<ThreadLink>::start(&config, &naming, "threads", shutdown).await?;
    let load_s = started.elapsed().as_secs_f64();
    let (after, peak) = memory();
    println!(
        "table: {entries} links written in {wrote:.1} s; loaded {} in {load_s:.1} s ({:.0} links/s); resident {:.0} MiB after ({:.0} bytes per link), peak {:.0} MiB",
        table.len(),
        table.len() as f64 / load_s,
        mib(after.saturating_sub(before)),
        per_entry(after.saturating_sub(before), table.len()),
        mib(peak),
    );
    trigger.trigger();
    delete_topics(&env).await.map(drop)
}
