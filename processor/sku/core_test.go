package sku

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/schemas"
)

func i64(v int64) *int64 { return &v }

var t0 = schemas.MillisOf(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))

func apply(t *testing.T, c *Core, st Entities, now schemas.Millis, cmd schemas.Command) Outputs {
	t.Helper()
	o := c.Apply(st, Input{Key: cmd.SKU, Command: cmd}, now)
	st.Apply(o.Changes)
	require.NotEmpty(t, o.Results)
	return o
}

// A hold past expires_at whose timer has not fired yet is expired at decision
// time: it never counts against availability and cannot be acted on.
func TestLazyExpiryAtDecisionTime(t *testing.T) {
	c := &Core{Rules: DefaultRules()}
	st := make(Entities)
	apply(t, c, st, t0, schemas.Command{CommandID: "s", Type: schemas.TypeStockSet, SKU: "A", OnHand: i64(1)})
	apply(t, c, st, t0, schemas.Command{CommandID: "r", Type: schemas.TypeReserve, SKU: "A", ReservationID: "h", Quantity: i64(1), TTLSeconds: i64(1)})

	for _, tc := range []struct {
		typ string
		cmd schemas.Command
	}{
		{"release", schemas.Command{Type: schemas.TypeRelease}},
		{"extend", schemas.Command{Type: schemas.TypeExtend}},
		{"commit", schemas.Command{Type: schemas.TypeCommit, OrderID: "o"}},
		{"adjust", schemas.Command{Type: schemas.TypeAdjust, Quantity: i64(1)}},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			st := clone(st)
			cmd := tc.cmd
			cmd.CommandID, cmd.SKU, cmd.ReservationID = "x-"+tc.typ, "A", "h"
			o := c.Apply(st, Input{Key: "A", Command: cmd, Offset: 7}, t0+1000)
			require.Len(t, o.Results, 2, "expired notice, then the decision")
			assert.Equal(t, schemas.TypeExpired, o.Results[0].Type)
			assert.Equal(t, int64(7), o.Results[0].Offset)
			assert.Equal(t, &schemas.StockView{OnHand: 1, Reserved: 0, Available: 1}, o.Results[0].Stock)
			assert.Equal(t, schemas.ReasonReservationNotActive, o.Results[1].Reason)
			assert.Equal(t, schemas.StatusExpired, o.Results[1].Reservation.Status)
			st.Apply(o.Changes)
			s, _ := st.Stock("A")
			assert.Zero(t, s.Reserved)
		})
	}
}

func clone(e Entities) Entities {
	out := make(Entities, len(e))
	for k, v := range e {
		out[k] = v
	}
	return out
}

func TestExpireIgnoresStaleTimers(t *testing.T) {
	c := &Core{Rules: DefaultRules()}
	st := make(Entities)
	apply(t, c, st, t0, schemas.Command{CommandID: "s", Type: schemas.TypeStockSet, SKU: "A", OnHand: i64(5)})
	apply(t, c, st, t0, schemas.Command{CommandID: "r", Type: schemas.TypeReserve, SKU: "A", ReservationID: "h", Quantity: i64(2), TTLSeconds: i64(60)})
	assert.Empty(t, c.Expire(st, 0, "A", "h", t0+59_999).Results, "not yet due")
	assert.Empty(t, c.Expire(st, 0, "A", "nope", t0+60_000).Results, "unknown reservation")
	apply(t, c, st, t0+1, schemas.Command{CommandID: "x", Type: schemas.TypeExtend, SKU: "A", ReservationID: "h"})
	assert.Empty(t, c.Expire(st, 0, "A", "h", t0+60_000).Results, "extended: the old timer is stale")
	o := c.Expire(st, 3, "A", "h", t0+1+900_000)
	require.Len(t, o.Results, 1)
	assert.Equal(t, int64(-1), o.Results[0].Offset)
	assert.Equal(t, int32(3), o.Results[0].Partition)
	st.Apply(o.Changes)
	assert.Empty(t, c.Expire(st, 0, "A", "h", t0+2_000_000).Results, "terminal")
	r, _ := st.Reservation("A", "h")
	assert.Equal(t, int64(3), r.Version, "reserved, extended, expired: one version per change")
}

