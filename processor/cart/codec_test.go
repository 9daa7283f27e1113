package cart

import (
	"strings"
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
		got, err := DecodeChange(c.Key, b)
		require.NoError(t, err, c.Key)
		assert.Equal(t, c, got, c.Key)
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
			got, err := DecodeChange(c.Key, b)
			require.NoError(t, err)
			assert.Equal(t, c, got)
			n++
		}
		st.Apply(o.Changes)
	}
	assert.Equal(t, 6, n)
}

func TestDecodeChangeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, key, val, err string
	}{
		{"unknown kind", "stock/SKU-A", `{}`, `decode changelog key "stock/SKU-A": unknown key kind`},
		{"empty key", "", `{}`, `decode changelog key "": unknown key kind`},
		{"invalid JSON", "cart/c", `{"cart_id":`, `decode changelog key "cart/c": `},
		{"JSON null cart", "cart/c", `null`, `decode changelog key "cart/c": JSON null is not an entity`},
		{"JSON null decided", "cart-command/c1", ` null `, `decode changelog key "cart-command/c1": JSON null is not an entity`},
		{"array", "cart/c", `[]`, `decode changelog key "cart/c": `},
		{"string", "cart-command/c1", `"x"`, `decode changelog key "cart-command/c1": `},
		{"cart of another key", "cart/c", `{"cart_id":"d"}`, `decode changelog key "cart/c": the value is the entity of "cart/d"`},
		{"cart without id", "cart/c", `{}`, `decode changelog key "cart/c": the value is the entity of "cart/"`},
		{"decided of another key", "cart-command/c1", `{"command_id":"c2"}`, `decode changelog key "cart-command/c1": the value is the entity of "cart-command/c2"`},
		{"a decided under a cart key", "cart/c1", `{"command_id":"c1"}`, `decode changelog key "cart/c1": the value is the entity of "cart/"`},
		{"bad time", "cart/c", `{"cart_id":"c","updated_at":"yesterday"}`, `decode changelog key "cart/c": want an RFC 3339 time string`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := DecodeChange(tc.key, []byte(tc.val))
			require.Error(t, err)
			if strings.HasSuffix(tc.err, ": ") { // the rest is encoding/json's
				assert.True(t, strings.HasPrefix(err.Error(), tc.err), err.Error())
			} else {
				assert.Equal(t, tc.err, err.Error())
			}
			assert.True(t, c.Tombstone(), "no entity with an error")
		})
	}
	// A nil value is a tombstone of any coordinator key, an empty one is not.
	c, err := DecodeChange("cart/c", nil)
	require.NoError(t, err)
	assert.Equal(t, Change{Key: "cart/c"}, c)
	_, err = DecodeChange("cart/c", []byte{})
	assert.Error(t, err)
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

// FuzzDecodeChange: whatever DecodeChange accepts encodes back to a value that
// decodes to the same change.
func FuzzDecodeChange(f *testing.F) {
	f.Add("cart/c", []byte(`{"cart_id":"c","holds":[{"sku":"A","reservation_id":"r","quantity":1,"expires_at":"2026-01-01T00:15:00.000Z"}],"version":1}`))
	f.Add("cart/c", []byte(`{"cart_id":"c","saga":{"command":{"command_id":"k","type":"cart.commit","cart_id":"c","order_id":"o"},"phase":"prepare","lines":[{"sku":"A","pending":true}]}}`))
	f.Add("cart-command/k", []byte(`{"command_id":"k","result":{"command_id":"k","lines":[]},"version":1}`))
	f.Add("cart/c", []byte(`null`))
	f.Add("stock/A", []byte(`{}`))
	f.Fuzz(func(t *testing.T, key string, val []byte) {
		c, err := DecodeChange(key, val)
		if err != nil {
			return
		}
		b, err := EncodeChange(&c)
		require.NoError(t, err)
		again, err := DecodeChange(key, b)
		require.NoError(t, err)
		require.Equal(t, c, again)
	})
}
