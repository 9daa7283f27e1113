package schemas

// These tests keep three descriptions of the wire contract in step: the Go
// types of this package, the JSON Schema files in json/ and the examples in
// testdata/. A field added to one and not the others fails here.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	schemaDir   = "json"
	goldenDir   = "testdata/golden"
	invalidDir  = "testdata/invalid"
	schemaBase  = "https://github.com/reservations/reservations/schemas/json/"
	draft202012 = "https://json-schema.org/draft/2020-12/schema"
)

// commonCommandFields are the properties of every command schema (cart_id
// and reply_to: extension (i)).
var commonCommandFields = []string{"command_id", "type", "sku", "reason", "issued_at", "cart_id", "reply_to", "reply_partition"}

// commandFields are the type-specific properties of each command schema.
// Together with commonCommandFields they must cover every JSON field of Command.
var commandFields = map[string][]string{
	TypeStockSet:    {"on_hand", "expected_on_hand", "low_stock_threshold"},
	TypeStockAdjust: {"delta", "expected_on_hand"},
	TypeReserve:     {"reservation_id", "quantity", "ttl_seconds", "store_id"},
	TypeAdjust:      {"reservation_id", "quantity"},
	TypeRelease:     {"reservation_id"},
	TypeExtend:      {"reservation_id", "ttl_seconds"},
	TypeCommit:      {"reservation_id", "order_id"},
	TypePrepare:     {"reservation_id", "order_id"},
	TypeUnprepare:   {"reservation_id"},
}

// commonCartCommandFields are the properties of every cart command schema.
var commonCartCommandFields = []string{"command_id", "type", "cart_id", "reason", "issued_at", "reply_to", "reply_partition"}

// cartCommandFields are the type-specific properties of each cart command
// schema. Together with commonCartCommandFields they must cover CartCommand.
var cartCommandFields = map[string][]string{
	TypeCartReserve: {"ttl_seconds", "items"},
	TypeCartRelease: {},
	TypeCartCommit:  {"order_id"},
}

// valueKinds are the processor's output values: golden file prefix, schema
// file and Go type.
var valueKinds = []struct {
	prefix string
	schema string
	goType reflect.Type
}{
	{"result.", "result.schema.json", reflect.TypeFor[Result]()},
	{"changelog.stock.", "changelog.stock.schema.json", reflect.TypeFor[StockEntity]()},
	{"changelog.reservation.", "changelog.reservation.schema.json", reflect.TypeFor[ReservationEntity]()},
	{"changelog.command.", "changelog.command.schema.json", reflect.TypeFor[CommandEntity]()},
	{"cart-result.", "cart-result.schema.json", reflect.TypeFor[CartResult]()},
}

// dlqHeaders are the headers of a dead-letter record. They have no Go type yet,
// so this list is the reference for dlq.headers.schema.json.
var dlqHeaders = []string{"error", "source_topic", "source_partition", "source_offset"}

const (
	dlqSchema = "dlq.headers.schema.json"
	dlqPrefix = "dlq.headers."
)

func commandSchema(typ string) string { return "command." + typ + ".schema.json" }

func cartCommandSchema(typ string) string { return "cart-command." + typ + ".schema.json" }

const (
	cartCommandPrefix = "cart-command."
	invalidCartDir    = "testdata/invalid-cart"
)

func TestGoldenCommands(t *testing.T) {
	set := loadSchemas(t, schemaDir)
	known := fieldNames(jsonFields(t, reflect.TypeFor[Command]()))
	seen := map[string]int{}
	for _, name := range goldenFiles(t, "command.") {
		t.Run(name, func(t *testing.T) {
			b := readFile(t, goldenDir, name)
			c, err := DecodeCommand(b, 0)
			require.NoError(t, err)
			require.Nil(t, c.Validate())
			require.True(t, strings.HasPrefix(name, "command."+c.Type+"."),
				"file %s holds a %q command; name it command.%s.<case>.json", name, c.Type, c.Type)
			seen[c.Type]++

			// Unknown fields are allowed (forward compatibility) and dropped by
			// the Go type; only the extra-fields examples may carry them.
			want := decodeMap(t, b)
			var unknown []string
			for k := range want {
				if !slices.Contains(known, k) {
					unknown = append(unknown, k)
					delete(want, k)
				}
			}
			if strings.Contains(name, ".extra-fields.") {
				assert.NotEmpty(t, unknown, "an extra-fields example must carry fields Command does not know")
			} else {
				assert.Empty(t, unknown, "fields Command does not know (a typo, or a field missing from the Go type)")
			}

			out, err := json.Marshal(c)
			require.NoError(t, err)
			assert.Equal(t, want, decodeMap(t, out), "re-encoded command differs from the golden file")

			schema := commandSchema(c.Type)
			assert.Empty(t, set.validate(schema, set[schema], decodeAny(t, b), "$"), "rejected by %s", schema)
		})
	}
	for _, typ := range CommandTypes {
		assert.Positive(t, seen[typ], "no golden example of command type %s", typ)
	}
}

// TestGoldenCartCommands is TestGoldenCommands for the cart commands
// (extension (k)): decode, validate, schema, round trip.
func TestGoldenCartCommands(t *testing.T) {
	set := loadSchemas(t, schemaDir)
	seen := map[string]int{}
	names := goldenFiles(t, cartCommandPrefix)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			b := readFile(t, goldenDir, name)
			c, err := DecodeCartCommand(b, 0)
			require.NoError(t, err)
			require.Nil(t, c.Validate())
			require.True(t, strings.HasPrefix(name, cartCommandPrefix+c.Type+"."),
				"file %s holds a %q cart command; name it %s%s.<case>.json", name, c.Type, cartCommandPrefix, c.Type)
			seen[c.Type]++

			want := decodeMap(t, b)
			unknown := dropUnknownFields(t, want, reflect.TypeFor[CartCommand](), "")
			if strings.Contains(name, ".extra-fields.") {
				assert.NotEmpty(t, unknown, "an extra-fields example must carry fields CartCommand does not know")
			} else {
				assert.Empty(t, unknown, "fields CartCommand does not know (a typo, or a field missing from the Go type)")
			}

			out, err := json.Marshal(c)
			require.NoError(t, err)
			assert.Equal(t, want, decodeMap(t, out), "re-encoded cart command differs from the golden file")

			schema := cartCommandSchema(c.Type)
			v := decodeAny(t, b)
			assert.Empty(t, set.validate(schema, set[schema], v, "$"), "rejected by %s", schema)
			for _, typ := range CommandTypes {
				assert.NotEmpty(t, set.validate(commandSchema(typ), set[commandSchema(typ)], v, "$"),
					"a cart command must not pass for a per-SKU command (%s)", typ)
			}
		})
	}
	for _, typ := range CartCommandTypes {
		assert.Positive(t, seen[typ], "no golden example of cart command type %s", typ)
	}
	assert.True(t, slices.ContainsFunc(names, func(n string) bool {
		c, err := DecodeCartCommand(readFile(t, goldenDir, n), 0)
		return err == nil && len(c.Items) == MaxCartItems
	}), "no golden cart.reserve with %d lines", MaxCartItems)
}

