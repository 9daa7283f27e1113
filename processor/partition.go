package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/statestore"
	"github.com/reservations/reservations/topics"
)

// Header names the processor writes.
const (
	HeaderCommandID     = "command_id"
	HeaderTraceparent   = "traceparent"
	HeaderTracestate    = "tracestate"
	HeaderForwardedFrom = "forwarded_from"
	HeaderError         = "error"
	HeaderSourceTopic   = "source_topic"
	HeaderSourcePart    = "source_partition"
	HeaderSourceOffset  = "source_offset"
	// HeaderValueDropped marks a DLQ copy without the record's value (its
	// value made even the copy too large for the broker).
	HeaderValueDropped = "value_dropped"
)

// ownedAtRefresh is how often a running partition refreshes its store's
// owned_at, on a commit the broker accepted with writes of the partition (so
// the stored value can be up to this much older than the truth: the stale-store
// rule errs towards a full restore).
const ownedAtRefresh = 30 * time.Second

type jobKind int

const (
	jobApply jobKind = iota
	jobCommit
	jobAbort
	// jobSeal produces the changelog records of the open transaction's
	// pending writes (the last value of each key) before it ends.
	jobSeal
)

type job struct {
	kind    jobKind
	records []*kgo.Record
	now     schemas.Millis
	done    chan<- applied // apply and seal
	// deadline (apply only): fire no more timers after it (beyond a minimum),
	// so that a burst of due holds never makes a transaction too long to commit.
	deadline time.Time
	// noTimers (apply only): the partition's committed offset is not known
	// yet, so it fires no timers and sweeps nothing in this transaction.
	noTimers bool
	// seal (apply only): the transaction's last dispatch; seal after applying.
	seal bool
	// owned (commit only): when the committed transaction, which wrote for
	// this partition and was fenced by the group generation, began to end;
	// zero when it wrote nothing here (or only locally: an empty transaction).
	owned time.Time
}

// applied is a partition's answer to an apply job.
type applied struct {
	p   int32
	err error
}

// partitionEnv is what a partition needs from the processor that runs it (one
// per session): configuration, topics and layout, metrics, how to produce into
// the open transaction, and its role. Nothing else: no back-pointer.
type partitionEnv struct {
	cfg       *Config
	io        topics.Names // the role's topics
	all       topics.Names // every topic (the peer role's input)
	layout    layout
	role      role
	metrics   *metrics
	log       *slog.Logger
	produce   func(*kgo.Record, func(*kgo.Record, error))
	flush     func(context.Context) error // every record produced so far
	fail      func(error)                 // stops the session (it restarts)
	changelog *changelogReader
	storeOpts statestore.Options
}

// layout is what a session learned of the topics.
type layout struct {
	partitions     int32 // of the input, results and changelog
	dlqPartitions  int32
	peerPartitions int32 // of the peer role's input; 0 when it does not exist
	changelogID    []byte
	commandsID     [16]byte
	// deleteRetention is the changelog's delete.retention.ms.
	deleteRetention time.Duration
}

// partition is the goroutine that owns one assigned partition: its Badger
// store, the cache and the pending writes of the open transaction, and its
// role's half (timers, gauges). Only its own goroutine touches its fields,
// except the atomics.
type partition struct {
	p    int32
	env  *partitionEnv
	role partitionRole
	log  *slog.Logger
	jobs chan job
	// queries are interactive queries, answered between jobs from committed state.
	queries chan func(*partition)
	stop    context.CancelFunc
	ctx     context.Context
	exit    chan struct{}
	ready   atomic.Bool
	// revoked is set when the group took the partition away (from the group
	// goroutine, which also stopped it): the main loop then forgets it.
	revoked atomic.Bool
	// wrote is set when the open transaction produced anything for this
	// partition (its own goroutine writes it, the main loop reads it after the
	// dispatch barrier and resets it when the transaction ends).
	wrote bool
	// lastCommit is when the main loop began ending the last transaction that
	// committed writes of this partition (owned by the main loop).
	lastCommit time.Time
	// started is when the partition became ready, and the generation then.
	started    time.Time
	generation int32
	// nextDue is the earliest expiry or sweep (Unix ms); read by the main loop.
	nextDue atomic.Int64
	// broken is set when the partition must stop deciding (halt): its store
	// could not take committed state or could not be read, or a commit found
	// unsealed changes. Every later job fails until the processor restarts.
	broken error
	// deadline is the open transaction's timer deadline (see job.deadline).
	deadline time.Time
	// dropValue makes toDLQ leave out the record's value (poison.go).
	dropValue bool
	// standby: this is a warm copy of a partition another member owns
	// (standby.go): it restores and tails the changelog, never decides.
	standby bool

	store *statestore.Store
	// offset is the next changelog offset committed state reflects; the
	// store has stored, and the rest waits in sw (checkpoint.go).
	offset  int64
	stored  int64
	sw      storeWriter
	ownedAt time.Time // the store's MetaOwnedAt, last written or staged

	cache   stateCache        // committed entities (a tombstone caches absence; cache.go)
	keys    keyFilter         // the keys the store may hold
	pending Entities          // writes of the open transaction
	raw     map[string][]byte // their changelog values (nil: tombstone), set by seal
	// unsent lists the keys of pending writes changed since the last seal, in
	// the order of their first change; unsentSet holds the same keys.
	unsent    []string
	unsentSet map[string]struct{}
	// The largest lengths of pending, raw and unsentSet since they were made
	// (scratch.go).
	pendingRoom, rawRoom, unsentRoom int
	poison                           poisonState
	sweep                            sweeper
	stream                           streamClock
	// streamCommitted is stream as of the last commit: an abort puts it back
	// (the aborted records are read and decided again).
	streamCommitted streamClock
	// Set by produce promises of the open transaction.
	maxOff  atomic.Int64 // highest changelog offset produced, -1 for none
	prodMu  sync.Mutex
	prodErr error
	// err is a read failure of the store during the open transaction.
	err error
}

