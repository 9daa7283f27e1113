package sink

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/internal/pgtest"
	"github.com/reservations/reservations/schemas"
)

// TestWriteGuards applies hand-made batches straight to Postgres: the version
// guard, delete-then-put within a batch, sink_errors, and the offset check.
func TestWriteGuards(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	s := &store{pool: pool, topic: defaultTopic, apply: copyApply}
	_, err := s.migrate(ctx)
	require.NoError(t, err)
	rk := schemas.ReservationKey("a/b", "r/1")
	pos := map[int32]int64{}
	write := func(recs ...rec) (rowCounts, error) {
		b := newBatch()
		for _, r := range recs {
			b.add(0, pos[0]+int64(b.records), []byte(r.key), r.value)
		}
		n, err := s.write(ctx, b, pos, nil, nil)
		if err == nil {
			pos[0] = b.next[0]
		}
		return n, err
	}

	n, err := write(rec{key: rk, value: reservationJSON(t, "a/b", "r/1", 10, 4)},
		rec{key: schemas.StockKey("a/b"), value: stockJSON(t, "a/b", 7, 3)})
	require.NoError(t, err)
	assert.Equal(t, rowCounts{stockUpserted: 1, reservationsUpserted: 1}, n)
	assert.Equal(t, int64(10), version(t, pool, "reservations", "changelog_key", rk))

	// An older version never replaces a newer one.
	n, err = write(rec{key: rk, value: reservationJSON(t, "a/b", "r/1", 3, 9)},
		rec{key: schemas.StockKey("a/b"), value: stockJSON(t, "a/b", 7, 99)})
	require.NoError(t, err)
	assert.Equal(t, rowCounts{}, n, "rows changed by stale versions")
	assert.Equal(t, int64(10), version(t, pool, "reservations", "changelog_key", rk))
	var onHand int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT on_hand FROM stock WHERE sku = 'a/b'`).Scan(&onHand))
	assert.Equal(t, int64(3), onHand, "equal version replaced the row")

	// A put after a tombstone in one batch recreates the row, even with a
	// lower version than the deleted row had.
	n, err = write(rec{key: rk}, rec{key: rk, value: reservationJSON(t, "a/b", "r/1", 1, 2)})
	require.NoError(t, err)
	assert.Equal(t, rowCounts{reservationsDeleted: 1, reservationsUpserted: 1}, n)
	assert.Equal(t, int64(1), version(t, pool, "reservations", "changelog_key", rk))

	// A tombstone after a put deletes; so does a stock tombstone.
	_, err = write(rec{key: rk, value: reservationJSON(t, "a/b", "r/1", 2, 2)}, rec{key: rk},
		rec{key: schemas.StockKey("a/b")})
	require.NoError(t, err)
	assert.Equal(t, int64(-1), version(t, pool, "reservations", "changelog_key", rk))
	assert.Equal(t, int64(-1), version(t, pool, "stock", "sku", "a/b"))

	// Undecodable records land in sink_errors with their position.
	_, err = write(rec{key: schemas.StockKey("x"), value: []byte("{")}, rec{key: "stock/\x00", value: []byte("{}")})
	require.NoError(t, err)
	var cnt int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM sink_errors WHERE topic = $1 AND partition = 0
		AND "offset" IN ($2, $3)`, defaultTopic, pos[0]-2, pos[0]-1).Scan(&cnt))
	assert.Equal(t, 2, cnt)

	// A batch that does not continue from the stored offsets is refused whole.
	stale := map[int32]int64{0: pos[0] - 1}
	b := newBatch()
	b.add(0, pos[0], []byte(schemas.StockKey("late")), stockJSON(t, "late", 1, 1))
	_, err = s.write(ctx, b, stale, nil, nil)
	var fenced *fencedError
	require.True(t, errors.As(err, &fenced), "want fencedError, got %v", err)
	assert.Equal(t, pos[0], fenced.Stored)
	assert.Equal(t, int64(-1), version(t, pool, "stock", "sku", "late"))
}

// version returns the version of a row, -1 if it does not exist.
func version(t *testing.T, pool *pgxpool.Pool, table, key, value string) int64 {
	t.Helper()
	var v int64
	err := pool.QueryRow(context.Background(), `SELECT coalesce((SELECT version FROM `+table+` WHERE `+key+` = $1), -1)`, value).Scan(&v)
	require.NoError(t, err)
	return v
}
