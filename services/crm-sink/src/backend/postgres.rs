//! The PostgreSQL backend (the default): one database transaction per runtime batch. `write`
//! runs a message's statements inside the open database transaction; the runtime calls
//! [`CrmBackend::commit`] just before it commits the Kafka transaction, so the input offsets are
//! committed only after the rows are durable. A crash in between replays the batch, which the
//! idempotent statements absorb. One COMMIT (one WAL flush) per batch instead of per message.
//!
//! Any error aborts a PostgreSQL transaction, so a message that fails takes the batch's earlier
//! messages with it. When it is the first of its transaction, it is retried in place (deadlock,
//! serialization failure) or dead-lettered (a constraint) as before. When others were written
//! before it, the whole batch is read again (a transient failure for the runtime); a message
//! PostgreSQL rejected is remembered and dead-lettered on that second pass without touching the
//! database, so the batch then commits without it. Nothing of the batch is held in memory for
//! this. When the Kafka transaction aborts, the database one is rolled back before the next
//! write.
//!
//! Every statement is an upsert on a natural key (`accounts.account_id`, `contacts.email` or
//! `contact_id`, `deals.deal_id`, `email_activities.message_id`, `attachments (message_id,
//! sha256, filename)`, `leads (message_id, sender_email)`), guarded so that once the input has
//! been processed every row is at a fixpoint (see `postgres_sql.rs` for the rule of each table):
//! a replay updates nothing (not even `xmin`), and the result says `unchanged`. Keys of any
//! length fit: text keys from email are unique through their digest (`crm_key`), ids are
//! bounded in the plan ([`fit_id`](super::keys::fit_id)), so an email with a 10 KB Message-ID
//! or a 3,000-character From address is written like any other.
//!
//! An attachment the tables cannot hold (a malformed hash, a negative size, a NUL byte:
//! [`AttachmentPlan::problem`](super::AttachmentPlan::problem)) is recorded in `follow_ups`
//! instead of written; the activity and the rest commit. What else PostgreSQL refuses is judged
//! by its SQLSTATE (the table in `postgres_sql.rs`): a value it cannot store is poison (the
//! message is dead-lettered with the SQLSTATE and the reason); a lost connection, a server going
//! down or a statement timeout is an outage, not a bad record: the batch is retried later
//! (`ProcessError::Transient`); serialization failures and deadlocks are retried in place; an
//! error in our own SQL stops the process (`ProcessError::Fatal`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls, Row, Statement};

use super::postgres_sql::{
    ACCOUNT, ACCOUNT_ID_ONLY, ACTIVITY, ATTACHMENT, CONTACT_INSERT, CONTACT_SET, DEAL, FOLLOW_UP,
    LEAD, classify, safe_error,
};
use super::{CrmBackend, WriteError, WritePlan, WriteReport, migrate};
use crate::events;
use crate::retry::{Failure, FailureClass, Retrier};

/// The statements, prepared once per connection.
struct Prepared {
    account: Statement,
    account_id_only: Statement,
    contact_by_id: Statement,
    contact_by_email: Statement,
    contact_lookup: Statement,
    deal: Statement,
    activity: Statement,
    activity_lookup: Statement,
    attachment: Statement,
    follow_up: Statement,
    lead: Statement,
}

struct Connection {
    client: Client,
    prepared: Prepared,
}

/// Writes plans into the CRM tables of one PostgreSQL schema.
pub struct PostgresBackend {
    url: String,
    schema: String,
    timeout: Duration,
    retrier: Retrier,
    connection: Option<Connection>,
    batch: OpenBatch,
}

/// The database transaction spanning the open Kafka transaction.
#[derive(Default)]
struct OpenBatch {
    /// BEGIN was sent and no statement failed since.
    open: bool,
    /// The connection may still be inside an aborted or abandoned transaction: roll it back
    /// before the next BEGIN.
    dirty: bool,
    /// Messages written in the open transaction (lost with it if a statement fails).
    written: usize,
    /// Messages PostgreSQL rejected after others of their batch were written (message id →
    /// reason): the batch is read again and these are dead-lettered without a write.
    rejected: HashMap<String, String>,
}

/// Bound of [`OpenBatch::rejected`] (entries are taken out when their message comes again).
const MAX_REMEMBERED_REJECTIONS: usize = 10_000;

