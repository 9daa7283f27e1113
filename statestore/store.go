// Package statestore keeps the local state of one partition in Badger: every
// changelog entity of the partition, stored under its changelog key with its
// changelog value bytes unchanged, plus the changelog offset that state reflects.
//
// Invariants:
//   - State and offset are written in ONE Badger transaction (goka's __offset
//     idea): the store reflects exactly the changelog prefix [0, Offset()).
//   - The store is only written with state of committed Kafka transactions, so
//     it is never ahead of the changelog it mirrors; when it is behind, the
//     changelog tail from Offset() brings it up to date.
//   - Replaying the changelog from the beginning into an empty store yields a
//     store equal, key for key and byte for byte, to the processor's. (An empty
//     value, which the processor never writes, is stored as a delete: see
//     errUnreadable.)
//
// One Store is one partition (like a Kafka Streams task directory), so a
// partition that moves away or is found corrupt is wiped by removing its folder.
package statestore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/pb"
	"github.com/dgraph-io/ristretto/v2/z"
)

// Key spaces: data keys are changelog keys behind 'd', metadata behind 'm'.
const (
	dataPrefix = 'd'
	metaPrefix = 'm'
)

// Metadata names.
const (
	metaOffset  = "changelog_next_offset"
	MetaTopicID = "changelog_topic_id"
	MetaFormat  = "format"
	// MetaOwnedAt is when the store was last known to mirror its changelog
	// partition as its owner (Unix ms, 8 bytes big endian): set when a restore
	// ends, while the owner commits, and when it stops. A store that comes back
	// after a long absence compares it with the changelog's delete.retention.ms
	// (tombstones written meanwhile may have been compacted away).
	MetaOwnedAt = "owned_at"
)

// Format is the layout version of the store; a store of another format is wiped.
// "2": values of valueThreshold bytes and more live in Badger's value log, read
// with checksums (a binary of format "1" would read a lost value as absent, so
// it must wipe these stores, as this one wipes its).
const Format = "2"

// ErrCorrupt wraps any failure to open or read a store's files: the caller
// should wipe the folder and restore from the changelog.
var ErrCorrupt = errors.New("state store unreadable")

// ErrLocked is returned by Open when another process (or another Store in this
// one) has the folder open: a replay run while the processor runs, or two
// instances on one state folder. The folder is not damaged and must not be
// wiped.
var ErrLocked = errors.New("state store in use by another process")

// Options tune the Badger instance of one partition. The zero value is the
// tuned default (see DefaultOptions).
type Options struct {
	// MemTableSize is the size of one memtable in bytes (default 16 MiB; Badger's 64 MiB
	// times 12 partitions would hold ~4 GiB of memtables per instance).
	MemTableSize int64
	// BlockCacheSize is the block cache in bytes (default 16 MiB per partition).
	// Badger uses it only for compressed or encrypted tables: the store writes
	// uncompressed ones, so it matters only for tables an older version wrote.
	BlockCacheSize int64
	// SyncWrites fsyncs every commit (default false: the changelog is the source
	// of truth). Without it, a process crash loses nothing (the files are
	// mapped), and after a machine crash the store is behind (its offset is
	// written with its data: the changelog tail is replayed) or, when a table
	// that reached the disk points at value log bytes that did not, unreadable:
	// every value read is checksummed, and a store that fails a read is wiped
	// and rebuilt from the changelog.
	SyncWrites bool
	// ValueLogGCInterval is how often the store rewrites value log files that
	// are mostly garbage (default 1 min; negative: never). See valueThreshold.
	ValueLogGCInterval time.Duration
	// Logger receives Badger's warnings and errors (default: discarded).
	Logger *slog.Logger

	// valueLogFileSize overrides the value log's file size (tests).
	valueLogFileSize int64
}

