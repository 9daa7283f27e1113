package schemas

// Tests of the per-topic schemas (json/topic.<topic>.schema.json): the value
// schemas to register for each topic, made of the per-type schemas.

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// topicSchemas are the per-topic value schemas, by topic (the part of the
// topic name after the prefix). The DLQ has none: its values are whatever
// could not be decoded; the cart changelog has none: it is not a contract.
var topicSchemas = map[string]string{
	"commands":      "topic.commands.schema.json",
	"results":       "topic.results.schema.json",
	"changelog":     "topic.changelog.schema.json",
	"cart-commands": "topic.cart-commands.schema.json",
	"cart-results":  "topic.cart-results.schema.json",
}

func topicSchemaFiles() []string {
	var out []string
	for _, f := range topicSchemas {
		out = append(out, f)
	}
	return out
}

// branchLabel names a oneOf branch of a topic schema: the file it refers to
// ("command.reserve.schema.json"), and for the branches made of
// result.schema.json whether it is the decision (not a notice) or the notice.
func branchLabel(t *testing.T, branch any) string {
	t.Helper()
	n := branch.(map[string]any)
	if ref, ok := n["$ref"].(string); ok {
		return ref
	}
	all, ok := n["allOf"].([]any)
	require.True(t, ok && len(all) == 2, "branch %v: want a $ref or allOf [$ref, notice rule]", n)
	ref := all[0].(map[string]any)["$ref"].(string)
	if _, not := all[1].(map[string]any)["not"]; not {
		return ref + " decision"
	}
	return ref + " notice"
}

// goldenTopics returns where a golden example may appear: topic schema file
// -> the label of the oneOf branch it must match ("" for a schema without
// oneOf).
func goldenTopics(t *testing.T, name string, v any) map[string]string {
	t.Helper()
	m, _ := v.(map[string]any)
	typ, _ := m["type"].(string)
	switch {
	case strings.HasPrefix(name, "command."):
		return map[string]string{topicSchemas["commands"]: commandSchema(typ)}
	case strings.HasPrefix(name, "result."):
		if (typ == TypeExpired || typ == TypeLowStock) && m["outcome"] == OutcomeAccepted {
			return map[string]string{topicSchemas["results"]: "result.schema.json notice"}
		}
		// A decision may also be a line result on cart-commands (extension (i)).
		return map[string]string{
			topicSchemas["results"]:       "result.schema.json decision",
			topicSchemas["cart-commands"]: "result.schema.json decision",
		}
	case strings.HasPrefix(name, "changelog."):
		kind, _, _ := strings.Cut(strings.TrimPrefix(name, "changelog."), ".")
		return map[string]string{topicSchemas["changelog"]: "changelog." + kind + ".schema.json"}
	case strings.HasPrefix(name, cartCommandPrefix):
		return map[string]string{topicSchemas["cart-commands"]: cartCommandSchema(typ)}
	case strings.HasPrefix(name, "cart-result."):
		return map[string]string{topicSchemas["cart-results"]: ""}
	case strings.HasPrefix(name, dlqPrefix):
		return map[string]string{}
	}
	t.Fatalf("%s: no topic known for this golden file", name)
	return nil
}

// valueTopics are the topics whose values are the processor's output.
var valueTopics = []string{"results", "changelog", "cart-results"}

