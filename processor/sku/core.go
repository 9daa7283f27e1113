// Package sku is the pure core of the SKU processor: the reservation contract
// as a function. Core.Apply(state, input, now) -> Outputs decides one command
// (validation, idempotency by command_id, stock arithmetic, lazy expiry,
// low-stock notices); Expire, ForgetCommand and ForgetReservation serve the
// partition's timers and sweep. It reads a State, never writes it, does no
// I/O and reads no clock: the compiler keeps it so (it imports only schemas).
// The scenario files in testdata/scenarios drive it directly.
package sku

import (
	"fmt"
	"math"
	"time"

	"github.com/reservations/reservations/schemas"
)

// State is what the pure core reads: the entities of one partition. The core
// never writes it; it returns Changes that the caller applies.
type State interface {
	Stock(sku string) (schemas.StockEntity, bool)
	Reservation(sku, reservationID string) (schemas.ReservationEntity, bool)
	Decision(commandID string) (schemas.CommandEntity, bool)
	// DueReservations lists the ids of sku's active, not prepared reservations
	// whose expires_at is <= now, earliest first: Apply expires them before deciding,
	// so that a hold past expires_at never counts against availability even
	// when its timer has not fired yet.
	DueReservations(sku string, now schemas.Millis) []string
}

// Change is the new value of one changelog entity. Exactly one of Stock,
// Reservation and Command is set, or none for a tombstone of Key.
type Change struct {
	Key         string
	Stock       *schemas.StockEntity
	Reservation *schemas.ReservationEntity
	Command     *schemas.CommandEntity
}

// Tombstone reports whether c deletes its key.
func (c *Change) Tombstone() bool {
	return c.Stock == nil && c.Reservation == nil && c.Command == nil
}

// Outputs are what one decision produces: results (the decision, then any
// notices) and the entity changes, in the order they must be written.
type Outputs struct {
	Results []schemas.Result
	Changes []Change
}

// Rules are the configurable parts of the contract.
type Rules struct {
	// DedupeWindow is how long a decided command_id is remembered (default 24 h).
	DedupeWindow time.Duration
	// MaxExtensions is how often a reservation may be extended (default 1).
	MaxExtensions int64
}

// DefaultRules are the contract's defaults.
func DefaultRules() Rules { return Rules{DedupeWindow: 24 * time.Hour, MaxExtensions: 1} }

// Input is one command record as the core sees it.
type Input struct {
	Key       string
	Command   schemas.Command
	FieldErr  *schemas.FieldError // a field of the wrong JSON type, found by the decoder
	Partition int32
	Offset    int64
	// Produced is the command record's timestamp (the producer's clock), 0 if
	// unknown. A retry is a duplicate when it was produced within DedupeWindow
	// of the first decision, however late it is processed (see Apply).
	Produced schemas.Millis
}

// Core decides commands. It is pure: no I/O, no clock; the caller passes now.
type Core struct {
	Rules Rules
}

// decision carries one command's working copies so that lazy expiry and the
// decision itself read their own writes.
//
// A decision lives on Apply's stack: it holds the input and the stock by value
// (a pointer to either would move it to the heap), and the stock figures and
// reservation of the decision's result until Apply allocates them together with
// the idempotency record.
type decision struct {
	in    Input
	now   schemas.Millis
	out   Outputs
	stock schemas.StockEntity
	known bool // stock is set (false: unknown SKU)
	pre   int  // notices emitted before the decision (lazy expiry)
	// The result's stock figures and reservation (see result).
	view    schemas.StockView
	resv    schemas.Reservation
	hasView bool
	hasResv bool
}

// decidedRecord is the idempotency record of a decision with the stock figures
// and reservation its result points to, allocated at once: the result and the
// record share them, so they live as long as the record.
type decidedRecord struct {
	ce   schemas.CommandEntity
	view schemas.StockView
	res  schemas.Reservation
}

// decidedStock is a decidedRecord without a reservation.
type decidedStock struct {
	ce   schemas.CommandEntity
	view schemas.StockView
}

// outputsN hold the usual outputs of a decision, allocated at once: one result
// and N changes (see changesHint); more grow the slices.
type outputs2 struct {
	results [1]schemas.Result
	changes [2]Change
}

