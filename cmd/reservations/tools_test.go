package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/internal/kafkatest"
	"github.com/reservations/reservations/internal/pgtest"
	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/sink"
	"github.com/reservations/reservations/statestore"
	"github.com/reservations/reservations/topics"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// tool runs a subcommand in-process with an empty environment and returns
// its exit code and output.
func tool(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := (&cli{stdout: &stdout, stderr: &stderr, lookupEnv: envMap()}).run(ctx, args)
	t.Logf("reservations %s -> %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return code, stdout.String(), stderr.String()
}

// pipeline is a processor and a sink running in-process on a test broker.
type pipeline struct {
	t        *testing.T
	c        *kafkatest.Cluster
	names    topics.Names
	parts    int32
	stateDir string
	db       *pgtest.Database
	cancel   context.CancelFunc
	done     chan error
	running  int // components sending on done
}

// startPipeline runs a processor and, with withSink, a sink into p.db.
func startPipeline(t *testing.T, parts int32, withSink bool) *pipeline {
	t.Helper()
	c := kafkatest.New(t)
	p := &pipeline{t: t, c: c, names: c.Topics(t, parts), parts: parts, stateDir: t.TempDir(),
		db: readerDatabase(t, pgtest.NewDatabase(t)), done: make(chan error, 2)}
	log := newLogger(os.Stderr, logFlags{Level: slog.LevelWarn})
	proc, err := processor.New(processor.Config{
		Brokers: c.Brokers, Topics: p.names, Group: p.names.Commands + "-group", StateDir: p.stateDir,
		CommitInterval: 20 * time.Millisecond, TransactionTimeout: 5 * time.Second, SessionTimeout: 6 * time.Second,
		KafkaOpts: kafkatest.ClientOpts(),
	}, processor.WithLogger(log))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.running = 1
	go func() { p.done <- proc.Run(ctx) }()
	if withSink {
		w, err := sink.New(sink.Config{Brokers: c.Brokers, Topic: p.names.Changelog, DSN: p.db.DSN, Schema: sink.DefaultSchema,
			BatchWait: 5 * time.Millisecond, MetadataInterval: 200 * time.Millisecond},
			sink.WithKafkaOpts(kafkatest.ClientOpts()...), sink.WithLogger(log))
		require.NoError(t, err)
		p.running++
		go func() { p.done <- w.Run(ctx) }()
		t.Cleanup(w.Close)
	}
	t.Cleanup(p.stop)
	return p
}

// prefix is the topic prefix of p's topics.
func (p *pipeline) prefix() string { return strings.TrimSuffix(p.names.Commands, ".commands") }

// stop ends the processor and the sink (idempotent).
func (p *pipeline) stop() {
	p.t.Helper()
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.cancel = nil
	for range p.running {
		select {
		case err := <-p.done:
			assert.NoError(p.t, err)
		case <-time.After(60 * time.Second):
			p.t.Fatal("pipeline did not stop")
		}
	}
}

func i64(v int64) *int64 { return &v }

// sendWorkload produces n commands over skus SKUs (stock first, then reserve,
// adjust, extend, release, commit, stock changes, rejections included) and
// waits until every one is decided.
func (p *pipeline) sendWorkload(n, skus int) {
	p.t.Helper()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var cmds []schemas.Command
	for i := range skus {
		cmds = append(cmds, schemas.Command{CommandID: fmt.Sprintf("set-%d", i), Type: schemas.TypeStockSet,
			SKU: fmt.Sprintf("SKU-%d", i), OnHand: i64(int64(10 + rng.IntN(20)))})
	}
	var held []schemas.Command // reserves sent
	for i := len(cmds); i < n; i++ {
		sku := fmt.Sprintf("SKU-%d", rng.IntN(skus))
		id := fmt.Sprintf("cmd-%d", i)
		var cmd schemas.Command
		switch x := rng.IntN(10); {
		case x < 4 || len(held) == 0:
			cmd = schemas.Command{Type: schemas.TypeReserve, SKU: sku, ReservationID: fmt.Sprintf("r-%d", i),
				Quantity: i64(int64(1 + rng.IntN(4))), CartID: "cart-1"}
			held = append(held, cmd)
		case x == 4:
			cmd = schemas.Command{Type: schemas.TypeStockAdjust, SKU: sku, Delta: i64(int64(rng.IntN(10) - 3))}
			if *cmd.Delta == 0 {
				*cmd.Delta = 1
			}
		case x == 5:
			cmd = schemas.Command{Type: schemas.TypeStockSet, SKU: sku, OnHand: i64(int64(rng.IntN(12)))}
		default:
			r := held[rng.IntN(len(held))]
			cmd = schemas.Command{SKU: r.SKU, ReservationID: r.ReservationID}
			switch x {
			case 6:
				cmd.Type = schemas.TypeRelease
			case 7:
				cmd.Type, cmd.OrderID = schemas.TypeCommit, "order-"+id
			case 8:
				cmd.Type, cmd.Quantity = schemas.TypeAdjust, i64(int64(1+rng.IntN(5)))
			default:
				cmd.Type = schemas.TypeExtend
			}
		}
		cmd.CommandID = id
		cmds = append(cmds, cmd)
	}

	prod := p.c.Client(p.t, kgo.DefaultProduceTopic(p.names.Commands))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ids := map[string]bool{}
	for _, batch := range [][]schemas.Command{cmds[:skus], cmds[skus:]} {
		var recs []*kgo.Record
		for _, cmd := range batch {
			b, err := json.Marshal(cmd)
			require.NoError(p.t, err)
			recs = append(recs, &kgo.Record{Key: []byte(cmd.SKU), Value: b})
			ids[cmd.CommandID] = true
		}
		require.NoError(p.t, prod.ProduceSync(ctx, recs...).FirstErr())
		p.waitDecided(ctx, ids)
	}
}

// waitDecided reads results until every id in ids has one.
func (p *pipeline) waitDecided(ctx context.Context, ids map[string]bool) {
	p.t.Helper()
	reader := p.c.Client(p.t, kgo.ConsumeTopics(p.names.Results), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	missing := len(ids)
	seen := map[string]bool{}
	for missing > 0 {
		fs := reader.PollFetches(ctx)
		require.NoError(p.t, ctx.Err(), "%d commands not decided", missing)
		fs.EachRecord(func(r *kgo.Record) {
			var res schemas.Result
			require.NoError(p.t, json.Unmarshal(r.Value, &res))
			if ids[res.CommandID] && !seen[res.CommandID] {
				seen[res.CommandID] = true
				missing--
			}
		})
	}
}

// readerDatabase sets the search_path of db (for every new session, its
// pool's included) to the sink's default schema, then public, as
// docs/SINK_SCHEMA.md advises readers of the tables: the tests' unqualified
// queries read the tables the commands write into that schema.
func readerDatabase(t *testing.T, db *pgtest.Database) *pgtest.Database {
	t.Helper()
	_, err := db.Pool.Exec(context.Background(), fmt.Sprintf("ALTER DATABASE %s SET search_path = %s, public",
		pgx.Identifier{db.Name}.Sanitize(), pgx.Identifier{sink.DefaultSchema}.Sanitize()))
	require.NoError(t, err)
	db.Pool.Reset() // open connections keep the old search_path
	return db
}

// tables dumps the sink's tables of pool as text rows in key order.
func tables(t *testing.T, pool interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	// updated_at and current_at of sink_offsets are when the row was written
	// and last known current, not data.
	for table, q := range map[string]string{
		"stock":        `SELECT t::text FROM stock t ORDER BY sku`,
		"reservations": `SELECT t::text FROM reservations t ORDER BY changelog_key`,
		"sink_offsets": `SELECT (topic, partition, next_offset)::text FROM sink_offsets ORDER BY topic, partition`,
	} {
		rows, err := pool.Query(context.Background(), q)
		require.NoError(t, err)
		out[table], err = pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
	}
	return out
}

// dumpStores reads every partition store under root.
func dumpStores(t *testing.T, root, changelog string, parts int32) map[int32]map[string]string {
	t.Helper()
	out := map[int32]map[string]string{}
	for p := range parts {
		dir := processor.StateDir(root, changelog, p)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		s, err := statestore.Open(dir, statestore.Options{})
		require.NoError(t, err)
		d, err := s.Dump()
		require.NoError(t, err)
		require.NoError(t, s.Close())
		out[p] = map[string]string{}
		for k, v := range d {
			out[p][k] = string(v)
		}
	}
	return out
}

// TestToolsOnProcessorRun runs a processor and the sink, sends a few hundred
// commands, and checks verify, replay --to postgres and replay --to badger
// through the command line, then breaks Postgres and the changelog on purpose.
func TestToolsOnProcessorRun(t *testing.T) {
	const parts = 3
	p := startPipeline(t, parts, true)
	p.sendWorkload(400, 12)
	kafka := []string{"--brokers", strings.Join(p.c.Brokers, ","), "--topic-prefix", p.prefix()}

	// A clean run verifies, with and without Postgres.
	code, out, _ := tool(t, append([]string{"verify", "--pg-dsn", p.db.DSN, "--wait", "60s"}, kafka...)...)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "OK: no mismatch")
	assert.Contains(t, out, "SKUs:         12")
	code, out, _ = tool(t, append([]string{"verify"}, kafka...)...)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "postgres:     not compared")

	// replay --to postgres into an empty database gives the sink's tables;
	// a second run gives the same.
	fresh := readerDatabase(t, pgtest.NewDatabase(t))
	want := tables(t, p.db.Pool)
	require.NotEmpty(t, want["stock"])
	require.NotEmpty(t, want["reservations"])
	for run := range 2 {
		code, out, stderr := tool(t, append([]string{"replay", "--to", "postgres", "--pg-dsn", fresh.DSN}, kafka...)...)
		require.Equal(t, exitOK, code, "run %d", run)
		assert.Contains(t, out, "replay --to postgres: done")
		assert.Contains(t, out, "the tables were emptied first")
		assert.Contains(t, out, fmt.Sprintf("stock %d rows, reservations %d rows", len(want["stock"]), len(want["reservations"])))
		assert.Equal(t, want, tables(t, fresh.Pool), "run %d: replayed tables == the sink's", run)
		assert.NotContains(t, stderr, "level=ERROR")
	}
	code, _, _ = tool(t, append([]string{"verify", "--pg-dsn", fresh.DSN}, kafka...)...)
	assert.Equal(t, exitOK, code)

	// replay --to badger gives the processor's stores; a second run too.
	p.stop()
	wantStores := dumpStores(t, p.stateDir, p.names.Changelog, parts)
	require.Len(t, wantStores, parts)
	rebuilt := t.TempDir()
	for run := range 2 {
		code, out, _ := tool(t, append([]string{"replay", "--to", "badger", "--state-dir", rebuilt}, kafka...)...)
		require.Equal(t, exitOK, code, "run %d", run)
		assert.Contains(t, out, "replay --to badger: done, partitions 0,1,2")
		assert.Equal(t, wantStores, dumpStores(t, rebuilt, p.names.Changelog, parts), "run %d", run)
		for part := range parts {
			if run == 0 {
				assert.Contains(t, out, fmt.Sprintf("partition %d: full (no store yet, or an empty one), offsets 0..", part))
			} else {
				assert.Contains(t, out, fmt.Sprintf("partition %d: current (nothing to replay)", part))
			}
		}
		if run == 1 {
			assert.Contains(t, out, "  0 records read in ")
		}
	}
	// One partition, in full.
	one := t.TempDir()
	code, out, _ = tool(t, append([]string{"replay", "--to", "badger", "--state-dir", one, "--only-partitions", "1", "--full"}, kafka...)...)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "partitions 1 of")
	assert.Contains(t, out, "partition 1: full (asked for: the store was wiped first)")
	assert.Equal(t, map[int32]map[string]string{1: wantStores[1]}, dumpStores(t, one, p.names.Changelog, parts))
	code, _, stderr := tool(t, append([]string{"replay", "--to", "badger", "--state-dir", one, "--only-partitions", "7"}, kafka...)...)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "partition 7")

	// A corrupted Postgres row: exit 1, naming the key and the field.
	var key string
	require.NoError(t, fresh.Pool.QueryRow(context.Background(), `UPDATE reservations SET quantity = quantity + 7
		WHERE changelog_key = (SELECT min(changelog_key) FROM reservations) RETURNING changelog_key`).Scan(&key))
	code, out, _ = tool(t, append([]string{"verify", "--pg-dsn", fresh.DSN}, kafka...)...)
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, out, "FAILED: 1 mismatch")
	assert.Contains(t, out, "postgres    "+key+" quantity: want ")

	// A stock record with a broken reserved counter, written by a
	// transactional producer: exit 1, naming the SKU's key.
	var st schemas.StockEntity
	require.NoError(t, fresh.Pool.QueryRow(context.Background(), `SELECT sku, on_hand, reserved, version FROM stock
		WHERE available > 0 ORDER BY sku LIMIT 1`).Scan(&st.SKU, &st.OnHand, &st.Reserved, &st.Version))
	st.Reserved++
	st.Available = st.OnHand - st.Reserved
	st.Version++
	st.Event = schemas.EventAdjusted
	st.UpdatedAt = schemas.MillisOf(time.Now())
	b, err := json.Marshal(st)
	require.NoError(t, err)
	prod := p.c.Client(t, kgo.TransactionalID("saboteur"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, prod.BeginTransaction())
	require.NoError(t, prod.ProduceSync(context.Background(), &kgo.Record{Topic: p.names.Changelog,
		Key: []byte(schemas.StockKey(st.SKU)), Value: b, Partition: topics.Partition([]byte(st.SKU), parts)}).FirstErr())
	require.NoError(t, prod.EndTransaction(context.Background(), kgo.TryCommit))
	code, out, _ = tool(t, append([]string{"verify"}, kafka...)...)
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, out, "reserved    "+schemas.StockKey(st.SKU)+" reserved: want ")

	// No sink on that database any more: it stays behind the new record.
	code, _, stderr = tool(t, append([]string{"verify", "--pg-dsn", fresh.DSN, "--wait", "300ms"}, kafka...)...)
	assert.Equal(t, exitIncomplete, code)
	assert.Contains(t, stderr, "the sink is behind the changelog")

	// Unreachable Postgres, a missing topic: no verdict.
	code, _, _ = tool(t, append([]string{"verify", "--pg-dsn", "postgres://x@127.0.0.1:1/x?connect_timeout=1"}, kafka...)...)
	assert.Equal(t, exitIncomplete, code)
	code, _, stderr = tool(t, "verify", "--brokers", strings.Join(p.c.Brokers, ","), "--topic-prefix", "nothing-here")
	assert.Equal(t, exitIncomplete, code)
	assert.Contains(t, stderr, "nothing-here.changelog")
}

func TestToolsUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"verify", "--max-report", "0"}, "--max-report"},
		{[]string{"verify", "--wait", "-1s"}, "--wait"},
		{[]string{"verify", "--pg-dsn", "::bad"}, "--pg-dsn"},
		{[]string{"verify", "extra"}, "unexpected argument"},
		{[]string{"replay"}, "--to (RESERVATIONS_TO) is required"},
		{[]string{"replay", "--to", "s3"}, `"s3": want badger or postgres`},
		{[]string{"replay", "--to", "postgres"}, "--pg-dsn (RESERVATIONS_PG_DSN) is required with --to postgres"},
		{[]string{"replay", "--to", "postgres", "--pg-dsn", "postgres://x@h/db", "--full"}, "applies to --to badger only"},
		{[]string{"replay", "--to", "badger", "--pg-dsn", "postgres://x@h/db"}, "applies to --to postgres only"},
		{[]string{"replay", "--to", "badger", "--only-partitions", "a,b"}, "--only-partitions (RESERVATIONS_ONLY_PARTITIONS)"},
		{[]string{"replay", "--to", "postgres", "--pg-dsn", "postgres://x@h/db", "--only-partitions", "1"}, "applies to --to badger only"},
		{[]string{"replay", "--to", "badger", "--partitions", "1"}, "flag provided but not defined: -partitions"},
		{[]string{"sink"}, "--pg-dsn (RESERVATIONS_PG_DSN) is required"},
		{[]string{"sink", "--pg-dsn", "postgres://x@h/db", "--batch-size", "0"}, "--batch-size"},
		{[]string{"dev", "--pg-dsn", "::bad"}, "--pg-dsn"},
		{[]string{"sink", "--pg-dsn", "postgres://x@h/db", "--pg-schema", "Snap-1"},
			`invalid --pg-schema (RESERVATIONS_PG_SCHEMA): schema "Snap-1": want a lower-case identifier`},
		{[]string{"sink", "--pg-dsn", "postgres://x@h/db", "--pg-schema", "pg_snap"}, "--pg-schema (RESERVATIONS_PG_SCHEMA): schema \"pg_snap\": names starting with pg_ are reserved"},
		{[]string{"replay", "--to", "postgres", "--pg-dsn", "postgres://x@h/db", "--pg-schema", "A"}, "invalid --pg-schema"},
		{[]string{"replay", "--to", "badger", "--pg-schema", "snap"}, "--pg-schema (RESERVATIONS_PG_SCHEMA) applies to --to postgres only"},
		{[]string{"dev", "--pg-schema", "a b"}, "invalid --pg-schema"},
	} {
		code, _, stderr := tool(t, tc.args...)
		assert.Equal(t, exitUsage, code, tc.args)
		assert.Contains(t, stderr, tc.msg, tc.args)
	}
	// The environment is read like the flags; settings of the other target
	// given in the environment are ignored.
	var stdout, stderr bytes.Buffer
	code := (&cli{stdout: &stdout, stderr: &stderr, lookupEnv: envMap("RESERVATIONS_TO", "postgres",
		"RESERVATIONS_ONLY_PARTITIONS", "1,2")}).run(context.Background(), []string{"replay"})
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr.String(), "--pg-dsn (RESERVATIONS_PG_DSN) is required")
	assert.NotContains(t, stderr.String(), "partitions")

	// RESERVATIONS_PARTITIONS is the partition count of dev and serve; replay
	// reads its partition list from RESERVATIONS_ONLY_PARTITIONS only, so
	// one environment can hold both.
	env := envMap("RESERVATIONS_PARTITIONS", "12", "RESERVATIONS_ONLY_PARTITIONS", "0,3")
	var rcfg replayFlags
	rs := newSettings("replay")
	rcfg.register(rs)
	_, err := rs.Parse([]string{"--to", "badger"}, env)
	require.NoError(t, err)
	require.NoError(t, rcfg.validate(rs))
	assert.Equal(t, []int32{0, 3}, rcfg.OnlyPartitions)
	var scfg serveConfig
	ss := newSettings("serve")
	scfg.register(ss)
	_, err = ss.Parse([]string{"--brokers", "b:1"}, env)
	require.NoError(t, err)
	require.NoError(t, scfg.validate(ss))
	assert.Equal(t, 12, scfg.Partitions)

	for _, name := range []string{"sink", "verify", "replay"} {
		code, out, _ := tool(t, name, "-h")
		assert.Equal(t, exitOK, code)
		assert.Contains(t, out, "Usage: reservations "+name)
		assert.Contains(t, out, "RESERVATIONS_PG_DSN")
	}
}

