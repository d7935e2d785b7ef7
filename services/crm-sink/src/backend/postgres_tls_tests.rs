//! Unit tests of the TLS settings and of how connection failures are judged, against fake
//! servers on 127.0.0.1 (the real PostgreSQL over TLS is in `tests/crm_sink_tls.rs`).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const URL: &str = "postgres://sink:pa55word@db.example:5433/crm";

#[test]
fn sslmode_and_sslrootcert_are_taken_out_of_the_url() {
    let t = Target::parse(
        &format!("{URL}?sslmode=verify-full&application_name=crm-a&sslrootcert=%2Fetc%2Fca.pem"),
        None,
    )
    .expect("valid");
    assert_eq!(t.mode, SslMode::VerifyFull);
    assert_eq!(t.ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
    assert_eq!(t.ca_key, "database_url");
    let config = t.config().expect("tokio-postgres takes the rest");
    assert_eq!(
        config.get_ssl_mode(),
        tokio_postgres::config::SslMode::Require
    );
    assert_eq!(config.get_application_name(), Some("crm-a"));
    let debug = format!("{t:?}");
    assert!(!debug.contains("pa55word"), "{debug}");

    let plain = Target::parse(URL, Some(" /ca.pem ")).expect("valid");
    assert_eq!(plain.mode, SslMode::Prefer, "libpq's default");
    assert_eq!(plain.ca_file.as_deref(), Some(Path::new("/ca.pem")));
    let config = plain.config().expect("config");
    assert_eq!(
        config.get_ssl_mode(),
        tokio_postgres::config::SslMode::Prefer
    );
    assert_eq!(config.get_application_name(), Some(APPLICATION_NAME));

    for (mode, want) in [
        ("disable", SslMode::Disable),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
    ] {
        let t = Target::parse(&format!("{URL}?sslmode={mode}"), None).expect("valid");
        assert_eq!(t.mode, want);
        assert_eq!(t.mode.name(), mode);
    }
}

#[test]
fn bad_tls_settings_name_their_key_and_never_the_password() {
    let (key, what) = Target::parse(&format!("{URL}?sslmode=verify"), None).expect_err("bad");
    assert_eq!(key, "database_url");
    assert!(
        what.contains("`verify`") && what.contains("verify-full"),
        "{what}"
    );
    assert!(!what.contains("pa55word"), "{what}");

    let (key, _) = Target::parse(&format!("{URL}?sslrootcert=/a.pem"), Some("/b.pem"))
        .expect_err("two CA files");
    assert_eq!(key, "database_ca_file");

    let missing = Target::parse(
        &format!("{URL}?sslmode=verify-full"),
        Some("/no/such/ca.pem"),
    )
    .expect("parses");
    let Err((key, what)) = Connector::new(&missing) else {
        panic!("a missing CA file is refused");
    };
    assert_eq!(key, "database_ca_file");
    assert!(what.contains("/no/such/ca.pem"), "{what}");

    let dir = std::env::temp_dir().join(format!("crm-sink-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let err = load_ca(&empty).expect_err("no certificate");
    assert!(err.contains("no PEM certificate"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);

    assert!(matches!(
        Connector::new(&Target::parse(&format!("{URL}?sslmode=disable"), Some("/x")).expect("ok")),
        Ok(Connector::Plain)
    ));
    assert!(matches!(
        Connector::new(&Target::parse(URL, None).expect("ok")),
        Ok(Connector::Tls(_))
    ));
}

/// A fake server: answers the SSLRequest with `answer`, then sends `then` and closes.
async fn fake_server(answer: u8, then: &'static [u8]) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 8];
            if socket.read_exact(&mut request).await.is_err() {
                continue;
            }
            let _ = socket.write_all(&[answer]).await;
            let _ = socket.write_all(then).await;
            let mut rest = [0u8; 512];
            let _ = tokio::time::timeout(
                std::time::Duration::from_millis(200),
                socket.read(&mut rest),
            )
            .await;
        }
    });
    port
}

async fn connect(port: u16, mode: &str) -> tokio_postgres::Error {
    let target = Target::parse(
        &format!("postgres://sink:pa55word@127.0.0.1:{port}/crm?sslmode={mode}"),
        None,
    )
    .expect("valid");
    let Connector::Tls(tls) = Connector::new(&target).expect("connector") else {
        panic!("TLS wanted");
    };
    let mut config = target.config().expect("config");
    config.connect_timeout(std::time::Duration::from_secs(5));
    match config.connect(tls).await {
        Ok(_) => panic!("the fake server cannot be connected to"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn a_server_without_tls_is_a_configuration_fault_under_require_and_keeps_its_cause() {
    let port = fake_server(b'N', b"").await;
    let e = connect(port, "require").await;
    let text = error_chain(&e);
    assert!(is_tls_fault(&e), "{text}");
    assert!(
        text.starts_with("error performing TLS handshake: server does not support TLS"),
        "{text}"
    );
    // prefer goes on in plain text: what fails then is not TLS.
    let e = connect(port, "prefer").await;
    assert!(!is_tls_fault(&e), "{}", error_chain(&e));
}

#[tokio::test]
async fn a_refused_handshake_is_a_fault_and_a_cut_one_an_outage() {
    let garbage = fake_server(b'S', b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    let e = connect(garbage, "require").await;
    let text = error_chain(&e);
    assert!(is_tls_fault(&e), "{text}");
    assert!(text.len() > TLS_KIND.len() + 2, "the cause is kept: {text}");

    let cut = fake_server(b'S', b"").await;
    let e = connect(cut, "require").await;
    assert!(!is_tls_fault(&e), "{}", error_chain(&e));
}
