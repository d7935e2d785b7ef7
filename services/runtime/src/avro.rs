//! Avro in the Confluent wire format, through the schema registry.
//!
//! Values are decoded with the writer schema named by the id in each payload. Values are
//! encoded with the schema this binary was built with (from `schemas/`), registered under the
//! TopicNameStrategy subject `<prefix><topic>-value`; the registry refuses a schema that breaks
//! the subject's compatibility rule, so an incompatible build fails at start, not downstream.
//!
//! Encoding asks the registry once per output for the schema id, then writes the Confluent
//! frame (magic byte, big-endian id) and the record serialized straight from its typed form
//! against the compiled schema ([`catalog::writer`]).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use apache_avro::types::Value;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use crate::catalog::{self, WriterSchema};
use crate::config::RuntimeConfig;
use crate::error::{ProcessError, RuntimeError};
use crate::processor::{AvroRecord, EmittedValue};
use crate::topology::{Naming, Topology};

/// Decoder for one input topic and encoders for a set of output topics.
pub struct AvroCodec {
    decoder: AvroDecoder,
    encoder: AvroEncoder,
    /// Logical output topic → how to write it.
    outputs: HashMap<String, Output>,
}

/// One output topic: its subject, its compiled schema and, once known, its registry id.
struct Output {
    strategy: SubjectNameStrategy,
    writer: &'static WriterSchema,
    id: OnceLock<u32>,
}

/// The Confluent wire-format frame: magic byte 0, then the schema id, big-endian.
const MAGIC: u8 = 0;

/// Registry connection settings from the runtime config.
pub fn registry_settings(config: &RuntimeConfig) -> Result<SrSettings, RuntimeError> {
    let mut builder = SrSettings::new_builder(config.schema_registry_url().to_string());
    builder.set_timeout(Duration::from_secs(10));
    if let Some(user) = &config.schema_registry_username {
        builder.set_basic_authorization(
            user,
            config.schema_registry_password.as_ref().map(|s| s.expose()),
        );
    }
    let mut client = reqwest::Client::builder();
    if let Some(file) = &config.schema_registry_ca_file {
        let unusable = |e: &dyn std::fmt::Display| {
            RuntimeError::Config(vec![format!(
                "key `schema_registry_ca_file`: {}: {e}",
                file.display()
            )])
        };
        let pem = std::fs::read(file).map_err(|e| unusable(&e))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| unusable(&e))?;
        client = client.tls_certs_merge(certificates);
    }
    builder
        .build_with(client)
        .map_err(|e| RuntimeError::Registry(e.to_string()))
}

impl AvroCodec {
    /// A codec that can encode to each of `outputs` (logical names).
    pub fn new(
        settings: SrSettings,
        topology: &Topology,
        naming: &Naming,
        outputs: &[String],
    ) -> Result<Self, RuntimeError> {
        let mut strategies = HashMap::new();
        for logical in outputs {
            let topic = topology.topic(logical).ok_or_else(|| {
                RuntimeError::Topology(format!("output topic `{logical}` is not declared"))
            })?;
            let file = topic.schema.ok_or_else(|| {
                RuntimeError::Topology(format!("output topic `{logical}` has no schema"))
            })?;
            let text = catalog::schema(&file).ok_or_else(|| {
                RuntimeError::Topology(format!("schema `{file}` is not part of this build"))
            })?;
            let writer = catalog::writer(&file).map_err(RuntimeError::Topology)?;
            strategies.insert(
                logical.clone(),
                Output {
                    strategy: SubjectNameStrategy::TopicNameStrategyWithSchema(
                        naming.topic(logical),
                        false,
                        SuppliedSchema::new(None, SchemaType::Avro, text.to_string()),
                    ),
                    writer,
                    id: OnceLock::new(),
                },
            );
        }
        Ok(Self {
            decoder: AvroDecoder::new(settings.clone()),
            encoder: AvroEncoder::new(settings),
            outputs: strategies,
        })
    }

    /// A codec that only decodes (table readers, changelog restore).
    pub fn decoder(settings: SrSettings) -> Self {
        Self {
            decoder: AvroDecoder::new(settings.clone()),
            encoder: AvroEncoder::new(settings),
            outputs: HashMap::new(),
        }
    }

    /// Registers (or finds) every output schema; fails when the registry refuses one. A
    /// registry that cannot be reached or answers 429/5xx is [`RuntimeError::Registry`]
    /// (retriable: start-up waits for it); 401/403 is a configuration fault (the credentials)
    /// and any other refusal (an incompatible or invalid schema) a topology one: start-up
    /// stops and says why.
    pub async fn register_outputs(&self) -> Result<(), RuntimeError> {
        for (logical, output) in &self.outputs {
            let subject = output
                .strategy
                .get_subject()
                .map_err(|e| RuntimeError::Registry(e.to_string()))?;
            let registered = self
                .encoder
                .get_schema_and_id(&subject, output.strategy.clone())
                .await
                .map_err(|e| {
                    let message =
                        format!("registering the schema of `{logical}` under `{subject}`: {e}");
                    match registry_status(&e) {
                        _ if e.retriable => RuntimeError::Registry(message),
                        Some(429 | 500..) => RuntimeError::Registry(message),
                        Some(401 | 403) => RuntimeError::Config(vec![format!(
                            "{message} (check schema_registry_username and schema_registry_password)"
                        )]),
                        _ => RuntimeError::Topology(message),
                    }
                })?;
            let _ = output.id.set(registered.id);
        }
        Ok(())
    }

