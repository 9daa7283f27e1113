package sink

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reservations/reservations/topics"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrateLockKey is the advisory lock that serialises schema migrations of
// every sink on a database ("rsvsink" in ASCII).
const migrateLockKey int64 = 0x72737673696e6b

// migration is one embedded migrations/NNNN_name.sql file.
type migration struct {
	version int64
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("read embedded migrations: %w", err)
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", e.Name())
		}
		b, err := migrationFS.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		if len(ms) > 0 && ms[len(ms)-1].version == v {
			return nil, fmt.Errorf("migration %s: version %d used twice", e.Name(), v)
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return int(a.version - b.version) })
	return ms, nil
}

// store is the sink's Postgres side.
type store struct {
	pool  *pgxpool.Pool
	topic string
	// schema is Config.Schema: the schema the pool's search_path names ("":
	// the connection's current schema, whatever it is).
	schema string
	// adopted, set by migrate, says what it did to an install of an older
	// version ("" when nothing), for the log.
	adopted string
	// owned are the topics whose offsets in public.sink_offsets make an
	// install there the sink's (adoptLegacy): the changelog and the audited
	// topics. Empty: topic alone.
	owned []string
	// apply writes the entity rows of a batch inside tx. copyApply, unless a
	// benchmark swaps in another strategy.
	apply func(ctx context.Context, tx pgx.Tx, b *batch) (rowCounts, error)
}

// rowCounts are the rows a batch changed.
type rowCounts struct {
	stockUpserted, stockDeleted               int64
	reservationsUpserted, reservationsDeleted int64
}

// migrate creates the schema when it is missing, adopts the tables of an
// install made before the schema setting (adoptLegacy), and applies the
// embedded migrations not yet recorded in MigrationsTable, in one transaction
// under an advisory lock so that sinks starting together do not race. It
// returns the versions it applied.
func (s *store) migrate(ctx context.Context) ([]int64, error) {
	ms, err := migrations()
	if err != nil {
		return nil, err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin migration: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit; a canceled ctx closes the conn, which rolls back
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLockKey); err != nil {
		return nil, fmt.Errorf("lock migrations: %w", err)
	}
	target, err := s.ensureSchema(ctx, tx)
	if err != nil {
		return nil, err
	}
	if s.adopted, err = s.adoptLegacy(ctx, tx, target); err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+MigrationsTable+` (
		version    bigint      PRIMARY KEY,
		name       text        NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("create %s: %w", MigrationsTable, err)
	}
	rows, _ := tx.Query(ctx, `SELECT version FROM `+MigrationsTable)
	done, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", MigrationsTable, err)
	}
	var applied []int64
	for _, m := range ms {
		if slices.Contains(done, m.version) {
			continue
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return nil, fmt.Errorf("apply migration %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+MigrationsTable+` (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
			return nil, fmt.Errorf("record migration %s: %w", m.name, err)
		}
		applied = append(applied, m.version)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit migrations: %w", err)
	}
	return applied, nil
}

// schemaError is a schema configuration that retrying cannot fix: the sink
// stops (permanent).
type schemaError struct{ msg string }

func (e *schemaError) Error() string { return e.msg }

// ensureSchema creates s.schema when it is missing and checks that the
// connection's search_path puts new tables there (a Pool given to the sink
// sets it itself). It returns the schema the sink's tables live in: s.schema,
// or the connection's current schema when s.schema is empty ("" when the
// search_path names no existing schema).
func (s *store) ensureSchema(ctx context.Context, tx pgx.Tx) (string, error) {
	if s.schema != "" {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, s.schema).Scan(&exists); err != nil {
			return "", fmt.Errorf("look up schema %s: %w", s.schema, err)
		}
		// Only when missing: CREATE SCHEMA needs the CREATE privilege on the
		// database even with IF NOT EXISTS, which a user given a schema made
		// by its DBA need not have.
		if !exists {
			if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{s.schema}.Sanitize()); err != nil {
				return "", fmt.Errorf("create schema %s: %w", s.schema, err)
			}
		}
	}
	var current pgtype.Text
	if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&current); err != nil {
		return "", fmt.Errorf("read current_schema(): %w", err)
	}
	if s.schema != "" && current.String != s.schema {
		return "", &schemaError{fmt.Sprintf("the sink's tables belong in schema %q, but the connection's search_path (%q first) "+
			"creates them elsewhere: a pool given to the sink must set search_path to the schema", s.schema, current.String)}
	}
	return current.String, nil
}