// TestSinkCommand runs `reservations sink` on a changelog the processor
// writes and checks rows, readiness and a clean stop.
func TestSinkCommand(t *testing.T) {
	p := startPipeline(t, 2, false)
	p.sendWorkload(40, 4)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- (&cli{stdout: &stdout, stderr: &stderr, lookupEnv: envMap("RESERVATIONS_PG_DSN", p.db.DSN)}).run(ctx,
			[]string{"sink", "--brokers", strings.Join(p.c.Brokers, ","), "--topic-prefix", p.prefix(),
				"--http-addr", httpAddr, "--batch-wait", "5ms"})
	}()
	eventually(t, 60*time.Second, "sink ready with rows", func() bool {
		code, body, err := httpGet("http://" + httpAddr + "/readyz")
		if err != nil || code != http.StatusOK {
			return false
		}
		assert.JSONEq(t, `{"ready":true,"partitions":[],"sink":"ready"}`, body)
		var n int
		err = p.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM stock`).Scan(&n)
		return err == nil && n == 4
	})
	code, body, err := httpGet("http://" + httpAddr + "/metrics")
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "reservations_sink_ready 1")
	code, out, _ := tool(t, "verify", "--brokers", strings.Join(p.c.Brokers, ","), "--topic-prefix", p.prefix(),
		"--pg-dsn", p.db.DSN)
	assert.Equal(t, exitOK, code, out)
	cancel()
	select {
	case code := <-done:
		assert.Equal(t, exitOK, code, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("sink did not stop")
	}
	assert.Contains(t, stderr.String(), "reservations sink running")
}

// TestSinkCommandSchema: the sink command (--pg-schema from the
// environment) and replay --to postgres (--pg-schema flag) put their tables
// into the schema they are given, and nowhere else; the rows are the
// changelog's.
func TestSinkCommandSchema(t *testing.T) {
	p := startPipeline(t, 2, false)
	p.sendWorkload(40, 4)
	kafka := []string{"--brokers", strings.Join(p.c.Brokers, ","), "--topic-prefix", p.prefix()}
	db := pgtest.NewDatabase(t) // search_path as the server's default: public first
	const schema = "inventory_snapshot"
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- (&cli{stdout: &stdout, stderr: &stderr, lookupEnv: envMap("RESERVATIONS_PG_DSN", db.DSN,
			"RESERVATIONS_PG_SCHEMA", schema)}).run(ctx,
			append([]string{"sink", "--http-addr", httpAddr, "--batch-wait", "5ms"}, kafka...))
	}()
	eventually(t, 60*time.Second, "sink rows in "+schema, func() bool {
		var n int
		err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM inventory_snapshot.stock`).Scan(&n)
		return err == nil && n == 4
	})
	cancel()
	select {
	case code := <-done:
		assert.Equal(t, exitOK, code, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("sink did not stop")
	}
	assert.Contains(t, stderr.String(), "schema="+schema)
	sinkTables := []string{"audit_dropped_partitions", "audit_events", "audit_gaps", "replay_runs", "reservations",
		sink.MigrationsTable, "sink_errors", "sink_offsets", "stock"}
	// The sink command keeps the audit trail: the partitions of this month
	// and the next exist ahead of need.
	this := time.Now().UTC()
	next := this.AddDate(0, 0, 32-this.Day())
	withAudit := append(slices.Clone(sinkTables), fmt.Sprintf("audit_events_y%04dm%02d", this.Year(), this.Month()),
		fmt.Sprintf("audit_events_y%04dm%02d", next.Year(), next.Month()))
	slices.Sort(withAudit)
	assert.Equal(t, map[string][]string{schema: withAudit}, tablesBySchema(t, db.Pool))
	want := schemaTables(t, db.Pool, schema)
	// The audit's offsets of the results topics: the sink's, not the
	// snapshot's (replay rebuilds the snapshot only).
	want["sink_offsets"] = slices.DeleteFunc(want["sink_offsets"], func(row string) bool {
		return !strings.Contains(row, ".changelog,")
	})
	require.Len(t, want["stock"], 4)
	require.NotEmpty(t, want["reservations"])

	// verify reads the schema it is given: clean there, and a clear failure
	// (not a silent pass) where the sink never wrote.
	code, out, _ := tool(t, append([]string{"verify", "--pg-dsn", db.DSN, "--pg-schema", schema}, kafka...)...)
	assert.Equal(t, exitOK, code, out)
	code, out, errOut := tool(t, append([]string{"verify", "--pg-dsn", db.DSN, "--wait", "0"}, kafka...)...)
	assert.NotEqual(t, exitOK, code, out)
	assert.Contains(t, errOut, "no sink tables (sink_offsets) in "+sink.DefaultSchema+":", "names the schema it looked in")

	// replay --to postgres into another schema of another database: the
	// same rows, there only.
	fresh := pgtest.NewDatabase(t)
	code, out, _ = tool(t, append([]string{"replay", "--to", "postgres", "--pg-dsn", fresh.DSN, "--pg-schema", "rebuilt"}, kafka...)...)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "in schema rebuilt")
	assert.Equal(t, map[string][]string{"rebuilt": sinkTables}, tablesBySchema(t, fresh.Pool))
	assert.Equal(t, want, schemaTables(t, fresh.Pool, "rebuilt"))
}