func TestDedupeWindowAndForget(t *testing.T) {
	c := &Core{Rules: Rules{DedupeWindow: time.Hour, MaxExtensions: 1}}
	st := make(Entities)
	set := schemas.Command{CommandID: "s", Type: schemas.TypeStockSet, SKU: "A", OnHand: i64(5)}
	apply(t, c, st, t0, set)
	dup := c.Apply(st, Input{Key: "A", Command: set}, t0+3_599_999)
	require.Len(t, dup.Results, 1)
	assert.True(t, dup.Results[0].Duplicate)
	assert.Empty(t, dup.Changes, "a duplicate changes nothing")
	_, ok := c.ForgetCommand(st, "s", t0+3_599_999)
	assert.False(t, ok, "still remembered")
	tomb, ok := c.ForgetCommand(st, "s", t0+3_600_000)
	require.True(t, ok)
	assert.True(t, tomb.Tombstone())
	assert.Equal(t, "command/s", tomb.Key)
	// ForgetDecided (the sweep, which read the decision itself) draws the
	// same line from the decision time alone.
	d := st[schemas.CommandKey("s")].Command
	_, ok = c.ForgetDecided("s", d.UpdatedAt, t0+3_599_999)
	assert.False(t, ok, "still remembered")
	tomb, ok = c.ForgetDecided("s", d.UpdatedAt, t0+3_600_000)
	require.True(t, ok)
	assert.Equal(t, Change{Key: "command/s"}, tomb)

	// Past the window a re-sent id is decided again.
	again := c.Apply(st, Input{Key: "A", Command: set}, t0+3_600_000)
	assert.False(t, again.Results[0].Duplicate)

	apply(t, c, st, t0, schemas.Command{CommandID: "r", Type: schemas.TypeReserve, SKU: "A", ReservationID: "h", Quantity: i64(1)})
	_, ok = c.ForgetReservation(st, "A", "h", t0+10*3_600_000)
	assert.False(t, ok, "active reservations are never forgotten")
	apply(t, c, st, t0+5, schemas.Command{CommandID: "rel", Type: schemas.TypeRelease, SKU: "A", ReservationID: "h"})
	_, ok = c.ForgetReservation(st, "A", "h", t0+5+3_599_999)
	assert.False(t, ok)
	tomb, ok = c.ForgetReservation(st, "A", "h", t0+5+3_600_000)
	require.True(t, ok)
	assert.Equal(t, "reservation/A/h", tomb.Key)
}

func TestReservationKeysAreUnique(t *testing.T) {
	assert.NotEqual(t, schemas.ReservationKey("a/b", "c"), schemas.ReservationKey("a", "b/c"))
	assert.Equal(t, "reservation/a/r-1", schemas.ReservationKey("a", "r-1"))
}

func TestCodecRoundTrip(t *testing.T) {
	c := &Core{Rules: DefaultRules()}
	st := make(Entities)
	o := apply(t, c, st, t0, schemas.Command{CommandID: "s", Type: schemas.TypeStockSet, SKU: "A", OnHand: i64(5), LowStockThreshold: i64(2)})
	o2 := apply(t, c, st, t0, schemas.Command{CommandID: "r", Type: schemas.TypeReserve, SKU: "A", ReservationID: "h", Quantity: i64(1), StoreID: "s1"})
	for _, ch := range append(o.Changes, o2.Changes...) {
		v, err := EncodeChange(&ch)
		require.NoError(t, err)
		back, err := schemas.DecodeChange(ch.Key, v)
		require.NoError(t, err)
		assert.Equal(t, schemas.Change{Key: ch.Key, Stock: ch.Stock, Reservation: ch.Reservation, Command: ch.Command}, back)
	}
	v, err := EncodeChange(&Change{Key: "command/x"})
	require.NoError(t, err)
	assert.Nil(t, v, "a tombstone encodes as no value")
}

