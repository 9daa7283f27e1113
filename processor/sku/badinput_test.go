package sku

// The bad input classes of the reliability requirements, each tested against the
// decoder and the pure core: the record goes to the DLQ (an *UndecodableError),
// or the core rejects it with the expected reason, and the state is unchanged
// except for the command's idempotency record. A re-sent copy is answered as a
// duplicate and changes nothing at all. The reference model decides each
// record too and must agree.

import (
	"errors"
	"maps"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/schemas"
)

type badCase struct {
	name  string
	key   string
	raw   string
	setup []string // commands decided first (key: their SKU)
	limit int      // record size limit (default: the processor's 64 KiB)

	undecodable bool   // the decoder sends the record to the DLQ
	reason      string // else: the core rejects it with this reason
	field       string // invalid_command: the field its message names
}

func badCmd(fields string) string { return `{"command_id":"bad-1",` + fields + `}` }

// The state the cases start from is fuzzSetup (fuzz_test.go): A has on_hand 9,
// reserved 5 (r1: 4, ü/1: 1), available 4, threshold 3; B is oversold
// (on_hand 2, reserved 5); sku/2 has on_hand 0.
var badCases = []badCase{
	// invalid JSON
	{name: "json/truncated", key: "A", raw: `{"command_id":"bad-1","type":`, undecodable: true},
	{name: "json/not json", key: "A", raw: `reserve 2 of A`, undecodable: true},
	{name: "json/empty record", key: "A", raw: ``, undecodable: true},
	{name: "json/array", key: "A", raw: `[{"command_id":"bad-1"}]`, undecodable: true},
	{name: "json/null", key: "A", raw: `null`, undecodable: true},
	{name: "json/string", key: "A", raw: `"bad-1"`, undecodable: true},
	{name: "json/trailing garbage", key: "A", raw: badCmd(`"type":"release","sku":"A","reservation_id":"r1"}}`), undecodable: true},

	// wrong types
	{name: "type/quantity string", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"x","quantity":"2"`), reason: "invalid_command", field: "quantity"},
	{name: "type/on_hand bool", key: "A", raw: badCmd(`"type":"stock.set","sku":"A","on_hand":true`), reason: "invalid_command", field: "on_hand"},
	{name: "type/reservation_id number", key: "A", raw: badCmd(`"type":"release","sku":"A","reservation_id":7`), reason: "invalid_command", field: "reservation_id"},
	{name: "type/type number", key: "A", raw: badCmd(`"type":7,"sku":"A"`), reason: "invalid_command", field: "type"},
	{name: "type/sku number", key: "A", raw: badCmd(`"type":"stock.set","sku":1,"on_hand":1`), reason: "invalid_command", field: "sku"},
	{name: "type/ttl_seconds string", key: "A", raw: badCmd(`"type":"extend","sku":"A","reservation_id":"r1","ttl_seconds":"60"`), reason: "invalid_command", field: "ttl_seconds"},
	{name: "type/delta object", key: "A", raw: badCmd(`"type":"stock.adjust","sku":"A","delta":{"n":1}`), reason: "invalid_command", field: "delta"},
	{name: "type/issued_at number", key: "A", raw: badCmd(`"type":"release","sku":"A","reservation_id":"r1","issued_at":1767225600`), reason: "invalid_command", field: "issued_at"},
	{name: "type/order_id array", key: "A", raw: badCmd(`"type":"commit","sku":"A","reservation_id":"r1","order_id":["o"]`), reason: "invalid_command", field: "order_id"},
	{name: "type/command_id number", key: "A", raw: `{"command_id":12,"type":"release","sku":"A","reservation_id":"r1"}`, undecodable: true},
	{name: "type/quantity fraction", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"x","quantity":1.5`), reason: "invalid_command", field: "quantity"},
	{name: "type/quantity exponent", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"x","quantity":1e2`), reason: "invalid_command", field: "quantity"},
	{name: "type/quantity 2.0", key: "A", raw: badCmd(`"type":"adjust","sku":"A","reservation_id":"r1","quantity":2.0`), reason: "invalid_command", field: "quantity"},

	// negative, zero and huge quantities
	{name: "quantity/reserve negative", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"x","quantity":-1`), reason: "invalid_command", field: "quantity"},
	{name: "quantity/reserve zero", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"x","quantity":0`), reason: "invalid_command", field: "quantity"},
	{name: "quantity/reserve missing", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"x"`), reason: "invalid_command", field: "quantity"},
	{name: "quantity/reserve null", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"x","quantity":null`), reason: "invalid_command", field: "quantity"},
	{name: "quantity/adjust zero", key: "A", raw: badCmd(`"type":"adjust","sku":"A","reservation_id":"r1","quantity":0`), reason: "invalid_command", field: "quantity"},
	{name: "quantity/adjust min int64", key: "A", raw: badCmd(`"type":"adjust","sku":"A","reservation_id":"r1","quantity":-9223372036854775808`), reason: "invalid_command", field: "quantity"},
	{name: "quantity/reserve max int64", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"x","quantity":9223372036854775807`), reason: "insufficient_stock"},
	{name: "quantity/adjust max int64", key: "A", raw: badCmd(`"type":"adjust","sku":"A","reservation_id":"r1","quantity":9223372036854775807`), reason: "insufficient_stock"},
	{name: "quantity/reserve 2^63", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"x","quantity":9223372036854775808`), reason: "invalid_command", field: "quantity"},
	{name: "quantity/reserve on oversold", key: "B", raw: badCmd(`"type":"reserve","sku":"B","reservation_id":"x","quantity":1`), reason: "insufficient_stock"},
	{name: "quantity/reserve with none available", key: "sku/2", raw: badCmd(`"type":"reserve","sku":"sku/2","reservation_id":"x","quantity":1`), reason: "insufficient_stock"},
	{name: "quantity/on_hand negative", key: "A", raw: badCmd(`"type":"stock.set","sku":"A","on_hand":-1`), reason: "invalid_command", field: "on_hand"},
	{name: "quantity/threshold negative", key: "A", raw: badCmd(`"type":"stock.set","sku":"A","on_hand":1,"low_stock_threshold":-1`), reason: "invalid_command", field: "low_stock_threshold"},
	{name: "quantity/expected_on_hand negative", key: "A", raw: badCmd(`"type":"stock.adjust","sku":"A","delta":1,"expected_on_hand":-1`), reason: "invalid_command", field: "expected_on_hand"},
	{name: "quantity/delta zero", key: "A", raw: badCmd(`"type":"stock.adjust","sku":"A","delta":0`), reason: "invalid_command", field: "delta"},
	{name: "quantity/delta below zero stock", key: "A", raw: badCmd(`"type":"stock.adjust","sku":"A","delta":-10`), reason: "negative_stock"},

	// int64 overflow in stock arithmetic
	{name: "overflow/delta max int64", key: "A", raw: badCmd(`"type":"stock.adjust","sku":"A","delta":9223372036854775807`), reason: "invalid_command", field: "delta"},
	{name: "overflow/delta min int64", key: "A", raw: badCmd(`"type":"stock.adjust","sku":"A","delta":-9223372036854775808`), reason: "negative_stock"},
	{name: "overflow/delta 2^63", key: "A", raw: badCmd(`"type":"stock.adjust","sku":"A","delta":9223372036854775808`), reason: "invalid_command", field: "delta"},
	{name: "overflow/adjust one past max int64", key: "C",
		setup: []string{`{"command_id":"s1","type":"stock.set","sku":"C","on_hand":9223372036854775807}`},
		raw:   badCmd(`"type":"stock.adjust","sku":"C","delta":1`), reason: "invalid_command", field: "delta"},
	{name: "overflow/reserve after max int64 held", key: "C",
		setup: []string{
			`{"command_id":"s1","type":"stock.set","sku":"C","on_hand":9223372036854775807}`,
			`{"command_id":"s2","type":"reserve","sku":"C","reservation_id":"all","quantity":9223372036854775807}`,
		},
		raw: badCmd(`"type":"reserve","sku":"C","reservation_id":"one","quantity":1`), reason: "insufficient_stock"},
	{name: "overflow/adjust stock with max int64 held", key: "C",
		setup: []string{
			`{"command_id":"s1","type":"stock.set","sku":"C","on_hand":9223372036854775807}`,
			`{"command_id":"s2","type":"reserve","sku":"C","reservation_id":"all","quantity":9223372036854775807}`,
		},
		raw: badCmd(`"type":"stock.adjust","sku":"C","delta":9223372036854775807`), reason: "invalid_command", field: "delta"},
	{name: "overflow/grow max int64 hold", key: "C",
		setup: []string{
			`{"command_id":"s1","type":"stock.set","sku":"C","on_hand":9223372036854775807}`,
			`{"command_id":"s2","type":"reserve","sku":"C","reservation_id":"most","quantity":9223372036854775806}`,
			`{"command_id":"s3","type":"reserve","sku":"C","reservation_id":"one","quantity":1}`,
		},
		raw: badCmd(`"type":"adjust","sku":"C","reservation_id":"one","quantity":9223372036854775807`), reason: "insufficient_stock"},
	{name: "overflow/stale expected max int64", key: "A", raw: badCmd(`"type":"stock.set","sku":"A","on_hand":1,"expected_on_hand":9223372036854775807`), reason: "stale_expected_on_hand"},

	// unknown type
	{name: "unknown type/teleport", key: "A", raw: badCmd(`"type":"teleport","sku":"A"`), reason: "invalid_command", field: "type"},
	{name: "unknown type/notice type", key: "A", raw: badCmd(`"type":"expired","sku":"A","reservation_id":"r1"`), reason: "invalid_command", field: "type"},
	{name: "unknown type/other case", key: "A", raw: badCmd(`"type":"RESERVE","sku":"A","reservation_id":"x","quantity":1`), reason: "invalid_command", field: "type"},
	{name: "unknown type/empty", key: "A", raw: badCmd(`"type":"","sku":"A"`), reason: "invalid_command", field: "type"},
	{name: "unknown type/missing", key: "A", raw: badCmd(`"sku":"A","reservation_id":"r1"`), reason: "invalid_command", field: "type"},

	// missing ids
	{name: "ids/missing command_id", key: "A", raw: `{"type":"release","sku":"A","reservation_id":"r1"}`, undecodable: true},
	{name: "ids/empty command_id", key: "A", raw: `{"command_id":"","type":"release","sku":"A","reservation_id":"r1"}`, undecodable: true},
	{name: "ids/null command_id", key: "A", raw: `{"command_id":null,"type":"release","sku":"A","reservation_id":"r1"}`, undecodable: true},
	{name: "ids/missing reservation_id", key: "A", raw: badCmd(`"type":"release","sku":"A"`), reason: "invalid_command", field: "reservation_id"},
	{name: "ids/empty reservation_id", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"","quantity":1`), reason: "invalid_command", field: "reservation_id"},
	{name: "ids/missing order_id", key: "A", raw: badCmd(`"type":"commit","sku":"A","reservation_id":"r1"`), reason: "invalid_command", field: "order_id"},
	{name: "ids/missing sku", key: "A", raw: badCmd(`"type":"stock.set","on_hand":1`), reason: "invalid_command", field: "sku"},

	// oversized records and strings
	{name: "size/record over the limit", key: "A", limit: 1024, raw: badCmd(`"type":"release","sku":"A","reservation_id":"r1","reason":"` + strings.Repeat("x", 1024) + `"`), undecodable: true},
	{name: "size/record over 64 KiB", key: "A", raw: badCmd(`"type":"release","sku":"A","reservation_id":"r1","reason":"` + strings.Repeat("x", 64<<10) + `"`), undecodable: true},
	{name: "size/reason 257 characters", key: "A", raw: badCmd(`"type":"release","sku":"A","reservation_id":"r1","reason":"` + strings.Repeat("x", 257) + `"`), reason: "invalid_command", field: "reason"},
	{name: "size/sku 129 characters", key: strings.Repeat("S", 129), raw: badCmd(`"type":"stock.set","sku":"` + strings.Repeat("S", 129) + `","on_hand":1`), reason: "invalid_command", field: "sku"},
	{name: "size/reservation_id 129 characters", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"` + strings.Repeat("r", 129) + `","quantity":1`), reason: "invalid_command", field: "reservation_id"},
	{name: "size/order_id 129 characters", key: "A", raw: badCmd(`"type":"commit","sku":"A","reservation_id":"r1","order_id":"` + strings.Repeat("o", 129) + `"`), reason: "invalid_command", field: "order_id"},
	{name: "size/cart_id 129 characters", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"x","quantity":1,"cart_id":"` + strings.Repeat("c", 129) + `"`), reason: "invalid_command", field: "cart_id"},
	{name: "size/store_id 129 characters", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"x","quantity":1,"store_id":"` + strings.Repeat("s", 129) + `"`), reason: "invalid_command", field: "store_id"},
	{name: "size/command_id 129 characters", key: "A", raw: `{"command_id":"` + strings.Repeat("c", 129) + `","type":"release","sku":"A","reservation_id":"r1"}`, undecodable: true},

	// record keys
	{name: "key/empty", key: "", raw: badCmd(`"type":"release","sku":"A","reservation_id":"r1"`), reason: "sku_mismatch"},
	{name: "key/other sku", key: "B", raw: badCmd(`"type":"release","sku":"A","reservation_id":"r1"`), reason: "sku_mismatch"},
	{name: "key/other case", key: "a", raw: badCmd(`"type":"stock.set","sku":"A","on_hand":100`), reason: "sku_mismatch"},
	{name: "key/trailing space", key: "A ", raw: badCmd(`"type":"stock.adjust","sku":"A","delta":5`), reason: "sku_mismatch"},
	{name: "key/unicode", key: "Ä", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"x","quantity":1`), reason: "sku_mismatch"},

	// unknown SKU
	{name: "unknown sku/reserve", key: "Z", raw: badCmd(`"type":"reserve","sku":"Z","reservation_id":"x","quantity":1`), reason: "unknown_sku"},
	{name: "unknown sku/stock.adjust", key: "Z", raw: badCmd(`"type":"stock.adjust","sku":"Z","delta":1`), reason: "unknown_sku"},
	{name: "unknown sku/release", key: "Z", raw: badCmd(`"type":"release","sku":"Z","reservation_id":"r1"`), reason: "unknown_reservation"},
	{name: "unknown sku/commit", key: "Z", raw: badCmd(`"type":"commit","sku":"Z","reservation_id":"r1","order_id":"o"`), reason: "unknown_reservation"},

	// TTL out of range
	{name: "ttl/reserve zero", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"x","quantity":1,"ttl_seconds":0`), reason: "invalid_command", field: "ttl_seconds"},
	{name: "ttl/reserve negative", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"x","quantity":1,"ttl_seconds":-1`), reason: "invalid_command", field: "ttl_seconds"},
	{name: "ttl/reserve 86401", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"x","quantity":1,"ttl_seconds":86401`), reason: "invalid_command", field: "ttl_seconds"},
	{name: "ttl/reserve max int64", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"x","quantity":1,"ttl_seconds":9223372036854775807`), reason: "invalid_command", field: "ttl_seconds"},
	{name: "ttl/extend zero", key: "A", raw: badCmd(`"type":"extend","sku":"A","reservation_id":"r1","ttl_seconds":0`), reason: "invalid_command", field: "ttl_seconds"},
	{name: "ttl/extend 86401", key: "A", raw: badCmd(`"type":"extend","sku":"A","reservation_id":"r1","ttl_seconds":86401`), reason: "invalid_command", field: "ttl_seconds"},

	// unicode in ids
	{name: "unicode/sku", key: "SKÜ", raw: badCmd(`"type":"stock.set","sku":"SKÜ","on_hand":1`), reason: "invalid_command", field: "sku"},
	{name: "unicode/sku with NUL", key: "A\x00", raw: badCmd(`"type":"stock.set","sku":"A\u0000","on_hand":1`), reason: "invalid_command", field: "sku"},
	{name: "unicode/command_id 129 characters", key: "A", raw: `{"command_id":"` + strings.Repeat("é", 129) + `","type":"release","sku":"A","reservation_id":"r1"}`, undecodable: true},
	{name: "unicode/reservation_id 129 characters", key: "A", raw: badCmd(`"type":"reserve","sku":"A","reservation_id":"` + strings.Repeat("ü", 129) + `","quantity":1`), reason: "invalid_command", field: "reservation_id"},
	{name: "unicode/reason 257 characters", key: "A", raw: badCmd(`"type":"release","sku":"A","reservation_id":"r1","reason":"` + strings.Repeat("é", 257) + `"`), reason: "invalid_command", field: "reason"},
	{name: "unicode/unknown reservation", key: "A", raw: `{"command_id":"bäd-1","type":"release","sku":"A","reservation_id":"ü/2"}`, reason: "unknown_reservation"},
	{name: "unicode/escaped reservation id", key: "A", raw: badCmd(`"type":"extend","sku":"A","reservation_id":"\u00fc/1"`), reason: "extension_limit"},
}

