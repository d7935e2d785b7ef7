//! The schema registry as production secures it: `dev/up`'s `registry-secure` serves the same
//! schemas over HTTPS (a dev CA) with HTTP basic auth. A processor reaches it with the CA from
//! `schema_registry_ca_file` and the password from a file (as Kubernetes mounts a Secret) and
//! processes every record exactly once; with a wrong password it refuses to start, says the
//! registry refused it (401) and never prints the password.

use std::time::Duration;

use mailstream_tests::{TestEnv, collect, log_dir, passthrough_exactly_once, terminate};

/// The secure registry's settings from `dev/up`'s env file, as a processor takes them.
fn registry_settings(password_file: &str) -> Vec<(String, String)> {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run dev/up and source ~/.local/state/mailstream/env")
        })
    };
    vec![
        (
            "MAILSTREAM_SCHEMA_REGISTRY_URL".into(),
            var("MAILSTREAM_REGISTRY_SECURE_URL"),
        ),
        (
            "MAILSTREAM_SCHEMA_REGISTRY_USERNAME".into(),
            var("MAILSTREAM_REGISTRY_SECURE_USERNAME"),
        ),
        (
            "MAILSTREAM_SCHEMA_REGISTRY_PASSWORD_FILE".into(),
            password_file.to_string(),
        ),
        (
            "MAILSTREAM_SCHEMA_REGISTRY_CA_FILE".into(),
            var("MAILSTREAM_REGISTRY_SECURE_CA_FILE"),
        ),
    ]
}

fn password_file() -> String {
    std::env::var("MAILSTREAM_REGISTRY_SECURE_PASSWORD_FILE")
        .expect("MAILSTREAM_REGISTRY_SECURE_PASSWORD_FILE: run dev/up and source its env file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_on_an_https_registry_with_basic_auth_processes_every_record_once() {
    // Records are written with the plain registry's ids: both serve one schema database.
    let env = TestEnv::new("registry-secure");
    let (ready, status) =
        passthrough_exactly_once(&env, 200, &registry_settings(&password_file())).await;
    assert_eq!(ready, 200, "ready while using the secured registry");
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    let dlq = collect(
        &env.consumer(&["bench.in.dlq"]),
        1,
        Duration::from_secs(3),
        Duration::from_secs(1),
    )
    .await;
    assert!(
        dlq.is_empty(),
        "nothing dead-lettered: {} records",
        dlq.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_registry_password_stops_start_up_and_says_why() {
    let env = TestEnv::new("registry-wrong");
    let dir = std::env::temp_dir().join(format!("registry-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let wrong = dir.join("password");
    std::fs::write(&wrong, "not-the-registry-password\n").expect("write");
    let vars = registry_settings(wrong.to_str().expect("utf-8 path"));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut child = env.spawn("passthrough", "a", &vars);
    let status = terminate_when_exited(&mut child, Duration::from_secs(40));
    let log = log_dir().join(format!("{}passthrough-a.log", env.prefix));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !status.success(),
        "a processor the registry refuses does not start: {status}"
    );
    assert!(
        text.contains("registering the schema") && text.contains("401"),
        "the log names the registry's refusal:\n{text}"
    );
    assert!(
        !text.contains("not-the-registry-password"),
        "the password is never logged"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits up to `limit` for `child` to exit by itself; stops it otherwise (and the test fails on
/// its success status, which a stopped processor reports).
fn terminate_when_exited(
    child: &mut std::process::Child,
    limit: Duration,
) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    terminate(child, Duration::from_secs(30))
}