// valueThreshold is the value size from which Badger keeps a value in its value
// log and only a pointer in the LSM tree. With ids of the usual lengths the
// changelog values of a decided command (its idempotency entry, about 565 B) and
// of a reservation (about 285 B) are above it and a SKU's stock entity (about
// 185 B) below: the LSM tree's write-ahead log, memtables, flushes and
// compactions then move pointers instead of most of the bytes (Badger's writes,
// flushes and compactions took about 30% of the processor's CPU under load,
// docs/BENCH_BINARY.md). The price is the value log's garbage: overwritten and
// deleted values stay in its files until a value log GC rewrites them
// (ValueLogGCInterval). A stock entity with long ids crosses the threshold too;
// it is written once per store write however often it changed meanwhile
// (processor/checkpoint.go), so its garbage grows with the store's write rate,
// not the command rate.
const valueThreshold = 256

// valueLogDiscard is the share of garbage from which the value log GC rewrites
// a file (Badger's documented choice).
const valueLogDiscard = 0.5

func (o Options) badger(dir string) badger.Options {
	if o.MemTableSize <= 0 {
		o.MemTableSize = 16 << 20
	}
	if o.BlockCacheSize <= 0 {
		o.BlockCacheSize = 16 << 20
	}
	if o.valueLogFileSize <= 0 {
		o.valueLogFileSize = 64 << 20
	}
	bo := badger.DefaultOptions(dir).
		WithMemTableSize(o.MemTableSize).
		WithNumMemtables(3).
		WithNumLevelZeroTables(4).
		WithNumLevelZeroTablesStall(12).
		WithBlockCacheSize(o.BlockCacheSize).
		WithIndexCacheSize(8 << 20).
		WithNumCompactors(2).
		WithValueLogFileSize(o.valueLogFileSize).
		WithValueThreshold(valueThreshold).
		WithVerifyValueChecksum(true). // a value log hole (machine crash) fails the read (see errUnreadable)
		WithDetectConflicts(false).    // one writer per partition
		WithCompression(options.None). // a cache of the changelog: CPU over disk (Badger's default is snappy)
		WithSyncWrites(o.SyncWrites).
		WithLogger(badgerLogger{o.Logger})
	return bo
}

// Store is the Badger state of one partition.
type Store struct {
	db  *badger.DB
	dir string
	log *slog.Logger
	// gcMu keeps the value log GC apart from the store's writes (Commit,
	// SetMeta, Load): Badger's GC reads the memtable's max version without the
	// lock its writes use (a data race the race detector reports). One file's
	// rewrite at a time holds it; loading asks the GC to stop after it.
	gcMu    sync.Mutex
	loading atomic.Bool
	gcStop  chan struct{} // closed by Close
	gcDone  chan struct{} // closed when the GC goroutine returned (nil: none)
	closed  sync.Once
}

// Open opens (creating if needed) the store in dir. An unreadable store yields an
// error wrapping ErrCorrupt.
func Open(dir string, opts Options) (s *Store, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create state dir %s: %w", dir, err)
	}
	defer func() {
		// Badger panics on some kinds of damaged files; treat that as corruption.
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("open state %s: %w: %v", dir, ErrCorrupt, r)
		}
	}()
	db, err := badger.Open(opts.badger(dir))
	if err != nil {
		// Badger formats the flock error into its message (no wrapping).
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("open state %s: %w: %w", dir, ErrLocked, err)
		}
		return nil, fmt.Errorf("open state %s: %w: %w", dir, ErrCorrupt, err)
	}
	s = &Store{db: db, dir: dir, log: opts.Logger, gcStop: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	f, err := s.Meta(MetaFormat)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	if f == nil {
		if err := s.SetMeta(MetaFormat, []byte(Format)); err != nil {
			_ = db.Close()
			return nil, err
		}
	} else if string(f) != Format {
		_ = db.Close()
		return nil, fmt.Errorf("open state %s: %w: format %q, want %q", dir, ErrCorrupt, f, Format)
	}
	every := opts.ValueLogGCInterval
	if every == 0 {
		every = time.Minute
	}
	if every > 0 {
		s.gcDone = make(chan struct{})
		go s.collectValueLog(every)
	}
	return s, nil
}

// collectValueLog runs the value log GC every interval until Close, the first
// time after a random part of the interval more (the stores of an instance
// open together and should not collect together).
func (s *Store) collectValueLog(every time.Duration) {
	defer close(s.gcDone)
	t := time.NewTimer(every + rand.N(every))
	defer t.Stop()
	for {
		select {
		case <-s.gcStop:
			return
		case <-t.C:
		}
		n, err := s.gcValueLog()
		if err != nil {
			s.log.Warn("state store value log GC failed (retried at the next interval)", "dir", s.dir, "err", err)
		} else if n > 0 {
			s.log.Info("state store value log GC", "dir", s.dir, "files_rewritten", n)
		}
		t.Reset(every)
	}
}