func TestBadInput(t *testing.T) {
	for _, tc := range badCases {
		t.Run(tc.name, func(t *testing.T) {
			p := newFuzzRun(t)
			for _, raw := range tc.setup {
				sku := ""
				if c, err := schemas.DecodeCommand([]byte(raw), 0); err == nil {
					sku = c.SKU
				}
				require.NoError(t, p.step(propStep{key: sku, raw: []byte(raw)}, true), "setup %s", raw)
			}
			limit := tc.limit
			if limit == 0 {
				limit = propMaxBytes
			}
			raw := []byte(tc.raw)
			cmd, err := schemas.DecodeCommand(raw, limit)
			want, decided := p.m.decide(tc.key, raw, limit, p.now)
			var ue *schemas.UndecodableError
			if tc.undecodable {
				require.ErrorAs(t, err, &ue)
				assert.NotEmpty(t, ue.Msg)
				assert.False(t, decided, "the model decides it")
				return
			}
			require.False(t, errors.As(err, &ue), "undecodable: %v", err)
			require.True(t, decided, "the model sends it to the DLQ")
			var fe *schemas.FieldError
			if err != nil {
				require.ErrorAs(t, err, &fe)
			}

			before := clone(p.st)
			in := Input{Key: tc.key, Command: cmd, FieldErr: fe, Offset: 1000}
			o := p.core.Apply(p.st, in, p.now)
			require.NoError(t, checkChanges(p.st, o.Changes))
			p.st.Apply(o.Changes)
			require.Len(t, o.Results, 1, "one result, no notices")
			r := o.Results[0]
			assert.Equal(t, schemas.OutcomeRejected, r.Outcome)
			assert.Equal(t, tc.reason, r.Reason, "message %q", r.Message)
			assert.False(t, r.Duplicate)
			assert.Equal(t, cmd.CommandID, r.CommandID)
			if tc.field != "" {
				assert.True(t, strings.HasPrefix(r.Message, tc.field+": "), "message %q names %s", r.Message, tc.field)
			}
			assert.Equal(t, withoutCommands(before), withoutCommands(p.st), "state changed")
			require.Len(t, o.Changes, 1)
			assert.Equal(t, schemas.CommandKey(cmd.CommandID), o.Changes[0].Key)
			assert.NoError(t, compareResults(o.Results, want), "model")
			assert.NoError(t, checkInvariants(before, p.st, false))

			// A retry of the same record is a duplicate of the rejection and changes nothing.
			again := p.core.Apply(p.st, in, p.now+1000)
			require.Len(t, again.Results, 1)
			assert.True(t, again.Results[0].Duplicate)
			assert.Equal(t, r.Reason, again.Results[0].Reason)
			assert.Empty(t, again.Changes)
		})
	}
}

