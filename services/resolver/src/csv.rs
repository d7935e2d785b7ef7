//! Contacts and accounts from a CRM export (CSV with a header row), for `mailstream tables load`
//! and the offline `mailstream score`. Columns are found by name, case-insensitively; columns
//! the resolver does not use are ignored, so a CRM's full export loads as it is.
//!
//! - contacts: `email` and `contact_id` (or `id`) required; `name`, `account_id` optional.
//! - accounts: `domain` and `account_id` (or `id`) required; `name`, `target_account`
//!   (`true`/`yes`/`1`) optional.

use std::path::Path;

use mailstream_runtime::records::{Account, Contact};

/// A CSV file's rows as (column name → value) lookups.
struct Table {
    headers: Vec<String>,
    rows: Vec<::csv::StringRecord>,
}

impl Table {
    fn read(path: &Path) -> Result<Self, String> {
        let mut reader = ::csv::ReaderBuilder::new()
            .trim(::csv::Trim::All)
            .flexible(true)
            .from_path(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let headers = reader
            .headers()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').to_ascii_lowercase())
            .collect();
        let rows = reader
            .records()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self { headers, rows })
    }

    fn column(&self, path: &Path, names: &[&str]) -> Result<usize, String> {
        self.optional(names).ok_or_else(|| {
            format!(
                "{}: no `{}` column (columns: {})",
                path.display(),
                names.join("` or `"),
                self.headers.join(", ")
            )
        })
    }

    fn optional(&self, names: &[&str]) -> Option<usize> {
        names
            .iter()
            .find_map(|n| self.headers.iter().position(|h| h == n))
    }
}

fn cell(row: &::csv::StringRecord, column: Option<usize>) -> Option<String> {
    column
        .and_then(|c| row.get(c))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Reads a contacts export; `updated_at` is stamped on every row.
pub fn read_contacts(path: &Path, updated_at: i64) -> Result<Vec<Contact>, String> {
    let table = Table::read(path)?;
    let email = table.column(path, &["email", "email_address"])?;
    let id = table.column(path, &["contact_id", "id"])?;
    let name = table.optional(&["name", "full_name"]);
    let account = table.optional(&["account_id", "company_id"]);
    let mut contacts = Vec::new();
    for (n, row) in table.rows.iter().enumerate() {
        let (Some(email), Some(contact_id)) = (cell(row, Some(email)), cell(row, Some(id))) else {
            return Err(format!(
                "{} line {}: email and contact id are required",
                path.display(),
                n + 2
            ));
        };
        contacts.push(Contact {
            email: email.to_ascii_lowercase(),
            contact_id,
            name: cell(row, name),
            account_id: cell(row, account),
            updated_at,
        });
    }
    Ok(contacts)
}

/// Reads an accounts export; `updated_at` is stamped on every row.
pub fn read_accounts(path: &Path, updated_at: i64) -> Result<Vec<Account>, String> {
    let table = Table::read(path)?;
    let domain = table.column(path, &["domain", "website_domain"])?;
    let id = table.column(path, &["account_id", "id", "company_id"])?;
    let name = table.optional(&["name", "company_name"]);
    let target = table.optional(&["target_account", "target"]);
    let mut accounts = Vec::new();
    for (n, row) in table.rows.iter().enumerate() {
        let (Some(domain), Some(account_id)) = (cell(row, Some(domain)), cell(row, Some(id)))
        else {
            return Err(format!(
                "{} line {}: domain and account id are required",
                path.display(),
                n + 2
            ));
        };
        let target_account = cell(row, target)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "1" | "y"));
        accounts.push(Account {
            domain: domain.trim_start_matches('@').to_ascii_lowercase(),
            account_id,
            name: cell(row, name),
            target_account,
            updated_at,
        });
    }
    Ok(accounts)
}
