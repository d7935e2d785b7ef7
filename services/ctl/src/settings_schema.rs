//! The JSON Schema of each processor's settings, derived from the settings structs themselves
//! (`schemars`): `helm/generate.py` turns it into the processors' `config` blocks of the
//! chart's values schema. The copy it reads, `helm/settings.schema.json`, is kept current by
//! this module's test (`MAILSTREAM_BLESS=1 cargo test -p mailstream-ctl settings_schema`
//! rewrites it).

use mailstream_crm_sink::CrmSinkSettings;
use mailstream_ingest::IngestSettings;
use mailstream_notifier::NotifierSettings;
use mailstream_parser::ParserSettings;
use mailstream_resolver::ResolverSettings;
use mailstream_scorer::ScorerSettings;
use schemars::schema_for;
use serde_json::{Map, Value};

/// Processor section → the JSON Schema of its settings.
fn document() -> Value {
    let schemas = [
        ("ingest", schema_for!(IngestSettings)),
        ("parser", schema_for!(ParserSettings)),
        ("resolver", schema_for!(ResolverSettings)),
        ("scorer", schema_for!(ScorerSettings)),
        ("crm-sink", schema_for!(CrmSinkSettings)),
        ("notifier", schema_for!(NotifierSettings)),
    ];
    let mut out = Map::new();
    for (section, schema) in schemas {
        out.insert(section.into(), schema.to_value());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charts_copy_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../helm/settings.schema.json");
        let text = serde_json::to_string_pretty(&document()).expect("JSON") + "\n";
        if std::env::var_os("MAILSTREAM_BLESS").is_some() {
            std::fs::write(&path, &text).expect("write helm/settings.schema.json");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == text,
            "helm/settings.schema.json is not what the settings structs say; rewrite it with \
             `MAILSTREAM_BLESS=1 cargo test -p mailstream-ctl settings_schema` and run \
             `python3 helm/generate.py`"
        );
    }
}
