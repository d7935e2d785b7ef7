//! The mailstream processor runtime.
//!
//! Every mailstream service is a [`Processor`]: a small struct with its business logic. This
//! crate owns everything else: layered [`config`], the [`topology`] (which topics a processor
//! reads and writes), Avro through the schema registry ([`avro`]), the exactly-once
//! consume-process-produce loop with Kafka transactions ([`stream`]), the dead-letter path
//! ([`dlq`]), metrics and named events ([`metrics`], [`events`]), health endpoints
//! ([`health`]), logs and OTLP traces ([`telemetry`]) and graceful [`shutdown`].

pub mod avro;
pub mod blob;
pub mod catalog;
pub mod config;
pub mod dlq;
pub mod erasure;
pub mod error;
pub mod events;
pub mod headers;
pub mod health;
pub mod kafka;
pub mod mbox;
pub mod metrics;
pub mod processor;
pub mod records;
pub mod shutdown;
pub mod signing;
pub mod state;
pub mod stream;
pub mod table;
pub mod telemetry;
pub mod topology;

pub use config::{ConfigSource, RuntimeConfig};
pub use error::{ProcessError, RuntimeError};
pub use processor::{AvroRecord, GenericRecord, Incoming, Outputs, Processor, RecordMeta};
pub use shutdown::Shutdown;
pub use state::{KeyedStore, RecordReader, RestoreContext, StoreLimits};
pub use table::{Arrivals, GlobalTable};
pub use topology::{Naming, Topology};

/// Settings for a processor that has none of its own.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

impl config::Settings for NoSettings {}

/// What a processor's constructor gets besides its own settings.
#[derive(Clone)]
pub struct BuildContext {
    /// The validated runtime configuration.
    pub config: RuntimeConfig,
    /// Fires on SIGTERM/SIGINT; background tasks a processor starts (table readers, file
    /// watchers) stop on it.
    pub shutdown: Shutdown,
    /// The registry `/metrics` serves: a processor registers its own metrics here
    /// (`metrics.registry`), next to the runtime's.
    pub metrics: metrics::Metrics,
}

impl BuildContext {
    /// Topic naming of this deployment (its prefix).
    pub fn naming(&self) -> Naming {
        Naming::new(self.config.topic_prefix.clone())
    }
}

/// Loads config for processor `P`, sets up logging, builds the processor with `build` (which may
/// connect to things, or load tables, before the first record) and runs it until SIGTERM/SIGINT.
/// The shared entry point of every `mailstream run <processor>`.
pub async fn serve<P, S, F, Fut>(source: ConfigSource, build: F) -> Result<(), RuntimeError>
where
    P: Processor,
    S: config::Settings,
    F: FnOnce(BuildContext, S) -> Fut,
    Fut: std::future::Future<Output = Result<P, RuntimeError>>,
{
    let (config, settings) = config::load::<S>(P::NAME, &source)?;
    let _telemetry = telemetry::init(&config, P::NAME)?;
    let topology = Topology::embedded()?;
    let shutdown = Shutdown::on_signals();
    let metrics = metrics::Metrics::new();
    let context = BuildContext {
        config: config.clone(),
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
    };
    let processor = build(context, settings).await?;
    stream::run(config, topology, processor, metrics, shutdown).await
}