type outputs3 struct {
	results [1]schemas.Result
	changes [3]Change
}

// Apply decides one command against st at time now.
//
// A command whose id was decided before is answered with the stored result
// (duplicate) when it was produced within DedupeWindow of that decision: the
// window is measured at min(in.Produced, now), so a retry that waited in a
// backlog is still recognised (the sweep keeps decisions while a backlog may
// hold such retries); a producer clock ahead of ours counts as now.
func (c *Core) Apply(st State, in Input, now schemas.Millis) Outputs {
	prev, had := st.Decision(in.Command.CommandID)
	if had && c.remembered(prev.UpdatedAt, producedAt(in.Produced, now)) {
		r := prev.Result
		r.Duplicate = true
		return Outputs{Results: []schemas.Result{r}}
	}
	dc := &decision{in: in, now: now}
	if changesHint(in.Command.Type) == 2 {
		dc.out = newOutputs2()
	} else {
		b := new(outputs3)
		dc.out = Outputs{Results: b.results[:0:1], Changes: b.changes[:0:3]}
	}
	cmd := &dc.in.Command
	if s, ok := st.Stock(cmd.SKU); ok && cmd.SKU == in.Key {
		dc.stock, dc.known = s, true
	}
	var r schemas.Result
	switch fe := c.validate(&dc.in); {
	case fe != nil:
		r = dc.reject(schemas.ReasonInvalidCommand, fe.Error(), nil)
	case cmd.SKU != in.Key:
		r = dc.reject(schemas.ReasonSKUMismatch, fmt.Sprintf("sku %q != record key %q", cmd.SKU, in.Key), nil)
	default:
		r = c.decide(st, dc)
	}
	var ce *schemas.CommandEntity
	switch {
	case dc.hasResv:
		b := &decidedRecord{view: dc.view, res: dc.resv}
		if dc.hasView {
			r.Stock = &b.view
		}
		r.Reservation = &b.res
		ce = &b.ce
	case dc.hasView:
		b := &decidedStock{view: dc.view}
		r.Stock = &b.view
		ce = &b.ce
	default:
		ce = new(schemas.CommandEntity)
	}
	*ce = schemas.CommandEntity{CommandID: cmd.CommandID, Result: r, Version: 1, Event: schemas.EventDecided, UpdatedAt: now}
	if had {
		ce.Version = prev.Version + 1
	}
	// Notices of a lazy expiry, the decision, then notices the decision caused.
	dc.out.Results = append(dc.out.Results, schemas.Result{})
	copy(dc.out.Results[dc.pre+1:], dc.out.Results[dc.pre:])
	dc.out.Results[dc.pre] = r
	dc.out.Changes = append(dc.out.Changes, Change{Key: schemas.CommandKey(cmd.CommandID), Command: ce})
	return dc.out
}

// changesHint is the usual number of changes of a command of type typ, the
// idempotency record included, when it is accepted.
func changesHint(typ string) int {
	switch typ {
	case schemas.TypeStockSet, schemas.TypeStockAdjust, schemas.TypeExtend, schemas.TypePrepare, schemas.TypeUnprepare:
		return 2
	}
	return 3
}

func newOutputs2() Outputs {
	b := new(outputs2)
	return Outputs{Results: b.results[:0:1], Changes: b.changes[:0:2]}
}

// producedAt is the instant a command's dedupe window is measured at: its
// record's timestamp, unless unknown or ahead of now.
func producedAt(produced, now schemas.Millis) schemas.Millis {
	if produced <= 0 || produced > now {
		return now
	}
	return produced
}

func (c *Core) remembered(decidedAt, now schemas.Millis) bool {
	return int64(now)-int64(decidedAt) < c.Rules.DedupeWindow.Milliseconds()
}

func (c *Core) validate(in *Input) *schemas.FieldError {
	if in.FieldErr != nil {
		return in.FieldErr
	}
	return in.Command.Validate()
}

