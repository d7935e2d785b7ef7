//! The notifier: a lead that reaches a notifying status (`qualified`: the scorer's
//! `thresholds.qualified` in the rules file) sends one notification per channel, to a
//! Slack-compatible incoming webhook (Block Kit, [`message::slack`]) and/or a generic HTTP
//! webhook signed like the HTTP intake's requests ([`message::webhook`],
//! [`mailstream_runtime::signing`]). It consumes `scored` as its own consumer group and writes
//! nothing the rest of the pipeline reads.
//!
//! Once per lead event and channel: each accepted send is recorded durably in `notifications`
//! before the next record is processed ([`ledger`]), and a record is never sent when its
//! channel's record exists. So aborts, rebalances, restarts and operator replays of `scored`
//! notify nothing twice; a crash in the few milliseconds between the channel's acceptance and
//! the record's acknowledgement sends that one notification again (at least once, never
//! silently lost).
//!
//! | the scored record | outcome |
//! |---|---|
//! | status not in `statuses` | nothing |
//! | a participant erased (`mailstream erase`) at or after it was received | skipped, `erased` |
//! | the sender opted out (an unsubscribe answer or a complaint, in the `opt-outs` table) by an email received before it or at the same time | skipped, `opted-out` |
//! | received more than `max_age_secs` ago (a backfill, a replay of old events) | skipped, `stale` |
//! | the channel's record exists | `already-sent` |
//! | `dry_run` | `dry-run`: logged (ids only), nothing sent or recorded |
//! | the channel accepts it | `sent`, recorded |
//! | the channel is down, throttling, times out (past the retries in place) | the batch is retried after the runtime's backoff (channels that took it are not sent to again) |
//! | the channel refuses our credentials or is gone (401, 403, 404, 410) | the same, `notifier_blocked{channel}` 1 and an ERROR naming the key |
//! | the channel refuses this message (other 4xx) | dead-lettered to `scored.dlq`, class `notify-rejected` |
//!
//! Opt-outs: the CRM sink writes each address an email asks to remove (an unsubscribe answer,
//! a complaint naming a recipient: `services/crm-sink/src/backend/signals.rs`) to the `opt-outs`
//! table with the email's `received_at`; a lead from that sender received from then on is not
//! notified. The table is followed as it grows, so a lead processed before the opt-out reached
//! it is notified (the two emails raced through different partitions); a lead received before
//! the opt-out is never suppressed by it, whatever the order they are processed in. The
//! unsubscribe or complaint email itself is `excluded` by the scorer and never notifies.

pub mod deliver;
pub mod events;
pub mod ledger;
pub mod message;
pub mod settings;

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mailstream_runtime::erasure::Erasures;
use mailstream_runtime::records::{OptOut, ScoredLead};
use mailstream_runtime::table::GlobalTable;
use mailstream_runtime::{
    BuildContext, Incoming, Outputs, ProcessError, Processor, RestoreContext, RuntimeError,
    Topology,
};

use deliver::{Channel, Kind, Sender};
use events::NotifierMetrics;
use ledger::{Ledger, Notification};
use message::Facts;
pub use settings::NotifierSettings;

/// The opt-outs table topic (written by the CRM sink).
pub const OPT_OUTS: &str = "opt-outs";

