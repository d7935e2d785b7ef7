//! One hop of the pass-through chain `bench-pipeline` measures the topology against: the
//! pass-through processor's work (consume `read_committed`, Avro decode, re-encode, produce,
//! offsets in the transaction) on the same runtime (`mailstream_runtime::stream::run`), wired
//! into a chain of four hops like the topology's four stream processors:
//!
//! ```text
//! bench.in ─hop1─▶ bench.hop1 ─hop2─▶ bench.hop2 ─hop3─▶ bench.hop3 ─hop4─▶ bench.out
//! ```
//!
//! The chain's wiring is this file's own topology ([`CHAIN`]), so the product's
//! `topology/topology.yaml` (and the Helm chart generated from it) carries no benchmark topics
//! beyond `bench.in`/`bench.out`; `bench-pipeline` creates `bench.hop1..3` under its prefix.
//! Run as `bench-hop N` (1 to 4) with the usual `MAILSTREAM_*` environment.

use mailstream_runtime::{
    ConfigSource, GenericRecord, Incoming, NoSettings, Outputs, ProcessError, Processor, Shutdown,
    Topology, config, metrics, stream, telemetry,
};

/// The chain's topology: four pass-through hops.
pub const CHAIN: &str = r#"
defaults: {partitions: 6, replication_factor: 1, dlq_retention_ms: 86400000}
topics:
  bench.in: {kind: stream, doc: chain input, key: id, schema: bench-record.avsc}
  bench.hop1: {kind: stream, doc: after hop 1, key: id, schema: bench-record.avsc}
  bench.hop2: {kind: stream, doc: after hop 2, key: id, schema: bench-record.avsc}
  bench.hop3: {kind: stream, doc: after hop 3, key: id, schema: bench-record.avsc}
  bench.out: {kind: stream, doc: chain output, key: id, schema: bench-record.avsc}
processors:
  bench-hop1: {doc: hop 1, input: bench.in, outputs: [bench.hop1], optional: true}
  bench-hop2: {doc: hop 2, input: bench.hop1, outputs: [bench.hop2], optional: true}
  bench-hop3: {doc: hop 3, input: bench.hop2, outputs: [bench.hop3], optional: true}
  bench-hop4: {doc: hop 4, input: bench.hop3, outputs: [bench.out], optional: true}
"#;

const NAMES: [&str; 4] = ["bench-hop1", "bench-hop2", "bench-hop3", "bench-hop4"];
const OUTPUTS: [&str; 4] = ["bench.hop1", "bench.hop2", "bench.hop3", "bench.out"];

/// Hop `K + 1`: copies each record unchanged to the next topic.
struct Hop<const K: usize>;

impl<const K: usize> Processor for Hop<K> {
    type Input = GenericRecord;
    const NAME: &'static str = NAMES[K];

    async fn process(
        &mut self,
        record: Incoming<GenericRecord>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        out.send(OUTPUTS[K], record.key.unwrap_or_default(), record.value);
        Ok(())
    }
}

async fn serve<P: Processor>(processor: P) -> anyhow::Result<()> {
    let source = ConfigSource::from_process(None);
    let (config, _): (_, NoSettings) = config::load(P::NAME, &source)?;
    let _telemetry = telemetry::init(&config, P::NAME)?;
    let topology = Topology::parse(CHAIN)?;
    let shutdown = Shutdown::on_signals();
    stream::run(
        config,
        topology,
        processor,
        metrics::Metrics::new(),
        shutdown,
    )
    .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("1") => serve(Hop::<0>).await,
        Some("2") => serve(Hop::<1>).await,
        Some("3") => serve(Hop::<2>).await,
        Some("4") => serve(Hop::<3>).await,
        _ => anyhow::bail!("usage: bench-hop 1|2|3|4"),
    }
}
