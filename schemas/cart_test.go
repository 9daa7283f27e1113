package schemas

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cartJSON builds a cart command record: base fields, overridden or (with a
// nil value) removed by change.
func cartJSON(t *testing.T, base map[string]any, change map[string]any) []byte {
	t.Helper()
	m := map[string]any{}
	for k, v := range base {
		m[k] = v
	}
	for k, v := range change {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return b
}

// lines returns n cart lines of distinct SKUs, each as a JSON object.
func lines(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = map[string]any{"sku": fmt.Sprintf("SKU-%d", i), "quantity": 1}
	}
	return out
}

// TestDecodeCartCommand: what DecodeCartCommand sends to the DLQ
// (*UndecodableError), what it rejects with a *FieldError naming the field
// (a field of the wrong JSON type, the line included), and what it accepts.
func TestDecodeCartCommand(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		undec string // a substring of the *UndecodableError message
		field string // the *FieldError field; "" with undec "" means no error
	}{
		{"valid", `{"command_id":"c","type":"cart.reserve","cart_id":"k","items":[{"sku":"A","quantity":1}]}`, "", ""},
		{"unknown fields", `{"command_id":"c","type":"cart.release","cart_id":"k","x":{"y":[1]}}`, "", ""},
		{"null fields are absent", `{"command_id":"c","type":"cart.reserve","cart_id":"k","ttl_seconds":null,"items":null}`, "", ""},
		{"not JSON", `cart.reserve`, "not a JSON object", ""},
		{"empty", ``, "not a JSON object", ""},
		{"truncated", `{"command_id":"c","items":[`, "not a JSON object", ""},
		{"JSON array", `[{"command_id":"c"}]`, "not a JSON object", ""},
		{"JSON string", `"c"`, "not a JSON object", ""},
		{"JSON null", `null`, "missing command_id", ""},
		{"missing command_id", `{"type":"cart.release","cart_id":"k"}`, "missing command_id", ""},
		{"empty command_id", `{"command_id":"","type":"cart.release","cart_id":"k"}`, "missing command_id", ""},
		{"command_id number", `{"command_id":7,"type":"cart.release","cart_id":"k"}`, "command_id is not a string", ""},
		{"command_id too long", `{"command_id":"` + strings.Repeat("c", MaxIDLen+1) + `","type":"cart.release","cart_id":"k"}`,
			"command_id longer than 128", ""},
		{"command_id 128 characters of 2 bytes", `{"command_id":"` + strings.Repeat("é", MaxIDLen) + `","type":"cart.release","cart_id":"k"}`, "", ""},
		{"missing command_id with a type error", `{"type":1,"cart_id":"k"}`, "missing command_id", ""},
		{"type number", `{"command_id":"c","type":1,"cart_id":"k"}`, "", "type"},
		{"cart_id number", `{"command_id":"c","type":"cart.release","cart_id":9}`, "", "cart_id"},
		{"cart_id object", `{"command_id":"c","type":"cart.release","cart_id":{}}`, "", "cart_id"},
		{"reason bool", `{"command_id":"c","type":"cart.release","cart_id":"k","reason":true}`, "", "reason"},
		{"issued_at number", `{"command_id":"c","type":"cart.release","cart_id":"k","issued_at":1}`, "", "issued_at"},
		{"order_id number", `{"command_id":"c","type":"cart.commit","cart_id":"k","order_id":1}`, "", "order_id"},
		{"ttl_seconds string", `{"command_id":"c","type":"cart.reserve","cart_id":"k","ttl_seconds":"900"}`, "", "ttl_seconds"},
		{"ttl_seconds fraction", `{"command_id":"c","type":"cart.reserve","cart_id":"k","ttl_seconds":1.5}`, "", "ttl_seconds"},
		{"items object", `{"command_id":"c","type":"cart.reserve","cart_id":"k","items":{"sku":"A","quantity":1}}`, "", "items"},
		{"items string", `{"command_id":"c","type":"cart.reserve","cart_id":"k","items":"A"}`, "", "items"},
		{"line 0 not an object", `{"command_id":"c","type":"cart.reserve","cart_id":"k","items":["A"]}`, "", "items[0]"},
		{"line 1 an array", `{"command_id":"c","type":"cart.reserve","cart_id":"k","items":[{"sku":"A","quantity":1},[1]]}`, "", "items[1]"},
		{"line 2 quantity string", `{"command_id":"c","type":"cart.reserve","cart_id":"k","items":[{"sku":"A","quantity":1},{"sku":"B","quantity":1},{"sku":"C","quantity":"2"}]}`,
			"", "items[2].quantity"},
		{"line 0 quantity fraction", `{"command_id":"c","type":"cart.reserve","cart_id":"k","items":[{"sku":"A","quantity":1.5}]}`, "", "items[0].quantity"},
		{"line 0 quantity exponent", `{"command_id":"c","type":"cart.reserve","cart_id":"k","items":[{"sku":"A","quantity":1e0}]}`, "", "items[0].quantity"},
		{"line 0 quantity above int64", `{"command_id":"c","type":"cart.reserve","cart_id":"k","items":[{"sku":"A","quantity":9223372036854775808}]}`,
			"", "items[0].quantity"},
		{"line 1 sku number", `{"command_id":"c","type":"cart.reserve","cart_id":"k","items":[{"sku":"A","quantity":1},{"sku":2,"quantity":1}]}`, "", "items[1].sku"},
		{"line 1 reservation_id number", `{"command_id":"c","type":"cart.reserve","cart_id":"k","items":[{"sku":"A","quantity":1},{"sku":"B","quantity":1,"reservation_id":3}]}`,
			"", "items[1].reservation_id"},
		{"the first of two bad lines", `{"command_id":"c","type":"cart.reserve","cart_id":"k","items":[{"sku":"A","quantity":1},{"sku":"B","quantity":true},{"sku":3,"quantity":1}]}`,
			"", "items[1].quantity"},
		{"field case variants", `{"command_id":"c","type":"cart.reserve","cart_id":"k","Items":[{"SKU":"A","Quantity":"1"}]}`, "", "items[0].quantity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := DecodeCartCommand([]byte(tt.in), 0)
			switch {
			case tt.undec != "":
				var ue *UndecodableError
				require.ErrorAs(t, err, &ue)
				assert.Contains(t, ue.Msg, tt.undec)
			case tt.field != "":
				var fe *FieldError
				require.ErrorAs(t, err, &fe)
				assert.Equal(t, tt.field, fe.Field, "%v", fe)
				assert.Contains(t, fe.Msg, "got JSON", "%v", fe)
				assert.NotContains(t, fe.Msg, "slice", "%v: say array", fe)
				assert.NotContains(t, fe.Msg, "struct", "%v: say object", fe)
				assert.Equal(t, "c", c.CommandID, "the command_id must be usable for the rejected result")
			default:
				require.NoError(t, err)
			}
		})
	}
}

