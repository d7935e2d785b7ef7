//! Embeds `topology/topology.yaml` and every `schemas/*.avsc` into the runtime, so a binary
//! carries the exact topology and schemas it was built with (see `src/catalog.rs`).
//!
//! Schemas are composed here: a schema may name a type another file defines by its full name
//! (`"type": "io.mailstream.ParsedEmail"`), and the embedded text has that definition inlined at
//! its first use. So `resolved.avsc` carries the parsed email without copying its 60 lines, and
//! every embedded (and registered) schema is self-contained, as the registry and Avro readers in
//! other languages need.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let root = Path::new(&manifest).join("../..");
    let topology = root.join("topology/topology.yaml");
    let schemas = root.join("schemas");
    println!("cargo:rerun-if-changed={}", topology.display());
    println!("cargo:rerun-if-changed={}", schemas.display());

    let mut names: Vec<String> = std::fs::read_dir(&schemas)
        .expect("schemas/ is readable")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".avsc"))
        .collect();
    names.sort();

    let mut documents = BTreeMap::new();
    for name in &names {
        let path = schemas.join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(&path).expect("schema file is readable");
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("schemas/{name} is not valid JSON: {e}"));
        documents.insert(name.clone(), json);
    }
    let mut definitions = BTreeMap::new();
    for json in documents.values() {
        collect_definitions(json, None, &mut definitions);
    }

    let mut out = String::new();
    let abs = |p: &Path| p.canonicalize().expect("path exists").display().to_string();
    writeln!(
        out,
        "pub static TOPOLOGY_YAML: &str = include_str!({:?});",
        abs(&topology)
    )
    .ok();
    writeln!(out, "pub static SCHEMAS: &[(&str, &str)] = &[").ok();
    for (name, json) in documents {
        let mut defined = HashSet::new();
        let composed = compose(json, None, true, &definitions, &mut defined);
        let text = serde_json::to_string_pretty(&composed).expect("JSON serializes");
        let dest = Path::new(&out_dir).join(format!("composed-{name}"));
        std::fs::write(&dest, text).expect("write composed schema");
        writeln!(out, "    ({name:?}, include_str!({:?})),", dest.display()).ok();
    }
    writeln!(out, "];").ok();
    std::fs::write(Path::new(&out_dir).join("catalog.rs"), out).expect("write catalog.rs");
}

/// The full name of a named type definition (`record`, `enum`, `fixed`), if `node` is one.
fn full_name(node: &Value, namespace: Option<&str>) -> Option<(String, Option<String>)> {
    let object = node.as_object()?;
    let kind = object.get("type")?.as_str()?;
    if !matches!(kind, "record" | "enum" | "fixed" | "error") {
        return None;
    }
    let name = object.get("name")?.as_str()?;
    if name.contains('.') {
        let ns = name.rsplit_once('.').map(|(ns, _)| ns.to_string());
        return Some((name.to_string(), ns));
    }
    let ns = object
        .get("namespace")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| namespace.map(str::to_string));
    let full = match &ns {
        Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    };
    Some((full, ns))
}

/// Every named type defined anywhere in `node`, by full name.
fn collect_definitions(node: &Value, namespace: Option<&str>, into: &mut BTreeMap<String, Value>) {
    match node {
        Value::Object(object) => {
            let mut ns = namespace.map(str::to_string);
            if let Some((full, own_ns)) = full_name(node, namespace) {
                // Inlined elsewhere, the definition must keep its namespace explicitly.
                let mut definition = node.clone();
                if let (Some(own), Some(obj)) = (&own_ns, definition.as_object_mut()) {
                    obj.insert("namespace".into(), Value::String(own.clone()));
                }
                into.insert(full, definition);
                ns = own_ns;
            }
            for value in object.values() {
                collect_definitions(value, ns.as_deref(), into);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_definitions(item, namespace, into);
            }
        }
        _ => {}
    }
}

/// Inlines, at its first use in document order, each type `node` names but does not define.
fn compose(
    node: Value,
    namespace: Option<&str>,
    type_position: bool,
    definitions: &BTreeMap<String, Value>,
    defined: &mut HashSet<String>,
) -> Value {
    match node {
        Value::String(name) if type_position && name.contains('.') && !defined.contains(&name) => {
            match definitions.get(&name) {
                Some(definition) => {
                    compose(definition.clone(), namespace, true, definitions, defined)
                }
                None => Value::String(name),
            }
        }
        Value::Object(object) => {
            let mut ns = namespace.map(str::to_string);
            if let Some((full, own_ns)) = full_name(&Value::Object(object.clone()), namespace) {
                defined.insert(full);
                ns = own_ns;
            }
            let object = object
                .into_iter()
                .map(|(key, value)| {
                    let in_type = matches!(key.as_str(), "type" | "items" | "values" | "fields");
                    let value = compose(value, ns.as_deref(), in_type, definitions, defined);
                    (key, value)
                })
                .collect();
            Value::Object(object)
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| compose(item, namespace, type_position, definitions, defined))
                .collect(),
        ),
        other => other,
    }
}
