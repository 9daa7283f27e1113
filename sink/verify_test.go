package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/internal/pgtest"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// shop writes a changelog the way the processor does: every record of a SKU
// on the SKU's partition, versions increasing by one, reserved equal to the
// sum of the active holds, oversold only through stock.set, prepared holds
// (extension) only committed or unprepared.
type shop struct {
	t      testing.TB
	e      *kafkaEnv
	prod   *kgo.Client
	parts  int32
	rng    *rand.Rand
	skus   []string
	stock  map[string]schemas.StockEntity
	res    map[string]schemas.ReservationEntity // every reservation not tombstoned
	active map[string][]string                  // SKU -> keys of active reservations
	n      int
	// noAborts: produce no aborted transactions; afterTxn, if set, runs
	// after every committed transaction (no transaction open). Together they
	// keep a test that compacts while producing clear of kfake's compaction
	// differences (internal/kafkatest: it compacts records of open
	// transactions, and drops abort markers it still reports).
	noAborts bool
	afterTxn func()
}

func newShop(t testing.TB, e *kafkaEnv, parts int32, seed uint64, skus int) *shop {
	s := &shop{t: t, e: e, parts: parts, rng: rand.New(rand.NewPCG(seed, 7)),
		stock: map[string]schemas.StockEntity{}, res: map[string]schemas.ReservationEntity{},
		active: map[string][]string{}}
	s.prod = e.newProducer(fmt.Sprintf("shop-%d", seed), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := range skus {
		s.skus = append(s.skus, fmt.Sprintf("SKU-%d", i))
	}
	return s
}

func (s *shop) record(sku string, key string, v any) *kgo.Record {
	var b []byte
	if v != nil {
		var err error
		b, err = json.Marshal(v)
		require.NoError(s.t, err)
	}
	return &kgo.Record{Key: []byte(key), Value: b, Partition: topics.Partition([]byte(sku), s.parts)}
}

func (s *shop) putStock(sku string, st schemas.StockEntity, event string) *kgo.Record {
	st.SKU = sku
	st.Available = st.OnHand - st.Reserved
	st.Version++
	st.Event = event
	st.CommandID = fmt.Sprintf("cmd-%d", s.n)
	st.UpdatedAt = epoch + schemas.Millis(s.n)
	s.stock[sku] = st
	return s.record(sku, schemas.StockKey(sku), st)
}

func (s *shop) putReservation(key string, r schemas.ReservationEntity, event string) *kgo.Record {
	r.Version++
	r.Event = event
	r.CommandID = fmt.Sprintf("cmd-%d", s.n)
	r.UpdatedAt = epoch + schemas.Millis(s.n)
	s.res[key] = r
	return s.record(r.Reservation.SKU, key, r)
}

// op returns the records of one decision on a random SKU.
func (s *shop) op() []*kgo.Record {
	s.n++
	sku := s.skus[s.rng.IntN(len(s.skus))]
	st, ok := s.stock[sku]
	if !ok {
		return []*kgo.Record{s.putStock(sku, schemas.StockEntity{OnHand: int64(5 + s.rng.IntN(20))}, schemas.EventStockSet)}
	}
	act := s.active[sku]
	switch x := s.rng.IntN(12); {
	case x < 4: // reserve
		q := int64(1 + s.rng.IntN(3))
		if st.OnHand-st.Reserved < q {
			return nil
		}
		id := fmt.Sprintf("r-%d", s.n)
		key := schemas.ReservationKey(sku, id)
		s.active[sku] = append(act, key)
		st.Reserved += q
		r := schemas.ReservationEntity{Reservation: schemas.Reservation{ReservationID: id, SKU: sku, Quantity: q,
			Status: schemas.StatusActive, ExpiresAt: epoch + 900_000, CartID: "cart-1"}}
		return []*kgo.Record{s.putStock(sku, st, schemas.EventReserved), s.putReservation(key, r, schemas.EventReserved)}
	case x < 8 && len(act) > 0: // release, commit or expire (a prepared hold: commit or unprepare)
		i := s.rng.IntN(len(act))
		key := act[i]
		r := s.res[key]
		if r.Reservation.Prepared && x != 6 {
			r.Reservation.Prepared, r.Reservation.OrderID = false, ""
			return []*kgo.Record{s.putReservation(key, r, schemas.EventUnprepared)}
		}
		r.Reservation.Prepared = false
		s.active[sku] = slices.Delete(slices.Clone(act), i, i+1)
		st.Reserved -= r.Reservation.Quantity
		event := schemas.EventReleased
		r.Reservation.Status = schemas.StatusReleased
		switch x {
		case 6:
			event, r.Reservation.Status, r.Reservation.OrderID = schemas.EventCommitted, schemas.StatusConsumed, "o-1"
			st.OnHand = max(st.OnHand-r.Reservation.Quantity, 0)
		case 7:
			event, r.Reservation.Status = schemas.EventExpired, schemas.StatusExpired
		}
		return []*kgo.Record{s.putStock(sku, st, event), s.putReservation(key, r, event)}
	case x == 8: // stock.set, which may oversell
		st.OnHand = int64(s.rng.IntN(15))
		return []*kgo.Record{s.putStock(sku, st, schemas.EventStockSet)}
	case x >= 10 && len(act) > 0: // prepare (extension): no stock change
		key := act[s.rng.IntN(len(act))]
		r := s.res[key]
		if r.Reservation.Prepared {
			return nil
		}
		r.Reservation.Prepared, r.Reservation.OrderID = true, fmt.Sprintf("o-%d", s.n)
		return []*kgo.Record{s.putReservation(key, r, schemas.EventPrepared)}
	default: // tombstone a terminal reservation of the SKU
		for key, r := range s.res {
			if r.Reservation.SKU == sku && r.Reservation.Status != schemas.StatusActive {
				delete(s.res, key)
				return []*kgo.Record{s.record(sku, key, nil)}
			}
		}
		return nil
	}
}

// produce writes ops decisions in transactions of up to 10, with an aborted
// transaction of nonsense now and then, and command records.
func (s *shop) produce(ops int) {
	s.t.Helper()
	ctx := context.Background()
	for ops > 0 {
		var recs []*kgo.Record
		for i := 1 + s.rng.IntN(10); i > 0 && ops > 0; i-- {
			ops--
			recs = append(recs, s.op()...)
		}
		recs = append(recs, &kgo.Record{Key: []byte(schemas.CommandKey(fmt.Sprint(s.n))), Value: []byte(`{"version":1}`),
			Partition: int32(s.n) % s.parts})
		s.txn(ctx, recs, kgo.TryCommit)
		if s.afterTxn != nil {
			s.afterTxn()
		}
		if !s.noAborts && s.rng.IntN(6) == 0 {
			sku := s.skus[0]
			s.txn(ctx, []*kgo.Record{s.record(sku, schemas.StockKey(sku), schemas.StockEntity{SKU: sku, OnHand: -5, Version: 1_000_000})}, kgo.TryAbort)
		}
	}
}

func (s *shop) txn(ctx context.Context, recs []*kgo.Record, end kgo.TransactionEndTry) {
	s.t.Helper()
	require.NoError(s.t, s.prod.BeginTransaction())
	require.NoError(s.t, s.prod.ProduceSync(ctx, recs...).FirstErr())
	require.NoError(s.t, s.prod.EndTransaction(ctx, end))
}

func (s *shop) activeCount() (n int) {
	for _, keys := range s.active {
		n += len(keys)
	}
	return n
}

func (e *kafkaEnv) verifyConfig() VerifyConfig {
	return VerifyConfig{Brokers: e.brokers, Topic: e.topic, Wait: 30 * time.Second, MaxReport: 50}
}

func verify(t *testing.T, cfg VerifyConfig) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := Verify(ctx, cfg, WithKafkaOpts(testKafkaOpts...), WithLogger(testLogger(t)))
	require.NoError(t, err)
	var b strings.Builder
	rep.WriteText(&b)
	t.Log("\n" + b.String())
	return rep
}

