package sink

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/reservations/reservations/internal/pgtest"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// A sink that comes back after the changelog lost records it had not read
// must not keep the rows those records deleted. Sink 1 stores hold h1 (active,
// quantity 3) and stops; meanwhile h1 is released and tombstoned, compaction
// removes the tombstone (delete.retention.ms=0), and the id h1 is reused for
// a new hold (version 1 again, quantity 7). Sink 2 starts on sink 1's offsets.
//
//   - away: the partition keeps a record of its first transaction alive
//     (stock/Y is written once), so the log start stays at or below the stored
//     offset, as on Kafka, whose compaction never moves the log start. The
//     sink was away longer than half of delete.retention.ms (0).
//   - behind_log_start: without that record, kfake moves the log start past
//     the stored offset when compaction removes the first transaction (its
//     producer writes nothing later, so its marker goes too).
//
// Either way the partition is re-snapshotted from its log start: h1 is the
// new hold, the other partition is not touched, and the detection is counted.
//
// Failed on the old code: sink 2 resumed (or the Kafka client silently reset
// it to the log start), never saw the tombstone, and the stale h1 row (version
// 1, quantity 3) blocked the reused id's version 1.
func TestSinkResnapshotsStalePartition(t *testing.T) {
	for _, tc := range []struct {
		name      string
		reason    string
		keepStart bool
	}{
		{name: "away longer than half delete.retention.ms", reason: "away", keepStart: true},
		{name: "stored offset below the log start", reason: "behind_log_start", keepStart: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const parts = 2
			e := newKafkaEnv(t, parts)
			db := pgtest.NewDatabase(t)
			ctx := context.Background()
			adm := kadm.NewClient(e.prod)
			s := newShop(t, e, parts, seed(t), 0)
			y, z, b := skuOn(0, parts, "Y"), skuOn(0, parts, "Z"), skuOn(1, parts, "B")
			h1 := schemas.ReservationKey(z, "h1")

			// Sink 1 stores h1, active.
			s.n++
			first := []*kgo.Record{s.putStock(z, schemas.StockEntity{OnHand: 10, Reserved: 3}, schemas.EventReserved),
				s.putReservation(h1, schemas.ReservationEntity{Reservation: schemas.Reservation{ReservationID: "h1", SKU: z,
					Quantity: 3, Status: schemas.StatusActive, ExpiresAt: epoch + 900_000}}, schemas.EventReserved),
				s.putStock(b, schemas.StockEntity{OnHand: 4}, schemas.EventStockSet)}
			if tc.keepStart {
				first = append(first, s.putStock(y, schemas.StockEntity{OnHand: 5}, schemas.EventStockSet))
			}
			s.txn(ctx, first, kgo.TryCommit)
			w1, err := New(e.sinkConfig(db.DSN), WithLogger(testLogger(t)), WithKafkaOpts(testKafkaOpts...))
			require.NoError(t, err)
			done := make(chan error, 1)
			go func() { done <- w1.Run(ctx) }()
			waitStable(t, e, db.Pool, 30*time.Second)
			w1.Close()
			require.NoError(t, <-done)
			stored := storedOffsets(t, db.Pool, e.topic)
			require.Equal(t, int64(1), version(t, db.Pool, "reservations", "changelog_key", h1))

			// Meanwhile, from another producer: h1 released, tombstoned, and
			// stock/Z changed once more so that the tombstone is not in the
			// partition's last batch (never compacted).
			s.prod = e.newProducer("later-writer", kgo.RecordPartitioner(kgo.ManualPartitioner()))
			s.n++
			rel := s.res[h1]
			rel.Reservation.Status = schemas.StatusReleased
			st := s.stock[z]
			st.Reserved = 0
			s.txn(ctx, []*kgo.Record{s.putStock(z, st, schemas.EventReleased), s.putReservation(h1, rel, schemas.EventReleased)}, kgo.TryCommit)
			delete(s.res, h1)
			s.txn(ctx, []*kgo.Record{s.record(z, h1, nil)}, kgo.TryCommit)
			s.n++
			st = s.stock[z]
			st.OnHand = 11
			s.txn(ctx, []*kgo.Record{s.putStock(z, st, schemas.EventStockSet)}, kgo.TryCommit)

			zero := "0"
			rs, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "delete.retention.ms", Value: &zero}}, e.topic)
			require.NoError(t, err)
			for _, r := range rs {
				require.NoError(t, r.Err)
			}
			e.cluster.Compact()
			bounds, err := listBounds(ctx, adm, e.topic)
			require.NoError(t, err)
			if tc.keepStart {
				require.LessOrEqual(t, bounds.start[0], stored[0], "the log start did not pass the stored offset (as on Kafka)")
			} else {
				require.Greater(t, bounds.start[0], stored[0], "kfake moved the log start past the stored offset")
			}
			var keys []string
			require.NoError(t, readLog(ctx, []kgo.Opt{kgo.SeedBrokers(e.brokers...), kgo.MetadataMinAge(100 * time.Millisecond)},
				e.topic, bounds.start, bounds.stable, func(r *kgo.Record) error {
					keys = append(keys, string(r.Key))
					return nil
				}, nil))
			require.NotContains(t, keys, h1, "compaction removed h1's tombstone")

			// The id h1 is reused: a new hold, version 1 again.
			s.n++
			st = s.stock[z]
			st.Reserved = 7
			s.txn(ctx, []*kgo.Record{s.putStock(z, st, schemas.EventReserved),
				s.putReservation(h1, schemas.ReservationEntity{Reservation: schemas.Reservation{ReservationID: "h1", SKU: z,
					Quantity: 7, Status: schemas.StatusActive, ExpiresAt: epoch + 1_800_000}}, schemas.EventReserved)}, kgo.TryCommit)

			_, reg := startSink(t, e.sinkConfig(db.DSN))
			waitStable(t, e, db.Pool, 30*time.Second)

			var qty int64
			var status string
			require.NoError(t, db.Pool.QueryRow(ctx, `SELECT quantity, status FROM reservations WHERE changelog_key = $1`, h1).Scan(&qty, &status))
			assert.Equal(t, int64(7), qty, "h1 is the new hold, not the stale row of the released one")
			assert.Equal(t, schemas.StatusActive, status)
			assertMatchesShop(t, db.Pool, s)
			assert.Equal(t, 1.0, metricValue(t, reg, "reservations_sink_stale_partitions_total", "reason", tc.reason),
				"partition 0 counted as stale (%s)", tc.reason)
			assert.Equal(t, 1.0, metricValue(t, reg, "reservations_sink_stale_partitions_total"),
				"partition 1 had nothing new to read: resumed, not re-snapshotted")
		})
	}
}

