package processor

import (
	"fmt"
	"time"
)

// This file writes committed state to a partition's Badger store behind the
// commits, off the partition's critical path (Kafka Streams flushes its record
// cache and checkpoints its offsets the same way, at a coarser grain).
//
// A committed transaction's changelog values join dirty; a writer goroutine
// puts everything dirty into Badger with the changelog offset it reaches, in
// one Badger transaction (statestore.Store.Commit), one write at a time and at
// most one per storeWriteGap. What is committed meanwhile waits in dirty for
// the next write, so small transactions share a write (one Badger write per
// transaction cost more in fixed overhead than in data at 16 clients), a hot
// key changed by many transactions is written once per store write, and the
// partition goes on deciding while Badger works.
//
// Reads see committed state through pending -> cache -> dirty -> writing ->
// store (partition.get, partition.committed). Walks of the store (the sweep)
// first wait until it has everything (syncStore).
//
// Restore stays exact: the store holds a prefix of the changelog with the
// offset it reflects, written together; a crash loses at most what was dirty,
// and the restore replays the changelog from the store's offset (the same path
// as a store that was behind for any other reason). A clean stop waits for the
// store to have everything before closing it. The store's owned_at is written
// with the data it vouches for, never ahead of it.

// maxDirtyKeys bounds the committed values waiting for the store while a write
// runs; beyond it a commit waits for that write (back-pressure).
const maxDirtyKeys = 200_000

// storeWriteGap is the least time from the start of one store write to the
// start of the next: at low load a transaction changes a few keys, and one
// Badger write per transaction costs more in fixed overhead than in data.
// syncStore does not wait for it.
const storeWriteGap = 50 * time.Millisecond

// storeWriter is the write-behind state of one partition (only its goroutine
// touches it) and the goroutine that writes its store.
type storeWriter struct {
	dirty   map[string][]byte // committed values not handed to a write yet (nil: tombstone)
	next    int64             // the changelog offset the store reaches with dirty; -1: none staged
	ownedAt time.Time         // owned_at to write after dirty; zero: none

	writing map[string][]byte // the values of the write in flight (nil map: none)
	spare   map[string][]byte // the map of the last write, cleared, for the next dirty

	// failed is the first failed write: the store is never written again
	// (a later write would record an offset past the values that were lost),
	// and writing keeps that write's values readable until the restart.
	failed error

	// The writer goroutine (started by the first write, stopped by
	// closeStore): it takes writes from reqs and answers each on done.
	reqs   chan storeWrite
	done   chan storeWrite
	hurry  chan struct{} // skip the pause after the running write
	target stateWriter   // what it writes to; nil: the partition's store
	gap    time.Duration // storeWriteGap (tests shorten it)
}

// stateWriter is what the writer goroutine needs of the store.
type stateWriter interface {
	Commit(changes map[string][]byte, nextOffset int64) error
	SetOwnedAt(t time.Time) error
}

// storeWrite is one write for the writer goroutine, and then its result.
type storeWrite struct {
	vals    map[string][]byte
	next    int64 // -1: no data, only owned_at
	ownedAt time.Time
	err     error
}

func newStoreWriter() storeWriter {
	return storeWriter{dirty: make(map[string][]byte), next: -1, gap: storeWriteGap}
}

// run writes the store for one partition until reqs is closed. After each
// write it answers when storeWriteGap has passed since the write began, or
// at once when hurried, so that commits meanwhile join the next write.
func (sw *storeWriter) run(store stateWriter) {
	for r := range sw.reqs {
		began := time.Now()
		if r.next >= 0 {
			r.err = store.Commit(r.vals, r.next)
		}
		if r.err == nil && !r.ownedAt.IsZero() {
			r.err = store.SetOwnedAt(r.ownedAt)
		}
		if wait := sw.gap - time.Since(began); wait > 0 && r.err == nil {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-sw.hurry:
				t.Stop()
			}
		}
		sw.done <- r
	}
}

// stop ends the writer goroutine (no write may be running).
func (sw *storeWriter) stop() {
	if sw.reqs != nil {
		close(sw.reqs)
		sw.reqs = nil
	}
}

// rush skips the pause after the running write.
func (sw *storeWriter) rush() {
	select {
	case sw.hurry <- struct{}{}:
	default:
	}
}

// pendingStore reports whether the store is missing committed state.
func (sw *storeWriter) pendingStore() bool {
	return sw.writing != nil || len(sw.dirty) > 0 || sw.next >= 0 || !sw.ownedAt.IsZero()
}

