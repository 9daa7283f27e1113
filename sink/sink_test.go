package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/internal/pgtest"
	"github.com/reservations/reservations/schemas"
)

func seed(t *testing.T) uint64 {
	s := rand.Uint64()
	t.Logf("generator seed %d", s)
	return s
}

// TestSinkMatchesChangelog streams repeated versions, re-delivered old
// versions, tombstones, command records, undecodable values and aborted
// transactions, and checks that Postgres equals the committed changelog.
func TestSinkMatchesChangelog(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	db := pgtest.NewDatabase(t)
	installRegressionCheck(t, db.Pool)
	g := newGen(seed(t), 25)

	e.produceStream(g, 60) // before the sink starts: catch-up from the beginning
	w, reg := startSink(t, e.sinkConfig(db.DSN))
	e.produceStream(g, 60) // while it runs
	waitCaughtUp(t, db.Pool, e, 30*time.Second)

	assertMatchesModel(t, db.Pool, e.model)
	assertNoRegressions(t, db.Pool)
	assert.True(t, w.Ready())

	// Undecodable records are recorded, counted and skipped.
	var bad int
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM sink_errors`).Scan(&bad))
	assert.Equal(t, e.model.bad, bad, "sink_errors rows")
	assert.Equal(t, float64(e.model.bad), metricValue(t, reg, "reservations_sink_decode_errors_total"))
	assert.Positive(t, e.model.bad, "the stream had no undecodable record")

	// Metrics: every committed record was consumed exactly once.
	assert.Equal(t, float64(committedRecords(e)), metricValue(t, reg, "reservations_sink_records_consumed_total"), "records consumed")
	assert.Positive(t, metricValue(t, reg, "reservations_sink_rows_written_total", "table", "reservations", "op", "delete"))
	assert.Positive(t, metricValue(t, reg, "reservations_sink_batch_duration_seconds"))
	assert.Equal(t, 1.0, metricValue(t, reg, "reservations_sink_ready"))
	for p := range testPartitions {
		assert.Zero(t, metricValue(t, reg, "reservations_sink_records_lag", "partition", fmt.Sprint(p)), "lag of partition %d", p)
	}
}

// committedRecords counts the records the model saw: offsets minus control
// records are not known, so count from the model's bookkeeping instead.
func committedRecords(e *kafkaEnv) int {
	e.model.mu.Lock()
	defer e.model.mu.Unlock()
	return e.model.records
}

// TestSinkCrashRestart kills the sink over and over, mid-transaction and
// right after commits whose outcome it does not learn, while the changelog
// grows; every restart resumes from the stored offsets.
func TestSinkCrashRestart(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	db := pgtest.NewDatabase(t)
	installRegressionCheck(t, db.Pool)
	g := newGen(seed(t), 30)
	cfg := e.sinkConfig(db.DSN)
	cfg.BatchSize = 16

	produced := make(chan struct{})
	go func() {
		defer close(produced)
		e.produceStream(g, 300)
	}()

	const minLives = 16
	var lostAcks atomic.Int64
	faults := rand.New(rand.NewPCG(rand.Uint64(), 1)) // not g.rng: the producer goroutine uses that
	for round := 0; ; round++ {
		done := false
		if round >= minLives {
			select {
			case <-produced:
				done = true
			default:
			}
		}
		reg := prometheus.NewRegistry()
		w, err := New(cfg, WithRegisterer(reg), WithLogger(testLogger(t)), WithKafkaOpts(testKafkaOpts...))
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		commits := 0
		killAfter := 1 + faults.IntN(4)
		w.afterCommit = func() error {
			if done {
				return nil // the last life runs to the end
			}
			commits++
			switch {
			case round%2 == 0 && commits%killAfter == 0:
				lostAcks.Add(1)
				return errors.New("simulated lost commit acknowledgement")
			case round%2 == 1 && commits == killAfter:
				cancel() // crash right after a commit
			}
			return nil
		}
		// And a crash at an arbitrary moment, typically inside a transaction.
		life := time.Duration(10+faults.IntN(90)) * time.Millisecond
		if round%2 == 0 {
			life += 150 * time.Millisecond // room for several lost acknowledgements
		}
		timer := time.AfterFunc(life, cancel)
		errc := make(chan error, 1)
		go func() { errc <- w.Run(ctx) }()
		if done {
			timer.Stop()
			waitCaughtUp(t, db.Pool, e, 30*time.Second)
			cancel()
		}
		select {
		case err := <-errc:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return after its context was canceled")
		}
		timer.Stop()
		cancel()
		w.Close()
		if done {
			t.Logf("%d sink lives, %d lost commit acknowledgements", round+1, lostAcks.Load())
			break
		}
	}
	assertMatchesModel(t, db.Pool, e.model)
	assertNoRegressions(t, db.Pool)
}

// TestSinkCloseWithoutShutdown closes a busy sink (Close, not ctx) and starts
// another on the same database.
func TestSinkCloseWithoutShutdown(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	db := pgtest.NewDatabase(t)
	installRegressionCheck(t, db.Pool)
	g := newGen(seed(t), 10)
	e.produceStream(g, 80)

	cfg := e.sinkConfig("")
	cfg.Pool = db.Pool // the Writer must not close a pool it was given
	cfg.BatchSize = 8
	w, err := New(cfg, WithLogger(testLogger(t)), WithKafkaOpts(testKafkaOpts...))
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { errc <- w.Run(context.Background()) }()
	require.Eventually(t, func() bool { return len(storedOffsets(t, db.Pool, e.topic)) > 0 },
		30*time.Second, 5*time.Millisecond, "first batch")
	w.Close()
	require.NoError(t, <-errc)
	assert.False(t, w.Ready())
	assert.ErrorIs(t, w.Run(context.Background()), ErrClosed)
	require.NoError(t, db.Pool.Ping(context.Background()), "Close closed a pool it did not create")

	startSink(t, e.sinkConfig(db.DSN))
	e.produceStream(g, 20)
	waitCaughtUp(t, db.Pool, e, 30*time.Second)
	assertMatchesModel(t, db.Pool, e.model)
	assertNoRegressions(t, db.Pool)
}

// TestSinkPostgresOutage stops Postgres before the sink starts, under an idle
// sink and while transactions stream in, and checks that it reports not
// ready, retries, and catches up exactly once after Postgres returns.
func TestSinkPostgresOutage(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewServer(t)
	db := srv.NewDatabase(t)
	installRegressionCheck(t, db.Pool)
	e := newKafkaEnv(t, testPartitions)
	g := newGen(seed(t), 20)

	// Postgres is down when the sink starts: it waits, not ready.
	srv.Stop(t)
	w, reg := startSink(t, e.sinkConfig(db.DSN))
	e.produceStream(g, 30)
	require.Eventually(t, func() bool { return metricValue(t, reg, "reservations_sink_postgres_errors_total") >= 3 },
		10*time.Second, 5*time.Millisecond, "sink does not retry")
	assert.False(t, w.Ready())
	srv.Start(t)
	waitCaughtUp(t, db.Pool, e, 30*time.Second)
	require.True(t, w.Ready())

	// Outage 1: idle sink notices by its ping; records arrive meanwhile.
	srv.Stop(t)
	require.Eventually(t, func() bool { return !w.Ready() }, 10*time.Second, 5*time.Millisecond,
		"sink still ready with Postgres down")
	e.produceStream(g, 30)
	srv.Start(t)
	waitCaughtUp(t, db.Pool, e, 30*time.Second)
	require.Eventually(t, w.Ready, 10*time.Second, 5*time.Millisecond)

	// Outage 2: Postgres stops while batches are being written.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.produceStream(g, 150)
	}()
	before := committedRecords(e)
	require.Eventually(t, func() bool { return committedRecords(e) > before+200 },
		30*time.Second, time.Millisecond, "stream did not start")
	srv.Stop(t)
	srv.Start(t)
	wg.Wait()
	waitCaughtUp(t, db.Pool, e, 60*time.Second)

	assertMatchesModel(t, db.Pool, e.model)
	assertNoRegressions(t, db.Pool)
	assert.Positive(t, metricValue(t, reg, "reservations_sink_postgres_errors_total"), "postgres errors counted")
	assert.True(t, w.Ready())
}

// TestSinkNewPartitions adds partitions to the changelog while the sink runs.
func TestSinkNewPartitions(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, 2)
	db := pgtest.NewDatabase(t)
	g := newGen(seed(t), 10)
	startSink(t, e.sinkConfig(db.DSN))
	e.produceStream(g, 20)
	waitCaughtUp(t, db.Pool, e, 30*time.Second)

	adm := kadm.NewClient(e.prod)
	_, err := adm.CreatePartitions(context.Background(), 2, e.topic)
	require.NoError(t, err)

	manual := e.newProducer("manual-writer", kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx := context.Background()
	for p := int32(2); p < 4; p++ {
		sku := fmt.Sprintf("NEW-%d", p)
		b, _ := json.Marshal(schemas.StockEntity{SKU: sku, OnHand: 5, Available: 5, Version: 1, Event: schemas.EventStockSet})
		require.NoError(t, manual.BeginTransaction())
		r := &kgo.Record{Key: []byte(schemas.StockKey(sku)), Value: b, Partition: p}
		require.NoError(t, manual.ProduceSync(ctx, r).FirstErr())
		require.NoError(t, manual.EndTransaction(ctx, kgo.TryCommit))
		e.model.apply([]rec{{key: schemas.StockKey(sku), value: b}})
		e.model.ended([]*kgo.Record{r})
	}
	waitCaughtUp(t, db.Pool, e, 30*time.Second)
	assertMatchesModel(t, db.Pool, e.model)
}

// TestSinkTwoWriters runs two sinks on one database: the offset check in each
// transaction keeps them from applying anything twice or out of order.
func TestSinkTwoWriters(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	db := pgtest.NewDatabase(t)
	installRegressionCheck(t, db.Pool)
	g := newGen(seed(t), 10)
	cfg := e.sinkConfig(db.DSN)
	cfg.BatchSize = 8
	startSink(t, cfg)
	startSink(t, cfg)
	e.produceStream(g, 120)
	waitCaughtUp(t, db.Pool, e, 30*time.Second)
	assertMatchesModel(t, db.Pool, e.model)
	assertNoRegressions(t, db.Pool)
}

// TestMigrateConcurrently starts several migrations at once on an empty
// database: the advisory lock serialises them and each runs once.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	ms, err := migrations()
	require.NoError(t, err)
	var wg sync.WaitGroup
	applied := make([][]int64, 4)
	errs := make([]error, 4)
	for i := range applied {
		wg.Go(func() {
			s := &store{pool: db.Pool, topic: defaultTopic}
			applied[i], errs[i] = s.migrate(context.Background())
		})
	}
	wg.Wait()
	total := 0
	for i := range errs {
		require.NoError(t, errs[i])
		total += len(applied[i])
	}
	assert.Equal(t, len(ms), total, "each migration applied once")
	var n int
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM `+MigrationsTable).Scan(&n))
	assert.Equal(t, len(ms), n)
}

