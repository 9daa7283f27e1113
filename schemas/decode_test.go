package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// randChange is a random entity of the key kind prefix, under its own key
// (identities are valid UTF-8: encoding replaces invalid bytes, and the
// decoded entity would name another key).
func randChange(rng *rand.Rand, prefix string) Change {
	id := func() string { return strings.ToValidUTF8(randString(rng), "\uFFFD") }
	switch prefix {
	case StockPrefix:
		s := StockEntity{SKU: id(), OnHand: rng.Int64(), Reserved: rng.Int64(), Available: -rng.Int64(),
			Version: rng.Int64(), Event: randString(rng), CommandID: randString(rng), UpdatedAt: randTime(rng)}
		if rng.IntN(2) == 0 {
			s.LowStockThreshold = ptr(rng.Int64N(5))
		}
		return Change{Key: StockKey(s.SKU), Stock: &s}
	case ReservationPrefix:
		r := ReservationEntity{Version: rng.Int64N(9), Event: randString(rng), CommandID: randString(rng), UpdatedAt: randTime(rng),
			Reservation: Reservation{ReservationID: id(), SKU: id(), Quantity: rng.Int64(), Status: randString(rng),
				ExpiresAt: randTime(rng), Extensions: rng.Int64N(3), CartID: randString(rng), OrderID: randString(rng),
				StoreID: randString(rng), Prepared: rng.IntN(2) == 0}}
		return Change{Key: ReservationKey(r.Reservation.SKU, r.Reservation.ReservationID), Reservation: &r}
	case CommandPrefix:
		c := CommandEntity{CommandID: id(), Result: randResult(rng), Version: 1, Event: EventDecided, UpdatedAt: randTime(rng)}
		return Change{Key: CommandKey(c.CommandID), Command: &c}
	case CartPrefix:
		e := randCartEntity(rng)
		e.CartID = id()
		return Change{Key: CartKey(e.CartID), Cart: &e}
	case CartCommandPrefix:
		d := randCartDecided(rng)
		d.CommandID = id()
		return Change{Key: CartCommandKey(d.CommandID), CartCommand: &d}
	}
	panic("unknown key kind " + prefix)
}

// normalized is c as encoding/json reads it back: the strings that are not
// identities may hold invalid UTF-8, which encodes as U+FFFD.
func normalized(t *testing.T, c Change) Change {
	t.Helper()
	b, err := EncodeChange(&c)
	require.NoError(t, err)
	n := Change{Key: c.Key}
	switch {
	case c.Stock != nil:
		require.NoError(t, json.Unmarshal(b, &n.Stock))
	case c.Reservation != nil:
		require.NoError(t, json.Unmarshal(b, &n.Reservation))
	case c.Command != nil:
		require.NoError(t, json.Unmarshal(b, &n.Command))
	case c.Cart != nil:
		require.NoError(t, json.Unmarshal(b, &n.Cart))
	case c.CartCommand != nil:
		require.NoError(t, json.Unmarshal(b, &n.CartCommand))
	}
	return n
}

func TestKeyKind(t *testing.T) {
	for key, want := range map[string]string{
		StockKey("A"):              StockPrefix,
		ReservationKey("a/b", "r"): ReservationPrefix,
		CommandKey("c"):            CommandPrefix,
		CartKey("c"):               CartPrefix,
		CartCommandKey("c/d"):      CartCommandPrefix,
		"stock/":                   StockPrefix,
		"cart-command/":            CartCommandPrefix,
		"cart-commandx/c":          "",
		"carts/x":                  "",
		"stock":                    "",
		"":                         "",
		"weird/x":                  "",
	} {
		assert.Equal(t, want, KeyKind(key), "key %q", key)
	}
}