func newPartition(env *partitionEnv, parent context.Context, p int32) *partition {
	// Stopped only by stop (the main loop at a transaction boundary, or the
	// group goroutine on a revoke), never directly by the end of Run: a commit
	// queued at shutdown is still applied.
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	w := &partition{
		p:         p,
		env:       env,
		log:       env.log.With("partition", p),
		jobs:      make(chan job, 4),
		queries:   make(chan func(*partition)),
		stop:      cancel,
		ctx:       ctx,
		exit:      make(chan struct{}),
		cache:     newStateCache(env.cacheShare(), env.metrics.cacheBytes),
		pending:   make(Entities),
		raw:       make(map[string][]byte),
		unsentSet: make(map[string]struct{}),
		sw:        newStoreWriter(),
	}
	w.role = env.role.partition(w)
	w.maxOff.Store(-1)
	w.poison.reset()
	w.poison.suspectLo, w.poison.suspectHi = 0, -1
	return w
}

// run restores the partition, reports readiness to the main loop, then serves
// jobs until stopped.
func (w *partition) run(restored chan<- restoreDone) {
	defer close(w.exit)
	defer w.cache.release()
	defer func() {
		if w.store != nil {
			// owned_at stays the time of the last commit that proved ownership
			// (at most ownedAtRefresh old): never "now", which a frozen or lost
			// instance cannot vouch for.
			if !w.ownedAt.IsZero() {
				markReleased(w.store.Dir())
			}
			w.closeStore()
		}
	}()
	err := w.restore(w.ctx)
	select {
	case restored <- restoreDone{w, err}:
	case <-w.ctx.Done():
		return
	}
	if err != nil {
		return
	}
	for {
		select {
		case <-w.ctx.Done():
			// Stopping: a commit or abort already queued is still applied, so a
			// clean stop leaves the store at the last committed transaction.
			for {
				select {
				case j := <-w.jobs:
					if j.kind == jobCommit || j.kind == jobAbort {
						w.handleJob(j)
					}
				default:
					return
				}
			}
		case q := <-w.queries:
			q(w)
			w.cache.report()
		case j := <-w.jobs:
			w.handleJob(j)
		case r := <-w.sw.done:
			w.storeDone(r)
		}
	}
}

func (w *partition) handleJob(j job) {
	switch j.kind {
	case jobApply:
		if w.broken != nil {
			j.done <- applied{w.p, w.broken}
			return
		}
		w.deadline = j.deadline
		err := w.apply(j.records, j.now, j.noTimers)
		if errors.Is(err, statestore.ErrCorrupt) {
			// A value the store cannot read or decode fails every retry of the
			// batch: escalate. The store is marked to be wiped, and the processor
			// restarts its session, which rebuilds the partition from the changelog.
			markWipe(w.store.Dir())
			w.halt("state store unreadable while deciding: rebuilding it from the changelog", err)
		}
		if err == nil && j.seal {
			w.seal()
			err = w.err
		}
		j.done <- applied{w.p, err}
	case jobCommit:
		if w.broken != nil {
			return
		}
		if err := w.commit(j.owned); errors.Is(err, errUnsealed) {
			w.halt("a committed transaction carried changes without their changelog records (a bug): the partition stops; the changelog lacks those changes, so the state a restart rebuilds lacks them too", err)
		} else if err != nil {
			w.storeFailed(err)
		}
	case jobAbort:
		w.abort()
	case jobSeal:
		if w.broken != nil {
			j.done <- applied{w.p, w.broken}
			return
		}
		w.seal()
		j.done <- applied{w.p, w.err}
	}
}

