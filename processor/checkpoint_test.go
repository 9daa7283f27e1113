package processor

import (
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/statestore"
)

// TestWriteBehindModel drives a partition's write-behind the way the loop
// does, in a random order: committed transactions (some while a store write
// runs), the end of the running write, reads, stops that wait for the store
// and crashes that do not. It checks against a model of committed state:
//   - every read (partition.get, the interactive query's committed) sees the
//     last committed value of its key, whatever the store has;
//   - the store is always a prefix of the committed history: its values are
//     exactly the state at the changelog offset it records;
//   - after a clean stop the store has every committed value.
func TestWriteBehindModel(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			dir := t.TempDir()
			open := func() *partition {
				store, err := statestore.Open(dir, statestore.Options{})
				require.NoError(t, err)
				w := &partition{
					store: store, sw: newStoreWriter(), log: slog.New(slog.DiscardHandler),
					cache: newStateCache(1<<20, nil), pending: Entities{},
					env: &partitionEnv{fail: func(err error) { t.Fatalf("partition failed: %v", err) }, metrics: testMetrics()},
				}
				w.sw.gap = 2 * time.Millisecond // the pause path, without waiting 50 ms a step
				w.offset, err = store.Offset()
				require.NoError(t, err)
				w.stored = w.offset
				return w
			}
			w := open()
			// history[o] is the committed state after the changelog prefix [0, o).
			history := map[int64]map[string]int64{0: {}}
			model := map[string]int64{}
			off := int64(0)
			value := func(k string, onHand int64) []byte {
				v, err := EncodeChange(&Change{Change: sku.Change{Key: k, Stock: &schemas.StockEntity{SKU: k, OnHand: onHand, Available: onHand, Version: 1, UpdatedAt: 1}}})
				require.NoError(t, err)
				return v
			}
			checkReads := func() {
				for i := range 30 {
					k := fmt.Sprintf("s%02d", i)
					want, live := model[k]
					w.cache = newStateCache(1<<20, nil) // read through the staged values and the store
					c, ok := w.get(schemas.StockKey(k), false)
					require.NoError(t, w.err)
					require.Equal(t, live, ok, "get %s", k)
					if live {
						require.Equal(t, want, c.Stock.OnHand, "get %s", k)
					}
					c, ok, err := w.committed(schemas.StockKey(k))
					require.NoError(t, err)
					require.Equal(t, live, ok, "committed %s", k)
					if live {
						require.Equal(t, want, c.Stock.OnHand, "committed %s", k)
					}
				}
			}
			checkStorePrefix := func() {
				at, err := w.store.Offset()
				require.NoError(t, err)
				want, ok := history[at]
				require.True(t, ok, "the store records offset %d, which no transaction ended at", at)
				dump, err := w.store.Dump()
				require.NoError(t, err)
				got := map[string]int64{}
				for k, v := range dump {
					c, err := DecodeChange(k, v)
					require.NoError(t, err)
					got[c.Stock.SKU] = c.Stock.OnHand
				}
				require.Equal(t, want, got, "the store at offset %d", at)
			}
			for step := range 400 {
				switch r := rng.IntN(20); {
				case r < 12: // a committed transaction
					raw := map[string][]byte{}
					for range 1 + rng.IntN(5) {
						k := fmt.Sprintf("s%02d", rng.IntN(30))
						off++ // one changelog record per change
						if rng.IntN(4) == 0 {
							raw[schemas.StockKey(k)] = nil
							delete(model, k)
						} else {
							n := rng.Int64N(1000)
							raw[schemas.StockKey(k)] = value(k, n)
							model[k] = n
						}
					}
					off++ // the commit marker
					history[off] = maps.Clone(model)
					// What partition.commit does with a committed transaction.
					w.stage(raw, off, time.Time{})
					w.offset = off
					require.NoError(t, w.writeBehind())
				case r == 12: // a commit that wrote nothing but proves ownership (owned_at)
					w.stage(nil, -1, time.UnixMilli(int64(step+1)))
					require.NoError(t, w.writeBehind())
				case r < 16: // the running write ends (the loop's select)
					if w.sw.writing != nil {
						if rng.IntN(2) == 0 {
							w.sw.rush() // or let it wait out the gap
						}
						w.storeDone(<-w.sw.done)
					}
				case r < 18:
					checkReads()
				case r == 18: // a clean stop, then a restart on the same folder
					w.closeStore()
					w = open()
					at, err := w.store.Offset()
					require.NoError(t, err)
					require.Equal(t, off, at, "step %d: a clean stop leaves the store with every commit", step)
					checkStorePrefix()
				default: // a crash: whatever the store has is all there is
					if w.sw.writing != nil {
						w.sw.rush()
						r := <-w.sw.done // the process dies after the write returned
						require.NoError(t, r.err)
					}
					w.sw.stop()
					require.NoError(t, w.store.Close())
					w = open()
					checkStorePrefix()
					// The restore replays the changelog from the store's offset:
					// the model's state there becomes the committed state again.
					at, _ := w.store.Offset()
					model, off = maps.Clone(history[at]), at
					for o := range history {
						if o > at {
							delete(history, o)
						}
					}
				}
				checkReads()
			}
			var reads dto.Metric
			require.NoError(t, w.env.metrics.storeReads.Write(&reads))
			assert.Positive(t, reads.GetCounter().GetValue(), "reads that missed the cache and the staged values are counted")
			w.closeStore()
		})
	}
}

