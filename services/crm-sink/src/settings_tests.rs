//! Unit tests of the settings: env mapping through the dashed section name, defaults, and every
//! problem reported with its key.

use mailstream_runtime::ConfigSource;
use mailstream_runtime::config::load;

use super::*;

fn base() -> ConfigSource {
    ConfigSource::default()
        .with_env("MAILSTREAM_BOOTSTRAP_SERVERS", "k:9092")
        .with_env("MAILSTREAM_SCHEMA_REGISTRY_URL", "http://r:8081")
}

#[test]
fn env_keys_map_through_the_dashed_section_name() {
    let (rt, s) = load::<CrmSinkSettings>(
        SECTION,
        &base()
            .with_env("MAILSTREAM_CRM_SINK_DATABASE_URL", "postgres://u@h:5433/d")
            .with_env("MAILSTREAM_CRM_SINK_TOKEN", "12345")
            .with_env("MAILSTREAM_CRM_SINK_MAX_ATTEMPTS", "3")
            .with_env("MAILSTREAM_CRM_SINK_RATE_LIMIT_PER_SEC", "5")
            .with_env("MAILSTREAM_CRM_SINK_DRY_RUN", "true"),
    )
    .expect("valid");
    assert_eq!(s.backend, Backend::Postgres);
    assert_eq!(s.schema, "crm");
    assert_eq!(
        s.token.as_deref(),
        Some("12345"),
        "a numeric-looking token stays a string"
    );
    assert_eq!(s.max_attempts, 3);
    assert_eq!(s.rate(), 5.0);
    assert_eq!(s.burst(), 5);
    assert!(s.dry_run && !s.write_excluded);
    assert!(s.validate(&rt).is_empty(), "{:?}", s.validate(&rt));
    let debug = format!("{s:?}");
    assert!(
        !debug.contains("12345") && !debug.contains("u@h"),
        "{debug}"
    );
}

#[test]
fn defaults_fit_the_default_transaction_timeout() {
    let (rt, s) = load::<CrmSinkSettings>(
        SECTION,
        &base().with_env("MAILSTREAM_CRM_SINK_DATABASE_URL", "postgres://u@h/d"),
    )
    .expect("valid");
    assert!(s.validate(&rt).is_empty(), "{:?}", s.validate(&rt));
    assert_eq!(s.rate(), 0.0, "postgres is not rate-limited by default");
}

#[test]
fn every_problem_names_its_key() {
    let (rt, s) = load::<CrmSinkSettings>(
        SECTION,
        &base()
            .with_env("MAILSTREAM_CRM_SINK_SCHEMA", "Bad-Schema")
            .with_env("MAILSTREAM_CRM_SINK_BACKOFF_BASE_MS", "500")
            .with_env("MAILSTREAM_CRM_SINK_BACKOFF_MAX_MS", "100")
            .with_env("MAILSTREAM_CRM_SINK_MAX_CONCURRENCY", "0")
            .with_env("MAILSTREAM_CRM_SINK_ACTIVITIES_PATH", "activities"),
    )
    .expect("loads");
    let text = s.validate(&rt).join("\n");
    for needle in [
        "MAILSTREAM_CRM_SINK_DATABASE_URL",
        "MAILSTREAM_CRM_SINK_SCHEMA",
        "MAILSTREAM_CRM_SINK_BACKOFF_MAX_MS",
        "MAILSTREAM_CRM_SINK_MAX_CONCURRENCY",
        "MAILSTREAM_CRM_SINK_ACTIVITIES_PATH",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from: {text}");
    }
    let (_, rest) = load::<CrmSinkSettings>(
        SECTION,
        &base().with_env("MAILSTREAM_CRM_SINK_BACKEND", "rest"),
    )
    .expect("loads");
    assert!(
        rest.validate(&rt)
            .join("\n")
            .contains("MAILSTREAM_CRM_SINK_BASE_URL")
    );
    let (_, hubspot) = load::<CrmSinkSettings>(
        SECTION,
        &base().with_env("MAILSTREAM_CRM_SINK_BACKEND", "hubspot"),
    )
    .expect("loads");
    assert!(
        hubspot.validate(&rt).is_empty(),
        "HubSpot has a default base URL"
    );
    assert_eq!(hubspot.rate(), 10.0);
}