// get reads key through the pending writes, the cache and the store. A store
// failure is kept in w.err and fails the transaction.
func (w *partition) get(key string, cacheMiss bool) (Change, bool) {
	if c, ok := w.pending[key]; ok {
		return c, !c.Tombstone()
	}
	if c, ok := w.cache.get(key); ok {
		return c, !c.Tombstone()
	}
	v, staged := w.sw.lookup(key)
	if !staged && w.keys.absent(key) {
		if cacheMiss {
			w.cache.put(tombstone(key), cacheSize(key, 0))
		}
		return Change{}, false
	}
	if !staged {
		var err error
		w.env.metrics.storeReads.Inc()
		if v, err = w.store.Get(key); err != nil {
			w.err = err
			return Change{}, false
		}
	}
	if v == nil {
		if cacheMiss {
			w.cache.put(tombstone(key), cacheSize(key, 0))
		}
		return Change{}, false
	}
	c, err := DecodeChange(key, v)
	if err != nil {
		w.err = fmt.Errorf("%w: %w", statestore.ErrCorrupt, err)
		return Change{}, false
	}
	w.cache.put(c, cacheSize(key, len(v)))
	return c, true
}

// apply decides the due timers at now and records (all of this partition, in
// offset order), producing every output into the open transaction.
func (w *partition) apply(records []*kgo.Record, now schemas.Millis, noTimers bool) error {
	if !noTimers {
		w.role.fireDue(now)
		if now >= w.sweep.next {
			w.sweepStep(now, w.stream.clock(now, 2*schemas.Millis(w.env.role.sweepWindow().Milliseconds())))
		}
	}
	for _, r := range records {
		w.handleGuarded(r, now, w.role.handle)
	}
	w.stream.observe(records, now)
	w.updateDue()
	return w.err
}

// updateDue publishes the earliest expiry or sweep to the main loop.
func (w *partition) updateDue() {
	d := w.sweep.next
	if t := w.role.nextDue(); t > 0 && t < d {
		d = t
	}
	w.nextDue.Store(int64(max(d, 1)))
}

// putChange records c as a pending write of the open transaction. Its
// changelog record is produced by seal, before the transaction ends: a key
// changed several times in one transaction (a hot SKU's stock) is written to
// the changelog once, with its last value (Kafka Streams' record cache). The
// results stay one per decision.
func (w *partition) putChange(c *Change) {
	w.pending[c.Key] = *c
	if _, ok := w.unsentSet[c.Key]; !ok {
		w.unsentSet[c.Key] = struct{}{}
		w.unsent = append(w.unsent, c.Key)
	} else {
		w.env.metrics.coalesced.Inc()
	}
}

// seal encodes and produces the changelog records of the keys changed since
// the last seal, into the open transaction. An encoding failure is kept in
// w.err (it fails the transaction).
func (w *partition) seal() {
	for _, k := range w.unsent {
		c := w.pending[k]
		v, err := EncodeChange(&c)
		if err != nil {
			w.err = fmt.Errorf("encode changelog entity %s: %w", k, err)
			break
		}
		w.raw[k] = v
		w.produce(&kgo.Record{Topic: w.env.io.Changelog, Partition: w.p, Key: []byte(k), Value: v}, w.changelogPromise)
	}
	w.clearUnsent()
}

// produce produces r into the open transaction on behalf of this partition.
func (w *partition) produce(r *kgo.Record, promise func(*kgo.Record, error)) {
	w.wrote = true
	w.env.produce(r, promise)
}

func (w *partition) promise(_ *kgo.Record, err error) {
	if err != nil {
		w.prodMu.Lock()
		if w.prodErr == nil {
			w.prodErr = err
		}
		w.prodMu.Unlock()
	}
}

func (w *partition) changelogPromise(r *kgo.Record, err error) {
	if err != nil {
		w.promise(r, err)
		return
	}
	for {
		cur := w.maxOff.Load()
		if r.Offset <= cur || w.maxOff.CompareAndSwap(cur, r.Offset) {
			return
		}
	}
}

// produceErr returns the first produce failure of the open transaction.
func (w *partition) produceErr() error {
	w.prodMu.Lock()
	defer w.prodMu.Unlock()
	return w.prodErr
}