// failingStore fails the first Commit, then writes through to the store.
type failingStore struct {
	*statestore.Store
	failed bool
}

func (f *failingStore) Commit(changes map[string][]byte, next int64) error {
	if !f.failed {
		f.failed = true
		return fmt.Errorf("injected write failure")
	}
	return f.Store.Commit(changes, next)
}

// TestWriteBehindStopsAfterAFailedWrite: once a store write failed, the store
// is never written again (a later write would record an offset past the
// values that were lost), and the committed values stay readable until the
// restart that restores the partition.
func TestWriteBehindStopsAfterAFailedWrite(t *testing.T) {
	dir := t.TempDir()
	store, err := statestore.Open(dir, statestore.Options{})
	require.NoError(t, err)
	var failures []error
	w := &partition{
		store: store, sw: newStoreWriter(), log: slog.New(slog.DiscardHandler),
		cache: newStateCache(1<<20, nil), pending: Entities{},
		env: &partitionEnv{fail: func(err error) { failures = append(failures, err) }, metrics: testMetrics()},
	}
	w.sw.target = &failingStore{Store: store}
	value := func(k string) []byte {
		v, err := EncodeChange(&Change{Change: sku.Change{Key: schemas.StockKey(k), Stock: &schemas.StockEntity{SKU: k, OnHand: 1, Available: 1, Version: 1, UpdatedAt: 1}}})
		require.NoError(t, err)
		return v
	}
	w.stage(map[string][]byte{schemas.StockKey("a"): value("a")}, 2, time.Time{})
	w.offset = 2
	require.NoError(t, w.writeBehind()) // fails in the background
	w.stage(map[string][]byte{schemas.StockKey("b"): value("b")}, 4, time.Time{})
	w.offset = 4
	require.NoError(t, w.writeBehind()) // a write is running: b waits
	w.sw.rush()
	w.storeDone(<-w.sw.done)
	require.Len(t, failures, 1, "the failed write stops the partition")
	require.Error(t, w.writeBehind(), "no write after a failed one")
	for _, k := range []string{"a", "b"} {
		_, ok := w.get(schemas.StockKey(k), false)
		require.True(t, ok, "%s stays readable until the restart", k)
	}
	w.closeStore()
	require.Equal(t, int64(0), w.offset, "the partition's offset is the store's after a failed write")

	store, err = statestore.Open(dir, statestore.Options{})
	require.NoError(t, err)
	defer store.Close()
	at, err := store.Offset()
	require.NoError(t, err)
	dump, err := store.Dump()
	require.NoError(t, err)
	require.Equal(t, int64(0), at, "the store records no offset past the lost write")
	require.Empty(t, dump)
}
