-- When the sink last knew the partition's stored offset to be current: every
-- changelog record at or after next_offset was committed after current_at (the
-- sink had read the partition up to its last stable offset as listed at
-- current_at). A sink that resumes a partition whose current_at is older than
-- half the changelog's delete.retention.ms may have missed tombstones that
-- compaction removed meanwhile, so it re-snapshots the partition instead of
-- resuming it (sink/stale.go). NULL: unknown, treated as too old.
--
-- Rows written before this migration get their last commit (updated_at): the
-- sink was running then, and normally caught up.

ALTER TABLE sink_offsets ADD COLUMN current_at timestamptz;
UPDATE sink_offsets SET current_at = updated_at;
