package processor

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/processor/cart"
	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/statestore"
)

// The sweep's shortcut (schemas.UpdatedAt) reads updated_at from the end of
// every kind of entity the processor writes (EncodeChange), and declines
// anything else (which is then decoded). schemas.TestUpdatedAtAgreesWithDecode
// holds the appenders to it.
func TestSweepReadsUpdatedAt(t *testing.T) {
	at := schemas.MillisOf(time.Date(2026, 3, 4, 5, 6, 7, 890e6, time.UTC))
	changes := []Change{
		{Change: sku.Change{Key: schemas.StockKey("A"), Stock: &schemas.StockEntity{SKU: "A", UpdatedAt: at}}},
		{Change: sku.Change{Key: schemas.ReservationKey("A", "r"), Reservation: &schemas.ReservationEntity{
			Reservation: schemas.Reservation{ReservationID: "r", SKU: "A", Status: schemas.StatusReleased}, UpdatedAt: at}}},
		{Change: sku.Change{Key: schemas.CommandKey("c"), Command: &schemas.CommandEntity{CommandID: "c", UpdatedAt: at}}},
		cartChange(&cart.Change{Key: cart.CartKey("k"), Cart: &cart.Entity{CartID: "k", UpdatedAt: at}}),
		cartChange(&cart.Change{Key: cart.DecidedKey("c"), Decided: &cart.Decided{CommandID: "c", UpdatedAt: at}}),
	}
	for _, c := range changes {
		v, err := EncodeChange(&c)
		require.NoError(t, err)
		got, ok := schemas.UpdatedAt(v)
		assert.True(t, ok, "%s: %s", c.Key, v)
		assert.Equal(t, at, got, c.Key)
	}
	for _, v := range []string{
		``, `{}`, `{"updated_at":"2026-03-04T05:06:07.890Z" }`, `{"updated_at":"2026-13-04T05:06:07.890Z"}`,
		`{"x":"updated_at","updated_at":"2026-03-04 05:06:07.890Z"}`, `{"updated_at":""}`,
	} {
		_, ok := schemas.UpdatedAt([]byte(v))
		assert.False(t, ok, v)
	}
}

// TestSweepPausesBetweenPasses: the sweep walks the store in steps of
// SweepBatch keys, one per SweepInterval; once a pass reaches the end, the
// next starts a 24th of the dedupe window later (a small store is not read
// again and again), and that pass starts at the beginning.
func TestSweepPausesBetweenPasses(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SweepBatch = 2
	cfg.SweepInterval = time.Second
	cfg.Rules.DedupeWindow = 24 * time.Hour
	w, store := storePartition(t, cfg)
	require.NoError(t, store.Commit(map[string][]byte{"stock/a": []byte("{}"), "stock/b": []byte("{}"), "stock/c": []byte("{}")}, 1))

	now := schemas.Millis(1_000_000)
	w.sweepStep(now, now)
	assert.Equal(t, "stock/c", w.sweep.cursor, "a step of two keys")
	assert.Equal(t, now+1000, w.sweep.next, "the next step a SweepInterval later")
	w.sweepStep(now+1000, now+1000)
	assert.Empty(t, w.sweep.cursor, "the pass reached the end")
	assert.Equal(t, now+1000+schemas.Millis(time.Hour.Milliseconds()), w.sweep.next, "the next pass an hour later")
}

// storePartition is a SKU partition of cfg on a fresh store, outside any
// processor: for the tests of its own steps.
func storePartition(t *testing.T, cfg Config) (*partition, *statestore.Store) {
	t.Helper()
	env := &partitionEnv{cfg: &cfg, role: newRole(RoleSKU, &cfg), log: slog.New(slog.DiscardHandler)}
	env.metrics = newMetrics(prometheus.NewRegistry(), env.role)
	w := newPartition(env, context.Background(), 0)
	store, err := statestore.Open(t.TempDir(), statestore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	w.store = store
	return w, store
}