// dropUnknownFields deletes from m, and from the objects it holds in fields of
// struct or slice-of-struct type, the keys that typ has no json field for, and
// returns their paths.
func dropUnknownFields(t *testing.T, m map[string]any, typ reflect.Type, at string) []string {
	t.Helper()
	fields := map[string]jsonField{}
	for _, f := range jsonFields(t, typ) {
		fields[f.name] = f
	}
	var unknown []string
	for k, v := range m {
		f, ok := fields[k]
		if !ok {
			unknown = append(unknown, at+k)
			delete(m, k)
			continue
		}
		st := f.structType()
		if st == nil {
			continue
		}
		switch v := v.(type) {
		case map[string]any:
			unknown = append(unknown, dropUnknownFields(t, v, st, at+k+".")...)
		case []any:
			for i, el := range v {
				if obj, ok := el.(map[string]any); ok {
					unknown = append(unknown, dropUnknownFields(t, obj, st, fmt.Sprintf("%s%s[%d].", at, k, i))...)
				}
			}
		}
	}
	return unknown
}

func TestGoldenValues(t *testing.T) {
	set := loadSchemas(t, schemaDir)
	for _, kind := range valueKinds {
		names := goldenFiles(t, kind.prefix)
		assert.NotEmpty(t, names, "no golden example %s*.json", kind.prefix)
		for _, name := range names {
			t.Run(name, func(t *testing.T) {
				b := readFile(t, goldenDir, name)
				v := reflect.New(kind.goType).Interface()
				dec := json.NewDecoder(bytes.NewReader(b))
				dec.DisallowUnknownFields()
				require.NoError(t, dec.Decode(v), "decode into %s", kind.goType)

				out, err := json.Marshal(v)
				require.NoError(t, err)
				assert.Equal(t, decodeMap(t, b), decodeMap(t, out), "%s round trip changed the value", kind.goType)
				assert.Empty(t, set.validate(kind.schema, set[kind.schema], decodeAny(t, b), "$"), "rejected by %s", kind.schema)

				if s, ok := v.(*StockEntity); ok {
					assert.Equal(t, s.View().Available, s.Available, "available = on_hand - reserved")
				}
			})
		}
	}
}

// TestGoldenResults checks that the result examples cover what the contract
// names, and their arithmetic.
func TestGoldenResults(t *testing.T) {
	covered := map[string]bool{}
	for _, name := range goldenFiles(t, "result.") {
		var r Result
		require.NoError(t, json.Unmarshal(readFile(t, goldenDir, name), &r), name)
		switch {
		case r.Type == TypeExpired || r.Type == TypeLowStock:
			covered[r.Type+" notice"] = true
		case r.Duplicate:
			covered["duplicate"] = true
		default:
			covered[r.Outcome+" decision"] = true
		}
		if r.Stock != nil {
			assert.Equal(t, r.Stock.OnHand-r.Stock.Reserved, r.Stock.Available, "%s: available = on_hand - reserved", name)
		}
		if r.Reservation != nil {
			assert.Equal(t, r.SKU, r.Reservation.SKU, name)
			assert.Equal(t, r.ReservationID, r.Reservation.ReservationID, name)
		}
	}
	for _, want := range []string{"accepted decision", "rejected decision", "duplicate", "expired notice", "low_stock notice"} {
		assert.True(t, covered[want], "no golden result example of a %s", want)
	}
}

// TestGoldenCartResults checks that the cart result examples cover the cases
// of extension (k), and that they are all or nothing.
func TestGoldenCartResults(t *testing.T) {
	covered := map[string]bool{}
	for _, name := range goldenFiles(t, "cart-result.") {
		var r CartResult
		require.NoError(t, json.Unmarshal(readFile(t, goldenDir, name), &r), name)
		switch {
		case r.Duplicate:
			covered["duplicate"] = true
		case r.Outcome == OutcomeRejected && !slices.Contains(Reasons, r.Reason) || r.Reason == ReasonInvalidCommand:
			covered[r.Reason] = true
		default:
			covered[r.Type+" "+r.Outcome] = true
		}
		// The reason of a rejection that ran lines is the first failing
		// line's; for cart.release, the first line still held.
		failing := func(l CartLine) bool { return l.Outcome == OutcomeRejected }
		if r.Type == TypeCartRelease {
			failing = func(l CartLine) bool { return l.Outcome == OutcomeRejected && l.Status == StatusActive }
		}
		if i := slices.IndexFunc(r.Lines, failing); i >= 0 {
			assert.Equal(t, OutcomeRejected, r.Outcome, "%s: a line failed", name)
			assert.Equal(t, r.Lines[i].Reason, r.Reason, "%s: reason of the first failing line", name)
		} else if len(r.Lines) > 0 {
			assert.Equal(t, OutcomeAccepted, r.Outcome, "%s: no line failed", name)
		}
		if r.Outcome == OutcomeRejected && slices.Contains(append([]string{ReasonInvalidCommand}, CartReasons...), r.Reason) {
			assert.Empty(t, r.Lines, "%s: a cart command rejected without a saga has no lines", name)
		}
		// All or nothing.
		for _, l := range r.Lines {
			switch {
			case r.Type == TypeCartReserve && r.Outcome == OutcomeAccepted:
				assert.Equal(t, StatusActive, l.Status, "%s: %s", name, l.SKU)
			case r.Type == TypeCartReserve:
				assert.NotEqual(t, StatusActive, l.Status, "%s: a rejected cart.reserve holds nothing (%s)", name, l.SKU)
			case r.Type == TypeCartCommit && r.Outcome == OutcomeAccepted:
				assert.Equal(t, StatusConsumed, l.Status, "%s: %s", name, l.SKU)
			case r.Type == TypeCartCommit:
				assert.NotEqual(t, StatusConsumed, l.Status, "%s: a rejected cart.commit consumes nothing (%s)", name, l.SKU)
			}
		}
		if r.Type == TypeCartCommit {
			assert.NotEmpty(t, r.OrderID, name)
		} else {
			assert.Empty(t, r.OrderID, name)
		}
	}
	for _, want := range []string{"cart.reserve accepted", "cart.reserve rejected", "cart.commit accepted", "cart.commit rejected",
		"cart.release accepted", "cart.release rejected", "duplicate", ReasonInvalidCommand, ReasonCartEmpty, ReasonCartBusy, ReasonCartFull} {
		assert.True(t, covered[want], "no golden cart result example of %s", want)
	}
}

// TestReadmeWorkedExample keeps the worked example of extension (k) in
// README.md equal to the golden files it names.
func TestReadmeWorkedExample(t *testing.T) {
	readme := string(readFile(t, ".", "README.md"))
	_, example, ok := strings.Cut(readme, "**Worked example: a rejected `cart.reserve`.**")
	require.True(t, ok, "README.md has no worked example")
	blocks := strings.Split(example, "```json")
	require.Len(t, blocks, 3, "want two JSON blocks: the cart command and its result")
	for i, golden := range []string{"cart-command.cart.reserve.json", "cart-result.reserve.rejected.json"} {
		block, _, _ := strings.Cut(blocks[i+1], "```")
		assert.Equal(t, decodeMap(t, readFile(t, goldenDir, golden)), decodeMap(t, []byte(block)), "README block %d vs %s", i+1, golden)
	}
}

func TestGoldenDLQHeaders(t *testing.T) {
	set := loadSchemas(t, schemaDir)
	names := goldenFiles(t, dlqPrefix)
	require.NotEmpty(t, names)
	for _, name := range names {
		assert.Empty(t, set.validate(dlqSchema, set[dlqSchema], decodeAny(t, readFile(t, goldenDir, name)), "$"), name)
	}
}

