//! A small client for the Confluent Schema Registry REST API (subjects, versions, config and
//! compatibility), used by `topology apply` to register schemas and report whether they changed
//! and by `schemas check|register`.

use anyhow::{Context, bail};
use mailstream_runtime::config::{RuntimeConfig, Secret};
use serde::Deserialize;
use serde_json::json;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, Option<Secret>)>,
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
    /// The registry the runtime settings name, with their credentials.
    pub fn from_config(config: &RuntimeConfig) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: config
                .schema_registry_url()
                .trim_end_matches('/')
                .to_string(),
            auth: config
                .schema_registry_username
                .clone()
                .map(|u| (u, config.schema_registry_password.clone())),
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", CONTENT_TYPE);
        self.authorized(request)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.authorized(self.http.get(format!("{}{path}", self.base)))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((user, password)) => {
                request.basic_auth(user, password.as_ref().map(Secret::expose))
            }
            None => request,
        }
    }

    /// GETs `path`: the status and the JSON body (`Null` when the body is not JSON).
    pub async fn get_json(&self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let response = self.get(path).send().await.with_context(|| {
            format!(
                "reading {path} from the registry at {} (is it up? check schema_registry_url)",
                self.base
            )
        })?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or_default()))
    }

    /// POSTs `body` to `path`: the status and the JSON body (`Null` when it is not JSON).
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let response = self.post(path).json(body).send().await.with_context(|| {
            format!(
                "posting to {path} on the registry at {} (is it up? check schema_registry_url)",
                self.base
            )
        })?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or_default()))
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
