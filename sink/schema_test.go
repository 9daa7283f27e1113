package sink

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/internal/pgtest"
)

// schemaPool is a pool on dsn whose search_path is schema, closed when t ends.
func schemaPool(t testing.TB, dsn, schema string) *pgxpool.Pool {
	t.Helper()
	pool, err := newPool(context.Background(), dsn, schema)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// tablesIn lists the tables of schema, sorted.
func tablesIn(t testing.TB, pool *pgxpool.Pool, schema string) []string {
	t.Helper()
	rows, _ := pool.Query(context.Background(), `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1`, schema)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return names
}

// allSinkTables are the tables of a migrated sink schema, sorted.
func allSinkTables() []string {
	return slices.Sorted(slices.Values(append([]string{MigrationsTable}, sinkTables...)))
}

// appTables creates, in public, tables of an application that shares the
// database: its own stock table and golang-migrate's schema_migrations
// (version, dirty) at version 4, the number of the sink's migrations.
func appTables(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `
		CREATE TABLE public.stock (warehouse text PRIMARY KEY, shelves int NOT NULL);
		INSERT INTO public.stock VALUES ('north', 12);
		CREATE TABLE public.schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);
		INSERT INTO public.schema_migrations VALUES (4, false);`)
	require.NoError(t, err)
}

// assertAppTablesUntouched checks the tables of appTables.
func assertAppTablesUntouched(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	var shelves int
	require.NoError(t, pool.QueryRow(ctx, `SELECT shelves FROM public.stock WHERE warehouse = 'north'`).Scan(&shelves))
	assert.Equal(t, 12, shelves, "the application's public.stock")
	var version int64
	var dirty bool
	require.NoError(t, pool.QueryRow(ctx, `SELECT version, dirty FROM public.schema_migrations`).Scan(&version, &dirty))
	assert.Equal(t, int64(4), version, "golang-migrate's public.schema_migrations")
	assert.Equal(t, []string{"schema_migrations", "stock"}, tablesIn(t, pool, "public"), "tables in public")
}

// TestSchemasDoNotInterfere runs two sinks of two pipelines (same changelog
// topic name, different clusters) into two schemas of one database that also
// holds an application's stock and schema_migrations tables in public: each
// schema holds exactly its pipeline's snapshot, the application's tables are
// untouched, and verify compares the schema it is given.
func TestSchemasDoNotInterfere(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	appTables(t, db.Pool)

	ea := newKafkaEnv(t, testPartitions)
	shop := newShop(t, ea, testPartitions, seed(t), 10)
	shop.produce(60)
	eb := newKafkaEnv(t, testPartitions)
	g := newGen(seed(t), 30)
	eb.produceStream(g, 40)

	cfgA := ea.sinkConfig(db.DSN)
	cfgA.Schema = "tenant_a"
	cfgB := eb.sinkConfig(db.DSN)
	cfgB.Schema = "tenant_b"
	startSink(t, cfgA)
	startSink(t, cfgB)

	poolB := schemaPool(t, db.DSN, "tenant_b")
	waitCaughtUp(t, poolB, eb, 30*time.Second)
	assertMatchesModel(t, poolB, eb.model)

	// Pipeline A, through verify with the schema (it waits for the sink).
	vcfg := ea.verifyConfig()
	vcfg.DSN, vcfg.Schema = db.DSN, "tenant_a"
	rep := verify(t, vcfg)
	assert.True(t, rep.OK(), "%v", rep.Mismatches)
	assert.True(t, rep.Postgres)
	assert.Equal(t, len(shop.stock), rep.StockRows, "stock rows of tenant_a")
	assert.Equal(t, len(shop.res), rep.ReservationRows, "reservation rows of tenant_a")

	// Pipeline A's changelog against tenant_b's tables: not its snapshot.
	vcfg.Schema, vcfg.Wait = "tenant_b", 0
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	other, err := Verify(ctx, vcfg, WithKafkaOpts(testKafkaOpts...))
	assert.True(t, err != nil || !other.OK(), "pipeline A verified against tenant_b's tables")

	// More traffic on B after A caught up: A's schema does not move.
	poolA := schemaPool(t, db.DSN, "tenant_a")
	offsetsA := storedOffsets(t, poolA, ea.topic)
	eb.produceStream(g, 40)
	waitCaughtUp(t, poolB, eb, 30*time.Second)
	assertMatchesModel(t, poolB, eb.model)
	assert.Equal(t, offsetsA, storedOffsets(t, poolA, ea.topic), "tenant_a's offsets moved with tenant_b's traffic")

	want := allSinkTables()
	assert.Equal(t, want, tablesIn(t, db.Pool, "tenant_a"))
	assert.Equal(t, want, tablesIn(t, db.Pool, "tenant_b"))
	assertAppTablesUntouched(t, db.Pool)
}

