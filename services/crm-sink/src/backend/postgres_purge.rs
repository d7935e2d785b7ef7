//! Deleting rows from the PostgreSQL CRM, in one database transaction each time: a person's
//! ([`erase`], `mailstream erase`) and old unqualified leads' ([`expire`], `mailstream
//! retention run`). A dry run runs the same statements and rolls them back, so what it reports
//! is exactly what `--execute` deletes.
//!
//! A person's rows: their contact (by email), the activities of the emails they took part in
//! (by message id, and any they sent) with those activities' attachments, the leads of those
//! emails (and any with them as sender), and the follow-ups of those emails. An expired lead's
//! rows: its activity with the attachments, its leads and follow-ups; the contact stays (it may
//! have other leads). Retention also deletes `responses` (our outbound emails' thread and time)
//! older than its horizon: a response only serves an inbound email of its thread written after
//! it, which comes minutes later, not months. Accounts and deals are the companies' and stay.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use super::erase::{CrmErased, Expired};
use super::migrate;
use super::postgres::session;
use super::postgres_sql::safe_error;
use super::postgres_tls::{Connector, Target};

/// Rows deleted (or, in a dry run, that would be), by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeletedRows {
    pub contacts: u64,
    pub activities: u64,
    pub attachments: u64,
    pub leads: u64,
    pub follow_ups: u64,
}

impl DeletedRows {
    pub fn total(&self) -> u64 {
        self.contacts + self.activities + self.attachments + self.leads + self.follow_ups
    }
}

/// Deletes the rows of the person with `addresses` (lower-cased) whose emails are
/// `message_ids` from the CRM tables in `schema`; commits only when `execute`.
pub async fn erase(
    target: &Target,
    tls: &Connector,
    schema: &str,
    timeout: Duration,
    addresses: &[String],
    message_ids: &[String],
    execute: bool,
) -> Result<DeletedRows, String> {
    let Some(client) = open(target, tls, schema, timeout).await? else {
        return Ok(DeletedRows::default());
    };
    client.batch_execute("BEGIN").await.map_err(failed)?;
    let deleted = delete(&client, addresses, message_ids).await;
    let deleted = finish(&client, execute, deleted).await?;
    Ok(deleted.0)
}

/// Deletes the rows of every message whose lead has one of `statuses` and was received before
/// `before`; commits only when `execute`.
pub async fn expire(
    target: &Target,
    tls: &Connector,
    schema: &str,
    timeout: Duration,
    statuses: &[String],
    before: DateTime<Utc>,
    execute: bool,
) -> Result<Expired, String> {
    let Some(client) = open(target, tls, schema, timeout).await? else {
        return Ok(Expired {
            rows: CrmErased::from(DeletedRows::default()),
            ..Expired::default()
        });
    };
    client.batch_execute("BEGIN").await.map_err(failed)?;
    let expired = async {
        let message_ids: Vec<String> = client
            .query(
                "SELECT DISTINCT message_id FROM leads WHERE status = ANY($1) AND received_at < $2",
                &[&statuses, &before],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let (rows, stored) = delete(&client, &[], &message_ids).await?;
        let responses = client
            .execute("DELETE FROM responses WHERE received_at < $1", &[&before])
            .await?;
        let kept: Vec<String> = client
            .query(
                "SELECT DISTINCT storage_url FROM attachments WHERE storage_url = ANY($1)",
                &[&stored],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut unreferenced: Vec<String> = stored
            .into_iter()
            .filter(|uri| !kept.contains(uri))
            .collect();
        unreferenced.sort();
        unreferenced.dedup();
        let mut rows = CrmErased::from(rows);
        rows.deleted.insert("responses", responses);
        Ok(Expired {
            messages: message_ids.len(),
            rows,
            unreferenced_blobs: unreferenced,
            message_ids,
        })
    }
    .await;
    finish(&client, execute, expired).await
}

fn failed(e: tokio_postgres::Error) -> String {
    format!("PostgreSQL: {}", safe_error(&e))
}

/// A session in `schema`, or `None` when the sink never created its tables there.
async fn open(
    target: &Target,
    tls: &Connector,
    schema: &str,
    timeout: Duration,
) -> Result<Option<Client>, String> {
    let client = session(target, tls, schema, timeout, false)
        .await
        .map_err(failed)?;
    Ok(exists(&client, schema)
        .await
        .map_err(failed)?
        .then_some(client))
}

/// Commits the open transaction when `execute` and `result` is a success, else rolls it back.
async fn finish<T>(
    client: &Client,
    execute: bool,
    result: Result<T, tokio_postgres::Error>,
) -> Result<T, String> {
    let end = if execute && result.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    client.batch_execute(end).await.map_err(failed)?;
    result.map_err(failed)
}

/// Whether the sink ever created its tables in `schema`.
async fn exists(client: &Client, schema: &str) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT to_regclass(format('%s.email_activities', $1::text)) IS NOT NULL",
            &[&migrate::quoted(schema)],
        )
        .await?;
    Ok(row.get(0))
}

/// Deletes the rows of `message_ids` and of the sender and contact `addresses`; also returns
/// the blob URIs of the deleted attachments.
async fn delete(
    client: &Client,
    addresses: &[String],
    message_ids: &[String],
) -> Result<(DeletedRows, Vec<String>), tokio_postgres::Error> {
    let mine = "message_id = ANY($1) OR lower(sender_email) = ANY($2)";
    let stored = client
        .query(
            &format!(
                "DELETE FROM attachments WHERE activity_id IN \
                 (SELECT activity_id FROM email_activities WHERE {mine}) RETURNING storage_url"
            ),
            &[&message_ids, &addresses],
        )
        .await?;
    let attachments = u64::try_from(stored.len()).unwrap_or(u64::MAX);
    let stored: Vec<String> = stored
        .iter()
        .filter_map(|row| row.get::<_, Option<String>>(0))
        .collect();
    let activities = client
        .execute(
            &format!("DELETE FROM email_activities WHERE {mine}"),
            &[&message_ids, &addresses],
        )
        .await?;
    let leads = client
        .execute(
            &format!("DELETE FROM leads WHERE {mine}"),
            &[&message_ids, &addresses],
        )
        .await?;
    let follow_ups = client
        .execute(
            "DELETE FROM follow_ups WHERE message_id = ANY($1)",
            &[&message_ids],
        )
        .await?;
    let contacts = client
        .execute(
            "DELETE FROM contacts WHERE lower(email) = ANY($1)",
            &[&addresses],
        )
        .await?;
    let rows = DeletedRows {
        contacts,
        activities,
        attachments,
        leads,
        follow_ups,
    };
    Ok((rows, stored))
}