impl PostgresBackend {
    /// Connects and applies the migrations; fails start-up if either fails.
    pub async fn start(
        url: String,
        schema: String,
        retrier: Retrier,
    ) -> Result<(Self, Vec<i32>), String> {
        let mut backend = Self {
            url,
            schema,
            timeout: retrier.request_timeout,
            retrier,
            connection: None,
            batch: OpenBatch::default(),
        };
        let client = backend.open().await.map_err(|e| safe_error(&e))?;
        let applied = migrate::migrate(&client, &backend.schema).await?;
        let prepared = prepare(&client).await.map_err(|e| safe_error(&e))?;
        backend.connection = Some(Connection { client, prepared });
        Ok((backend, applied))
    }

    async fn open(&self) -> Result<Client, tokio_postgres::Error> {
        let mut config: tokio_postgres::Config = self.url.parse()?;
        config
            .connect_timeout(self.timeout)
            .application_name("mailstream-crm-sink");
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(error = %safe_error(&error), "PostgreSQL connection closed");
            }
        });
        client
            .batch_execute(&format!(
                "SET search_path TO {}; SET statement_timeout = {}",
                migrate::quoted(&self.schema),
                self.timeout.as_millis()
            ))
            .await?;
        Ok(client)
    }

    /// Connects if there is no usable connection (a new connection holds no transaction).
    async fn connect(&mut self) -> Result<(), WriteError> {
        if self
            .connection
            .as_ref()
            .is_some_and(|c| c.client.is_closed())
        {
            self.connection = None;
        }
        if self.connection.is_none() {
            let metrics = &self.retrier.metrics;
            let outage = |e: tokio_postgres::Error| {
                let reason = safe_error(&e);
                events::write_failed(
                    metrics,
                    "postgres-connect",
                    FailureClass::Connection,
                    1,
                    &reason,
                    false,
                );
                WriteError::Unavailable(format!("PostgreSQL unavailable: {reason}"))
            };
            let client = self.open().await.map_err(outage)?;
            let prepared = prepare(&client).await.map_err(outage)?;
            tracing::info!(schema = %self.schema, "connected to PostgreSQL");
            self.connection = Some(Connection { client, prepared });
            self.batch.open = false;
            self.batch.dirty = false;
        }
        Ok(())
    }

    /// Forgets the connection after an outage; the batch is aborted and read again.
    fn drop_connection(&mut self) {
        self.connection = None;
        self.batch.open = false;
        self.batch.dirty = false;
        self.batch.written = 0;
    }
}

async fn prepare(client: &Client) -> Result<Prepared, tokio_postgres::Error> {
    Ok(Prepared {
        account: client.prepare(ACCOUNT).await?,
        account_id_only: client.prepare(ACCOUNT_ID_ONLY).await?,
        contact_by_id: client
            .prepare(&format!("{CONTACT_INSERT} ON CONFLICT (contact_id) {CONTACT_SET}"))
            .await?,
        contact_by_email: client
            .prepare(&format!(
                "{CONTACT_INSERT} ON CONFLICT (crm_key(email)) {CONTACT_SET}"
            ))
            .await?,
        contact_lookup: client
            .prepare("SELECT contact_id, created_by_message_id FROM contacts WHERE email = $1 OR contact_id = $2 ORDER BY (email = $1) DESC LIMIT 1")
            .await?,
        deal: client.prepare(DEAL).await?,
        activity: client.prepare(ACTIVITY).await?,
        activity_lookup: client
            .prepare("SELECT activity_id FROM email_activities WHERE message_id = $1")
            .await?,
        attachment: client.prepare(ATTACHMENT).await?,
        follow_up: client.prepare(FOLLOW_UP).await?,
        lead: client.prepare(LEAD).await?,
    })
}