    /// Decodes a Confluent-framed payload. A registry that is down or refuses the request is
    /// transient ([`Self::classify`]); bytes that are not a valid Avro payload for their schema,
    /// or name a schema id the registry does not have, are poison.
    pub async fn decode(&self, payload: Option<&[u8]>) -> Result<Value, ProcessError> {
        match self.decoder.decode(payload).await {
            Ok(result) => Ok(result.value),
            Err(e) => Err(self.classify(e, "avro-decode")),
        }
    }

    /// Encodes `record` for the logical output topic `topic`. A record that does not fit the
    /// topic's schema is poison (`output-encode`).
    pub async fn encode<T: AvroRecord + Sync>(
        &self,
        topic: &str,
        record: &T,
    ) -> Result<Vec<u8>, ProcessError> {
        let (id, writer) = self.output(topic).await?;
        frame(id, writer, record)
    }

    /// What a failed registry call means for the record. schema_registry_converter calls only
    /// transport failures and 502/503 retriable; but a registry answering 401/403 (credentials
    /// rotated), 429 or any 5xx will answer again once it is fixed, and a record must never be
    /// dead-lettered for it: every answer but 404 (a schema id, or subject, it does not have)
    /// is transient. The converter caches a non-retriable error for good, so the caches are
    /// emptied of errors for the retry to ask again.
    fn classify(&self, error: SRCError, class: &str) -> ProcessError {
        let refused = registry_status(&error).is_some_and(|status| status != 404);
        if error.retriable || refused {
            if refused {
                self.decoder.remove_errors_from_cache();
                self.encoder.remove_errors_from_cache();
            }
            ProcessError::transient(format!("schema registry: {error}"))
        } else {
            ProcessError::poison(class, error)
        }
    }

    /// The registry id and compiled schema of output `topic` (the id is asked for once).
    pub(crate) async fn output(
        &self,
        topic: &str,
    ) -> Result<(u32, &'static WriterSchema), ProcessError> {
        let output = self.outputs.get(topic).ok_or_else(|| {
            ProcessError::fatal(format!(
                "the processor wrote to `{topic}`, which is not one of its outputs in the topology"
            ))
        })?;
        if let Some(id) = output.id.get() {
            return Ok((*id, output.writer));
        }
        let subject = output
            .strategy
            .get_subject()
            .map_err(|e| self.classify(e, "avro-encode"))?;
        let registered = self
            .encoder
            .get_schema_and_id(&subject, output.strategy.clone())
            .await
            .map_err(|e| self.classify(e, "avro-encode"))?;
        Ok((*output.id.get_or_init(|| registered.id), output.writer))
    }
}

/// The Confluent frame around `record` written with `writer`.
pub(crate) fn frame(
    id: u32,
    writer: &WriterSchema,
    record: &dyn EmittedValue,
) -> Result<Vec<u8>, ProcessError> {
    let mut payload = Vec::with_capacity(256);
    payload.push(MAGIC);
    payload.extend_from_slice(&id.to_be_bytes());
    record
        .write_avro(writer, &mut payload)
        .map_err(|e| ProcessError::poison("output-encode", e))?;
    Ok(payload)
}

/// The HTTP status a registry answered with, from the error schema_registry_converter makes of
/// an unsuccessful answer ("... failed with status 401 Unauthorized"); `None` for any other
/// error (unreachable registry, bytes that do not decode).
fn registry_status(error: &SRCError) -> Option<u16> {
    let (_, rest) = error.error.split_once("failed with status ")?;
    rest.get(..3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU16, Ordering};

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::get;

    use super::*;

    /// A registry that answers `GET /schemas/ids/1` with the status in `status` (200: a schema).
    async fn registry(status: Arc<AtomicU16>) -> String {
        async fn schema(State(status): State<Arc<AtomicU16>>) -> (StatusCode, String) {
            let code = StatusCode::from_u16(status.load(Ordering::SeqCst))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = if code.is_success() {
                r#"{"schema":"{\"type\":\"record\",\"name\":\"beat\",\"fields\":[{\"name\":\"n\",\"type\":\"long\"}]}"}"#
            } else {
                r#"{"error_code":40100,"message":"refused"}"#
            };
            (code, body.into())
        }
        let app = axum::Router::new()
            .route("/schemas/ids/1", get(schema))
            .with_state(status);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn a_registry_refusing_a_request_is_transient_and_asked_again() {
        let status = Arc::new(AtomicU16::new(401));
        let url = registry(status.clone()).await;
        let codec = AvroCodec::decoder(SrSettings::new(url));
        // magic byte, schema id 1, then the long 3 (zig-zag: 6)
        let payload = [0u8, 0, 0, 0, 1, 6];
        for refused in [401, 403, 429, 500, 504] {
            status.store(refused, Ordering::SeqCst);
            let error = codec.decode(Some(&payload)).await.expect_err("refused");
            assert!(
                matches!(error, ProcessError::Transient(_)),
                "{refused}: {error:?}"
            );
        }
        status.store(200, Ordering::SeqCst);
        let value = codec
            .decode(Some(&payload))
            .await
            .expect("asked again, not answered from the converter's error cache");
        assert_eq!(value, Value::Record(vec![("n".into(), Value::Long(3))]));
    }

    #[tokio::test]
    async fn a_schema_id_the_registry_does_not_have_is_poison() {
        let url = registry(Arc::new(AtomicU16::new(404))).await;
        let codec = AvroCodec::decoder(SrSettings::new(url));
        let error = codec
            .decode(Some(&[0u8, 0, 0, 0, 1, 6]))
            .await
            .expect_err("unknown id");
        assert!(
            matches!(&error, ProcessError::Poison { class, .. } if class == "avro-decode"),
            "{error:?}"
        );
    }
}