// sinkTables are the tables the migrations create, moved by adoptLegacy
// (with partitionedTables).
var sinkTables = []string{"stock", "reservations", "sink_offsets", "sink_errors", "replay_runs",
	"audit_dropped_partitions", "audit_gaps"}

// partitionedTables are the partitioned tables the migrations create; their
// partitions (created by the sink) move with them.
var partitionedTables = []string{"audit_events"}

// adoptLegacy takes over the tables of an install made before the schema
// setting, inside the migration's transaction, and says what it did ("" when
// nothing):
//
//   - target already has MigrationsTable: nothing to do;
//   - target has the sink's legacy bookkeeping table schema_migrations (an
//     install in target, e.g. public with Schema "" or "public"): it is
//     renamed to MigrationsTable;
//   - public has the sink's bookkeeping (schema_migrations or, written by
//     this version with Schema "", MigrationsTable) and its sink_offsets hold
//     offsets of this topic: the sink's tables and the bookkeeping move from
//     public into target, rows, indexes and sequences with them. An install
//     in public of another topic (another pipeline sharing the database) is
//     left alone.
//
// "The sink's" schema_migrations is one with the columns the sink created
// (version, name, applied_at) whose version 1 is 0001_init.sql: not
// golang-migrate's (version, dirty) or Rails' (version) table of that name.
// A table to move that target already has is a schemaError.
func (s *store) adoptLegacy(ctx context.Context, tx pgx.Tx, target string) (string, error) {
	if target == "" {
		return "", nil
	}
	if ok, err := tableExists(ctx, tx, target, MigrationsTable); err != nil || ok {
		return "", err
	}
	ours, err := isSinkBookkeeping(ctx, tx, target, legacyMigrationsTable)
	if err != nil {
		return "", err
	}
	if ours {
		if _, err := tx.Exec(ctx, `ALTER TABLE `+pgx.Identifier{target, legacyMigrationsTable}.Sanitize()+
			` RENAME TO `+MigrationsTable); err != nil {
			return "", fmt.Errorf("rename %s.%s: %w", target, legacyMigrationsTable, err)
		}
		return fmt.Sprintf("renamed %s.%s to %s", target, legacyMigrationsTable, MigrationsTable), nil
	}
	const legacySchema = "public"
	if target == legacySchema {
		return "", nil
	}
	book := MigrationsTable
	if ok, err := tableExists(ctx, tx, legacySchema, book); err != nil {
		return "", err
	} else if !ok {
		book = legacyMigrationsTable
		if ours, err = isSinkBookkeeping(ctx, tx, legacySchema, book); err != nil || !ours {
			return "", err
		}
	}
	if ok, err := tableExists(ctx, tx, legacySchema, "sink_offsets"); err != nil || !ok {
		return "", err
	}
	var mine bool
	owned := s.owned
	if len(owned) == 0 {
		owned = []string{s.topic}
	}
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+pgx.Identifier{legacySchema, "sink_offsets"}.Sanitize()+
		` WHERE topic = ANY($1))`, owned).Scan(&mine); err != nil {
		return "", fmt.Errorf("read %s.sink_offsets: %w", legacySchema, err)
	}
	if !mine {
		return "", nil
	}
	var moved []string
	for _, table := range append(slices.Clone(sinkTables), partitionedTables...) {
		there, err := tableExists(ctx, tx, legacySchema, table)
		if err != nil {
			return "", err
		}
		if !there {
			continue // a migration of a later version than the install's
		}
		if clash, err := tableExists(ctx, tx, target, table); err != nil {
			return "", err
		} else if clash {
			return "", &schemaError{fmt.Sprintf("cannot move the sink's tables of an older install from %s into schema %s: "+
				"%s.%s exists already (move or drop one of them by hand, see docs/SINK_SCHEMA.md)", legacySchema, target, target, table)}
		}
		var parts []string
		if slices.Contains(partitionedTables, table) {
			rows, _ := tx.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
				WHERE i.inhparent = $1::regclass`, pgx.Identifier{legacySchema, table}.Sanitize())
			if parts, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return "", fmt.Errorf("list the partitions of %s.%s: %w", legacySchema, table, err)
			}
		}
		for _, t := range append([]string{table}, parts...) {
			if _, err := tx.Exec(ctx, `ALTER TABLE `+pgx.Identifier{legacySchema, t}.Sanitize()+
				` SET SCHEMA `+pgx.Identifier{target}.Sanitize()); err != nil {
				return "", fmt.Errorf("move %s.%s into schema %s: %w", legacySchema, t, target, err)
			}
		}
		moved = append(moved, table)
	}
	if book != MigrationsTable {
		if _, err := tx.Exec(ctx, `ALTER TABLE `+pgx.Identifier{legacySchema, book}.Sanitize()+` RENAME TO `+MigrationsTable); err != nil {
			return "", fmt.Errorf("rename %s.%s: %w", legacySchema, book, err)
		}
	}
	if _, err := tx.Exec(ctx, `ALTER TABLE `+pgx.Identifier{legacySchema, MigrationsTable}.Sanitize()+
		` SET SCHEMA `+pgx.Identifier{target}.Sanitize()); err != nil {
		return "", fmt.Errorf("move %s.%s into schema %s: %w", legacySchema, MigrationsTable, target, err)
	}
	return fmt.Sprintf("moved the tables %s and %s.%s (as %s) of an older install from %s into schema %s",
		strings.Join(moved, ", "), legacySchema, book, MigrationsTable, legacySchema, target), nil
}

// tableExists reports whether schema.table is a table.
func tableExists(ctx context.Context, tx pgx.Tx, schema, table string) (bool, error) {
	var ok bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p'))`, schema, table).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("look up table %s.%s: %w", schema, table, err)
	}
	return ok, nil
}