// gcValueLog rewrites value log files while one has at least valueLogDiscard
// garbage, and returns how many it rewrote.
func (s *Store) gcValueLog() (int, error) {
	n := 0
	for {
		select {
		case <-s.gcStop:
			return n, nil
		default:
		}
		if s.loading.Load() {
			return n, nil
		}
		s.gcMu.Lock()
		err := s.db.RunValueLogGC(valueLogDiscard)
		s.gcMu.Unlock()
		switch {
		case err == nil:
			n++
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
			return n, nil
		default:
			return n, fmt.Errorf("value log GC of state %s: %w", s.dir, err)
		}
	}
}

// Dir returns the store's folder.
func (s *Store) Dir() string { return s.dir }

// Close closes the store, after the value log GC: when it is rewriting a file,
// Close waits for that file (at most 64 MiB of values).
func (s *Store) Close() error {
	s.closed.Do(func() { close(s.gcStop) })
	if s.gcDone != nil {
		<-s.gcDone
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close state %s: %w", s.dir, err)
	}
	return nil
}

// Remove deletes the store folder dir (the store must be closed).
func Remove(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove state %s: %w", dir, err)
	}
	return nil
}

func dataKey(k string) []byte {
	b := make([]byte, 1+len(k))
	b[0] = dataPrefix
	copy(b[1:], k)
	return b
}

func metaKey(k string) []byte {
	b := make([]byte, 1+len(k))
	b[0] = metaPrefix
	copy(b[1:], k)
	return b
}

// errUnreadable is a stored value that reads back empty. Badger reports a value
// it cannot read from its value log (a hole a machine crash left, a checksum
// mismatch) only in its log and yields an empty value; the store never holds
// one (Commit and Load store an empty value as a delete: the changelog holds
// entities or tombstones), so an empty value is that failure.
var errUnreadable = errors.New("value unreadable (it reads back empty)")

func (s *Store) get(k []byte) ([]byte, error) {
	read := func() (v []byte, err error) {
		err = s.db.View(func(txn *badger.Txn) error {
			item, err := txn.Get(k)
			if errors.Is(err, badger.ErrKeyNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			v, err = item.ValueCopy(nil)
			if err == nil && len(v) == 0 {
				err = errUnreadable
			}
			return err
		})
		return v, err
	}
	v, err := read()
	if errors.Is(err, errUnreadable) {
		// The value log GC may have moved the value and deleted its old file
		// between the lookup and the read (a point read does not hold files
		// as iterators do): the moved value keeps its version, so a second
		// read finds it; a value that is really lost fails again.
		v, err = read()
	}
	if err != nil {
		return nil, fmt.Errorf("read state %s key %q: %w: %w", s.dir, k, ErrCorrupt, err)
	}
	return v, nil
}

// Get returns the changelog value stored under changelog key k, or nil.
func (s *Store) Get(k string) ([]byte, error) { return s.get(dataKey(k)) }

// Meta returns the metadata value name, or nil.
func (s *Store) Meta(name string) ([]byte, error) { return s.get(metaKey(name)) }

// SetMeta stores a metadata value (not empty: see errUnreadable).
func (s *Store) SetMeta(name string, v []byte) error {
	if len(v) == 0 {
		return fmt.Errorf("write state %s meta %s: empty value", s.dir, name)
	}
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(metaKey(name), v) }); err != nil {
		return fmt.Errorf("write state %s meta %s: %w", s.dir, name, err)
	}
	return nil
}

// OwnedAt returns MetaOwnedAt, or false when the store has none (a new store,
// or one written before the field existed).
func (s *Store) OwnedAt() (time.Time, bool, error) {
	v, err := s.Meta(MetaOwnedAt)
	if err != nil || v == nil {
		return time.Time{}, false, err
	}
	if len(v) != 8 {
		return time.Time{}, false, fmt.Errorf("read state %s owned_at: %w: %d bytes", s.dir, ErrCorrupt, len(v))
	}
	return time.UnixMilli(int64(binary.BigEndian.Uint64(v))), true, nil
}