// TestSinkFailsOnBrokenSchema: a migration Postgres rejects for good is fatal.
func TestSinkFailsOnBrokenSchema(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	// A table of the same name that is not ours makes migration 1 fail.
	_, err := db.Pool.Exec(context.Background(), `CREATE TABLE stock (x int)`)
	require.NoError(t, err)
	w, err := New(Config{Brokers: []string{"127.0.0.1:1"}, Pool: db.Pool})
	require.NoError(t, err)
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = w.Run(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "migrate sink schema")
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Brokers: []string{"b:9092"}, DSN: "postgres://x"}
	require.NoError(t, ok.Validate())
	for name, mut := range map[string]func(*Config){
		"no brokers":     func(c *Config) { c.Brokers = nil },
		"no postgres":    func(c *Config) { c.DSN = "" },
		"dsn and pool":   func(c *Config) { c.Pool = new(pgxpool.Pool) },
		"negative batch": func(c *Config) { c.BatchSize = -1 },
		"retry order":    func(c *Config) { c.RetryMin, c.RetryMax = time.Second, time.Millisecond },
	} {
		c := ok
		mut(&c)
		assert.Error(t, c.Validate(), name)
	}
	_, err := New(Config{})
	assert.Error(t, err)
	_, err = New(Config{Brokers: []string{"b:9092"}, DSN: "::not a dsn"})
	assert.Error(t, err)
}

