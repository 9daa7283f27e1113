package sink

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/internal/pgtest"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const testPartitions = 4

var defaultTopic = topics.NewNames("").Changelog

// kafkaEnv is a kfake cluster with a changelog topic and a transactional
// producer, plus the model of what Postgres must hold.
type kafkaEnv struct {
	t       testing.TB
	cluster *kfake.Cluster
	brokers []string
	topic   string
	prod    *kgo.Client
	model   *model
}

func newKafkaEnv(t testing.TB, partitions int32) *kafkaEnv {
	t.Helper()
	topic := defaultTopic
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	// Compacted, as topics.Ensure creates it: the sink refuses other policies.
	require.NoError(t, c.CreateTopic(topic, partitions, map[string]string{"cleanup.policy": "compact"}))
	e := &kafkaEnv{t: t, cluster: c, brokers: c.ListenAddrs(), topic: topic, model: newModel()}
	e.prod = e.newProducer("changelog-writer")
	return e
}

func (e *kafkaEnv) newProducer(txnID string, opts ...kgo.Opt) *kgo.Client {
	e.t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(e.brokers...),
		kgo.DefaultProduceTopic(e.topic),
		kgo.TransactionalID(txnID),
		kgo.MetadataMinAge(100 * time.Millisecond),
	}, opts...)...)
	require.NoError(e.t, err)
	e.t.Cleanup(cl.Close)
	return cl
}

// rec is one changelog record to produce; a nil value is a tombstone.
type rec struct {
	key    string
	value  []byte
	poison bool // undecodable on purpose
}

// txn produces recs in one transaction with prod, commits or aborts it, and
// applies committed records to the model. It must not run concurrently with
// itself on one producer.
func (e *kafkaEnv) txn(prod *kgo.Client, recs []rec, commit bool) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(e.t, prod.BeginTransaction())
	krs := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		krs[i] = &kgo.Record{Key: []byte(r.key), Value: r.value}
	}
	if err := prod.ProduceSync(ctx, krs...).FirstErr(); err != nil {
		_ = prod.EndTransaction(ctx, kgo.TryAbort)
		require.NoError(e.t, err, "produce")
	}
	end := kgo.TryAbort
	if commit {
		end = kgo.TryCommit
	}
	require.NoError(e.t, prod.EndTransaction(ctx, end))
	if commit {
		e.model.apply(recs)
	}
	e.model.ended(krs)
}

// model is what Postgres must hold: the committed records applied one by one
// with the sink's rules (newer version wins, tombstone deletes).
type model struct {
	mu      sync.Mutex
	stock   map[string]schemas.StockEntity
	res     map[string]schemas.ReservationEntity
	next    map[int32]int64 // next offset after the last committed record
	bad     int             // committed undecodable records
	records int             // committed records of every kind
}

func newModel() *model {
	return &model{stock: map[string]schemas.StockEntity{}, res: map[string]schemas.ReservationEntity{},
		next: map[int32]int64{}}
}

func (m *model) apply(recs []rec) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range recs {
		m.records++
		if r.poison {
			m.bad++
			continue
		}
		switch schemas.KeyKind(r.key) {
		case schemas.StockPrefix:
			sku := strings.TrimPrefix(r.key, schemas.StockPrefix)
			if r.value == nil {
				delete(m.stock, sku)
				continue
			}
			var s schemas.StockEntity
			mustUnmarshal(r.value, &s)
			if cur, ok := m.stock[sku]; !ok || cur.Version < s.Version {
				m.stock[sku] = s
			}
		case schemas.ReservationPrefix:
			if r.value == nil {
				delete(m.res, r.key)
				continue
			}
			var s schemas.ReservationEntity
			mustUnmarshal(r.value, &s)
			if cur, ok := m.res[r.key]; !ok || cur.Version < s.Version {
				m.res[r.key] = s
			}
		}
	}
}

// ended notes the transaction markers written after krs: the sink's next
// offset passes the marker, whether the transaction committed or aborted. Tests
// have one producer per partition, so the marker follows the last record.
func (m *model) ended(krs []*kgo.Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, kr := range krs {
		m.next[kr.Partition] = max(m.next[kr.Partition], kr.Offset+2)
	}
}

func (m *model) snapshot() (map[string]schemas.StockEntity, map[string]schemas.ReservationEntity, map[int32]int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := make(map[string]schemas.StockEntity, len(m.stock))
	for k, v := range m.stock {
		s[k] = v
	}
	r := make(map[string]schemas.ReservationEntity, len(m.res))
	for k, v := range m.res {
		r[k] = v
	}
	n := make(map[int32]int64, len(m.next))
	for k, v := range m.next {
		n[k] = v
	}
	return s, r, n
}