// lookup returns the committed value of key that the store does not have yet:
// found is false when the store is up to date for key.
func (sw *storeWriter) lookup(key string) (val []byte, found bool) {
	if v, ok := sw.dirty[key]; ok {
		return v, true
	}
	if v, ok := sw.writing[key]; ok {
		return v, true
	}
	return nil, false
}

// stage adds a committed transaction's changelog values (nil: tombstone),
// reaching changelog offset next, and the owned_at it proves (zero: none).
func (w *partition) stage(raw map[string][]byte, next int64, owned time.Time) {
	sw := &w.sw
	for k, v := range raw {
		sw.dirty[k] = v
	}
	if next >= 0 { // -1: a commit that proves ownership only
		sw.next = next
	}
	if !owned.IsZero() {
		sw.ownedAt = owned
	}
}

// writeBehind hands what is dirty to the writer goroutine when no write is
// running. When a write is running and dirty is full, it waits for that write
// first.
func (w *partition) writeBehind() error {
	sw := &w.sw
	if sw.failed != nil {
		return sw.failed
	}
	if sw.writing != nil && len(sw.dirty) >= maxDirtyKeys {
		sw.rush()
		if err := w.storeWritten(<-sw.done); err != nil {
			return err
		}
	}
	if sw.writing != nil || (len(sw.dirty) == 0 && sw.next < 0 && sw.ownedAt.IsZero()) {
		return nil
	}
	if sw.reqs == nil {
		sw.reqs, sw.done, sw.hurry = make(chan storeWrite, 1), make(chan storeWrite, 1), make(chan struct{}, 1)
		if sw.target == nil {
			sw.target = w.store
		}
		go sw.run(sw.target)
	}
	r := storeWrite{vals: sw.dirty, next: sw.next, ownedAt: sw.ownedAt}
	sw.writing = sw.dirty
	if sw.spare != nil {
		sw.dirty, sw.spare = sw.spare, nil
	} else {
		sw.dirty = make(map[string][]byte, len(r.vals))
	}
	sw.next, sw.ownedAt = -1, time.Time{}
	sw.reqs <- r
	return nil
}

// storeWritten takes the result of the write that was running.
func (w *partition) storeWritten(r storeWrite) error {
	sw := &w.sw
	if r.err != nil {
		sw.failed = fmt.Errorf("write committed state up to changelog offset %d: %w", r.next, r.err)
		return sw.failed
	}
	clear(sw.writing)
	sw.spare, sw.writing = sw.writing, nil
	if r.next >= 0 {
		w.stored = r.next
	}
	return nil
}

// syncStore waits until the store has every committed value: before a walk of
// the store, and before it is closed.
func (w *partition) syncStore() error {
	for w.sw.pendingStore() {
		if w.sw.failed != nil {
			return w.sw.failed
		}
		if w.sw.writing == nil {
			if err := w.writeBehind(); err != nil {
				return err
			}
			continue
		}
		w.sw.rush()
		if err := w.storeWritten(<-w.sw.done); err != nil {
			return err
		}
	}
	return nil
}

// storeDone handles the end of a background write from the partition's loop,
// and starts the next one when more was committed meanwhile.
func (w *partition) storeDone(r storeWrite) {
	err := w.storeWritten(r)
	if err == nil {
		err = w.writeBehind()
	}
	if err != nil {
		w.storeFailed(err)
	}
}

// storeFailed stops deciding after the store could not take committed state:
// the transactions are committed in Kafka, the store is merely behind, and
// the restore after a restart replays the tail.
func (w *partition) storeFailed(err error) {
	w.halt("write committed state; restart to restore from the changelog", err)
}

// halt stops the partition deciding after err, logged with msg (once: the
// first failure is the one that counts).
func (w *partition) halt(msg string, err error) {
	if w.broken != nil {
		return
	}
	w.log.Error(msg, "err", err)
	w.broken = fmt.Errorf("partition %d: %w", w.p, err)
	w.env.fail(w.broken)
}

// closeStore writes what the store is missing, then closes it. When that
// fails, the partition's offset becomes the store's (a released store is
// advertised with the offset it really has).
func (w *partition) closeStore() {
	if err := w.syncStore(); err != nil {
		w.log.Warn("state store left behind the changelog (the next restore replays the tail)", "err", err)
		w.offset = w.stored
	}
	w.sw.stop()
	if err := w.store.Close(); err != nil {
		w.log.Warn("close state", "err", err)
	}
}
