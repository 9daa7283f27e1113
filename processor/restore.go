package processor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/statestore"
)

type restoreDone struct {
	w   *partition
	err error
}

// StateDir returns the store folder of partition p under the state root.
func StateDir(root, changelog string, p int32) string {
	return filepath.Join(root, fmt.Sprintf("%s-%d", changelog, p))
}

// restore brings the partition's store up to the end of its changelog
// partition, then rebuilds the expiry timers from the restored state.
//
//   - An unreadable store, a store of another changelog topic (recreated topic),
//     a store ahead of the log (the log was lost or truncated) and a store behind
//     the log start are wiped and rebuilt in full, through a bulk load.
//   - Otherwise only the tail [store offset, end) is replayed.
//
// The end is the high watermark once no transaction is open on the changelog
// partition (last stable offset == high watermark): a previous owner's pending
// transaction must be resolved first, or its effects (and the input offsets it
// commits) could be missed.
func (w *partition) restore(ctx context.Context) error {
	_, err := w.restoreWith(ctx, nil)
	return err
}

// restoreStats is what one restore did.
type restoreStats struct {
	// from and end bound the changelog offsets replayed: [from, end).
	from, end int64
	// full says why the store was rebuilt in full ("" for a tail replay, or
	// none when the store was current).
	full string
	// fresh: the store had nothing (new, wiped, or empty) and the whole log
	// was replayed into it.
	fresh   bool
	records int64 // data records applied
	took    time.Duration
}

// restoreHooks observe one restore (Rebuild's progress); nil is none.
type restoreHooks struct {
	// plan is called once the range to replay is known, before reading.
	plan func(from, end int64, full string)
	// pos is called with the next changelog offset to read, after every
	// fetch and once at the end (pos == end).
	pos func(next int64)
	// storeOnly: the store is all that is wanted (Rebuild): no expiry
	// schedule, gauges or key filter are built.
	storeOnly bool
}

