package processor

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

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

// TestSweepForgetsFromWhatItRead: the sweep tombstones a decided command past
// the window from the value it scanned (no second read of the store), skips an
// active hold past the window, forgets a terminal one, and leaves a command
// the open transaction changed to the core's own read.
func TestSweepForgetsFromWhatItRead(t *testing.T) {
	w, store := storePartition(t, hourWindow())
	decided := schemas.Millis(1_000_000)
	now := decided + schemas.Millis(time.Hour.Milliseconds()) // a window later
	hold := func(id, status string) Change {
		return Change{Change: sku.Change{Key: schemas.ReservationKey("A", id), Reservation: &schemas.ReservationEntity{
			Reservation: schemas.Reservation{ReservationID: id, SKU: "A", Quantity: 1, Status: status, ExpiresAt: now + 60_000},
			UpdatedAt:   decided}}}
	}
	vals := map[string][]byte{}
	for _, c := range []Change{command("old", decided), command("recent", now-1), command("redecided", decided),
		hold("active", schemas.StatusActive), hold("done", schemas.StatusReleased)} {
		v, err := EncodeChange(&c)
		require.NoError(t, err)
		vals[c.Key] = v
	}
	require.NoError(t, store.Commit(vals, 1))
	// The open transaction decided "redecided" again (its entry was forgotten
	// and the id re-sent, say): the store's value is not the state any more.
	again := command("redecided", now)
	w.putChange(&again)

	w.sweepStep(now, now)
	require.NoError(t, w.err)
	tombs := map[string]bool{}
	for k, c := range w.pending {
		if c.Tombstone() {
			tombs[k] = true
		}
	}
	assert.Equal(t, map[string]bool{schemas.CommandKey("old"): true, schemas.ReservationKey("A", "done"): true}, tombs)
	var reads dto.Metric
	require.NoError(t, w.env.metrics.storeReads.Write(&reads))
	assert.Equal(t, 1.0, reads.GetCounter().GetValue(),
		"one read of the store: the terminal hold's, by the core; the command is forgotten from the value scanned")
}

// TestSweepSeesWhatIsNotStoredYet: a command decided again in a committed
// transaction whose values wait for the store writer is not forgotten from
// the older value the store still holds (the sweep has the store take
// everything committed before it scans).
func TestSweepSeesWhatIsNotStoredYet(t *testing.T) {
	w, store := storePartition(t, hourWindow())
	decided := schemas.Millis(1_000_000)
	now := decided + schemas.Millis(time.Hour.Milliseconds()) // a window later
	encode := func(at schemas.Millis) []byte {
		c := command("c", at)
		v, err := EncodeChange(&c)
		require.NoError(t, err)
		return v
	}
	require.NoError(t, store.Commit(map[string][]byte{schemas.CommandKey("c"): encode(decided)}, 1))
	w.offset, w.stored = 1, 1
	// Committed later (forgotten and decided again, say), not written yet.
	w.stage(map[string][]byte{schemas.CommandKey("c"): encode(now - 1)}, 2, time.Time{})

	w.sweepStep(now, now)
	require.NoError(t, w.err)
	assert.Empty(t, w.pending, "the newer decision is remembered")
	w.closeStore()
}

// hourWindow is the default config with a dedupe window of an hour.
func hourWindow() Config {
	cfg := DefaultConfig()
	cfg.Rules.DedupeWindow = time.Hour
	return cfg
}

// command is the entity of command id decided at at.
func command(id string, at schemas.Millis) Change {
	return Change{Change: sku.Change{Key: schemas.CommandKey(id), Command: &schemas.CommandEntity{CommandID: id, UpdatedAt: at}}}
}
