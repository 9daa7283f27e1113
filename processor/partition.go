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
	HeaderForwardedFrom = "forwarded_from"
	HeaderError         = "error"
	HeaderSourceTopic   = "source_topic"
	HeaderSourcePart    = "source_partition"
	HeaderSourceOffset  = "source_offset"
)

// minExpiriesPerTransaction is how many due timers a partition fires in a
// transaction even past its timer deadline, so that expiry always progresses.
const minExpiriesPerTransaction = 100

// ownedAtRefresh is how often a running partition refreshes its store's
// owned_at (on a commit; transactions run at least every SweepInterval).
const ownedAtRefresh = 30 * time.Second

// maxCache bounds the decoded entities a partition keeps in memory.
const maxCache = 200_000

type jobKind int

const (
	jobApply jobKind = iota
	jobCommit
	jobAbort
)

type job struct {
	kind    jobKind
	records []*kgo.Record
	now     schemas.Millis
	done    chan<- applied // apply only
	// deadline (apply only): fire no more timers after it (beyond a minimum),
	// so that a burst of due holds never makes a transaction too long to commit.
	deadline time.Time
}

// applied is a partition's answer to an apply job.
type applied struct {
	p   int32
	err error
}

// partition is the goroutine that owns one assigned partition: its Badger
// store, the pending writes of the open transaction, and its expiry timers.
// Only its own goroutine touches its fields, except the atomics.
type partition struct {
	p    int32
	proc *Processor
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
	// broken is set when a committed transaction could not be written to the
	// store; every later job fails until the processor restarts.
	broken error

	store   *statestore.Store
	offset  int64     // next changelog offset the store reflects
	ownedAt time.Time // the store's MetaOwnedAt, last written

	cache   map[string]Change // committed entities (a tombstone caches absence)
	pending Entities          // writes of the open transaction
	raw     map[string][]byte // their changelog values (nil: tombstone)
	timers  timers
	// expiredInTxn counts the timers fired in the open transaction (capped by
	// MaxExpiriesPerTransaction and by timerDeadline; the rest fire in the next
	// ones).
	expiredInTxn  int
	timerDeadline time.Time
	poison        poisonState
	sweep         sweeper
	// Gauges of committed state, and their pending deltas.
	active      int64
	activeDelta int64
	oversold    map[string]bool
	overPending map[string]bool
	// RoleCart: when each cart with a saga in flight started it (committed
	// state), and the pending updates of the open transaction (0: no saga).
	sagas       map[string]schemas.Millis
	sagaPending map[string]schemas.Millis
	// Set by produce promises of the open transaction.
	maxOff  atomic.Int64 // highest changelog offset produced, -1 for none
	prodMu  sync.Mutex
	prodErr error
	// err is a read failure of the store during the open transaction.
	err error
}

func newPartition(proc *Processor, p int32) *partition {
	// Stopped only by stop (the main loop at a transaction boundary, or the
	// group goroutine on a revoke), never directly by the end of Run: a commit
	// queued at shutdown is still applied.
	ctx, cancel := context.WithCancel(context.WithoutCancel(proc.ctx))
	w := &partition{
		p:           p,
		proc:        proc,
		log:         proc.log.With("partition", p),
		jobs:        make(chan job, 4),
		queries:     make(chan func(*partition)),
		stop:        cancel,
		ctx:         ctx,
		exit:        make(chan struct{}),
		cache:       make(map[string]Change),
		pending:     make(Entities),
		raw:         make(map[string][]byte),
		oversold:    make(map[string]bool),
		overPending: make(map[string]bool),
		sagas:       make(map[string]schemas.Millis),
		sagaPending: make(map[string]schemas.Millis),
	}
	w.maxOff.Store(-1)
	w.poison.reset()
	w.poison.suspectLo, w.poison.suspectHi = 0, -1
	return w
}