// TestSchemaNoneKeepsSearchPath: without a schema (Schema ""), the tables
// go where the connection's search_path puts them, as before the setting,
// but the bookkeeping table is MigrationsTable: golang-migrate's
// schema_migrations at version 4 does not make the sink skip its migrations
// 1 to 4.
func TestSchemaNoneKeepsSearchPath(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	ctx := context.Background()
	_, err := db.Pool.Exec(ctx, `CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);
		INSERT INTO schema_migrations VALUES (4, false)`)
	require.NoError(t, err)
	s := &store{pool: db.Pool, topic: defaultTopic, apply: copyApply}
	applied, err := s.migrate(ctx)
	require.NoError(t, err)
	ms, err := migrations()
	require.NoError(t, err)
	assert.Len(t, applied, len(ms), "migrations applied although an application's schema_migrations says 4")
	assert.Empty(t, s.adopted, "golang-migrate's table taken for the sink's")
	assert.Contains(t, tablesIn(t, db.Pool, "public"), "stock")
	var version int64
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT version FROM schema_migrations WHERE NOT dirty`).Scan(&version))
	assert.Equal(t, int64(4), version)
}

// legacyInstall runs a sink without a schema on db until it caught up with
// e, then renames its bookkeeping table to schema_migrations: the layout an
// install of a version before the schema setting has (the same tables in
// public, the migrations recorded in public.schema_migrations).
func legacyInstall(t *testing.T, db *pgtest.Database, e *kafkaEnv) {
	t.Helper()
	w, err := New(e.sinkConfig(db.DSN), WithKafkaOpts(testKafkaOpts...), WithLogger(testLogger(t)))
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { errc <- w.Run(context.Background()) }()
	waitCaughtUp(t, db.Pool, e, 30*time.Second)
	w.Close()
	require.NoError(t, <-errc)
	_, err = db.Pool.Exec(context.Background(), `ALTER TABLE public.`+MigrationsTable+` RENAME TO schema_migrations`)
	require.NoError(t, err)
}

// TestLegacyInstallMigrates: an install of an older version (tables and
// schema_migrations in public) is moved into the configured schema at the
// first start, rows and offsets with it: the sink resumes where the old one
// stopped, and public keeps only the application's tables.
func TestLegacyInstallMigrates(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	g := newGen(seed(t), 20)
	e.produceStream(g, 30)
	db := pgtest.NewDatabase(t)
	legacyInstall(t, db, e)
	ctx := context.Background()
	_, err := db.Pool.Exec(ctx, `CREATE TABLE public.orders (id bigint PRIMARY KEY); INSERT INTO public.orders VALUES (7)`)
	require.NoError(t, err)
	before := storedOffsets(t, db.Pool, e.topic)
	require.NotEmpty(t, before)
	var runs int
	_, err = db.Pool.Exec(ctx, `INSERT INTO replay_runs (topic, finished_at, records) VALUES ($1, now(), 1)`, e.topic)
	require.NoError(t, err)
	// A marker row that only the old tables hold: a re-snapshot or a fresh
	// start would not bring it back.
	_, err = db.Pool.Exec(ctx, `INSERT INTO sink_errors (topic, partition, "offset", key, error) VALUES ('marker', 0, 0, 'k', 'old')`)
	require.NoError(t, err)

	e.produceStream(g, 30) // written while the sink was down
	cfg := e.sinkConfig(db.DSN)
	cfg.Schema = DefaultSchema
	startSink(t, cfg)
	pool := schemaPool(t, db.DSN, DefaultSchema)
	waitCaughtUp(t, pool, e, 30*time.Second)
	assertMatchesModel(t, pool, e.model)

	assert.Equal(t, []string{"orders"}, tablesIn(t, db.Pool, "public"), "public after the move")
	assert.Equal(t, allSinkTables(),
		tablesIn(t, db.Pool, DefaultSchema))
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM replay_runs`).Scan(&runs))
	assert.Equal(t, 1, runs, "replay_runs moved")
	var marker int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM sink_errors WHERE topic = 'marker'`).Scan(&marker))
	assert.Equal(t, 1, marker, "sink_errors moved, not recreated")
	ms, err := migrations()
	require.NoError(t, err)
	var recorded int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM `+MigrationsTable).Scan(&recorded))
	assert.Equal(t, len(ms), recorded, "bookkeeping moved with its rows")

	// The replay_runs id sequence moved with its table: a replay inserts.
	sum := replay(t, ReplayConfig{Config: cfg})
	assert.Equal(t, len(e.model.stock), int(sum.StockRows))
	assert.Equal(t, []string{"orders"}, tablesIn(t, db.Pool, "public"), "replay recreated tables in public")
}

