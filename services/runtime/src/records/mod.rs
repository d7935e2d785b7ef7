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
    Address, Attachment, Attendee, AuthResults, AutoReply, Bounce, BounceRecipient, ContactDetails,
    Disposition, FormLead, Forwarded, Header, ListInfo, Meeting, ParsedEmail, ReplyStripping,
    Truncation, is_failure_class,
};
pub use raw_email::{Envelope, IngestSource, RawEmail};
pub use resolved::{AccountMatch, ContactMatch, NewContactProposal, ResolvedEmail};
pub use scored::{Lead, Routing, RuleHit, ScoredLead};
pub use tables::{
    Account, Contact, DedupeEntry, Duplicate, Erasure, OptOut, PendingReply, ThreadLink,
};

#[cfg(test)]
pub(crate) mod roundtrip {
    use apache_avro::Schema;

    use crate::catalog;
    use crate::processor::AvroRecord;

    /// Writes `record` as the runtime does (serialized straight against the compiled schema),
    /// checks the bytes equal those of the generic path (`Value`, resolved against the schema,
    /// encoded), reads them back with the schema and maps the value back.
    pub fn through_schema<T: AvroRecord>(schema_file: &str, record: T) -> T {
        let schema = Schema::parse_str(catalog::schema(schema_file).expect("schema in build"))
            .expect("parses");
        let mut direct = Vec::new();
        record
            .write_avro(catalog::writer(schema_file).expect("writer"), &mut direct)
            .expect("serializes against the schema");
        let value = record
            .into_avro()
            .expect("to value")
            .resolve(&schema)
            .expect("value fits the schema");
        assert!(value.validate(&schema), "resolved value validates");
        let generic = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .expect("writer")
            .write_value_to_vec(value.clone())
            .expect("encodes");
        assert_eq!(direct, generic, "direct and generic encodings agree");
        let read = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .expect("reader")
            .read_value(&mut direct.as_slice())
            .expect("decodes");
        assert_eq!(read, value, "decoded value is the resolved value");
        T::from_avro(read).expect("from value")
    }
}