// isSinkBookkeeping reports whether schema.table is the migration table the
// sink created (version, name, applied_at; version 1 is 0001_init.sql).
func isSinkBookkeeping(ctx context.Context, tx pgx.Tx, schema, table string) (bool, error) {
	if ok, err := tableExists(ctx, tx, schema, table); err != nil || !ok {
		return false, err
	}
	var cols int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns
		WHERE table_schema = $1 AND table_name = $2 AND column_name IN ('version', 'name', 'applied_at')`,
		schema, table).Scan(&cols); err != nil {
		return false, fmt.Errorf("read the columns of %s.%s: %w", schema, table, err)
	}
	if cols != 3 {
		return false, nil
	}
	var first pgtype.Text
	err := tx.QueryRow(ctx, `SELECT name FROM `+pgx.Identifier{schema, table}.Sanitize()+` WHERE version = 1`).Scan(&first)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s.%s: %w", schema, table, err)
	}
	return first.String == "0001_init.sql", nil
}

// lockName names the advisory lock of the topic's batches in the schema
// (replays take it too): sinks of one topic in two schemas of a database do
// not wait for each other. Without a schema it is the name of earlier
// versions.
func (s *store) lockName() string {
	if s.schema == "" {
		return "reservations.sink/" + s.topic
	}
	return "reservations.sink/" + s.schema + "/" + s.topic
}

// topicLock takes the advisory lock of lockName.
const topicLock = `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`

// newPool connects to dsn with at most 4 connections whose search_path is
// schema (when set).
func newPool(ctx context.Context, dsn, schema string) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse postgres DSN: %w", err)
	}
	pcfg.MaxConns = 4
	if schema != "" {
		// Sent in the startup message: every connection, and every
		// reconnection, has it before its first statement. schema needs no
		// quoting (validSchema).
		pcfg.ConnConfig.RuntimeParams["search_path"] = schema
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("create postgres pool: %w", err)
	}
	return pool, nil
}

// offsets returns the next offset to apply per partition of the topic.
func (s *store) offsets(ctx context.Context) (map[int32]int64, error) {
	rows, _ := s.pool.Query(ctx, `SELECT partition, next_offset FROM sink_offsets WHERE topic = $1`, s.topic)
	offs := make(map[int32]int64)
	var p int32
	var o int64
	_, err := pgx.ForEachRow(rows, []any{&p, &o}, func() error {
		offs[p] = o
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read offsets of %s: %w", s.topic, err)
	}
	return offs, nil
}

// positions returns, per partition of the topic, the next offset to apply and
// when that offset was last known to be current (sink_offsets.current_at; the
// zero time when unknown).
func (s *store) positions(ctx context.Context) (map[int32]int64, map[int32]time.Time, error) {
	rows, _ := s.pool.Query(ctx, `SELECT partition, next_offset, current_at FROM sink_offsets WHERE topic = $1`, s.topic)
	offs := make(map[int32]int64)
	seen := make(map[int32]time.Time)
	var p int32
	var o int64
	var at pgtype.Timestamptz
	_, err := pgx.ForEachRow(rows, []any{&p, &o, &at}, func() error {
		offs[p] = o
		if at.Valid {
			seen[p] = at.Time
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read offsets of %s: %w", s.topic, err)
	}
	return offs, seen, nil
}

// fencedError means the offsets stored for a partition are not those the
// batch continues from: another sink wrote the topic, or a commit whose
// outcome this sink did not learn went through. The sink re-reads the offsets.
type fencedError struct {
	Partition      int32
	Stored, Expect int64
}

func (e *fencedError) Error() string {
	return fmt.Sprintf("partition %d: stored next offset %d, batch continues from %d", e.Partition, e.Stored, e.Expect)
}

// write applies b in one transaction: entity rows, sink_errors and the next
// offsets with their current_at (seen: the zero time stores NULL; a stored
// time is never moved back), after checking that the stored offsets are pos
// (absent = 0). before, if not nil, runs in the transaction after that check
// and before the rows are applied (a re-snapshot clears its partition there).
func (s *store) write(ctx context.Context, b *batch, pos map[int32]int64, seen map[int32]time.Time,
	before func(context.Context, pgx.Tx) error) (rowCounts, error) {
	var n rowCounts
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return n, fmt.Errorf("begin batch: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit; a canceled ctx closes the conn, which rolls back

	if err := s.checkOffsets(ctx, tx, b.next, pos); err != nil {
		return n, err
	}
	if before != nil {
		if err := before(ctx, tx); err != nil {
			return n, err
		}
	}
	if n, err = s.apply(ctx, tx, b); err != nil {
		return n, err
	}
	if err := s.storeOffsets(ctx, tx, b.next, seen); err != nil {
		return n, err
	}
	if err := s.recordBad(ctx, tx, b.bad); err != nil {
		return n, err
	}
	if err := tx.Commit(ctx); err != nil {
		return n, fmt.Errorf("commit batch: %w", err)
	}
	return n, nil
}

// checkOffsets takes the topic's advisory lock in tx and checks that the
// stored next offsets of the partitions in next are pos (absent = 0): the
// batch continues from what Postgres committed (*fencedError otherwise).
func (s *store) checkOffsets(ctx context.Context, tx pgx.Tx, next, pos map[int32]int64) error {
	parts := make([]int32, 0, len(next))
	for p := range next {
		parts = append(parts, p)
	}
	if _, err := tx.Exec(ctx, topicLock, s.lockName()); err != nil {
		return fmt.Errorf("lock topic %s: %w", s.topic, err)
	}
	rows, _ := tx.Query(ctx, `SELECT partition, next_offset FROM sink_offsets WHERE topic = $1 AND partition = ANY($2)`, s.topic, parts)
	stored := make(map[int32]int64, len(parts))
	var p int32
	var o int64
	if _, err := pgx.ForEachRow(rows, []any{&p, &o}, func() error {
		stored[p] = o
		return nil
	}); err != nil {
		return fmt.Errorf("read offsets of %s: %w", s.topic, err)
	}
	for _, p := range parts {
		if stored[p] != pos[p] {
			return &fencedError{Partition: p, Stored: stored[p], Expect: pos[p]}
		}
	}
	return nil
}

// storeOffsets stores, in tx, the next offsets of the topic's partitions with
// their current_at (seen: the zero time stores NULL; a stored time is never
// moved back).
func (s *store) storeOffsets(ctx context.Context, tx pgx.Tx, next map[int32]int64, seen map[int32]time.Time) error {
	parts := make([]int32, 0, len(next))
	nexts := make([]int64, 0, len(next))
	currents := make([]pgtype.Timestamptz, 0, len(next))
	for p, o := range next {
		parts = append(parts, p)
		nexts = append(nexts, o)
		currents = append(currents, timestamptz(seen[p]))
	}
	// greatest: a time another sink stored for an offset this batch continues
	// from stays true for the later offset (greatest ignores NULL).
	if _, err := tx.Exec(ctx, `INSERT INTO sink_offsets (topic, partition, next_offset, current_at)
		SELECT $1, p, o, c FROM unnest($2::integer[], $3::bigint[], $4::timestamptz[]) AS t(p, o, c)
		ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset, updated_at = now(),
			current_at = greatest(sink_offsets.current_at, excluded.current_at)`,
		s.topic, parts, nexts, currents); err != nil {
		return fmt.Errorf("store offsets of %s: %w", s.topic, err)
	}
	return nil
}

// recordBad records undecodable records of the topic in sink_errors, in tx.
func (s *store) recordBad(ctx context.Context, tx pgx.Tx, bad []badRecord) error {
	for _, r := range bad {
		if _, err := tx.Exec(ctx, `INSERT INTO sink_errors (topic, partition, "offset", key, value, error)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
			s.topic, r.partition, r.offset, r.key, r.value, r.err.Error()); err != nil {
			return fmt.Errorf("record undecodable record of %s at partition %d offset %d: %w", s.topic, r.partition, r.offset, err)
		}
	}
	return nil
}

