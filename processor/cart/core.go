package cart

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/reservations/reservations/schemas"
)

// Events of the cart entity (the changelog's "event" of cart/<cart_id>).
const (
	EventQueued   = "queued"   // a cart command waits for the running saga
	EventStarted  = "started"  // a saga started: its first per-SKU commands were emitted
	EventRecorded = "recorded" // a line result was recorded; other lines are still pending
	EventAdvanced = "advanced" // the saga moved to its next phase
	EventFinished = "finished" // the saga ended with its cart result
	EventPruned   = "pruned"   // holds long past their expiry were dropped
	EventRerouted = "rerouted" // a re-sent cart command in progress named another reply route
)

// LineCommandID is the command id of the per-SKU command of one line of a cart
// command's saga in one phase: "cart-" and 32 hex characters of the SHA-256 of
// the fields, NUL-separated. It is deterministic, so a re-run of the same step
// produces the same id and the SKU processor decides it only once.
func LineCommandID(cartID, cartCommandID, phase, sku, reservationID string) string {
	h := sha256.New()
	for i, f := range [...]string{cartID, cartCommandID, phase, sku, reservationID} {
		if i > 0 {
			h.Write([]byte{0})
		}
		h.Write([]byte(f))
	}
	var sum [sha256.Size]byte
	return "cart-" + hex.EncodeToString(h.Sum(sum[:0]))[:32]
}

// phaseTypes is the per-SKU command type of each phase.
var phaseTypes = map[string]string{
	PhaseReserve:    schemas.TypeReserve,
	PhaseCompensate: schemas.TypeRelease,
	PhaseRelease:    schemas.TypeRelease,
	PhasePrepare:    schemas.TypePrepare,
	PhaseUnprepare:  schemas.TypeUnprepare,
	PhaseCommit:     schemas.TypeCommit,
}

// Apply decides one record of the cart-commands topic against st at time now:
// a cart command (in.Command) or a per-SKU decision routed back to the cart
// (in.LineResult). An input that is neither produces nothing.
//
// A cart command produced (in.Produced, else now) within the dedupe window of
// its decision gets its stored result again (duplicate); one that the cart's saga runs or queues gets nothing (its
// one result comes when it is done). An invalid one is rejected at once; one
// of a busy cart waits in the cart's queue (cart_busy beyond Rules.MaxQueue
// commands or Rules.MaxQueuedLines lines); otherwise its saga starts, unless
// it is a cart.reserve whose lines would take the cart over Rules.MaxHolds
// holds (cart_full, checked when the saga would start, after pruning). A line
// result advances the saga only when it is the decision on a pending line of
// the current phase (matched by LineCommandID); anything else (stale,
// duplicate) is ignored without output.
// The cart result is emitted when the saga ends, after any compensation
// (release of what a rejected cart.reserve held, unprepare of what a rejected
// cart.commit prepared); the next queued command of the cart then starts in
// the same step. The cart's entity is written at most once per Apply, and
// tombstoned when it holds, runs and queues nothing.
func (c *Core) Apply(st State, in Input, now schemas.Millis) Outputs {
	switch {
	case in.Command != nil:
		return c.command(st, &in, now)
	case in.LineResult != nil:
		return c.lineResult(st, &in, now)
	}
	return Outputs{}
}

// Forget returns the tombstone of a decided cart command past the dedupe
// window (for the sweeper), or false when it is gone or still remembered.
func (c *Core) Forget(st State, commandID string, now schemas.Millis) (Change, bool) {
	if d, ok := st.Decision(commandID); ok && !c.remembered(d.UpdatedAt, now) {
		return Change{Key: DecidedKey(commandID)}, true
	}
	return Change{}, false
}

// Prune drops the holds of an idle cart (no saga) that expired more than the
// dedupe window ago (the SKU processor has forgotten them by then), for the
// sweeper: the new cart entity, or its tombstone when nothing is left; false
// when there is nothing to prune.
func (c *Core) Prune(st State, cartID string, now schemas.Millis) (Change, bool) {
	ent, ok := st.Cart(cartID)
	if !ok || ent.Saga != nil {
		return Change{}, false
	}
	r := c.newRun(st, cartID, now)
	if !r.prune() {
		return Change{}, false
	}
	r.touch(EventPruned, r.cart.CommandID)
	r.flush()
	return r.out.Changes[0], true
}