func hasMismatch(rep *Report, check, key, field string) bool {
	for _, m := range rep.Mismatches {
		if m.Check == check && m.Key == key && m.Field == field {
			return true
		}
	}
	return false
}

func TestVerify(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	db := pgtest.NewDatabase(t)
	s := newShop(t, e, testPartitions, seed(t), 12)
	s.produce(150)
	startSink(t, e.sinkConfig(db.DSN))
	s.produce(150)

	// Clean, with and without Postgres.
	cfg := e.verifyConfig()
	rep := verify(t, cfg)
	require.True(t, rep.OK())
	assert.False(t, rep.Postgres)
	cfg.Pool = db.Pool
	rep = verify(t, cfg)
	require.True(t, rep.OK(), "mismatches: %v", rep.Mismatches)
	assert.True(t, rep.Postgres)
	assert.Equal(t, len(s.stock), rep.SKUs)
	assert.Equal(t, len(s.stock), rep.StockRows)
	assert.Equal(t, len(s.res), rep.ReservationRows)
	assert.Equal(t, s.activeCount(), rep.Reservations[schemas.StatusActive])
	assert.Positive(t, rep.Tombstones)
	assert.Positive(t, rep.CommandRecords)
	assert.Equal(t, testPartitions, rep.Partitions)

	// Corrupt Postgres: a quantity, a missing stock row, a row with no entity.
	ctx := context.Background()
	keys := make([]string, 0, len(s.res))
	for k := range s.res {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	resKey := keys[0]
	require.Contains(t, s.stock, "SKU-3")
	_, err := db.Pool.Exec(ctx, `UPDATE reservations SET quantity = quantity + 100 WHERE changelog_key = $1`, resKey)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `DELETE FROM stock WHERE sku = 'SKU-3'`)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `INSERT INTO reservations SELECT 'reservation/ghost/g', 'ghost', 'g', quantity, status, expires_at,
		extensions, cart_id, order_id, store_id, version, event, command_id, updated_at FROM reservations WHERE changelog_key = $1`, resKey)
	require.NoError(t, err)
	rep = verify(t, cfg)
	assert.False(t, rep.OK())
	assert.Equal(t, 3, rep.PostgresMismatches, "%v", rep.Mismatches)
	assert.Zero(t, rep.Violations)
	assert.True(t, hasMismatch(rep, CheckPostgres, resKey, "quantity"), "%v", rep.Mismatches)
	assert.True(t, hasMismatch(rep, CheckPostgres, "stock/SKU-3", ""), "%v", rep.Mismatches)
	assert.True(t, hasMismatch(rep, CheckPostgres, "reservation/ghost/g", ""), "%v", rep.Mismatches)
	// MaxReport limits the list, not the count.
	cfg.MaxReport = 1
	rep = verify(t, cfg)
	assert.Len(t, rep.Mismatches, 1)
	assert.Equal(t, 3, rep.MismatchCount)
	cfg.MaxReport = 50

	// A tombstoned key still in Postgres is named as such.
	var gone string
	for _, key := range keys[1:] {
		if s.res[key].Reservation.Status != schemas.StatusActive {
			gone = key
			break
		}
	}
	require.NotEmpty(t, gone)
	s.txn(ctx, []*kgo.Record{s.record(s.res[gone].Reservation.SKU, gone, nil)}, kgo.TryCommit)
	delete(s.res, gone)
	rep = verify(t, cfg) // the sink deleted the row
	assert.Equal(t, 3, rep.MismatchCount, "%v", rep.Mismatches)
	_, err = db.Pool.Exec(ctx, `INSERT INTO reservations SELECT $2, sku, reservation_id, quantity, status, expires_at,
		extensions, cart_id, order_id, store_id, version, event, command_id, updated_at FROM reservations WHERE changelog_key = $1`, resKey, gone)
	require.NoError(t, err)
	rep = verify(t, cfg)
	require.True(t, hasMismatch(rep, CheckPostgres, gone, ""), "%v", rep.Mismatches)
	for _, m := range rep.Mismatches {
		if m.Key == gone {
			assert.Contains(t, m.Detail, "tombstoned")
		}
	}

	// A stock record whose reserved counter is wrong: the changelog itself
	// is broken, with or without Postgres.
	var sku string
	for _, k := range s.skus {
		if st, ok := s.stock[k]; ok && st.Available >= 1 && k != "SKU-3" {
			sku = k
			break
		}
	}
	require.NotEmpty(t, sku)
	st := s.stock[sku]
	st.Reserved++
	s.n++
	s.txn(ctx, []*kgo.Record{s.putStock(sku, st, schemas.EventAdjusted)}, kgo.TryCommit)
	cfg.Pool = nil
	rep = verify(t, cfg)
	assert.Equal(t, 1, rep.Violations, "%v", rep.Mismatches)
	assert.True(t, hasMismatch(rep, CheckReserved, schemas.StockKey(sku), "reserved"), "%v", rep.Mismatches)
}