// Every kind of entity survives the codec, and a nil value is the tombstone of
// a key of any kind.
func TestDecodeChangeRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, prefix := range keyPrefixes {
		for range 500 {
			c := randChange(rng, prefix)
			b, err := EncodeChange(&c)
			require.NoError(t, err)
			got, err := DecodeChange(c.Key, b)
			require.NoError(t, err, "%s: %s", c.Key, b)
			require.Equal(t, normalized(t, c), got, "%s: %s", c.Key, b)
			require.False(t, got.Tombstone())
		}
		key := prefix + "k"
		tomb, err := DecodeChange(key, nil)
		require.NoError(t, err)
		assert.Equal(t, Change{Key: key}, tomb)
		assert.True(t, tomb.Tombstone())
		b, err := EncodeChange(&tomb)
		require.NoError(t, err)
		assert.Nil(t, b, "a tombstone encodes as no value")
		assert.Zero(t, tomb.UpdatedAt())
	}
	tomb, err := DecodeChange("weird/x", nil)
	require.NoError(t, err, "a nil value is a tombstone whatever the key")
	assert.True(t, tomb.Tombstone())
}

// Values that cannot be what the processor wrote are errors that name the key
// and wrap their cause, so that a corrupt changelog or state store is detected
// (restore and the partition's state reads treat a decode error as
// corruption; the sink records the value as a bad record).
func TestDecodeChangeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, key, val string
		is             error  // the cause errors.Is finds; nil: encoding/json's or the time's
		msg            string // the whole message; ending in ": ", a prefix (the rest is encoding/json's)
	}{
		{"unknown kind", "weird/x", `{}`, ErrUnknownKeyKind, `decode changelog key "weird/x": unknown key kind`},
		{"empty key", "", `{}`, ErrUnknownKeyKind, `decode changelog key "": unknown key kind`},
		{"invalid JSON", "cart/c", `{"cart_id":`, nil, `decode changelog key "cart/c": `},
		{"empty value", "stock/A", ``, nil, `decode changelog key "stock/A": `},
		{"JSON null stock", "stock/A", `null`, ErrNotEntity, `decode changelog key "stock/A": JSON null is not an entity`},
		{"JSON null stock without sku", "stock/", `null`, ErrNotEntity, `decode changelog key "stock/": JSON null is not an entity`},
		{"JSON null reservation", "reservation/A/r", `null`, ErrNotEntity, `decode changelog key "reservation/A/r": JSON null is not an entity`},
		{"JSON null command", "command/c", `null`, ErrNotEntity, `decode changelog key "command/c": JSON null is not an entity`},
		{"JSON null cart", "cart/c", `null`, ErrNotEntity, `decode changelog key "cart/c": JSON null is not an entity`},
		{"JSON null decided", "cart-command/c1", ` null `, ErrNotEntity, `decode changelog key "cart-command/c1": JSON null is not an entity`},
		{"array", "cart/c", `[]`, nil, `decode changelog key "cart/c": `},
		{"string", "cart-command/c1", `"x"`, nil, `decode changelog key "cart-command/c1": `},
		{"number", "stock/A", `1`, nil, `decode changelog key "stock/A": `},
		{"field of the wrong type", "stock/A", `{"sku":"A","on_hand":"1"}`, nil, `decode changelog key "stock/A": `},
		{"int64 overflow", "stock/A", `{"sku":"A","version":9223372036854775808}`, nil, `decode changelog key "stock/A": `},
		{"stock without sku", "stock/A", `{}`, ErrKeyMismatch, `decode changelog key "stock/A": the value is the entity of another key: "stock/"`},
		{"stock of another sku", "stock/A", `{"sku":"B","on_hand":1,"reserved":0,"available":1}`, ErrKeyMismatch,
			`decode changelog key "stock/A": the value is the entity of another key: "stock/B"`},
		{"reservation of another id", "reservation/A/r", `{"reservation":{"reservation_id":"x","sku":"A","quantity":1,"status":"active"}}`,
			ErrKeyMismatch, `decode changelog key "reservation/A/r": the value is the entity of another key: "reservation/A/x"`},
		{"reservation of another sku", "reservation/A/r", `{"reservation":{"reservation_id":"r","sku":"B","quantity":1,"status":"active"}}`,
			ErrKeyMismatch, `decode changelog key "reservation/A/r": the value is the entity of another key: "reservation/B/r"`},
		{"reservation id with a slash, unescaped key", "reservation/A/r/1", `{"reservation":{"reservation_id":"r/1","sku":"A"}}`,
			ErrKeyMismatch, `decode changelog key "reservation/A/r/1": the value is the entity of another key: "reservation/A/r%2F1"`},
		{"command of another id", "command/c", `{"command_id":"d","result":{"command_id":"d"}}`, ErrKeyMismatch,
			`decode changelog key "command/c": the value is the entity of another key: "command/d"`},
		{"cart of another key", "cart/c", `{"cart_id":"d"}`, ErrKeyMismatch, `decode changelog key "cart/c": the value is the entity of another key: "cart/d"`},
		{"cart without id", "cart/c", `{}`, ErrKeyMismatch, `decode changelog key "cart/c": the value is the entity of another key: "cart/"`},
		{"decided of another key", "cart-command/c1", `{"command_id":"c2"}`, ErrKeyMismatch,
			`decode changelog key "cart-command/c1": the value is the entity of another key: "cart-command/c2"`},
		{"a decided under a cart key", "cart/c1", `{"command_id":"c1"}`, ErrKeyMismatch,
			`decode changelog key "cart/c1": the value is the entity of another key: "cart/"`},
		{"a stock under a command key", "command/A", `{"sku":"A"}`, ErrKeyMismatch,
			`decode changelog key "command/A": the value is the entity of another key: "command/"`},
		{"bad time", "cart/c", `{"cart_id":"c","updated_at":"yesterday"}`, errBadTime, `decode changelog key "cart/c": want an RFC 3339 time string`},
		{"bad expiry", "reservation/A/r", `{"reservation":{"reservation_id":"r","sku":"A","expires_at":"yesterday"}}`, errBadTime,
			`decode changelog key "reservation/A/r": want an RFC 3339 time string`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := DecodeChange(tc.key, []byte(tc.val))
			require.Error(t, err)
			if strings.HasSuffix(tc.msg, ": ") {
				assert.True(t, strings.HasPrefix(err.Error(), tc.msg), err.Error())
				var se *json.SyntaxError
				var te *json.UnmarshalTypeError
				assert.True(t, errors.As(err, &se) || errors.As(err, &te), "wraps encoding/json's error: %v", err)
			} else {
				assert.Equal(t, tc.msg, err.Error())
			}
			if tc.is != nil {
				assert.ErrorIs(t, err, tc.is)
			}
			assert.Equal(t, Change{Key: tc.key}, c, "no entity with an error")
		})
	}
}

