-- What emails say about contacts, and who works a lead.
-- Contacts: a hard bounce marks the address as bouncing (a delay, a challenge or a soft bounce
-- changes nothing); an unsubscribe request or a spam complaint opts the contact out; a
-- left-the-company answer makes the contact inactive, naming the replacement when the answer
-- does. Each is set by the first email that says so (the latest hard bounce for the reason) and
-- never by a replay of the same email.
ALTER TABLE contacts
  ADD COLUMN email_status      text,          -- NULL (no known problem) or 'bouncing'
  ADD COLUMN bounce_reason     text,          -- user-unknown, host-unknown, ... of that bounce
  ADD COLUMN bounced_at        timestamptz,   -- received_at of the latest hard bounce
  ADD COLUMN opted_out_at      timestamptz,   -- received_at of the first opt-out
  ADD COLUMN opt_out_reason    text,          -- 'unsubscribe' or 'complaint'
  ADD COLUMN active            boolean NOT NULL DEFAULT true,
  ADD COLUMN inactive_since    timestamptz,
  ADD COLUMN replacement_email text;          -- who to write to instead, when named
-- Leads: the scorer's routing (rules file `intents` and `routing`).
ALTER TABLE leads
  ADD COLUMN intent   text,
  ADD COLUMN language text,
  ADD COLUMN team     text,
  ADD COLUMN owner    text;
