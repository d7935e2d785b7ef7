//! The PostgreSQL backend (the default): one database transaction per message, committed before
//! `write` returns, so the input offset is committed only after the rows are durable.
//!
//! Every statement is an upsert on a natural key (`accounts.account_id`, `contacts.email` or
//! `contact_id`, `deals.deal_id`, `email_activities.message_id`, `attachments (message_id,
//! sha256, filename)`, `leads (message_id, sender_email)`) whose `DO UPDATE` is guarded: a row
//! changes only when a newer record (later input offset; later received_at for the shared
//! account, contact and deal rows) brings values that are `IS DISTINCT FROM` the stored ones. So a
//! replay updates nothing (not even `xmin`), and the result says `unchanged`.
//!
//! An attachment that fails (a constraint) is rolled back to its savepoint and recorded in
//! `follow_ups`; the activity and the rest commit. A lost connection, a server going down or a
//! statement timeout is an outage, not a bad record: the batch is retried later
//! (`ProcessError::Transient`). Serialization failures and deadlocks are retried in place.

use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::{CrmBackend, WriteError, WritePlan, WriteReport, migrate};
use crate::events::{self, redact};
use crate::retry::{Failure, FailureClass, Retrier};

const ACCOUNT: &str = "INSERT INTO accounts AS t (account_id, name, domain, target_account, created_at, updated_at)
 VALUES ($1, $2, $3, $4, $5, $5)
 ON CONFLICT (account_id) DO UPDATE SET name = COALESCE(EXCLUDED.name, t.name),
   domain = COALESCE(EXCLUDED.domain, t.domain),
   target_account = COALESCE(EXCLUDED.target_account, t.target_account), updated_at = EXCLUDED.updated_at
 WHERE EXCLUDED.updated_at > t.updated_at
   AND (COALESCE(EXCLUDED.name, t.name), COALESCE(EXCLUDED.domain, t.domain),
        COALESCE(EXCLUDED.target_account, t.target_account))
       IS DISTINCT FROM (t.name, t.domain, t.target_account)
 RETURNING account_id";

const CONTACT_SET: &str = "DO UPDATE SET name = COALESCE(EXCLUDED.name, t.name),
   account_id = COALESCE(EXCLUDED.account_id, t.account_id), updated_at = EXCLUDED.updated_at
 WHERE EXCLUDED.updated_at > t.updated_at
   AND (COALESCE(EXCLUDED.name, t.name), COALESCE(EXCLUDED.account_id, t.account_id))
       IS DISTINCT FROM (t.name, t.account_id)
 RETURNING contact_id, created_by_message_id";

const CONTACT_INSERT: &str = "INSERT INTO contacts AS t (contact_id, email, name, account_id, created_by_message_id, created_at, updated_at)
 VALUES ($1, $2, $3, $4, $5, $6, $6)";

const DEAL: &str = "INSERT INTO deals AS t (deal_id, account_id, source, first_message_id, created_at, updated_at)
 VALUES ($1, $2, $3, $4, $5, $5)
 ON CONFLICT (deal_id) DO UPDATE SET account_id = EXCLUDED.account_id, updated_at = EXCLUDED.updated_at
 WHERE t.account_id IS NULL AND EXCLUDED.account_id IS NOT NULL
 RETURNING deal_id";