func (c *Core) decide(st State, dc *decision) schemas.Result {
	cmd := &dc.in.Command
	if dc.known {
		// Lazy expiry at decision time: this SKU's holds past expires_at never
		// count against availability, even when their timers have not fired.
		var expired map[string]schemas.ReservationEntity
		for _, id := range st.DueReservations(cmd.SKU, dc.now) {
			if res, ok := st.Reservation(cmd.SKU, id); ok && overdue(&res.Reservation, dc.now) {
				dc.expire(&res, dc.in.Offset)
				if expired == nil {
					expired = make(map[string]schemas.ReservationEntity)
				}
				expired[id] = res
			}
		}
		dc.pre = len(dc.out.Results)
		if expired != nil {
			st = expiredView{State: st, sku: cmd.SKU, expired: expired}
		}
	}
	switch cmd.Type {
	case schemas.TypeStockSet:
		return dc.stockSet()
	case schemas.TypeStockAdjust:
		return dc.stockAdjust()
	case schemas.TypeReserve:
		return dc.reserve(st)
	}
	// Commands on an existing reservation.
	res, ok := st.Reservation(cmd.SKU, cmd.ReservationID)
	if !ok {
		return dc.reject(schemas.ReasonUnknownReservation, "no reservation "+cmd.ReservationID+" for sku "+cmd.SKU, nil)
	}
	if overdue(&res.Reservation, dc.now) {
		dc.expire(&res, dc.in.Offset) // lazy expiry at decision time (when the state listed none due)
		dc.pre = len(dc.out.Results)
	}
	if res.Reservation.Status != schemas.StatusActive {
		return dc.reject(schemas.ReasonReservationNotActive, "reservation is "+res.Reservation.Status, &res.Reservation)
	}
	if !dc.known { // cannot happen for a consistent state: an active hold has its SKU
		return dc.reject(schemas.ReasonUnknownSKU, "unknown sku "+cmd.SKU, &res.Reservation)
	}
	if res.Reservation.Prepared {
		switch cmd.Type {
		case schemas.TypeAdjust, schemas.TypeRelease, schemas.TypeExtend, schemas.TypePrepare:
			// Only commit and unprepare end the prepared phase of a cart commit.
			return dc.reject(schemas.ReasonReservationPrepared,
				"reservation is prepared for order "+res.Reservation.OrderID, &res.Reservation)
		}
	}
	switch cmd.Type {
	case schemas.TypeAdjust:
		return dc.adjust(&res)
	case schemas.TypeRelease:
		return dc.finish(&res, schemas.StatusReleased, schemas.EventReleased)
	case schemas.TypeExtend:
		if res.Reservation.Extensions >= c.Rules.MaxExtensions {
			return dc.reject(schemas.ReasonExtensionLimit,
				fmt.Sprintf("extended %d times, limit %d", res.Reservation.Extensions, c.Rules.MaxExtensions), &res.Reservation)
		}
		res.Reservation.ExpiresAt = dc.now + schemas.Millis(cmd.TTL()*1000)
		res.Reservation.Extensions++
		dc.putReservation(&res, schemas.EventExtended, cmd.CommandID)
		return dc.accept(&res.Reservation, "")
	case schemas.TypePrepare:
		res.Reservation.Prepared = true
		res.Reservation.OrderID = cmd.OrderID
		dc.putReservation(&res, schemas.EventPrepared, cmd.CommandID)
		return dc.accept(&res.Reservation, "")
	case schemas.TypeUnprepare:
		return dc.unprepare(&res)
	default: // commit (of a prepared hold too: any order_id, the commit's wins)
		res.Reservation.OrderID = cmd.OrderID
		res.Reservation.Prepared = false
		return dc.finish(&res, schemas.StatusConsumed, schemas.EventCommitted)
	}
}

// overdue reports whether an active reservation is past its expires_at and may
// expire: a prepared hold never does (until it is unprepared).
func overdue(r *schemas.Reservation, now schemas.Millis) bool {
	return r.Status == schemas.StatusActive && !r.Prepared && r.ExpiresAt <= now
}

