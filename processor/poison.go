package processor

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/schemas"
)

// Poison commands: a decision whose records the broker (or the client) rejects
// for what they are, not for a passing fault (too large, invalid), would abort
// its transaction every time it is retried, stalling every partition of the
// instance. Such a failure is isolated to its command and the command is
// answered instead with a rejected invalid_command result and a DLQ copy:
//
//  1. a transaction fails with a deterministic produce error: the partition
//     remembers the source offsets it handled in it (suspect);
//  2. in the retry, each suspect record is handled and flushed on its own; the
//     one whose records fail is marked poison and the transaction aborts again;
//  3. in the next retry, the poison record is dead-lettered without being
//     decided (nothing of its decision is applied).

// deterministicProduceErr reports whether a produce error will repeat for the
// same record.
func deterministicProduceErr(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidRecord)
}

// poisonState is a partition's memory of deterministic produce failures. It
// survives aborts (that is its point) and is cleared by commits.
type poisonState struct {
	suspectLo, suspectHi int64 // source offsets to isolate; lo > hi: none
	poison               map[int64]string
	refusals             map[int64]int // refusals of a poison offset the broker rejected too
	// lo and hi are the source offsets handled in the open transaction.
	lo, hi int64
}

func (s *poisonState) reset() { s.lo, s.hi = -1, -1 }

func (s *poisonState) suspect(off int64) bool { return off >= s.suspectLo && off <= s.suspectHi }

// handleGuarded handles r with handle, applying the poison rules above.
func (w *partition) handleGuarded(r *kgo.Record, now schemas.Millis, handle func(*kgo.Record, schemas.Millis)) {
	ps := &w.poison
	if ps.lo < 0 {
		ps.lo = r.Offset
	}
	ps.hi = r.Offset
	msg, poison := ps.poison[r.Offset]
	if !poison && !ps.suspect(r.Offset) {
		handle(r, now)
		return
	}
	if err := w.produceErr(); err != nil {
		return // the transaction already failed: isolate the rest in the next retry
	}
	if poison {
		w.refuse(r, msg, now)
	} else {
		handle(r, now)
	}
	if ps.suspect(r.Offset) {
		// Flush on its own to see whether this record's outputs are rejected.
		// A stop (revoke, shutdown) cancels the wait: the transaction aborts.
		w.seal()
		ctx, cancel := context.WithTimeout(w.ctx, 2*w.env.cfg.TransactionTimeout)
		err := w.env.flush(ctx)
		cancel()
		if err == nil {
			err = w.produceErr()
		}
		if err != nil && deterministicProduceErr(err) {
			if poison {
				ps.refusals[r.Offset]++ // even the refusal is rejected: refuse with less
			} else {
				if ps.poison == nil {
					ps.poison, ps.refusals = make(map[int64]string), make(map[int64]int)
				}
				ps.poison[r.Offset] = err.Error()
			}
			w.log.Warn("found the command whose decision the broker rejects; it is refused in the retry",
				"offset", r.Offset, "refusals_rejected", ps.refusals[r.Offset], "err", err)
		}
	}
	if r.Offset >= ps.suspectHi {
		ps.suspectLo, ps.suspectHi = 0, -1
	}
}

// refuse answers a poison record without deciding it. If the broker rejected
// a refusal already (its DLQ copy is too large, say), the copy goes without
// the value (header value_dropped); after that, the record is skipped with an
// error log, so that the partition never stalls on it.
func (w *partition) refuse(r *kgo.Record, msg string, now schemas.Millis) {
	w.env.metrics.poison.Inc()
	switch w.poison.refusals[r.Offset] {
	case 0:
		w.log.Error("refusing a command whose decision the broker rejects", "offset", r.Offset, "err", msg)
		w.role.refuse(r, "its decision cannot be written: "+msg, now)
	case 1:
		w.log.Error("refusing a command whose decision the broker rejects, without its value in the DLQ copy", "offset", r.Offset, "err", msg)
		w.dropValue = true
		w.role.refuse(r, "its decision cannot be written: "+msg, now)
		w.dropValue = false
	default:
		w.log.Error("skipping a command whose decision and refusal the broker both reject: it gets no result",
			"offset", r.Offset, "err", msg)
	}
}

// noteProduceFailure is called by the main loop when a transaction aborts
// because of err on this partition: a deterministic error makes the source
// records of the transaction suspects for the retry.
func (w *partition) noteProduceFailure(err error) {
	if !deterministicProduceErr(err) {
		return
	}
	ps := &w.poison
	if ps.lo < 0 {
		w.log.Error("a transaction of timers and sweeps only was rejected by the broker", "err", err)
		return
	}
	ps.suspectLo, ps.suspectHi = ps.lo, ps.hi
	w.log.Warn("the broker rejected a record of this transaction: isolating its commands in the retry",
		"from", ps.lo, "to", ps.hi, "err", err)
}

// forgetPoison drops poison marks below next (committed).
func (s *poisonState) forgetBelow(next int64) {
	for off := range s.poison {
		if off < next {
			delete(s.poison, off)
			delete(s.refusals, off)
		}
	}
}
