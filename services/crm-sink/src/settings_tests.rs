//! Unit tests of the settings: env mapping through the dashed section name, defaults, and every
//! problem reported with its key.

use mailstream_runtime::config::load;
use mailstream_runtime::{ConfigSource, RuntimeError};

use super::*;

fn base() -> ConfigSource {
    ConfigSource::default()
        .with_env("MAILSTREAM_BOOTSTRAP_SERVERS", "k:9092")
        .with_env("MAILSTREAM_SCHEMA_REGISTRY_URL", "http://r:8081")
}

/// Every problem `config::load` reports for `source` (none: it loads).
pub(crate) fn problems(source: &ConfigSource) -> Vec<String> {
    match load::<CrmSinkSettings>(SECTION, source) {
        Ok(_) => Vec::new(),
        Err(RuntimeError::Config(problems)) => problems,
        Err(other) => panic!("not a configuration error: {other}"),
    }
}

#[test]
fn env_keys_map_through_the_dashed_section_name() {
    let (_, s) = load::<CrmSinkSettings>(
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
    let debug = format!("{s:?}");
    assert!(
        !debug.contains("12345") && !debug.contains("u@h"),
        "{debug}"
    );
}

#[test]
fn defaults_fit_the_default_transaction_timeout() {
    let (_, s) = load::<CrmSinkSettings>(
        SECTION,
        &base().with_env("MAILSTREAM_CRM_SINK_DATABASE_URL", "postgres://u@h/d"),
    )
    .expect("valid");
    assert_eq!(s.rate(), 0.0, "postgres is not rate-limited by default");
}

#[test]
fn every_problem_names_its_key() {
    let text = problems(
        &base()
            .with_env("MAILSTREAM_CRM_SINK_SCHEMA", "Bad-Schema")
            .with_env("MAILSTREAM_CRM_SINK_BACKOFF_BASE_MS", "500")
            .with_env("MAILSTREAM_CRM_SINK_BACKOFF_MAX_MS", "100")
            .with_env("MAILSTREAM_CRM_SINK_MAX_CONCURRENCY", "0")
            .with_env("MAILSTREAM_CRM_SINK_ACTIVITIES_PATH", "activities"),
    )
    .join("\n");
    for needle in [
        "MAILSTREAM_CRM_SINK_DATABASE_URL",
        "MAILSTREAM_CRM_SINK_SCHEMA",
        "MAILSTREAM_CRM_SINK_BACKOFF_MAX_MS",
        "MAILSTREAM_CRM_SINK_MAX_CONCURRENCY",
        "MAILSTREAM_CRM_SINK_ACTIVITIES_PATH",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from: {text}");
    }
    assert!(
        problems(&base().with_env("MAILSTREAM_CRM_SINK_BACKEND", "rest"))
            .join("\n")
            .contains("MAILSTREAM_CRM_SINK_BASE_URL")
    );
    let (_, hubspot) = load::<CrmSinkSettings>(
        SECTION,
        &base().with_env("MAILSTREAM_CRM_SINK_BACKEND", "hubspot"),
    )
    .expect("HubSpot has a default base URL");
    assert_eq!(hubspot.rate(), 10.0);
}

#[test]
fn a_request_that_outlives_the_transaction_names_both_keys() {
    let source = base()
        .with_env("MAILSTREAM_CRM_SINK_DATABASE_URL", "postgres://u@h/d")
        .with_env("MAILSTREAM_CRM_SINK_MAX_ATTEMPTS", "20")
        .with_env("MAILSTREAM_CRM_SINK_REQUEST_TIMEOUT_MS", "40000");
    let text = problems(&source).join("\n");
    assert!(
        text.contains("MAILSTREAM_CRM_SINK_REQUEST_TIMEOUT_MS"),
        "{text}"
    );
    assert!(text.contains("MAILSTREAM_TRANSACTION_TIMEOUT_MS"), "{text}");
    let longer = source.with_env("MAILSTREAM_TRANSACTION_TIMEOUT_MS", "600000");
    assert_eq!(problems(&longer), Vec::<String>::new());
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
        let errors = problems(&source);
        assert!(!format!("{errors:?}").contains("s3cret"), "{errors:?}");
        errors
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
    let (_, s) = load::<CrmSinkSettings>(
        SECTION,
        &base()
            .with_env("MAILSTREAM_CRM_SINK_DATABASE_URL", "postgres://u@h/d")
            .with_env(
                "MAILSTREAM_CRM_SINK_NEVER_LOG",
                "CEO@Board.example, @lawfirm.example,hr.acme.io",
            ),
    )
    .expect("valid");
    let list = s.never_log().expect("valid entries");
    assert!(list.matches("ceo@board.example") && list.matches("x@eu.lawfirm.example"));
    assert!(
        !format!("{s:?}").contains("board.example"),
        "entries are not logged"
    );
    let errors = problems(
        &base()
            .with_env("MAILSTREAM_CRM_SINK_DATABASE_URL", "postgres://u@h/d")
            .with_env("MAILSTREAM_CRM_SINK_NEVER_LOG", "ok.example, who@"),
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("crm-sink.never_log")
            && errors[0].contains("MAILSTREAM_CRM_SINK_NEVER_LOG")
            && errors[0].contains("entry 2"),
        "{errors:?}"
    );
}