// TestGoldenFilesAreKnown keeps stray examples out: every golden file is
// checked by one of the tests above.
func TestGoldenFilesAreKnown(t *testing.T) {
	prefixes := []string{"command.", cartCommandPrefix, dlqPrefix}
	for _, kind := range valueKinds {
		prefixes = append(prefixes, kind.prefix)
	}
	for _, name := range dirNames(t, goldenDir) {
		assert.True(t, strings.HasSuffix(name, ".json"), "%s: golden files end in .json", name)
		assert.True(t, slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(name, p) }),
			"%s: no test reads it; name it after one of %v", name, prefixes)
	}
}

// Where an invalid command is caught.
type stage string

const (
	undecodable   stage = "undecodable"    // DecodeCommand: *UndecodableError, the record goes to the DLQ
	decodeField   stage = "decode field"   // DecodeCommand: *FieldError, a field has the wrong JSON type
	validateField stage = "validate field" // DecodeCommand succeeds, Validate: *FieldError
)

func TestInvalidCommands(t *testing.T) {
	tests := []struct {
		file  string
		stage stage
		field string // the field the FieldError names
	}{
		{"not-json.txt", undecodable, ""},
		{"truncated-json.txt", undecodable, ""},
		{"empty.txt", undecodable, ""},
		{"json-array.json", undecodable, ""},
		{"missing-command-id.json", undecodable, ""},
		{"command-id-empty.json", undecodable, ""},
		{"command-id-number.json", undecodable, ""},
		{"command-id-too-long.json", undecodable, ""},
		{"missing-type.json", validateField, "type"},
		{"unknown-type.json", validateField, "type"},
		{"type-number.json", decodeField, "type"},
		{"missing-sku.json", validateField, "sku"},
		{"sku-space.json", validateField, "sku"},
		{"sku-too-long.json", validateField, "sku"},
		{"reason-too-long.json", validateField, "reason"},
		{"issued-at-number.json", decodeField, "issued_at"},
		{"stock-set-missing-on-hand.json", validateField, "on_hand"},
		{"stock-set-on-hand-negative.json", validateField, "on_hand"},
		{"stock-set-expected-on-hand-negative.json", validateField, "expected_on_hand"},
		{"stock-set-low-stock-threshold-negative.json", validateField, "low_stock_threshold"},
		{"stock-adjust-delta-zero.json", validateField, "delta"},
		{"stock-adjust-missing-delta.json", validateField, "delta"},
		{"stock-adjust-expected-on-hand-negative.json", validateField, "expected_on_hand"},
		{"reserve-quantity-zero.json", validateField, "quantity"},
		{"reserve-missing-quantity.json", validateField, "quantity"},
		{"reserve-quantity-string.json", decodeField, "quantity"},
		{"reserve-quantity-fraction.json", decodeField, "quantity"},
		{"reserve-quantity-overflow.json", decodeField, "quantity"},
		{"reserve-missing-reservation-id.json", validateField, "reservation_id"},
		{"reserve-reservation-id-too-long.json", validateField, "reservation_id"},
		{"reserve-ttl-zero.json", validateField, "ttl_seconds"},
		{"reserve-ttl-too-long.json", validateField, "ttl_seconds"},
		{"reserve-cart-id-too-long.json", validateField, "cart_id"},
		{"reserve-store-id-too-long.json", validateField, "store_id"},
		{"adjust-quantity-negative.json", validateField, "quantity"},
		{"adjust-missing-reservation-id.json", validateField, "reservation_id"},
		{"release-reservation-id-number.json", decodeField, "reservation_id"},
		{"extend-ttl-too-long.json", validateField, "ttl_seconds"},
		{"commit-missing-order-id.json", validateField, "order_id"},
		{"commit-order-id-too-long.json", validateField, "order_id"},
		{"prepare-missing-order-id.json", validateField, "order_id"},
		{"unprepare-missing-reservation-id.json", validateField, "reservation_id"},
		{"release-cart-id-too-long.json", validateField, "cart_id"},
		{"reply-to-unknown.json", validateField, "reply_to"},
		{"reply-to-without-cart-id.json", validateField, "cart_id"},
		{"reply-to-number.json", decodeField, "reply_to"},
		{"reply-to-replies-without-partition.json", validateField, "reply_partition"},
		{"reply-partition-negative.json", validateField, "reply_partition"},
		{"reply-partition-without-reply-to.json", validateField, "reply_partition"},
		{"reply-partition-string.json", decodeField, "reply_partition"},
	}
	var files []string
	for _, tt := range tests {
		files = append(files, tt.file)
	}
	require.ElementsMatch(t, dirNames(t, invalidDir), files, "every file in %s needs a row in this table", invalidDir)

	set := loadSchemas(t, schemaDir)
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b := readFile(t, invalidDir, tt.file)

			// The schema of every command type rejects it too.
			if json.Valid(b) {
				v := decodeAny(t, b)
				for _, typ := range CommandTypes {
					schema := commandSchema(typ)
					assert.NotEmpty(t, set.validate(schema, set[schema], v, "$"), "%s accepts it", schema)
				}
			} else {
				assert.Equal(t, undecodable, tt.stage, "a record that is not JSON must be undecodable")
			}

			c, err := DecodeCommand(b, 0)
			var fe *FieldError
			switch tt.stage {
			case undecodable:
				var ue *UndecodableError
				require.ErrorAs(t, err, &ue)
				return
			case decodeField:
				require.ErrorAs(t, err, &fe)
			case validateField:
				require.NoError(t, err)
				fe = c.Validate()
				require.NotNil(t, fe, "Validate accepted the command")
			}
			assert.Equal(t, tt.field, fe.Field, "FieldError %q names the wrong field", fe)
			assert.Equal(t, "bad-1", c.CommandID, "the command_id must be usable for the rejected result")
		})
	}
}