var (
	stockColumns = []string{"sku", "on_hand", "reserved", "available", "low_stock_threshold",
		"version", "event", "command_id", "updated_at"}
	reservationColumns = []string{"changelog_key", "sku", "reservation_id", "quantity", "status",
		"expires_at", "extensions", "cart_id", "order_id", "store_id", "version", "event",
		"command_id", "updated_at", "prepared"}
)

// upsertSQL moves staged rows into table unless the stored row has the same or
// a newer version: a row never moves backwards.
func upsertSQL(table, stage, key string, cols []string) string {
	var set strings.Builder
	for _, c := range cols {
		if c == key {
			continue
		}
		if set.Len() > 0 {
			set.WriteString(", ")
		}
		fmt.Fprintf(&set, "%s = excluded.%s", c, c)
	}
	list := strings.Join(cols, ", ")
	return fmt.Sprintf(`INSERT INTO %s (%s) SELECT %s FROM %s
		ON CONFLICT (%s) DO UPDATE SET %s WHERE %s.version < excluded.version`,
		table, list, list, stage, key, set.String(), table)
}

var (
	upsertStock        = upsertSQL("stock", "sink_stage_stock", "sku", stockColumns)
	upsertReservations = upsertSQL("reservations", "sink_stage_reservations", "changelog_key", reservationColumns)
)

