//! Embeds `topology/topology.yaml` and every `schemas/*.avsc` into the runtime, so a binary
//! carries the exact topology and schemas it was built with (see `src/catalog.rs`).

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
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

    let mut out = String::new();
    let abs = |p: &Path| p.canonicalize().expect("path exists").display().to_string();
    writeln!(
        out,
        "pub static TOPOLOGY_YAML: &str = include_str!({:?});",
        abs(&topology)
    )
    .ok();
    writeln!(out, "pub static SCHEMAS: &[(&str, &str)] = &[").ok();
    for name in names {
        println!("cargo:rerun-if-changed={}", schemas.join(&name).display());
        writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            abs(&schemas.join(&name))
        )
        .ok();
    }
    writeln!(out, "];").ok();
    let dest = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("catalog.rs");
    std::fs::write(dest, out).expect("write catalog.rs");
}