// restoreWith is restore, observed by h (may be nil).
func (w *partition) restoreWith(ctx context.Context, h *restoreHooks) (st restoreStats, err error) {
	env := w.env
	start := time.Now()
	dir := StateDir(env.cfg.StateDir, env.io.Changelog, w.p)
	defer func() {
		if errors.Is(err, statestore.ErrCorrupt) {
			// The store opened but could not be read (a value log hole a
			// machine crash left, say): the next attempt wipes it and restores
			// in full, instead of failing the same way again.
			w.log.Warn("state store unreadable during the restore: it is wiped at the next attempt", "dir", dir, "err", err)
			markWipe(dir)
		}
	}()
	if wipeMarked(dir) {
		w.log.Warn("state store marked unreadable: wiping it and restoring from the changelog", "dir", dir)
		env.metrics.storeWipes.Inc()
		if err := statestore.Remove(dir); err != nil {
			return st, err
		}
	}
	var store *statestore.Store
	store, err = statestore.Open(dir, env.storeOpts)
	if errors.Is(err, statestore.ErrCorrupt) {
		w.log.Warn("state store unreadable: wiping it and restoring from the changelog", "dir", dir, "err", err)
		env.metrics.storeWipes.Inc()
		if err := statestore.Remove(dir); err != nil {
			return st, err
		}
		store, err = statestore.Open(dir, env.storeOpts)
	}
	if err != nil {
		return st, err
	}
	w.store = store

	var logStart, end, hwm int64
	if w.standby {
		// A standby does not wait for the owner's open transaction to end
		// (under load one is almost always open): it catches up to the last
		// stable offset, then tails the log.
		logStart, end, hwm, err = env.changelog.stableBounds(ctx, w.p)
	} else {
		logStart, end, err = env.changelog.bounds(ctx, w.p, w.log)
		hwm = end
	}
	if err != nil {
		return st, err
	}
	off, err := store.Offset()
	if err != nil {
		return st, err
	}
	if w.standby && off > end && off <= hwm {
		end = off // committed state past an open transaction's first record: nothing to catch up now
	}
	tid, err := store.Meta(statestore.MetaTopicID)
	if err != nil {
		return st, err
	}
	ownedAt, owned, err := store.OwnedAt()
	if err != nil {
		return st, err
	}
	away := time.Since(ownedAt)
	full := ""
	switch {
	case tid != nil && !bytes.Equal(tid, env.layout.changelogID):
		full = "the store belongs to another changelog topic (recreated?)"
	case off > end:
		full = fmt.Sprintf("the store (offset %d) is ahead of the changelog (end %d): the log was lost or truncated", off, end)
	case off < logStart:
		full = fmt.Sprintf("the store (offset %d) is behind the changelog start %d", off, logStart)
	case tid == nil && off > 0:
		full = "the store has no changelog topic id"
	case off > 0 && off < end && !owned:
		full = "the store does not say when it was last owned: tombstones in its tail may have been compacted away"
	case off > 0 && off < end && away > time.Duration(float64(env.layout.deleteRetention)*StaleStoreFraction):
		// Compaction may have removed tombstones that others wrote since: a
		// tail replay would keep the entities they deleted. (Kafka never moves
		// the log start on compaction, so the case above does not catch it.)
		full = fmt.Sprintf("the store was last owned %s ago, more than %.0f%% of the changelog's delete.retention.ms (%s): tombstones written since may have been compacted away",
			away.Round(time.Second), 100*StaleStoreFraction, env.layout.deleteRetention)
	}
	st.from, st.end, st.full, st.fresh = min(off, end), end, full, off == 0
	if full != "" {
		st.from, st.fresh = logStart, true
	}
	if h != nil && h.plan != nil {
		h.plan(st.from, st.end, full)
	}
	track := newRestoreTracker(w.log, st.from, end, h)
	var n int64
	if full != "" {
		w.log.Warn("wiping state and restoring in full", "reason", full, "from", logStart, "to", end)
		env.metrics.storeWipes.Inc()
		n, err = w.restoreFull(ctx, logStart, end, track)
	} else if off < end {
		w.log.Info("restoring changelog tail", "from", off, "to", end)
		n, err = w.restoreTail(ctx, off, end, track)
	}
	st.records = n
	if err != nil {
		return st, err
	}
	track.at(end, n)
	if err := store.SetMeta(statestore.MetaTopicID, env.layout.changelogID); err != nil {
		return st, err
	}
	if err := w.markOwned(time.Now()); err != nil {
		return st, err
	}
	removeReleased(dir)
	if w.offset, err = store.Offset(); err != nil {
		return st, err
	}
	w.stored = w.offset
	decides := !w.standby && (h == nil || !h.storeOnly)
	if decides { // a standby decides nothing: no timers, no gauges
		if err := w.role.restored(); err != nil {
			return st, err
		}
		w.updateDue()
	}
	if decides { // a standby reads nothing: no key filter
		if err := w.keys.build(store); err != nil {
			return st, err
		}
	}
	took := time.Since(start)
	st.took = took
	if !w.standby { // the restore metrics are the owners'
		env.metrics.restoreSeconds.WithLabelValues(partLabel(w.p)).Set(took.Seconds())
		env.metrics.restoreDuration.WithLabelValues(restoreKind(st)).Observe(took.Seconds())
	}
	w.log.Info("partition restored", "standby", w.standby, "records", n, "took", took.Round(time.Millisecond),
		"records_per_s", int64(float64(n)/max(took.Seconds(), 1e-3)), "offset", w.offset, "key_filter", w.keys.on())
	return st, nil
}

// StaleStoreFraction is how much of the changelog's delete.retention.ms a
// store may have been away (not owned by this instance) before it is rebuilt in
// full instead of replaying its tail.
const StaleStoreFraction = 0.5

// markOwned records in the store that it mirrored its changelog partition as
// its owner at t.
func (w *partition) markOwned(t time.Time) error {
	if err := w.store.SetOwnedAt(t); err != nil {
		return err
	}
	w.ownedAt = t
	return nil
}