impl CrmBackend for PostgresBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn write(
        &mut self,
        plan: &WritePlan,
        deadline: Instant,
    ) -> Result<WriteReport, WriteError> {
        if let Some(reason) = self.batch.rejected.remove(&plan.message_id) {
            return Err(WriteError::Rejected(reason));
        }
        self.connect().await?;
        let retrier = self.retrier.clone();
        let Some(connection) = self.connection.as_ref() else {
            return Err(WriteError::Unavailable("no PostgreSQL connection".into()));
        };
        let tx = TxState::from(&self.batch);
        let others = self.batch.written;
        let result = retrier
            .run("postgres-transaction", deadline, || {
                write_in_batch(connection, plan, &tx, others > 0)
            })
            .await;
        tx.store(&mut self.batch);
        match result.map_err(WriteError::from) {
            Ok((mut report, attempts)) => {
                report.attempts = attempts;
                self.batch.written += 1;
                Ok(report)
            }
            Err(WriteError::Rejected(reason)) if others > 0 => {
                self.batch.written = 0;
                if self.batch.rejected.len() >= MAX_REMEMBERED_REJECTIONS {
                    self.batch.rejected.clear();
                }
                self.batch.rejected.insert(plan.message_id.clone(), reason);
                Err(WriteError::Unavailable(format!(
                    "PostgreSQL rejected a message after {others} others of its batch were \
                     written: the batch is read again and that message dead-lettered"
                )))
            }
            Err(error) => {
                if matches!(error, WriteError::Unavailable(_)) {
                    // Reconnect before the batch is tried again.
                    self.drop_connection();
                }
                Err(error)
            }
        }
    }

    async fn commit(&mut self, _deadline: Instant) -> Result<(), WriteError> {
        if !self.batch.open {
            return Ok(());
        }
        let Some(connection) = self.connection.as_ref() else {
            return Err(WriteError::Unavailable("no PostgreSQL connection".into()));
        };
        let committed = connection.client.batch_execute("COMMIT").await;
        // After COMMIT the transaction is over, whether it committed or not.
        self.batch.open = false;
        self.batch.written = 0;
        match committed {
            Ok(()) => Ok(()),
            Err(error) => {
                // Whatever the outcome, the batch is read again and its idempotent writes
                // made again.
                self.drop_connection();
                Err(WriteError::Unavailable(format!(
                    "committing the batch to PostgreSQL: {}",
                    safe_error(&error)
                )))
            }
        }
    }

    fn rollback(&mut self) {
        self.batch.dirty |= self.batch.open;
        self.batch.open = false;
        self.batch.written = 0;
    }
}

/// The transaction flags an attempt reads and changes (the retrier's attempts cannot borrow
/// the batch mutably).
struct TxState {
    open: Flag,
    dirty: Flag,
}

/// A flag the attempts of one call share (they run one after another on one task).
struct Flag(AtomicBool);

impl Flag {
    fn new(value: bool) -> Self {
        Self(AtomicBool::new(value))
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, value: bool) {
        self.0.store(value, Ordering::Relaxed);
    }
}

impl TxState {
    fn from(batch: &OpenBatch) -> Self {
        Self {
            open: Flag::new(batch.open),
            dirty: Flag::new(batch.dirty),
        }
    }

    fn store(&self, batch: &mut OpenBatch) {
        batch.open = self.open.get();
        batch.dirty = self.dirty.get();
    }
}

/// Makes sure a transaction is open.
async fn ensure_open(c: &Connection, tx: &TxState) -> Result<(), Failure> {
    if tx.open.get() {
        return Ok(());
    }
    if tx.dirty.get() {
        c.client
            .batch_execute("ROLLBACK")
            .await
            .map_err(|e| classify(&e))?;
        tx.dirty.set(false);
    }
    c.client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| classify(&e))?;
    tx.open.set(true);
    Ok(())
}

/// Rolls back the failed transaction (or marks the connection for it).
async fn abandon(c: &Connection, tx: &TxState) {
    tx.open.set(false);
    if c.client.batch_execute("ROLLBACK").await.is_err() {
        tx.dirty.set(true);
    }
}

/// One attempt at writing `plan` inside the batch's transaction. When `others` were written in
/// it, a failure lost them too: a retriable one then becomes a batch retry, not a retry here.
async fn write_in_batch(
    c: &Connection,
    plan: &WritePlan,
    tx: &TxState,
    others: bool,
) -> Result<WriteReport, Failure> {
    ensure_open(c, tx).await?;
    match write_rows(c, plan).await {
        Ok(report) => Ok(report),
        Err(failure) => {
            abandon(c, tx).await;
            Err(match failure {
                Failure::Retriable { class, reason, .. } if others => Failure::Outage {
                    class,
                    reason: format!("{reason} (the batch's transaction is lost; read again)"),
                },
                other => other,
            })
        }
    }
}

