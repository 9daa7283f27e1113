package processor

import (
	"bytes"
	"encoding/json"
	"time"

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
		at, ok := trailingUpdatedAt(val)
		if !ok {
			var e struct {
				UpdatedAt schemas.Millis `json:"updated_at"`
			}
			if err := json.Unmarshal(val, &e); err != nil {
				w.log.Warn("sweep: undecodable state entry", "key", key, "err", err)
				return nil
			}
			at = e.UpdatedAt
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

// updatedAtTail is how every entity value the processor writes ends: its
// appenders (schemas.Append*Entity, cart.AppendEntity/AppendDecided) write
// updated_at last, in schemas.TimeLayout.
var updatedAtTail = []byte(`"updated_at":"`)

// trailingUpdatedAt reads the updated_at an entity value ends with, without
// decoding the rest; false when the value does not end that way (then the
// caller decodes it).
func trailingUpdatedAt(val []byte) (schemas.Millis, bool) {
	n := len(updatedAtTail) + len(schemas.TimeLayout) + len(`"}`)
	if len(val) < n {
		return 0, false
	}
	tail := val[len(val)-n:]
	if !bytes.HasPrefix(tail, updatedAtTail) || !bytes.HasSuffix(tail, []byte(`"}`)) {
		return 0, false
	}
	t, err := time.Parse(schemas.TimeLayout, string(tail[len(updatedAtTail):n-2]))
	if err != nil {
		return 0, false
	}
	return schemas.MillisOf(t), true
}