// TestInvalidCartCommands is TestInvalidCommands for the cart commands in
// testdata/invalid-cart.
func TestInvalidCartCommands(t *testing.T) {
	tests := []struct {
		file  string
		stage stage
		field string // the field the FieldError names
		// schemaAccepts marks a rule JSON Schema cannot state (uniqueness of
		// a property across the lines): the schema accepts the example.
		schemaAccepts bool
	}{
		{"not-json.txt", undecodable, "", false},
		{"truncated-json.txt", undecodable, "", false},
		{"json-array.json", undecodable, "", false},
		{"missing-command-id.json", undecodable, "", false},
		{"command-id-empty.json", undecodable, "", false},
		{"command-id-number.json", undecodable, "", false},
		{"command-id-too-long.json", undecodable, "", false},
		{"missing-type.json", validateField, "type", false},
		{"unknown-type-reserve.json", validateField, "type", false},
		{"type-number.json", decodeField, "type", false},
		{"missing-cart-id.json", validateField, "cart_id", false},
		{"cart-id-empty.json", validateField, "cart_id", false},
		{"cart-id-too-long.json", validateField, "cart_id", false},
		{"cart-id-number.json", decodeField, "cart_id", false},
		{"reason-too-long.json", validateField, "reason", false},
		{"issued-at-number.json", decodeField, "issued_at", false},
		{"reserve-missing-items.json", validateField, "items", false},
		{"reserve-items-empty.json", validateField, "items", false},
		{"reserve-101-items.json", validateField, "items", false},
		{"reserve-items-object.json", decodeField, "items", false},
		{"reserve-item-1-not-object.json", decodeField, "items[1]", false},
		{"reserve-duplicate-sku.json", validateField, "items[2].sku", true},
		{"reserve-duplicate-reservation-id.json", validateField, "items[2].reservation_id", true},
		{"reserve-item-0-missing-sku.json", validateField, "items[0].sku", false},
		{"reserve-item-0-sku-space.json", validateField, "items[0].sku", false},
		{"reserve-item-1-sku-number.json", decodeField, "items[1].sku", false},
		{"reserve-item-0-quantity-zero.json", validateField, "items[0].quantity", false},
		{"reserve-item-1-missing-quantity.json", validateField, "items[1].quantity", false},
		{"reserve-item-2-quantity-string.json", decodeField, "items[2].quantity", false},
		{"reserve-item-0-quantity-fraction.json", decodeField, "items[0].quantity", false},
		{"reserve-item-0-reservation-id-too-long.json", validateField, "items[0].reservation_id", false},
		{"reserve-ttl-zero.json", validateField, "ttl_seconds", false},
		{"reserve-ttl-too-long.json", validateField, "ttl_seconds", false},
		{"reserve-ttl-string.json", decodeField, "ttl_seconds", false},
		{"commit-missing-order-id.json", validateField, "order_id", false},
		{"commit-order-id-too-long.json", validateField, "order_id", false},
		{"reply-to-cart.json", validateField, "reply_to", false},
		{"reply-to-replies-without-partition.json", validateField, "reply_partition", false},
		{"reply-partition-negative.json", validateField, "reply_partition", false},
		{"reply-partition-without-reply-to.json", validateField, "reply_partition", false},
		{"reply-partition-string.json", decodeField, "reply_partition", false},
	}
	var files []string
	for _, tt := range tests {
		files = append(files, tt.file)
	}
	require.ElementsMatch(t, dirNames(t, invalidCartDir), files, "every file in %s needs a row in this table", invalidCartDir)

	set := loadSchemas(t, schemaDir)
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b := readFile(t, invalidCartDir, tt.file)

			if json.Valid(b) {
				v := decodeAny(t, b)
				for _, typ := range CartCommandTypes {
					schema := cartCommandSchema(typ)
					errs := set.validate(schema, set[schema], v, "$")
					if tt.schemaAccepts && strings.HasPrefix(tt.file, "reserve-") && typ == TypeCartReserve {
						assert.Empty(t, errs, "%s: only the uniqueness rule should be broken", schema)
						continue
					}
					assert.NotEmpty(t, errs, "%s accepts it", schema)
				}
			} else {
				assert.Equal(t, undecodable, tt.stage, "a record that is not JSON must be undecodable")
			}

			c, err := DecodeCartCommand(b, 0)
			var fe *FieldError
			switch tt.stage {
			case undecodable:
				var ue *UndecodableError
				require.ErrorAs(t, err, &ue)
				return
			case decodeField:
				require.ErrorAs(t, err, &fe)
			case validateField:
				require.NoError(t, err)
				fe = c.Validate()
				require.NotNil(t, fe, "Validate accepted the cart command")
			}
			assert.Equal(t, tt.field, fe.Field, "FieldError %q names the wrong field", fe)
			assert.Equal(t, "bad-1", c.CommandID, "the command_id must be usable for the rejected result")
		})
	}
}

func TestDecodeCommandSizeLimit(t *testing.T) {
	b := readFile(t, goldenDir, "command.reserve.json")
	_, err := DecodeCommand(b, len(b))
	require.NoError(t, err)
	_, err = DecodeCommand(b, len(b)-1)
	var ue *UndecodableError
	require.ErrorAs(t, err, &ue)
}

func TestSchemaFiles(t *testing.T) {
	set := loadSchemas(t, schemaDir)
	want := []string{dlqSchema}
	for _, typ := range CommandTypes {
		want = append(want, commandSchema(typ))
	}
	for _, typ := range CartCommandTypes {
		want = append(want, cartCommandSchema(typ))
	}
	for _, kind := range valueKinds {
		want = append(want, kind.schema)
	}
	want = append(want, topicSchemaFiles()...)
	require.ElementsMatch(t, want, dirNames(t, schemaDir), "files in %s", schemaDir)

	for name, doc := range set {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, draft202012, doc["$schema"])
			assert.Equal(t, schemaBase+name, doc["$id"])
			assert.NotEmpty(t, doc["title"])
			assert.NotEmpty(t, doc["description"])
			walkSchema(doc, "#", func(at string, n map[string]any) {
				for kw := range n {
					assert.True(t, schemaKeywords[kw], "%s: keyword %q is not supported by the test checker", at, kw)
				}
				props, _ := n["properties"].(map[string]any)
				for _, r := range stringsOf(n["required"]) {
					assert.Contains(t, props, r, "%s: required %q is not a property", at, r)
				}
				if ref, ok := n["$ref"].(string); ok {
					_, _, err := set.resolve(name, ref)
					assert.NoError(t, err, at)
				}
			})
		})
	}
}

// TestCommandSchemasMatchCommand: each command schema has exactly the
// properties of its type, each one a JSON field of Command with the same JSON
// type, and together they cover Command.
func TestCommandSchemasMatchCommand(t *testing.T) {
	set := loadSchemas(t, schemaDir)
	fields := map[string]jsonField{}
	for _, f := range jsonFields(t, reflect.TypeFor[Command]()) {
		fields[f.name] = f
	}
	require.ElementsMatch(t, CommandTypes, mapKeys(commandFields))

	covered := map[string]bool{}
	first := map[string]string{} // property -> schema that defined it first
	for _, typ := range CommandTypes {
		t.Run(typ, func(t *testing.T) {
			name := commandSchema(typ)
			doc := set[name]
			require.NotNil(t, doc, "missing %s", name)
			props, _ := doc["properties"].(map[string]any)
			want := append(slices.Clone(commonCommandFields), commandFields[typ]...)
			assert.ElementsMatch(t, want, mapKeys(props), "properties of %s", name)
			assert.Equal(t, true, doc["additionalProperties"], "commands must allow additional properties")
			assert.Subset(t, stringsOf(doc["required"]), []string{"command_id", "type", "sku"})
			typeProp, _ := props["type"].(map[string]any)
			assert.Equal(t, typ, typeProp["const"])

			for _, p := range want {
				f, ok := fields[p]
				if !assert.True(t, ok, "%s: property %q is not a json field of Command", name, p) {
					continue
				}
				covered[p] = true
				assert.Equal(t, f.wantTypes(), set.schemaTypes(t, name, props[p]), "%s: JSON type of %q", name, p)
				// A property shared by several command types has the same rules in
				// each (type differs by design: its const is the command type).
				if p == "type" {
					continue
				}
				if other, ok := first[p]; ok {
					assert.Equal(t, withoutDescription(set[other]["properties"].(map[string]any)[p]), withoutDescription(props[p]),
						"property %q differs between %s and %s", p, other, name)
				} else {
					first[p] = name
				}
			}
		})
	}
	assert.ElementsMatch(t, mapKeys(fields), mapKeys(covered), "every Command field belongs to some command schema")
}

