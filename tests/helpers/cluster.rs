//! The three-broker cluster of `dev/up --cluster` (three combined broker+controller KRaft
//! nodes, node ids 1-3, on 127.0.0.1): its addresses from the env file `dev/up` writes, the pid
//! of each node, a `kill -9` of one (or of all three) and the restart through
//! `dev/up --cluster`, and partition leadership and ISRs read through rdkafka's metadata.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::Stack;

/// The node ids of the cluster.
pub const NODES: [i32; 3] = [1, 2, 3];

/// One partition as the cluster's metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub topic: String,
    pub partition: i32,
    /// -1 while it has none.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// The cluster's addresses and state directory.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub stack: Stack,
    /// `$MAILSTREAM_STATE/cluster`: pids in `pids/cluster-N.pid`, logs in `logs/cluster-N.log`.
    pub dir: PathBuf,
}

impl Cluster {
    /// The env file of the cluster: `$MAILSTREAM_STATE/cluster/env` (default
    /// `~/.local/state/mailstream/cluster/env`).
    pub fn env_file() -> PathBuf {
        let state = std::env::var_os("MAILSTREAM_STATE").map_or_else(
            || {
                let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
                Path::new(&home).join(".local/state/mailstream")
            },
            PathBuf::from,
        );
        state.join("cluster/env")
    }

    /// Reads the cluster's env file (`export NAME=value` lines); panics, saying how to start
    /// the cluster, when it is not there.
    pub fn get() -> Self {
        let file = Self::env_file();
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "the three-broker cluster is not started ({}: {e}): run dev/up --cluster",
                file.display()
            )
        });
        let vars: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            // dev/up writes values with printf %q: only commas get escaped in these
            .map(|(k, v)| (k.to_string(), v.replace('\\', "")))
            .collect();
        let var = |name: &str| {
            vars.get(name)
                .cloned()
                .unwrap_or_else(|| panic!("{} has no {name}", file.display()))
        };
        Self {
            stack: Stack {
                bootstrap: var("MAILSTREAM_BOOTSTRAP_SERVERS"),
                registry: var("MAILSTREAM_SCHEMA_REGISTRY_URL"),
            },
            dir: PathBuf::from(var("MAILSTREAM_CLUSTER_DIR")),
        }
    }

    /// The pid of node `id` if it runs (its pid file names a live process started with the
    /// node's own config, so a reused pid is never taken for it).
    pub fn node_pid(&self, id: i32) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.dir.join(format!("pids/cluster-{id}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let config = format!("cluster/node-{id}/server.properties");
        String::from_utf8_lossy(&cmdline)
            .contains(&config)
            .then_some(pid)
    }

    /// `kill -9` of node `id`, waiting (bounded) until the process is gone and its ports are
    /// closed (a JVM's threads may still be tearing down, its sockets open, when its main
    /// thread already shows as a zombie).
    pub fn kill_node(&self, id: i32) {
        let pid = self
            .node_pid(id)
            .unwrap_or_else(|| panic!("cluster node {id} is not running"));
        let ports = self.node_ports(id);
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -9 {pid} (cluster node {id})");
        wait_dead(id, pid, &ports);
    }

    /// `kill -9` of every node at once (the whole cluster unavailable, none shut down in a
    /// controlled way), waiting as [`Cluster::kill_node`] does until each is gone; started
    /// again by [`Cluster::up`]. Panics when a node is not running.
    pub fn kill_all(&self) {
        let nodes: Vec<(i32, u32, Vec<u16>)> = NODES
            .iter()
            .map(|&id| {
                let pid = self
                    .node_pid(id)
                    .unwrap_or_else(|| panic!("cluster node {id} is not running"));
                (id, pid, self.node_ports(id))
            })
            .collect();
        let pids: Vec<String> = nodes.iter().map(|(_, pid, _)| pid.to_string()).collect();
        let status = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -9 {pids:?} (every cluster node)");
        for (id, pid, ports) in &nodes {
            wait_dead(*id, *pid, ports);
        }
    }

    /// The ports node `id` listens on, from its `listeners` setting.
    fn node_ports(&self, id: i32) -> Vec<u16> {
        let config = self.dir.join(format!("node-{id}/server.properties"));
        let text = std::fs::read_to_string(&config)
            .unwrap_or_else(|e| panic!("{}: {e}", config.display()));
        text.lines()
            .filter_map(|l| l.strip_prefix("listeners="))
            .flat_map(|l| l.split(','))
            .filter_map(|listener| listener.rsplit_once(':')?.1.parse().ok())
            .collect()
    }

    /// `dev/up --cluster`: starts every node that is not running and waits until it serves.
    /// Returns how long that took.
    pub fn up(&self) -> Duration {
        let started = Instant::now();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/up");
        let out = Command::new(script)
            .arg("--cluster")
            .output()
            .expect("run dev/up --cluster");
        assert!(
            out.status.success(),
            "dev/up --cluster failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        started.elapsed()
    }

    /// Node ids the cluster's metadata lists as brokers.
    pub fn brokers(&self) -> Vec<i32> {
        let consumer = self.metadata_client();
        consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .map(|m| m.brokers().iter().map(|b| b.id()).collect())
            .unwrap_or_default()
    }

    /// Leader, replicas and ISR of every partition of `topics` (physical names).
    pub fn partitions(&self, topics: &[String]) -> Vec<PartitionState> {
        let consumer = self.metadata_client();
        let mut out = Vec::new();
        for topic in topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
            for t in metadata.topics() {
                for p in t.partitions() {
                    out.push(PartitionState {
                        topic: t.name().to_string(),
                        partition: p.id(),
                        leader: p.leader(),
                        replicas: p.replicas().to_vec(),
                        isr: p.isr().to_vec(),
                    });
                }
            }
        }
        out
    }

    /// Deletes every topic whose name starts with `prefix` (a test's own topics): a node's
    /// restart time grows with the partitions it holds, and each test applies the whole
    /// topology, three replicas of each partition.
    pub async fn delete_topics(&self, prefix: &str) {
        let names: Vec<String> = {
            let consumer = self.metadata_client();
            let metadata = tokio::task::block_in_place(|| {
                consumer.fetch_metadata(None, Duration::from_secs(10))
            })
            .expect("cluster metadata");
            metadata
                .topics()
                .iter()
                .map(|t| t.name().to_string())
                .filter(|n| n.starts_with(prefix))
                .collect()
        };
        if names.is_empty() {
            return;
        }
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.stack.bootstrap)
            .create()
            .expect("admin client");
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let results = admin
            .delete_topics(
                &refs,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .expect("delete topics");
        for result in results {
            if let Err((topic, code)) = result {
                eprintln!("could not delete {topic}: {code}");
            }
        }
    }

    /// A fresh client per call: its metadata is the cluster's now, not a cached view.
    fn metadata_client(&self) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.stack.bootstrap)
            .create()
            .expect("metadata client")
    }
}

/// Waits (bounded) until node `id`'s process `pid`, sent SIGKILL, is gone and none of its
/// `ports` is open any more.
fn wait_dead(id: i32, pid: u32, ports: &[u16]) {
    let started = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "cluster node {id} (pid {pid}) survived kill -9"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let open = |port: &u16| {
        std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], *port)),
            Duration::from_millis(200),
        )
        .is_ok()
    };
    while ports.iter().any(open) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "cluster node {id} (pid {pid}) still listens on one of {ports:?} after kill -9"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').next().map(|st| st == "Z"))
        })
        .unwrap_or(true)
}