// tablesBySchema lists the tables of pool's database outside the system
// schemas, by schema.
func tablesBySchema(t *testing.T, pool *pgxpool.Pool) map[string][]string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT table_schema, table_name FROM information_schema.tables
		WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2`)
	require.NoError(t, err)
	out := map[string][]string{}
	var schema, table string
	_, err = pgx.ForEachRow(rows, []any{&schema, &table}, func() error {
		out[schema] = append(out[schema], table)
		return nil
	})
	require.NoError(t, err)
	for _, ts := range out {
		slices.Sort(ts)
	}
	return out
}

// schemaTables is tables, reading the sink's tables of schema.
func schemaTables(t *testing.T, pool *pgxpool.Pool, schema string) map[string][]string {
	t.Helper()
	conn, err := pool.Acquire(context.Background())
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(context.Background(), "SET search_path = "+pgx.Identifier{schema}.Sanitize())
	require.NoError(t, err)
	defer func() { _, _ = conn.Exec(context.Background(), "RESET search_path") }()
	return tables(t, conn)
}

// TestDevSink runs dev with --pg-dsn on a Postgres that goes away and comes
// back: rows appear, the processor keeps deciding during the outage, /readyz
// reports the sink, and the sink catches up.
func TestDevSink(t *testing.T) {
	srv := pgtest.NewServer(t)
	db := readerDatabase(t, srv.NewDatabase(t))
	dir := t.TempDir()
	kafkaPort := freePort(t)
	broker := "127.0.0.1:" + strconv.Itoa(kafkaPort)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dev := startDev(t, "--kafka-port", strconv.Itoa(kafkaPort), "--data-dir", dir, "--http-addr", httpAddr,
		"--partitions", "2", "--log-level", "info", "--commit-interval", "20ms", "--pg-dsn", db.DSN)
	waitReady(t, dev, httpAddr, 2)
	_, body, err := httpGet("http://" + httpAddr + "/readyz")
	require.NoError(t, err)
	assert.Contains(t, body, `"sink":"ready"`)
	assert.Contains(t, dev.stdout.String(), "Postgres sink: tables stock and reservations in ")
	assert.Contains(t, dev.stderr.String(), "postgres sink on")

	stockRow := func(sku string) (onHand int64, ok bool) {
		err := db.Pool.QueryRow(context.Background(), `SELECT on_hand FROM stock WHERE sku = $1`, sku).Scan(&onHand)
		return onHand, err == nil
	}
	code, _, stderr := send(t, broker, "stock.set", "--sku", "SKU-1", "--on-hand", "10")
	require.Equal(t, exitOK, code, stderr)
	eventually(t, 30*time.Second, "row in postgres", func() bool { n, ok := stockRow("SKU-1"); return ok && n == 10 })

	// Postgres goes away: the processor keeps deciding, /readyz says why.
	srv.Stop(t)
	code, _, stderr = send(t, broker, "stock.set", "--sku", "SKU-1", "--on-hand", "12")
	require.Equal(t, exitOK, code, stderr)
	eventually(t, 30*time.Second, "sink not ready", func() bool {
		code, body, err := httpGet("http://" + httpAddr + "/readyz")
		return err == nil && code == http.StatusServiceUnavailable && strings.Contains(body, `"sink":"not_ready"`)
	})
	code, _, stderr = send(t, broker, "reserve", "--sku", "SKU-1", "--reservation", "r-1", "--qty", "2")
	require.Equal(t, exitOK, code, stderr)

	// It comes back: the sink catches up and verify is clean.
	srv.Start(t)
	waitReady(t, dev, httpAddr, 2)
	eventually(t, 30*time.Second, "caught up", func() bool {
		var n int
		err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM reservations WHERE changelog_key = 'reservation/SKU-1/r-1'`).Scan(&n)
		return err == nil && n == 1
	})
	n, _ := stockRow("SKU-1")
	assert.EqualValues(t, 12, n)
	code, out, _ := tool(t, "verify", "--brokers", broker, "--pg-dsn", db.DSN)
	assert.Equal(t, exitOK, code, out)
	require.Equal(t, exitOK, dev.stop(t), dev.stderr.String())
	assert.NotContains(t, dev.stderr.String(), "level=ERROR")
}