// toDLQ copies r unchanged to the DLQ with error headers.
func (w *partition) toDLQ(r *kgo.Record, msg string) {
	env := w.env
	hs := append(append([]kgo.RecordHeader(nil), r.Headers...),
		kgo.RecordHeader{Key: HeaderError, Value: []byte(msg)},
		kgo.RecordHeader{Key: HeaderSourceTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderSourcePart, Value: []byte(strconv.Itoa(int(r.Partition)))},
		kgo.RecordHeader{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
	)
	value := r.Value
	if w.dropValue {
		value = nil
		hs = append(hs, kgo.RecordHeader{Key: HeaderValueDropped, Value: []byte("true")})
	}
	w.produce(&kgo.Record{Topic: env.io.DLQ, Partition: w.p % env.layout.dlqPartitions, Key: r.Key, Value: value, Headers: hs}, w.promise)
	env.metrics.dlq.Inc()
	w.log.Debug("dead letter", "offset", r.Offset, "err", msg)
}

// forward re-produces a misrouted command to the partition its key hashes to,
// in the same transaction; it is decided there.
func (w *partition) forward(r *kgo.Record, owner int32) {
	hs := append(append([]kgo.RecordHeader(nil), r.Headers...),
		kgo.RecordHeader{Key: HeaderForwardedFrom, Value: []byte(strconv.Itoa(int(r.Partition)) + "/" + strconv.FormatInt(r.Offset, 10))})
	w.produce(&kgo.Record{Topic: r.Topic, Partition: owner, Key: r.Key, Value: r.Value, Headers: hs, Timestamp: r.Timestamp}, w.promise)
	w.env.metrics.forwarded.Inc()
}

// errUnsealed fails a commit that finds changes no seal produced changelog
// records for. It is a bug in the loop: the transaction's results are
// committed but those changes are not in the changelog, so no restore can
// bring them back. The partition stops rather than keep them in its cache and
// store only (state its changelog disagrees with); a restart rebuilds it from
// the changelog, without them.
var errUnsealed = errors.New("changes were never sealed into the changelog")

// commit hands the committed transaction's changes and changelog offset to the
// store's writer (checkpoint.go), then moves them into the cache.
func (w *partition) commit(owned time.Time) error {
	if len(w.unsent) > 0 {
		// Every touched partition seals after its last apply (Processor.seal,
		// or the last dispatch's own seal): this is a bug, and taking the
		// changes into the store would make it disagree with the changelog.
		return fmt.Errorf("commit: %w: %d changed keys (first: %s)", errUnsealed, len(w.unsent), w.unsent[0])
	}
	next := w.offset
	if m := w.maxOff.Load(); m >= 0 {
		next = m + 1
	}
	if !owned.IsZero() && owned.Sub(w.ownedAt) > ownedAtRefresh {
		w.ownedAt = owned
	} else {
		owned = time.Time{}
	}
	if len(w.raw) > 0 || next != w.offset {
		w.stage(w.raw, next, owned)
		w.offset = next
		for k, v := range w.raw {
			if v != nil {
				w.keys.committed(k)
			}
		}
	} else if !owned.IsZero() {
		w.stage(nil, -1, owned)
	}
	if err := w.writeBehind(); err != nil {
		return err
	}
	for k, c := range w.pending {
		// Decided commands (and carts' decided commands) are read again only
		// by a duplicate: leave them to the store so they do not push stock,
		// reservations and carts out of the cache.
		if c.Command == nil && (c.Cart == nil || c.Cart.Decided == nil) {
			w.cache.put(c, cacheSize(k, len(w.raw[k])))
		} else {
			w.cache.drop(k)
		}
	}
	w.cache.report()
	w.pending = emptied(w.pending, &w.pendingRoom)
	w.raw = emptied(w.raw, &w.rawRoom)
	w.clearUnsent()
	w.poison.forgetBelow(w.poison.hi + 1)
	w.streamCommitted = w.stream
	w.role.commit()
	w.reset()
	return nil
}

// abort drops the aborted transaction's writes; its records will be fetched and
// decided again.
func (w *partition) abort() {
	w.stream = w.streamCommitted
	w.role.abort()
	w.pending = emptied(w.pending, &w.pendingRoom)
	w.raw = emptied(w.raw, &w.rawRoom)
	w.clearUnsent()
	w.reset()
	w.updateDue()
	w.cache.report() // reads of the aborted transaction cached committed state
}

// clearUnsent forgets the unsent keys (a commit has sealed them all; an abort
// drops them).
func (w *partition) clearUnsent() {
	w.unsentSet = emptied(w.unsentSet, &w.unsentRoom)
	w.unsent = w.unsent[:0]
}

func (w *partition) reset() {
	w.poison.reset()
	w.maxOff.Store(-1)
	w.prodMu.Lock()
	w.prodErr = nil
	w.prodMu.Unlock()
	w.err = nil
}

// traceHeaders returns the W3C trace context headers of r (traceparent and
// tracestate), which the processor copies onto what r causes: results, and a
// cart saga's line commands and cart result. No other header is copied.
func traceHeaders(r *kgo.Record) []kgo.RecordHeader {
	if r == nil {
		return nil
	}
	var out []kgo.RecordHeader
	for _, h := range r.Headers {
		if h.Key == HeaderTraceparent || h.Key == HeaderTracestate {
			out = append(out, h)
		}
	}
	return out
}
