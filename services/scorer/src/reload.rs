//! Hot reload: the rules file is polled and a valid change replaces the rules in force, without a
//! restart and without pausing the stream.
//!
//! A background task reads the file every `reload_interval_ms` and compares a SHA-256 of its bytes
//! with the last content it saw, so an unchanged file costs one read and a hash, and a `touch`
//! does nothing. Polling (rather than inotify) works the same on every filesystem, including a
//! Kubernetes ConfigMap volume, whose updates arrive as a symlink swap.
//!
//! A changed file is loaded in full ([`RuleSet::load`]). When it is valid, the new [`RuleSet`]
//! replaces the old one in the [`RulesHandle`]; the processor takes the rules once per record, so
//! a record is scored with one version of the rules, never a mix. When it is invalid (or cannot be
//! read), the rules in force stay, the problems are logged at warn, and
//! `mailstream_scorer_rules_valid` drops to 0 until a valid file comes ([`crate::events`]). The
//! task stops when the process is asked to shut down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mailstream_runtime::Shutdown;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::events::{self, ScorerMetrics};
use crate::rules::RuleSet;

/// The rules in force, shared between the processor and the reload task.
#[derive(Clone, Debug)]
pub struct RulesHandle {
    current: Arc<RwLock<Arc<RuleSet>>>,
}

impl RulesHandle {
    pub fn new(rules: RuleSet) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(rules))),
        }
    }

    /// The rules in force now (cheap: a lock and a reference count).
    pub fn current(&self) -> Arc<RuleSet> {
        // A writer cannot panic while holding the lock (it only swaps an Arc), so a poisoned
        // lock still holds a whole RuleSet.
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&guard)
    }

    /// Puts `rules` in force.
    pub fn replace(&self, rules: RuleSet) {
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        *guard = Arc::new(rules);
    }
}

/// What the watcher last saw in the file: its content's hash, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Content([u8; 32]),
    Unreadable(String),
}

/// Reads `path`: what was seen, and the rules it holds (or every problem).
pub fn read(path: &Path) -> (Seen, Result<RuleSet, Vec<String>>) {
    match std::fs::read(path) {
        Ok(bytes) => {
            let seen = Seen::Content(Sha256::digest(&bytes).into());
            let rules = crate::rules::Format::of_path(path)
                .map_err(|e| vec![e])
                .and_then(|format| match String::from_utf8(bytes) {
                    Ok(text) => RuleSet::from_text(&text, format),
                    Err(_) => Err(vec!["the file is not UTF-8 text".into()]),
                });
            (seen, rules)
        }
        Err(e) => (
            Seen::Unreadable(e.kind().to_string()),
            Err(vec![format!("cannot read: {e}")]),
        ),
    }
}

/// Polls one rules file and swaps the rules in force when it changes.
#[derive(Debug)]
pub struct Watcher {
    path: PathBuf,
    rules: RulesHandle,
    metrics: ScorerMetrics,
    last: Seen,
}

impl Watcher {
    /// A watcher of `path`, whose content `loaded` is already in force in `rules`.
    pub fn new(path: PathBuf, loaded: Seen, rules: RulesHandle, metrics: ScorerMetrics) -> Self {
        Self {
            path,
            rules,
            metrics,
            last: loaded,
        }
    }

    /// Checks the file once; acts only when it differs from what was last seen.
    pub fn poll(&mut self) {
        let (seen, loaded) = read(&self.path);
        if seen == self.last {
            return;
        }
        self.last = seen;
        let in_force = self.rules.current();
        match loaded {
            Ok(rules) => {
                events::rules_reloaded(&self.metrics, &self.path, &in_force.version, &rules);
                self.rules.replace(rules);
            }
            Err(problems) => {
                events::rules_refused(&self.metrics, &self.path, &in_force.version, &problems);
            }
        }
    }

    /// Polls every `interval` until `shutdown` fires.
    pub fn spawn(self, interval: Duration, mut shutdown: Shutdown) -> JoinHandle<()> {
        let mut watcher = self;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await; // the first tick is immediate; the file was just loaded
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = ticker.tick() => {
                        // A small file read; off the runtime's worker threads all the same.
                        let polling = tokio::task::spawn_blocking(move || {
                            watcher.poll();
                            watcher
                        });
                        match polling.await {
                            Ok(back) => watcher = back,
                            Err(e) => {
                                tracing::warn!(error = %e, "rules reload task failed; rules stay as they are");
                                break;
                            }
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mailstream-scorer-{}-{}", std::process::id(), name));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("rules.yaml")
    }

    const V1: &str =
        "rules:\n  - {id: intent, points: 20, when: {subject: {contains_any: [demo]}}}\n";

    #[test]
    fn a_valid_change_is_swapped_in_and_an_invalid_one_keeps_the_rules() {
        let path = temp_file("reload");
        std::fs::write(&path, V1).expect("write");
        let (seen, loaded) = read(&path);
        let handle = RulesHandle::new(loaded.expect("valid"));
        let metrics = ScorerMetrics::register(&prometheus::Registry::new()).expect("metrics");
        let mut watcher = Watcher::new(path.clone(), seen, handle.clone(), metrics.clone());
        let v1 = handle.current().version.clone();

        watcher.poll();
        assert_eq!(
            handle.current().version,
            v1,
            "unchanged file: nothing happens"
        );
        assert_eq!((metrics.reloads("ok"), metrics.reloads("invalid")), (0, 0));

        std::fs::write(&path, V1.replace("20", "25")).expect("write");
        watcher.poll();
        let v2 = handle.current().version.clone();
        assert_ne!(v2, v1);
        assert_eq!(handle.current().rules[0].points, 25);
        assert_eq!((metrics.reloads("ok"), metrics.valid()), (1, 1));

        std::fs::write(&path, "rules:\n  - {id: intent, points: many}\n").expect("write");
        watcher.poll();
        watcher.poll();
        assert_eq!(handle.current().version, v2, "the previous rules stay");
        assert_eq!((metrics.reloads("invalid"), metrics.valid()), (1, 0));

        std::fs::remove_file(&path).expect("remove");
        watcher.poll();
        assert_eq!(handle.current().version, v2);
        assert_eq!(
            metrics.reloads("invalid"),
            2,
            "a vanished file is refused once"
        );

        std::fs::write(&path, V1).expect("write");
        watcher.poll();
        assert_eq!(handle.current().version, v1);
        assert_eq!((metrics.reloads("ok"), metrics.valid()), (2, 1));
    }

    #[tokio::test]
    async fn the_task_picks_up_changes_and_stops_on_shutdown() {
        let path = temp_file("task");
        std::fs::write(&path, V1).expect("write");
        let (seen, loaded) = read(&path);
        let handle = RulesHandle::new(loaded.expect("valid"));
        let metrics = ScorerMetrics::register(&prometheus::Registry::new()).expect("metrics");
        let (trigger, shutdown) = Shutdown::new();
        let task = Watcher::new(path.clone(), seen, handle.clone(), metrics.clone())
            .spawn(Duration::from_millis(20), shutdown);
        std::fs::write(&path, V1.replace("20", "30")).expect("write");
        let mut waited = 0;
        while handle.current().rules[0].points != 30 && waited < 250 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += 1;
        }
        assert_eq!(handle.current().rules[0].points, 30);
        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops on shutdown")
            .expect("no panic");
    }
}
