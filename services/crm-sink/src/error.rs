//! The sink's failures, by what a retry can change. One type for an attempt, a call and a
//! message: a backend classifies what it met, [`crate::retry::Retrier`] retries what may pass
//! in place, and [`Failure::into_process_error`] tells the runtime how to react.
//!
//! | kind | examples | in place | runtime |
//! |---|---|---|---|
//! | `Retry` | 408, 425, 429, 5xx (but 501, 505), timeouts, refused or reset connections, deadlocks | retried after backoff (at least `Retry-After`) while the batch's time allows | what is still failing is an outage: `Transient` |
//! | `Outage` | the CRM or the database unreachable after the retries, a lost PostgreSQL transaction, `Retry-After` past the batch's time, shutdown | not retried | `Transient`: the batch is aborted and re-read after the runtime's backoff; never dead-lettered |
//! | `Auth` | 401, 403, SQLSTATE class 28 | not retried | `Transient` (the sink stops making progress): `crm_sink_blocked{cause="auth"}` is 1 and an ERROR names the setting |
//! | `Tls` | PostgreSQL's TLS handshake refused: the server's certificate not trusted by `database_ca_file` (or the system's roots), expired or not for the URL's host under `verify-full`; a server without TLS under `require` or `verify-*` | not retried | `Transient` (the sink stops making progress): `crm_sink_blocked{cause="tls"}` is 1 and an ERROR names `database_ca_file` and `database_url`'s `sslmode`. At start-up, start-up fails with the same reason |
//! | `Poison` | 400, 404, 409, 413, 414, 422, 431, 501, 505; SQLSTATE 21, 22, 23, 27, 44, 54, P0 | not retried | `Poison`, class `crm-rejected`: the record is dead-lettered |
//! | `Broken` | SQLSTATE 42 and the other classes of our own SQL | not retried | `Fatal`: the process stops; no record is to blame |
//!
//! A TLS refusal is a configuration fault, like refused credentials, not a blip: the same
//! certificate is refused on every attempt, so it is not retried in place and not reported as
//! the CRM being unavailable; but it is fixed outside the process (a CA file, a server's
//! certificate), so the sink waits for the fix rather than stopping.
//!
//! A record cannot make the network fail, so nothing but the CRM's verdict on the record itself
//! reaches the dead-letter topic.

use std::time::Duration;

use mailstream_runtime::ProcessError;

use crate::settings;

/// The dead-letter class of a record the CRM rejected.
pub const REJECTED: &str = "crm-rejected";

/// Which kind of failure a call met (the `class` label of `crm_write_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    Client,
    Server,
    Timeout,
    Connection,
}

impl FailureClass {
    pub fn label(self) -> &'static str {
        match self {
            Self::Client => "4xx",
            Self::Server => "5xx",
            Self::Timeout => "timeout",
            Self::Connection => "connection",
        }
    }
}

/// What blocks the sink while it makes no progress (the `cause` label of `crm_sink_blocked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockCause {
    /// The CRM or the database is unreachable, failing or asking us to wait.
    Unavailable,
    /// The credentials were refused: a configuration fault.
    Auth,
    /// PostgreSQL's TLS handshake was refused (its certificate, or no TLS): a configuration
    /// fault.
    Tls,
}

impl BlockCause {
    pub const ALL: [Self; 3] = [Self::Unavailable, Self::Auth, Self::Tls];

    pub fn label(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Auth => "auth",
            Self::Tls => "tls",
        }
    }
}

/// Why an attempt, a call or a message failed (see the module doc's table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Another attempt may succeed soon; `retry_after` if the server said when.
    Retry {
        class: FailureClass,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The CRM (or our way to it) is down as a whole: no record is to blame.
    Outage { class: FailureClass, reason: String },
    /// The credentials of `setting` (a key of the sink's settings) were refused.
    Auth {
        setting: &'static str,
        reason: String,
    },
    /// PostgreSQL's TLS handshake was refused (see `backend/postgres_tls.rs`); `reason` keeps
    /// the cause (e.g. `invalid peer certificate: UnknownIssuer`).
    Tls { reason: String },
    /// The CRM refused this record; another attempt gets the same answer.
    Poison { class: FailureClass, reason: String },
    /// Our own request is wrong whatever the record: the process stops.
    Broken { class: FailureClass, reason: String },
}

