//! The topology file and Avro schemas this binary was built with (embedded by `build.rs`).

include!(concat!(env!("OUT_DIR"), "/catalog.rs"));

/// The text of schema file `name` (such as `parsed.avsc`), if it is part of the build.
pub fn schema(name: &str) -> Option<&'static str> {
    SCHEMAS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}
