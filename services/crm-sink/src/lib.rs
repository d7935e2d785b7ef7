//! The CRM sink: each `scored` record is written into the CRM, effectively once, and what was
//! written goes to `crm-results` (keyed by message id, for audit); contacts it creates go back to
//! the `contacts` table topic, so the resolver knows them from then on; an address that asks to
//! be removed (an unsubscribe answer, a complaint) goes to the `opt-outs` table topic, which the
//! notifier reads. An email of ours (`resolved.outbound`, a journal or BCC copy; excluded, so
//! not written unless `write_excluded`) is recorded as the first response to the inbound emails
//! of its thread ([`CrmBackend::record_response`]; PostgreSQL's `first_response_at`,
//! `crm_first_response_seconds`).
//!
//! Effectively once: the runtime processes a record inside an open Kafka transaction and commits
//! the input offsets with the outputs only after the backend's writes are durable (when `write`
//! returns for the HTTP backends; at `before_commit`, one database transaction per batch, for
//! PostgreSQL). A crash in between replays the batch, and every write is idempotent on
//! `message_id` (see [`backend`]), so the replay changes nothing. Resetting the group to the
//! earliest offset and running again changes no row.
//!
//! How a record ends:
//!
//! | case | outcome (crm-results) | runtime |
//! |---|---|---|
//! | written, something changed | `written` | committed |
//! | a replay, everything was there | `unchanged` | committed |
//! | a participant on the `never_log` list ([`never_log`]) | `skipped`, reason `never-log` | committed |
//! | a participant erased (`mailstream erase`) after the email was received: a replay of their mail ([`mailstream_runtime::erasure`]) | `skipped`, reason `erased` | committed |
//! | excluded email (auto-reply, bounce, list) and `write_excluded` off | `skipped`, reason `excluded` | committed |
//! | `dry_run` | `dry-run` (the writes are logged, none made) | committed |
//! | CRM rejected it (non-retriable 4xx, a constraint) | none | dead-lettered, class `crm-rejected` |
//! | CRM unavailable (429, 5xx, timeouts, refused connections past the retries in place, `Retry-After`), shutdown | none | batch aborted and retried after the runtime's backoff; `crm_sink_blocked{cause="unavailable"}`; `/readyz` not ready past `stall_timeout_ms` |
//! | credentials refused (401, 403, SQLSTATE 28) | none | the same, `crm_sink_blocked{cause="auth"}` and an ERROR naming the setting (`token`, `database_url`) |
//! | PostgreSQL's TLS handshake refused (a certificate the CA file does not vouch for, a server without TLS under `require`) | none | at start-up, start-up fails; later the same as credentials, `crm_sink_blocked{cause="tls"}` and an ERROR naming `database_ca_file` and `database_url` |
//! | our own request is wrong (SQLSTATE 42, ...) | none | the process stops |
//!
//! An outage is never dead-lettered (ARCHITECTURE invariant 4): the stream stalls and the lag
//! grows until the CRM answers again. When a batch fails part-way, the HTTP backends have
//! already written its earlier records; reading the batch again repeats their calls with the
//! same idempotency keys, which the CRM replays (`Idempotent-Replayed`) without writing twice.
//!
//! Modules: [`settings`], [`never_log`] (addresses and domains never written), [`error`] (how
//! failures are classified), [`backend`] (plan, trait, PostgreSQL, REST, HubSpot), [`retry`]
//! (retries in place, `Retry-After`, rate limit), [`events`] (metrics and logs).

pub mod backend;
pub mod error;
pub mod events;
pub mod helpdesk;
pub mod never_log;
pub mod retry;
pub mod settings;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use mailstream_runtime::config::Secret;
use mailstream_runtime::erasure::Erasures;
use mailstream_runtime::records::{Contact, CrmResult, OptOut, ScoredLead};
use mailstream_runtime::{BuildContext, Incoming, Outputs, ProcessError, Processor, RuntimeError};