func (c *Core) window() time.Duration {
	if c.Rules.DedupeWindow <= 0 {
		return DefaultRules().DedupeWindow
	}
	return c.Rules.DedupeWindow
}

// producedAt is the instant a command's dedupe window is measured at: its
// record's timestamp, unless unknown or ahead of now.
func producedAt(produced, now schemas.Millis) schemas.Millis {
	if produced <= 0 || produced > now {
		return now
	}
	return produced
}

// remembered reports whether an instant is still within the dedupe window.
func (c *Core) remembered(at, now schemas.Millis) bool {
	return int64(now)-int64(at) < c.window().Milliseconds()
}

// run is one Apply: a working copy of the cart entity and the outputs.
type run struct {
	core  *Core
	st    State
	now   schemas.Millis
	out   Outputs
	cart  Entity // working copy (deep enough to mutate)
	had   bool   // the cart exists in st
	dirty bool   // cart differs from st
	event string
	cmdID string
}

func (c *Core) newRun(st State, cartID string, now schemas.Millis) *run {
	r := &run{core: c, st: st, now: now}
	ent, ok := st.Cart(cartID)
	if ok {
		r.cart, r.had = clone(ent), true
	} else {
		r.cart = Entity{CartID: cartID}
	}
	return r
}

// clone copies what the core mutates in place: the state's slices stay intact.
func clone(e Entity) Entity {
	e.Holds = append([]Hold(nil), e.Holds...)
	e.Queue = append([]Queued(nil), e.Queue...)
	if e.Saga != nil {
		s := *e.Saga
		s.Lines = append([]Line(nil), s.Lines...)
		e.Saga = &s
	}
	return e
}

func (c *Core) command(st State, in *Input, now schemas.Millis) Outputs {
	cmd := in.Command
	if d, ok := st.Decision(cmd.CommandID); ok && c.remembered(d.UpdatedAt, producedAt(in.Produced, now)) {
		res := d.Result
		res.Duplicate = true
		out := Outputs{Results: []schemas.CartResult{res}}
		if p, ok := cmd.Reply(); ok { // the re-sent command's own route
			out.Replies = []Reply{{Result: 0, Partition: p}}
		}
		return out
	}
	if ent, ok := st.Cart(in.Key); ok && busyWith(&ent, cmd.CommandID) {
		// Its one result comes when its saga is done, by the route of the
		// latest send that named one.
		return c.reroute(st, in, now)
	}
	r := c.newRun(st, in.Key, now)
	q := Queued{Command: *cmd, Partition: in.Partition, Offset: in.Offset}
	fe := in.FieldErr
	if fe == nil {
		fe = cmd.Validate()
	}
	switch {
	case fe != nil:
		r.decide(&q, schemas.OutcomeRejected, schemas.ReasonInvalidCommand, fe.Error(), nil)
	case cmd.CartID != in.Key:
		r.decide(&q, schemas.OutcomeRejected, schemas.ReasonInvalidCommand,
			fmt.Sprintf("cart_id %q != record key %q", cmd.CartID, in.Key), nil)
	case r.cart.Saga != nil && len(r.cart.Queue) >= c.maxQueue():
		r.decide(&q, schemas.OutcomeRejected, schemas.ReasonCartBusy,
			fmt.Sprintf("cart %s has %d cart commands waiting, the limit", in.Key, len(r.cart.Queue)), nil)
	case r.cart.Saga != nil && queuedLines(&r.cart)+len(cmd.Items) > c.maxQueuedLines():
		r.decide(&q, schemas.OutcomeRejected, schemas.ReasonCartBusy,
			fmt.Sprintf("cart %s has %d lines waiting in %d cart commands: %d more would exceed the limit of %d",
				in.Key, queuedLines(&r.cart), len(r.cart.Queue), len(cmd.Items), c.maxQueuedLines()), nil)
	case r.cart.Saga != nil:
		r.cart.Queue = append(r.cart.Queue, q)
		r.touch(EventQueued, cmd.CommandID)
	default:
		r.start(q)
		r.next()
	}
	r.flush()
	return r.out
}

