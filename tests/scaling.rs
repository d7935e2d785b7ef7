//! A consumer group scaled the way an autoscaler scales it, under steady load, on the real
//! stack: two pass-through instances, a third joining and leaving, one `kill -9`ed and started
//! again — every record comes out exactly once (see `tests/helpers/scale.rs`). The pause each
//! step causes is printed here and compared across assignment strategies by `bench-rebalance`.

use mailstream_tests::scale::{ScaleOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_steps_and_a_crash_lose_and_duplicate_nothing() {
    let report = run(ScaleOptions::small()).await;
    println!("{report}");
    assert_eq!(report.steps.len(), 3, "every step ran: {report}");
    let failures = report.failures();
    assert!(failures.is_empty(), "{failures:?}\n{report}");
}
