//! The push: sending sessions that deliver the corpus through ingest's SMTP at the offered
//! rate, retrying each delivery until it is accepted, and accounting for what was sent.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ChaosOptions;
use crate::corpus::{Class, Generator, Templates};
use crate::smtp::{SmtpClient, SmtpError};

/// What was sent, per class, and re-sent after a lost connection.
#[derive(Debug, Default, Clone)]
pub struct Sent {
    pub deliveries: usize,
    pub unique: BTreeSet<String>,
    pub rejected: BTreeSet<String>,
    pub not_an_email: BTreeSet<String>,
    pub duplicates: usize,
    /// Re-sent after the connection died once the whole message was out (maybe accepted).
    pub ambiguous: usize,
    pub ambiguous_not_an_email: usize,
    pub refused_for_good: Vec<String>,
}

/// One sending task: deliveries `w`, `w + sessions`, ... at the offered rate, each retried until
/// ingest answers 250 (a 5xx is recorded and not retried).
pub(super) async fn sender(
    templates: Arc<Templates>,
    o: ChaosOptions,
    run: String,
    w: usize,
    smtp: String,
    t0: Instant,
) -> Sent {
    let mut generator = Generator::new(templates, &run, w);
    generator.not_an_email_every = o.not_an_email_every;
    generator.rejected_every = o.rejected_every;
    let mut sent = Sent::default();
    let mut client: Option<SmtpClient> = None;
    let mut i = w;
    while i < o.emails {
        let due = t0 + Duration::from_secs_f64(i as f64 / o.rate.max(1.0));
        tokio::time::sleep_until(due.into()).await;
        let email = generator.next_email();
        loop {
            if client.is_none() {
                match SmtpClient::connect(&smtp, "chaos.client.test").await {
                    Ok(c) => client = Some(c),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            let Some(c) = client.as_mut() else { continue };
            match c.send(&email.from, &[&email.rcpt], &email.data).await {
                Ok(()) => break,
                Err(SmtpError::Lost { after_dot, .. }) => {
                    client = None;
                    if after_dot {
                        sent.ambiguous += 1;
                        if email.class == Class::NotAnEmail {
                            sent.ambiguous_not_an_email += 1;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(SmtpError::Refused { code, .. }) if code < 500 => {
                    client = None;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    sent.refused_for_good
                        .push(format!("{}: {e}", email.message_id));
                    break;
                }
            }
        }
        sent.deliveries += 1;
        match email.class {
            Class::Unique => {
                sent.unique.insert(email.message_id);
            }
            Class::Duplicate => sent.duplicates += 1,
            Class::Rejected => {
                sent.rejected.insert(email.message_id);
            }
            Class::NotAnEmail => {
                sent.not_an_email.insert(email.message_id);
            }
        }
        i += o.sessions;
    }
    if let Some(c) = client {
        c.quit().await;
    }
    sent
}

pub(super) fn merge(into: &mut Sent, s: Sent) {
    into.deliveries += s.deliveries;
    into.unique.extend(s.unique);
    into.rejected.extend(s.rejected);
    into.not_an_email.extend(s.not_an_email);
    into.duplicates += s.duplicates;
    into.ambiguous += s.ambiguous;
    into.ambiguous_not_an_email += s.ambiguous_not_an_email;
    into.refused_for_good.extend(s.refused_for_good);
}
