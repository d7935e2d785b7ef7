//! Unit tests of `Retry-After` parsing, the limiter and the retry loop.

use super::*;

fn retrier(max_attempts: u32) -> Retrier {
    let (_trigger, shutdown) = Shutdown::new();
    Retrier {
        policy: RetryPolicy {
            max_attempts,
            cap: Duration::from_millis(2),
            retry_after_max: Duration::from_millis(300),
        },
        limiter: Limiter::new(0.0, 1, 2),
        request_timeout: Duration::from_millis(10),
        metrics: SinkMetrics::new(&prometheus::Registry::new()).expect("metrics"),
        shutdown,
    }
}

fn retriable(retry_after: Option<Duration>) -> Failure {
    Failure::Retry {
        class: FailureClass::Server,
        reason: "503".into(),
        retry_after,
    }
}

#[test]
fn retry_after_takes_seconds_and_every_http_date_form() {
    let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:30 GMT").expect("time");
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

#[tokio::test]
async fn the_rate_limit_spends_the_burst_then_paces() {
    let limiter = Limiter::new(20.0, 3, 10);
    let started = Instant::now();
    for _ in 0..5 {
        let _permit = limiter.acquire().await;
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(80) && elapsed < Duration::from_secs(2),
        "3 at once, then 2 more at 20/s: {elapsed:?}"
    );
    let unlimited = Limiter::new(0.0, 1, 1);
    let started = Instant::now();
    for _ in 0..1_000 {
        let _permit = unlimited.acquire().await;
    }
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn blips_are_retried_and_what_outlasts_them_is_an_outage() {
    let retrier = retrier(3);
    let far = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    let ok = retrier
        .run("op", far, || {
            n += 1;
            let r = if n < 3 { Err(retriable(None)) } else { Ok(n) };
            async move { r }
        })
        .await;
    assert_eq!(ok, Ok((3, 3)));
    let spent = retrier
        .run("op", far, || async { Err::<(), _>(retriable(None)) })
        .await;
    assert!(
        matches!(spent, Err(Failure::Outage { .. })),
        "never dead-lettered: {spent:?}"
    );
    let soon = Instant::now();
    let late = retrier
        .run("op", soon, || async { Err::<(), _>(retriable(None)) })
        .await;
    assert!(matches!(late, Err(Failure::Outage { .. })), "{late:?}");
}

#[tokio::test]
async fn the_record_s_own_faults_and_refused_credentials_are_not_retried() {
    let retrier = retrier(5);
    let far = Instant::now() + Duration::from_secs(60);
    for failure in [
        Failure::Poison {
            class: FailureClass::Client,
            reason: "400".into(),
        },
        Failure::Auth {
            setting: "token",
            reason: "401".into(),
        },
    ] {
        let mut calls = 0;
        let result = retrier
            .run("op", far, || {
                calls += 1;
                let f = failure.clone();
                async move { Err::<(), _>(f) }
            })
            .await;
        assert_eq!(result, Err(failure));
        assert_eq!(calls, 1);
    }
}

#[tokio::test]
async fn retry_after_holds_every_call_and_a_hold_past_the_deadline_hands_the_batch_back() {
    let retrier = retrier(3);
    let far = Instant::now() + Duration::from_secs(60);
    let started = Instant::now();
    let mut n = 0;
    let ok = retrier
        .run("op", far, || {
            n += 1;
            let r = if n < 2 {
                Err(retriable(Some(Duration::from_millis(150))))
            } else {
                Ok(())
            };
            async move { r }
        })
        .await;
    assert!(ok.is_ok());
    assert!(started.elapsed() >= Duration::from_millis(150), "honoured");
    // A long hold (cut to retry_after_max) is shared: another call made during it waits or,
    // when its batch's time is shorter than the hold, is handed back without calling.
    let _ = retrier
        .run("op", Instant::now(), || async {
            Err::<(), _>(retriable(Some(Duration::from_secs(3_600))))
        })
        .await;
    let held = retrier.limiter.held_until().expect("a hold");
    assert!(
        held <= Instant::now() + Duration::from_millis(300),
        "capped"
    );
    let mut calls = 0;
    let handed_back = retrier
        .run("other", Instant::now() + Duration::from_millis(50), || {
            calls += 1;
            async { Ok(()) }
        })
        .await;
    assert!(matches!(handed_back, Err(Failure::Outage { .. })));
    assert_eq!(calls, 0, "no call during the CRM's hold");
}
