//! Kafka as production secures it: the dev broker's SASL_SSL listener (`dev/up`: TLS with a
//! dev CA, SCRAM-SHA-512), the password from a file as a Kubernetes Secret is mounted. The
//! pass-through processor reads and writes only through that listener and every record comes
//! out exactly once; an operator command writes through it too; with a wrong password a
//! processor never becomes ready and says why. (This test found processors sending
//! rust-rdkafka's "[sanitized for safety]" placeholder as their SASL password: the runtime
//! copied the shared settings through `ClientConfig::config_map`, which masks secrets.)

use std::time::{Duration, Instant};

use mailstream_tests::{
    TestEnv, collect, free_port, http_get, log_dir, passthrough_exactly_once, terminate,
};

/// The SASL_SSL listener's settings from `dev/up`'s env file, as a processor takes them.
fn sasl_settings(password_file: Option<&str>) -> Vec<(String, String)> {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run dev/up and source ~/.local/state/mailstream/env")
        })
    };
    let mut settings = vec![
        (
            "MAILSTREAM_BOOTSTRAP_SERVERS",
            var("MAILSTREAM_KAFKA_SASL_BOOTSTRAP"),
        ),
        ("MAILSTREAM_RDKAFKA_SECURITY_PROTOCOL", "SASL_SSL".into()),
        ("MAILSTREAM_RDKAFKA_SASL_MECHANISM", "SCRAM-SHA-512".into()),
        (
            "MAILSTREAM_RDKAFKA_SASL_USERNAME",
            var("MAILSTREAM_KAFKA_SASL_USERNAME"),
        ),
        (
            "MAILSTREAM_RDKAFKA_SSL_CA_LOCATION",
            var("MAILSTREAM_KAFKA_CA_FILE"),
        ),
    ];
    settings.push(match password_file {
        Some(file) => ("MAILSTREAM_RDKAFKA_SASL_PASSWORD_FILE", file.to_string()),
        None => (
            "MAILSTREAM_RDKAFKA_SASL_PASSWORD_FILE",
            var("MAILSTREAM_KAFKA_SASL_PASSWORD_FILE"),
        ),
    });
    settings
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_command_writes_through_the_sasl_ssl_listener() {
    let env = TestEnv::new("sasl-cli");
    let samples =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/samples/contacts.csv");
    let mut cmd = env.mailstream(&["tables", "load", samples.to_str().expect("utf-8 path")]);
    for (k, v) in sasl_settings(None) {
        cmd.env(k, v);
    }
    let out = mailstream_tests::output(cmd);
    assert!(
        out.status.success(),
        "tables load over SASL_SSL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Read back over the PLAINTEXT listener of the same broker.
    let rows = collect(
        &env.consumer(&["contacts"]),
        2,
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(rows.len(), 2, "the sample's two contacts arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_on_a_sasl_ssl_listener_processes_every_record_once() {
    // Topics are created over the PLAINTEXT listener of the same broker; the processor uses
    // only the SASL_SSL one.
    let env = TestEnv::new("sasl");
    let (ready, status) = passthrough_exactly_once(&env, 300, &sasl_settings(None)).await;
    assert_eq!(ready, 200, "ready while connected over SASL_SSL");
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_sasl_password_keeps_the_processor_unready_and_says_why() {
    let env = TestEnv::new("sasl-wrong");
    let dir = std::env::temp_dir().join(format!("sasl-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let wrong = dir.join("password");
    std::fs::write(&wrong, "not-the-password\n").expect("write");
    let http = format!("127.0.0.1:{}", free_port());
    let mut vars = sasl_settings(Some(wrong.to_str().expect("utf-8 path")));
    vars.push(("MAILSTREAM_HTTP_ADDR".into(), http.clone()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut child = env.spawn("passthrough", "a", &vars);
    let log = log_dir().join(format!("{}passthrough-a.log", env.prefix));
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("invalid credentials") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no authentication error logged in 30 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, body) = http_get(&format!("http://{http}/readyz")).await;
    assert_eq!(
        status, 503,
        "never ready without the right credentials: {body}"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("not-the-password"),
        "the password is never logged"
    );
    terminate(&mut child, Duration::from_secs(40));
    let _ = std::fs::remove_dir_all(&dir);
}