// TestCartCommandSchemasMatchCartCommand is TestCommandSchemasMatchCommand
// for the cart commands. The lines' properties are CartItem's, and a property
// that a per-SKU command schema has too keeps its rules (cart_id excepted:
// required on a cart command, optional on a per-SKU one).
func TestCartCommandSchemasMatchCartCommand(t *testing.T) {
	set := loadSchemas(t, schemaDir)
	fields := map[string]jsonField{}
	for _, f := range jsonFields(t, reflect.TypeFor[CartCommand]()) {
		fields[f.name] = f
	}
	require.ElementsMatch(t, CartCommandTypes, mapKeys(cartCommandFields))
	skuProps := map[string]any{} // property -> its rules in some per-SKU command schema
	for _, typ := range CommandTypes {
		props, _ := set[commandSchema(typ)]["properties"].(map[string]any)
		maps.Copy(skuProps, props)
	}

	covered := map[string]bool{}
	first := map[string]string{}
	for _, typ := range CartCommandTypes {
		t.Run(typ, func(t *testing.T) {
			name := cartCommandSchema(typ)
			doc := set[name]
			require.NotNil(t, doc, "missing %s", name)
			props, _ := doc["properties"].(map[string]any)
			want := append(slices.Clone(commonCartCommandFields), cartCommandFields[typ]...)
			assert.ElementsMatch(t, want, mapKeys(props), "properties of %s", name)
			assert.Equal(t, true, doc["additionalProperties"], "cart commands must allow additional properties")
			assert.Subset(t, stringsOf(doc["required"]), []string{"command_id", "type", "cart_id"})
			typeProp, _ := props["type"].(map[string]any)
			assert.Equal(t, typ, typeProp["const"])

			for _, p := range want {
				f, ok := fields[p]
				if !assert.True(t, ok, "%s: property %q is not a json field of CartCommand", name, p) {
					continue
				}
				covered[p] = true
				assert.Equal(t, f.wantTypes(), set.schemaTypes(t, name, props[p]), "%s: JSON type of %q", name, p)
				if p == "type" {
					continue
				}
				if other, ok := first[p]; ok {
					assert.Equal(t, withoutDescription(set[other]["properties"].(map[string]any)[p]), withoutDescription(props[p]),
						"property %q differs between %s and %s", p, other, name)
				} else {
					first[p] = name
				}
				if sku, ok := skuProps[p]; ok && p != "cart_id" && p != "reply_to" {
					assert.Equal(t, withoutDescription(sku), withoutDescription(props[p]),
						"property %q of %s differs from the per-SKU command schemas", p, name)
				}
			}
		})
	}
	assert.ElementsMatch(t, mapKeys(fields), mapKeys(covered), "every CartCommand field belongs to some cart command schema")

	// The lines: exactly CartItem's fields, with the per-SKU rules.
	items, _ := set[cartCommandSchema(TypeCartReserve)]["properties"].(map[string]any)["items"].(map[string]any)
	require.NotNil(t, items)
	assert.Equal(t, json.Number(strconv.Itoa(MaxCartItems)), items["maxItems"])
	assert.Equal(t, json.Number("1"), items["minItems"])
	line, _ := items["items"].(map[string]any)
	lineProps, _ := line["properties"].(map[string]any)
	var itemFields []string
	for _, f := range jsonFields(t, reflect.TypeFor[CartItem]()) {
		itemFields = append(itemFields, f.name)
		assert.Equal(t, f.wantTypes(), set.schemaTypes(t, cartCommandSchema(TypeCartReserve), lineProps[f.name]), "items[].%s: JSON type", f.name)
	}
	assert.ElementsMatch(t, itemFields, mapKeys(lineProps), "properties of a line vs json fields of CartItem")
	assert.ElementsMatch(t, []string{"sku", "quantity"}, stringsOf(line["required"]))
	assert.Equal(t, true, line["additionalProperties"], "lines must allow additional properties")
	reserve, _ := set[commandSchema(TypeReserve)]["properties"].(map[string]any)
	for _, p := range []string{"quantity", "reservation_id"} {
		assert.Equal(t, withoutDescription(reserve[p]), withoutDescription(lineProps[p]), "items[].%s differs from reserve's %s", p, p)
	}
	assert.Equal(t, withoutDescription(reserve["sku"])["pattern"], withoutDescription(lineProps["sku"])["pattern"], "items[].sku")
}

// TestValueSchemasMatchTypes: the result and changelog schemas have exactly
// the JSON fields of their Go types, nested objects included; fields the Go
// type always writes are required, and JSON types agree.
func TestValueSchemasMatchTypes(t *testing.T) {
	set := loadSchemas(t, schemaDir)
	for _, kind := range valueKinds {
		t.Run(kind.schema, func(t *testing.T) {
			checkObject(t, set, kind.schema, set[kind.schema], kind.goType, kind.goType.Name())
		})
	}
}

func TestDLQHeadersSchema(t *testing.T) {
	doc := loadSchemas(t, schemaDir)[dlqSchema]
	assert.ElementsMatch(t, dlqHeaders, mapKeys(doc["properties"].(map[string]any)))
	assert.ElementsMatch(t, dlqHeaders, stringsOf(doc["required"]))
}

// TestSchemaEnumsMatchConstants: enumerations in the schemas equal the Go constants.
func TestSchemaEnumsMatchConstants(t *testing.T) {
	set := loadSchemas(t, schemaDir)
	events := []string{EventStockSet, EventStockAdjusted, EventReserved, EventAdjusted, EventReleased, EventExtended,
		EventCommitted, EventExpired, EventLowStock}
	tests := []struct {
		file, pointer string
		want          []any
	}{
		{"result.schema.json", "#/properties/outcome/enum", anys(OutcomeAccepted, OutcomeRejected)},
		{"result.schema.json", "#/allOf/0/then/properties/reason/enum", anys(Reasons...)},
		{"result.schema.json", "#/allOf/1/else/properties/type/enum", anys(append(slices.Clone(CommandTypes), TypeExpired, TypeLowStock)...)},
		{"result.schema.json", "#/$defs/reservation/properties/status/enum", anys(StatusActive, StatusReleased, StatusExpired, StatusConsumed)},
		{"changelog.stock.schema.json", "#/properties/event/enum", anys(events...)},
		{"changelog.reservation.schema.json", "#/properties/event/enum",
			anys(EventReserved, EventAdjusted, EventReleased, EventExtended, EventCommitted, EventExpired,
				EventPrepared, EventUnprepared)},
		{"changelog.command.schema.json", "#/properties/event/const", []any{EventDecided}},
		{"cart-result.schema.json", "#/properties/outcome/enum", anys(OutcomeAccepted, OutcomeRejected)},
		{"cart-result.schema.json", "#/allOf/0/then/properties/reason/enum", anys(append(slices.Clone(Reasons), CartReasons...)...)},
		{"cart-result.schema.json", "#/allOf/1/else/properties/type/enum", anys(CartCommandTypes...)},
		{"cart-result.schema.json", "#/$defs/cart_line/properties/outcome/enum", anys(OutcomeAccepted, OutcomeRejected, "")},
		{"cart-result.schema.json", "#/$defs/cart_line/allOf/0/then/properties/reason/enum", anys(Reasons...)},
		{"cart-result.schema.json", "#/$defs/cart_line/properties/status/enum",
			anys(StatusActive, StatusReleased, StatusExpired, StatusConsumed, "")},
	}
	for _, typ := range CommandTypes {
		tests = append(tests, struct {
			file, pointer string
			want          []any
		}{commandSchema(typ), "#/properties/reply_to/enum", []any{ReplyToCart, ReplyToReplies}})
	}
	for _, tt := range tests {
		t.Run(tt.file+tt.pointer, func(t *testing.T) {
			_, got, err := set.resolve(tt.file, tt.pointer)
			require.NoError(t, err)
			if l, ok := got.([]any); ok {
				assert.ElementsMatch(t, tt.want, l)
			} else {
				assert.Equal(t, tt.want, []any{got})
			}
		})
	}
}

