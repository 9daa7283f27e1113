package processor

import (
	"github.com/reservations/reservations/schemas"
)

// sweeper walks a partition's store in steps, tombstoning decided commands and
// terminal reservations that are past the dedupe window, so that the changelog
// (and the store) stay bounded without a per-entity timer in memory.
type sweeper struct {
	cursor string
	next   schemas.Millis
}

// sweepStep scans the next SweepBatch keys of the store and tombstones what
// the role forgets (entries past its window that the core agrees to drop).
func (w *partition) sweepStep(now schemas.Millis) {
	env := w.env
	horizon := now - schemas.Millis(env.role.sweepWindow().Milliseconds())
	var tombs []Change
	next, err := w.store.ScanFrom(w.sweep.cursor, env.cfg.SweepBatch, func(key string, val []byte) error {
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
		if t, ok := w.role.forget(key, val, now); ok {
			tombs = append(tombs, t)
		}
		return nil
	})
	if err != nil {
		w.err = err
		return
	}
	w.sweep.cursor = next
	w.sweep.next = now + schemas.Millis(env.cfg.SweepInterval.Milliseconds())
	for i := range tombs {
		if !w.putChange(&tombs[i]) {
			return
		}
	}
	env.metrics.tombstoned.Add(float64(len(tombs)))
}
