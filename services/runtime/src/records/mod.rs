//! Typed views of the Avro records that more than one service reads or writes. Each type mirrors
//! its schema in `schemas/`; a test round-trips it through the schema so the two cannot drift.

mod crm;
mod parsed;
mod raw_email;
mod resolved;
mod scored;
mod tables;

pub use crm::CrmResult;
pub use parsed::{
    Address, Attachment, AuthResults, AutoReply, Bounce, Disposition, Header, ListInfo, ParsedEmail,
};
pub use raw_email::{Envelope, IngestSource, RawEmail};
pub use resolved::{AccountMatch, ContactMatch, NewContactProposal, ResolvedEmail};
pub use scored::{Lead, RuleHit, ScoredLead};
pub use tables::{Account, Contact, DedupeEntry, Duplicate, ThreadLink};

#[cfg(test)]
pub(crate) mod roundtrip {
    use apache_avro::Schema;

    use crate::catalog;
    use crate::processor::AvroRecord;

    /// Resolves `record` against schema file `schema` (what the encoder does) and maps the
    /// resolved value back.
    pub fn through_schema<T: AvroRecord>(schema: &str, record: T) -> T {
        let schema =
            Schema::parse_str(catalog::schema(schema).expect("schema in build")).expect("parses");
        let value = record
            .into_avro()
            .expect("to value")
            .resolve(&schema)
            .expect("value fits the schema");
        assert!(value.validate(&schema), "resolved value validates");
        T::from_avro(value).expect("from value")
    }
}
