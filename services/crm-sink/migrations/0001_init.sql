-- The CRM tables of the PostgreSQL backend, created in the schema the `schema` setting names
-- (the runner sets search_path). Every table has a natural unique key, and the sink's upserts
-- change a row only when a newer record (a later input offset, a later received_at) brings
-- different values, so replaying the input changes no row.

CREATE TABLE accounts (
    account_id     text PRIMARY KEY,
    name           text,
    domain         text,
    target_account boolean,
    created_at     timestamptz NOT NULL,  -- received_at of the first message that named it
    updated_at     timestamptz NOT NULL   -- received_at of the message its values come from
);

CREATE TABLE contacts (
    contact_id            text PRIMARY KEY,
    email                 text NOT NULL UNIQUE CHECK (email = lower(email)),
    name                  text,
    account_id            text,
    -- Set when the sink created the contact for an unknown sender (its id is then the
    -- UUIDv5 of mailto:<email>); NULL for contacts known before.
    created_by_message_id text,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL
);

CREATE TABLE deals (
    deal_id          text PRIMARY KEY,
    account_id       text,
    source           text,                 -- recipient (deal-42@) or thread
    first_message_id text NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);

-- One email activity per message id.
CREATE TABLE email_activities (
    activity_id   bigserial PRIMARY KEY,
    message_id    text NOT NULL UNIQUE,
    received_at   timestamptz NOT NULL,
    subject       text,
    sender_email  text,
    recipients    text[] NOT NULL,
    body_text     text,                    -- reply- and signature-stripped text
    thread_id     text NOT NULL,
    thread_parent text,
    contact_id    text,
    account_id    text,
    deal_id       text,
    auth          jsonb NOT NULL,          -- {"spf", "dkim", "dmarc"}
    tags          text[] NOT NULL,
    source_offset bigint NOT NULL,         -- input offset of the version written
    written_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX email_activities_contact ON email_activities (contact_id);
CREATE INDEX email_activities_deal ON email_activities (deal_id);
CREATE INDEX email_activities_thread ON email_activities (thread_id);

CREATE TABLE attachments (
    id            bigserial PRIMARY KEY,
    message_id    text NOT NULL REFERENCES email_activities (message_id) ON DELETE CASCADE,
    filename      text NOT NULL,           -- '' when the part had no name
    content_type  text NOT NULL,
    size          bigint NOT NULL CHECK (size >= 0),
    sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    storage_url   text,                    -- blob store URI of the bytes, when stored
    inline        boolean NOT NULL,
    source_offset bigint NOT NULL,
    written_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (message_id, sha256, filename)
);

-- The lead per message and sender (the seed's shape), with its score and the breakdown that
-- explains it.
CREATE TABLE leads (
    id            bigserial PRIMARY KEY,
    message_id    text NOT NULL,
    sender_email  text NOT NULL,
    sender_name   text,
    subject       text,
    received_at   timestamptz NOT NULL,
    lead_key      text NOT NULL,
    contact_id    text,
    account_id    text,
    deal_id       text,
    score         integer NOT NULL DEFAULT 0,
    status        text NOT NULL,           -- qualified, review, nurture, excluded
    breakdown     jsonb NOT NULL,          -- [{"rule_id", "points", "evidence"}]
    rules_version text NOT NULL,
    source_offset bigint NOT NULL,
    written_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (message_id, sender_email)
);
CREATE INDEX leads_status ON leads (status, score DESC);

-- Parts that failed after their activity was written: recorded, not rolled back.
CREATE TABLE follow_ups (
    id          bigserial PRIMARY KEY,
    message_id  text NOT NULL,
    kind        text NOT NULL,             -- attachment
    part        text NOT NULL,             -- the part's stable id within the message
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    UNIQUE (message_id, kind, part)
);