// run restores the partition, reports readiness to the main loop, then serves
// jobs until stopped.
func (w *partition) run(restored chan<- restoreDone) {
	defer close(w.exit)
	defer func() {
		if w.store != nil {
			if w.broken == nil && !w.ownedAt.IsZero() {
				// The store mirrors the log up to our last commit: remember when we
				// stopped owning it, for the stale-store rule of the next restore.
				if err := w.markOwned(); err != nil {
					w.log.Warn("record owned_at", "err", err)
				}
				markReleased(w.store.Dir())
			}
			if err := w.store.Close(); err != nil {
				w.log.Warn("close state", "err", err)
			}
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
					if j.kind != jobApply {
						w.handleJob(j)
					}
				default:
					return
				}
			}
		case q := <-w.queries:
			q(w)
		case j := <-w.jobs:
			w.handleJob(j)
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
		if w.expiredInTxn == 0 {
			w.timerDeadline = j.deadline
		}
		err := w.apply(j.records, j.now)
		if errors.Is(err, statestore.ErrCorrupt) {
			// A value the store cannot read or decode fails every retry of the
			// batch: escalate. The store is marked to be wiped, and the processor
			// restarts its session, which rebuilds the partition from the changelog.
			w.log.Error("state store unreadable while deciding: rebuilding it from the changelog", "err", err)
			markWipe(w.store.Dir())
			w.broken = fmt.Errorf("partition %d: %w", w.p, err)
			w.proc.fail(w.broken)
		}
		j.done <- applied{w.p, err}
	case jobCommit:
		if w.broken != nil {
			return
		}
		if err := w.commit(); err != nil {
			// The transaction is committed in Kafka; the store is merely
			// behind, and the restore after a restart replays the tail.
			w.log.Error("write committed state; restart to restore from the changelog", "err", err)
			w.broken = fmt.Errorf("partition %d: %w", w.p, err)
			w.proc.fail(w.broken)
		}
	case jobAbort:
		w.abort()
	}
}

// Stock implements State.
func (w *partition) Stock(sku string) (schemas.StockEntity, bool) {
	c, ok := w.get(schemas.StockKey(sku), true)
	if !ok || c.Stock == nil {
		return schemas.StockEntity{}, false
	}
	return *c.Stock, true
}

// Reservation implements State.
func (w *partition) Reservation(sku, id string) (schemas.ReservationEntity, bool) {
	c, ok := w.get(schemas.ReservationKey(sku, id), true)
	if !ok || c.Reservation == nil {
		return schemas.ReservationEntity{}, false
	}
	return *c.Reservation, true
}

// Decision implements State.
func (w *partition) Decision(id string) (schemas.CommandEntity, bool) {
	c, ok := w.get(schemas.CommandKey(id), false)
	if !ok || c.Command == nil {
		return schemas.CommandEntity{}, false
	}
	return *c.Command, true
}

// DueReservations implements State. The partition fires every timer due at now
// before it decides the records of a dispatch (see apply), so no hold is ever
// due at decision time here.
func (w *partition) DueReservations(string, schemas.Millis) []string { return nil }

// get reads key through the pending writes, the cache and the store. A store
// failure is kept in w.err and fails the transaction.
func (w *partition) get(key string, cacheMiss bool) (Change, bool) {
	if c, ok := w.pending[key]; ok {
		return c, !c.Tombstone()
	}
	if c, ok := w.cache[key]; ok {
		return c, !c.Tombstone()
	}
	v, err := w.store.Get(key)
	if err != nil {
		w.err = err
		return Change{}, false
	}
	if v == nil {
		if cacheMiss {
			w.cacheSet(Change{Key: key})
		}
		return Change{}, false
	}
	c, err := DecodeChange(key, v)
	if err != nil {
		w.err = fmt.Errorf("%w: %w", statestore.ErrCorrupt, err)
		return Change{}, false
	}
	w.cacheSet(c)
	return c, true
}

func (w *partition) cacheSet(c Change) {
	if len(w.cache) >= maxCache {
		clear(w.cache)
	}
	w.cache[c.Key] = c
}

// apply decides records (all of this partition, in offset order) and the due
// timers at now, producing every output into the open transaction.
func (w *partition) apply(records []*kgo.Record, now schemas.Millis) error {
	if w.proc.cfg.Role == RoleCart {
		return w.applyCart(records, now)
	}
	core := &w.proc.core
	backlog := 0
	for w.expiredInTxn < w.proc.cfg.MaxExpiriesPerTransaction &&
		(w.expiredInTxn < minExpiriesPerTransaction || time.Now().Before(w.timerDeadline)) {
		t, ok := w.timers.due(now)
		if !ok {
			break
		}
		w.expiredInTxn++
		out := core.Expire(w, w.p, t.sku, t.id, now)
		if len(out.Results) > 0 && t.at < now-1000 {
			backlog++ // a hold that stayed active more than 1 s past expires_at
		}
		w.emit(out, nil)
		w.proc.metrics.expired.Inc()
	}
	w.proc.metrics.backlog.WithLabelValues(partLabel(w.p)).Set(float64(backlog))
	if now >= w.sweep.next {
		w.sweepStep(now)
	}
	for _, r := range records {
		w.handleGuarded(r, now, w.handle)
	}
	w.updateDue()
	return w.err
}