pub use backend::erase::{CrmErased, Expired, Person};
use backend::hubspot::HubspotBackend;
use backend::links::AttachmentLinks;
use backend::postgres::PostgresBackend;
pub use backend::postgres_purge::DeletedRows;
use backend::postgres_tls::{Connector, Target};
use backend::rest::{Endpoints, HttpClient, RestBackend};
use backend::signals::{ContactSignal, Signals};
use backend::tryton::{TrytonBackend, TrytonServer};
use backend::{AnyBackend, CrmBackend, Response, WritePlan};
use error::Failure;
use events::{MessageOutcome, SinkMetrics};
use helpdesk::Helpdesk;
use never_log::NeverLog;
use retry::{Limiter, Retrier};
pub use settings::{Backend, CrmSinkSettings};

/// The audit topic.
pub const RESULTS: &str = "crm-results";
/// The contacts table topic (compacted, keyed by lower-cased email).
pub const CONTACTS: &str = "contacts";
/// The opt-outs table topic (compacted, keyed by lower-cased email).
pub const OPT_OUTS: &str = "opt-outs";
/// The crm-results reason of a lead whose email an erased person took part in.
pub const ERASED: &str = "erased";

/// The CRM sink processor.
pub struct CrmSink {
    /// `None` in a dry run: nothing is connected, nothing written.
    backend: Option<AnyBackend>,
    /// Where support leads open tickets; `None` without `helpdesk_url` (and in a dry run).
    helpdesk: Option<Helpdesk>,
    backend_name: &'static str,
    write_excluded: bool,
    never_log: NeverLog,
    /// People erased (`mailstream erase`); none without an `erasure_key`.
    erasures: Option<Erasures>,
    metrics: SinkMetrics,
    /// Per-message outcomes of the open transaction, counted when it commits.
    pending: Vec<MessageOutcome>,
    /// The waits (ms) of inbound emails the open batch answered first, observed at commit.
    answered: Vec<i64>,
    /// Messages whose activity a write created and whose result has not committed yet (kept
    /// across aborts, so the attempt that commits knows it is the first write).
    created: HashSet<String>,
}

/// Bound of [`CrmSink::created`].
const MAX_UNCOMMITTED_CREATED: usize = 100_000;

/// Builds the sink: validates the settings against the runtime's, registers the metrics,
/// connects the backend (PostgreSQL: and applies the migrations). Nothing is connected in a dry
/// run.
pub async fn build(ctx: BuildContext, settings: CrmSinkSettings) -> Result<CrmSink, RuntimeError> {
    let never_log = settings.never_log().map_err(|entries| {
        RuntimeError::Config(
            entries
                .into_iter()
                .map(|what| format!("{}: {what}", settings::key("never_log")))
                .collect(),
        )
    })?;
    let metrics = SinkMetrics::new(&ctx.metrics.registry)?;
    let erasures = Erasures::start(&ctx.config, &ctx.naming(), ctx.shutdown.clone()).await?;
    let retrier = Retrier {
        policy: settings.retry_policy(),
        limiter: Limiter::new(settings.rate(), settings.burst(), settings.max_concurrency),
        request_timeout: settings.request_timeout(),
        metrics: metrics.clone(),
        shutdown: ctx.shutdown.clone(),
    };
    let backend_name = settings.backend.name();
    if settings.backoff_base_ms != settings::DEPRECATED_BACKOFF_BASE_MS {
        tracing::warn!(
            key = %settings::key("backoff_base_ms"),
            "deprecated and ignored: the backoff between attempts starts at 100 ms"
        );
    }
    let helpdesk = match settings.helpdesk_url.as_deref().map(str::trim) {
        Some(url) if !url.is_empty() && !settings.dry_run => {
            let http =
                HttpClient::new(url.into(), settings.helpdesk_token.clone(), retrier.clone())
                    .map_err(RuntimeError::Processor)?
                    .classifying(helpdesk::helpdesk_failure);
            Some(Helpdesk {
                http,
                tickets_path: settings.helpdesk_tickets_path.clone(),
                intents: settings.ticket_intents.clone(),
            })
        }
        _ => None,
    };
    let backend = if settings.dry_run {
        tracing::info!(
            backend = backend_name,
            "dry run: writes are logged, none made"
        );
        None
    } else {
        Some(connect(&settings, retrier, ctx.config.blob_options()).await?)
    };
    Ok(CrmSink {
        backend,
        helpdesk,
        backend_name,
        write_excluded: settings.write_excluded,
        never_log,
        erasures,
        metrics,
        pending: Vec::new(),
        answered: Vec::new(),
        created: HashSet::new(),
    })
}