// SetOwnedAt records MetaOwnedAt.
func (s *Store) SetOwnedAt(t time.Time) error {
	return s.SetMeta(MetaOwnedAt, offsetBytes(t.UnixMilli()))
}

// Offset returns the next changelog offset the store has not yet seen (0 for an
// empty store).
func (s *Store) Offset() (int64, error) {
	v, err := s.Meta(metaOffset)
	if err != nil || v == nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("read state %s offset: %w: %d bytes", s.dir, ErrCorrupt, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

func offsetBytes(o int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(o))
	return b[:]
}

// Commit writes the changes (a nil or empty value = delete) and the new next offset in one
// Badger transaction. When a batch is too large for one transaction it is split,
// with the offset in the last part: a crash in between leaves the offset behind
// the data, which replaying the changelog from that offset repairs (it rewrites
// the same keys with the same or newer values).
func (s *Store) Commit(changes map[string][]byte, nextOffset int64) error {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	set := func(k, v []byte) error {
		var err error
		if len(v) == 0 { // see errUnreadable
			err = txn.Delete(k)
		} else {
			err = txn.Set(k, v)
		}
		if errors.Is(err, badger.ErrTxnTooBig) {
			if err := txn.Commit(); err != nil {
				return err
			}
			txn = s.db.NewTransaction(true)
			if len(v) == 0 {
				return txn.Delete(k)
			}
			return txn.Set(k, v)
		}
		return err
	}
	for k, v := range changes {
		if err := set(dataKey(k), v); err != nil {
			return fmt.Errorf("commit state %s: %w", s.dir, err)
		}
	}
	if err := set(metaKey(metaOffset), offsetBytes(nextOffset)); err != nil {
		return fmt.Errorf("commit state %s: %w", s.dir, err)
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("commit state %s offset %d: %w", s.dir, nextOffset, err)
	}
	return nil
}

// Scan calls fn for every data key with the given changelog-key prefix, in key
// order. The value is only valid during the call.
// A failure to read the store wraps ErrCorrupt; fn's own error is returned
// wrapped as it is.
func (s *Store) Scan(prefix string, fn func(key string, val []byte) error) error {
	p := dataKey(prefix)
	var fnErr error
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 256, Prefix: p})
		defer it.Close()
		for it.Seek(p); it.ValidForPrefix(p); it.Next() {
			item := it.Item()
			if err := visit(item, fn, &fnErr); err != nil {
				return err
			}
		}
		return nil
	})
	return s.scanErr(fmt.Sprintf("scan state %s prefix %q", s.dir, prefix), err, fnErr)
}

// visit hands fn the changelog key and the value of a data item; fnErr gets
// fn's own error.
func visit(item *badger.Item, fn func(key string, val []byte) error, fnErr *error) error {
	return item.Value(func(v []byte) error {
		if len(v) == 0 {
			return errUnreadable
		}
		*fnErr = fn(string(item.Key()[1:]), v)
		return *fnErr
	})
}

// scanErr is the error of a walk of the store: nil, fnErr (the caller's
// callback failed), or a read failure, which wraps ErrCorrupt.
func (s *Store) scanErr(what string, err, fnErr error) error {
	switch {
	case err == nil:
		return nil
	case fnErr != nil, errors.Is(err, badger.ErrDBClosed):
		return fmt.Errorf("%s: %w", what, err)
	default:
		return fmt.Errorf("%s: %w: %w", what, ErrCorrupt, err)
	}
}

// ScanKeys calls fn for every data key (the changelog key), in key order,
// without reading values.
func (s *Store) ScanKeys(fn func(key string)) error {
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{dataPrefix}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			fn(string(it.Item().Key()[1:]))
		}
		return nil
	})
	return s.scanErr("scan state keys "+s.dir, err, nil)
}