func mustUnmarshal(b []byte, v any) {
	if err := json.Unmarshal(b, v); err != nil {
		panic(err)
	}
}

// gen makes a changelog stream like the processor's, with the faults the sink
// must absorb: several versions of one entity in a batch, re-delivered old
// versions, tombstones, command records, unknown prefixes, undecodable values.
type gen struct {
	rng     *rand.Rand
	skus    []string
	stock   map[string]schemas.StockEntity
	res     map[string]schemas.ReservationEntity
	history map[string][][]byte // key -> values produced, for re-delivery
	keys    []string            // keys of history, in first-produced order
	live    []string            // reservation keys not tombstoned
	n       int
	// clean leaves out re-deliveries, unknown prefixes and undecodable
	// values, and keeps no history (benchmarks).
	clean bool
}

func newGen(seed uint64, skus int) *gen {
	g := &gen{rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), stock: map[string]schemas.StockEntity{},
		res: map[string]schemas.ReservationEntity{}, history: map[string][][]byte{}}
	for i := range skus {
		// SKUs may contain '/', so reservation keys cannot be split.
		g.skus = append(g.skus, fmt.Sprintf("dept-%d/SKU-%d", i%3, i))
	}
	return g
}

var epoch = schemas.MillisOf(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))

// next returns the next record of the stream.
func (g *gen) next() rec {
	g.n++
	now := epoch + schemas.Millis(g.n)
	switch x := g.rng.IntN(100); {
	case g.clean && x < 16:
		return rec{key: schemas.CommandKey(fmt.Sprintf("cmd-%d", g.n)), value: []byte(`{"command_id":"x","version":1}`)}
	case x < 8 && len(g.keys) > 0: // re-deliver an old version
		k := g.keys[g.rng.IntN(len(g.keys))]
		h := g.history[k]
		return rec{key: k, value: h[g.rng.IntN(len(h))]}
	case x < 14: // idempotency record
		return rec{key: schemas.CommandKey(fmt.Sprintf("cmd-%d", g.n)), value: []byte(`{"command_id":"x","version":1}`)}
	case x < 15:
		return rec{key: "future/" + fmt.Sprint(g.n), value: []byte(`{}`)}
	case x < 16:
		sku := g.skus[g.rng.IntN(len(g.skus))]
		return rec{key: schemas.StockKey(sku), value: []byte(`{"sku":` + fmt.Sprint(g.n) + `}`), poison: true}
	case x < 40: // stock change
		sku := g.skus[g.rng.IntN(len(g.skus))]
		s := g.stock[sku]
		s.SKU, s.Version, s.UpdatedAt, s.CommandID = sku, s.Version+1, now, fmt.Sprintf("cmd-%d", g.n)
		s.OnHand = int64(g.rng.IntN(1000))
		s.Reserved = int64(g.rng.IntN(50))
		s.Available = s.OnHand - s.Reserved
		s.Event = schemas.EventStockSet
		if g.rng.IntN(4) == 0 {
			th := int64(g.rng.IntN(10))
			s.LowStockThreshold = &th
		} else {
			s.LowStockThreshold = nil
		}
		g.stock[sku] = s
		return g.put(schemas.StockKey(sku), s)
	case x < 45 && len(g.res) > 0: // reservation tombstone
		i := g.rng.IntN(len(g.live))
		k := g.live[i]
		g.live[i] = g.live[len(g.live)-1]
		g.live = g.live[:len(g.live)-1]
		delete(g.res, k)
		return rec{key: k}
	default: // reservation change
		var k string
		if len(g.res) == 0 || g.rng.IntN(3) == 0 {
			sku := g.skus[g.rng.IntN(len(g.skus))]
			k = schemas.ReservationKey(sku, fmt.Sprintf("r-%d", g.n))
			g.res[k] = schemas.ReservationEntity{Reservation: schemas.Reservation{
				ReservationID: fmt.Sprintf("r-%d", g.n), SKU: sku, CartID: "cart-" + fmt.Sprint(g.n%7),
				Status: schemas.StatusActive, ExpiresAt: now + 900_000}}
			g.live = append(g.live, k)
		} else {
			k = g.live[g.rng.IntN(len(g.live))]
		}
		r := g.res[k]
		r.Version++
		r.UpdatedAt = now
		r.CommandID = fmt.Sprintf("cmd-%d", g.n)
		r.Reservation.Quantity = int64(1 + g.rng.IntN(9))
		switch g.rng.IntN(7) {
		case 0:
			r.Reservation.Status, r.Event, r.Reservation.OrderID = schemas.StatusConsumed, schemas.EventCommitted, "o-1"
			r.Reservation.Prepared = false
		case 1:
			r.Reservation.Status, r.Event = schemas.StatusReleased, schemas.EventReleased
		case 2:
			r.Reservation.Extensions++
			r.Event = schemas.EventExtended
			r.Reservation.StoreID = "store-1"
		case 3: // extension: prepared for a cart commit
			r.Reservation.Prepared, r.Event, r.Reservation.OrderID = true, schemas.EventPrepared, "o-2"
		case 4:
			r.Reservation.Prepared, r.Event, r.Reservation.OrderID = false, schemas.EventUnprepared, ""
		default:
			r.Event = schemas.EventAdjusted
		}
		if g.rng.IntN(10) == 0 {
			r.Reservation.ExpiresAt = 0 // NULL in Postgres
		}
		g.res[k] = r
		return g.put(k, r)
	}
}

