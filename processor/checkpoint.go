package processor

import (
	"fmt"
	"time"
)

// This file writes committed state to a partition's Badger store behind the
// commits, off the partition's critical path (Kafka Streams flushes its record
// cache and checkpoints its offsets the same way, at a coarser grain).
//
// A committed transaction's changelog values join dirty; one background write
// at a time puts everything dirty into Badger with the changelog offset it
// reaches, in one Badger transaction (statestore.Store.Commit). What is
// committed while a write runs waits in dirty for the next one, so a hot key
// changed by many transactions is written once per store write, and the
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

// storeWriter is the write-behind state of one partition (only its goroutine
// touches it).
type storeWriter struct {
	dirty   map[string][]byte // committed values not handed to a write yet (nil: tombstone)
	next    int64             // the changelog offset the store reaches with dirty; -1: none staged
	ownedAt time.Time         // owned_at to write after dirty; zero: none

	writing map[string][]byte // the values of the write in flight (nil map: none)
	done    chan storeWrite   // its result (buffered)
}

// storeWrite is the result of one background write.
type storeWrite struct {
	next    int64
	ownedAt time.Time
	err     error
}

func newStoreWriter() storeWriter {
	return storeWriter{dirty: make(map[string][]byte), next: -1, done: make(chan storeWrite, 1)}
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
	sw.next = next
	if !owned.IsZero() {
		sw.ownedAt = owned
	}
}

// writeBehind starts a background write of what is dirty when none is running.
// When a write is running and dirty is full, it waits for that write first.
func (w *partition) writeBehind() error {
	sw := &w.sw
	if sw.writing != nil && len(sw.dirty) >= maxDirtyKeys {
		if err := w.storeWritten(<-sw.done); err != nil {
			return err
		}
	}
	if sw.writing != nil || (len(sw.dirty) == 0 && sw.next < 0 && sw.ownedAt.IsZero()) {
		return nil
	}
	vals, next, owned := sw.dirty, sw.next, sw.ownedAt
	sw.writing = vals
	sw.dirty = make(map[string][]byte, len(vals))
	sw.next, sw.ownedAt = -1, time.Time{}
	store, done := w.store, sw.done
	go func() {
		var err error
		if next >= 0 {
			err = store.Commit(vals, next)
		}
		if err == nil && !owned.IsZero() {
			err = store.SetOwnedAt(owned)
		}
		done <- storeWrite{next: next, ownedAt: owned, err: err}
	}()
	return nil
}

// storeWritten takes the result of the write that was running.
func (w *partition) storeWritten(r storeWrite) error {
	w.sw.writing = nil
	if r.err != nil {
		return fmt.Errorf("write committed state up to changelog offset %d: %w", r.next, r.err)
	}
	if r.next >= 0 {
		w.stored = r.next
	}
	return nil
}

// syncStore waits until the store has every committed value: before a walk of
// the store, and before it is closed.
func (w *partition) syncStore() error {
	for w.sw.pendingStore() {
		if w.sw.writing == nil {
			if err := w.writeBehind(); err != nil {
				return err
			}
			continue
		}
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
	if w.broken != nil {
		return
	}
	w.log.Error("write committed state; restart to restore from the changelog", "err", err)
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
	if err := w.store.Close(); err != nil {
		w.log.Warn("close state", "err", err)
	}
}