func TestDecodeCartCommandSizeLimit(t *testing.T) {
	b := readFile(t, goldenDir, "cart-command.cart.reserve.json")
	_, err := DecodeCartCommand(b, len(b))
	require.NoError(t, err)
	_, err = DecodeCartCommand(b, len(b)-1)
	var ue *UndecodableError
	require.ErrorAs(t, err, &ue)
	assert.Contains(t, ue.Msg, "exceeds the limit")
}

// TestCartCommandValidate: every rule of CartCommand.Validate, through
// DecodeCartCommand (so the JSON shapes are the ones on the wire).
func TestCartCommandValidate(t *testing.T) {
	reserve := map[string]any{"command_id": "cc-1", "type": TypeCartReserve, "cart_id": "cart-9", "items": lines(3)}
	commit := map[string]any{"command_id": "cc-1", "type": TypeCartCommit, "cart_id": "cart-9", "order_id": "o-1"}
	release := map[string]any{"command_id": "cc-1", "type": TypeCartRelease, "cart_id": "cart-9"}
	line := func(sku string, q any, rid string) map[string]any {
		m := map[string]any{"sku": sku}
		if q != nil {
			m["quantity"] = q
		}
		if rid != "" {
			m["reservation_id"] = rid
		}
		return m
	}
	long := func(c string, n int) string { return strings.Repeat(c, n) }
	tests := []struct {
		name   string
		base   map[string]any
		change map[string]any
		field  string // "" = valid
	}{
		{"reserve", reserve, nil, ""},
		{"release", release, nil, ""},
		{"commit", commit, nil, ""},

		{"missing type", reserve, map[string]any{"type": nil}, "type"},
		{"empty type", reserve, map[string]any{"type": ""}, "type"},
		{"unknown type", reserve, map[string]any{"type": "cart.refill"}, "type"},
		{"a per-SKU type", reserve, map[string]any{"type": TypeReserve}, "type"},
		{"type case", reserve, map[string]any{"type": "Cart.Reserve"}, "type"},

		{"missing cart_id", release, map[string]any{"cart_id": nil}, "cart_id"},
		{"empty cart_id", release, map[string]any{"cart_id": ""}, "cart_id"},
		{"cart_id 128", release, map[string]any{"cart_id": long("k", MaxIDLen)}, ""},
		{"cart_id 128 characters of 3 bytes", release, map[string]any{"cart_id": long("漢", MaxIDLen)}, ""},
		{"cart_id 129", release, map[string]any{"cart_id": long("k", MaxIDLen+1)}, "cart_id"},
		{"cart_id checked before type", release, map[string]any{"cart_id": "", "type": "x"}, "cart_id"},

		{"reason 256", release, map[string]any{"reason": long("x", MaxReasonLen)}, ""},
		{"reason 257", release, map[string]any{"reason": long("x", MaxReasonLen+1)}, "reason"},
		{"issued_at not checked", release, map[string]any{"issued_at": "yesterday"}, ""},

		{"missing items", reserve, map[string]any{"items": nil}, "items"},
		{"0 lines", reserve, map[string]any{"items": []any{}}, "items"},
		{"1 line", reserve, map[string]any{"items": lines(1)}, ""},
		{"100 lines", reserve, map[string]any{"items": lines(MaxCartItems)}, ""},
		{"101 lines", reserve, map[string]any{"items": lines(MaxCartItems + 1)}, "items"},
		{"a null line", reserve, map[string]any{"items": []any{line("A", 1, ""), nil}}, "items[1].sku"},

		{"duplicate sku", reserve, map[string]any{"items": []any{line("A", 1, ""), line("B", 1, ""), line("A", 2, "")}}, "items[2].sku"},
		{"sku case differs", reserve, map[string]any{"items": []any{line("A", 1, ""), line("a", 1, "")}}, ""},
		{"missing sku", reserve, map[string]any{"items": []any{line("A", 1, ""), map[string]any{"quantity": 1}}}, "items[1].sku"},
		{"empty sku", reserve, map[string]any{"items": []any{line("", 1, "")}}, "items[0].sku"},
		{"sku with a space", reserve, map[string]any{"items": []any{line("SKU 1", 1, "")}}, "items[0].sku"},
		{"sku unicode", reserve, map[string]any{"items": []any{line("SKÜ", 1, "")}}, "items[0].sku"},
		{"sku 128", reserve, map[string]any{"items": []any{line(long("S", MaxIDLen), 1, "")}}, ""},
		{"sku 129", reserve, map[string]any{"items": []any{line(long("S", MaxIDLen+1), 1, "")}}, "items[0].sku"},
		{"sku of every allowed character", reserve, map[string]any{"items": []any{line("aZ09._:/-", 1, "")}}, ""},

		{"missing quantity", reserve, map[string]any{"items": []any{line("A", 1, ""), line("B", nil, "")}}, "items[1].quantity"},
		{"quantity 0", reserve, map[string]any{"items": []any{line("A", 0, "")}}, "items[0].quantity"},
		{"quantity negative", reserve, map[string]any{"items": []any{line("A", 1, ""), line("B", 1, ""), line("C", -1, "")}}, "items[2].quantity"},
		{"quantity max int64", reserve, map[string]any{"items": []any{line("A", json.Number("9223372036854775807"), "")}}, ""},

		{"reservation ids distinct", reserve, map[string]any{"items": []any{line("A", 1, "r-1"), line("B", 1, "r-2")}}, ""},
		{"duplicate reservation id", reserve, map[string]any{"items": []any{line("A", 1, "r-1"), line("B", 1, ""), line("C", 1, "r-1")}}, "items[2].reservation_id"},
		{"lines without reservation id share the default", reserve, map[string]any{"items": []any{line("A", 1, ""), line("B", 1, "")}}, ""},
		{"explicit id equal to the command_id", reserve, map[string]any{"items": []any{line("A", 1, "cc-1"), line("B", 1, "")}}, ""},
		{"reservation id 128", reserve, map[string]any{"items": []any{line("A", 1, long("r", MaxIDLen))}}, ""},
		{"reservation id 129", reserve, map[string]any{"items": []any{line("A", 1, long("r", MaxIDLen+1))}}, "items[0].reservation_id"},
		{"the first bad line is named", reserve, map[string]any{"items": []any{line("A", 1, ""), line("B", 0, ""), line("", 1, "")}}, "items[1].quantity"},

		{"ttl absent", reserve, map[string]any{"ttl_seconds": nil}, ""},
		{"ttl 1", reserve, map[string]any{"ttl_seconds": 1}, ""},
		{"ttl 86400", reserve, map[string]any{"ttl_seconds": MaxTTLSeconds}, ""},
		{"ttl 0", reserve, map[string]any{"ttl_seconds": 0}, "ttl_seconds"},
		{"ttl -1", reserve, map[string]any{"ttl_seconds": -1}, "ttl_seconds"},
		{"ttl 86401", reserve, map[string]any{"ttl_seconds": MaxTTLSeconds + 1}, "ttl_seconds"},
		{"ttl checked before the lines", reserve, map[string]any{"ttl_seconds": 0, "items": nil}, "ttl_seconds"},

		{"commit without order_id", commit, map[string]any{"order_id": nil}, "order_id"},
		{"commit with an empty order_id", commit, map[string]any{"order_id": ""}, "order_id"},
		{"commit order_id 128", commit, map[string]any{"order_id": long("o", MaxIDLen)}, ""},
		{"commit order_id 129", commit, map[string]any{"order_id": long("o", MaxIDLen+1)}, "order_id"},
		{"commit ignores items", commit, map[string]any{"items": []any{}}, ""},
		{"release ignores order_id and items", release, map[string]any{"order_id": long("o", MaxIDLen+1), "items": lines(MaxCartItems + 1)}, ""},
		{"reserve ignores order_id", reserve, map[string]any{"order_id": ""}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := DecodeCartCommand(cartJSON(t, tt.base, tt.change), 0)
			require.NoError(t, err)
			fe := c.Validate()
			if tt.field == "" {
				assert.Nil(t, fe)
				return
			}
			require.NotNil(t, fe, "Validate accepted it")
			assert.Equal(t, tt.field, fe.Field, "%v", fe)
			assert.True(t, strings.HasPrefix(fe.Error(), tt.field+": "), fe.Error())
		})
	}
}

