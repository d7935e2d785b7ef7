-- Calendar invitations and answers: the email's meeting (parsed.meeting: method, uid, summary,
-- location, organizer, attendees with their answer, start, end, tzid, starts_at) as JSON on
-- its activity, NULL for an email without one.
ALTER TABLE email_activities ADD COLUMN meeting jsonb;
