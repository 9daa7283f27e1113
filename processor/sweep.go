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

func (w *partition) sweepStep(now schemas.Millis) {
	cfg := &w.proc.cfg
	core := &w.proc.core
	var tombs []Change
	next, err := w.store.ScanFrom(w.sweep.cursor, cfg.SweepBatch, func(key string, val []byte) error {
		kind := schemas.KeyKind(key)
		if kind != schemas.CommandPrefix && kind != schemas.ReservationPrefix {
			return nil
		}
		c, err := DecodeChange(key, val)
		if err != nil {
			w.log.Warn("sweep: undecodable state entry", "key", key, "err", err)
			return nil
		}
		var t Change
		var ok bool
		if c.Command != nil {
			t, ok = core.ForgetCommand(w, c.Command.CommandID, now)
		} else if r := c.Reservation; r != nil && r.Reservation.Status != schemas.StatusActive {
			t, ok = core.ForgetReservation(w, r.Reservation.SKU, r.Reservation.ReservationID, now)
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
		w.emit(Outputs{Changes: tombs}, nil)
		w.proc.metrics.tombstoned.Add(float64(len(tombs)))
	}
}
