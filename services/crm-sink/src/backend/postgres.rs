//! The PostgreSQL backend (the default): one database transaction per runtime batch for the
//! rows keyed by message, and single-statement writes for the rows messages share.
//!
//! | rows | connection | written | locks held |
//! |---|---|---|---|
//! | accounts, contacts, deals (shared by messages of any partition) | `shared`, autocommit, `synchronous_commit = off` | one statement each, committed at once | for one statement |
//! | email activities, attachments, follow-ups, leads (keyed by message id) | `batch`, one transaction per runtime batch | in the batch's transaction, committed in [`CrmBackend::commit`] just before the Kafka transaction | until the batch commits |
//!
//! Why two: two sinks whose batches upserted the same contact and account rows in batch-wide
//! transactions took their row locks in different orders and deadlocked (`40P01`), more often
//! the more replicas. A message id lives on one input partition, so the batch's transaction
//! only locks rows no other live instance writes; a shared row is locked for the one statement
//! that upserts it, which never waits while holding another. Shared rows converge whatever the
//! order their messages arrive in (ARCHITECTURE invariant 10), so writing them ahead of the
//! batch's commit is safe: an aborted batch leaves them as a replay would. Their asynchronous
//! commits are durable by the time the batch's commit is: its WAL flush covers every record
//! written before it.
//!
//! The runtime calls [`CrmBackend::commit`] just before it commits the Kafka transaction, so the
//! input offsets are committed only after the rows are durable. A crash in between replays the
//! batch, which the idempotent statements absorb. One COMMIT (one WAL flush) per batch.
//!
//! A message's statements on each connection are sent together, pipelined
//! (`postgres_write.rs`): one round trip for its shared rows, then one for its own (the
//! activity, every attachment in one multi-row statement, every follow-up in one, the lead),
//! plus a BEGIN and a COMMIT per batch. The runtime hands the sink one record at a time and
//! wants its result (the CRM's ids, written or unchanged) before the next, so a message's
//! round trips cannot be merged with the next message's.
//!
//! Any error aborts a PostgreSQL transaction, so a message whose own rows fail takes the
//! batch's earlier messages with it. When it is the first of its transaction, it is retried in
//! place (deadlock, serialization failure) or dead-lettered (a constraint) as before. When
//! others were written before it, the whole batch is read again (a transient failure for the
//! runtime); a message PostgreSQL rejected is remembered and dead-lettered on that second pass
//! without touching the database, so the batch then commits without it. Nothing of the batch is
//! held in memory for this. When the Kafka transaction aborts, the database one is rolled back
//! before the next write. A shared row that fails touches no transaction: its message is
//! retried or dead-lettered alone.
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
//! (`ProcessError::Transient`); refused credentials block the sink naming `database_url`;
//! serialization failures and deadlocks are retried in place; an error in our own SQL stops the
//! process (`ProcessError::Fatal`).
//!
//! Both connections use TLS as `sslmode` in `database_url` says (`prefer` by default: TLS
//! whenever the server offers it), trusting `database_ca_file` (`postgres_tls.rs`). A refused
//! handshake fails start-up; met on a reconnect, it blocks the sink naming those two settings.
//! Start-up logs whether the session is encrypted.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::{Client, NoTls};

use super::postgres_sql::{classify, safe_error};
use super::postgres_tls::{Connector, Target};
use super::postgres_write::{
    Own, Shared, prepare_own, prepare_shared, write_own, write_response, write_shared,
    write_signals,
};
use super::signals::Signals;
use super::{CrmBackend, Response, WritePlan, WriteReport, migrate};
use crate::error::{Failure, FailureClass, tls_remedy};
use crate::events;
use crate::retry::Retrier;

struct Connection {
    /// Holds the batch's transaction.
    client: Client,
    own: Own,
    /// Autocommit, for the rows messages share.
    shared_client: Client,
    shared: Shared,
}

/// A session in `schema` of `target`, statements bounded by `timeout`; `autocommit`: with
/// asynchronous commits (the shared rows' connection).
pub(super) async fn session(
    target: &Target,
    tls: &Connector,
    schema: &str,
    timeout: Duration,
    autocommit: bool,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = target.config()?;
    config.connect_timeout(timeout);
    let client = match tls {
        Connector::Plain => drive(config.connect(NoTls).await?),
        Connector::Tls(tls) => drive(config.connect(tls.clone()).await?),
    };
    client
        .batch_execute(&format!(
            "SET search_path TO {}; SET statement_timeout = {}{}",
            migrate::quoted(schema),
            timeout.as_millis(),
            if autocommit {
                "; SET synchronous_commit = off"
            } else {
                ""
            }
        ))
        .await?;
    Ok(client)
}

impl Connection {
    fn is_closed(&self) -> bool {
        self.client.is_closed() || self.shared_client.is_closed()
    }
}