const ACTIVITY: &str = "INSERT INTO email_activities AS t (message_id, received_at, subject, sender_email,
   recipients, body_text, thread_id, thread_parent, contact_id, account_id, deal_id, auth, tags, source_offset)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
 ON CONFLICT (message_id) DO UPDATE SET received_at = EXCLUDED.received_at, subject = EXCLUDED.subject,
   sender_email = EXCLUDED.sender_email, recipients = EXCLUDED.recipients, body_text = EXCLUDED.body_text,
   thread_id = EXCLUDED.thread_id, thread_parent = EXCLUDED.thread_parent, contact_id = EXCLUDED.contact_id,
   account_id = EXCLUDED.account_id, deal_id = EXCLUDED.deal_id, auth = EXCLUDED.auth, tags = EXCLUDED.tags,
   source_offset = EXCLUDED.source_offset
 WHERE EXCLUDED.source_offset > t.source_offset
   AND (EXCLUDED.received_at, EXCLUDED.subject, EXCLUDED.sender_email, EXCLUDED.recipients, EXCLUDED.body_text,
        EXCLUDED.thread_id, EXCLUDED.thread_parent, EXCLUDED.contact_id, EXCLUDED.account_id,
        EXCLUDED.deal_id, EXCLUDED.auth, EXCLUDED.tags)
       IS DISTINCT FROM (t.received_at, t.subject, t.sender_email, t.recipients, t.body_text, t.thread_id,
        t.thread_parent, t.contact_id, t.account_id, t.deal_id, t.auth, t.tags)
 RETURNING activity_id, (xmax = 0) AS inserted";

const ATTACHMENT: &str =
    "INSERT INTO attachments AS t (message_id, filename, content_type, size, sha256,
   storage_url, inline, source_offset)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
 ON CONFLICT (message_id, sha256, filename) DO UPDATE SET content_type = EXCLUDED.content_type,
   size = EXCLUDED.size, storage_url = EXCLUDED.storage_url, inline = EXCLUDED.inline,
   source_offset = EXCLUDED.source_offset
 WHERE EXCLUDED.source_offset > t.source_offset
   AND (EXCLUDED.content_type, EXCLUDED.size, EXCLUDED.storage_url, EXCLUDED.inline)
       IS DISTINCT FROM (t.content_type, t.size, t.storage_url, t.inline)
 RETURNING id";

const FOLLOW_UP: &str =
    "INSERT INTO follow_ups (message_id, kind, part, reason) VALUES ($1, 'attachment', $2, $3)
 ON CONFLICT (message_id, kind, part) DO NOTHING RETURNING id";

const LEAD: &str = "INSERT INTO leads AS t (message_id, sender_email, sender_name, subject, received_at, lead_key,
   contact_id, account_id, deal_id, score, status, breakdown, rules_version, source_offset)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
 ON CONFLICT (message_id, sender_email) DO UPDATE SET sender_name = EXCLUDED.sender_name,
   subject = EXCLUDED.subject, received_at = EXCLUDED.received_at, lead_key = EXCLUDED.lead_key,
   contact_id = EXCLUDED.contact_id, account_id = EXCLUDED.account_id, deal_id = EXCLUDED.deal_id,
   score = EXCLUDED.score, status = EXCLUDED.status, breakdown = EXCLUDED.breakdown,
   rules_version = EXCLUDED.rules_version, source_offset = EXCLUDED.source_offset
 WHERE EXCLUDED.source_offset > t.source_offset
   AND (EXCLUDED.sender_name, EXCLUDED.subject, EXCLUDED.received_at, EXCLUDED.lead_key, EXCLUDED.contact_id,
        EXCLUDED.account_id, EXCLUDED.deal_id, EXCLUDED.score, EXCLUDED.status, EXCLUDED.breakdown,
        EXCLUDED.rules_version)
       IS DISTINCT FROM (t.sender_name, t.subject, t.received_at, t.lead_key, t.contact_id, t.account_id,
        t.deal_id, t.score, t.status, t.breakdown, t.rules_version)
 RETURNING id";

/// The statements, prepared once per connection.
struct Prepared {
    account: Statement,
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
}

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

    async fn connection(&mut self) -> Result<&Connection, WriteError> {
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
        }
        self.connection
            .as_ref()
            .ok_or_else(|| WriteError::Unavailable("no PostgreSQL connection".into()))
    }
}