// updateDue publishes the earliest expiry or sweep to the main loop.
func (w *partition) updateDue() {
	d := w.sweep.next
	if t := w.timers.next(); t > 0 && t < d {
		d = t
	}
	w.nextDue.Store(int64(max(d, 1)))
}

func (w *partition) handle(r *kgo.Record, now schemas.Millis) {
	proc := w.proc
	if len(r.Key) == 0 {
		w.deadLetter(r, "empty record key", nil, now)
		return
	}
	cmd, err := schemas.DecodeCommand(r.Value, proc.cfg.MaxCommandBytes)
	var ue *schemas.UndecodableError
	if errors.As(err, &ue) {
		w.deadLetter(r, ue.Msg, ue, now)
		return
	}
	if owner := topics.Partition(r.Key, proc.partitions); owner != w.p {
		w.forward(r, owner)
		return
	}
	var fe *schemas.FieldError
	errors.As(err, &fe)
	if !r.Timestamp.IsZero() {
		proc.metrics.processLatency.Observe(max(0, now.Time().Sub(r.Timestamp).Seconds()))
	}
	out := proc.core.Apply(w, Input{Key: string(r.Key), Command: cmd, FieldErr: fe, Partition: w.p, Offset: r.Offset}, now)
	w.emit(out, r)
	if cmd.ReplyTo == schemas.ReplyToCart && cmd.CartID != "" {
		w.replyToCart(cmd.CommandID, cmd.CartID, out.Results)
	}
}

// emit records the changes as pending and produces results and changelog
// records; src is the command record (nil for timers and sweeps).
func (w *partition) emit(out Outputs, src *kgo.Record) {
	proc := w.proc
	for i := range out.Results {
		res := &out.Results[i]
		v := schemas.AppendResult(make([]byte, 0, 512), res)
		rec := &kgo.Record{Topic: proc.io.Results, Partition: w.p, Key: []byte(res.SKU), Value: v}
		if res.CommandID != "" {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: HeaderCommandID, Value: []byte(res.CommandID)})
		}
		if src != nil && res.CommandID != "" {
			for _, h := range src.Headers {
				if h.Key == HeaderTraceparent {
					rec.Headers = append(rec.Headers, h)
				}
			}
		}
		w.produce(rec, w.promise)
		proc.metrics.result(res)
		if res.Type == schemas.TypeExpired && res.Reservation != nil {
			proc.metrics.expiryLag.Observe(max(0, res.DecidedAt.Time().Sub(res.Reservation.ExpiresAt.Time()).Seconds()))
		}
	}
	for i := range out.Changes {
		c := &out.Changes[i]
		if !w.putChange(c) {
			return
		}
		if r := c.Reservation; r != nil {
			switch {
			case r.Reservation.Status == schemas.StatusActive:
				w.timers.add(r.Reservation.ExpiresAt, r.Reservation.SKU, r.Reservation.ReservationID)
				if r.Event == schemas.EventReserved {
					w.activeDelta++
				}
			case r.Event == schemas.EventReleased || r.Event == schemas.EventExpired || r.Event == schemas.EventCommitted:
				w.activeDelta--
			}
		}
		if s := c.Stock; s != nil {
			w.overPending[s.SKU] = s.Available < 0
		}
	}
}

// putChange records c as a pending write of the open transaction and produces
// its changelog record. It reports false (and keeps the error in w.err, which
// fails the transaction) when c cannot be encoded.
func (w *partition) putChange(c *Change) bool {
	v, err := EncodeChange(c)
	if err != nil {
		w.err = err
		return false
	}
	w.pending[c.Key] = *c
	w.raw[c.Key] = v
	w.produce(&kgo.Record{Topic: w.proc.io.Changelog, Partition: w.p, Key: []byte(c.Key), Value: v}, w.changelogPromise)
	return true
}

