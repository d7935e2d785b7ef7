//! The pass-through processor: copies each `bench.in` record to `bench.out` unchanged.
//!
//! It exists to measure and test the runtime itself. As a benchmark baseline it costs exactly
//! what every processor pays (consume, Avro decode and encode, transactional produce, offset
//! commit) and nothing more; as a test subject it proves exactly-once, the dead-letter path and
//! shutdown without any business logic in the way.

use mailstream_runtime::{GenericRecord, Incoming, Outputs, ProcessError, Processor};

/// Copies records from its input to its output.
#[derive(Debug, Default)]
pub struct Passthrough;

/// The topic it writes.
pub const OUTPUT: &str = "bench.out";

impl Processor for Passthrough {
    type Input = GenericRecord;
    const NAME: &'static str = "passthrough";

    async fn process(
        &mut self,
        record: Incoming<GenericRecord>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        out.send(OUTPUT, record.key.unwrap_or_default(), record.value);
        Ok(())
    }
}