impl Failure {
    pub fn outage(class: FailureClass, reason: impl Into<String>) -> Self {
        Self::Outage {
            class,
            reason: reason.into(),
        }
    }

    /// The class counted in `crm_write_failures_total`.
    pub fn class(&self) -> FailureClass {
        match self {
            Self::Retry { class, .. }
            | Self::Outage { class, .. }
            | Self::Poison { class, .. }
            | Self::Broken { class, .. } => *class,
            Self::Auth { .. } => FailureClass::Client,
            Self::Tls { .. } => FailureClass::Connection,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::Retry { reason, .. }
            | Self::Outage { reason, .. }
            | Self::Auth { reason, .. }
            | Self::Tls { reason }
            | Self::Poison { reason, .. }
            | Self::Broken { reason, .. } => reason,
        }
    }

    /// What blocks the sink, when this failure is not the record's.
    pub fn block_cause(&self) -> Option<BlockCause> {
        match self {
            Self::Retry { .. } | Self::Outage { .. } => Some(BlockCause::Unavailable),
            Self::Auth { .. } => Some(BlockCause::Auth),
            Self::Tls { .. } => Some(BlockCause::Tls),
            Self::Poison { .. } | Self::Broken { .. } => None,
        }
    }

    /// How the runtime reacts. An `Auth` reason names the setting to fix, so `/readyz` (which
    /// shows the last failure) says what to do.
    pub fn into_process_error(self) -> ProcessError {
        match self {
            Self::Retry { reason, .. } | Self::Outage { reason, .. } => {
                ProcessError::transient(reason)
            }
            Self::Auth { setting, reason } => ProcessError::transient(format!(
                "{reason}: the CRM refused our credentials; the sink is blocked until {} is fixed",
                settings::key(setting)
            )),
            Self::Tls { reason } => ProcessError::transient(format!(
                "{reason}: the sink is blocked until the handshake succeeds. {}",
                tls_remedy()
            )),
            Self::Poison { reason, .. } => ProcessError::poison(REJECTED, reason),
            Self::Broken { reason, .. } => ProcessError::fatal(reason),
        }
    }
}

/// What to fix when PostgreSQL's TLS handshake is refused.
pub fn tls_remedy() -> String {
    format!(
        "PostgreSQL's TLS handshake was refused: the server's certificate must chain to the CA \
         of {} (else the system's roots) and, under sslmode=verify-full, name the host of {}; \
         under require and verify-* the server must offer TLS. Fix the CA file, the sslmode \
         or the server's certificate",
        settings::key("database_ca_file"),
        settings::key("database_url")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_record_s_own_faults_are_dead_lettered() {
        let react = |f: Failure| match f.into_process_error() {
            ProcessError::Poison { class, .. } => class,
            ProcessError::Transient(reason) => format!("transient: {reason}"),
            ProcessError::Fatal(_) => "fatal".into(),
        };
        let retry = Failure::Retry {
            class: FailureClass::Server,
            reason: "503".into(),
            retry_after: None,
        };
        assert!(react(retry).starts_with("transient"));
        assert!(
            react(Failure::outage(FailureClass::Connection, "refused")).starts_with("transient")
        );
        let auth = react(Failure::Auth {
            setting: "token",
            reason: "contact-upsert answered 401".into(),
        });
        assert!(
            auth.starts_with("transient") && auth.contains("crm-sink.token"),
            "{auth}"
        );
        assert!(auth.contains("MAILSTREAM_CRM_SINK_TOKEN"), "{auth}");
        let poison = Failure::Poison {
            class: FailureClass::Client,
            reason: "400".into(),
        };
        assert_eq!(react(poison), REJECTED);
        let broken = Failure::Broken {
            class: FailureClass::Client,
            reason: "42P01".into(),
        };
        assert_eq!(react(broken), "fatal");
        let tls = react(Failure::Tls {
            reason: "error performing TLS handshake: invalid peer certificate: UnknownIssuer"
                .into(),
        });
        assert!(
            tls.starts_with("transient")
                && tls.contains("UnknownIssuer")
                && tls.contains("MAILSTREAM_CRM_SINK_DATABASE_CA_FILE"),
            "{tls}"
        );
    }
}