// TestSinkPreparedReservation follows a hold through the events of the cart
// commit extension (prepared, unprepared, prepared again, committed): the
// reservations table carries the prepared flag and the order at every step,
// and verify finds no violation and no difference from Postgres.
func TestSinkPreparedReservation(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	db := pgtest.NewDatabase(t)
	s := newShop(t, e, testPartitions, seed(t), 1)
	startSink(t, e.sinkConfig(db.DSN))
	ctx := context.Background()
	cfg := e.verifyConfig()
	cfg.Pool = db.Pool

	const sku = "SKU-P"
	key := schemas.ReservationKey(sku, "r1")
	s.n++
	s.txn(ctx, []*kgo.Record{s.putStock(sku, schemas.StockEntity{OnHand: 10}, schemas.EventStockSet)}, kgo.TryCommit)
	st := s.stock[sku]
	st.Reserved = 3
	s.n++
	r := schemas.ReservationEntity{Reservation: schemas.Reservation{ReservationID: "r1", SKU: sku, Quantity: 3,
		Status: schemas.StatusActive, ExpiresAt: epoch + 60_000, CartID: "cart-1"}}
	s.txn(ctx, []*kgo.Record{s.putStock(sku, st, schemas.EventReserved), s.putReservation(key, r, schemas.EventReserved)}, kgo.TryCommit)

	type row struct {
		Status, OrderID, Event string
		Prepared               bool
		Version                int64
	}
	step := func(r schemas.ReservationEntity, event string, recs ...*kgo.Record) {
		t.Helper()
		s.n++
		s.txn(ctx, append(recs, s.putReservation(key, r, event)), kgo.TryCommit)
		rep := verify(t, cfg) // waits until the sink has caught up
		require.True(t, rep.OK(), "mismatches: %v", rep.Mismatches)
		var got row
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT status, order_id, event, prepared, version FROM reservations
			WHERE changelog_key = $1`, key).Scan(&got.Status, &got.OrderID, &got.Event, &got.Prepared, &got.Version))
		want := s.res[key]
		assert.Equal(t, row{want.Reservation.Status, want.Reservation.OrderID, event, want.Reservation.Prepared, want.Version}, got)
	}

	r = s.res[key]
	r.Reservation.Prepared, r.Reservation.OrderID = true, "order-1"
	step(r, schemas.EventPrepared)
	r = s.res[key]
	r.Reservation.Prepared, r.Reservation.OrderID = false, ""
	step(r, schemas.EventUnprepared)
	r = s.res[key]
	r.Reservation.Prepared, r.Reservation.OrderID = true, "order-2"
	step(r, schemas.EventPrepared)
	r = s.res[key]
	r.Reservation.Prepared, r.Reservation.OrderID, r.Reservation.Status = false, "order-2", schemas.StatusConsumed
	st = s.stock[sku]
	st.OnHand, st.Reserved = 7, 0
	step(r, schemas.EventCommitted, s.putStock(sku, st, schemas.EventCommitted))

	var version int64
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT version FROM reservations WHERE changelog_key = $1`, key).Scan(&version))
	assert.Equal(t, int64(5), version, "reserved, prepared, unprepared, prepared, committed")
}