// prepareSetup: SKU A with 5 on hand and hold h (2 units, 60 s TTL) at t0.
func prepareSetup(t *testing.T) (*Core, Entities) {
	c := &Core{Rules: DefaultRules()}
	st := make(Entities)
	apply(t, c, st, t0, schemas.Command{CommandID: "s", Type: schemas.TypeStockSet, SKU: "A", OnHand: i64(5)})
	apply(t, c, st, t0, schemas.Command{CommandID: "r", Type: schemas.TypeReserve, SKU: "A", ReservationID: "h", Quantity: i64(2), TTLSeconds: i64(60), CartID: "cart-1"})
	return c, st
}

func prepare(id, order string) schemas.Command {
	return schemas.Command{CommandID: id, Type: schemas.TypePrepare, SKU: "A", ReservationID: "h", OrderID: order}
}

// A prepared hold keeps its stock and expires_at, never expires, and only
// commit and unprepare act on it.
func TestPrepare(t *testing.T) {
	c, st := prepareSetup(t)
	o := apply(t, c, st, t0+1, prepare("p", "o-1"))
	require.Len(t, o.Results, 1)
	r := o.Results[0]
	assert.Equal(t, schemas.OutcomeAccepted, r.Outcome)
	assert.Equal(t, &schemas.StockView{OnHand: 5, Reserved: 2, Available: 3}, r.Stock, "stock unchanged")
	require.NotNil(t, r.Reservation)
	assert.True(t, r.Reservation.Prepared)
	assert.Equal(t, "o-1", r.Reservation.OrderID)
	assert.Equal(t, schemas.StatusActive, r.Reservation.Status)
	assert.Equal(t, t0+60_000, r.Reservation.ExpiresAt, "expires_at unchanged")
	require.Len(t, o.Changes, 2, "the reservation, then the decided command: no stock change")
	res := o.Changes[0].Reservation
	require.NotNil(t, res)
	assert.Equal(t, schemas.EventPrepared, res.Event)
	assert.Equal(t, "p", res.CommandID)
	assert.Equal(t, int64(2), res.Version)
	s, _ := st.Stock("A")
	assert.Equal(t, int64(2), s.Version, "stock entity not written")

	for _, tc := range []struct {
		name string
		cmd  schemas.Command
	}{
		{"prepare", prepare("x", "o-2")},
		{"release", schemas.Command{Type: schemas.TypeRelease}},
		{"adjust", schemas.Command{Type: schemas.TypeAdjust, Quantity: i64(1)}},
		{"extend", schemas.Command{Type: schemas.TypeExtend}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := clone(st)
			cmd := tc.cmd
			cmd.CommandID, cmd.SKU, cmd.ReservationID = "x-"+tc.name, "A", "h"
			o := apply(t, c, st, t0+2, cmd)
			require.Len(t, o.Results, 1)
			assert.Equal(t, schemas.OutcomeRejected, o.Results[0].Outcome)
			assert.Equal(t, schemas.ReasonReservationPrepared, o.Results[0].Reason)
			assert.Contains(t, o.Results[0].Message, "o-1", "the message names the order")
			assert.True(t, o.Results[0].Reservation.Prepared)
			assert.Len(t, o.Changes, 1, "only the decided command")
		})
	}

	// Past expires_at: neither the timer nor lazy expiry touches it, and it
	// still counts in reserved.
	assert.Empty(t, c.Expire(st, 0, "A", "h", t0+120_000).Results, "a prepared hold never expires")
	assert.Empty(t, st.DueReservations("A", t0+120_000))
	o = apply(t, c, st, t0+120_000, schemas.Command{CommandID: "big", Type: schemas.TypeReserve, SKU: "A", ReservationID: "h2", Quantity: i64(4)})
	require.Len(t, o.Results, 1, "no lazy expiry notice")
	assert.Equal(t, schemas.ReasonInsufficientStock, o.Results[0].Reason)
	assert.Equal(t, &schemas.StockView{OnHand: 5, Reserved: 2, Available: 3}, o.Results[0].Stock)

	// Commit is accepted past expires_at, with its own order_id, and clears
	// prepared.
	o = apply(t, c, st, t0+120_000, schemas.Command{CommandID: "commit", Type: schemas.TypeCommit, SKU: "A", ReservationID: "h", OrderID: "o-9"})
	require.Len(t, o.Results, 1)
	r = o.Results[0]
	assert.Equal(t, schemas.OutcomeAccepted, r.Outcome)
	assert.Equal(t, &schemas.StockView{OnHand: 3, Reserved: 0, Available: 3}, r.Stock)
	assert.Equal(t, schemas.StatusConsumed, r.Reservation.Status)
	assert.Equal(t, "o-9", r.Reservation.OrderID)
	assert.False(t, r.Reservation.Prepared)
	h, _ := st.Reservation("A", "h")
	assert.Equal(t, schemas.EventCommitted, h.Event)
	assert.Equal(t, int64(3), h.Version)
}