// unprepare undoes a prepare: the hold is active again with its expires_at and
// no order. A hold that is not prepared has nothing to undo: accepted, no
// change.
//
// A hold whose expires_at passed while it was prepared expires right after the
// unprepare, in the same decision (changes unprepared then expired; the
// expired notice follows the result, which shows the final reservation and
// stock). Leaving it to the timers would let it count against availability for
// the rest of the dispatch: the partition fires timers only before deciding a
// dispatch's records and lists no due hold at decision time.
func (dc *decision) unprepare(res *schemas.ReservationEntity) schemas.Result {
	if !res.Reservation.Prepared {
		return dc.accept(&res.Reservation, "reservation is not prepared: nothing to undo")
	}
	res.Reservation.Prepared = false
	res.Reservation.OrderID = ""
	dc.putReservation(res, schemas.EventUnprepared, dc.in.Command.CommandID)
	if !overdue(&res.Reservation, dc.now) {
		return dc.accept(&res.Reservation, "")
	}
	dc.expire(res, dc.in.Offset)
	return dc.accept(&res.Reservation, "expires_at passed while prepared: the reservation expired")
}

func (dc *decision) stockSet() schemas.Result {
	cmd := &dc.in.Command
	cur := schemas.StockEntity{SKU: cmd.SKU}
	if dc.known {
		cur = dc.stock
	}
	if cmd.ExpectedOnHand != nil && *cmd.ExpectedOnHand != cur.OnHand {
		return dc.reject(schemas.ReasonStaleExpectedOnHand,
			fmt.Sprintf("expected_on_hand %d, on_hand is %d", *cmd.ExpectedOnHand, cur.OnHand), nil)
	}
	next := cur
	next.OnHand = *cmd.OnHand
	if cmd.LowStockThreshold != nil {
		t := *cmd.LowStockThreshold
		next.LowStockThreshold = &t
	}
	dc.putStock(&next, schemas.EventStockSet, cmd.CommandID)
	msg := ""
	if next.OnHand < next.Reserved {
		msg = fmt.Sprintf("oversold: on_hand %d below reserved %d", next.OnHand, next.Reserved)
	}
	return dc.accept(nil, msg)
}

func (dc *decision) stockAdjust() schemas.Result {
	cmd := &dc.in.Command
	if !dc.known {
		return dc.reject(schemas.ReasonUnknownSKU, "unknown sku "+cmd.SKU, nil)
	}
	cur := dc.stock
	if cmd.ExpectedOnHand != nil && *cmd.ExpectedOnHand != cur.OnHand {
		return dc.reject(schemas.ReasonStaleExpectedOnHand,
			fmt.Sprintf("expected_on_hand %d, on_hand is %d", *cmd.ExpectedOnHand, cur.OnHand), nil)
	}
	d := *cmd.Delta
	if d > 0 && cur.OnHand > math.MaxInt64-d {
		return dc.reject(schemas.ReasonInvalidCommand, "delta: on_hand would overflow int64", nil)
	}
	if cur.OnHand+d < 0 {
		return dc.reject(schemas.ReasonNegativeStock,
			fmt.Sprintf("on_hand %d + delta %d is below 0", cur.OnHand, d), nil)
	}
	next := cur
	next.OnHand += d
	dc.putStock(&next, schemas.EventStockAdjusted, cmd.CommandID)
	msg := ""
	if next.OnHand < next.Reserved {
		msg = fmt.Sprintf("oversold: on_hand %d below reserved %d", next.OnHand, next.Reserved)
	}
	return dc.accept(nil, msg)
}

func (dc *decision) reserve(st State) schemas.Result {
	cmd := &dc.in.Command
	if !dc.known {
		return dc.reject(schemas.ReasonUnknownSKU, "unknown sku "+cmd.SKU, nil)
	}
	if old, ok := st.Reservation(cmd.SKU, cmd.ReservationID); ok {
		return dc.reject(schemas.ReasonReservationExists, "reservation "+cmd.ReservationID+" exists", &old.Reservation)
	}
	q := *cmd.Quantity
	if avail := dc.stock.OnHand - dc.stock.Reserved; avail <= 0 || q > avail {
		return dc.reject(schemas.ReasonInsufficientStock, fmt.Sprintf("quantity %d exceeds available %d", q, avail), nil)
	}
	res := schemas.ReservationEntity{Reservation: schemas.Reservation{
		ReservationID: cmd.ReservationID,
		SKU:           cmd.SKU,
		Quantity:      q,
		Status:        schemas.StatusActive,
		ExpiresAt:     dc.now + schemas.Millis(cmd.TTL()*1000),
		CartID:        cmd.CartID,
		StoreID:       cmd.StoreID,
	}}
	next := dc.stock
	next.Reserved += q
	dc.putStock(&next, schemas.EventReserved, cmd.CommandID)
	dc.putReservation(&res, schemas.EventReserved, cmd.CommandID)
	return dc.accept(&res.Reservation, "")
}