func TestEncodeChangeMoreThanOne(t *testing.T) {
	_, err := EncodeChange(&Change{Key: "cart/c", Cart: &CartEntity{CartID: "c"}, CartCommand: &CartDecided{CommandID: "c"}})
	assert.EqualError(t, err, `encode changelog key "cart/c": 2 entities in one change`)
	_, err = EncodeChange(&Change{Key: "stock/A", Stock: &StockEntity{SKU: "A"}, Reservation: &ReservationEntity{}})
	assert.Error(t, err)
}

// UpdatedAt reads from the end of a value what a full decode reads, for every
// kind of entity the appenders write: an appender that wrote another field
// after updated_at fails here.
func TestUpdatedAtAgreesWithDecode(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	at := MillisOf(time.Date(2026, 3, 4, 5, 6, 7, 890e6, time.UTC))
	for _, prefix := range keyPrefixes {
		for i := range 300 {
			c := randChange(rng, prefix)
			switch i {
			case 0:
				setUpdatedAt(&c, 0) // encodes as ""
			case 1:
				setUpdatedAt(&c, at)
			}
			v, err := EncodeChange(&c)
			require.NoError(t, err)
			got, ok := UpdatedAt(v)
			require.True(t, ok, "%s: the tail of %s", prefix, v)
			d, err := DecodeChange(c.Key, v)
			require.NoError(t, err)
			require.Equal(t, d.UpdatedAt(), got, "%s: %s", prefix, v)
			require.Equal(t, c.UpdatedAt(), got, "%s: %s", prefix, v)
		}
	}
	// Anything else is declined (and then decoded).
	for _, v := range []string{
		``, `}`, `{}`, `""}`, `{"updated_at":"2026-03-04T05:06:07.890Z"}`, `{"updated_at":""}`,
		`{"a":1,"updated_at":"2026-03-04T05:06:07.890Z" }`, `{"a":1,"updated_at":"2026-13-04T05:06:07.890Z"}`,
		`{"a":1,"updated_at":"2026-03-04T05:06:07.89Z"}`, `{"a":1,"updated_at":"2026-03-04T05:06:07.890+01:00"}`,
		`{"x":"updated_at","updated_at":"2026-03-04 05:06:07.890Z"}`, `{"a":1,"updated_at":null}`,
		`{"a":1,"updated_at":"2026-03-04T05:06:07.890Z","b":2}`,
	} {
		_, ok := UpdatedAt([]byte(v))
		assert.False(t, ok, v)
	}
}

