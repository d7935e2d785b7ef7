//! A small client for the Confluent Schema Registry REST API (subjects and versions), used by
//! `topology apply` to register schemas and report whether they changed.

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::json;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, Option<String>)>,
}

/// What registering a schema did.
#[derive(Debug, PartialEq, Eq)]
pub enum Registration {
    Unchanged { id: i64, version: i64 },
    Registered { id: i64 },
}

#[derive(Deserialize)]
struct Lookup {
    id: i64,
    version: i64,
}

#[derive(Deserialize)]
struct Registered {
    id: i64,
}

impl RegistryClient {
    pub fn new(base: &str, user: Option<String>, password: Option<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            auth: user.map(|u| (u, password)),
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", CONTENT_TYPE);
        match &self.auth {
            Some((user, password)) => request.basic_auth(user, password.as_deref()),
            None => request,
        }
    }

    /// Registers `schema` under `subject` unless the subject already holds it.
    pub async fn register(&self, subject: &str, schema: &str) -> anyhow::Result<Registration> {
        let body = json!({ "schema": schema, "schemaType": "AVRO" });
        let lookup = self
            .post(&format!("/subjects/{subject}"))
            .json(&body)
            .send()
            .await
            .with_context(|| {
                format!(
                    "looking up subject {subject} in the registry at {}",
                    self.base
                )
            })?;
        if lookup.status().is_success() {
            let found: Lookup = lookup
                .json()
                .await
                .context("reading the registry's answer")?;
            return Ok(Registration::Unchanged {
                id: found.id,
                version: found.version,
            });
        }
        let response = self
            .post(&format!("/subjects/{subject}/versions"))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("registering subject {subject}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("the registry refused the schema for {subject} ({status}): {text}");
        }
        let registered: Registered = response
            .json()
            .await
            .context("reading the registry's answer")?;
        Ok(Registration::Registered { id: registered.id })
    }
}