// busyWith reports whether the cart's saga runs, or its queue holds, the cart
// command id.
func busyWith(e *Entity, commandID string) bool {
	if e.Saga != nil && e.Saga.Command.CommandID == commandID {
		return true
	}
	for i := range e.Queue {
		if e.Queue[i].Command.CommandID == commandID {
			return true
		}
	}
	return false
}

// reroute gives the cart command in progress (running or queued) that in
// re-sends the reply route in names, when it is valid and differs from the
// one it has: a client whose replies partition moved to another instance
// sends again naming one it still reads. Anything else produces nothing.
func (c *Core) reroute(st State, in *Input, now schemas.Millis) Outputs {
	p, ok := in.Command.Reply()
	if !ok {
		return Outputs{}
	}
	r := c.newRun(st, in.Key, now)
	var cmd *schemas.CartCommand
	if s := r.cart.Saga; s != nil && s.Command.CommandID == in.Command.CommandID {
		cmd = &s.Command
	}
	for i := range r.cart.Queue {
		if cmd == nil && r.cart.Queue[i].Command.CommandID == in.Command.CommandID {
			cmd = &r.cart.Queue[i].Command
		}
	}
	if had, ok := cmd.Reply(); ok && had == p {
		return Outputs{}
	}
	part := int64(p)
	cmd.ReplyTo, cmd.ReplyPartition = schemas.ReplyToReplies, &part
	r.touch(EventRerouted, in.Command.CommandID)
	r.flush()
	return r.out
}

func (c *Core) lineResult(st State, in *Input, now schemas.Millis) Outputs {
	res := in.LineResult
	ent, ok := st.Cart(in.Key)
	if !ok || ent.Saga == nil || res.CommandID == "" {
		return Outputs{}
	}
	s := ent.Saga
	idx := -1
	for i := range s.Lines {
		l := &s.Lines[i]
		if l.Pending && (res.SKU == "" || res.SKU == l.SKU) &&
			LineCommandID(s.Command.CartID, s.Command.CommandID, s.Phase, l.SKU, l.ReservationID) == res.CommandID {
			idx = i
			break
		}
	}
	if idx < 0 {
		return Outputs{} // stale or duplicate: not a pending line of the current phase
	}
	r := c.newRun(st, in.Key, now)
	s = r.cart.Saga
	r.record(s, &s.Lines[idx], res)
	r.touch(EventRecorded, s.Command.CommandID)
	for i := range s.Lines {
		if s.Lines[i].Pending {
			r.flush()
			return r.out
		}
	}
	r.advance()
	r.next()
	r.flush()
	return r.out
}

// status is the reservation status a line result reports, or def when it
// carries no reservation.
func status(res *schemas.Result, def string) string {
	if res.Reservation != nil {
		return res.Reservation.Status
	}
	return def
}

// record notes the per-SKU decision of line l in the saga's current phase.
func (r *run) record(s *Saga, l *Line, res *schemas.Result) {
	l.Pending = false
	accepted := res.Outcome == schemas.OutcomeAccepted
	if res.Reservation != nil && res.Reservation.ExpiresAt != 0 && (accepted || s.Phase != PhaseReserve) {
		// (A rejected reserve's reservation, if any, is not this line's.)
		l.ExpiresAt = res.Reservation.ExpiresAt
	}
	step := func() { l.Outcome, l.Reason, l.Message = res.Outcome, res.Reason, res.Message }
	switch s.Phase {
	case PhaseReserve:
		step()
		if accepted {
			l.Status = status(res, schemas.StatusActive)
		} else {
			// A rejected reserve held nothing; a reservation_exists result
			// describes someone else's reservation.
			l.Status = ""
		}
		l.Held = accepted && l.Status == schemas.StatusActive
	case PhaseCompensate:
		// Accepted, or rejected because the hold already ended: either way
		// the reserve step's outcome stays the line's outcome.
		if accepted {
			l.Status = status(res, schemas.StatusReleased)
		} else {
			l.Status = status(res, "")
		}
	case PhaseRelease:
		step()
		if accepted {
			l.Status = status(res, schemas.StatusReleased)
		} else {
			l.Status = status(res, "")
		}
	case PhasePrepare:
		step()
		if accepted {
			l.Prepared = true
			l.Status = status(res, schemas.StatusActive)
		} else {
			l.Status = status(res, "")
		}
	case PhaseUnprepare:
		if accepted {
			l.Prepared = false
			l.Status = status(res, schemas.StatusActive)
		} else {
			l.Status = status(res, l.Status)
		}
	case PhaseCommit:
		step()
		if accepted {
			l.Status = status(res, schemas.StatusConsumed)
		} else {
			l.Status = status(res, "")
		}
	}
	if s.Phase != PhaseReserve {
		// Whatever the step, the line is held exactly while its reservation
		// is active (a hold that ended is no longer the cart's).
		l.Held = l.Status == schemas.StatusActive
	}
}

