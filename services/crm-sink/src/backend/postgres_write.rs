//! The statements the PostgreSQL backend makes for one message, pipelined: each connection's
//! statements are all sent before the first answer is read, so a message costs one round trip
//! on each connection (two in all, where it used to await 6–10 statements one by one).
//!
//! | connection | statements sent together | each |
//! |---|---|---|
//! | shared (autocommit) | account, contact (with its lookup), deal | its own implicit transaction: one row locked for one statement, as before |
//! | batch (the batch's transaction) | activity (with its lookup and its first response), every attachment in one statement, every follow-up in one statement, lead | in the batch's transaction |
//! | batch (the batch's transaction), an email of ours | its response, and the first response of its thread's earlier inbound activities | in the batch's transaction |
//! | shared (autocommit) | every contact signal of the email | its own implicit transaction |
//!
//! The batch's statements depend on the shared ones (the activity and lead carry the contact id
//! the CRM holds, which may not be the plan's), so the two round trips stay one after the other.
//! Inside a connection nothing waits: the attachments find their activity by message id (the
//! activity statement before them in the same transaction has run by then), and the
//! "upserted nothing, so read the row" lookups are part of their upsert statements
//! (`postgres_sql.rs`). The answers are read in order, and the first failure is the message's:
//! in the batch's transaction the statements after a failed one fail only because it aborted
//! the transaction. On the autocommit connection the statements after a failed one still run
//! and commit, like earlier ones always did: shared rows converge whatever the order their
//! messages come in (ARCHITECTURE invariant 10), so a row written for a message that is then
//! dead-lettered or retried is a row a replay would leave as it is.

use std::future::Future;
use std::pin::Pin;

use futures::future::join_all;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Client, Row, Statement};

use super::postgres_sql::{
    ACCOUNT, ACCOUNT_ID_ONLY, ATTACHMENTS, CONTACT_BOUNCING, CONTACT_BY_EMAIL, CONTACT_BY_ID,
    CONTACT_LEFT, CONTACT_LOOKUP, CONTACT_OPTED_OUT, DEAL, FOLLOW_UPS, LEAD, OWN_ACTIVITY,
    RESPONSE, classify,
};
use super::signals::{ContactSignal, Signals};
use super::{Response, WritePlan, WriteReport};
use crate::error::{Failure, FailureClass};

/// The statements of the shared rows, prepared on the autocommit connection.
pub(super) struct Shared {
    account: Statement,
    account_id_only: Statement,
    contact_by_id: Statement,
    contact_by_email: Statement,
    contact_lookup: Statement,
    deal: Statement,
    bouncing: Statement,
    opted_out: Statement,
    left: Statement,
}

/// The statements of the rows keyed by message, prepared on the batch's connection.
pub(super) struct Own {
    activity: Statement,
    attachments: Statement,
    follow_ups: Statement,
    lead: Statement,
    response: Statement,
}

pub(super) async fn prepare_shared(client: &Client) -> Result<Shared, tokio_postgres::Error> {
    Ok(Shared {
        account: client.prepare(ACCOUNT).await?,
        account_id_only: client.prepare(ACCOUNT_ID_ONLY).await?,
        contact_by_id: client.prepare(&CONTACT_BY_ID).await?,
        contact_by_email: client.prepare(&CONTACT_BY_EMAIL).await?,
        contact_lookup: client.prepare(CONTACT_LOOKUP).await?,
        deal: client.prepare(DEAL).await?,
        bouncing: client.prepare(CONTACT_BOUNCING).await?,
        opted_out: client.prepare(CONTACT_OPTED_OUT).await?,
        left: client.prepare(CONTACT_LEFT).await?,
    })
}

pub(super) async fn prepare_own(client: &Client) -> Result<Own, tokio_postgres::Error> {
    Ok(Own {
        activity: client.prepare(&OWN_ACTIVITY).await?,
        attachments: client.prepare(ATTACHMENTS).await?,
        follow_ups: client.prepare(FOLLOW_UPS).await?,
        lead: client.prepare(LEAD).await?,
        response: client.prepare(RESPONSE).await?,
    })
}

type Param<'a> = &'a (dyn ToSql + Sync);

/// A statement sent, its answer not read yet.
type Pending<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;

fn send<'a>(client: &'a Client, statement: &'a Statement, params: &'a [Param<'a>]) -> Pending<'a> {
    Box::pin(client.query(statement, params))
}

/// Sends every statement before reading any answer (tokio-postgres pipelines the requests of
/// futures polled together, in the order they are polled); the answers, in order, or the first
/// failure.
async fn pipelined(statements: Vec<Pending<'_>>) -> Result<Vec<Vec<Row>>, Failure> {
    let mut rows = Vec::with_capacity(statements.len());
    for answer in join_all(statements).await {
        rows.push(answer.map_err(|e| classify(&e))?);
    }
    Ok(rows)
}

/// Column `index` of `row` (of `table`); a type our statement did not promise is our fault.
fn column<'a, T: FromSql<'a>>(row: &'a Row, index: usize, table: &str) -> Result<T, Failure> {
    row.try_get(index).map_err(|e| Failure::Broken {
        class: FailureClass::Client,
        reason: format!("a statement of the sink is wrong: {table} column {index}: {e}"),
    })
}

fn first<'a>(rows: &'a [Row], table: &str) -> Result<&'a Row, Failure> {
    rows.first().ok_or_else(|| {
        Failure::outage(
            FailureClass::Server,
            format!("{table}: the upserted row is not there"),
        )
    })
}