/// Writes plans into the CRM tables of one PostgreSQL schema.
pub struct PostgresBackend {
    /// The URL (a secret: it may hold the password) and its TLS mode.
    target: Target,
    tls: Connector,
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
    /// Connects and applies the migrations; fails start-up if either fails. The connector comes
    /// from `target` ([`Connector::new`]).
    pub async fn start(
        target: Target,
        tls: Connector,
        schema: String,
        retrier: Retrier,
    ) -> Result<(Self, Vec<i32>), String> {
        let mut backend = Self {
            target,
            tls,
            schema,
            timeout: retrier.request_timeout,
            retrier,
            connection: None,
            batch: OpenBatch::default(),
        };
        let client = backend.open(false).await.map_err(|e| start_error(&e))?;
        backend.log_encryption(&client).await;
        let applied = migrate::migrate(&client, &backend.schema).await?;
        let connection = backend.prepare(client).await.map_err(|e| start_error(&e))?;
        backend.connection = Some(connection);
        Ok((backend, applied))
    }

    /// Says whether the session is encrypted (with `prefer`, a server without TLS gets the
    /// password in cleartext: a warning).
    async fn log_encryption(&self, client: &Client) {
        let mode = self.target.mode.name();
        match client
            .query_one(
                "SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
        {
            Ok(row) if row.get::<_, bool>(0) => {
                let version: Option<String> = row.get(1);
                let cipher: Option<String> = row.get(2);
                tracing::info!(
                    sslmode = mode,
                    tls_version = version.unwrap_or_default(),
                    cipher = cipher.unwrap_or_default(),
                    "the PostgreSQL session is encrypted (TLS)"
                );
            }
            Ok(_) if self.target.mode == super::postgres_tls::SslMode::Disable => {
                tracing::info!(sslmode = mode, "the PostgreSQL session is not encrypted");
            }
            Ok(_) => tracing::warn!(
                sslmode = mode,
                "the PostgreSQL server offers no TLS: the session (and the password, if any) \
                 travels in cleartext; use sslmode=verify-full in the database URL to refuse that"
            ),
            Err(e) => tracing::warn!(
                sslmode = mode,
                error = %safe_error(&e),
                "cannot tell whether the PostgreSQL session is encrypted"
            ),
        }
    }

    /// Opens the shared rows' connection next to `client` and prepares both.
    async fn prepare(&self, client: Client) -> Result<Connection, tokio_postgres::Error> {
        let shared_client = self.open(true).await?;
        Ok(Connection {
            own: prepare_own(&client).await?,
            client,
            shared: prepare_shared(&shared_client).await?,
            shared_client,
        })
    }

    /// A session in the CRM's schema; `autocommit`: the shared rows' (asynchronous commits).
    async fn open(&self, autocommit: bool) -> Result<Client, tokio_postgres::Error> {
        session(
            &self.target,
            &self.tls,
            &self.schema,
            self.timeout,
            autocommit,
        )
        .await
    }

    /// Connects if there is no usable connection (a new connection holds no transaction).
    async fn connect(&mut self) -> Result<(), Failure> {
        if self.connection.as_ref().is_some_and(Connection::is_closed) {
            self.connection = None;
        }
        if self.connection.is_none() {
            let metrics = &self.retrier.metrics;
            let failed = |e: tokio_postgres::Error| {
                let failure = match classify(&e) {
                    fault @ (Failure::Auth { .. } | Failure::Tls { .. }) => fault,
                    other => Failure::outage(
                        FailureClass::Connection,
                        format!("PostgreSQL unavailable: {}", other.reason()),
                    ),
                };
                events::write_failed(
                    metrics,
                    "postgres-connect",
                    failure.class(),
                    1,
                    failure.reason(),
                    false,
                );
                failure
            };
            let client = self.open(false).await.map_err(failed)?;
            let connection = self.prepare(client).await.map_err(failed)?;
            tracing::info!(schema = %self.schema, "connected to PostgreSQL");
            self.connection = Some(connection);
            self.batch.open = false;
            self.batch.dirty = false;
        }
        Ok(())
    }

    /// Forgets the connection after an outage; the batch is aborted and read again.
    /// The open connection, connecting first when there is none (for calls that need nothing
    /// else of `self` while they use it).
    async fn connected(&mut self) -> Result<&Connection, Failure> {
        self.connect().await?;
        self.connection
            .as_ref()
            .ok_or_else(|| Failure::outage(FailureClass::Connection, "no PostgreSQL connection"))
    }

    fn drop_connection(&mut self) {
        self.connection = None;
        self.batch.open = false;
        self.batch.dirty = false;
        self.batch.written = 0;
    }

    /// Passes `failure` on; an outage first drops the connection, so the batch is tried again
    /// on a new one.
    fn failed(&mut self, failure: Failure) -> Failure {
        if matches!(failure, Failure::Outage { .. }) {
            self.drop_connection();
        }
        failure
    }
}

/// Runs a new session's connection on its own task; its client.
fn drive<S, T>((client, connection): (Client, tokio_postgres::Connection<S, T>)) -> Client
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(error = %safe_error(&error), "PostgreSQL connection closed");
        }
    });
    client
}