// advance moves the saga on once no line of its phase is pending.
func (r *run) advance() {
	s := r.cart.Saga
	switch s.Phase {
	case PhaseReserve:
		if failed, _ := failures(s.Lines); failed == 0 {
			r.keepHolds(s.Lines, all)
			r.finishSaga(schemas.OutcomeAccepted, "", "")
			return
		}
		if r.phase(PhaseCompensate, func(l *Line) bool { return l.Held }) {
			return
		}
		r.finishRejected()
	case PhaseCompensate:
		// Only the lines this saga held: a line rejected with
		// reservation_exists may name a hold the cart had before. A line
		// still active after its release (prepared by someone else) stays the
		// cart's, so that a later cart.release can end it.
		r.keepHolds(s.Lines, func(l *Line) bool { return l.Outcome == schemas.OutcomeAccepted })
		r.finishRejected()
	case PhaseRelease:
		r.keepHolds(s.Lines, all)
		if failed, first := failures(stillHeld(s)); failed > 0 {
			r.finishSaga(schemas.OutcomeRejected, first.Reason,
				fmt.Sprintf("%d of %d holds not released", failed, len(s.Lines)))
			return
		}
		r.finishSaga(schemas.OutcomeAccepted, "", "")
	case PhasePrepare:
		if failed, _ := failures(s.Lines); failed == 0 {
			r.phase(PhaseCommit, all)
			return
		}
		r.keepHolds(s.Lines, func(l *Line) bool { return !l.Prepared })
		if r.phase(PhaseUnprepare, func(l *Line) bool { return l.Prepared }) {
			return
		}
		r.finishRejected()
	case PhaseUnprepare:
		r.keepHolds(s.Lines, all)
		r.finishRejected()
	case PhaseCommit:
		r.keepHolds(s.Lines, all)
		if failed, first := failures(s.Lines); failed > 0 {
			r.finishSaga(schemas.OutcomeRejected, first.Reason,
				fmt.Sprintf("%d of %d lines rejected at commit; the others are committed", failed, len(s.Lines)))
			return
		}
		r.finishSaga(schemas.OutcomeAccepted, "", "")
	}
}

// stillHeld returns the lines whose reservation is still active.
func stillHeld(s *Saga) []Line {
	var held []Line
	for _, l := range s.Lines {
		if l.Held {
			held = append(held, l)
		}
	}
	return held
}

// failures counts the lines whose step was rejected and returns the first.
func failures(lines []Line) (int, *Line) {
	n := 0
	var first *Line
	for i := range lines {
		if lines[i].Outcome != schemas.OutcomeAccepted {
			if first == nil {
				first = &lines[i]
			}
			n++
		}
	}
	return n, first
}

// finishRejected ends a cart.reserve or cart.commit whose first step failed:
// the reason of the first failing line (in line order).
func (r *run) finishRejected() {
	s := r.cart.Saga
	n, first := failures(s.Lines)
	r.finishSaga(schemas.OutcomeRejected, first.Reason, fmt.Sprintf("%d of %d lines rejected", n, len(s.Lines)))
}

// phase moves the saga to phase p for the lines sel picks, emitting their
// per-SKU commands; false (and no change) when sel picks none.
func (r *run) phase(p string, sel func(*Line) bool) bool {
	s := r.cart.Saga
	found := false
	for i := range s.Lines {
		if sel(&s.Lines[i]) {
			found = true
			break
		}
	}
	if !found {
		return false
	}
	s.Phase = p
	for i := range s.Lines {
		if l := &s.Lines[i]; sel(l) {
			l.Pending = true
			r.emit(s, l)
		}
	}
	r.touch(EventAdvanced, s.Command.CommandID)
	return true
}

