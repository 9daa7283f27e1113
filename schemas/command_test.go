package schemas

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCommandValidateCartExtensions: Command.Validate for prepare and
// unprepare (extension (j)), for reply_to / cart_id on every command type
// (extension (i)) and for reply_to "replies" / reply_partition (extension (l)).
func TestCommandValidateCartExtensions(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	valid := map[string]Command{
		TypeStockSet:    {Type: TypeStockSet, OnHand: i64(1)},
		TypeStockAdjust: {Type: TypeStockAdjust, Delta: i64(-1)},
		TypeReserve:     {Type: TypeReserve, ReservationID: "r-1", Quantity: i64(1)},
		TypeAdjust:      {Type: TypeAdjust, ReservationID: "r-1", Quantity: i64(2)},
		TypeRelease:     {Type: TypeRelease, ReservationID: "r-1"},
		TypeExtend:      {Type: TypeExtend, ReservationID: "r-1"},
		TypeCommit:      {Type: TypeCommit, ReservationID: "r-1", OrderID: "o-1"},
		TypePrepare:     {Type: TypePrepare, ReservationID: "r-1", OrderID: "o-1"},
		TypeUnprepare:   {Type: TypeUnprepare, ReservationID: "r-1"},
	}
	require.Len(t, valid, len(CommandTypes))
	with := func(typ string, f func(c *Command)) Command {
		c := valid[typ]
		c.CommandID, c.SKU = "cart-3f2a9c1e5b7d4f60a8e2c4b6d8f01357", "SKU-1"
		f(&c)
		return c
	}
	long := strings.Repeat("k", MaxIDLen+1)
	type row struct {
		name  string
		cmd   Command
		field string // "" = valid
	}
	tests := []row{
		{"prepare", with(TypePrepare, func(*Command) {}), ""},
		{"prepare without order_id", with(TypePrepare, func(c *Command) { c.OrderID = "" }), "order_id"},
		{"prepare order_id 129", with(TypePrepare, func(c *Command) { c.OrderID = long }), "order_id"},
		{"prepare without reservation_id", with(TypePrepare, func(c *Command) { c.ReservationID = "" }), "reservation_id"},
		{"prepare reservation_id 129", with(TypePrepare, func(c *Command) { c.ReservationID = long }), "reservation_id"},
		{"prepare ignores quantity", with(TypePrepare, func(c *Command) { c.Quantity = i64(0) }), ""},
		{"unprepare", with(TypeUnprepare, func(*Command) {}), ""},
		{"unprepare without reservation_id", with(TypeUnprepare, func(c *Command) { c.ReservationID = "" }), "reservation_id"},
		{"unprepare ignores order_id", with(TypeUnprepare, func(c *Command) { c.OrderID = long }), ""},
		{"prepare with a bad sku", with(TypePrepare, func(c *Command) { c.SKU = "SKU 1" }), "sku"},
		{"reply_to of another value", with(TypeRelease, func(c *Command) { c.ReplyTo, c.CartID = "results", "cart-9" }), "reply_to"},
		{"reply_to case", with(TypeRelease, func(c *Command) { c.ReplyTo, c.CartID = "Cart", "cart-9" }), "reply_to"},
		{"reply_to checked before the type's fields", with(TypeRelease, func(c *Command) {
			c.ReplyTo, c.ReservationID = ReplyToCart, ""
		}), "cart_id"},
	}
	for _, typ := range CommandTypes {
		tests = append(tests,
			row{typ + " valid", with(typ, func(*Command) {}), ""},
			row{typ + " reply_to cart", with(typ, func(c *Command) { c.ReplyTo, c.CartID = ReplyToCart, "cart-9" }), ""},
			row{typ + " reply_to without cart_id", with(typ, func(c *Command) { c.ReplyTo = ReplyToCart }), "cart_id"},
			row{typ + " cart_id without reply_to", with(typ, func(c *Command) { c.CartID = "cart-9" }), ""},
			row{typ + " cart_id 128", with(typ, func(c *Command) { c.CartID = strings.Repeat("漢", MaxIDLen) }), ""},
			row{typ + " cart_id 129", with(typ, func(c *Command) { c.CartID = long }), "cart_id"},
			row{typ + " reply_to cart_id 129", with(typ, func(c *Command) { c.ReplyTo, c.CartID = ReplyToCart, long }), "cart_id"},
			// extension (l)
			row{typ + " reply_to replies", with(typ, func(c *Command) { c.ReplyTo, c.ReplyPartition = ReplyToReplies, i64(0) }), ""},
			row{typ + " reply_partition max", with(typ, func(c *Command) { c.ReplyTo, c.ReplyPartition = ReplyToReplies, i64(MaxReplyPartition) }), ""},
			row{typ + " reply_to replies without reply_partition", with(typ, func(c *Command) { c.ReplyTo = ReplyToReplies }), "reply_partition"},
			row{typ + " reply_partition negative", with(typ, func(c *Command) { c.ReplyTo, c.ReplyPartition = ReplyToReplies, i64(-1) }), "reply_partition"},
			row{typ + " reply_partition above int32", with(typ, func(c *Command) { c.ReplyTo, c.ReplyPartition = ReplyToReplies, i64(MaxReplyPartition+1) }), "reply_partition"},
			row{typ + " reply_partition without reply_to", with(typ, func(c *Command) { c.ReplyPartition = i64(3) }), "reply_partition"},
			row{typ + " reply_partition with reply_to cart", with(typ, func(c *Command) {
				c.ReplyTo, c.CartID, c.ReplyPartition = ReplyToCart, "cart-9", i64(3)
			}), "reply_partition"},
		)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fe := tt.cmd.Validate()
			if tt.field == "" {
				assert.Nil(t, fe)
				return
			}
			require.NotNil(t, fe, "Validate accepted %+v", tt.cmd)
			assert.Equal(t, tt.field, fe.Field, "%v", fe)
		})
	}
}