// ScanFrom calls fn for up to limit data keys starting at changelog key from
// (inclusive), in key order, and returns the key after the last one visited, or
// "" when the scan reached the end. Its errors are Scan's.
func (s *Store) ScanFrom(from string, limit int, fn func(key string, val []byte) error) (string, error) {
	next := ""
	var fnErr error
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 256, Prefix: []byte{dataPrefix}})
		defer it.Close()
		n := 0
		for it.Seek(dataKey(from)); it.ValidForPrefix([]byte{dataPrefix}); it.Next() {
			item := it.Item()
			if n == limit {
				next = string(item.Key()[1:])
				return nil
			}
			n++
			if err := visit(item, fn, &fnErr); err != nil {
				return err
			}
		}
		return nil
	})
	if err := s.scanErr(fmt.Sprintf("scan state %s from %q", s.dir, from), err, fnErr); err != nil {
		return "", err
	}
	return next, nil
}

// Load replaces the whole store with state (changelog key -> value; nil values
// are skipped) reflecting the changelog up to nextOffset, through Badger's
// StreamWriter (sorted bulk load, no per-key transactions). Metadata other than
// the offset must be set again afterwards.
func (s *Store) Load(state map[string][]byte, nextOffset int64, meta map[string][]byte) error {
	type kv struct{ k, v []byte }
	kvs := make([]kv, 0, len(state)+len(meta)+2)
	for k, v := range state {
		if len(v) > 0 { // see errUnreadable
			kvs = append(kvs, kv{dataKey(k), v})
		}
	}
	for k, v := range meta {
		kvs = append(kvs, kv{metaKey(k), v})
	}
	kvs = append(kvs, kv{metaKey(MetaFormat), []byte(Format)}, kv{metaKey(metaOffset), offsetBytes(nextOffset)})
	sort.Slice(kvs, func(i, j int) bool { return bytes.Compare(kvs[i].k, kvs[j].k) < 0 })

	// The StreamWriter replaces the whole store: no GC meanwhile.
	s.loading.Store(true)
	s.gcMu.Lock()
	defer func() {
		s.gcMu.Unlock()
		s.loading.Store(false)
	}()
	sw := s.db.NewStreamWriter()
	if err := sw.Prepare(); err != nil {
		return fmt.Errorf("load state %s: %w", s.dir, err)
	}
	// The buffer grows as needed: starting it at its 32 MiB flush size cost
	// more (zeroing it) than loading a small partition.
	size := 1 << 20
	for _, e := range kvs {
		size += len(e.k) + len(e.v) + 64
	}
	buf := z.NewBuffer(min(size, 32<<20), "statestore.Load")
	defer func() { _ = buf.Release() }()
	flushBuf := func() error {
		if buf.LenNoPadding() == 0 {
			return nil
		}
		if err := sw.Write(buf); err != nil {
			return err
		}
		buf.Reset()
		return nil
	}
	for i, e := range kvs {
		if i > 0 && bytes.Equal(e.k, kvs[i-1].k) {
			continue
		}
		badger.KVToBuffer(&pb.KV{Key: e.k, Value: e.v, Version: 1}, buf)
		if buf.LenNoPadding() > 32<<20 {
			if err := flushBuf(); err != nil {
				sw.Cancel()
				return fmt.Errorf("load state %s: %w", s.dir, err)
			}
		}
	}
	if err := flushBuf(); err != nil {
		sw.Cancel()
		return fmt.Errorf("load state %s: %w", s.dir, err)
	}
	if err := sw.Flush(); err != nil {
		return fmt.Errorf("load state %s: %w", s.dir, err)
	}
	// The tables are on disk: sync the value log file being written, which they
	// point into (Badger syncs the earlier ones when it switches files, unless
	// a load writes more than a file; a hole is detected on read anyway).
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("load state %s: sync: %w", s.dir, err)
	}
	return nil
}

// Dump returns every data key and value (for tests and tools comparing stores).
func (s *Store) Dump() (map[string][]byte, error) {
	out := make(map[string][]byte)
	err := s.Scan("", func(k string, v []byte) error {
		out[k] = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	if b.l != nil {
		b.l.Error(fmt.Sprintf(f, a...), "component", "badger")
	}
}

func (b badgerLogger) Warningf(f string, a ...any) {
	if b.l != nil {
		b.l.Warn(fmt.Sprintf(f, a...), "component", "badger")
	}
}
func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}