// Prepare is decided like commit: unknown SKU or reservation, lazy expiry of a
// hold past expires_at, terminal holds.
func TestPrepareRejections(t *testing.T) {
	c, st := prepareSetup(t)
	o := c.Apply(st, Input{Key: "Z", Command: schemas.Command{CommandID: "u", Type: schemas.TypePrepare, SKU: "Z", ReservationID: "h", OrderID: "o"}}, t0)
	assert.Equal(t, schemas.ReasonUnknownReservation, o.Results[0].Reason, "as commit: no reservation of an unknown sku")
	o = c.Apply(st, Input{Key: "A", Command: schemas.Command{CommandID: "u2", Type: schemas.TypePrepare, SKU: "A", ReservationID: "nope", OrderID: "o"}}, t0)
	assert.Equal(t, schemas.ReasonUnknownReservation, o.Results[0].Reason)
	o = c.Apply(st, Input{Key: "A", Command: schemas.Command{CommandID: "u3", Type: schemas.TypePrepare, SKU: "A", ReservationID: "h"}}, t0)
	assert.Equal(t, schemas.ReasonInvalidCommand, o.Results[0].Reason)
	assert.Contains(t, o.Results[0].Message, "order_id")

	late := c.Apply(st, Input{Key: "A", Command: prepare("late", "o"), Offset: 7}, t0+60_000)
	require.Len(t, late.Results, 2, "expired notice, then the decision")
	assert.Equal(t, schemas.TypeExpired, late.Results[0].Type)
	assert.Equal(t, schemas.ReasonReservationNotActive, late.Results[1].Reason)
	assert.Equal(t, schemas.StatusExpired, late.Results[1].Reservation.Status)
	assert.False(t, late.Results[1].Reservation.Prepared)

	apply(t, c, st, t0+1, schemas.Command{CommandID: "rel", Type: schemas.TypeRelease, SKU: "A", ReservationID: "h"})
	o = apply(t, c, st, t0+2, prepare("after-release", "o"))
	assert.Equal(t, schemas.ReasonReservationNotActive, o.Results[0].Reason)
	assert.Equal(t, schemas.StatusReleased, o.Results[0].Reservation.Status)
}

