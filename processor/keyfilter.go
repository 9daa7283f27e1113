package processor

import (
	"hash/maphash"

	"github.com/reservations/reservations/statestore"
)

// keyFilter answers "is this key certainly absent from the store?" from
// memory, so that the reads a new command makes of keys that do not exist yet
// (its command/<id> and reservation keys) skip Badger. It holds a 64-bit hash
// of every key the store holds, and possibly of keys it no longer holds:
// "absent" is exact, "maybe present" goes to the store. A hash collision only
// costs a read.
//
// It stays a superset of the store's keys because the store changes only
// through its partition: it is built by a scan of the store after a restore,
// every committed write adds its key, and tombstoned keys are dropped by
// rebuilding it along the sweep's walk of the store (a pass collects the keys
// it sees plus those committed meanwhile, and replaces the filter when it
// reaches the end).
//
// Memory: about 20 bytes per key, twice that while a sweep pass collects the
// next filter. A partition whose store holds more than maxFilterKeys keys
// turns its filter off (every read goes to the store, as without it) until
// its next restore.
type keyFilter struct {
	seed maphash.Seed
	// cur is the filter; nil when not built (every key may be present).
	cur map[uint64]struct{}
	// next is being collected by a sweep pass; nil between passes.
	next map[uint64]struct{}
}

// maxFilterKeys bounds the keys one partition's filter holds (about 20 MB,
// 40 MB during a sweep pass); a variable for tests.
var maxFilterKeys = 1 << 20

func (f *keyFilter) hash(key string) uint64 { return maphash.String(f.seed, key) }

// absent reports whether key is certainly not in the store.
func (f *keyFilter) absent(key string) bool {
	if f.cur == nil {
		return false
	}
	_, ok := f.cur[f.hash(key)]
	return !ok
}

// build replaces the filter with the keys of store.
func (f *keyFilter) build(store *statestore.Store) error {
	if f.cur == nil {
		f.seed = maphash.MakeSeed()
	}
	cur := make(map[uint64]struct{})
	if err := store.ScanKeys(func(key string) { cur[f.hash(key)] = struct{}{} }); err != nil {
		f.cur, f.next = nil, nil
		return err
	}
	f.cur, f.next = cur, nil
	if len(cur) > maxFilterKeys {
		f.cur = nil
	}
	return nil
}

// on reports whether the filter is in use.
func (f *keyFilter) on() bool { return f.cur != nil }

// committed records a key the store now holds.
func (f *keyFilter) committed(key string) {
	if f.cur == nil {
		return
	}
	h := f.hash(key)
	f.cur[h] = struct{}{}
	if f.next != nil {
		f.next[h] = struct{}{}
	}
	if len(f.cur) > maxFilterKeys || len(f.next) > maxFilterKeys {
		f.cur, f.next = nil, nil
	}
}

// passStart begins collecting a new filter (the sweep starts a walk of the
// whole store).
func (f *keyFilter) passStart() {
	if f.cur != nil {
		f.next = make(map[uint64]struct{}, len(f.cur))
	}
}

// seen records a key the sweep's walk found in the store.
func (f *keyFilter) seen(key string) {
	if f.next != nil {
		f.next[f.hash(key)] = struct{}{}
		if len(f.next) > maxFilterKeys {
			f.cur, f.next = nil, nil
		}
	}
}

// passEnd replaces the filter with the collected one (the walk reached the
// end of the store).
func (f *keyFilter) passEnd() {
	if f.next != nil {
		f.cur, f.next = f.next, nil
	}
}
