//! CPU time and memory of processes from `/proc`: `stat` (utime + stime, in clock ticks) and
//! `smaps_rollup` (Pss: resident memory with shared pages divided among their users, so a
//! process tree such as PostgreSQL's postmaster and backends adds up honestly; RSS where Pss
//! is not readable). A [`Watch`] follows named process trees over a run: CPU between two
//! moments, peak memory from periodic samples, and the whole machine's busy time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Linux reports CPU times in USER_HZ, which is 100 on every architecture Rust targets here.
const TICKS_PER_SEC: f64 = 100.0;

/// Where a watched process's pid comes from.
#[derive(Debug, Clone)]
pub enum Pids {
    /// A pid alone.
    One(u32),
    /// A pid, and all its descendants.
    Tree(u32),
    /// The pid in a pid file (read at each sample: it may change), and its descendants.
    PidFile(PathBuf),
}

fn read(path: impl AsRef<std::path::Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// (parent pid, utime + stime) of `pid`.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = read(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// Proportional set size of `pid` in KiB (its RSS when smaps_rollup is not readable).
fn memory_kib(pid: u32) -> u64 {
    let field = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    read(format!("/proc/{pid}/smaps_rollup"))
        .and_then(|t| field(&t, "Pss:"))
        .or_else(|| read(format!("/proc/{pid}/status")).and_then(|t| field(&t, "VmRSS:")))
        .unwrap_or(0)
}

/// Every process's parent.
fn parents() -> BTreeMap<u32, u32> {
    let mut map = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
                && let Some((ppid, _)) = stat(pid)
            {
                map.insert(pid, ppid);
            }
        }
    }
    map
}

fn tree(root: u32, parents: &BTreeMap<u32, u32>) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parents.iter().filter(|(_, pp)| **pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

impl Pids {
    fn resolve(&self, parents: &BTreeMap<u32, u32>) -> Vec<u32> {
        let root = match self {
            Pids::One(pid) => return vec![*pid],
            Pids::Tree(pid) => Some(*pid),
            Pids::PidFile(path) => read(path).and_then(|s| s.trim().parse().ok()),
        };
        match root {
            Some(pid) if parents.contains_key(&pid) => tree(pid, parents),
            _ => Vec::new(),
        }
    }
}

/// A component of the local stack (`kafka`, `registry`, `postgres`) by its pid file.
pub fn stack_component(name: &str) -> Pids {
    let state = std::env::var("MAILSTREAM_STATE").unwrap_or_else(|_| {
        format!(
            "{}/.local/state/mailstream",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    Pids::PidFile(format!("{state}/pids/{name}.pid").into())
}

/// The local stack's components and this process (the load generator) by name.
pub fn stack_and_self() -> Vec<(String, Pids)> {
    let mut names: Vec<(String, Pids)> = ["kafka", "registry", "postgres"]
        .iter()
        .map(|c| (c.to_string(), stack_component(c)))
        .collect();
    names.push(("bench (load)".into(), Pids::One(std::process::id())));
    names
}

/// Busy and total jiffies of the whole machine (`/proc/stat`).
fn machine() -> (u64, u64) {
    let text = read("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// A moment's CPU counters.
#[derive(Debug, Clone)]
pub struct Mark {
    at: Instant,
    ticks: BTreeMap<String, u64>,
    machine: (u64, u64),
}

/// CPU and memory of one watched name over a window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Usage {
    pub name: String,
    /// Percent of one core, averaged over the window.
    pub cpu_percent: f64,
    /// CPU seconds over the window.
    pub cpu_secs: f64,
    pub peak_mib: f64,
}

/// Named process trees followed over a run.
#[derive(Debug)]
pub struct Watch {
    names: Vec<(String, Pids)>,
    /// The most memory each name held at a mark.
    peak_kib: BTreeMap<String, u64>,
}

impl Watch {
    pub fn new(names: Vec<(String, Pids)>) -> Self {
        Self {
            names,
            peak_kib: BTreeMap::new(),
        }
    }

    /// CPU counters now (and memory, into the peaks).
    pub fn mark(&mut self) -> Mark {
        let parents = parents();
        let mut ticks = BTreeMap::new();
        for (name, pids) in &self.names {
            let members = pids.resolve(&parents);
            let t: u64 = members.iter().filter_map(|p| stat(*p)).map(|s| s.1).sum();
            let kib: u64 = members.iter().map(|p| memory_kib(*p)).sum();
            ticks.insert(name.clone(), t);
            let peak = self.peak_kib.entry(name.clone()).or_default();
            *peak = (*peak).max(kib);
        }
        Mark {
            at: Instant::now(),
            ticks,
            machine: machine(),
        }
    }

    /// Usage of every name between two marks, plus `machine` (every process on the box, in
    /// percent of one core) and `other` (what the machine did beside the watched names).
    pub fn usage(&self, from: &Mark, to: &Mark) -> Vec<Usage> {
        let secs = to.at.duration_since(from.at).as_secs_f64().max(1e-6);
        let mut out = Vec::new();
        let mut ours = 0.0;
        for (name, _) in &self.names {
            let dt = to.ticks.get(name).copied().unwrap_or(0) as f64
                - from.ticks.get(name).copied().unwrap_or(0) as f64;
            let cpu_secs = dt.max(0.0) / TICKS_PER_SEC;
            let cpu = cpu_secs / secs * 100.0;
            ours += cpu;
            out.push(Usage {
                name: name.clone(),
                cpu_percent: cpu,
                cpu_secs,
                peak_mib: self.peak_kib.get(name).copied().unwrap_or(0) as f64 / 1024.0,
            });
        }
        let busy = to.machine.0.saturating_sub(from.machine.0) as f64;
        let total = to.machine.1.saturating_sub(from.machine.1).max(1) as f64;
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let machine = busy / total * cores * 100.0;
        out.push(Usage {
            name: "machine".into(),
            cpu_percent: machine,
            cpu_secs: machine / 100.0 * secs,
            peak_mib: 0.0,
        });
        out.push(Usage {
            name: "other".into(),
            cpu_percent: (machine - ours).max(0.0),
            cpu_secs: (machine - ours).max(0.0) / 100.0 * secs,
            peak_mib: 0.0,
        });
        out
    }
}