// TestSchemaRules checks the conditional rules of the schemas with variations
// of golden examples, so that a rule that never fires is noticed.
func TestSchemaRules(t *testing.T) {
	set := loadSchemas(t, schemaDir)
	num := func(s string) json.Number { return json.Number(s) }
	tests := []struct {
		name   string
		golden string
		schema string
		change func(v map[string]any)
		valid  bool
	}{
		{"accepted without reason", "result.reserve.accepted.json", "result.schema.json", func(map[string]any) {}, true},
		{"accepted with a reason", "result.reserve.accepted.json", "result.schema.json",
			func(v map[string]any) { v["reason"] = ReasonInsufficientStock }, false},
		{"rejected without reason", "result.reserve.accepted.json", "result.schema.json",
			func(v map[string]any) { v["outcome"] = OutcomeRejected }, false},
		{"rejected with an unknown reason", "result.reserve.accepted.json", "result.schema.json",
			func(v map[string]any) { v["outcome"], v["reason"] = OutcomeRejected, "out_of_luck" }, false},
		{"decision without command_id", "result.reserve.accepted.json", "result.schema.json",
			func(v map[string]any) { v["command_id"] = "" }, false},
		{"decision of an unknown type", "result.reserve.accepted.json", "result.schema.json",
			func(v map[string]any) { v["type"] = "refill" }, false},
		{"invalid_command echoes what it could read", "result.reserve.rejected.invalid-command.json", "result.schema.json",
			func(v map[string]any) { v["command_id"], v["type"], v["sku"] = "", "refill", "SKU 1" }, true},
		{"notice with a command_id", "result.expired.json", "result.schema.json",
			func(v map[string]any) { v["command_id"] = "c-1" }, false},
		{"rejected notice", "result.low_stock.json", "result.schema.json",
			func(v map[string]any) { v["outcome"], v["reason"] = OutcomeRejected, ReasonInsufficientStock }, false},
		{"duplicate notice", "result.low_stock.json", "result.schema.json",
			func(v map[string]any) { v["duplicate"] = true }, false},
		{"time without milliseconds", "result.reserve.accepted.json", "result.schema.json",
			func(v map[string]any) { v["decided_at"] = "2026-01-01T00:00:00Z" }, false},
		{"time with an offset", "result.reserve.accepted.json", "result.schema.json",
			func(v map[string]any) { v["decided_at"] = "2026-01-01T01:00:00.000+01:00" }, false},
		{"oversold stock", "result.reserve.accepted.json", "result.schema.json",
			func(v map[string]any) {
				v["stock"] = map[string]any{"on_hand": num("2"), "reserved": num("3"), "available": num("-1")}
			}, true},
		{"negative on_hand", "result.reserve.accepted.json", "result.schema.json",
			func(v map[string]any) { v["stock"].(map[string]any)["on_hand"] = num("-1") }, false},
		{"reservation quantity 0", "result.reserve.accepted.json", "result.schema.json",
			func(v map[string]any) { v["reservation"].(map[string]any)["quantity"] = num("0") }, false},
		{"reservation of an unknown status", "result.reserve.accepted.json", "result.schema.json",
			func(v map[string]any) { v["reservation"].(map[string]any)["status"] = "pending" }, false},
		{"store_id too long", "result.reserve.accepted.json", "result.schema.json",
			func(v map[string]any) {
				v["reservation"].(map[string]any)["store_id"] = strings.Repeat("s", MaxIDLen+1)
			}, false},
		{"threshold 0", "changelog.stock.json", "changelog.stock.schema.json",
			func(v map[string]any) { v["low_stock_threshold"] = num("0") }, true},
		{"threshold negative", "changelog.stock.json", "changelog.stock.schema.json",
			func(v map[string]any) { v["low_stock_threshold"] = num("-1") }, false},
		{"threshold missing", "changelog.stock.json", "changelog.stock.schema.json",
			func(v map[string]any) { delete(v, "low_stock_threshold") }, false},
		{"version 0", "changelog.reservation.json", "changelog.reservation.schema.json",
			func(v map[string]any) { v["version"] = num("0") }, false},
		{"reservation event low_stock", "changelog.reservation.json", "changelog.reservation.schema.json",
			func(v map[string]any) { v["event"] = EventLowStock }, false},
		{"command entity event", "changelog.command.json", "changelog.command.schema.json",
			func(v map[string]any) { v["event"] = EventReserved }, false},
		{"command entity with a bad result", "changelog.command.json", "changelog.command.schema.json",
			func(v map[string]any) { v["result"].(map[string]any)["outcome"] = "maybe" }, false},
		{"dlq offset not decimal", "dlq.headers.json", dlqSchema,
			func(v map[string]any) { v["source_offset"] = "0x10" }, false},
		{"command with fractional quantity", "command.reserve.json", commandSchema(TypeReserve),
			func(v map[string]any) { v["quantity"] = num("1.5") }, false},
		{"command with quantity above int64", "command.reserve.json", commandSchema(TypeReserve),
			func(v map[string]any) { v["quantity"] = num("9223372036854775808") }, false},
		{"command with an unknown field", "command.reserve.json", commandSchema(TypeReserve),
			func(v map[string]any) { v["gift_wrap"] = true }, true},
		{"command of another type", "command.reserve.json", commandSchema(TypeRelease),
			func(map[string]any) {}, false},

		// (i) reply_to, (j) prepare
		{"reply_to with cart_id", "command.release.json", commandSchema(TypeRelease),
			func(v map[string]any) { v["reply_to"], v["cart_id"] = ReplyToCart, "cart-9" }, true},
		{"reply_to without cart_id", "command.release.json", commandSchema(TypeRelease),
			func(v map[string]any) { v["reply_to"] = ReplyToCart }, false},
		{"reply_to with an empty cart_id", "command.stock.set.json", commandSchema(TypeStockSet),
			func(v map[string]any) { v["reply_to"], v["cart_id"] = ReplyToCart, "" }, false},
		{"reply_to of another value", "command.reserve.reply-to-cart.json", commandSchema(TypeReserve),
			func(v map[string]any) { v["reply_to"] = "results" }, false},
		{"cart_id without reply_to", "command.commit.json", commandSchema(TypeCommit),
			func(v map[string]any) { v["cart_id"] = "cart-9" }, true},
		// (l) reply_to "replies"
		{"reply_to replies with reply_partition", "command.release.json", commandSchema(TypeRelease),
			func(v map[string]any) { v["reply_to"], v["reply_partition"] = ReplyToReplies, num("0") }, true},
		{"reply_to replies without reply_partition", "command.reserve.reply-to-replies.json", commandSchema(TypeReserve),
			func(v map[string]any) { delete(v, "reply_partition") }, false},
		{"reply_partition without reply_to", "command.reserve.reply-to-replies.json", commandSchema(TypeReserve),
			func(v map[string]any) { delete(v, "reply_to") }, false},
		{"reply_partition with reply_to cart", "command.reserve.reply-to-cart.json", commandSchema(TypeReserve),
			func(v map[string]any) { v["reply_partition"] = num("2") }, false},
		{"reply_partition negative", "command.reserve.reply-to-replies.json", commandSchema(TypeReserve),
			func(v map[string]any) { v["reply_partition"] = num("-1") }, false},
		{"reply_partition above int32", "command.reserve.reply-to-replies.json", commandSchema(TypeReserve),
			func(v map[string]any) { v["reply_partition"] = num("2147483648") }, false},
		{"reply_partition fractional", "command.reserve.reply-to-replies.json", commandSchema(TypeReserve),
			func(v map[string]any) { v["reply_partition"] = num("1.5") }, false},
		{"prepare without order_id", "command.prepare.json", commandSchema(TypePrepare),
			func(v map[string]any) { delete(v, "order_id") }, false},
		{"unprepare without reservation_id", "command.unprepare.json", commandSchema(TypeUnprepare),
			func(v map[string]any) { delete(v, "reservation_id") }, false},
		{"prepared reservation", "result.reserve.accepted.json", "result.schema.json",
			func(v map[string]any) {
				v["reservation"].(map[string]any)["prepared"], v["reservation"].(map[string]any)["order_id"] = true, "order-1"
			}, true},
		{"prepared reservation without an order", "result.prepare.accepted.json", "result.schema.json",
			func(v map[string]any) { v["reservation"].(map[string]any)["order_id"] = "" }, false},
		{"prepared reservation that is consumed", "result.prepare.accepted.json", "result.schema.json",
			func(v map[string]any) { v["reservation"].(map[string]any)["status"] = StatusConsumed }, false},
		{"prepared as a string", "result.prepare.accepted.json", "result.schema.json",
			func(v map[string]any) { v["reservation"].(map[string]any)["prepared"] = "true" }, false},
		{"changelog prepared that is released", "changelog.reservation.prepared.json", "changelog.reservation.schema.json",
			func(v map[string]any) { v["reservation"].(map[string]any)["status"] = StatusReleased }, false},
		{"result of a prepare", "result.prepare.accepted.json", "result.schema.json",
			func(map[string]any) {}, true},

		// (k) cart commands
		{"cart.reserve with 100 lines", "cart-command.cart.reserve.minimal.json", cartCommandSchema(TypeCartReserve),
			func(v map[string]any) { v["items"] = cartLines(MaxCartItems) }, true},
		{"cart.reserve with 101 lines", "cart-command.cart.reserve.minimal.json", cartCommandSchema(TypeCartReserve),
			func(v map[string]any) { v["items"] = cartLines(MaxCartItems + 1) }, false},
		{"cart.reserve without lines", "cart-command.cart.reserve.minimal.json", cartCommandSchema(TypeCartReserve),
			func(v map[string]any) { v["items"] = []any{} }, false},
		{"cart line quantity 0", "cart-command.cart.reserve.json", cartCommandSchema(TypeCartReserve),
			func(v map[string]any) { v["items"].([]any)[2].(map[string]any)["quantity"] = num("0") }, false},
		{"cart line without sku", "cart-command.cart.reserve.json", cartCommandSchema(TypeCartReserve),
			func(v map[string]any) { delete(v["items"].([]any)[1].(map[string]any), "sku") }, false},
		{"cart line of a bad sku", "cart-command.cart.reserve.json", cartCommandSchema(TypeCartReserve),
			func(v map[string]any) { v["items"].([]any)[0].(map[string]any)["sku"] = "SKU 1" }, false},
		{"cart line that is not an object", "cart-command.cart.reserve.json", cartCommandSchema(TypeCartReserve),
			func(v map[string]any) { v["items"].([]any)[0] = "SKU-1" }, false},
		{"cart line with an unknown field", "cart-command.cart.reserve.json", cartCommandSchema(TypeCartReserve),
			func(v map[string]any) { v["items"].([]any)[0].(map[string]any)["gift_wrap"] = true }, true},
		{"cart.reserve ttl 0", "cart-command.cart.reserve.json", cartCommandSchema(TypeCartReserve),
			func(v map[string]any) { v["ttl_seconds"] = num("0") }, false},
		{"cart command without cart_id", "cart-command.cart.release.json", cartCommandSchema(TypeCartRelease),
			func(v map[string]any) { delete(v, "cart_id") }, false},
		{"cart.commit without order_id", "cart-command.cart.commit.json", cartCommandSchema(TypeCartCommit),
			func(v map[string]any) { delete(v, "order_id") }, false},
		{"cart command of another type", "cart-command.cart.commit.json", cartCommandSchema(TypeCartRelease),
			func(map[string]any) {}, false},

		// (k) cart results
		{"cart result accepted with a reason", "cart-result.reserve.accepted.json", "cart-result.schema.json",
			func(v map[string]any) { v["reason"] = ReasonCartBusy }, false},
		{"cart result rejected without reason", "cart-result.reserve.accepted.json", "cart-result.schema.json",
			func(v map[string]any) { v["outcome"] = OutcomeRejected }, false},
		{"cart result with an unknown reason", "cart-result.reserve.rejected.json", "cart-result.schema.json",
			func(v map[string]any) { v["reason"] = "out_of_luck" }, false},
		{"cart result of a per-SKU type", "cart-result.reserve.accepted.json", "cart-result.schema.json",
			func(v map[string]any) { v["type"] = TypeReserve }, false},
		{"cart result without cart_id", "cart-result.reserve.accepted.json", "cart-result.schema.json",
			func(v map[string]any) { v["cart_id"] = "" }, false},
		{"cart invalid_command echoes what it could read", "cart-result.reserve.rejected.invalid-command.json", "cart-result.schema.json",
			func(v map[string]any) { v["type"], v["cart_id"] = "cart.refill", "" }, true},
		{"cart invalid_command of an over-long command_id", "cart-result.rejected.command-id-too-long.json", "cart-result.schema.json",
			func(map[string]any) {}, true},
		{"cart command_id too long otherwise", "cart-result.reserve.accepted.json", "cart-result.schema.json",
			func(v map[string]any) { v["command_id"] = strings.Repeat("c", MaxIDLen+1) }, false},
		{"cart result with lines null", "cart-result.reserve.rejected.cart-busy.json", "cart-result.schema.json",
			func(v map[string]any) { v["lines"] = nil }, true},
		{"cart result without lines", "cart-result.reserve.rejected.cart-busy.json", "cart-result.schema.json",
			func(v map[string]any) { delete(v, "lines") }, false},
		{"cart line rejected without reason", "cart-result.reserve.rejected.json", "cart-result.schema.json",
			func(v map[string]any) { v["lines"].([]any)[1].(map[string]any)["reason"] = "" }, false},
		{"cart line rejected for a cart reason", "cart-result.reserve.rejected.json", "cart-result.schema.json",
			func(v map[string]any) { v["lines"].([]any)[1].(map[string]any)["reason"] = ReasonCartBusy }, false},
		{"cart line accepted with a reason", "cart-result.reserve.rejected.json", "cart-result.schema.json",
			func(v map[string]any) { v["lines"].([]any)[0].(map[string]any)["reason"] = ReasonInsufficientStock }, false},
		{"cart line not tried", "cart-result.reserve.rejected.json", "cart-result.schema.json",
			func(v map[string]any) {
				l := v["lines"].([]any)[2].(map[string]any)
				l["outcome"], l["status"], l["expires_at"] = "", "", ""
			}, true},
		{"cart line of an unknown status", "cart-result.reserve.rejected.json", "cart-result.schema.json",
			func(v map[string]any) { v["lines"].([]any)[0].(map[string]any)["status"] = "prepared" }, false},
		{"cart line expires_at without milliseconds", "cart-result.reserve.accepted.json", "cart-result.schema.json",
			func(v map[string]any) { v["lines"].([]any)[0].(map[string]any)["expires_at"] = "2026-01-01T00:16:00Z" }, false},
		{"cart line quantity 0", "cart-result.reserve.accepted.json", "cart-result.schema.json",
			func(v map[string]any) { v["lines"].([]any)[0].(map[string]any)["quantity"] = num("0") }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := decodeMap(t, readFile(t, goldenDir, tt.golden))
			tt.change(v)
			errs := set.validate(tt.schema, set[tt.schema], v, "$")
			if tt.valid {
				assert.Empty(t, errs)
			} else {
				assert.NotEmpty(t, errs, "%s accepts it", tt.schema)
			}
		})
	}
}