// produce produces r into the open transaction on behalf of this partition.
func (w *partition) produce(r *kgo.Record, promise func(*kgo.Record, error)) {
	w.wrote = true
	w.proc.produce(r, promise)
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

// deadLetter copies r unchanged to the DLQ with error headers and, when its key
// is a usable SKU, emits a rejected invalid_command result.
func (w *partition) deadLetter(r *kgo.Record, msg string, ue *schemas.UndecodableError, now schemas.Millis) {
	w.toDLQ(r, msg)
	if !schemas.ValidSKU(string(r.Key)) {
		return
	}
	res := schemas.Result{
		SKU:       string(r.Key),
		Outcome:   schemas.OutcomeRejected,
		Reason:    schemas.ReasonInvalidCommand,
		Message:   msg,
		Partition: w.p,
		Offset:    r.Offset,
		DecidedAt: now,
	}
	if ue != nil {
		res.CommandID = ue.CommandID
	}
	w.emit(Outputs{Results: []schemas.Result{res}}, r)
}

// toDLQ copies r unchanged to the DLQ with error headers.
func (w *partition) toDLQ(r *kgo.Record, msg string) {
	proc := w.proc
	hs := append(append([]kgo.RecordHeader(nil), r.Headers...),
		kgo.RecordHeader{Key: HeaderError, Value: []byte(msg)},
		kgo.RecordHeader{Key: HeaderSourceTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderSourcePart, Value: []byte(strconv.Itoa(int(r.Partition)))},
		kgo.RecordHeader{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
	)
	w.produce(&kgo.Record{Topic: proc.io.DLQ, Partition: w.p % proc.dlqPartitions, Key: r.Key, Value: r.Value, Headers: hs}, w.promise)
	proc.metrics.dlq.Inc()
	w.log.Debug("dead letter", "offset", r.Offset, "err", msg)
}

// forward re-produces a misrouted command to the partition its key hashes to,
// in the same transaction; it is decided there.
func (w *partition) forward(r *kgo.Record, owner int32) {
	proc := w.proc
	hs := append(append([]kgo.RecordHeader(nil), r.Headers...),
		kgo.RecordHeader{Key: HeaderForwardedFrom, Value: []byte(strconv.Itoa(int(r.Partition)) + "/" + strconv.FormatInt(r.Offset, 10))})
	w.produce(&kgo.Record{Topic: r.Topic, Partition: owner, Key: r.Key, Value: r.Value, Headers: hs, Timestamp: r.Timestamp}, w.promise)
	proc.metrics.forwarded.Inc()
}

// commit writes the committed transaction's changes and changelog offset to the
// store in one Badger write, then moves them into the cache.
func (w *partition) commit() error {
	w.timers.commit()
	next := w.offset
	if m := w.maxOff.Load(); m >= 0 {
		next = m + 1
	}
	if len(w.raw) > 0 || next != w.offset {
		if err := w.store.Commit(w.raw, next); err != nil {
			return err
		}
		w.offset = next
	}
	if time.Since(w.ownedAt) > ownedAtRefresh {
		if err := w.markOwned(); err != nil {
			return err
		}
	}
	for k, c := range w.pending {
		// Decided commands are read again only by a duplicate: leave them to
		// the store so they do not push stock and reservations out of the cache.
		if c.Command == nil {
			w.cacheSet(c)
		} else {
			delete(w.cache, k)
		}
		delete(w.pending, k)
	}
	clear(w.raw)
	w.poison.forgetBelow(w.poison.hi + 1)
	w.active += w.activeDelta
	for sku, over := range w.overPending {
		if over {
			w.oversold[sku] = true
		} else {
			delete(w.oversold, sku)
		}
	}
	for id, started := range w.sagaPending {
		if started > 0 {
			w.sagas[id] = started
		} else {
			delete(w.sagas, id)
		}
	}
	w.publishGauges()
	w.reset()
	return nil
}

func (w *partition) publishGauges() {
	l := partLabel(w.p)
	m := w.proc.metrics
	if m.sagasInFlight != nil {
		m.sagasInFlight.WithLabelValues(l).Set(float64(len(w.sagas)))
		var oldest schemas.Millis
		for _, started := range w.sagas {
			if oldest == 0 || started < oldest {
				oldest = started
			}
		}
		m.oldestSaga.WithLabelValues(l).Set(float64(oldest) / 1000) // 0: none
		return
	}
	m.active.WithLabelValues(l).Set(float64(w.active))
	m.oversold.WithLabelValues(l).Set(float64(len(w.oversold)))
}

// abort drops the aborted transaction's writes; its records will be fetched and
// decided again.
func (w *partition) abort() {
	w.timers.abort()
	clear(w.pending)
	clear(w.raw)
	w.reset()
	w.updateDue()
}

func (w *partition) reset() {
	w.poison.reset()
	w.expiredInTxn = 0
	w.activeDelta = 0
	clear(w.overPending)
	clear(w.sagaPending)
	w.maxOff.Store(-1)
	w.prodMu.Lock()
	w.prodErr = nil
	w.prodMu.Unlock()
	w.err = nil
}