func TestVerifyCannotComplete(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	s := newShop(t, e, testPartitions, seed(t), 5)
	s.produce(20)
	ctx := context.Background()
	opts := []Option{WithKafkaOpts(testKafkaOpts...), WithLogger(testLogger(t))}

	// No sink schema in the database.
	db := pgtest.NewDatabase(t)
	cfg := e.verifyConfig()
	cfg.Wait = 200 * time.Millisecond
	cfg.Pool = db.Pool
	_, err := Verify(ctx, cfg, opts...)
	var behind *SinkBehindError
	require.ErrorAs(t, err, &behind)
	assert.True(t, behind.NoSchema)
	assert.Contains(t, err.Error(), "never ran")

	// A schema, but the sink is behind (here: it never ran).
	st := &store{pool: db.Pool, topic: e.topic}
	_, err = st.migrate(ctx)
	require.NoError(t, err)
	_, err = Verify(ctx, cfg, opts...)
	require.ErrorAs(t, err, &behind)
	assert.False(t, behind.NoSchema)
	assert.NotEmpty(t, behind.Behind)
	assert.Contains(t, err.Error(), "the sink is behind")

	// The sink catches up within Wait.
	cfg.Wait = 30 * time.Second
	startSink(t, e.sinkConfig(db.DSN))
	rep, err := Verify(ctx, cfg, opts...)
	require.NoError(t, err)
	assert.True(t, rep.OK(), "%v", rep.Mismatches)

	// Postgres unreachable, topic missing, usage errors.
	cfg.Pool, cfg.DSN = nil, "postgres://nobody@127.0.0.1:1/none?connect_timeout=1"
	_, err = Verify(ctx, cfg, opts...)
	require.Error(t, err)
	assert.False(t, errors.As(err, &behind))
	cfg.DSN, cfg.Topic = "", "no-such-topic"
	_, err = Verify(ctx, cfg, opts...)
	assert.ErrorIs(t, err, ErrNoTopic)
	_, err = Verify(ctx, VerifyConfig{})
	assert.Error(t, err)
	_, err = Verify(ctx, VerifyConfig{Brokers: e.brokers, MaxReport: -1})
	assert.Error(t, err)
}

// TestVerifyWhileWriting verifies while transactions stream in and the sink
// follows them: the sink's batches end anywhere, also inside a transaction,
// and verify must still find nothing wrong.
func TestVerifyWhileWriting(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	db := pgtest.NewDatabase(t)
	s := newShop(t, e, testPartitions, seed(t), 8)
	s.produce(50)
	cfg := e.sinkConfig(db.DSN)
	cfg.BatchSize = 7 // batches end inside transactions
	startSink(t, cfg)

	vcfg := e.verifyConfig()
	vcfg.Pool = db.Pool
	beyond := 0
	for run := range 8 {
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.produce(150)
		}()
		rep := verify(t, vcfg)
		<-done
		require.True(t, rep.OK(), "run %d: %v", run, rep.Mismatches)
		for p, o := range rep.Read {
			if o > rep.Checked[p] {
				beyond++
			}
		}
	}
	t.Logf("%d partitions compared beyond the point checked", beyond)
}
