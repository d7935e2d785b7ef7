//! Unit tests of the retry policy, `Retry-After` parsing, the token bucket and the retry loop.

use super::*;

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 6,
        base: Duration::from_millis(100),
        cap: Duration::from_millis(2_000),
        retry_after_max: Duration::from_millis(3_000),
    }
}

#[test]
fn retry_after_takes_seconds_and_every_http_date_form() {
    let now = DateTime::parse_from_rfc3339("1994-11-06T08:49:30Z")
        .map(|d| d.with_timezone(&Utc))
        .expect("time");
    let secs = |v| parse_retry_after(v, now).map(|d| d.as_secs());
    assert_eq!(secs("120"), Some(120));
    assert_eq!(secs(" 0 "), Some(0));
    assert_eq!(secs("Sun, 06 Nov 1994 08:49:37 GMT"), Some(7));
    assert_eq!(secs("Sunday, 06-Nov-94 08:49:37 GMT"), Some(7));
    assert_eq!(secs("Sun Nov  6 08:49:37 1994"), Some(7));
    assert_eq!(secs("Sun, 06 Nov 1994 08:00:00 GMT"), Some(0), "past: now");
    assert_eq!(secs("soon"), None);
    assert_eq!(secs("-5"), None);
    assert_eq!(secs(""), None);
}

#[test]
fn backoff_doubles_to_the_cap_with_full_jitter() {
    let p = policy();
    assert_eq!(p.ceiling(1), Duration::from_millis(100));
    assert_eq!(p.ceiling(2), Duration::from_millis(200));
    assert_eq!(p.ceiling(5), Duration::from_millis(1_600));
    assert_eq!(p.ceiling(6), Duration::from_millis(2_000));
    assert_eq!(p.ceiling(60), Duration::from_millis(2_000), "no overflow");
    let mut low = false;
    for _ in 0..500 {
        let d = p.delay(3, None);
        assert!(d <= Duration::from_millis(400));
        low |= d < Duration::from_millis(100);
    }
    assert!(low, "full jitter reaches down towards zero");
    for _ in 0..100 {
        let d = p.delay(1, Some(Duration::from_secs(1)));
        assert!(d >= Duration::from_secs(1), "Retry-After is honoured");
        let d = p.delay(1, Some(Duration::from_secs(3_600)));
        assert_eq!(d, Duration::from_millis(3_000), "capped by retry_after_max");
    }
    assert_eq!(
        p.worst_case(Duration::from_millis(2_000)),
        Duration::from_millis(6 * 2_000 + 5 * 3_000)
    );
}

#[test]
fn token_bucket_spends_the_burst_then_paces() {
    let t0 = Instant::now();
    let mut bucket = TokenBucket::new(10.0, 3, t0);
    for _ in 0..3 {
        assert_eq!(bucket.take(t0), Duration::ZERO);
    }
    let wait = bucket.take(t0);
    assert!(
        wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
        "{wait:?}"
    );
    assert_eq!(bucket.take(t0 + Duration::from_millis(100)), Duration::ZERO);
    // Idle time refills only up to the burst.
    let later = t0 + Duration::from_secs(60);
    for _ in 0..3 {
        assert_eq!(bucket.take(later), Duration::ZERO);
    }
    assert!(bucket.take(later) > Duration::ZERO);
    let mut unlimited = TokenBucket::new(0.0, 1, t0);
    for _ in 0..1_000 {
        assert_eq!(unlimited.take(t0), Duration::ZERO);
    }
}

#[tokio::test]
async fn the_loop_retries_then_gives_up_or_stops_at_rejection() {
    let (_trigger, shutdown) = Shutdown::new();
    let retrier = Retrier {
        policy: RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
            retry_after_max: Duration::from_millis(5),
        },
        limiter: Limiter::new(0.0, 1, 2),
        request_timeout: Duration::from_millis(10),
        metrics: SinkMetrics::new(&prometheus::Registry::new()).expect("metrics"),
        shutdown,
    };
    let far = Instant::now() + Duration::from_secs(60);
    let retriable = || Failure::Retriable {
        class: FailureClass::Server,
        reason: "503".into(),
        retry_after: Some(Duration::from_millis(1)),
    };
    let mut n = 0;
    let ok = retrier
        .run("op", far, || {
            n += 1;
            let r = if n < 3 { Err(retriable()) } else { Ok(n) };
            async move { r }
        })
        .await;
    assert_eq!(ok, Ok((3, 3)));
    let exhausted = retrier
        .run("op", far, || async { Err::<(), _>(retriable()) })
        .await;
    assert!(matches!(
        exhausted,
        Err(CallError::Exhausted { attempts: 3, .. })
    ));
    let mut calls = 0;
    let rejected = retrier
        .run("op", far, || {
            calls += 1;
            async {
                Err::<(), _>(Failure::Rejected {
                    class: FailureClass::Client,
                    reason: "400".into(),
                })
            }
        })
        .await;
    assert!(matches!(rejected, Err(CallError::Rejected { .. })));
    assert_eq!(calls, 1, "a rejection is not retried");
    let soon = Instant::now();
    let interrupted = retrier
        .run("op", soon, || async { Err::<(), _>(retriable()) })
        .await;
    assert!(matches!(interrupted, Err(CallError::Interrupted { .. })));
}