func withoutCommands(e Entities) map[string]Change {
	out := maps.Clone(e)
	maps.DeleteFunc(out, func(k string, _ Change) bool { return strings.HasPrefix(k, schemas.CommandPrefix) })
	return out
}

// Unicode ids within the limits (which count characters, extension (h)) are
// fine: a reservation with 128-character ids of two-byte characters is
// accepted, and its key keeps it apart from its neighbours.
func TestBadInputUnicodeWithinLimits(t *testing.T) {
	p := newFuzzRun(t)
	id := strings.Repeat("é", 128)
	rid := strings.Repeat("ü", 127) + "/"
	raw := `{"command_id":"` + id + `","type":"reserve","sku":"A","reservation_id":"` + rid + `","quantity":1,"cart_id":"` +
		strings.Repeat("ä", 128) + `","store_id":"köln","reason":"` + strings.Repeat("€", 256) + `"}`
	require.NoError(t, p.step(propStep{key: "A", raw: []byte(raw)}, true))
	d, ok := p.st.Decision(id)
	require.True(t, ok)
	assert.Equal(t, schemas.OutcomeAccepted, d.Result.Outcome, d.Result.Message)
	res, ok := p.st.Reservation("A", rid)
	require.True(t, ok)
	assert.Equal(t, int64(1), res.Reservation.Quantity)
	_, clash := p.st.Reservation("A", strings.Repeat("ü", 127))
	assert.False(t, clash)
}

