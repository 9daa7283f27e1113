package schemas

// These tests keep three descriptions of the wire contract in step: the Go
// types of this package, the JSON Schema files in json/ and the examples in
// testdata/. A field added to one and not the others fails here.

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
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

// commonCommandFields are the properties of every command schema.
var commonCommandFields = []string{"command_id", "type", "sku", "reason", "issued_at"}

// commandFields are the type-specific properties of each command schema.
// Together with commonCommandFields they must cover every JSON field of Command.
var commandFields = map[string][]string{
	TypeStockSet:    {"on_hand", "expected_on_hand", "low_stock_threshold"},
	TypeStockAdjust: {"delta", "expected_on_hand"},
	TypeReserve:     {"reservation_id", "quantity", "ttl_seconds", "cart_id", "store_id"},
	TypeAdjust:      {"reservation_id", "quantity"},
	TypeRelease:     {"reservation_id"},
	TypeExtend:      {"reservation_id", "ttl_seconds"},
	TypeCommit:      {"reservation_id", "order_id"},
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
}

// dlqHeaders are the headers of a dead-letter record. They have no Go type yet,
// so this list is the reference for dlq.headers.schema.json.
var dlqHeaders = []string{"error", "source_topic", "source_partition", "source_offset"}

const (
	dlqSchema = "dlq.headers.schema.json"
	dlqPrefix = "dlq.headers."
)

func commandSchema(typ string) string { return "command." + typ + ".schema.json" }

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
	prefixes := []string{"command.", dlqPrefix}
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
	for _, kind := range valueKinds {
		want = append(want, kind.schema)
	}
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
			anys(EventReserved, EventAdjusted, EventReleased, EventExtended, EventCommitted, EventExpired)},
		{"changelog.command.schema.json", "#/properties/event/const", []any{EventDecided}},
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

// objectSchema follows $ref and the non-null branch of anyOf to the schema
// object that has the properties.
func (s schemaSet) objectSchema(t *testing.T, file string, node any) (string, map[string]any) {
	t.Helper()
	for range 10 {
		n, ok := node.(map[string]any)
		require.True(t, ok, "schema is a %T", node)
		if _, ok := n["properties"]; ok {
			return file, n
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

// wantTypes returns the JSON types the field encodes to, sorted: a pointer
// without omitempty may be null.
func (f jsonField) wantTypes() []string {
	typ, nullable := f.typ, false
	if typ.Kind() == reflect.Pointer {
		typ, nullable = typ.Elem(), !f.omitempty
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
	default:
		want = "unsupported Go type " + typ.String()
	}
	if nullable {
		return slices.Sorted(slices.Values([]string{"null", want}))
	}
	return []string{want}
}

// structType returns the struct the field holds (directly or by pointer), or nil.
func (f jsonField) structType() reflect.Type {
	typ := f.typ
	if typ.Kind() == reflect.Pointer {
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