// cartLines returns n distinct cart lines as decoded JSON.
func cartLines(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = map[string]any{"sku": fmt.Sprintf("SKU-%d", i), "quantity": json.Number("1")}
	}
	return out
}

// checkObject compares the object schema node (in file) with the Go struct typ.
func checkObject(t *testing.T, set schemaSet, file string, node any, typ reflect.Type, at string) {
	t.Helper()
	file, obj := set.objectSchema(t, file, node)
	props, _ := obj["properties"].(map[string]any)
	fields := jsonFields(t, typ)
	assert.ElementsMatch(t, fieldNames(fields), mapKeys(props), "%s: schema properties vs json fields of %s", at, typ)
	var required []string
	for _, f := range fields {
		if !f.omitempty {
			required = append(required, f.name)
		}
	}
	assert.ElementsMatch(t, required, stringsOf(obj["required"]), "%s: required vs fields of %s without omitempty", at, typ)
	for _, f := range fields {
		p, ok := props[f.name]
		if !ok {
			continue
		}
		assert.Equal(t, f.wantTypes(), set.schemaTypes(t, file, p), "%s.%s: JSON type", at, f.name)
		if st := f.structType(); st != nil {
			checkObject(t, set, file, p, st, at+"."+f.name)
		}
	}
}

// objectSchema follows $ref, items and the non-null branch of anyOf to the
// schema object that has the properties.
func (s schemaSet) objectSchema(t *testing.T, file string, node any) (string, map[string]any) {
	t.Helper()
	for range 10 {
		n, ok := node.(map[string]any)
		require.True(t, ok, "schema is a %T", node)
		if _, ok := n["properties"]; ok {
			return file, n
		}
		if items, ok := n["items"]; ok { // an array of objects
			node = items
			continue
		}
		if ref, ok := n["$ref"].(string); ok {
			var err error
			file, node, err = s.resolve(file, ref)
			require.NoError(t, err)
			continue
		}
		branches, _ := n["anyOf"].([]any)
		branches = slices.DeleteFunc(slices.Clone(branches), func(b any) bool {
			m, _ := b.(map[string]any)
			return m["type"] == "null"
		})
		require.Len(t, branches, 1, "want one $ref or one non-null anyOf branch in %v", n)
		node = branches[0]
	}
	require.FailNow(t, "$ref chain too long")
	return "", nil
}

