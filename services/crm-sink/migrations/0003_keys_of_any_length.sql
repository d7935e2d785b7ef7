-- Keys of any length. A btree index entry holds at most ~2.7 KB, so a unique index on the text
-- itself refuses (SQLSTATE 54000, "index row size ... exceeds maximum") an email whose
-- Message-ID, sender address or attachment filename is longer and incompressible: such an
-- email could never be written. The natural keys that come from email are indexed by their
-- SHA-256 instead (`crm_key`, 32 bytes whatever the length); the columns keep the full values.
-- Equality lookups on message_id, email, thread_id, contact_id and deal_id use hash indexes,
-- which hold any length; other lookups on a key use `crm_key(col) = crm_key($1)`.
-- The rows stay as they are: the new indexes are built on the values already there, and a
-- replay finds each row through them as before.

-- The index key of a text value: the SHA-256 of its bytes. decode(.., 'escape') with every
-- backslash doubled is the text's bytes unchanged; unlike convert_to it is immutable, so the
-- planner inlines the function (a call per row costs twice the insert).
CREATE FUNCTION crm_key(value text) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT sha256(decode(replace(value, E'\\', E'\\\\'), 'escape')) $$;

-- Attachments belong to their activity by its id (the foreign key on message_id needed a
-- unique btree index on the text).
ALTER TABLE attachments DROP CONSTRAINT attachments_message_id_fkey;
ALTER TABLE attachments ADD COLUMN activity_id bigint;
UPDATE attachments a SET activity_id = e.activity_id
  FROM email_activities e WHERE e.message_id = a.message_id;
ALTER TABLE attachments ALTER COLUMN activity_id SET NOT NULL,
  ADD FOREIGN KEY (activity_id) REFERENCES email_activities (activity_id) ON DELETE CASCADE;
CREATE INDEX attachments_activity ON attachments (activity_id);

ALTER TABLE email_activities DROP CONSTRAINT email_activities_message_id_key;
CREATE UNIQUE INDEX email_activities_message_key ON email_activities (crm_key(message_id));
CREATE INDEX email_activities_message_id ON email_activities USING hash (message_id);
DROP INDEX email_activities_contact, email_activities_deal, email_activities_thread;
CREATE INDEX email_activities_contact ON email_activities USING hash (contact_id);
CREATE INDEX email_activities_deal ON email_activities USING hash (deal_id);
CREATE INDEX email_activities_thread ON email_activities USING hash (thread_id);

ALTER TABLE contacts DROP CONSTRAINT contacts_email_key;
CREATE UNIQUE INDEX contacts_email_key ON contacts (crm_key(email));
CREATE INDEX contacts_email ON contacts USING hash (email);

ALTER TABLE attachments DROP CONSTRAINT attachments_message_id_sha256_filename_key;
CREATE UNIQUE INDEX attachments_key ON attachments (crm_key(message_id), sha256, crm_key(filename));

ALTER TABLE leads DROP CONSTRAINT leads_message_id_sender_email_key;
CREATE UNIQUE INDEX leads_key ON leads (crm_key(message_id), crm_key(sender_email));

ALTER TABLE follow_ups DROP CONSTRAINT follow_ups_message_id_kind_part_key;
CREATE UNIQUE INDEX follow_ups_key ON follow_ups (crm_key(message_id), kind, part);