func (g *gen) put(key string, v any) rec {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	if g.clean {
		return rec{key: key, value: b}
	}
	if _, seen := g.history[key]; !seen {
		g.keys = append(g.keys, key)
	}
	g.history[key] = append(g.history[key], b)
	return rec{key: key, value: b}
}

// batchOf returns n records of the stream.
func (g *gen) batchOf(n int) []rec {
	recs := make([]rec, n)
	for i := range recs {
		recs[i] = g.next()
	}
	return recs
}

// produceStream produces txns transactions of up to 20 records; about one in
// eight is aborted and carries, besides stream records, keys that exist only
// in aborted transactions.
func (e *kafkaEnv) produceStream(g *gen, txns int) {
	e.t.Helper()
	for i := range txns {
		recs := g.batchOf(1 + g.rng.IntN(20))
		if g.rng.IntN(8) == 0 {
			// Aborted: the generator's state moved on, but the records must
			// never be seen; committed later records overwrite them anyway,
			// except the aborted-only keys, which must never appear.
			recs = append(recs,
				rec{key: schemas.StockKey(fmt.Sprintf("aborted-%d", i)), value: []byte(`{"sku":"aborted-` + fmt.Sprint(i) + `","version":1}`)},
				rec{key: schemas.ReservationKey("aborted", fmt.Sprint(i)), value: []byte(`{"reservation":{"sku":"aborted","reservation_id":"` + fmt.Sprint(i) + `"},"version":1}`)},
			)
			e.txn(e.prod, recs, false)
			continue
		}
		e.txn(e.prod, recs, true)
	}
}

// sinkConfig is a fast-reacting test configuration.
func (e *kafkaEnv) sinkConfig(dsn string) Config {
	return Config{
		Brokers: e.brokers, Topic: e.topic, DSN: dsn,
		BatchSize: 64, BatchWait: 5 * time.Millisecond,
		MetadataInterval: 100 * time.Millisecond, PingInterval: 50 * time.Millisecond,
		RetryMin: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond,
	}
}

// testKafkaOpts make the sink's client react fast: partitions added to a
// consumer join the fetch after the running long poll returns.
var testKafkaOpts = []kgo.Opt{kgo.MetadataMinAge(100 * time.Millisecond), kgo.FetchMaxWait(250 * time.Millisecond)}

// startSink runs a new Writer until the test ends; it returns the Writer and
// its registry.
func startSink(t testing.TB, cfg Config, opts ...Option) (*Writer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	w, err := New(cfg, append([]Option{WithRegisterer(reg), WithLogger(testLogger(t)),
		WithKafkaOpts(testKafkaOpts...)}, opts...)...)
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { errc <- w.Run(context.Background()) }()
	t.Cleanup(func() {
		w.Close()
		assert.NoError(t, <-errc, "Run")
	})
	return w, reg
}

