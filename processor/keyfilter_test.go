package processor

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/statestore"
)

// TestKeyFilterNeverHidesAStoredKey drives a store and its filter the way a
// partition does (committed writes and tombstones, sweep walks in small steps
// that start and end passes) in a random order, and checks after every step
// that no key the store holds is reported absent, and that a pass drops what
// was deleted before it.
func TestKeyFilterNeverHidesAStoredKey(t *testing.T) {
	for seed := range uint64(5) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1))
			store, err := statestore.Open(t.TempDir(), statestore.Options{})
			require.NoError(t, err)
			defer store.Close()
			var f keyFilter
			// A store that already holds keys, as after a restore.
			initial := map[string][]byte{}
			for i := range 50 {
				initial[fmt.Sprintf("k%03d", i)] = []byte("v")
			}
			require.NoError(t, store.Commit(initial, 1))
			require.NoError(t, f.build(store))

			live := map[string]bool{}
			for k := range initial {
				live[k] = true
			}
			cursor, off := "", int64(1)
			for step := range 2000 {
				switch rng.IntN(3) {
				case 0, 1: // a committed transaction
					changes := map[string][]byte{}
					for range 1 + rng.IntN(4) {
						k := fmt.Sprintf("k%03d", rng.IntN(200))
						if rng.IntN(3) == 0 {
							changes[k] = nil
						} else {
							changes[k] = []byte("v")
						}
					}
					off++
					require.NoError(t, store.Commit(changes, off))
					for k, v := range changes {
						live[k] = v != nil
						if v != nil {
							f.committed(k)
						}
					}
				case 2: // a sweep step
					if cursor == "" {
						f.passStart()
					}
					next, err := store.ScanFrom(cursor, 7, func(key string, _ []byte) error {
						f.seen(key)
						return nil
					})
					require.NoError(t, err)
					cursor = next
					if next == "" {
						f.passEnd()
					}
				}
				for k, ok := range live {
					if ok {
						require.False(t, f.absent(k), "step %d: stored key %s reported absent", step, k)
					}
				}
			}
			// Two whole passes with no writes drop every deleted key.
			for range 2 {
				f.passStart()
				_, err := store.ScanFrom("", 1<<30, func(key string, _ []byte) error { f.seen(key); return nil })
				require.NoError(t, err)
				f.passEnd()
			}
			for k, ok := range live {
				require.Equal(t, !ok, f.absent(k), k)
			}
			require.True(t, f.absent("never-written"))
		})
	}
}

// TestKeyFilterUnbuiltSaysMaybe: before a build, every key may be present.
func TestKeyFilterUnbuiltSaysMaybe(t *testing.T) {
	var f keyFilter
	require.False(t, f.absent("x"))
	f.committed("x")
	f.passStart()
	f.seen("x")
	f.passEnd()
	require.False(t, f.absent("y"))
}

// TestKeyFilterTurnsOffAboveItsBound: a store with more keys than the bound
// gets no filter (every read goes to the store), and one that grows past it
// while running turns its filter off.
func TestKeyFilterTurnsOffAboveItsBound(t *testing.T) {
	defer func(n int) { maxFilterKeys = n }(maxFilterKeys)
	maxFilterKeys = 10
	store, err := statestore.Open(t.TempDir(), statestore.Options{})
	require.NoError(t, err)
	defer store.Close()
	keys := map[string][]byte{}
	for i := range 8 {
		keys[fmt.Sprintf("k%d", i)] = []byte("v")
	}
	require.NoError(t, store.Commit(keys, 1))
	var f keyFilter
	require.NoError(t, f.build(store))
	require.True(t, f.on())
	require.True(t, f.absent("other"))
	for i := range 5 {
		f.committed(fmt.Sprintf("n%d", i))
	}
	require.False(t, f.on(), "past the bound")
	require.False(t, f.absent("other"), "off: every key may be present")

	for i := range 20 {
		keys[fmt.Sprintf("m%d", i)] = []byte("v")
	}
	require.NoError(t, store.Commit(keys, 2))
	require.NoError(t, f.build(store))
	require.False(t, f.on(), "a store over the bound gets no filter")
}
