-- Time to first response (issue 19): the mail we sent, observed through a journal or BCC address
-- (`resolved.outbound`), answers the inbound emails of its thread received before it.
-- `responses` holds each outbound email's thread and time, so an inbound email written after
-- its answer (the two came through different partitions) still finds it; an activity's
-- `first_response_at` is the earliest of our emails in its thread at or after it.
CREATE TABLE responses (
    message_id  text NOT NULL,
    thread_id   text NOT NULL,
    received_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX responses_key ON responses (crm_key(message_id));
CREATE INDEX responses_message_id ON responses USING hash (message_id);
CREATE INDEX responses_thread ON responses USING hash (thread_id);

ALTER TABLE email_activities ADD COLUMN first_response_at timestamptz;
