-- The public event stream: events get a commit-ordered sequence number.
-- `id` (bigserial) is taken when a turn inserts, not when it commits, so a reader that follows
-- ids can pass an event whose transaction commits later and never see it. `xid` records the
-- inserting transaction; the sequencer (api/events/sequencer.py) numbers events only once every
-- transaction older than theirs has ended (xid below the snapshot's xmin), in (xid, id) order, so
-- `seq` only ever grows at the end and a reader resuming after seq N misses nothing.
ALTER TABLE events ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE events ADD COLUMN seq bigint UNIQUE;
UPDATE events SET seq = id;
CREATE INDEX events_unsequenced ON events (xid, id) WHERE seq IS NULL;
CREATE INDEX events_project_seq ON events (project_id, seq);
CREATE TABLE event_sequence (
    last  bigint NOT NULL               -- the highest seq given out
);
INSERT INTO event_sequence (last) SELECT coalesce(max(id), 0) FROM events;
