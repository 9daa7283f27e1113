package sink

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/internal/pgtest"
)

// BenchmarkSink measures the whole sink: a kfake changelog of benchRecords
// committed records (12 partitions, transactions of 500) is applied from the
// beginning into empty tables; each iteration truncates and replays it. The
// records/s metric is changelog records applied per second of wall time.
//
//	go test -run '^$' -bench BenchmarkSink$ -benchtime 5x ./sink/
func BenchmarkSink(b *testing.B) {
	const benchRecords = 200_000
	e := newKafkaEnv(b, 12)
	g := newGen(1, 2000)
	g.clean = true
	for produced := 0; produced < benchRecords; produced += 500 {
		e.txn(e.prod, g.batchOf(500), true)
	}
	db := pgtest.NewDatabase(b)
	ctx := context.Background()
	cfg := e.sinkConfig(db.DSN)
	cfg.BatchSize = DefaultBatchSize
	cfg.BatchWait = DefaultBatchWait
	cfg.PingInterval = DefaultPingInterval

	var total time.Duration
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		_, err := db.Pool.Exec(ctx, `DROP TABLE IF EXISTS stock, reservations, sink_offsets, sink_errors, replay_runs, `+MigrationsTable)
		require.NoError(b, err)
		w, err := New(cfg, WithKafkaOpts(testKafkaOpts...))
		require.NoError(b, err)
		runCtx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		b.StartTimer()

		start := time.Now()
		go func() { errc <- w.Run(runCtx) }()
		waitCaughtUp(b, db.Pool, e, 5*time.Minute)
		total += time.Since(start)

		b.StopTimer()
		cancel()
		require.NoError(b, <-errc)
		w.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(benchRecords*b.N)/total.Seconds(), "records/s")
}

// BenchmarkSinkWrite measures the Postgres side alone: one transaction of a
// pre-decoded batch of 5000 changelog records, per write strategy.
//
//	go test -run '^$' -bench BenchmarkSinkWrite -benchtime 40x ./sink/
func BenchmarkSinkWrite(b *testing.B) {
	for _, s := range []struct {
		name  string
		apply func(context.Context, pgx.Tx, *batch) (rowCounts, error)
	}{
		{"copy", copyApply},
		{"unnest", unnestApply},
		{"batch", batchApply},
	} {
		b.Run(s.name, func(b *testing.B) {
			db := pgtest.NewDatabase(b)
			ctx := context.Background()
			st := &store{pool: db.Pool, topic: defaultTopic, apply: s.apply}
			_, err := st.migrate(ctx)
			require.NoError(b, err)

			// Batches as the sink folds them from a realistic stream.
			g := newGen(2, 2000)
			g.clean = true
			var batches []*batch
			for range 40 {
				bt := newBatch()
				for i, r := range g.batchOf(DefaultBatchSize) {
					bt.add(0, int64(i), []byte(r.key), r.value)
				}
				batches = append(batches, bt)
			}
			pos := map[int32]int64{}
			var rows int64
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				bt := batches[i%len(batches)]
				i++
				bt.next[0] = pos[0] + DefaultBatchSize
				n, err := st.write(ctx, bt, pos, nil, nil)
				require.NoError(b, err)
				pos[0] = bt.next[0]
				rows += n.stockUpserted + n.reservationsUpserted + n.stockDeleted + n.reservationsDeleted
			}
			b.ReportMetric(float64(DefaultBatchSize*b.N)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(rows)/float64(b.N), "rows/batch")
		})
	}
}

// batchApply is the pgx.Batch strategy BenchmarkSinkWrite compares with
// copyApply: one pipelined INSERT ... ON CONFLICT per row.
func batchApply(ctx context.Context, tx pgx.Tx, b *batch) (rowCounts, error) {
	var n rowCounts
	var pb pgx.Batch
	var delStock, delRes []string
	insStock := singleRowUpsert("stock", "sku", stockColumns)
	insRes := singleRowUpsert("reservations", "changelog_key", reservationColumns)
	var stockPuts, resPuts int
	for sku, op := range b.stock {
		if op.del {
			delStock = append(delStock, sku)
		}
		if r := op.put; r != nil {
			stockPuts++
			pb.Queue(insStock, r.sku, r.onHand, r.reserved, r.available, r.lowStockThreshold,
				r.version, r.event, r.commandID, timeOrNil(r.updatedAt))
		}
	}
	for key, op := range b.reservations {
		if op.del {
			delRes = append(delRes, key)
		}
		if r := op.put; r != nil {
			resPuts++
			pb.Queue(insRes, r.key, r.sku, r.reservationID, r.quantity, r.status, timeOrNil(r.expiresAt),
				r.extensions, r.cartID, r.orderID, r.storeID, r.version, r.event, r.commandID,
				timeOrNil(r.updatedAt), r.prepared)
		}
	}
	var err error
	if n.stockDeleted, err = deleteKeys(ctx, tx, "stock", "sku", delStock); err != nil {
		return n, err
	}
	if n.reservationsDeleted, err = deleteKeys(ctx, tx, "reservations", "changelog_key", delRes); err != nil {
		return n, err
	}
	br := tx.SendBatch(ctx, &pb)
	for i := range stockPuts + resPuts {
		tag, err := br.Exec()
		if err != nil {
			br.Close()
			return n, fmt.Errorf("upsert row %d: %w", i, err)
		}
		if i < stockPuts {
			n.stockUpserted += tag.RowsAffected()
		} else {
			n.reservationsUpserted += tag.RowsAffected()
		}
	}
	return n, br.Close()
}