// checkTopics validates v against the topic schemas: accepted by those of
// want, through the named oneOf branch. A command (per-SKU or cart) must be
// rejected by the schemas of the processor's output. The converse does not
// hold: the schemas are open (additional properties allowed), so a release
// result, say, is also a well-formed release command; the topic tells them
// apart, not the schema.
func checkTopics(t *testing.T, set schemaSet, want map[string]string, v any, what string) {
	t.Helper()
	_, isCommand := want[topicSchemas["commands"]]
	if _, ok := want[topicSchemas["cart-commands"]]; ok && len(want) == 1 {
		isCommand = true
	}
	if isCommand {
		for _, topic := range valueTopics {
			file := topicSchemas[topic]
			assert.NotEmpty(t, set.validate(file, set[file], v, "$"), "%s: %s accepts a command", what, file)
		}
	}
	for file, label := range want {
		errs := set.validate(file, set[file], v, "$")
		if !assert.Empty(t, errs, "%s: rejected by %s", what, file) {
			continue
		}
		branches, hasOneOf := set[file]["oneOf"].([]any)
		if label == "" {
			assert.False(t, hasOneOf, "%s has a oneOf", file)
			continue
		}
		require.True(t, hasOneOf, "%s has no oneOf", file)
		var got []string
		for _, i := range set.oneOfMatches(file, branches, v, "$") {
			got = append(got, branchLabel(t, branches[i]))
		}
		assert.Equal(t, []string{label}, got, "%s: %s branch", what, file)
	}
}

// TestTopicSchemaFiles: every topic schema's oneOf covers exactly the per-type
// schemas of its topic.
func TestTopicSchemaFiles(t *testing.T) {
	set := loadSchemas(t, schemaDir)
	var commands, cartCommands []string
	for _, typ := range CommandTypes {
		commands = append(commands, commandSchema(typ))
	}
	for _, typ := range CartCommandTypes {
		cartCommands = append(cartCommands, cartCommandSchema(typ))
	}
	want := map[string][]string{
		"commands":      commands,
		"results":       {"result.schema.json decision", "result.schema.json notice"},
		"changelog":     {"changelog.stock.schema.json", "changelog.reservation.schema.json", "changelog.command.schema.json"},
		"cart-commands": append(cartCommands, "result.schema.json decision"),
	}
	for topic, file := range topicSchemas {
		doc := set[file]
		require.NotNil(t, doc, "no schema file %s for topic %s", file, topic)
		branches, _ := doc["oneOf"].([]any)
		if topic == "cart-results" {
			assert.Equal(t, "cart-result.schema.json", doc["$ref"], file)
			assert.Nil(t, branches, file)
			continue
		}
		var got []string
		for _, b := range branches {
			got = append(got, branchLabel(t, b))
		}
		assert.ElementsMatch(t, want[topic], got, "%s: oneOf branches", file)
	}
}

// TestTopicSchemasGolden: every golden example is accepted by the schema of
// its topic, through exactly the branch of its kind; commands are rejected by
// the schemas of the processor's output. So is what the Go encoders write for
// each example.
func TestTopicSchemasGolden(t *testing.T) {
	set := loadSchemas(t, schemaDir)
	for _, name := range dirNames(t, goldenDir) {
		t.Run(name, func(t *testing.T) {
			b := readFile(t, goldenDir, name)
			v := decodeAny(t, b)
			want := goldenTopics(t, name, v)
			checkTopics(t, set, want, v, name)
			if enc := encodeGolden(t, name, b); enc != nil {
				checkTopics(t, set, want, decodeAny(t, enc), name+" (Go encoder)")
			}
		})
	}
}

// encodeGolden decodes a golden example into its Go type and encodes it with
// the appender the processor uses; nil for kinds without one.
func encodeGolden(t *testing.T, name string, b []byte) []byte {
	t.Helper()
	decode := func(v any) { require.NoError(t, json.Unmarshal(b, v), name) }
	switch {
	case strings.HasPrefix(name, "command."):
		c, err := DecodeCommand(b, 0)
		require.NoError(t, err)
		return AppendCommand(nil, &c)
	case strings.HasPrefix(name, "result."):
		var r Result
		decode(&r)
		return AppendResult(nil, &r)
	case strings.HasPrefix(name, "changelog.stock."):
		var s StockEntity
		decode(&s)
		return AppendStockEntity(nil, &s)
	case strings.HasPrefix(name, "changelog.reservation."):
		var r ReservationEntity
		decode(&r)
		return AppendReservationEntity(nil, &r)
	case strings.HasPrefix(name, "changelog.command."):
		var c CommandEntity
		decode(&c)
		return AppendCommandEntity(nil, &c)
	case strings.HasPrefix(name, cartCommandPrefix):
		c, err := DecodeCartCommand(b, 0)
		require.NoError(t, err)
		return AppendCartCommand(nil, &c)
	case strings.HasPrefix(name, "cart-result."):
		var r CartResult
		decode(&r)
		return AppendCartResult(nil, &r)
	}
	return nil
}