/// The configured backend; `blob_options` (the runtime's `blob_store`) sign the REST backend's
/// attachment links.
async fn connect(
    settings: &CrmSinkSettings,
    retrier: Retrier,
    blob_options: Vec<(String, String)>,
) -> Result<AnyBackend, RuntimeError> {
    let http = |retrier| {
        HttpClient::new(
            settings.http_base_url().unwrap_or_default(),
            settings.token.clone(),
            retrier,
        )
        .map_err(RuntimeError::Processor)
    };
    Ok(match settings.backend {
        Backend::Rest => AnyBackend::Rest(RestBackend {
            http: http(retrier)?,
            endpoints: Endpoints {
                contacts: settings.contacts_path.clone(),
                deals: settings.deals_path.clone(),
                activities: settings.activities_path.clone(),
                attachments: settings.attachments_path.clone(),
            },
            links: AttachmentLinks::new(settings.attachment_url_expiry_secs, blob_options),
        }),
        Backend::Hubspot => AnyBackend::Hubspot(HubspotBackend {
            http: http(retrier)?,
            message_id_property: settings.hubspot_message_id_property.clone(),
        }),
        Backend::Tryton => {
            let server = TrytonServer {
                base_url: settings.http_base_url().unwrap_or_default(),
                database: settings.tryton_database.clone().unwrap_or_default(),
                key: Secret::new(settings.token.clone().unwrap_or_default()),
            };
            let backend = TrytonBackend::connect(server, retrier).await.map_err(|e| {
                RuntimeError::Processor(format!(
                    "Tryton ({}, {}, {}): {}",
                    settings::key("base_url"),
                    settings::key("tryton_database"),
                    settings::key("token"),
                    e.reason()
                ))
            })?;
            tracing::info!(company = backend.company_id(), "Tryton CRM ready");
            AnyBackend::Tryton(backend)
        }
        Backend::Postgres => {
            let setting = |(name, what): (&str, String)| {
                RuntimeError::Processor(format!("{}: {what}", settings::key(name)))
            };
            let target = settings.postgres_target().map_err(setting)?;
            let tls = Connector::new(&target).map_err(setting)?;
            let sslmode = target.mode.name();
            let (backend, applied) =
                PostgresBackend::start(target, tls, settings.schema.clone(), retrier)
                    .await
                    .map_err(|e| {
                        RuntimeError::Processor(format!(
                            "PostgreSQL ({}, schema {}): {e}",
                            settings::key("database_url"),
                            settings.schema
                        ))
                    })?;
            tracing::info!(schema = %settings.schema, sslmode, migrations_applied = ?applied, "PostgreSQL CRM ready");
            AnyBackend::Postgres(Box::new(backend))
        }
    })
}

/// Deletes what the sink wrote for `person` in the configured CRM (`mailstream erase`), by the
/// backend's own erase beside it ([`backend::erase`]): PostgreSQL's rows in one transaction,
/// the HTTP CRMs' records through their APIs with the sink's retries and rate limit. A dry run
/// (`execute` false) changes nothing and reports exactly what `--execute` deletes (PostgreSQL
/// deletes and rolls back; the HTTP CRMs look up only).
pub async fn erase(
    settings: &CrmSinkSettings,
    person: &Person,
    execute: bool,
) -> Result<CrmErased, String> {
    if let Some((target, tls, timeout)) = admin_session(settings)? {
        let erased = backend::postgres_purge::erase(
            &target,
            &tls,
            &settings.schema,
            timeout,
            &person.addresses,
            &person.message_ids,
            execute,
        );
        return erased.await.map(CrmErased::from);
    }
    let (_trigger, backend) = operator_backend(settings).await?;
    let name = settings.backend.name();
    let failed = |e: Failure| format!("{name} CRM: {}", e.reason());
    let deadline = backend::erase::http_deadline();
    match backend {
        AnyBackend::Rest(b) => b.erase(person, execute, deadline).await.map_err(failed),
        AnyBackend::Hubspot(b) => b.erase(person, execute, deadline).await.map_err(failed),
        AnyBackend::Tryton(b) => b.erase(person, execute, deadline).await.map_err(failed),
        AnyBackend::Postgres(_) => Err("PostgreSQL erases through its admin session".into()),
    }
}