func all(*Line) bool { return true }

// keepHolds makes the cart's holds agree with the lines sel picks: a held line
// is (or stays) a hold, with its latest expiry; any other line's reservation
// is no hold of the cart.
func (r *run) keepHolds(lines []Line, sel func(*Line) bool) {
	for i := range lines {
		l := &lines[i]
		if !sel(l) {
			continue
		}
		r.dropHold(l.SKU, l.ReservationID)
		if l.Held {
			r.cart.Holds = append(r.cart.Holds, Hold{SKU: l.SKU, ReservationID: l.ReservationID, Quantity: l.Quantity, ExpiresAt: l.ExpiresAt})
		}
	}
	r.dirty = true
}

func (r *run) dropHold(sku, id string) {
	h := r.cart.Holds[:0]
	for _, x := range r.cart.Holds {
		if x.SKU != sku || x.ReservationID != id {
			h = append(h, x)
		}
	}
	r.cart.Holds = h
}

// start begins the saga of cart command q (no saga runs): it emits the first
// per-SKU commands, or decides at once when there is nothing to do.
func (r *run) start(q Queued) {
	cmd := &q.Command
	s := &Saga{Command: q.Command, Partition: q.Partition, Offset: q.Offset, StartedAt: r.now}
	r.prune()
	switch cmd.Type {
	case schemas.TypeCartReserve:
		if n, limit := len(r.cart.Holds), r.core.maxHolds(); n+len(cmd.Items) > limit {
			// Counted as if every line became a hold: holds + lines bound the
			// entity during the saga too (limits.go). Nothing is sent.
			r.decide(&q, schemas.OutcomeRejected, schemas.ReasonCartFull,
				fmt.Sprintf("cart %s keeps %d holds: %d more lines would exceed the limit of %d holds", cmd.CartID, n, len(cmd.Items), limit), nil)
			r.touch(EventFinished, cmd.CommandID)
			return
		}
		s.Phase = PhaseReserve
		for _, it := range cmd.Items {
			id := it.ReservationID
			if id == "" {
				id = cmd.CommandID // reservation keys are per SKU: one id serves every line
			}
			s.Lines = append(s.Lines, Line{CartLine: schemas.CartLine{SKU: it.SKU, ReservationID: id, Quantity: *it.Quantity}, Pending: true})
		}
	case schemas.TypeCartRelease, schemas.TypeCartCommit:
		if len(r.cart.Holds) == 0 {
			if cmd.Type == schemas.TypeCartRelease {
				r.decide(&q, schemas.OutcomeAccepted, "", "", nil)
			} else {
				r.decide(&q, schemas.OutcomeRejected, schemas.ReasonCartEmpty, "cart "+cmd.CartID+" holds nothing", nil)
			}
			r.touch(EventFinished, cmd.CommandID)
			return
		}
		s.Phase = PhaseRelease
		if cmd.Type == schemas.TypeCartCommit {
			s.Phase = PhasePrepare
		}
		for _, h := range r.cart.Holds {
			s.Lines = append(s.Lines, Line{CartLine: schemas.CartLine{
				SKU: h.SKU, ReservationID: h.ReservationID, Quantity: h.Quantity, Status: schemas.StatusActive, ExpiresAt: h.ExpiresAt,
			}, Pending: true, Held: true})
		}
	}
	r.cart.Saga = s
	for i := range s.Lines {
		r.emit(s, &s.Lines[i])
	}
	r.touch(EventStarted, cmd.CommandID)
}

// next starts the queued cart commands while no saga runs.
func (r *run) next() {
	for r.cart.Saga == nil && len(r.cart.Queue) > 0 {
		q := r.cart.Queue[0]
		r.cart.Queue = r.cart.Queue[1:]
		r.start(q)
	}
}

