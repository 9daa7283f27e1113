package cart

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/schemas"
)

func TestKeyKind(t *testing.T) {
	for key, want := range map[string]string{
		"cart/cart-1":       CartPrefix,
		"cart/":             CartPrefix,
		"cart-command/c1":   DecidedPrefix,
		"cart-command/":     DecidedPrefix,
		"command/c1":        "",
		"stock/SKU-A":       "",
		"carts/x":           "",
		"cart":              "",
		"":                  "",
		"reservation/a/b":   "",
		"cart-commandx/c1":  "",
		CartKey("a/b"):      CartPrefix,
		DecidedKey("c/d/e"): DecidedPrefix,
	} {
		assert.Equal(t, want, KeyKind(key), "key %q", key)
	}
}

// decodeChange reads a coordinator changelog value back with the changelog
// decoder, schemas.DecodeChange, as the processor does on restore.
func decodeChange(t require.TestingT, key string, b []byte) Change {
	d, err := schemas.DecodeChange(key, b)
	require.NoError(t, err, key)
	require.True(t, d.Stock == nil && d.Reservation == nil && d.Command == nil, "%s: a SKU entity", key)
	return Change{Key: d.Key, Cart: d.Cart, Decided: d.CartCommand}
}

func TestChangeRoundTrip(t *testing.T) {
	cmd := schemas.CartCommand{CommandID: "c1", Type: schemas.TypeCartReserve, CartID: "cart-1", TTLSeconds: i64(60),
		Items: []schemas.CartItem{{SKU: "SKU-A", Quantity: i64(2), ReservationID: "r"}, {SKU: "SKU-B", Quantity: i64(1)}}}
	line := schemas.CartLine{SKU: "SKU-A", ReservationID: "r", Quantity: 2, Outcome: schemas.OutcomeRejected,
		Reason: schemas.ReasonInsufficientStock, Message: "quantity 2 exceeds available 1 \u00e9\"", Status: schemas.StatusActive, ExpiresAt: exp15}
	changes := []Change{
		{Key: CartKey("cart-1"), Cart: &Entity{
			CartID: "cart-1",
			Holds:  []Hold{{SKU: "SKU-C", ReservationID: "h", Quantity: 3, ExpiresAt: exp15}},
			Saga: &Saga{Command: cmd, Partition: 7, Offset: 1 << 40, Phase: PhaseCompensate, StartedAt: t0,
				Lines: []Line{{CartLine: line, Pending: true, Held: true, Prepared: true}, {CartLine: schemas.CartLine{SKU: "SKU-B"}}}},
			Queue:   []Queued{{Command: schemas.CartCommand{CommandID: "k1", Type: schemas.TypeCartCommit, CartID: "cart-1", OrderID: "o"}, Partition: 7, Offset: 9}},
			Version: 12, Event: EventRecorded, CommandID: "c1", UpdatedAt: t0 + 1,
		}},
		{Key: CartKey("cart/odd"), Cart: &Entity{CartID: "cart/odd", Version: 1, Event: EventQueued}},
		{Key: DecidedKey("c1"), Decided: &Decided{CommandID: "c1", Version: 2, Event: schemas.EventDecided, UpdatedAt: t0,
			Result: schemas.CartResult{CommandID: "c1", Type: schemas.TypeCartReserve, CartID: "cart-1", Outcome: schemas.OutcomeRejected,
				Reason: schemas.ReasonInsufficientStock, Message: "1 of 2 lines rejected", Lines: []schemas.CartLine{line, {SKU: "SKU-B"}},
				Partition: 7, Offset: 3, DecidedAt: t0}}},
		{Key: DecidedKey("x1"), Decided: &Decided{CommandID: "x1", Version: 1, Event: schemas.EventDecided, UpdatedAt: t0,
			Result: schemas.CartResult{CommandID: "x1", Type: schemas.TypeCartRelease, CartID: "cart-1", Outcome: schemas.OutcomeAccepted, Lines: []schemas.CartLine{}}}},
		{Key: CartKey("gone")},
		{Key: DecidedKey("gone")},
	}
	for _, c := range changes {
		b, err := EncodeChange(&c)
		require.NoError(t, err, c.Key)
		if c.Tombstone() {
			assert.Nil(t, b, "tombstone %s", c.Key)
		} else {
			assert.NotNil(t, b)
		}
		assert.Equal(t, c, decodeChange(t, c.Key, b), c.Key)
	}
}

// TestRoundTripThroughCore: every change the core writes survives the codec
// (the simulator of the scenario tests relies on it too).
func TestRoundTripThroughCore(t *testing.T) {
	core := &Core{}
	st := Entities{}
	ins := with(held, cartCmd("k1", schemas.TypeCartCommit, "cart-1"), cartCmd("x1", schemas.TypeCartRelease, "cart-1"))
	n := 0
	for _, in := range ins {
		o := core.Apply(st, in, t0)
		for _, c := range o.Changes {
			b, err := EncodeChange(&c)
			require.NoError(t, err)
			assert.Equal(t, c, decodeChange(t, c.Key, b))
			n++
		}
		st.Apply(o.Changes)
	}
	assert.Equal(t, 6, n)
}

func TestEncodeChangeBoth(t *testing.T) {
	_, err := EncodeChange(&Change{Key: "cart/c", Cart: &Entity{CartID: "c"}, Decided: &Decided{CommandID: "c"}})
	assert.EqualError(t, err, `encode changelog key "cart/c": both a cart and a decided command`)
}

func TestEntities(t *testing.T) {
	e := Entities{}
	_, found := e.Cart("c")
	assert.False(t, found)
	e.Apply([]Change{
		{Key: CartKey("c"), Cart: &Entity{CartID: "c", Version: 1}},
		{Key: DecidedKey("k"), Decided: &Decided{CommandID: "k", Version: 1}},
		{Key: CartKey("c"), Cart: &Entity{CartID: "c", Version: 2}},
	})
	got, found := e.Cart("c")
	require.True(t, found)
	assert.Equal(t, int64(2), got.Version, "later changes win")
	d, found := e.Decision("k")
	require.True(t, found)
	assert.Equal(t, "k", d.CommandID)
	_, found = e.Decision("c")
	assert.False(t, found, "a cart is no decision")
	e.Apply([]Change{{Key: CartKey("c")}})
	_, found = e.Cart("c")
	assert.False(t, found, "tombstoned")
	assert.Contains(t, e, CartKey("c"), "the tombstone stays as a pending write")
}