// copyApply deletes the tombstoned rows, then COPYs the puts into temporary
// tables and moves them into place with one version-guarded upsert per table.
func copyApply(ctx context.Context, tx pgx.Tx, b *batch) (rowCounts, error) {
	var n rowCounts
	var delStock, delRes []string
	var putStock []*stockRow
	var putRes []*reservationRow
	for sku, op := range b.stock {
		if op.del {
			delStock = append(delStock, sku)
		}
		if op.put != nil {
			putStock = append(putStock, op.put)
		}
	}
	for key, op := range b.reservations {
		if op.del {
			delRes = append(delRes, key)
		}
		if op.put != nil {
			putRes = append(putRes, op.put)
		}
	}

	var err error
	if n.stockDeleted, err = deleteKeys(ctx, tx, "stock", "sku", delStock); err != nil {
		return n, err
	}
	if n.reservationsDeleted, err = deleteKeys(ctx, tx, "reservations", "changelog_key", delRes); err != nil {
		return n, err
	}
	if len(putStock) > 0 {
		src := pgx.CopyFromSlice(len(putStock), func(i int) ([]any, error) {
			r := putStock[i]
			return []any{r.sku, r.onHand, r.reserved, r.available, r.lowStockThreshold,
				r.version, r.event, r.commandID, timeOrNil(r.updatedAt)}, nil
		})
		if n.stockUpserted, err = copyUpsert(ctx, tx, "stock", "sink_stage_stock", stockColumns, src, upsertStock); err != nil {
			return n, err
		}
	}
	if len(putRes) > 0 {
		src := pgx.CopyFromSlice(len(putRes), func(i int) ([]any, error) {
			r := putRes[i]
			return []any{r.key, r.sku, r.reservationID, r.quantity, r.status, timeOrNil(r.expiresAt),
				r.extensions, r.cartID, r.orderID, r.storeID, r.version, r.event, r.commandID,
				timeOrNil(r.updatedAt), r.prepared}, nil
		})
		if n.reservationsUpserted, err = copyUpsert(ctx, tx, "reservations", "sink_stage_reservations", reservationColumns, src, upsertReservations); err != nil {
			return n, err
		}
	}
	return n, nil
}