async fn prepare(client: &Client) -> Result<Prepared, tokio_postgres::Error> {
    Ok(Prepared {
        account: client.prepare(ACCOUNT).await?,
        contact_by_id: client
            .prepare(&format!("{CONTACT_INSERT} ON CONFLICT (contact_id) {CONTACT_SET}"))
            .await?,
        contact_by_email: client
            .prepare(&format!("{CONTACT_INSERT} ON CONFLICT (email) {CONTACT_SET}"))
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
        let retrier = self.retrier.clone();
        let connection = self.connection().await?;
        let result = retrier
            .run("postgres-transaction", deadline, || {
                in_transaction(connection, plan)
            })
            .await;
        match result {
            Ok((mut report, attempts)) => {
                report.attempts = attempts;
                Ok(report)
            }
            Err(error) => {
                let error = WriteError::from(error);
                if matches!(error, WriteError::Unavailable(_)) {
                    // Reconnect before the batch is tried again.
                    self.connection = None;
                }
                Err(error)
            }
        }
    }
}

async fn in_transaction(c: &Connection, plan: &WritePlan) -> Result<WriteReport, Failure> {
    c.client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| classify(&e))?;
    match write_rows(c, plan).await {
        Ok(report) => {
            c.client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| classify(&e))?;
            Ok(report)
        }
        Err(failure) => {
            let _ = c.client.batch_execute("ROLLBACK").await;
            Err(failure)
        }
    }
}

async fn write_rows(c: &Connection, plan: &WritePlan) -> Result<WriteReport, Failure> {
    let db = |e: tokio_postgres::Error| classify(&e);
    let p = &c.prepared;
    let at = plan.received_at;
    let mut report = WriteReport::default();
    if let Some(a) = &plan.account {
        let rows = c
            .client
            .query(
                &p.account,
                &[&a.account_id, &a.name, &a.domain, &a.target_account, &at],
            )
            .await
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
    report.activity_id = Some(
        first(&rows, "email_activities")?
            .get::<_, i64>(0)
            .to_string(),
    );
    for part in &plan.attachments {
        c.client
            .batch_execute("SAVEPOINT attachment")
            .await
            .map_err(db)?;
        let inserted = c
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
                ],
            )
            .await;
        match inserted.map_err(db) {
            Ok(rows) => {
                c.client
                    .batch_execute("RELEASE SAVEPOINT attachment")
                    .await
                    .map_err(db)?;
                report.changed |= !rows.is_empty();
                report.attachments_written += 1;
            }
            Err(Failure::Rejected { reason, .. }) => {
                c.client
                    .batch_execute("ROLLBACK TO SAVEPOINT attachment")
                    .await
                    .map_err(db)?;
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
            }
            Err(other) => return Err(other),
        }
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

/// An error's text without values from the rows (DETAIL lines name them): SQLSTATE, message,
/// table and constraint.
fn safe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!(
                "SQLSTATE {} {}",
                db.code().code(),
                redact(db.message(), 200)
            );
            if let Some(constraint) = db.constraint() {
                text.push_str(&format!(" (constraint {constraint})"));
            }
            text
        }
        None => redact(&e.to_string(), 200),
    }
}

/// Integrity and data errors are the record's fault; serialization failures and deadlocks are
/// worth another try; everything else (connection, server, timeouts, missing tables) is an
/// outage of the database.
fn classify(e: &tokio_postgres::Error) -> Failure {
    let reason = safe_error(e);
    let Some(code) = e.code() else {
        return Failure::Outage {
            class: FailureClass::Connection,
            reason,
        };
    };
    let class = &code.code()[..2];
    if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED {
        Failure::Retriable {
            class: FailureClass::Server,
            reason,
            retry_after: None,
        }
    } else if class == "23" || class == "22" {
        Failure::Rejected {
            class: FailureClass::Client,
            reason,
        }
    } else if *code == SqlState::QUERY_CANCELED {
        Failure::Outage {
            class: FailureClass::Timeout,
            reason,
        }
    } else {
        let class = if class == "08" || class == "57" {
            FailureClass::Connection
        } else {
            FailureClass::Server
        };
        Failure::Outage { class, reason }
    }
}