func setUpdatedAt(c *Change, at Millis) {
	switch {
	case c.Stock != nil:
		c.Stock.UpdatedAt = at
	case c.Reservation != nil:
		c.Reservation.UpdatedAt = at
	case c.Command != nil:
		c.Command.UpdatedAt = at
	case c.Cart != nil:
		c.Cart.UpdatedAt = at
	case c.CartCommand != nil:
		c.CartCommand.UpdatedAt = at
	}
}

// FuzzDecodeChange: DecodeChange never panics; anything that is not a JSON
// object is an error, and so is a key of an unknown kind; a value it reads is
// the entity of its key kind, and encodes (EncodeChange) and decodes back to
// the same change, with an updated_at that UpdatedAt reads. Seeds: the f.Add
// calls and testdata/fuzz/FuzzDecodeChange. To fuzz:
//
//	go test -run '^$' -fuzz '^FuzzDecodeChange$' -fuzztime 60s ./schemas/
func FuzzDecodeChange(f *testing.F) {
	f.Add("stock/A", []byte(`{"sku":"A","on_hand":10,"reserved":3,"available":7,"low_stock_threshold":2,"version":4,"event":"reserved","command_id":"c-1","updated_at":"2026-01-01T00:00:00.000Z"}`))
	f.Add("reservation/A/r-1", []byte(`{"reservation":{"reservation_id":"r-1","sku":"A","quantity":3,"status":"active","expires_at":"2026-01-01T00:15:00.000Z","extensions":0,"cart_id":"c","order_id":""},"version":1,"event":"reserved","command_id":"c-1","updated_at":"2026-01-01T00:00:00.000Z"}`))
	f.Add("command/c-1", []byte(`{"command_id":"c-1","result":{"command_id":"c-1","type":"reserve","sku":"A","outcome":"accepted","stock":{"on_hand":1,"reserved":1,"available":0}},"version":1,"event":"decided","updated_at":"2026-01-01T00:00:00.000Z"}`))
	f.Add("cart/c", []byte(`{"cart_id":"c","holds":[{"sku":"A","reservation_id":"r","quantity":1,"expires_at":"2026-01-01T00:15:00.000Z"}],"version":1}`))
	f.Add("cart/c", []byte(`{"cart_id":"c","saga":{"command":{"command_id":"k","type":"cart.commit","cart_id":"c","order_id":"o"},"phase":"prepare","lines":[{"sku":"A","pending":true}]}}`))
	f.Add("cart-command/k", []byte(`{"command_id":"k","result":{"command_id":"k","lines":[]},"version":1}`))
	f.Add("cart/c", []byte(`null`))
	f.Add("stock/A", []byte(`{}`))
	f.Add("weird/x", []byte(`{}`))
	f.Fuzz(func(t *testing.T, key string, val []byte) {
		if tomb, err := DecodeChange(key, nil); err != nil || !tomb.Tombstone() || tomb.Key != key {
			t.Fatalf("nil value of %q: want a tombstone, got %+v, %v", key, tomb, err)
		}
		c, err := DecodeChange(key, val)
		kind := KeyKind(key)
		switch {
		case kind == "" && err == nil:
			t.Fatalf("key %q of an unknown kind decoded without error", key)
		case !json.Valid(val) && err == nil:
			t.Fatalf("invalid JSON decoded without error: %q", val)
		case err != nil:
			if !strings.HasPrefix(err.Error(), "decode changelog key ") || !reflect.DeepEqual(c, Change{Key: key}) {
				t.Fatalf("error without context, or with an entity: %v, %+v", err, c)
			}
			return
		}
		if trimmed := strings.TrimSpace(string(val)); !strings.HasPrefix(trimmed, "{") {
			t.Fatalf("a JSON value that is not an object decoded without error: %q", val)
		}
		if c.Key != key {
			t.Fatalf("key %q, change key %q", key, c.Key)
		}
		set := []bool{c.Stock != nil, c.Reservation != nil, c.Command != nil, c.Cart != nil, c.CartCommand != nil}
		want := []bool{kind == StockPrefix, kind == ReservationPrefix, kind == CommandPrefix, kind == CartPrefix, kind == CartCommandPrefix}
		if !slices.Equal(set, want) {
			t.Fatalf("key kind %q: stock/reservation/command/cart/cart-command set %v", kind, set)
		}
		enc, err := EncodeChange(&c)
		if err != nil || enc == nil {
			t.Fatalf("encode a decoded change: %q, %v", enc, err)
		}
		back, err := DecodeChange(key, enc)
		if err != nil {
			t.Fatalf("decode the encoding %s: %v", enc, err)
		}
		if !reflect.DeepEqual(c, back) {
			t.Fatalf("round trip:\n%+v\n%+v\n(encoding %s)", c, back, enc)
		}
		if enc2, _ := EncodeChange(&back); string(enc2) != string(enc) {
			t.Fatalf("encoding not stable:\n%s\n%s", enc, enc2)
		}
		if at, ok := UpdatedAt(enc); !ok || at != c.UpdatedAt() {
			t.Fatalf("UpdatedAt of %s: %s, %v; decoded %s", enc, at, ok, c.UpdatedAt())
		}
	})
}

