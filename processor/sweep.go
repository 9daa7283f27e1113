package processor

import (
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/schemas"
)

// sweeper walks a partition's store in steps, tombstoning decided commands and
// terminal reservations that are past the dedupe window, so that the changelog
// (and the store) stay bounded without a per-entity timer in memory.
type sweeper struct {
	cursor string
	next   schemas.Millis
}

// sweepPassesPerWindow is how many passes over the whole store the sweep
// starts at most per dedupe window.
const sweepPassesPerWindow = 24

// sweepStep scans the next SweepBatch keys of the store and tombstones what
// the role forgets (entries past its window that the core agrees to drop),
// measuring the window at clock (see streamClock); the next step is due a
// SweepInterval after now.
func (w *partition) sweepStep(now, clock schemas.Millis) {
	env := w.env
	w.sweep.next = now + schemas.Millis(env.cfg.SweepInterval.Milliseconds())
	if clock <= 0 {
		return // the partition's stream time is not known yet
	}
	horizon := clock - schemas.Millis(env.role.sweepWindow().Milliseconds())
	var tombs []Change
	// The store must have everything committed before the scan: forget takes
	// the scanned values for committed state (TestSweepSeesWhatIsNotStoredYet).
	if err := w.syncStore(); err != nil {
		w.storeFailed(err)
		w.err = err
		return
	}
	if w.sweep.cursor == "" {
		w.keys.passStart()
	}
	next, err := w.store.ScanFrom(w.sweep.cursor, env.cfg.SweepBatch, func(key string, val []byte) error {
		w.keys.seen(key)
		at, ok := schemas.UpdatedAt(val) // from the value's end: no decoding
		if !ok {
			c, err := schemas.DecodeChange(key, val)
			if err != nil {
				w.log.Warn("sweep: undecodable state entry", "key", key, "err", err)
				return nil
			}
			at = c.UpdatedAt()
		}
		if at > horizon {
			return nil // still within the window: most entries
		}
		if t, ok := w.role.forget(key, val, clock); ok {
			tombs = append(tombs, t)
		}
		return nil
	})
	if err != nil {
		w.err = err
		return
	}
	w.sweep.cursor = next
	if next == "" {
		// A pass over the whole store ended. Entries become due a window after
		// their decision, so the next pass can wait a 24th of the window (an
		// hour by default): a store that fits in a few steps is not read again
		// and again (it cost the processor an eighth of its CPU at load).
		w.keys.passEnd()
		w.sweep.next = now + max(schemas.Millis(env.cfg.SweepInterval.Milliseconds()), schemas.Millis(env.role.sweepWindow().Milliseconds())/sweepPassesPerWindow)
	}
	for i := range tombs {
		w.putChange(&tombs[i])
	}
	env.metrics.tombstoned.Add(float64(len(tombs)))
}

// streamGrace is how long a partition that has consumed nothing since it
// started waits before it takes itself to be caught up (see streamClock).
const streamGrace = schemas.Millis(10_000)

// streamClock is the time a partition's sweep measures the dedupe window
// against. A decided command may only be forgotten once no retry produced
// within the window can still be waiting unread in the partition, so the sweep
// runs on stream time (as Kafka Streams' windows do): the newest record
// timestamp consumed, moved on by the processing time since it was consumed,
// never past now and never more than two windows behind it. Working through a
// backlog, records are consumed batch after batch and the clock stays within
// one batch gap of the stream time; caught up and idle, it moves with the
// processing clock. Without it a backlog longer than the window (an outage, a
// slow restore) let the sweep delete decisions whose retries were still
// queued, and those were decided again.
//
// Limits (the stream time lives in memory, not in the store): a partition
// that starts and gets no record within streamGrace, or one that stops
// consuming while it runs (its fetches failing while its process stays up),
// moves on with the processing clock and may forget decisions a backlog
// behind it still needs; a record stamped ahead of the clock counts as now
// (ignored); producers whose clocks lag hold the sweep back by at most two
// windows (holdback), so storage stays bounded.
//
// (The fetch's lag cannot tell a backlog from the tail of transaction markers
// and aborted batches a transactional topic ends with, so it is not used.)
type streamClock struct {
	newest schemas.Millis // newest record timestamp consumed, 0: none yet
	at     schemas.Millis // processing time when newest was consumed
	since  schemas.Millis // processing time of the partition's first job
}

// observe advances the stream time past records (after they were decided);
// a timestamp ahead of now is ignored.
func (s *streamClock) observe(records []*kgo.Record, now schemas.Millis) {
	if s.since == 0 {
		s.since = now
	}
	for _, r := range records {
		if ts := schemas.MillisOf(r.Timestamp); ts > s.newest && ts <= now {
			s.newest, s.at = ts, now
		}
	}
	if len(records) > 0 && s.newest > 0 {
		s.at = now // the stream was read up to here just now
	}
}

// clock returns the sweep's time at now: 0 (sweep nothing) while nothing was
// consumed for less than streamGrace since the partition started (a backlog
// would show within it), then now; otherwise the stream time moved on by the
// processing time since the last records were consumed, never past now.
func (s *streamClock) clock(now, holdback schemas.Millis) schemas.Millis {
	if s.newest == 0 {
		if s.since == 0 || now-s.since < streamGrace {
			return 0
		}
		return now
	}
	return max(min(now, s.newest+(now-s.at)), now-holdback)
}
