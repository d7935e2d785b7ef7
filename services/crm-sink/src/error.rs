//! The sink's failures, by what a retry can change. One type for an attempt, a call and a
//! message: a backend classifies what it met, [`crate::retry::Retrier`] retries what may pass
//! in place, and [`Failure::into_process_error`] tells the runtime how to react.
//!
//! | kind | examples | in place | runtime |
//! |---|---|---|---|
//! | `Retry` | 408, 425, 429, 5xx (but 501, 505), timeouts, refused or reset connections, deadlocks | retried after backoff (at least `Retry-After`) while the batch's time allows | what is still failing is an outage: `Transient` |
//! | `Outage` | the CRM or the database unreachable after the retries, a lost PostgreSQL transaction, `Retry-After` past the batch's time, shutdown | not retried | `Transient`: the batch is aborted and re-read after the runtime's backoff; never dead-lettered |
//! | `Auth` | 401, 403, SQLSTATE class 28 | not retried | `Transient` (the sink stops making progress): `crm_sink_blocked{cause="auth"}` is 1 and an ERROR names the setting |
//! | `Poison` | 400, 404, 409, 413, 414, 422, 431, 501, 505; SQLSTATE 21, 22, 23, 27, 44, 54, P0 | not retried | `Poison`, class `crm-rejected`: the record is dead-lettered |
//! | `Broken` | SQLSTATE 42 and the other classes of our own SQL | not retried | `Fatal`: the process stops; no record is to blame |
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
}

impl BlockCause {
    pub const ALL: [Self; 2] = [Self::Unavailable, Self::Auth];

    pub fn label(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Auth => "auth",
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
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::Retry { reason, .. }
            | Self::Outage { reason, .. }
            | Self::Auth { reason, .. }
            | Self::Poison { reason, .. }
            | Self::Broken { reason, .. } => reason,
        }
    }

    /// What blocks the sink, when this failure is not the record's.
    pub fn block_cause(&self) -> Option<BlockCause> {
        match self {
            Self::Retry { .. } | Self::Outage { .. } => Some(BlockCause::Unavailable),
            Self::Auth { .. } => Some(BlockCause::Auth),
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
            Self::Poison { reason, .. } => ProcessError::poison(REJECTED, reason),
            Self::Broken { reason, .. } => ProcessError::fatal(reason),
        }
    }
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
    }
}
