//! Schema migrations of the PostgreSQL backend: the SQL files in `migrations/`, embedded in the
//! binary, applied at start in order under an advisory lock (so instances starting together
//! apply each once) and recorded in `mailstream_migrations` with their SHA-256, so a migration
//! edited after it was applied stops start-up instead of drifting silently.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

/// Every migration: version, name, SQL. Append only; never edit one that shipped.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_init",
        include_str!("../../migrations/0001_init.sql"),
    ),
    (
        2,
        "0002_accounts_last_writer",
        include_str!("../../migrations/0002_accounts_last_writer.sql"),
    ),
    (
        3,
        "0003_keys_of_any_length",
        include_str!("../../migrations/0003_keys_of_any_length.sql"),
    ),
    (
        4,
        "0004_contact_signals_and_routing",
        include_str!("../../migrations/0004_contact_signals_and_routing.sql"),
    ),
    (
        5,
        "0005_meetings",
        include_str!("../../migrations/0005_meetings.sql"),
    ),
    (
        6,
        "0006_first_responses",
        include_str!("../../migrations/0006_first_responses.sql"),
    ),
    (
        7,
        "0007_source_alias",
        include_str!("../../migrations/0007_source_alias.sql"),
    ),
    (
        8,
        "0008_contact_details",
        include_str!("../../migrations/0008_contact_details.sql"),
    ),
];

/// The double-quoted identifier of `schema` (validated by the settings as `[a-z_][a-z0-9_]*`).
pub fn quoted(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}

/// Creates `schema` if needed and applies the migrations it lacks. Returns the versions applied.
pub async fn migrate(client: &Client, schema: &str) -> Result<Vec<i32>, String> {
    let lock_key = format!("mailstream-crm-sink:{schema}");
    client
        .execute("SELECT pg_advisory_lock(hashtext($1))", &[&lock_key])
        .await
        .map_err(|e| format!("taking the migration lock: {e}"))?;
    let result = apply(client, schema).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&lock_key])
        .await;
    let applied = result?;
    unlocked.map_err(|e| format!("releasing the migration lock: {e}"))?;
    Ok(applied)
}

async fn apply(client: &Client, schema: &str) -> Result<Vec<i32>, String> {
    let schema_q = quoted(schema);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema_q};
             SET search_path TO {schema_q};
             CREATE TABLE IF NOT EXISTS mailstream_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 sha256     text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );"
        ))
        .await
        .map_err(|e| format!("preparing schema {schema}: {e}"))?;
    let rows = client
        .query("SELECT version, sha256 FROM mailstream_migrations", &[])
        .await
        .map_err(|e| format!("reading mailstream_migrations: {e}"))?;
    let done: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        let sha = hex::encode(Sha256::digest(sql.as_bytes()));
        if let Some((_, recorded)) = done.iter().find(|(v, _)| v == version) {
            if *recorded != sha {
                return Err(format!(
                    "migration {name} changed after it was applied to schema {schema} \
                     (recorded sha256 {recorded}, this build {sha}); add a new migration instead"
                ));
            }
            continue;
        }
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| format!("migration {name}: {e}"))?;
        let step = async {
            client.batch_execute(sql).await?;
            client
                .execute(
                    "INSERT INTO mailstream_migrations (version, name, sha256) VALUES ($1, $2, $3)",
                    &[version, name, &sha],
                )
                .await?;
            client.batch_execute("COMMIT").await
        };
        if let Err(e) = step.await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(format!("migration {name} failed: {e}"));
        }
        tracing::info!(schema, migration = *name, "migration applied");
        applied.push(*version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_and_name_their_files() {
        for (i, (version, name, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version as usize, i + 1);
            assert!(name.starts_with(&format!("{version:04}_")));
            assert!(!sql.trim().is_empty());
        }
        assert_eq!(quoted("crm"), "\"crm\"");
    }
}