// TestSinkStaleWhileRunning: with delete.retention.ms=0 every lag is
// dangerous, and compaction runs every 50ms while the processor-like stream
// is written (tombstones of terminal holds, aborted transactions; kfake also
// moves log starts). The running sink keeps finding positions it cannot
// trust (behind its mark and not current, or out of range), ends its
// session, and the next one re-snapshots; when the stream stops, the tables
// are the latest entities.
func TestSinkStaleWhileRunning(t *testing.T) {
	t.Parallel()
	const parts = 2
	e := newKafkaEnv(t, parts)
	db := pgtest.NewDatabase(t)
	installRegressionCheck(t, db.Pool)
	ctx := context.Background()
	zero := "0"
	rs, err := kadm.NewClient(e.prod).AlterTopicConfigs(ctx,
		[]kadm.AlterConfig{{Op: kadm.SetConfig, Name: "delete.retention.ms", Value: &zero}}, e.topic)
	require.NoError(t, err)
	for _, r := range rs {
		require.NoError(t, r.Err)
	}
	s := newShop(t, e, parts, seed(t), 8)
	_, reg := startSink(t, e.sinkConfig(db.DSN))
	s.produce(200)
	waitStable(t, e, db.Pool, 60*time.Second)

	// The running sink falls behind (its fetches of the changelog fail)
	// while the shop goes on and compaction removes tombstones it has not
	// read; then it may read again. Compacting while a sink that is current
	// reads along cannot be detected with delete.retention.ms 0 (a tombstone
	// written and compacted between two of its fetches leaves no trace), so
	// the lag is made certain here. Compaction runs between the shop's
	// transactions, none aborted: kfake compacts records of open
	// transactions and drops abort markers it still reports
	// (internal/kafkatest), which Kafka does not.
	block := e.cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: e.topic, Err: kerr.NotLeaderForPartition, Count: -1})
	s.noAborts = true
	s.afterTxn = e.cluster.Compact
	s.produce(400)
	s.afterTxn = nil
	e.cluster.Compact()
	time.Sleep(time.Second) // lagging longer than the limit (0 here: half of delete.retention.ms 0)
	block.Remove()

	waitStable(t, e, db.Pool, 60*time.Second)
	assertMatchesShop(t, db.Pool, s)
	assertNoRegressions(t, db.Pool)
	stale := metricValue(t, reg, "reservations_sink_stale_partitions_total")
	t.Logf("%.0f partitions re-snapshotted", stale)
	assert.Positive(t, stale, "the running sink found stale positions")
}

