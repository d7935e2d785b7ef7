-- Accounts take the values of the newest email that names them (last writer wins, ordered by
-- received_at, then message id), in whatever order partitions deliver them. The writer is kept
-- so the order is total, and the row is then the same after any processing order and a replay
-- changes nothing. An email that names the account only by id inserts it with
-- updated_at = -infinity, so any email with details overrides it.
ALTER TABLE accounts ADD COLUMN updated_by text NOT NULL DEFAULT '';