func (dc *decision) adjust(res *schemas.ReservationEntity) schemas.Result {
	cmd := &dc.in.Command
	q := *cmd.Quantity
	delta := q - res.Reservation.Quantity
	if avail := dc.stock.OnHand - dc.stock.Reserved; delta > 0 && delta > avail {
		return dc.reject(schemas.ReasonInsufficientStock,
			fmt.Sprintf("increase %d exceeds available %d", delta, avail), &res.Reservation)
	}
	res.Reservation.Quantity = q
	if delta != 0 {
		next := dc.stock
		next.Reserved += delta
		dc.putStock(&next, schemas.EventAdjusted, cmd.CommandID)
	}
	dc.putReservation(res, schemas.EventAdjusted, cmd.CommandID)
	return dc.accept(&res.Reservation, "")
}

// finish moves an active reservation to a terminal status (released, consumed).
func (dc *decision) finish(res *schemas.ReservationEntity, status, event string) schemas.Result {
	cmd := &dc.in.Command
	q := res.Reservation.Quantity
	res.Reservation.Status = status
	next := dc.stock
	next.Reserved -= q
	msg := ""
	if status == schemas.StatusConsumed {
		next.OnHand -= q
		if next.OnHand < 0 {
			msg = fmt.Sprintf("on_hand clamped at 0: the sku was oversold by %d", -next.OnHand)
			next.OnHand = 0
		}
	}
	dc.putStock(&next, event, cmd.CommandID)
	dc.putReservation(res, event, cmd.CommandID)
	return dc.accept(&res.Reservation, msg)
}

// expire moves an active reservation to expired and gives its stock back,
// adding the changes and the expired notice (offset: the command that caused a
// lazy expiry, or -1 for a timer).
func (dc *decision) expire(res *schemas.ReservationEntity, offset int64) {
	res.Reservation.Status = schemas.StatusExpired
	dc.putReservation(res, schemas.EventExpired, "")
	if dc.known {
		next := dc.stock
		next.Reserved -= res.Reservation.Quantity
		dc.putStock(&next, schemas.EventExpired, "")
	}
	dc.out.Results = append(dc.out.Results, dc.notice(schemas.TypeExpired, res.Reservation.SKU, &res.Reservation, offset))
}

// expiredView shows reservations expired earlier in the same decision.
type expiredView struct {
	State
	sku     string
	expired map[string]schemas.ReservationEntity
}

func (v expiredView) Reservation(sku, id string) (schemas.ReservationEntity, bool) {
	if sku == v.sku {
		if r, ok := v.expired[id]; ok {
			return r, true
		}
	}
	return v.State.Reservation(sku, id)
}

// Expire expires reservation (sku, id) if it is active, not prepared and due
// at now. A timer calls it; it returns no outputs for a reservation that is
// gone, terminal, prepared (unprepare schedules it again), or not yet due (a
// stale timer entry).
func (c *Core) Expire(st State, partition int32, sku, id string, now schemas.Millis) Outputs {
	res, ok := st.Reservation(sku, id)
	if !ok || !overdue(&res.Reservation, now) {
		return Outputs{}
	}
	// An expiry: the reservation, the stock and the expired notice.
	dc := &decision{in: Input{Key: sku, Partition: partition, Offset: -1}, now: now, out: newOutputs2()}
	if s, ok := st.Stock(sku); ok {
		dc.stock, dc.known = s, true
	}
	dc.expire(&res, -1)
	return dc.out
}

// ForgetCommand returns the tombstone of a decided command past the dedupe
// window, or false when it is gone or still remembered.
func (c *Core) ForgetCommand(st State, id string, now schemas.Millis) (Change, bool) {
	if d, ok := st.Decision(id); ok {
		return c.ForgetDecided(id, d.UpdatedAt, now)
	}
	return Change{}, false
}

