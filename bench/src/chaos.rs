//! The full chaos suite as one command (`bench/chaos`): 50,000 emails through the whole
//! topology while every processor is `kill -9`ed 20 times, the broker and the registry are
//! restarted once each and the CRM answers bursts of 429 and 503 (and, when asked, the CRM, the
//! registry and every broker go away for long outages), then the checks and a replay of every
//! processor. The scenario and its checks are `mailstream_tests::chaos` (the CI test
//! `tests/chaos.rs` runs a small one). Exits 1 when a check fails.

use std::time::Duration;

use clap::Parser;
use mailstream_tests::chaos::{ChaosOptions, run};

#[derive(Parser)]
struct Args {
    /// Deliveries pushed through ingest (duplicates and poison included).
    #[arg(long, default_value_t = 50_000)]
    emails: usize,
    /// Offered deliveries per second.
    #[arg(long, default_value_t = 250.0)]
    rate: f64,
    /// Concurrent SMTP sessions.
    #[arg(long, default_value_t = 16)]
    sessions: usize,
    /// `kill -9`s per processor (ingest, parser, resolver, scorer, crm-sink).
    #[arg(long, default_value_t = 20)]
    kills: u32,
    /// Bursts of each kind (429 with Retry-After, 503) from the CRM.
    #[arg(long, default_value_t = 5)]
    bursts: u32,
    /// Do not restart the broker.
    #[arg(long)]
    no_broker_restart: bool,
    /// Do not restart the schema registry.
    #[arg(long)]
    no_registry_restart: bool,
    /// Every Nth delivery of a sending session is not an email (dead-lettered by the parser).
    #[arg(long, default_value_t = 500)]
    not_an_email_every: u64,
    /// Every Nth delivery of a session carries a Message-ID the CRM rejects (400).
    #[arg(long, default_value_t = 400)]
    rejected_every: u64,
    /// Largest attachment, bytes.
    #[arg(long, default_value_t = 2_000_000)]
    max_attachment: usize,
    #[arg(long, default_value_t = 11)]
    seed: u64,
    /// Seconds the pipeline may take to settle after the push, and after the replay.
    #[arg(long, default_value_t = 1_800)]
    settle_timeout: u64,
    /// Scale every stream processor out to this many instances and back to one during the push.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Run on the three-broker cluster (`dev/up --cluster`): the broker restart becomes a
    /// `kill -9` of the leader of `parsed` partition 0.
    #[arg(long)]
    cluster: bool,
    /// Freeze (SIGSTOP) one instance of each stateful processor this many seconds (0: none).
    #[arg(long, default_value_t = 0)]
    zombie_secs: u64,
    /// A CRM outage this many seconds long: connections refused, then 503, then 429, a third
    /// each (0: none).
    #[arg(long, default_value_t = 0)]
    crm_outage_secs: u64,
    /// A schema registry outage this many seconds long: stopped (`dev/down registry`), then
    /// started again (`dev/up`) (0: none).
    #[arg(long, default_value_t = 0)]
    registry_outage_secs: u64,
    /// Every broker unavailable this many seconds: the single broker stopped (`dev/down
    /// kafka`), or with --cluster all three nodes `kill -9`ed at once; then started again
    /// (0: none).
    #[arg(long, default_value_t = 0)]
    kafka_outage_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let options = ChaosOptions {
        emails: a.emails,
        rate: a.rate,
        sessions: a.sessions.max(1),
        kills_per_processor: a.kills,
        restart_broker: !a.no_broker_restart,
        restart_registry: !a.no_registry_restart,
        bursts: a.bursts,
        not_an_email_every: a.not_an_email_every,
        rejected_every: a.rejected_every,
        max_attachment: a.max_attachment,
        seed: a.seed,
        settle_timeout: Duration::from_secs(a.settle_timeout),
        instances: a.instances.max(1),
        cluster: a.cluster,
        zombie: Duration::from_secs(a.zombie_secs),
        crm_outage: Duration::from_secs(a.crm_outage_secs),
        registry_outage: Duration::from_secs(a.registry_outage_secs),
        kafka_outage: Duration::from_secs(a.kafka_outage_secs),
    };
    eprintln!("chaos: {options:?}");
    let report = run(options).await?;
    println!("{report}");
    if !report.failures().is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