async fn write_rows(c: &Connection, plan: &WritePlan) -> Result<WriteReport, Failure> {
    let db = |e: tokio_postgres::Error| classify(&e);
    let p = &c.prepared;
    let at = plan.received_at;
    let mut report = WriteReport::default();
    if let Some(a) = &plan.account {
        let rows = match a.target_account {
            // The resolver's account match: its values are current as of this email.
            Some(target) => {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
                    &a.account_id,
                    &a.name,
                    &a.domain,
                    &target,
                    &at,
                    &plan.message_id,
                ];
                c.client.query(&p.account, &params).await
            }
            None => {
                c.client
                    .query(&p.account_id_only, &[&a.account_id, &at])
                    .await
            }
        }
        .map_err(db)?;
        report.changed |= !rows.is_empty();
        report.account_id = Some(a.account_id.clone());
    }
    if let Some(k) = &plan.contact {
        let created_by = k.create.then_some(plan.message_id.as_str());
        let statement = if k.create {
            &p.contact_by_email
        } else {
            &p.contact_by_id
        };
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &k.contact_id,
            &k.email,
            &k.name,
            &k.account_id,
            &created_by,
            &at,
        ];
        let mut rows = c.client.query(statement, &params).await.map_err(db)?;
        report.changed |= !rows.is_empty();
        if rows.is_empty() {
            rows = c
                .client
                .query(&p.contact_lookup, &[&k.email, &k.contact_id])
                .await
                .map_err(db)?;
        }
        let row = first(&rows, "contacts")?;
        let created_by: Option<String> = row.get(1);
        report.contact_id = Some(row.get(0));
        report.contact_created = created_by.as_deref() == Some(plan.message_id.as_str());
    }
    if let Some(d) = &plan.deal {
        let rows = c
            .client
            .query(
                &p.deal,
                &[&d.deal_id, &d.account_id, &d.source, &plan.message_id, &at],
            )
            .await
            .map_err(db)?;
        report.changed |= !rows.is_empty();
        report.deal_id = Some(d.deal_id.clone());
    }
    let a = &plan.activity;
    let mut rows = c
        .client
        .query(
            &p.activity,
            &[
                &plan.message_id,
                &at,
                &a.subject,
                &a.sender_email,
                &a.recipients,
                &a.text,
                &a.thread_id,
                &a.thread_parent,
                &report.contact_id,
                &report.account_id,
                &report.deal_id,
                &a.auth,
                &a.tags,
                &plan.source_offset,
            ],
        )
        .await
        .map_err(db)?;
    if let Some(row) = rows.first() {
        report.changed = true;
        report.activity_created = row.get::<_, bool>(1);
    } else {
        rows = c
            .client
            .query(&p.activity_lookup, &[&plan.message_id])
            .await
            .map_err(db)?;
    }
    let activity_id: i64 = first(&rows, "email_activities")?.get(0);
    report.activity_id = Some(activity_id.to_string());
    for part in &plan.attachments {
        // Checked here rather than caught: a failed statement would abort the batch's whole
        // transaction, and a savepoint per attachment would pile up subtransactions in it.
        if let Some(reason) = part.problem() {
            let rows = c
                .client
                .query(&p.follow_up, &[&plan.message_id, &part.part, &reason])
                .await
                .map_err(db)?;
            report.changed |= !rows.is_empty();
            report.attachments_failed += 1;
            report
                .follow_ups
                .push(format!("attachment {}: {reason}", part.part));
            continue;
        }
        let rows = c
            .client
            .query(
                &p.attachment,
                &[
                    &plan.message_id,
                    &part.filename,
                    &part.content_type,
                    &part.size,
                    &part.sha256,
                    &part.blob_uri,
                    &part.inline,
                    &plan.source_offset,
                    &activity_id,
                ],
            )
            .await
            .map_err(db)?;
        report.changed |= !rows.is_empty();
        report.attachments_written += 1;
    }
    if let Some(l) = &plan.lead {
        let rows = c
            .client
            .query(
                &p.lead,
                &[
                    &plan.message_id,
                    &l.sender_email,
                    &l.sender_name,
                    &l.subject,
                    &at,
                    &l.lead_key,
                    &report.contact_id,
                    &report.account_id,
                    &report.deal_id,
                    &l.score,
                    &l.status,
                    &l.breakdown,
                    &l.rules_version,
                    &plan.source_offset,
                ],
            )
            .await
            .map_err(db)?;
        report.changed |= !rows.is_empty();
    }
    Ok(report)
}

fn first<'a>(rows: &'a [Row], table: &str) -> Result<&'a Row, Failure> {
    rows.first().ok_or_else(|| Failure::Outage {
        class: FailureClass::Server,
        reason: format!("{table}: the upserted row is not there"),
    })
}