// restoreFull reads [from, end) into memory (last value per key) and bulk-loads it.
func (w *partition) restoreFull(ctx context.Context, from, end int64, track *restoreTracker) (int64, error) {
	state := make(map[string][]byte)
	n, err := w.env.changelog.read(ctx, w.p, from, end, track, func(r *kgo.Record) error {
		if r.Value == nil {
			delete(state, string(r.Key))
		} else {
			state[string(r.Key)] = r.Value
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	return n, w.store.Load(state, end, map[string][]byte{statestore.MetaTopicID: w.env.layout.changelogID})
}

// restoreTail applies [from, end) in coalesced chunks of one Badger write each.
func (w *partition) restoreTail(ctx context.Context, from, end int64, track *restoreTracker) (int64, error) {
	chunk := make(map[string][]byte)
	var last int64
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		if err := w.store.Commit(chunk, last+1); err != nil {
			return err
		}
		clear(chunk)
		return nil
	}
	n, err := w.env.changelog.read(ctx, w.p, from, end, track, func(r *kgo.Record) error {
		chunk[string(r.Key)] = r.Value
		last = r.Offset
		if len(chunk) >= 10_000 {
			return flush()
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	if err := flush(); err != nil {
		return n, err
	}
	// The tail may end with control records (transaction markers): the store
	// reflects the log up to end.
	return n, w.store.Commit(nil, end)
}

// changelogReader reads a role's changelog topic: its bounds and its records.
type changelogReader struct {
	cfg     *Config
	topic   string
	adm     *kadm.Client
	metrics *metrics
	// standby: a standby's reader, whose records count in
	// standby_records_total, not in the restore metrics.
	standby bool
}

// changelogBounds waits until changelog partition p has no open transaction and
// returns its start offset and end (high watermark).
func (c *changelogReader) bounds(ctx context.Context, p int32, log interface {
	Info(string, ...any)
}) (int64, int64, error) {
	t := c.topic
	waitLogged := time.Now()
	for {
		starts, err := c.adm.ListStartOffsets(ctx, t)
		if err == nil {
			err = starts.Error()
		}
		if err != nil {
			return 0, 0, fmt.Errorf("list start offsets of %s: %w", t, err)
		}
		ends, err := c.adm.ListEndOffsets(ctx, t)
		if err == nil {
			err = ends.Error()
		}
		if err != nil {
			return 0, 0, fmt.Errorf("list end offsets of %s: %w", t, err)
		}
		stable, err := c.adm.ListCommittedOffsets(ctx, t)
		if err == nil {
			err = stable.Error()
		}
		if err != nil {
			return 0, 0, fmt.Errorf("list stable offsets of %s: %w", t, err)
		}
		s, _ := starts.Lookup(t, p)
		e, _ := ends.Lookup(t, p)
		l, _ := stable.Lookup(t, p)
		if l.Offset >= e.Offset {
			return s.Offset, e.Offset, nil
		}
		if time.Since(waitLogged) > 5*time.Second {
			log.Info("waiting for an open transaction on the changelog to end before restoring",
				"stable", l.Offset, "end", e.Offset)
			waitLogged = time.Now()
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stableBounds returns changelog partition p's start offset, last stable
// offset and high watermark, without waiting for an open transaction.
func (c *changelogReader) stableBounds(ctx context.Context, p int32) (start, stable, hwm int64, err error) {
	t := c.topic
	starts, err := c.adm.ListStartOffsets(ctx, t)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return 0, 0, 0, fmt.Errorf("list start offsets of %s: %w", t, err)
	}
	ends, err := c.adm.ListEndOffsets(ctx, t)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, 0, 0, fmt.Errorf("list end offsets of %s: %w", t, err)
	}
	stables, err := c.adm.ListCommittedOffsets(ctx, t)
	if err == nil {
		err = stables.Error()
	}
	if err != nil {
		return 0, 0, 0, fmt.Errorf("list stable offsets of %s: %w", t, err)
	}
	s, _ := starts.Lookup(t, p)
	e, _ := ends.Lookup(t, p)
	l, _ := stables.Lookup(t, p)
	return s.Offset, min(l.Offset, e.Offset), e.Offset, nil
}

// readChangelog calls fn for every committed data record of changelog partition
// p in [from, end), in offset order, and returns how many it read.
// track (may be nil) learns the position after every fetch: it logs the
// progress and reports it to Rebuild.
func (c *changelogReader) read(ctx context.Context, p int32, from, end int64, track *restoreTracker,
	fn func(*kgo.Record) error) (int64, error) {
	if from >= end {
		return 0, nil
	}
	t := c.topic
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(c.cfg.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{t: {p: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), // so that a tail of markers is seen and the end is reached
		kgo.FetchMaxPartitionBytes(16 << 20),
	}, c.cfg.KafkaOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, fmt.Errorf("restore client: %w", err)
	}
	defer cl.Close()
	remaining := c.metrics.restoreRemaining.WithLabelValues(partLabel(p))
	var restored prometheus.Counter = c.metrics.restored.WithLabelValues(partLabel(p))
	if c.standby {
		remaining = c.metrics.standbyLag.WithLabelValues(partLabel(p))
		restored = c.metrics.standbyRecords
	}
	var n int64
	next := from
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return n, err
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return n, fmt.Errorf("read changelog partition %d: %w", p, ferr)
		}
		done := false
		var cerr error
		fs.EachRecord(func(r *kgo.Record) {
			if done || cerr != nil {
				return
			}
			if r.Offset >= end {
				done = true
				return
			}
			if !r.Attrs.IsControl() {
				n++
				cerr = fn(r)
			}
			if r.Offset >= end-1 {
				done = true
			}
			next = r.Offset + 1
			remaining.Set(float64(end - 1 - r.Offset))
		})
		if cerr != nil {
			return n, cerr
		}
		if done {
			remaining.Set(0)
			restored.Add(float64(n))
			return n, nil
		}
		track.at(next, n)
	}
}

// restoreLogEvery is how often a long restore logs its progress.
const restoreLogEvery = 5 * time.Second

// restoreTracker follows one partition's restore: every restoreLogEvery it
// logs how far it got, with a percentage and the time left at the rate so
// far, and it reports every position to the restore's hooks.
type restoreTracker struct {
	log       interface{ Info(string, ...any) }
	from, end int64
	hooks     *restoreHooks
	now       func() time.Time
	started   time.Time
	lastLog   time.Time
}

func newRestoreTracker(log interface{ Info(string, ...any) }, from, end int64, h *restoreHooks) *restoreTracker {
	t := time.Now()
	return &restoreTracker{log: log, from: from, end: end, hooks: h, now: time.Now, started: t, lastLog: t}
}

// at notes that the restore reached changelog offset next (the next to read)
// having applied n data records. A nil tracker does nothing.
func (t *restoreTracker) at(next, n int64) {
	if t == nil {
		return
	}
	if t.hooks != nil && t.hooks.pos != nil {
		t.hooks.pos(next)
	}
	now := t.now()
	if now.Sub(t.lastLog) < restoreLogEvery || next >= t.end {
		return
	}
	t.lastLog = now
	done, total := next-t.from, t.end-t.from
	elapsed := now.Sub(t.started)
	attrs := []any{"records", n, "offset", next, "end", t.end,
		"percent", math.Round(1000*float64(done)/float64(max(total, 1))) / 10,
		"elapsed", elapsed.Round(time.Second)}
	if left, ok := eta(elapsed, done, total); ok {
		attrs = append(attrs, "eta", left.Round(time.Second))
	} else {
		attrs = append(attrs, "eta", "unknown")
	}
	t.log.Info("restoring", attrs...)
}

// eta estimates the time left of an operation that did done of total units in
// elapsed, at the rate so far; false when nothing is done yet.
func eta(elapsed time.Duration, done, total int64) (time.Duration, bool) {
	if done >= total {
		return 0, true
	}
	if done <= 0 || elapsed <= 0 {
		return 0, false
	}
	return time.Duration(float64(elapsed) * float64(total-done) / float64(done)), true
}

// restoreKind labels a restore in the duration histogram: full (the whole
// log into a new, empty or wiped store), tail (the changelog after the
// store's offset) or current (nothing to read).
func restoreKind(st restoreStats) string {
	switch {
	case st.fresh && st.from < st.end:
		return "full"
	case st.from < st.end:
		return "tail"
	default:
		return "current"
	}
}
