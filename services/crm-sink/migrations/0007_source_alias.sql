-- Capture per source alias (issue 19): the address of ours a lead came in through (demo@,
-- partners@, a campaign's demo+spring@; ResolvedEmail::source_alias), for attribution.
ALTER TABLE leads ADD COLUMN source_alias text;
