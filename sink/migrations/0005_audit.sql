-- Audit trail: one row per record of the results topics (every decision, every
-- expired / low_stock notice, every cart result), append-only. The sink writes
-- the rows and the next offsets of the results topics (sink_offsets, rows of
-- those topics) in one transaction, as it does for the changelog, so a record
-- is recorded exactly once; the primary key on the record's position is the
-- belt to those braces (a partitioned table's unique key must contain the
-- partition key: decided_at is part of the record, so a re-read record
-- collides with its row).
--
-- Partitioned by month of decided_at (UTC), RANGE partitions named
-- audit_events_yYYYYmMM, created by the sink ahead of need (this month and the
-- next one, and any month a batch needs); the sink's audit retention drops
-- whole old partitions (recorded in audit_dropped_partitions). See
-- docs/AUDIT.md.
--
-- Forward-only and idempotent: every statement is IF NOT EXISTS.

CREATE TABLE IF NOT EXISTS audit_events (
    topic          text        NOT NULL,     -- results or cart-results topic
    partition      integer     NOT NULL,
    "offset"       bigint      NOT NULL,
    kind           text        NOT NULL,     -- decision | notice | cart
    command_id     text        NOT NULL,     -- empty for notices
    type           text        NOT NULL,     -- command type, expired, low_stock, cart.*
    sku            text        NOT NULL,     -- empty for cart results
    reservation_id text        NOT NULL,
    cart_id        text        NOT NULL,
    order_id       text        NOT NULL,
    quantity       bigint,                   -- NULL: no reservation (or no cart line)
    outcome        text        NOT NULL,     -- accepted | rejected (notices: accepted)
    reason         text        NOT NULL,
    message        text        NOT NULL,
    duplicate      boolean     NOT NULL,
    decided_at     timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset", decided_at)
) PARTITION BY RANGE (decided_at);

-- What support asks: everything that happened to a SKU, a reservation, a cart,
-- an order, in a time range.
CREATE INDEX IF NOT EXISTS audit_events_sku_idx ON audit_events (sku, decided_at) WHERE sku <> '';
CREATE INDEX IF NOT EXISTS audit_events_reservation_idx ON audit_events (reservation_id, decided_at) WHERE reservation_id <> '';
CREATE INDEX IF NOT EXISTS audit_events_cart_idx ON audit_events (cart_id, decided_at) WHERE cart_id <> '';
CREATE INDEX IF NOT EXISTS audit_events_order_idx ON audit_events (order_id, decided_at) WHERE order_id <> '';

-- Partitions the retention dropped: rows decided before the newest range_to
-- are gone on purpose (verify does not expect them; the sink does not write
-- them again when it reads such a record late).
CREATE TABLE IF NOT EXISTS audit_dropped_partitions (
    name       text        PRIMARY KEY,
    range_from timestamptz NOT NULL,
    range_to   timestamptz NOT NULL,
    dropped_at timestamptz NOT NULL DEFAULT now()
);

-- Offsets of a results topic the sink could not read any more when it came
-- to them (deleted by the topic's retention while the sink was away, or a
-- recreated topic): the audit has no rows for them.
CREATE TABLE IF NOT EXISTS audit_gaps (
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    from_offset bigint      NOT NULL,        -- first offset missed
    to_offset   bigint      NOT NULL,        -- where reading resumed
    reason      text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, from_offset, recorded_at)
);