// schemaTypes returns the JSON types a schema node admits, through type,
// const, enum, $ref and anyOf, sorted.
func (s schemaSet) schemaTypes(t *testing.T, file string, node any) []string {
	t.Helper()
	types := map[string]bool{}
	var collect func(file string, node any)
	collect = func(file string, node any) {
		n, _ := node.(map[string]any)
		switch typ := n["type"].(type) {
		case string:
			types[typ] = true
		case []any:
			for _, x := range typ {
				types[x.(string)] = true
			}
		}
		if c, ok := n["const"]; ok {
			types[jsonTypeOf(c)] = true
		}
		enum, _ := n["enum"].([]any)
		for _, e := range enum {
			types[jsonTypeOf(e)] = true
		}
		if ref, ok := n["$ref"].(string); ok {
			f, target, err := s.resolve(file, ref)
			require.NoError(t, err)
			collect(f, target)
		}
		anyOf, _ := n["anyOf"].([]any)
		for _, b := range anyOf {
			collect(file, b)
		}
	}
	collect(file, node)
	return mapKeys(types)
}

func jsonTypeOf(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case json.Number:
		if rat(v).IsInt() {
			return "integer"
		}
		return "number"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	return "unknown"
}

// jsonField is one field of a Go struct as encoding/json writes it.
type jsonField struct {
	name      string
	omitempty bool
	typ       reflect.Type
}

var millisType = reflect.TypeFor[Millis]()

// wantTypes returns the JSON types the field encodes to, sorted: a pointer or
// a slice without omitempty may be null.
func (f jsonField) wantTypes() []string {
	typ, nullable := f.typ, false
	if typ.Kind() == reflect.Pointer {
		typ, nullable = typ.Elem(), !f.omitempty
	}
	if typ.Kind() == reflect.Slice {
		nullable = !f.omitempty
	}
	var want string
	switch {
	case typ == millisType, typ.Kind() == reflect.String:
		want = "string"
	case typ.Kind() == reflect.Bool:
		want = "boolean"
	case typ.Kind() >= reflect.Int && typ.Kind() <= reflect.Int64:
		want = "integer"
	case typ.Kind() == reflect.Struct:
		want = "object"
	case typ.Kind() == reflect.Slice:
		want = "array"
	default:
		want = "unsupported Go type " + typ.String()
	}
	if nullable {
		return slices.Sorted(slices.Values([]string{"null", want}))
	}
	return []string{want}
}

// structType returns the struct the field holds (directly, by pointer or as
// the elements of a slice), or nil.
func (f jsonField) structType() reflect.Type {
	typ := f.typ
	if typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
		typ = typ.Elem()
	}
	if typ.Kind() == reflect.Struct {
		return typ
	}
	return nil
}

// jsonFields lists the JSON fields of struct typ from its json tags.
func jsonFields(t *testing.T, typ reflect.Type) []jsonField {
	t.Helper()
	var out []jsonField
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		require.False(t, f.Anonymous, "%s.%s: embedded fields are not supported by this check", typ, f.Name)
		tag, ok := f.Tag.Lookup("json")
		require.True(t, ok, "%s.%s has no json tag", typ, f.Name)
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		require.NotEmpty(t, name, "%s.%s: json tag without a name", typ, f.Name)
		out = append(out, jsonField{name: name, omitempty: slices.Contains(strings.Split(opts, ","), "omitempty"), typ: f.Type})
	}
	return out
}

func fieldNames(fields []jsonField) []string {
	var out []string
	for _, f := range fields {
		out = append(out, f.name)
	}
	return out
}

func withoutDescription(node any) map[string]any {
	n, _ := node.(map[string]any)
	out := maps.Clone(n)
	delete(out, "description")
	return out
}

func mapKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

func stringsOf(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func anys[T any](xs ...T) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

func goldenFiles(t *testing.T, prefix string) []string {
	t.Helper()
	var out []string
	for _, name := range dirNames(t, goldenDir) {
		if strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
	}
	return out
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		if !e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}

func readFile(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	require.NoError(t, err)
	return b
}

func decodeAny(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	require.NoError(t, decodeJSON(b, &v))
	return v
}

func decodeMap(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, decodeJSON(b, &m))
	return m
}