/// The rows messages share (account, contact, deal), one autocommitted statement each, sent
/// together. Returns the report with their ids.
pub(super) async fn write_shared(
    client: &Client,
    p: &Shared,
    plan: &WritePlan,
) -> Result<WriteReport, Failure> {
    let at = plan.received_at;
    let mut report = WriteReport::default();
    // The resolver's account match carries values current as of this email; a mention only
    // the id.
    let target = plan.account.as_ref().and_then(|a| a.target_account);
    let account: Option<(&Statement, Vec<Param<'_>>)> =
        plan.account.as_ref().map(|a| match &target {
            Some(target) => (
                &p.account,
                vec![
                    &a.account_id as Param<'_>,
                    &a.name,
                    &a.domain,
                    target,
                    &at,
                    &plan.message_id,
                ],
            ),
            None => (&p.account_id_only, vec![&a.account_id as Param<'_>, &at]),
        });
    let created_by = plan
        .contact
        .as_ref()
        .and_then(|k| k.create.then_some(plan.message_id.as_str()));
    let contact: Option<(&Statement, [Param<'_>; 10])> = plan.contact.as_ref().map(|k| {
        let statement = if k.create {
            &p.contact_by_email
        } else {
            &p.contact_by_id
        };
        let params: [Param<'_>; 10] = [
            &k.contact_id,
            &k.email,
            &k.name,
            &k.account_id,
            &created_by,
            &at,
            &k.details.title,
            &k.details.company,
            &k.details.phone,
            &k.details.website,
        ];
        (statement, params)
    });
    let deal: Option<[Param<'_>; 5]> = plan.deal.as_ref().map(|d| {
        [
            &d.deal_id as Param<'_>,
            &d.account_id,
            &d.source,
            &plan.message_id,
            &at,
        ]
    });
    let mut pending = Vec::with_capacity(3);
    if let Some((statement, params)) = &account {
        pending.push(send(client, statement, params));
    }
    if let Some((statement, params)) = &contact {
        pending.push(send(client, statement, params));
    }
    if let Some(params) = &deal {
        pending.push(send(client, &p.deal, params));
    }
    let mut answers = pipelined(pending).await?.into_iter();
    if let Some(a) = &plan.account {
        report.changed |= !answers.next().unwrap_or_default().is_empty();
        report.account_id = Some(a.account_id.clone());
    }
    if let Some(k) = &plan.contact {
        let mut rows = answers.next().unwrap_or_default();
        if rows.is_empty() {
            // Upserted nothing, and the row was not in the statement's snapshot: another
            // session committed it meanwhile. Read it with a new snapshot.
            rows = client
                .query(&p.contact_lookup, &[&k.email, &k.contact_id])
                .await
                .map_err(|e| classify(&e))?;
        }
        let row = first(&rows, "contacts")?;
        let created_by: Option<String> = column(row, 1, "contacts")?;
        report.changed |= column::<bool>(row, 2, "contacts")?;
        report.contact_id = Some(column(row, 0, "contacts")?);
        report.contact_created = created_by.as_deref() == Some(plan.message_id.as_str());
    }
    if let Some(d) = &plan.deal {
        report.changed |= !answers.next().unwrap_or_default().is_empty();
        report.deal_id = Some(d.deal_id.clone());
    }
    Ok(report)
}

/// The columns of a message's stored attachments, one array each (`ATTACHMENTS` unnests them).
#[derive(Default)]
struct AttachmentColumns<'a> {
    filename: Vec<&'a str>,
    content_type: Vec<&'a str>,
    size: Vec<i64>,
    sha256: Vec<&'a str>,
    storage_url: Vec<Option<&'a str>>,
    inline: Vec<bool>,
}

/// The message's own rows (activity, attachments or their follow-ups, lead) inside the batch's
/// transaction, sent together, on top of `report` from [`write_shared`].
pub(super) async fn write_own(
    client: &Client,
    p: &Own,
    plan: &WritePlan,
    mut report: WriteReport,
) -> Result<WriteReport, Failure> {
    let at = plan.received_at;
    let a = &plan.activity;
    let (contact_id, account_id, deal_id) = (
        report.contact_id.clone(),
        report.account_id.clone(),
        report.deal_id.clone(),
    );
    let activity: [Param<'_>; 15] = [
        &plan.message_id,
        &at,
        &a.subject,
        &a.sender_email,
        &a.recipients,
        &a.text,
        &a.thread_id,
        &a.thread_parent,
        &contact_id,
        &account_id,
        &deal_id,
        &a.auth,
        &a.tags,
        &plan.source_offset,
        &a.meeting,
    ];
    // An attachment the tables cannot hold is checked here rather than caught: a failed
    // statement would abort the batch's whole transaction.
    let mut stored = AttachmentColumns::default();
    let (mut parts, mut reasons) = (Vec::new(), Vec::new());
    for part in &plan.attachments {
        if let Some(reason) = part.problem() {
            report
                .follow_ups
                .push(format!("attachment {}: {reason}", part.part));
            parts.push(part.part.as_str());
            reasons.push(reason);
            continue;
        }
        stored.filename.push(&part.filename);
        stored.content_type.push(&part.content_type);
        stored.size.push(part.size);
        stored.sha256.push(&part.sha256);
        stored.storage_url.push(part.blob_uri.as_deref());
        stored.inline.push(part.inline);
    }
    let attachments: [Param<'_>; 8] = [
        &plan.message_id,
        &plan.source_offset,
        &stored.filename,
        &stored.content_type,
        &stored.size,
        &stored.sha256,
        &stored.storage_url,
        &stored.inline,
    ];
    let follow_ups: [Param<'_>; 3] = [&plan.message_id, &parts, &reasons];
    let lead: Option<[Param<'_>; 19]> = plan.lead.as_ref().map(|l| {
        [
            &plan.message_id as Param<'_>,
            &l.sender_email,
            &l.sender_name,
            &l.subject,
            &at,
            &l.lead_key,
            &contact_id,
            &account_id,
            &deal_id,
            &l.score,
            &l.status,
            &l.breakdown,
            &l.rules_version,
            &plan.source_offset,
            &l.intent,
            &l.language,
            &l.team,
            &l.owner,
            &l.source_alias,
        ]
    });
    let mut pending = vec![send(client, &p.activity, &activity)];
    if !stored.sha256.is_empty() {
        pending.push(send(client, &p.attachments, &attachments));
    }
    if !parts.is_empty() {
        pending.push(send(client, &p.follow_ups, &follow_ups));
    }
    if let Some(params) = &lead {
        pending.push(send(client, &p.lead, params));
    }
    let mut answers = pipelined(pending).await?.into_iter();
    let rows = answers.next().unwrap_or_default();
    let row = first(&rows, "email_activities")?;
    let activity_id: i64 = column(row, 0, "email_activities")?;
    report.activity_created = column(row, 1, "email_activities")?;
    report.changed |= column::<bool>(row, 2, "email_activities")?;
    if report.activity_created {
        report.first_response_ms = column(row, 3, "email_activities")?;
    }
    report.activity_id = Some(activity_id.to_string());
    if !stored.sha256.is_empty() {
        report.changed |= !answers.next().unwrap_or_default().is_empty();
        report.attachments_written += stored.sha256.len() as u32;
    }
    if !parts.is_empty() {
        report.changed |= !answers.next().unwrap_or_default().is_empty();
        report.attachments_failed += parts.len() as u32;
    }
    if lead.is_some() {
        report.changed |= !answers.next().unwrap_or_default().is_empty();
    }
    Ok(report)
}

/// `response` in the batch's transaction ([`RESPONSE`]): the milliseconds each inbound activity
/// it answered first had waited.
pub(super) async fn write_response(
    client: &Client,
    p: &Own,
    response: &Response,
) -> Result<Vec<i64>, Failure> {
    let params: [Param<'_>; 3] = [
        &response.message_id,
        &response.thread_id,
        &response.received_at,
    ];
    let rows = pipelined(vec![send(client, &p.response, &params)]).await?;
    let mut waits = Vec::new();
    for row in rows.iter().flatten() {
        if column::<bool>(row, 0, "responses")? {
            waits.push(column(row, 1, "responses")?);
        }
    }
    Ok(waits)
}

/// The contact rows `signals` change, one guarded autocommitted statement each (like the other
/// rows messages share: no contact row stays locked for a batch), sent together and run in the
/// email's order. Returns the signals that changed a contact.
pub(super) async fn write_signals(
    client: &Client,
    p: &Shared,
    signals: &Signals,
) -> Result<Vec<&'static str>, Failure> {
    let at = &signals.at;
    let statements: Vec<(&Statement, [Param<'_>; 3])> = signals
        .list
        .iter()
        .map(|signal| match signal {
            ContactSignal::Bouncing { email, reason } => {
                (&p.bouncing, [email as Param<'_>, reason, at])
            }
            ContactSignal::OptedOut { email, reason } => {
                (&p.opted_out, [email as Param<'_>, at, reason])
            }
            ContactSignal::Left { email, replacement } => {
                (&p.left, [email as Param<'_>, replacement, at])
            }
        })
        .collect();
    let pending = statements
        .iter()
        .map(|(statement, params)| send(client, statement, params))
        .collect();
    let answers = pipelined(pending).await?;
    Ok(signals
        .list
        .iter()
        .zip(answers)
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(signal, _)| signal.name())
        .collect())
}