// TestTopicSchemasInvalid: no topic schema accepts an invalid command, and
// the cart-commands schema accepts an invalid cart command only where the
// per-type schema does too (the uniqueness rules JSON Schema cannot state).
func TestTopicSchemasInvalid(t *testing.T) {
	set := loadSchemas(t, schemaDir)
	for _, dir := range []string{invalidDir, invalidCartDir} {
		for _, name := range dirNames(t, dir) {
			b := readFile(t, dir, name)
			if !json.Valid(b) {
				continue
			}
			v := decodeAny(t, b)
			perType := slices.ContainsFunc(CartCommandTypes, func(typ string) bool {
				return dir == invalidCartDir && len(set.validate(cartCommandSchema(typ), set[cartCommandSchema(typ)], v, "$")) == 0
			})
			for _, file := range topicSchemaFiles() {
				errs := set.validate(file, set[file], v, "$")
				if perType && file == topicSchemas["cart-commands"] {
					assert.Empty(t, errs, "%s/%s: the per-type schema accepts it, %s does not", dir, name, file)
					continue
				}
				assert.NotEmpty(t, errs, "%s/%s: %s accepts it", dir, name, file)
			}
		}
	}
}

// TestTopicSchemaRules: the branch rules of the topic schemas fire.
func TestTopicSchemaRules(t *testing.T) {
	set := loadSchemas(t, schemaDir)
	golden := func(name string) map[string]any { return decodeMap(t, readFile(t, goldenDir, name)) }
	tests := []struct {
		name   string
		schema string
		value  map[string]any
		edit   func(m map[string]any)
		accept bool
	}{
		{"an accepted expired notice is a notice", "results", golden("result.expired.json"), func(map[string]any) {}, true},
		{"a notice is no line result", "cart-commands", golden("result.expired.json"), func(map[string]any) {}, false},
		{"a notice with a command_id", "results", golden("result.low_stock.json"),
			func(m map[string]any) { m["command_id"] = "c-1" }, false},
		{"an invalid_command rejection echoing type expired is a decision", "results", golden("result.reserve.rejected.invalid-command.json"),
			func(m map[string]any) { m["type"] = "expired" }, true},
		{"a command without type", "commands", golden("command.reserve.json"), func(m map[string]any) { delete(m, "type") }, false},
		{"a command of an unknown type", "commands", golden("command.reserve.json"), func(m map[string]any) { m["type"] = "reserve2" }, false},
		{"a reserve without quantity", "commands", golden("command.reserve.json"), func(m map[string]any) { delete(m, "quantity") }, false},
		{"a stock entity without on_hand", "changelog", golden("changelog.stock.json"), func(m map[string]any) { delete(m, "on_hand") }, false},
		{"a command entity of another event", "changelog", golden("changelog.command.json"), func(m map[string]any) { m["event"] = "reserved" }, false},
		{"a cart command without cart_id", "cart-commands", golden("cart-command.cart.release.json"), func(m map[string]any) { delete(m, "cart_id") }, false},
		{"a cart result without lines", "cart-results", golden("cart-result.reserve.accepted.json"), func(m map[string]any) { delete(m, "lines") }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := topicSchemas[tt.schema]
			tt.edit(tt.value)
			errs := set.validate(file, set[file], any(tt.value), "$")
			if tt.accept {
				assert.Empty(t, errs, file)
			} else {
				assert.NotEmpty(t, errs, "%s accepts it", file)
			}
		})
	}
}
