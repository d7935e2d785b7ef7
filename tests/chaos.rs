//! The chaos suite, CI size (a few thousand emails, a few kills, one broker and one registry
//! restart, CRM bursts of 429 and 503): see `tests/helpers/chaos.rs` for what it does and checks.
//! `MAILSTREAM_CHAOS_EMAILS` and `MAILSTREAM_CHAOS_KILLS` (per processor) resize it; the full
//! run is `bench/chaos` (50,000 emails, 20 kills per processor).
//!
//! It restarts the shared broker and registry: other tests running against the stack at the
//! same moment see the outage.
//!
//! The replicated run does the same on the three-broker cluster of `dev/up --cluster` while
//! every stream processor is scaled 1 → 3 → 1, one instance of each stateful processor is frozen
//! past the group's session timeout (a zombie), the leader of a `parsed` partition is
//! `kill -9`ed, and the CRM is unreachable, then 503, then 429 for 30 s in all; with the
//! registry down and every broker down for a while (see `ChaosOptions::small_replicated`).
//! Replies whose parent comes later are linked then (a second, `thread_relinked` record).
//! The two runs take turns.

use mailstream_tests::chaos::{ChaosOptions, run};
use mailstream_tests::env_or;
use tokio::sync::Mutex;

/// The two runs one after the other: both restart or stop the shared registry, and each
/// takes the machine's two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_loss_no_duplicate_through_kills_restarts_and_crm_faults() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut options = ChaosOptions::small();
    options.emails = env_or("MAILSTREAM_CHAOS_EMAILS", options.emails);
    options.kills_per_processor = env_or("MAILSTREAM_CHAOS_KILLS", options.kills_per_processor);
    let report = run(options).await.expect("the chaos run");
    println!("{report}");
    let failures = report.failures();
    assert!(failures.is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_loss_no_duplicate_replicated_on_three_brokers_through_scaling_zombies_and_a_crm_outage()
{
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut options = ChaosOptions::small_replicated();
    options.emails = env_or("MAILSTREAM_CHAOS_EMAILS", options.emails);
    options.kills_per_processor = env_or("MAILSTREAM_CHAOS_KILLS", options.kills_per_processor);
    let report = run(options).await.expect("the replicated chaos run");
    println!("{report}");
    let failures = report.failures();
    assert!(failures.is_empty(), "{report}");
}