// TestDecodeCommandReplyTo: reply_to and cart_id decode on any command type,
// and a reply_to of the wrong JSON type is a field error.
func TestDecodeCommandReplyTo(t *testing.T) {
	c, err := DecodeCommand([]byte(`{"command_id":"c","type":"unprepare","sku":"S","reservation_id":"r","cart_id":"k","reply_to":"cart"}`), 0)
	require.NoError(t, err)
	assert.Equal(t, Command{CommandID: "c", Type: TypeUnprepare, SKU: "S", ReservationID: "r", CartID: "k", ReplyTo: ReplyToCart}, c)
	assert.Nil(t, c.Validate())
	out, err := json.Marshal(c)
	require.NoError(t, err)
	assert.JSONEq(t, `{"command_id":"c","type":"unprepare","sku":"S","reservation_id":"r","cart_id":"k","reply_to":"cart"}`, string(out))

	_, err = DecodeCommand([]byte(`{"command_id":"c","type":"release","sku":"S","reservation_id":"r","reply_to":true}`), 0)
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "reply_to", fe.Field)
}

// TestAppendReservationPrepared: prepared is written only when true, after
// store_id, exactly as encoding/json writes it.
func TestAppendReservationPrepared(t *testing.T) {
	for _, r := range []Reservation{
		{ReservationID: "r", SKU: "S", Quantity: 1, Status: StatusActive, Prepared: true},
		{ReservationID: "r", SKU: "S", Quantity: 1, Status: StatusActive, StoreID: "s", Prepared: true},
		{ReservationID: "r", SKU: "S", Quantity: 1, Status: StatusConsumed},
	} {
		want, err := json.Marshal(&r)
		require.NoError(t, err)
		got := appendReservation(nil, &r)
		assert.Equal(t, string(want), string(got))
		assert.Equal(t, r.Prepared, strings.Contains(string(got), `"prepared":true`))
		assert.NotContains(t, string(got), `"prepared":false`)
	}
}

// TestDecodeCommandReplyPartition: reply_partition decodes on any command
// type and survives AppendCommand; a reply_partition of the wrong JSON type
// is a field error naming it.
func TestDecodeCommandReplyPartition(t *testing.T) {
	in := `{"command_id":"c","type":"release","sku":"S","reservation_id":"r","reply_to":"replies","reply_partition":7}`
	c, err := DecodeCommand([]byte(in), 0)
	require.NoError(t, err)
	require.NotNil(t, c.ReplyPartition)
	assert.Equal(t, int64(7), *c.ReplyPartition)
	assert.Equal(t, ReplyToReplies, c.ReplyTo)
	assert.Nil(t, c.Validate())
	assert.JSONEq(t, in, string(AppendCommand(nil, &c)))

	for _, bad := range []string{`"7"`, `1.5`, `true`} {
		_, err = DecodeCommand([]byte(`{"command_id":"c","type":"release","sku":"S","reservation_id":"r","reply_to":"replies","reply_partition":`+bad+`}`), 0)
		var fe *FieldError
		require.ErrorAs(t, err, &fe, bad)
		assert.Equal(t, "reply_partition", fe.Field)
		c, _ = DecodeCommand([]byte(`{"command_id":"c","type":"release","sku":"S","reservation_id":"r","reply_to":"replies","reply_partition":`+bad+`}`), 0)
		assert.Nil(t, c.ReplyPartition, "%s: a reply_partition of the wrong type is no route (not partition 0)", bad)
		cc, err := DecodeCartCommand([]byte(`{"command_id":"c","type":"cart.release","cart_id":"k","reply_to":"replies","reply_partition":`+bad+`}`), 0)
		require.ErrorAs(t, err, &fe, bad)
		assert.Equal(t, "reply_partition", fe.Field)
		assert.Nil(t, cc.ReplyPartition, "%s: a cart command's reply_partition of the wrong type is no route", bad)
		_, routed := cc.Reply()
		assert.False(t, routed)
	}
	// Only the first type error is reported: a reply_partition of the wrong
	// type after another one is no route either.
	c, err = DecodeCommand([]byte(`{"command_id":"c","type":"reserve","sku":"S","reservation_id":"r","quantity":"2","reply_to":"replies","reply_partition":"7"}`), 0)
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "quantity", fe.Field)
	assert.Nil(t, c.ReplyPartition)
	cc, err := DecodeCartCommand([]byte(`{"command_id":"c","type":"cart.reserve","cart_id":"k","ttl_seconds":"9","reply_to":"replies","reply_partition":"7"}`), 0)
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "ttl_seconds", fe.Field)
	assert.Nil(t, cc.ReplyPartition)
	// A valid one next to another field's type error stays (the rejection
	// is routed).
	c, _ = DecodeCommand([]byte(`{"command_id":"c","type":"reserve","sku":"S","reservation_id":"r","quantity":"2","reply_to":"replies","reply_partition":7}`), 0)
	require.NotNil(t, c.ReplyPartition)
	assert.Equal(t, int64(7), *c.ReplyPartition)
}