// TestSinkRefusesStalePartitionItCannotRebuild: a stale partition holding a
// record whose SKU belongs to another partition (misrouted on purpose here)
// cannot be re-snapshotted alone: the sink cannot tell which Postgres rows
// came from the partition. It refuses to start with an error naming the
// partition, the stored offset, the time away and the fix, and changes
// nothing.
func TestSinkRefusesStalePartitionItCannotRebuild(t *testing.T) {
	t.Parallel()
	const parts = 2
	e := newKafkaEnv(t, parts)
	db := pgtest.NewDatabase(t)
	ctx := context.Background()
	adm := kadm.NewClient(e.prod)
	s := newShop(t, e, parts, seed(t), 0)
	a, x := skuOn(0, parts, "A"), skuOn(1, parts, "X")

	s.n++
	s.txn(ctx, []*kgo.Record{s.putStock(a, schemas.StockEntity{OnHand: 1}, schemas.EventStockSet)}, kgo.TryCommit)
	w1, err := New(e.sinkConfig(db.DSN), WithLogger(testLogger(t)), WithKafkaOpts(testKafkaOpts...))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- w1.Run(ctx) }()
	waitStable(t, e, db.Pool, 30*time.Second)
	w1.Close()
	require.NoError(t, <-done)
	stored := storedOffsets(t, db.Pool, e.topic)

	s.n++
	misrouted := s.putStock(x, schemas.StockEntity{OnHand: 2}, schemas.EventStockSet)
	misrouted.Partition = 0
	s.txn(ctx, []*kgo.Record{s.putStock(a, s.stock[a], schemas.EventStockSet), misrouted}, kgo.TryCommit)
	zero := "0"
	rs, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "delete.retention.ms", Value: &zero}}, e.topic)
	require.NoError(t, err)
	for _, r := range rs {
		require.NoError(t, r.Err)
	}

	reg := prometheus.NewRegistry()
	w2, err := New(e.sinkConfig(db.DSN), WithLogger(testLogger(t)), WithKafkaOpts(testKafkaOpts...), WithRegisterer(reg))
	require.NoError(t, err)
	defer w2.Close()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = w2.Run(rctx)
	require.Error(t, err, "the sink refuses to start")
	require.NoError(t, rctx.Err(), "Run returned because it refused, not because the test timed out")
	for _, want := range []string{
		"partition 0", fmt.Sprintf("stored offset %d", stored[0]), "the sink was away",
		fmt.Sprintf("%q belongs to partition 1", schemas.StockKey(x)), "reservations replay --to postgres",
	} {
		assert.Contains(t, err.Error(), want)
	}
	assert.Equal(t, stored, storedOffsets(t, db.Pool, e.topic), "offsets unchanged")
	assert.Equal(t, int64(1), version(t, db.Pool, "stock", "sku", a), "rows unchanged")
	assert.Equal(t, int64(-1), version(t, db.Pool, "stock", "sku", x))
	assert.Equal(t, 1.0, metricValue(t, reg, "reservations_sink_stale_partitions_total", "reason", "away"))
}

