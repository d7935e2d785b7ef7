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
use schema_registry_converter::async_impl::easy_avro::{EasyAvroDecoder, EasyAvroEncoder};
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
    decoder: EasyAvroDecoder,
    encoder: EasyAvroEncoder,
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
    builder
        .build()
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
            decoder: EasyAvroDecoder::new(settings.clone()),
            encoder: EasyAvroEncoder::new(settings),
            outputs: strategies,
        })
    }

    /// A codec that only decodes (table readers, changelog restore).
    pub fn decoder(settings: SrSettings) -> Self {
        Self {
            decoder: EasyAvroDecoder::new(settings.clone()),
            encoder: EasyAvroEncoder::new(settings),
            outputs: HashMap::new(),
        }
    }

    /// Registers (or finds) every output schema; fails when the registry refuses one.
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
                    RuntimeError::Registry(format!(
                        "registering the schema of `{logical}` under `{subject}`: {e}"
                    ))
                })?;
            let _ = output.id.set(registered.id);
        }
        Ok(())
    }

    /// Decodes a Confluent-framed payload. A registry outage is transient; bytes that are not
    /// a valid Avro payload for their schema are poison.
    pub async fn decode(&self, payload: Option<&[u8]>) -> Result<Value, ProcessError> {
        match self.decoder.decode(payload).await {
            Ok(result) => Ok(result.value),
            Err(e) => Err(classify(e, "avro-decode")),
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
            .map_err(|e| classify(e, "avro-encode"))?;
        let registered = self
            .encoder
            .get_schema_and_id(&subject, output.strategy.clone())
            .await
            .map_err(|e| classify(e, "avro-encode"))?;
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

fn classify(error: SRCError, class: &str) -> ProcessError {
    if error.retriable {
        ProcessError::transient(format!("schema registry: {error}"))
    } else {
        ProcessError::poison(class, error)
    }
}
