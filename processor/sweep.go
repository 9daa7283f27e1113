package processor

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"

	"github.com/reservations/reservations/processor/cart"
	"github.com/reservations/reservations/schemas"
)

// sweeper walks a partition's store in steps, tombstoning decided commands and
// terminal reservations that are past the dedupe window, so that the changelog
// (and the store) stay bounded without a per-entity timer in memory.
type sweeper struct {
	cursor string
	next   schemas.Millis
}

// sweepEntry is the little of an entity the sweep needs to pre-select
// candidates; the decision itself is the core's (ForgetCommand/Reservation).
type sweepEntry struct {
	CommandID   string `json:"command_id"`
	Reservation *struct {
		ReservationID string `json:"reservation_id"`
		SKU           string `json:"sku"`
		Status        string `json:"status"`
	} `json:"reservation"`
	UpdatedAt schemas.Millis `json:"updated_at"`
}

func (w *partition) sweepStep(now schemas.Millis) {
	cfg := &w.proc.cfg
	core := &w.proc.core
	window := core.Rules.DedupeWindow
	if w.proc.cfg.Role == RoleCart {
		window = cfg.CartRules.DedupeWindow
	}
	horizon := now - schemas.Millis(window.Milliseconds())
	var tombs []Change
	next, err := w.store.ScanFrom(w.sweep.cursor, cfg.SweepBatch, func(key string, val []byte) error {
		kind := schemas.KeyKind(key)
		if w.proc.cfg.Role == RoleCart {
			kind = cart.KeyKind(key)
			if kind == "" {
				return nil
			}
		} else if kind != schemas.CommandPrefix && kind != schemas.ReservationPrefix {
			return nil
		}
		if at, ok := trailingUpdatedAt(val); ok && at > horizon {
			return nil // still within the window: most entries, so skip decoding them
		}
		var e sweepEntry
		if err := json.Unmarshal(val, &e); err != nil {
			w.log.Warn("sweep: undecodable state entry", "key", key, "err", err)
			return nil
		}
		if e.UpdatedAt > horizon {
			return nil // still within the window
		}
		var t Change
		var ok bool
		if kind == cart.DecidedPrefix || kind == cart.CartPrefix {
			var ct cart.Change
			if kind == cart.DecidedPrefix {
				ct, ok = w.proc.cartCore.Forget(cartState{w}, e.CommandID, now)
			} else {
				// An idle cart untouched for the window: drop its long expired holds.
				ct, ok = w.proc.cartCore.Prune(cartState{w}, strings.TrimPrefix(key, cart.CartPrefix), now)
			}
			if ok {
				t = Change{Key: ct.Key, Cart: &ct}
			}
		} else if kind == schemas.CommandPrefix {
			t, ok = core.ForgetCommand(w, e.CommandID, now)
		} else if r := e.Reservation; r != nil && r.Status != schemas.StatusActive {
			t, ok = core.ForgetReservation(w, r.SKU, r.ReservationID, now)
		}
		if ok {
			tombs = append(tombs, t)
		}
		return nil
	})
	if err != nil {
		w.err = err
		return
	}
	w.sweep.cursor = next
	w.sweep.next = now + schemas.Millis(cfg.SweepInterval.Milliseconds())
	if len(tombs) > 0 {
		if w.proc.cfg.Role == RoleCart {
			for i := range tombs {
				if !w.putChange(&tombs[i]) {
					return
				}
			}
		} else {
			w.emit(Outputs{Changes: tombs}, nil)
		}
		w.proc.metrics.tombstoned.Add(float64(len(tombs)))
	}
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
