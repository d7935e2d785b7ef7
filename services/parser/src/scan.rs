//! Malware scanning of attachments with ClamAV's clamd, before anything is stored.
//!
//! Each attachment's bytes are streamed to clamd (`INSTREAM`, over TCP or a Unix socket, by the
//! `clamav-client` crate) and clamd's one-line reply is read:
//!
//! | reply | verdict | what the parser does |
//! |---|---|---|
//! | `stream: OK` | [`Verdict::Clean`] | stores the attachment as usual |
//! | `stream: <signature> FOUND` | [`Verdict::Infected`] | does not store it; the record names the signature (`malware`) |
//! | `INSTREAM size limit exceeded. ERROR` | [`Verdict::TooLarge`] | does not store it (it could not be scanned); the record says why in `warnings` |
//! | no answer, refused, timed out, any other error | transient | the batch is retried: an attachment is never stored unscanned |
//!
//! clamd's `StreamMaxLength` (25 MB by default) should be at least the largest message ingest
//! accepts, so that no attachment is left unscanned for its size.

use std::path::PathBuf;
use std::time::Duration;

use clamav_client::tokio::{Socket, Tcp, scan_buffer};
use mailstream_runtime::ProcessError;

/// What clamd said of one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// The signature clamd matched (`Eicar-Test-Signature`, `Win.Trojan...`).
    Infected(String),
    /// Larger than clamd's `StreamMaxLength`: not scanned.
    TooLarge,
}

impl Verdict {
    /// The metric label of the verdict.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Clean => "clean",
            Verdict::Infected(_) => "infected",
            Verdict::TooLarge => "too-large",
        }
    }
}

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    Tcp(String),
    Unix(PathBuf),
}

/// A client of one clamd.
#[derive(Debug, Clone)]
pub struct Scanner {
    address: Address,
    /// The whole scan of one attachment (connect, send, reply) takes at most this long.
    timeout: Duration,
}

impl Scanner {
    /// A scanner of `address` (`tcp://host:port` or `unix:///path/to/clamd.ctl`), or why the
    /// address is not one.
    pub fn new(address: &str, timeout: Duration) -> Result<Self, String> {
        let address = if let Some(host_port) = address.strip_prefix("tcp://") {
            let port = host_port
                .rsplit_once(':')
                .map(|(_, port)| port.parse::<u16>());
            if !matches!(port, Some(Ok(p)) if p > 0) {
                return Err(format!(
                    "`{address}`: a TCP address needs a host and a port (tcp://127.0.0.1:3310)"
                ));
            }
            Address::Tcp(host_port.trim_end_matches('/').to_string())
        } else if let Some(path) = address.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "`{address}`: a socket path must be absolute (unix:///run/clamav/clamd.ctl)"
                ));
            }
            Address::Unix(PathBuf::from(path))
        } else {
            return Err(format!(
                "`{address}`: expected tcp://HOST:PORT or unix:///PATH"
            ));
        };
        Ok(Self { address, timeout })
    }

    /// Scans `bytes`. Anything but a verdict is transient: clamd down, slow or confused never
    /// lets an attachment through unscanned.
    pub async fn scan(&self, bytes: &[u8]) -> Result<Verdict, ProcessError> {
        let reply = match &self.address {
            Address::Tcp(host_port) => {
                let connection = Tcp {
                    host_address: host_port.as_str(),
                };
                tokio::time::timeout(self.timeout, scan_buffer(bytes, connection, None)).await
            }
            Address::Unix(path) => {
                let connection = Socket {
                    socket_path: path.as_path(),
                };
                tokio::time::timeout(self.timeout, scan_buffer(bytes, connection, None)).await
            }
        };
        let reply = match reply {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(self.unavailable(e)),
            Err(_) => return Err(self.unavailable(format!("no reply within {:?}", self.timeout))),
        };
        verdict(&reply).map_err(|reason| self.unavailable(reason))
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> ProcessError {
        let at = match &self.address {
            Address::Tcp(host_port) => host_port.clone(),
            Address::Unix(path) => path.display().to_string(),
        };
        ProcessError::transient(format!("clamd at {at}: {reason}"))
    }
}

/// The verdict in clamd's reply to `INSTREAM` (`stream: OK`, `stream: NAME FOUND`, `MESSAGE
/// ERROR`; NUL-terminated), or why there is none.
fn verdict(reply: &[u8]) -> Result<Verdict, String> {
    let text = String::from_utf8_lossy(reply);
    let text = text.trim_end_matches(['\0', '\n', '\r']).trim();
    if let Some(error) = text.strip_suffix(" ERROR") {
        return if error.contains("size limit exceeded") {
            Ok(Verdict::TooLarge)
        } else {
            Err(format!("clamd failed the scan: {error}"))
        };
    }
    let Some(result) = text.strip_prefix("stream: ") else {
        return Err(format!("unexpected reply `{text}`"));
    };
    if result == "OK" {
        return Ok(Verdict::Clean);
    }
    match result.strip_suffix(" FOUND") {
        Some(signature) if !signature.is_empty() => Ok(Verdict::Infected(signature.to_string())),
        _ => Err(format!("unexpected reply `{text}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_of_reply() {
        assert_eq!(verdict(b"stream: OK\0"), Ok(Verdict::Clean));
        assert_eq!(
            verdict(b"stream: Eicar-Test-Signature FOUND\0"),
            Ok(Verdict::Infected("Eicar-Test-Signature".into()))
        );
        assert_eq!(
            verdict(b"INSTREAM size limit exceeded. ERROR\0"),
            Ok(Verdict::TooLarge)
        );
        for bad in [
            &b"Can't allocate memory ERROR\0"[..],
            b"",
            b"stream: FOUND\0",
            b"PONG\0",
        ] {
            assert!(verdict(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn refuses_addresses_it_cannot_use() {
        let t = Duration::from_secs(1);
        assert!(Scanner::new("tcp://127.0.0.1:3310", t).is_ok());
        assert!(Scanner::new("unix:///run/clamav/clamd.ctl", t).is_ok());
        for bad in [
            "127.0.0.1:3310",
            "tcp://127.0.0.1",
            "tcp://h:0",
            "unix://relative",
            "http://x:1",
        ] {
            assert!(Scanner::new(bad, t).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_clamd_that_is_not_there_is_transient() {
        let scanner = Scanner::new("tcp://127.0.0.1:1", Duration::from_secs(2)).expect("address");
        let error = scanner
            .scan(b"bytes")
            .await
            .expect_err("nothing listens on port 1");
        assert!(
            matches!(error, ProcessError::Transient(ref r) if r.contains("127.0.0.1:1")),
            "{error}"
        );
    }
}