// TestLegacyInstallInPlace: Schema "public" (or empty) with an older install
// there renames its schema_migrations and resumes.
func TestLegacyInstallInPlace(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	g := newGen(seed(t), 10)
	e.produceStream(g, 20)
	db := pgtest.NewDatabase(t)
	legacyInstall(t, db, e)
	s := &store{pool: schemaPool(t, db.DSN, "public"), topic: e.topic, schema: "public", apply: copyApply}
	applied, err := s.migrate(context.Background())
	require.NoError(t, err)
	assert.Empty(t, applied)
	assert.Contains(t, s.adopted, "renamed public.schema_migrations")
	assert.Equal(t, allSinkTables(),
		tablesIn(t, db.Pool, "public"))
}

// TestLegacyInstallOfAnotherTopicStays: an older install in public whose
// offsets are of another topic (another pipeline on the database) is not
// taken; a clash with tables already in the schema stops the sink.
func TestLegacyInstallOfAnotherTopicStays(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	e.produceStream(newGen(seed(t), 10), 10)
	db := pgtest.NewDatabase(t)
	legacyInstall(t, db, e)
	ctx := context.Background()

	other := &store{pool: schemaPool(t, db.DSN, "other"), topic: "other.changelog", schema: "other", apply: copyApply}
	_, err := other.migrate(ctx)
	require.NoError(t, err)
	assert.Empty(t, other.adopted)
	assert.Contains(t, tablesIn(t, db.Pool, "public"), "schema_migrations", "another topic's install moved")
	assert.Contains(t, tablesIn(t, db.Pool, "other"), MigrationsTable)

	// Ours, but the schema has a stock table already: nothing moves.
	_, err = db.Pool.Exec(ctx, `CREATE SCHEMA taken; CREATE TABLE taken.stock (x int)`)
	require.NoError(t, err)
	cfg := e.sinkConfig(db.DSN)
	cfg.Schema = "taken"
	w, err := New(cfg, WithKafkaOpts(testKafkaOpts...), WithLogger(testLogger(t)))
	require.NoError(t, err)
	defer w.Close()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = w.Run(rctx)
	require.Error(t, err, "a clash must stop the sink")
	assert.Contains(t, err.Error(), "taken.stock exists already")
	assert.Contains(t, tablesIn(t, db.Pool, "public"), "schema_migrations", "moved in part")
}

// TestSchemaOfGivenPool: a Pool whose search_path is not Config.Schema stops
// the sink with an error that says so; invalid names are refused by
// Validate.
func TestSchemaOfGivenPool(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	w, err := New(Config{Brokers: []string{"127.0.0.1:1"}, Pool: db.Pool, Schema: "mine"})
	require.NoError(t, err)
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = w.Run(ctx)
	var se *schemaError
	require.True(t, errors.As(err, &se), "want a schemaError, got %v", err)
	assert.Contains(t, err.Error(), "search_path")
	assert.NotContains(t, tablesIn(t, db.Pool, "public"), "stock")

	for _, bad := range []string{"Reservations", "pg_sink", "a-b", "1st", "x y", strings.Repeat("a", 64), `a"b`} {
		err := Config{Brokers: []string{"b:1"}, DSN: "postgres://x", Schema: bad}.Validate()
		assert.Error(t, err, bad)
		err = VerifyConfig{Brokers: []string{"b:1"}, Schema: bad}.Validate()
		assert.Error(t, err, bad)
	}
	for _, good := range []string{"", DefaultSchema, "public", "_x1", strings.Repeat("a", 63)} {
		assert.NoError(t, Config{Brokers: []string{"b:1"}, DSN: "postgres://x", Schema: good}.Validate(), good)
	}
}