func deleteKeys(ctx context.Context, tx pgx.Tx, table, key string, keys []string) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	tag, err := tx.Exec(ctx, fmt.Sprintf(`DELETE FROM %s WHERE %s = ANY($1)`, table, key), keys)
	if err != nil {
		return 0, fmt.Errorf("delete tombstoned %s rows: %w", table, err)
	}
	return tag.RowsAffected(), nil
}

func copyUpsert(ctx context.Context, tx pgx.Tx, table, stage string, cols []string, src pgx.CopyFromSource, upsert string) (int64, error) {
	if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TEMP TABLE %s (LIKE %s) ON COMMIT DROP`, stage, table)); err != nil {
		return 0, fmt.Errorf("create %s: %w", stage, err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{stage}, cols, src); err != nil {
		return 0, fmt.Errorf("copy into %s: %w", stage, err)
	}
	tag, err := tx.Exec(ctx, upsert)
	if err != nil {
		return 0, fmt.Errorf("upsert %s: %w", table, err)
	}
	return tag.RowsAffected(), nil
}

// touch records that the stored offsets of the partitions in lso were current
// at: for each partition whose stored next offset has reached the last stable
// offset listed at that time, current_at becomes at (never moved back). The
// condition is checked on the stored row, so a row another sink or a replay
// moved back is left alone.
func (s *store) touch(ctx context.Context, lso map[int32]int64, at time.Time) error {
	parts := make([]int32, 0, len(lso))
	ends := make([]int64, 0, len(lso))
	for p, o := range lso {
		parts = append(parts, p)
		ends = append(ends, o)
	}
	if _, err := s.pool.Exec(ctx, `UPDATE sink_offsets SET current_at = greatest(current_at, $4)
		FROM unnest($2::integer[], $3::bigint[]) AS t(p, e)
		WHERE topic = $1 AND partition = t.p AND next_offset >= t.e`, s.topic, parts, ends, at); err != nil {
		return fmt.Errorf("record current offsets of %s: %w", s.topic, err)
	}
	return nil
}

// clearPartition deletes, inside tx, the stock and reservations rows of every
// SKU that belongs to partition p of a changelog of n partitions: the rows the
// partition's records made. The tables do not record partitions; the contract
// puts every record of a SKU on partition topics.Partition(sku, n) (a
// re-snapshot checks that for the records it reloads).
func clearPartition(ctx context.Context, tx pgx.Tx, p, n int32) (stock, reservations int64, err error) {
	rows, _ := tx.Query(ctx, `SELECT sku FROM stock UNION SELECT sku FROM reservations`)
	all, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, 0, fmt.Errorf("list SKUs: %w", err)
	}
	var skus []string
	for _, sku := range all {
		if topics.Partition([]byte(sku), n) == p {
			skus = append(skus, sku)
		}
	}
	if len(skus) == 0 {
		return 0, 0, nil
	}
	tag, err := tx.Exec(ctx, `DELETE FROM stock WHERE sku = ANY($1)`, skus)
	if err != nil {
		return 0, 0, fmt.Errorf("delete stock rows of partition %d: %w", p, err)
	}
	stock = tag.RowsAffected()
	if tag, err = tx.Exec(ctx, `DELETE FROM reservations WHERE sku = ANY($1)`, skus); err != nil {
		return 0, 0, fmt.Errorf("delete reservation rows of partition %d: %w", p, err)
	}
	return stock, tag.RowsAffected(), nil
}

func timestamptz(t time.Time) pgtype.Timestamptz {
	return pgtype.Timestamptz{Time: t, Valid: !t.IsZero()}
}

// ping checks that Postgres answers.
func (s *store) ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping postgres: %w", err)
	}
	return nil
}

// permanent reports whether err is a Postgres error that retrying cannot fix
// (a broken migration, a missing privilege), as opposed to an outage.
func permanent(err error) bool {
	var se *schemaError
	if errors.As(err, &se) {
		return true
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || len(pgErr.Code) < 2 {
		return false // network, timeout, closed pool: an outage
	}
	switch pgErr.Code[:2] {
	case "08", "53", "57", "58", "40":
		// connection exception, insufficient resources, operator intervention
		// (shutdown, cannot connect now), system error, transaction rollback
		return false
	}
	return true
}