// TestSinkResumesCurrentPosition: a sink restarted soon, with records
// waiting, resumes its stored offsets (the default delete.retention.ms is a
// day); while it runs, current_at is kept fresh even for partitions that get
// no records.
func TestSinkResumesCurrentPosition(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	db := pgtest.NewDatabase(t)
	installRegressionCheck(t, db.Pool)
	g := newGen(seed(t), 10)
	e.produceStream(g, 30)
	w1, err := New(e.sinkConfig(db.DSN), WithLogger(testLogger(t)), WithKafkaOpts(testKafkaOpts...))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- w1.Run(context.Background()) }()
	waitCaughtUp(t, db.Pool, e, 30*time.Second)
	w1.Close()
	require.NoError(t, <-done)

	e.produceStream(g, 30)
	_, reg := startSink(t, e.sinkConfig(db.DSN))
	waitCaughtUp(t, db.Pool, e, 30*time.Second)
	assertMatchesModel(t, db.Pool, e.model)
	assertNoRegressions(t, db.Pool)
	assert.Zero(t, metricValue(t, reg, "reservations_sink_stale_partitions_total"), "nothing re-snapshotted")

	// Idle now: every stored partition's current_at moves on.
	since := time.Now()
	require.Eventually(t, func() bool {
		var behind int
		err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM sink_offsets
			WHERE topic = $1 AND (current_at IS NULL OR current_at < $2)`, e.topic, since).Scan(&behind)
		return err == nil && behind == 0
	}, 10*time.Second, 20*time.Millisecond, "current_at refreshed while idle")
}

// TestCheckPartition: which stored positions are resumed and which are not.
func TestCheckPartition(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	b := logBounds{start: map[int32]int64{0: 100}, stable: map[int32]int64{0: 500}, end: map[int32]int64{0: 520}}
	const retention = 24 * time.Hour
	for _, tc := range []struct {
		name   string
		stored int64
		seen   time.Time
		want   string // "" = resumed
	}{
		{"current, records to read", 400, now.Add(-time.Hour), ""},
		{"away just under half the retention", 400, now.Add(-12*time.Hour + time.Second), ""},
		{"away longer than half the retention", 400, now.Add(-12*time.Hour - time.Second), staleAway},
		{"never recorded as current, records to read", 400, time.Time{}, staleAway},
		{"away for a week, nothing new to read", 500, now.Add(-7 * 24 * time.Hour), ""},
		{"never recorded as current, nothing new", 500, time.Time{}, ""},
		{"at the log start", 100, now, ""},
		{"below the log start", 99, now, staleBehindLogStart},
		{"below the log start and away: the log start first", 99, now.Add(-48 * time.Hour), staleBehindLogStart},
		{"up to an open transaction (stable < end)", 510, now, ""},
		{"beyond the log end", 521, now, staleAheadOfLogEnd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := checkPartition(0, tc.stored, tc.seen, now, b, retention)
			if tc.want == "" {
				assert.Nil(t, s)
				return
			}
			require.NotNil(t, s)
			assert.Equal(t, tc.want, s.reason)
			assert.Contains(t, s.String(), fmt.Sprintf("stored offset %d", tc.stored), "the message names the stored offset")
		})
	}
}

// skuOn returns a SKU named after prefix that belongs to partition p of n.
func skuOn(p, n int32, prefix string) string {
	for i := 0; ; i++ {
		sku := fmt.Sprintf("%s-%d", prefix, i)
		if topics.Partition([]byte(sku), n) == p {
			return sku
		}
	}
}

// waitStable waits until the stored offsets of every non-empty partition
// are its last stable offset.
func waitStable(t *testing.T, e *kafkaEnv, pool *pgxpool.Pool, timeout time.Duration) {
	t.Helper()
	adm := kadm.NewClient(e.prod)
	var want, got map[int32]int64
	deadline := time.Now().Add(timeout)
	for {
		offs, err := adm.ListCommittedOffsets(context.Background(), e.topic)
		require.NoError(t, err)
		want = map[int32]int64{}
		offs.Each(func(o kadm.ListedOffset) {
			if o.Offset > 0 {
				want[o.Partition] = o.Offset
			}
		})
		got = storedOffsets(t, pool, e.topic)
		if equalOffsets(got, want) {
			return
		}
		if time.Now().After(deadline) {
			require.Equal(t, want, got, "sink did not reach the last stable offsets within %s", timeout)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

// assertMatchesShop compares the tables with the shop's latest entities.
func assertMatchesShop(t *testing.T, pool *pgxpool.Pool, s *shop) {
	t.Helper()
	ctx := context.Background()
	type stockRow struct{ Version, OnHand, Reserved int64 }
	type resRow struct {
		Version, Quantity int64
		Status            string
	}
	wantStock, wantRes := map[string]stockRow{}, map[string]resRow{}
	for sku, st := range s.stock {
		wantStock[sku] = stockRow{st.Version, st.OnHand, st.Reserved}
	}
	for key, r := range s.res {
		wantRes[key] = resRow{r.Version, r.Reservation.Quantity, r.Reservation.Status}
	}
	gotStock, gotRes := map[string]stockRow{}, map[string]resRow{}
	rows, _ := pool.Query(ctx, `SELECT sku, version, on_hand, reserved FROM stock`)
	var key string
	var sr stockRow
	_, err := pgx.ForEachRow(rows, []any{&key, &sr.Version, &sr.OnHand, &sr.Reserved}, func() error {
		gotStock[key] = sr
		return nil
	})
	require.NoError(t, err)
	rows, _ = pool.Query(ctx, `SELECT changelog_key, version, quantity, status FROM reservations`)
	var rr resRow
	_, err = pgx.ForEachRow(rows, []any{&key, &rr.Version, &rr.Quantity, &rr.Status}, func() error {
		gotRes[key] = rr
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, wantStock, gotStock, "stock table differs from the changelog")
	assert.Equal(t, wantRes, gotRes, "reservations table differs from the changelog")
}
