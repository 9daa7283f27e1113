-- Snapshot of the changelog topic: one row per entity, never moved backwards to
-- an older version, and the offsets the rows reflect, written in the same
-- transaction (exactly-once).

CREATE TABLE stock (
    sku                 text        PRIMARY KEY,
    on_hand             bigint      NOT NULL,
    reserved            bigint      NOT NULL,
    available           bigint      NOT NULL,
    low_stock_threshold bigint,                  -- NULL: no threshold set
    version             bigint      NOT NULL,
    event               text        NOT NULL,
    command_id          text        NOT NULL,
    updated_at          timestamptz              -- NULL when the entity had none
);

CREATE TABLE reservations (
    changelog_key  text        PRIMARY KEY,      -- reservation/<sku>/<reservation_id>
    sku            text        NOT NULL,
    reservation_id text        NOT NULL,
    quantity       bigint      NOT NULL,
    status         text        NOT NULL,         -- active | released | expired | consumed
    expires_at     timestamptz,
    extensions     bigint      NOT NULL,
    cart_id        text        NOT NULL,
    order_id       text        NOT NULL,
    store_id       text        NOT NULL,
    version        bigint      NOT NULL,
    event          text        NOT NULL,
    command_id     text        NOT NULL,
    updated_at     timestamptz
);

CREATE INDEX reservations_sku_idx ON reservations (sku);

-- Next changelog offset to apply, per partition; absent partitions start at the
-- beginning of the log.
CREATE TABLE sink_offsets (
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- Changelog records that could not be decoded: skipped, kept here for operators.
CREATE TABLE sink_errors (
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    key         text        NOT NULL,
    value       bytea,
    error       text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