// ForgetDecided is ForgetCommand for a caller that has read the committed
// decision of id itself (not a stale copy) and passes its decision time
// (updated_at).
func (c *Core) ForgetDecided(id string, decidedAt, now schemas.Millis) (Change, bool) {
	if c.remembered(decidedAt, now) {
		return Change{}, false
	}
	return Change{Key: schemas.CommandKey(id)}, true
}

// ForgetReservation returns the tombstone of a terminal reservation past the
// dedupe window (so the changelog stays bounded), or false when it is gone,
// active, or still within the window.
func (c *Core) ForgetReservation(st State, sku, id string, now schemas.Millis) (Change, bool) {
	res, ok := st.Reservation(sku, id)
	if ok && res.Reservation.Status != schemas.StatusActive && !c.remembered(res.UpdatedAt, now) {
		return Change{Key: schemas.ReservationKey(sku, id)}, true
	}
	return Change{}, false
}

func (dc *decision) putStock(next *schemas.StockEntity, event, commandID string) {
	wasLow := dc.known && isLow(&dc.stock)
	next.Available = next.OnHand - next.Reserved
	next.Version++
	next.Event = event
	next.CommandID = commandID
	next.UpdatedAt = dc.now
	s := new(schemas.StockEntity)
	*s = *next
	dc.stock, dc.known = *s, true
	dc.out.Changes = append(dc.out.Changes, Change{Key: schemas.StockKey(s.SKU), Stock: s})
	if !wasLow && isLow(s) {
		low := new(schemas.StockEntity)
		*low = *s
		low.Version++
		low.Event = schemas.EventLowStock
		dc.stock = *low
		dc.out.Changes = append(dc.out.Changes, Change{Key: schemas.StockKey(s.SKU), Stock: low})
		dc.out.Results = append(dc.out.Results, dc.notice(schemas.TypeLowStock, s.SKU, nil, dc.in.Offset))
	}
}

// isLow reports whether available is below the SKU's threshold.
func isLow(s *schemas.StockEntity) bool {
	return s != nil && s.LowStockThreshold != nil && s.OnHand-s.Reserved < *s.LowStockThreshold
}

func (dc *decision) putReservation(res *schemas.ReservationEntity, event, commandID string) {
	res.Version++
	res.Event = event
	res.CommandID = commandID
	res.UpdatedAt = dc.now
	r := new(schemas.ReservationEntity)
	*r = *res
	dc.out.Changes = append(dc.out.Changes, Change{Key: schemas.ReservationKey(r.Reservation.SKU, r.Reservation.ReservationID), Reservation: r})
}

// result returns the decision's result without its stock figures and
// reservation: result keeps them in dc, and Apply points the result at copies
// allocated with the idempotency record. Every decision calls it once.
func (dc *decision) result(outcome, reason, msg string, res *schemas.Reservation) schemas.Result {
	cmd := &dc.in.Command
	r := schemas.Result{
		CommandID:     cmd.CommandID,
		Type:          cmd.Type,
		SKU:           cmd.SKU,
		ReservationID: cmd.ReservationID,
		Outcome:       outcome,
		Reason:        reason,
		Message:       msg,
		Partition:     dc.in.Partition,
		Offset:        dc.in.Offset,
		DecidedAt:     dc.now,
	}
	if dc.hasView = dc.known; dc.hasView {
		dc.view = *dc.stock.View()
	}
	if dc.hasResv = res != nil; dc.hasResv {
		dc.resv = *res
	}
	return r
}

func (dc *decision) accept(res *schemas.Reservation, msg string) schemas.Result {
	return dc.result(schemas.OutcomeAccepted, "", msg, res)
}

func (dc *decision) reject(reason, msg string, res *schemas.Reservation) schemas.Result {
	return dc.result(schemas.OutcomeRejected, reason, msg, res)
}

func (dc *decision) notice(typ, sku string, res *schemas.Reservation, offset int64) schemas.Result {
	r := schemas.Result{
		Type:      typ,
		SKU:       sku,
		Outcome:   schemas.OutcomeAccepted,
		Partition: dc.in.Partition,
		Offset:    offset,
		DecidedAt: dc.now,
	}
	if dc.known {
		r.Stock = dc.stock.View()
	}
	if res != nil {
		cp := *res
		r.ReservationID = cp.ReservationID
		r.Reservation = &cp
	}
	return r
}