/// Why start-up could not connect; a refused TLS handshake says what to fix.
fn start_error(e: &tokio_postgres::Error) -> String {
    match classify(e) {
        Failure::Tls { reason } => format!("{reason}: {}", tls_remedy()),
        _ => safe_error(e),
    }
}

impl CrmBackend for PostgresBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn write(&mut self, plan: &WritePlan, deadline: Instant) -> Result<WriteReport, Failure> {
        if let Some(reason) = self.batch.rejected.remove(&plan.message_id) {
            return Err(Failure::Poison {
                class: FailureClass::Client,
                reason,
            });
        }
        self.connect().await?;
        let retrier = self.retrier.clone();
        let Some(connection) = self.connection.as_ref() else {
            return Err(Failure::outage(
                FailureClass::Connection,
                "no PostgreSQL connection",
            ));
        };
        let shared = retrier
            .run("postgres-shared-rows", deadline, || {
                write_shared(&connection.shared_client, &connection.shared, plan)
            })
            .await;
        let (shared, shared_attempts) = match shared {
            Ok(written) => written,
            Err(failure) => return Err(self.failed(failure)),
        };
        let tx = TxState::from(&self.batch);
        let others = self.batch.written;
        let result = retrier
            .run("postgres-transaction", deadline, || {
                write_in_batch(connection, plan, &shared, &tx, others > 0)
            })
            .await;
        tx.store(&mut self.batch);
        match result {
            Ok((mut report, attempts)) => {
                report.attempts = shared_attempts + attempts;
                self.batch.written += 1;
                Ok(report)
            }
            Err(Failure::Poison { class, reason }) if others > 0 => {
                self.batch.written = 0;
                if self.batch.rejected.len() >= MAX_REMEMBERED_REJECTIONS {
                    self.batch.rejected.clear();
                }
                self.batch.rejected.insert(plan.message_id.clone(), reason);
                Err(Failure::outage(
                    class,
                    format!(
                        "PostgreSQL rejected a message after {others} others of its batch were \
                         written: the batch is read again and that message dead-lettered"
                    ),
                ))
            }
            Err(failure) => Err(self.failed(failure)),
        }
    }

    async fn commit(&mut self, _deadline: Instant) -> Result<(), Failure> {
        if !self.batch.open {
            return Ok(());
        }
        let Some(connection) = self.connection.as_ref() else {
            return Err(Failure::outage(
                FailureClass::Connection,
                "no PostgreSQL connection",
            ));
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
                Err(Failure::outage(
                    FailureClass::Connection,
                    format!("committing the batch to PostgreSQL: {}", safe_error(&error)),
                ))
            }
        }
    }

    fn rollback(&mut self) {
        self.batch.dirty |= self.batch.open;
        self.batch.open = false;
        self.batch.written = 0;
    }

    async fn record_response(
        &mut self,
        response: &Response,
        deadline: Instant,
    ) -> Result<Vec<i64>, Failure> {
        let retrier = self.retrier.clone();
        let tx = TxState::from(&self.batch);
        let others = self.batch.written;
        let connection = self.connected().await?;
        let result = retrier
            .run("postgres-response", deadline, || {
                let statements = write_response(&connection.client, &connection.own, response);
                in_batch(connection, &tx, others > 0, statements)
            })
            .await;
        tx.store(&mut self.batch);
        match result {
            Ok((waits, _attempts)) => {
                self.batch.written += 1;
                Ok(waits)
            }
            Err(failure) => Err(self.failed(failure)),
        }
    }

    async fn record_signals(
        &mut self,
        signals: &Signals,
        deadline: Instant,
    ) -> Result<Vec<&'static str>, Failure> {
        let retrier = self.retrier.clone();
        let connection = self.connected().await?;
        let written = retrier
            .run("postgres-contact-signals", deadline, || {
                write_signals(&connection.shared_client, &connection.shared, signals)
            })
            .await;
        written
            .map(|(changed, _attempts)| changed)
            .map_err(|failure| self.failed(failure))
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

/// One attempt at writing `plan` inside the batch's transaction.
async fn write_in_batch(
    c: &Connection,
    plan: &WritePlan,
    shared: &WriteReport,
    tx: &TxState,
    others: bool,
) -> Result<WriteReport, Failure> {
    in_batch(
        c,
        tx,
        others,
        write_own(&c.client, &c.own, plan, shared.clone()),
    )
    .await
}

/// One attempt at `statements` inside the batch's transaction (opened first). When `others`
/// were written in it, a failure lost them too: a retriable one then becomes a batch retry,
/// not a retry here.
async fn in_batch<T>(
    c: &Connection,
    tx: &TxState,
    others: bool,
    statements: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    ensure_open(c, tx).await?;
    match statements.await {
        Ok(done) => Ok(done),
        Err(failure) => {
            abandon(c, tx).await;
            Err(match failure {
                Failure::Retry { class, reason, .. } if others => Failure::Outage {
                    class,
                    reason: format!("{reason} (the batch's transaction is lost; read again)"),
                },
                other => other,
            })
        }
    }
}
