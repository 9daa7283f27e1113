-- The Kafka topic ID of the results topic a row was read from (Kafka's
-- base64url form, as kafka-topics --describe prints it). A results topic that
-- is deleted and created again starts its offsets at 0 again, so a position
-- (topic, partition, offset) names a record only together with the topic's
-- ID: verify compares the current topic with its own rows and leaves the rows
-- of earlier topics of the same name alone (docs/AUDIT.md).
--
-- '': unknown (rows written before this migration, or a broker that returns
-- no topic IDs in fetch responses, before Kafka 3.1); such rows are compared
-- by position. Adding a column with a constant default rewrites nothing.

ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS topic_id text NOT NULL DEFAULT '';