#[test]
fn a_request_that_outlives_the_transaction_names_both_keys() {
    let (mut rt, s) = load::<CrmSinkSettings>(
        SECTION,
        &base()
            .with_env("MAILSTREAM_CRM_SINK_DATABASE_URL", "postgres://u@h/d")
            .with_env("MAILSTREAM_CRM_SINK_MAX_ATTEMPTS", "20")
            .with_env("MAILSTREAM_CRM_SINK_REQUEST_TIMEOUT_MS", "40000"),
    )
    .expect("loads");
    let text = s.validate(&rt).join("\n");
    assert!(
        text.contains("MAILSTREAM_CRM_SINK_REQUEST_TIMEOUT_MS"),
        "{text}"
    );
    assert!(text.contains("MAILSTREAM_TRANSACTION_TIMEOUT_MS"), "{text}");
    rt.transaction_timeout_ms = 600_000;
    assert!(s.validate(&rt).is_empty());
}

#[test]
fn the_backend_is_one_of_three() {
    let (_, rest) = load::<CrmSinkSettings>(
        SECTION,
        &base()
            .with_env("MAILSTREAM_CRM_SINK_BACKEND", "rest")
            .with_env("MAILSTREAM_CRM_SINK_BASE_URL", "http://crm"),
    )
    .expect("loads");
    assert_eq!((rest.backend, rest.backend.name()), (Backend::Rest, "rest"));
    let err = load::<CrmSinkSettings>(
        SECTION,
        &base().with_env("MAILSTREAM_CRM_SINK_BACKEND", "salesforce"),
    )
    .expect_err("not a backend");
    let text = err.to_string();
    assert!(
        text.contains("MAILSTREAM_CRM_SINK_BACKEND") && text.contains("hubspot"),
        "{text}"
    );
}

#[test]
fn unknown_and_mistyped_keys_are_refused() {
    let err = load::<CrmSinkSettings>(
        SECTION,
        &base().with_env("MAILSTREAM_CRM_SINK_MAX_ATTEMPTS", "many"),
    )
    .expect_err("mistyped");
    assert!(
        err.to_string().contains("MAILSTREAM_CRM_SINK_MAX_ATTEMPTS"),
        "{err}"
    );
}

#[test]
fn tls_settings_are_checked_at_start_up_naming_their_key() {
    let check = |url: &str, ca: Option<&str>| {
        let mut source = base().with_env("MAILSTREAM_CRM_SINK_DATABASE_URL", url);
        if let Some(ca) = ca {
            source = source.with_env("MAILSTREAM_CRM_SINK_DATABASE_CA_FILE", ca);
        }
        let (rt, s) = load::<CrmSinkSettings>(SECTION, &source).expect("loads");
        assert!(!format!("{s:?}").contains("s3cret"), "{s:?}");
        s.validate(&rt)
    };
    let errors = check(
        "postgres://u:s3cret@h/d?sslmode=verify-full",
        Some("/no/such/ca.pem"),
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("crm-sink.database_ca_file")
            && errors[0].contains("MAILSTREAM_CRM_SINK_DATABASE_CA_FILE")
            && errors[0].contains("/no/such/ca.pem"),
        "{errors:?}"
    );
    let errors = check("postgres://u:s3cret@h/d?sslmode=verify-everything", None);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("crm-sink.database_url") && !errors[0].contains("s3cret"),
        "{errors:?}"
    );
    assert!(check("postgres://u:s3cret@h/d?sslmode=require", None).is_empty());
    assert!(check("postgres://u:s3cret@h/d", None).is_empty());
}

#[test]
fn never_log_takes_addresses_and_domains_and_names_its_key_for_a_bad_entry() {
    let (rt, s) = load::<CrmSinkSettings>(
        SECTION,
        &base()
            .with_env("MAILSTREAM_CRM_SINK_DATABASE_URL", "postgres://u@h/d")
            .with_env(
                "MAILSTREAM_CRM_SINK_NEVER_LOG",
                "CEO@Board.example, @lawfirm.example,hr.acme.io",
            ),
    )
    .expect("valid");
    assert!(s.validate(&rt).is_empty(), "{:?}", s.validate(&rt));
    let list = s.never_log().expect("valid entries");
    assert!(list.matches("ceo@board.example") && list.matches("x@eu.lawfirm.example"));
    assert!(
        !format!("{s:?}").contains("board.example"),
        "entries are not logged"
    );
    let (rt, bad) = load::<CrmSinkSettings>(
        SECTION,
        &base()
            .with_env("MAILSTREAM_CRM_SINK_DATABASE_URL", "postgres://u@h/d")
            .with_env("MAILSTREAM_CRM_SINK_NEVER_LOG", "ok.example, who@"),
    )
    .expect("loads");
    let errors = bad.validate(&rt);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("crm-sink.never_log")
            && errors[0].contains("MAILSTREAM_CRM_SINK_NEVER_LOG")
            && errors[0].contains("entry 2"),
        "{errors:?}"
    );
}