// waitCaughtUp polls until the stored offsets are the model's.
func waitCaughtUp(t testing.TB, pool *pgxpool.Pool, e *kafkaEnv, timeout time.Duration) {
	t.Helper()
	_, _, want := e.model.snapshot()
	var got map[int32]int64
	deadline := time.Now().Add(timeout)
	for {
		got = storedOffsets(t, pool, e.topic)
		if equalOffsets(got, want) {
			return
		}
		if time.Now().After(deadline) {
			require.Equal(t, want, got, "sink did not catch up within %s", timeout)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

func equalOffsets(a, b map[int32]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// storedOffsets reads sink_offsets, tolerating a Postgres that is down or a
// schema not yet migrated (then it returns nil).
func storedOffsets(t testing.TB, pool *pgxpool.Pool, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, _ := pool.Query(ctx, `SELECT partition, next_offset FROM sink_offsets WHERE topic = $1`, topic)
	got := map[int32]int64{}
	var p int32
	var o int64
	if _, err := pgx.ForEachRow(rows, []any{&p, &o}, func() error { got[p] = o; return nil }); err != nil {
		return nil
	}
	return got
}

// assertMatchesModel compares the stock and reservations tables with the model.
func assertMatchesModel(t testing.TB, pool *pgxpool.Pool, m *model) {
	t.Helper()
	ctx := context.Background()
	wantStock, wantRes, _ := m.snapshot()

	gotStock := map[string]schemas.StockEntity{}
	rows, _ := pool.Query(ctx, `SELECT sku, on_hand, reserved, available, low_stock_threshold, version,
		event, command_id, updated_at FROM stock`)
	var s schemas.StockEntity
	var updated *time.Time
	_, err := pgx.ForEachRow(rows, []any{&s.SKU, &s.OnHand, &s.Reserved, &s.Available, &s.LowStockThreshold,
		&s.Version, &s.Event, &s.CommandID, &updated}, func() error {
		s.UpdatedAt = millisOrZero(updated)
		gotStock[s.SKU] = s
		s.LowStockThreshold = nil
		return nil
	})
	require.NoError(t, err)

	gotRes := map[string]schemas.ReservationEntity{}
	rows, _ = pool.Query(ctx, `SELECT changelog_key, sku, reservation_id, quantity, status, expires_at,
		extensions, cart_id, order_id, store_id, version, event, command_id, updated_at, prepared FROM reservations`)
	var key string
	var r schemas.ReservationEntity
	var expires *time.Time
	_, err = pgx.ForEachRow(rows, []any{&key, &r.Reservation.SKU, &r.Reservation.ReservationID,
		&r.Reservation.Quantity, &r.Reservation.Status, &expires, &r.Reservation.Extensions,
		&r.Reservation.CartID, &r.Reservation.OrderID, &r.Reservation.StoreID, &r.Version, &r.Event,
		&r.CommandID, &updated, &r.Reservation.Prepared}, func() error {
		r.Reservation.ExpiresAt = millisOrZero(expires)
		r.UpdatedAt = millisOrZero(updated)
		gotRes[key] = r
		return nil
	})
	require.NoError(t, err)

	assert.Equal(t, len(wantStock), len(gotStock), "stock rows")
	assert.Equal(t, len(wantRes), len(gotRes), "reservation rows")
	assert.Equal(t, wantStock, gotStock, "stock table differs from the changelog")
	assert.Equal(t, wantRes, gotRes, "reservations table differs from the changelog")

	var aborted int
	require.NoError(t, pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM stock WHERE sku LIKE 'aborted%')
		+ (SELECT count(*) FROM reservations WHERE sku = 'aborted')`).Scan(&aborted))
	assert.Zero(t, aborted, "records of aborted transactions reached Postgres")
}

func millisOrZero(t *time.Time) schemas.Millis {
	if t == nil {
		return 0
	}
	return schemas.MillisOf(*t)
}

// installRegressionCheck migrates the schema and adds triggers that record
// any row or offset moving backwards, in table regressions.
func installRegressionCheck(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	s := &store{pool: pool, topic: defaultTopic, apply: copyApply}
	_, err := s.migrate(ctx)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `
		CREATE TABLE regressions (tbl text, old_version bigint, new_version bigint);
		CREATE FUNCTION note_version_regression() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.version < OLD.version THEN
				INSERT INTO regressions VALUES (TG_TABLE_NAME, OLD.version, NEW.version);
			END IF;
			RETURN NEW;
		END $$;
		CREATE FUNCTION note_offset_regression() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.next_offset < OLD.next_offset THEN
				INSERT INTO regressions VALUES (TG_TABLE_NAME, OLD.next_offset, NEW.next_offset);
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER stock_regression BEFORE UPDATE ON stock
			FOR EACH ROW EXECUTE FUNCTION note_version_regression();
		CREATE TRIGGER reservations_regression BEFORE UPDATE ON reservations
			FOR EACH ROW EXECUTE FUNCTION note_version_regression();
		CREATE TRIGGER offsets_regression BEFORE UPDATE ON sink_offsets
			FOR EACH ROW EXECUTE FUNCTION note_offset_regression();`)
	require.NoError(t, err)
}

func assertNoRegressions(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM regressions`).Scan(&n))
	assert.Zero(t, n, "rows or offsets moved backwards")
}

// testLogger logs through t at Info and above.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// metricValue sums the samples of a metric family whose labels include the
// given name/value pairs; for a histogram it returns the sample count.
func metricValue(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}
