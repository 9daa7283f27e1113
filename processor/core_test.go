package processor

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
		back, err := DecodeChange(ch.Key, v)
		require.NoError(t, err)
		assert.Equal(t, ch, back)
	}
	tomb, err := DecodeChange("command/x", nil)
	require.NoError(t, err)
	assert.True(t, tomb.Tombstone())
	_, err = DecodeChange("weird/x", []byte("{}"))
	assert.Error(t, err)
}