// TestCartCommandValidateCommandID: Validate checks command_id too, for a
// CartCommand built in Go rather than decoded.
func TestCartCommandValidateCommandID(t *testing.T) {
	c := CartCommand{Type: TypeCartRelease, CartID: "k"}
	require.NotNil(t, c.Validate())
	assert.Equal(t, "command_id", c.Validate().Field)
	c.CommandID = strings.Repeat("c", MaxIDLen+1)
	assert.Equal(t, "command_id", c.Validate().Field)
	c.CommandID = "c"
	assert.Nil(t, c.Validate())
}

func TestCartCommandTTL(t *testing.T) {
	c := CartCommand{}
	assert.Equal(t, int64(DefaultTTLSecs), c.TTL())
	ttl := int64(60)
	c.TTLSeconds = &ttl
	assert.Equal(t, int64(60), c.TTL())
}

// TestCartCommandReply: the reply route of a cart command (extension (l)):
// Validate's rules (as for a per-SKU command, without reply_to "cart") and
// Reply, which names the partition only for a valid route.
func TestCartCommandReply(t *testing.T) {
	p := func(v int64) *int64 { return &v }
	for _, tt := range []struct {
		name      string
		replyTo   string
		partition *int64
		field     string // the FieldError's field; "" valid
		route     int32  // Reply's partition; -1 none
	}{
		{"none", "", nil, "", -1},
		{"replies 0", ReplyToReplies, p(0), "", 0},
		{"replies max", ReplyToReplies, p(MaxReplyPartition), "", MaxReplyPartition},
		{"replies without partition", ReplyToReplies, nil, "reply_partition", -1},
		{"replies negative", ReplyToReplies, p(-1), "reply_partition", -1},
		{"replies above int32", ReplyToReplies, p(MaxReplyPartition + 1), "reply_partition", -1},
		{"partition without reply_to", "", p(3), "reply_partition", -1},
		{"reply_to cart", ReplyToCart, nil, "reply_to", -1},
		{"reply_to cart with partition", ReplyToCart, p(3), "reply_to", -1},
		{"reply_to unknown", "results", p(3), "reply_to", -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := CartCommand{CommandID: "c", Type: TypeCartRelease, CartID: "k", ReplyTo: tt.replyTo, ReplyPartition: tt.partition}
			fe := c.Validate()
			if tt.field == "" {
				assert.Nil(t, fe)
			} else if assert.NotNil(t, fe) {
				assert.Equal(t, tt.field, fe.Field, fe.Error())
			}
			got, ok := c.Reply()
			if tt.route < 0 {
				assert.False(t, ok)
				return
			}
			assert.True(t, ok)
			assert.Equal(t, tt.route, got)
			back, err := DecodeCartCommand(AppendCartCommand(nil, &c), 0)
			require.NoError(t, err)
			assert.Equal(t, c, back, "the route survives the codec")
		})
	}
}