// TestDevSinkOff: without a DSN and without a local server dev says, in one
// line, that the sink is off and how to enable it; "off" skips the probe.
func TestDevSinkOff(t *testing.T) {
	for _, dsn := range []string{"", "off"} {
		var stderr bytes.Buffer
		s := newSettings("dev")
		var cfg devConfig
		cfg.register(s)
		_, err := s.Parse([]string{"--pg-dsn=" + dsn}, envMap())
		require.NoError(t, err)
		got, required := devSinkDSN(context.Background(), newLogger(&stderr, logFlags{Level: slog.LevelInfo}), s, cfg.PGDSN)
		assert.False(t, required)
		if got != "" {
			t.Logf("a local PostgreSQL answers at %s: the sink would run against it", got)
			continue
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		assert.Len(t, lines, 1, stderr.String())
		assert.Contains(t, lines[0], "postgres sink off")
		if dsn == "" {
			assert.Contains(t, lines[0], "--pg-dsn (RESERVATIONS_PG_DSN) not set")
			assert.Contains(t, lines[0], "host=/var/run/postgresql user=postgres dbname=postgres")
		}
	}
	var buf bytes.Buffer
	printDevExample(&buf, "127.0.0.1:9092", "127.0.0.1:8080", "reservations", "", sink.DefaultSchema, true)
	assert.Contains(t, buf.String(), "Postgres sink: off. Start dev with --pg-dsn (RESERVATIONS_PG_DSN)")
	assert.Contains(t, buf.String(), "reservations send cart.reserve --cart cart-7")
	buf.Reset()
	printDevExample(&buf, "127.0.0.1:9092", "127.0.0.1:8080", "reservations", "postgres://u:secret@h/db", sink.DefaultSchema, false)
	assert.NotContains(t, buf.String(), "cart.reserve", "no coordinator (--carts=false)")
	assert.Contains(t, buf.String(), "reservations verify --pg-dsn 'postgres://u:xxxxx@h/db'")
	assert.NotContains(t, buf.String(), "secret")
}

func TestRedactDSN(t *testing.T) {
	assert.Equal(t, "postgres://u:xxxxx@h:5432/db", redactDSN("postgres://u:pw@h:5432/db"))
	assert.Equal(t, "postgres://u@h/db?password=xxxxx", redactDSN("postgres://u@h/db?password=pw"))
	assert.Equal(t, "host=h password=xxxxx dbname=d", redactDSN("host=h password=pw dbname=d"))
	assert.Equal(t, "host=/var/run/postgresql user=postgres", redactDSN("host=/var/run/postgresql user=postgres"))
}

func TestProgress(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(0, 0)
	p := newProgress(&buf, "replay")
	p.now = func() time.Time { return now }
	p.started, p.last = now, now
	p.update(10, 100) // too soon
	assert.Empty(t, buf.String())
	now = now.Add(2 * time.Second)
	p.update(50, 100)
	assert.Equal(t, "replay:  50.0% (50 of 100 records), 25 records/s, ETA 2s\n", buf.String())
	now = now.Add(500 * time.Millisecond)
	p.update(60, 100)
	assert.Equal(t, 1, strings.Count(buf.String(), "\n"), "at most one line a second")
	assert.InDelta(t, 24.0, p.rate(60), 0.1)

	// The caller's estimate (Rebuild's), or none yet.
	buf.Reset()
	now = now.Add(time.Second)
	p.report(70, 100, 90*time.Second, true)
	assert.Equal(t, "replay:  70.0% (70 of 100 records), 13 records/s, ETA 1m30s\n", buf.String())
	buf.Reset()
	now = now.Add(time.Second)
	p.report(70, 100, 0, false)
	assert.Equal(t, "replay:  70.0% (70 of 100 records), 0 records/s, ETA unknown\n", buf.String())
}