/// The notifier processor.
pub struct Notifier {
    settings: NotifierSettings,
    channels: Vec<Channel>,
    sender: Sender,
    ledger: Ledger,
    erasures: Option<Erasures>,
    /// Addresses that asked to be removed (the CRM sink's `opt-outs` table).
    opt_outs: Arc<GlobalTable<OptOut>>,
    metrics: NotifierMetrics,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Builds the notifier: registers its metrics, connects the record producer, follows the
/// erasures and opt-outs tables.
pub async fn build(
    ctx: BuildContext,
    settings: NotifierSettings,
) -> Result<Notifier, RuntimeError> {
    let metrics = NotifierMetrics::new(&ctx.metrics.registry)?;
    let topology = Topology::embedded()?;
    let ledger = Ledger::start(&ctx.config, &ctx.naming(), &topology).await?;
    let erasures = Erasures::start(&ctx.config, &ctx.naming(), ctx.shutdown.clone()).await?;
    let opt_outs =
        GlobalTable::start(&ctx.config, &ctx.naming(), OPT_OUTS, ctx.shutdown.clone()).await?;
    let sender = Sender::new(&settings, ctx.shutdown.clone()).map_err(RuntimeError::Processor)?;
    let channels = deliver::channels(&settings);
    let names: Vec<&str> = channels.iter().map(|c| c.kind.name()).collect();
    tracing::info!(channels = ?names, dry_run = settings.dry_run, statuses = ?settings.statuses, "notifier ready");
    Ok(Notifier {
        settings,
        channels,
        sender,
        ledger,
        erasures,
        opt_outs,
        metrics,
    })
}

/// The body a channel is sent.
pub fn body(kind: Kind, facts: &Facts) -> Vec<u8> {
    let value = match kind {
        Kind::Slack => message::slack(facts),
        Kind::Webhook => message::webhook(facts),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

/// `mailstream notify test`: sends a sample notification to each configured channel (or the one
/// named), returning each channel's answer. Nothing is recorded.
pub async fn test_channels(
    settings: &NotifierSettings,
    only: Option<&str>,
) -> Vec<(&'static str, Result<String, String>)> {
    let (_trigger, shutdown) = mailstream_runtime::Shutdown::new();
    let sender = match Sender::new(settings, shutdown) {
        Ok(s) => s,
        Err(e) => return vec![("all", Err(e))],
    };
    let facts = Facts::of(&sample_lead(), settings);
    let mut out = Vec::new();
    for channel in deliver::channels(settings) {
        let name = channel.kind.name();
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let body = body(channel.kind, &facts);
        let deadline = Instant::now() + sender.request_timeout * sender.max_attempts * 2;
        let sent = sender
            .send(&channel, &facts.event_id, &body, deadline, |_, _, _| {})
            .await;
        out.push((
            name,
            sent.map(|s| format!("accepted (HTTP {}, {} attempt(s))", s.status, s.attempts))
                .map_err(|e| format!("{}: {}", e.class(), e.reason())),
        ));
    }
    out
}

/// The lead `mailstream notify test` describes.
pub fn sample_lead() -> ScoredLead {
    use mailstream_runtime::records::{Address, Routing, RuleHit};
    let mut lead = ScoredLead {
        message_id: "mailstream-notify-test@mailstream.invalid".into(),
        received_at: now_ms(),
        lead_key: "test-lead".into(),
        sender_email: Some("test.sender@example.com".into()),
        sender_domain: Some("example.com".into()),
        subject: Some("Test notification from mailstream".into()),
        score: 99,
        status: "qualified".into(),
        breakdown: vec![RuleHit {
            rule_id: "notify-test".into(),
            points: 99,
            evidence: "mailstream notify test".into(),
        }],
        rules_version: "test".into(),
        routing: Some(Routing {
            intent: "sales".into(),
            ..Routing::default()
        }),
        ..ScoredLead::default()
    };
    lead.resolved.email.from = Some(Address {
        email: "test.sender@example.com".into(),
        name: Some("Test Sender".into()),
    });
    lead
}

impl Notifier {
    /// Why `lead` is not notified, if it is not.
    fn skip_reason(&self, lead: &ScoredLead) -> Option<&'static str> {
        if self
            .erasures
            .as_ref()
            .is_some_and(|e| e.erased(&lead.resolved.email))
        {
            return Some("erased");
        }
        let sender = lead.sender_email.as_deref().map(str::to_ascii_lowercase);
        if sender
            .and_then(|s| self.opt_outs.get(&s))
            .is_some_and(|o| o.opted_out_at <= lead.received_at)
        {
            return Some("opted-out");
        }
        let max_age = self.settings.max_age()?;
        let age = now_ms().saturating_sub(lead.received_at);
        (age > max_age.as_millis() as i64).then_some("stale")
    }
}

impl Processor for Notifier {
    type Input = ScoredLead;
    const NAME: &'static str = "notifier";

    async fn process(
        &mut self,
        record: Incoming<ScoredLead>,
        _out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        let lead = record.value;
        if !self.settings.statuses.contains(&lead.status) {
            return Ok(());
        }
        let partition = record.meta.partition;
        let facts = Facts::of(&lead, &self.settings);
        let pending: Vec<Channel> = self
            .channels
            .iter()
            .filter(|c| {
                let key = ledger::event_key(c.kind.name(), &facts.event_id);
                let done = self.ledger.contains(partition, &key);
                if done {
                    events::already_sent(&self.metrics, c.kind, &lead.message_id);
                }
                !done
            })
            .cloned()
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if let Some(reason) = self.skip_reason(&lead) {
            events::skipped(&self.metrics, &lead.message_id, reason);
            return Ok(());
        }
        for channel in pending {
            let body = body(channel.kind, &facts);
            if self.settings.dry_run {
                events::would_send(&self.metrics, channel.kind, &lead.message_id, body.len());
                continue;
            }
            let metrics = self.metrics.clone();
            let kind = channel.kind;
            let sent = self
                .sender
                .send(
                    &channel,
                    &facts.event_id,
                    &body,
                    record.meta.deadline,
                    |error, attempt, retrying| {
                        events::failed(&metrics, kind, error, attempt, retrying)
                    },
                )
                .await
                .map_err(|e| e.into_process_error(kind))?;
            let now = now_ms();
            events::sent(
                &self.metrics,
                kind,
                &lead.message_id,
                sent.attempts,
                now - lead.received_at,
            );
            let notification = Notification {
                event_key: ledger::event_key(kind.name(), &facts.event_id),
                channel: kind.name().into(),
                message_id: lead.message_id.clone(),
                lead_key: lead.lead_key.clone(),
                score: lead.score,
                received_at: lead.received_at,
                sent_at: now,
                attempts: i32::try_from(sent.attempts).unwrap_or(i32::MAX),
                status: i32::from(sent.status),
            };
            self.ledger
                .record(partition, notification, record.meta.deadline)
                .await?;
        }
        Ok(())
    }

    async fn on_assigned(
        &mut self,
        partitions: &[i32],
        ctx: &RestoreContext<'_>,
    ) -> Result<(), ProcessError> {
        for &partition in partitions {
            self.ledger.restore(partition, ctx).await?;
            tracing::info!(
                partition,
                notifications = self.ledger.len(partition),
                "sent notifications read back"
            );
        }
        Ok(())
    }

    fn on_revoked(&mut self, partitions: &[i32]) {
        for &partition in partitions {
            self.ledger.forget(partition);
        }
    }

    async fn before_commit(&mut self, deadline: Instant) -> Result<(), ProcessError> {
        self.ledger.flush(deadline).await
    }
}