/// Deletes what the sink wrote for every message whose lead has one of `statuses` and was
/// received before `before` (`mailstream retention run`); contacts stay. A dry run changes
/// nothing and counts exactly what `--execute` deletes; a second run finds nothing.
///
/// PostgreSQL finds them in its `leads` table and deletes their rows in one transaction like
/// [`erase`]'s; Tryton searches its own notes ([`backend::tryton`]'s `tryton_expire.rs`): both
/// find every such message themselves. The REST CRM and HubSpot cannot be searched so: `listed` names the
/// messages (one [`Person`] each, with its message id and activity id only), as the command
/// found them in `crm-results` and `scored`, and each goes by the backend's erase of exactly
/// that message (the REST CRM's activity, HubSpot's email engagement).
pub async fn expire(
    settings: &CrmSinkSettings,
    statuses: &[String],
    before: chrono::DateTime<chrono::Utc>,
    listed: &[Person],
    execute: bool,
) -> Result<Expired, String> {
    if let Some((target, tls, timeout)) = admin_session(settings)? {
        let expired = backend::postgres_purge::expire(
            &target,
            &tls,
            &settings.schema,
            timeout,
            statuses,
            before,
            execute,
        );
        return expired.await;
    }
    let (_trigger, backend) = operator_backend(settings).await?;
    let name = settings.backend.name();
    let failed = |e: Failure| format!("{name} CRM: {}", e.reason());
    let deadline = backend::erase::http_deadline();
    let kind = match &backend {
        AnyBackend::Tryton(b) => {
            let expired = b.expire(statuses, before, execute, deadline).await;
            return expired.map_err(failed);
        }
        AnyBackend::Hubspot(_) => "emails",
        _ => "activities",
    };
    let mut expired = Expired {
        rows: CrmErased::new(name, &[kind]),
        ..Expired::default()
    };
    for message in listed {
        let erased = match &backend {
            AnyBackend::Rest(b) => b.erase(message, execute, deadline).await,
            AnyBackend::Hubspot(b) => b.erase(message, execute, deadline).await,
            _ => return Err(format!("{name} CRM: expires by its own search")),
        };
        let erased = erased.map_err(failed)?;
        let message_id = message.message_ids.first().map_or("", String::as_str);
        expired.add(message_id, &erased);
    }
    Ok(expired)
}

/// The configured HTTP CRM, connected for an operator command (erase, retention) with the
/// sink's retries and rate limit, and the trigger that keeps its shutdown signal quiet while
/// held.
async fn operator_backend(
    settings: &CrmSinkSettings,
) -> Result<(mailstream_runtime::shutdown::ShutdownTrigger, AnyBackend), String> {
    let (trigger, shutdown) = mailstream_runtime::Shutdown::new();
    let metrics = SinkMetrics::new(&prometheus::Registry::new()).map_err(|e| e.to_string())?;
    let retrier = Retrier {
        policy: settings.retry_policy(),
        limiter: Limiter::new(settings.rate(), settings.burst(), settings.max_concurrency),
        request_timeout: settings.request_timeout(),
        metrics,
        shutdown,
    };
    // Operator commands write no attachments: no links to sign.
    let backend = connect(settings, retrier, Vec::new()).await;
    Ok((trigger, backend.map_err(|e| e.to_string())?))
}