func singleRowUpsert(table, key string, cols []string) string {
	ph := make([]string, len(cols))
	for i := range cols {
		ph[i] = fmt.Sprintf("$%d", i+1)
	}
	sql := upsertSQL(table, "X", key, cols)
	return strings.Replace(sql, "SELECT "+strings.Join(cols, ", ")+" FROM X", "VALUES ("+strings.Join(ph, ", ")+")", 1)
}

// unnestApply is the array-parameter strategy BenchmarkSinkWrite compares with
// copyApply: one INSERT ... SELECT FROM unnest($1, $2, ...) per table.
func unnestApply(ctx context.Context, tx pgx.Tx, b *batch) (rowCounts, error) {
	var n rowCounts
	var delStock, delRes []string
	var s struct {
		sku, event, cmd                  []string
		onHand, reserved, available, ver []int64
		threshold                        []*int64
		updated                          []*time.Time
	}
	var r struct {
		key, sku, id, status, cart, order, store, event, cmd []string
		qty, ext, ver                                        []int64
		expires, updated                                     []*time.Time
		prepared                                             []bool
	}
	tp := func(m any) *time.Time {
		if t, ok := m.(time.Time); ok {
			return &t
		}
		return nil
	}
	for sku, op := range b.stock {
		if op.del {
			delStock = append(delStock, sku)
		}
		if p := op.put; p != nil {
			s.sku, s.event, s.cmd = append(s.sku, p.sku), append(s.event, p.event), append(s.cmd, p.commandID)
			s.onHand, s.reserved, s.available, s.ver = append(s.onHand, p.onHand), append(s.reserved, p.reserved), append(s.available, p.available), append(s.ver, p.version)
			s.threshold = append(s.threshold, p.lowStockThreshold)
			s.updated = append(s.updated, tp(timeOrNil(p.updatedAt)))
		}
	}
	for key, op := range b.reservations {
		if op.del {
			delRes = append(delRes, key)
		}
		if p := op.put; p != nil {
			r.key, r.sku, r.id, r.status = append(r.key, p.key), append(r.sku, p.sku), append(r.id, p.reservationID), append(r.status, p.status)
			r.cart, r.order, r.store = append(r.cart, p.cartID), append(r.order, p.orderID), append(r.store, p.storeID)
			r.event, r.cmd = append(r.event, p.event), append(r.cmd, p.commandID)
			r.qty, r.ext, r.ver = append(r.qty, p.quantity), append(r.ext, p.extensions), append(r.ver, p.version)
			r.expires, r.updated = append(r.expires, tp(timeOrNil(p.expiresAt))), append(r.updated, tp(timeOrNil(p.updatedAt)))
			r.prepared = append(r.prepared, p.prepared)
		}
	}
	var err error
	if n.stockDeleted, err = deleteKeys(ctx, tx, "stock", "sku", delStock); err != nil {
		return n, err
	}
	if n.reservationsDeleted, err = deleteKeys(ctx, tx, "reservations", "changelog_key", delRes); err != nil {
		return n, err
	}
	if len(s.sku) > 0 {
		src := `(SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
			$6::bigint[], $7::text[], $8::text[], $9::timestamptz[])
			AS t(` + strings.Join(stockColumns, ", ") + `)) AS x`
		tag, err := tx.Exec(ctx, upsertSQL("stock", src, "sku", stockColumns),
			s.sku, s.onHand, s.reserved, s.available, s.threshold, s.ver, s.event, s.cmd, s.updated)
		if err != nil {
			return n, fmt.Errorf("upsert stock: %w", err)
		}
		n.stockUpserted = tag.RowsAffected()
	}
	if len(r.key) > 0 {
		src := `(SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[],
			$6::timestamptz[], $7::bigint[], $8::text[], $9::text[], $10::text[], $11::bigint[],
			$12::text[], $13::text[], $14::timestamptz[], $15::boolean[])
			AS t(` + strings.Join(reservationColumns, ", ") + `)) AS x`
		tag, err := tx.Exec(ctx, upsertSQL("reservations", src, "changelog_key", reservationColumns),
			r.key, r.sku, r.id, r.qty, r.status, r.expires, r.ext, r.cart, r.order, r.store, r.ver,
			r.event, r.cmd, r.updated, r.prepared)
		if err != nil {
			return n, fmt.Errorf("upsert reservations: %w", err)
		}
		n.reservationsUpserted = tag.RowsAffected()
	}
	return n, nil
}
