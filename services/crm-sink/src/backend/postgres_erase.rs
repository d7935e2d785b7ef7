//! Erasure in the PostgreSQL CRM (`mailstream erase`): every row of one person, deleted in one
//! database transaction. A dry run runs the same statements and rolls them back, so what it
//! reports is exactly what `--execute` deletes.
//!
//! A person's rows: their contact (by email), the activities of the emails they took part in
//! (by message id, and any they sent) with those activities' attachments, the leads of those
//! emails (and any with them as sender), and the follow-ups of those emails. Accounts and deals
//! are the companies' and stay.

use std::time::Duration;

use serde::Serialize;
use tokio_postgres::Client;

use super::migrate;
use super::postgres::session;
use super::postgres_sql::safe_error;
use super::postgres_tls::{Connector, Target};

/// Rows deleted (or, in a dry run, that would be), by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ErasedRows {
    pub contacts: u64,
    pub activities: u64,
    pub attachments: u64,
    pub leads: u64,
    pub follow_ups: u64,
}

impl ErasedRows {
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
) -> Result<ErasedRows, String> {
    let failed = |e: tokio_postgres::Error| format!("PostgreSQL: {}", safe_error(&e));
    let client = session(target, tls, schema, timeout, false)
        .await
        .map_err(failed)?;
    if !exists(&client, schema).await.map_err(failed)? {
        return Ok(ErasedRows::default());
    }
    client.batch_execute("BEGIN").await.map_err(failed)?;
    let deleted = delete(&client, addresses, message_ids).await;
    let end = if execute && deleted.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    client.batch_execute(end).await.map_err(failed)?;
    deleted.map_err(failed)
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

async fn delete(
    client: &Client,
    addresses: &[String],
    message_ids: &[String],
) -> Result<ErasedRows, tokio_postgres::Error> {
    let mine = "message_id = ANY($1) OR lower(sender_email) = ANY($2)";
    let attachments = client
        .execute(
            &format!(
                "DELETE FROM attachments WHERE activity_id IN \
                 (SELECT activity_id FROM email_activities WHERE {mine})"
            ),
            &[&message_ids, &addresses],
        )
        .await?;
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
    Ok(ErasedRows {
        contacts,
        activities,
        attachments,
        leads,
        follow_ups,
    })
}