func TestUnprepare(t *testing.T) {
	unprepare := func(id string) schemas.Command {
		return schemas.Command{CommandID: id, Type: schemas.TypeUnprepare, SKU: "A", ReservationID: "h"}
	}
	t.Run("not prepared: nothing to undo", func(t *testing.T) {
		c, st := prepareSetup(t)
		before, _ := st.Reservation("A", "h")
		o := apply(t, c, st, t0+1, unprepare("u"))
		require.Len(t, o.Results, 1)
		assert.Equal(t, schemas.OutcomeAccepted, o.Results[0].Outcome)
		assert.Equal(t, &before.Reservation, o.Results[0].Reservation)
		require.Len(t, o.Changes, 1, "only the decided command")
		assert.NotNil(t, o.Changes[0].Command)
	})
	t.Run("prepared", func(t *testing.T) {
		c, st := prepareSetup(t)
		apply(t, c, st, t0+1, prepare("p", "o-1"))
		o := apply(t, c, st, t0+2, unprepare("u"))
		require.Len(t, o.Results, 1)
		r := o.Results[0]
		assert.Equal(t, schemas.OutcomeAccepted, r.Outcome)
		assert.False(t, r.Reservation.Prepared)
		assert.Empty(t, r.Reservation.OrderID)
		assert.Equal(t, t0+60_000, r.Reservation.ExpiresAt, "expires_at unchanged")
		assert.Equal(t, &schemas.StockView{OnHand: 5, Reserved: 2, Available: 3}, r.Stock)
		require.Len(t, o.Changes, 2)
		assert.Equal(t, schemas.EventUnprepared, o.Changes[0].Reservation.Event)
		assert.Equal(t, int64(3), o.Changes[0].Reservation.Version)
		// Everything acts on it again, and it expires again.
		apply(t, c, st, t0+3, schemas.Command{CommandID: "x", Type: schemas.TypeExtend, SKU: "A", ReservationID: "h", TTLSeconds: i64(1)})
		assert.Len(t, c.Expire(st, 0, "A", "h", t0+1003).Results, 1)
	})
	t.Run("prepared past expires_at: expires right after", func(t *testing.T) {
		c, st := prepareSetup(t)
		apply(t, c, st, t0+1, prepare("p", "o-1"))
		o := apply(t, c, st, t0+90_000, unprepare("u"))
		require.Len(t, o.Results, 2, "the decision, then the expired notice it caused")
		r := o.Results[0]
		assert.Equal(t, schemas.OutcomeAccepted, r.Outcome)
		assert.Equal(t, schemas.StatusExpired, r.Reservation.Status)
		assert.Equal(t, &schemas.StockView{OnHand: 5, Reserved: 0, Available: 5}, r.Stock)
		assert.Equal(t, schemas.TypeExpired, o.Results[1].Type)
		var events []string
		for _, ch := range o.Changes {
			if ch.Reservation != nil {
				events = append(events, ch.Reservation.Event)
			}
		}
		assert.Equal(t, []string{schemas.EventUnprepared, schemas.EventExpired}, events)
		h, _ := st.Reservation("A", "h")
		assert.Equal(t, int64(4), h.Version, "reserved, prepared, unprepared, expired")
	})
	t.Run("terminal and unknown", func(t *testing.T) {
		c, st := prepareSetup(t)
		apply(t, c, st, t0+1, prepare("p", "o-1"))
		apply(t, c, st, t0+2, schemas.Command{CommandID: "commit", Type: schemas.TypeCommit, SKU: "A", ReservationID: "h", OrderID: "o-1"})
		o := apply(t, c, st, t0+3, unprepare("u"))
		assert.Equal(t, schemas.ReasonReservationNotActive, o.Results[0].Reason)
		assert.Equal(t, schemas.StatusConsumed, o.Results[0].Reservation.Status)
		o = c.Apply(st, Input{Key: "A", Command: schemas.Command{CommandID: "u2", Type: schemas.TypeUnprepare, SKU: "A", ReservationID: "nope"}}, t0)
		assert.Equal(t, schemas.ReasonUnknownReservation, o.Results[0].Reason)
	})
}
