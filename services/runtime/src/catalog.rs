//! The topology file and Avro schemas this binary was built with (embedded by `build.rs`), and
//! the writers compiled from them.
//!
//! A [`WriterSchema`] is a schema parsed and its named types resolved, once per process: output
//! records are serialized against it straight from their typed form, without building an
//! intermediate Avro `Value` tree per record (which cost more than the parsing it followed).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use apache_avro::Schema;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::Serialize;

include!(concat!(env!("OUT_DIR"), "/catalog.rs"));

/// The text of schema file `name` (such as `parsed.avsc`), if it is part of the build.
pub fn schema(name: &str) -> Option<&'static str> {
    SCHEMAS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// A schema of this build, ready to write records: parsed once, names resolved once.
pub struct WriterSchema {
    writer: GenericDatumWriter<'static>,
}

impl std::fmt::Debug for WriterSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterSchema").finish_non_exhaustive()
    }
}

impl WriterSchema {
    /// Appends the Avro binary encoding of `record` (a serde type mirroring the schema).
    pub fn write_ser<T: Serialize + ?Sized>(
        &self,
        record: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        self.writer
            .write_ser(out, &record)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Appends the Avro binary encoding of `value`, after checking that it fits the schema.
    pub fn write_value(&self, value: &Value, out: &mut Vec<u8>) -> Result<(), String> {
        self.writer
            .write_value_ref(out, value)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Schemas compiled so far. Each is built at most once per process and lives as long as it
/// (the set is bounded by the schema files of the build), hence the leak.
static WRITERS: LazyLock<Mutex<HashMap<&'static str, &'static WriterSchema>>> =
    LazyLock::new(Default::default);

/// The writer for schema file `name`; `Err` when it is not part of the build or does not parse.
pub fn writer(name: &str) -> Result<&'static WriterSchema, String> {
    let (file, text) = SCHEMAS
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| format!("schema `{name}` is not part of this build"))?;
    let mut writers = WRITERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(writer) = writers.get(file) {
        return Ok(writer);
    }
    let parsed: &'static Schema = Box::leak(Box::new(
        Schema::parse_str(text).map_err(|e| format!("schema `{name}`: {e}"))?,
    ));
    let writer = GenericDatumWriter::builder(parsed)
        .human_readable(false)
        .build()
        .map_err(|e| format!("schema `{name}`: {e}"))?;
    let compiled: &'static WriterSchema = Box::leak(Box::new(WriterSchema { writer }));
    writers.insert(file, compiled);
    Ok(compiled)
}