// emit writes the per-SKU command of line l in the saga's current phase.
func (r *run) emit(s *Saga, l *Line) {
	cmd := schemas.Command{
		CommandID:     LineCommandID(s.Command.CartID, s.Command.CommandID, s.Phase, l.SKU, l.ReservationID),
		Type:          phaseTypes[s.Phase],
		SKU:           l.SKU,
		Reason:        "cart " + s.Command.CommandID,
		ReservationID: l.ReservationID,
		CartID:        s.Command.CartID,
		ReplyTo:       schemas.ReplyToCart,
	}
	switch s.Phase {
	case PhaseReserve:
		q := l.Quantity
		cmd.Quantity = &q
		if t := s.Command.TTLSeconds; t != nil {
			ttl := *t
			cmd.TTLSeconds = &ttl
		}
	case PhasePrepare, PhaseCommit:
		cmd.OrderID = s.Command.OrderID
	}
	r.out.Commands = append(r.out.Commands, cmd)
}

// finishSaga ends the running saga with its cart result.
func (r *run) finishSaga(outcome, reason, msg string) {
	s := r.cart.Saga
	q := Queued{Command: s.Command, Partition: s.Partition, Offset: s.Offset}
	lines := make([]schemas.CartLine, len(s.Lines))
	for i := range s.Lines {
		lines[i] = s.Lines[i].CartLine
	}
	r.decide(&q, outcome, reason, msg, lines)
	r.cart.Saga = nil
	r.touch(EventFinished, s.Command.CommandID)
}

// decide emits the one cart result of q and remembers it.
func (r *run) decide(q *Queued, outcome, reason, msg string, lines []schemas.CartLine) {
	if lines == nil {
		lines = []schemas.CartLine{}
	}
	cmd := &q.Command
	res := schemas.CartResult{
		CommandID: cmd.CommandID,
		Type:      cmd.Type,
		CartID:    cmd.CartID,
		OrderID:   cmd.OrderID,
		Outcome:   outcome,
		Reason:    reason,
		Message:   msg,
		Lines:     lines,
		Partition: q.Partition,
		Offset:    q.Offset,
		DecidedAt: r.now,
	}
	r.out.Results = append(r.out.Results, res)
	if p, ok := cmd.Reply(); ok {
		r.out.Replies = append(r.out.Replies, Reply{Result: len(r.out.Results) - 1, Partition: p})
	}
	d := &Decided{CommandID: cmd.CommandID, Result: res, Version: 1, Event: schemas.EventDecided, UpdatedAt: r.now}
	if prev, ok := r.st.Decision(cmd.CommandID); ok {
		d.Version = prev.Version + 1
	}
	r.out.Changes = append(r.out.Changes, Change{Key: DecidedKey(cmd.CommandID), Decided: d})
}

// prune drops holds that expired more than the dedupe window ago (a hold of
// unknown expiry stays), unless the
// running saga works on the cart's holds; it reports whether any was dropped.
func (r *run) prune() bool {
	if s := r.cart.Saga; s != nil && s.Phase != PhaseReserve && s.Phase != PhaseCompensate {
		return false
	}
	h := r.cart.Holds[:0]
	for _, x := range r.cart.Holds {
		if x.ExpiresAt == 0 || r.core.remembered(x.ExpiresAt, r.now) {
			h = append(h, x)
		}
	}
	pruned := len(h) < len(r.cart.Holds)
	r.cart.Holds = h
	if pruned {
		r.dirty = true
	}
	return pruned
}

// touch marks the cart entity changed by event of cart command commandID.
func (r *run) touch(event, commandID string) {
	r.dirty, r.event, r.cmdID = true, event, commandID
}

// flush writes the cart entity once per Apply: its new value, or a tombstone
// when it holds nothing, runs nothing and queues nothing.
func (r *run) flush() {
	if !r.dirty {
		return
	}
	r.prune()
	e := &r.cart
	if len(e.Holds) == 0 && e.Saga == nil && len(e.Queue) == 0 {
		if r.had {
			r.out.Changes = append(r.out.Changes, Change{Key: CartKey(e.CartID)})
		}
		return
	}
	next := *e
	if len(next.Holds) == 0 {
		next.Holds = nil
	}
	if len(next.Queue) == 0 {
		next.Queue = nil
	}
	next.Version++
	next.Event = r.event
	next.CommandID = r.cmdID
	next.UpdatedAt = r.now
	r.out.Changes = append(r.out.Changes, Change{Key: CartKey(next.CartID), Cart: &next})
}