/// Where an operator command deletes rows: the PostgreSQL target, its TLS and a statement
/// bound longer than a write's (a purge touches many rows); `None` for the other backends.
fn admin_session(
    settings: &CrmSinkSettings,
) -> Result<Option<(Target, Connector, Duration)>, String> {
    if settings.backend != Backend::Postgres {
        return Ok(None);
    }
    let setting = |(name, what): (&str, String)| format!("{}: {what}", settings::key(name));
    let target = settings.postgres_target().map_err(setting)?;
    let tls = Connector::new(&target).map_err(setting)?;
    let timeout = settings.request_timeout().max(Duration::from_secs(30));
    Ok(Some((target, tls, timeout)))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl CrmSink {
    /// A write failed: counted as blocking the sink when it is not the record's fault, and
    /// turned into the runtime's reaction.
    fn failed(&self, failure: Failure) -> ProcessError {
        events::blocked(&self.metrics, &failure);
        failure.into_process_error()
    }

    fn result(&self, lead: &ScoredLead, outcome: &str) -> CrmResult {
        CrmResult {
            message_id: lead.message_id.clone(),
            backend: self.backend_name.into(),
            outcome: outcome.into(),
            attempts: 0,
            written_at: lead.received_at,
            ..CrmResult::default()
        }
    }

    /// Nothing written for `lead`, and why (`excluded`, `never-log`) in its result.
    fn skip(
        &mut self,
        lead: &ScoredLead,
        reason: &str,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        events::skipped(&lead.message_id, reason, &lead.status);
        self.pending
            .push(MessageOutcome::nothing_written(&lead.message_id, "skipped"));
        let result = CrmResult {
            reason: Some(reason.into()),
            ..self.result(lead, "skipped")
        };
        out.send(RESULTS, lead.message_id.clone(), result);
        Ok(())
    }

    fn dry_run(
        &mut self,
        lead: &ScoredLead,
        plan: &WritePlan,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        for (op, ids) in plan.operations() {
            events::would_write(&op, &plan.message_id, &ids);
        }
        self.pending
            .push(MessageOutcome::nothing_written(&lead.message_id, "dry-run"));
        let result = CrmResult {
            contact_id: plan.contact.as_ref().map(|c| c.contact_id.clone()),
            contact_created: plan.contact.as_ref().is_some_and(|c| c.create),
            account_id: plan.account.as_ref().map(|a| a.account_id.clone()),
            deal_id: plan.deal.as_ref().map(|d| d.deal_id.clone()),
            ..self.result(lead, "dry-run")
        };
        out.send(RESULTS, lead.message_id.clone(), result);
        Ok(())
    }
}

impl Processor for CrmSink {
    type Input = ScoredLead;
    const NAME: &'static str = settings::SECTION;

    async fn process(
        &mut self,
        record: Incoming<ScoredLead>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        let deadline = record.meta.deadline;
        let lead = record.value;
        if self.never_log.matches_lead(&lead) {
            return self.skip(&lead, never_log::REASON, out);
        }
        if self
            .erasures
            .as_ref()
            .is_some_and(|e| e.erased(&lead.resolved.email))
        {
            return self.skip(&lead, ERASED, out);
        }
        // What the email says about contacts (a hard bounce, an opt-out, a departure) is
        // recorded whether or not the email itself is written.
        let signals = Signals::of(&lead);
        if !signals.is_empty()
            && let Some(backend) = self.backend.as_mut()
        {
            match backend.record_signals(&signals, deadline).await {
                Ok(changed) => events::contact_signals(&self.metrics, &lead.message_id, &changed),
                Err(failure) => return Err(self.failed(failure)),
            }
            // And in the opt-outs table, whatever the backend: the notifier reads it.
            for signal in &signals.list {
                if let ContactSignal::OptedOut { email, reason } = signal {
                    let opt_out = OptOut {
                        email: email.clone(),
                        opted_out_at: lead.received_at,
                        reason: reason.to_string(),
                        message_id: lead.message_id.clone(),
                    };
                    out.send(OPT_OUTS, email.clone(), opt_out);
                }
            }
        }
        // An email of ours answers its thread's inbound emails, whether or not it is written.
        if let Some(response) = Response::of(&lead)
            && let Some(backend) = self.backend.as_mut()
        {
            match backend.record_response(&response, deadline).await {
                Ok(waits) => self.answered.extend(waits),
                Err(failure) => return Err(self.failed(failure)),
            }
        }
        if lead.status == "excluded" && !self.write_excluded {
            return self.skip(&lead, "excluded", out);
        }
        let plan = WritePlan::from_scored(&lead, record.meta.offset);
        let Some(backend) = self.backend.as_mut() else {
            return self.dry_run(&lead, &plan, out);
        };
        let mut report = match backend.write(&plan, deadline).await {
            Ok(report) => report,
            Err(failure) => {
                if matches!(failure, Failure::Poison { .. }) {
                    self.pending.push(MessageOutcome::nothing_written(
                        &plan.message_id,
                        "dead-lettered",
                    ));
                }
                return Err(self.failed(failure));
            }
        };
        events::unblocked(&self.metrics);
        self.answered.extend(report.first_response_ms);
        if report.activity_created {
            events::activity_created(&self.metrics, self.backend_name, &plan.message_id);
            if self.created.len() >= MAX_UNCOMMITTED_CREATED {
                // Messages of aborted batches that another instance took over: forget them.
                self.created.clear();
            }
            self.created.insert(plan.message_id.clone());
        }
        for follow_up in &report.follow_ups {
            events::follow_up_recorded(self.backend_name, &plan.message_id, follow_up);
        }
        let mut ticket_id = None;
        if let Some(helpdesk) = self.helpdesk.as_ref().filter(|h| h.wants(&lead)) {
            match helpdesk.open(&lead, deadline).await {
                Ok(ticket) => {
                    events::ticket(&self.metrics, &lead.message_id, &ticket.id, ticket.new);
                    report.attempts += ticket.attempts;
                    report.changed |= ticket.new;
                    ticket_id = Some(ticket.id);
                }
                Err(Failure::Poison { reason, .. }) => {
                    events::ticket_refused(&self.metrics, &lead.message_id, &reason);
                    report.follow_ups.push(format!("ticket: {reason}"));
                }
                Err(failure) => return Err(self.failed(failure)),
            }
        }
        let outcome = if report.changed {
            "written"
        } else {
            "unchanged"
        };
        let latency_ms = now_ms().saturating_sub(lead.received_at).max(0) as u64;
        self.pending.push(MessageOutcome {
            latency: Some(Duration::from_millis(latency_ms)),
            known_contact: plan.known_contact,
            attachments_ok: report.attachments_written,
            attachments_failed: report.attachments_failed,
            ..MessageOutcome::nothing_written(&plan.message_id, outcome)
        });
        if let (Some(contact), Some(contact_id)) = (&plan.contact, &report.contact_id)
            && contact.create
        {
            let fed_back = Contact {
                email: contact.email.clone(),
                contact_id: contact_id.clone(),
                name: contact.name.clone(),
                account_id: contact.account_id.clone(),
                updated_at: lead.received_at,
            };
            out.send(CONTACTS, contact.email.clone(), fed_back);
        }
        let result = CrmResult {
            contact_id: report.contact_id,
            contact_created: report.contact_created,
            account_id: report.account_id,
            deal_id: report.deal_id,
            activity_id: report.activity_id,
            attachments_written: report.attachments_written as i32,
            attachments_failed: report.attachments_failed as i32,
            follow_ups: report.follow_ups,
            attempts: report.attempts as i32,
            ticket_id,
            ..self.result(&lead, outcome)
        };
        out.send(RESULTS, lead.message_id.clone(), result);
        Ok(())
    }

    async fn before_commit(&mut self, deadline: Instant) -> Result<(), ProcessError> {
        let Some(backend) = self.backend.as_mut() else {
            return Ok(());
        };
        let committed = backend.commit(deadline).await;
        committed.map_err(|failure| self.failed(failure))
    }

    fn on_commit(&mut self) {
        events::first_responses(&self.metrics, &std::mem::take(&mut self.answered));
        for mut outcome in std::mem::take(&mut self.pending) {
            outcome.first_write = self.created.remove(&outcome.message_id);
            events::message_committed(&self.metrics, &outcome);
        }
    }

    fn on_abort(&mut self) {
        self.pending.clear();
        self.answered.clear();
        if let Some(backend) = self.backend.as_mut() {
            backend.rollback();
        }
    }
}