// ReservationTimer reads exactly what DecodeChange reads of every reservation
// entity it accepts, accepts every entity with plain ids, a known status and
// an expiry, and declines the rest (which the caller then decodes).
func TestReservationTimerAgreesWithDecode(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	statuses := []string{StatusActive, StatusReleased, StatusExpired, StatusConsumed}
	accepted, declined := 0, 0
	for i := range 2000 {
		c := randChange(rng, ReservationPrefix)
		r := &c.Reservation.Reservation
		plain := rng.IntN(4) != 0
		if plain {
			r.SKU, r.ReservationID = fmt.Sprintf("SKU-%d", rng.IntN(1000)), fmt.Sprintf("r/%d:x.y", i)
			r.Status = statuses[rng.IntN(len(statuses))]
			if r.ExpiresAt == 0 {
				r.ExpiresAt = 1
			}
			c.Key = ReservationKey(r.SKU, r.ReservationID)
		}
		v, err := EncodeChange(&c)
		require.NoError(t, err)
		sku, id, status, exp, ok := ReservationTimer(v)
		d, err := DecodeChange(c.Key, v)
		require.NoError(t, err)
		if !ok {
			declined++
			require.False(t, plain, "a plain entity was declined: %s", v)
			continue
		}
		accepted++
		want := d.Reservation.Reservation
		require.Equal(t, []any{want.SKU, want.ReservationID, want.Status, want.ExpiresAt}, []any{sku, id, status, exp}, "%s", v)
	}
	require.Positive(t, accepted)
	require.Positive(t, declined)
	for _, v := range []string{``, `{}`, `{"reservation":{}}`, `{"reservation":{"reservation_id":"r","sku":"S","quantity":1,"status":"active"}}`,
		`{"reservation":{"reservation_id":"r","sku":"S","quantity":1,"status":"active","expires_at":""}}`,
		`{"reservation":{"reservation_id":"r","sku":"S","quantity":1,"status":"gone","expires_at":"2026-03-04T05:06:07.890Z"}}`,
		`{"reservation":{"reservation_id":"r\"","sku":"S","quantity":1,"status":"active","expires_at":"2026-03-04T05:06:07.890Z"}}`,
		`{"sku":"S","on_hand":1}`,
	} {
		_, _, _, _, ok := ReservationTimer([]byte(v))
		assert.False(t, ok, v)
	}
}