// Overflow at the edges that must still work: on_hand may reach exactly
// MaxInt64, all of it may be held, and committing it leaves 0.
func TestBadInputInt64Edges(t *testing.T) {
	p := newFuzzRun(t)
	max := strconv.FormatInt(math.MaxInt64, 10)
	for _, raw := range []string{
		`{"command_id":"e1","type":"stock.set","sku":"C","on_hand":` + strconv.FormatInt(math.MaxInt64-5, 10) + `}`,
		`{"command_id":"e2","type":"stock.adjust","sku":"C","delta":5}`,
		`{"command_id":"e3","type":"reserve","sku":"C","reservation_id":"all","quantity":` + max + `}`,
		`{"command_id":"e4","type":"adjust","sku":"C","reservation_id":"all","quantity":1}`,
		`{"command_id":"e5","type":"adjust","sku":"C","reservation_id":"all","quantity":` + max + `}`,
		`{"command_id":"e6","type":"commit","sku":"C","reservation_id":"all","order_id":"o"}`,
	} {
		require.NoError(t, p.step(propStep{key: "C", raw: []byte(raw)}, true), raw)
		c, _ := schemas.DecodeCommand([]byte(raw), 0)
		d, _ := p.st.Decision(c.CommandID)
		require.Equal(t, schemas.OutcomeAccepted, d.Result.Outcome, "%s: %s %s", raw, d.Result.Reason, d.Result.Message)
	}
	s, _ := p.st.Stock("C")
	assert.Equal(t, schemas.StockView{}, *s.View())
}

// A sanity check of the reference model's reading of the contract: a record of
// each type with every optional field set (at its limit where it has one) is
// valid for the model as for the decoder.
func TestBadInputModelAcceptsValidCommands(t *testing.T) {
	for _, typ := range schemas.CommandTypes {
		raw := map[string]string{
			schemas.TypeStockSet:    `{"command_id":"g","type":"stock.set","sku":"A","on_hand":1,"expected_on_hand":0,"low_stock_threshold":0}`,
			schemas.TypeStockAdjust: `{"command_id":"g","type":"stock.adjust","sku":"A","delta":-1,"expected_on_hand":1}`,
			schemas.TypeReserve:     `{"command_id":"g","type":"reserve","sku":"A","reservation_id":"r","quantity":1,"ttl_seconds":86400,"cart_id":"c","store_id":"s","reason":"r","issued_at":"2026-01-01T00:00:00.000Z"}`,
			schemas.TypeAdjust:      `{"command_id":"g","type":"adjust","sku":"A","reservation_id":"r","quantity":1}`,
			schemas.TypeRelease:     `{"command_id":"g","type":"release","sku":"A","reservation_id":"r"}`,
			schemas.TypeExtend:      `{"command_id":"g","type":"extend","sku":"A","reservation_id":"r","ttl_seconds":1}`,
			schemas.TypeCommit:      `{"command_id":"g","type":"commit","sku":"A","reservation_id":"r","order_id":"o"}`,
			schemas.TypePrepare:     `{"command_id":"g","type":"prepare","sku":"A","reservation_id":"r","order_id":"o","reply_to":"cart","cart_id":"c"}`,
			schemas.TypeUnprepare:   `{"command_id":"g","type":"unprepare","sku":"A","reservation_id":"r"}`,
		}[typ]
		c, ok := refParse([]byte(raw), 0)
		require.True(t, ok, typ)
		assert.Empty(t, c.invalid(), typ)
		cmd, err := schemas.DecodeCommand([]byte(raw), 0)
		require.NoError(t, err)
		assert.Nil(t, cmd.Validate(), typ)
		assert.Equal(t, typ, c.str["type"])
	}
}
