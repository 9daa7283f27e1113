package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// This file holds a deliberately small JSON Schema (draft 2020-12) checker for
// the tests: only the keywords the files in json/ use. The project may not add a
// validator dependency, and a subset is enough to prove that the golden and
// invalid examples agree with the schema files. A schema that uses any other
// keyword fails TestSchemaFiles, so the checker can never pass silently.

// schemaKeywords are the keywords the checker understands; annotations are
// accepted and ignored.
var schemaKeywords = map[string]bool{
	// annotations
	"$schema": true, "$id": true, "$comment": true, "$defs": true, "title": true, "description": true,
	"default": true, "examples": true, "format": true,
	// assertions and applicators
	"$ref": true, "type": true, "const": true, "enum": true, "pattern": true, "minLength": true, "maxLength": true,
	"minimum": true, "maximum": true, "required": true, "properties": true, "additionalProperties": true,
	"anyOf": true, "allOf": true, "oneOf": true, "not": true, "if": true, "then": true, "else": true,
	"items": true, "minItems": true, "maxItems": true,
}

// schemaSet is the schema files of one directory, by file name. $ref values are
// resolved by file name within the set, plus an optional JSON pointer fragment.
type schemaSet map[string]map[string]any

// loadSchemas reads every *.schema.json file of dir.
func loadSchemas(t *testing.T, dir string) schemaSet {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.schema.json"))
	require.NoError(t, err)
	require.NotEmpty(t, names, "no schema files in %s", dir)
	set := schemaSet{}
	for _, name := range names {
		b, err := os.ReadFile(name)
		require.NoError(t, err)
		var doc map[string]any
		require.NoError(t, decodeJSON(b, &doc), "schema %s is not a JSON object", name)
		set[filepath.Base(name)] = doc
	}
	return set
}

// decodeJSON decodes exactly one JSON value, keeping numbers as json.Number so
// that int64 values compare exactly.
func decodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the JSON value")
	}
	return nil
}

// resolve follows a $ref written in file: "other.schema.json#/$defs/x",
// "#/$defs/x" or "other.schema.json". Array elements are addressed by index.
func (s schemaSet) resolve(file, ref string) (string, any, error) {
	target, pointer, _ := strings.Cut(ref, "#")
	if target != "" {
		file = target
	}
	var node any = s[file]
	if s[file] == nil {
		return "", nil, fmt.Errorf("$ref %q: no schema file %s", ref, file)
	}
	for _, tok := range strings.Split(strings.TrimPrefix(pointer, "/"), "/") {
		if tok == "" {
			continue
		}
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		var next any
		switch n := node.(type) {
		case map[string]any:
			next = n[tok]
		case []any:
			if i, err := strconv.Atoi(tok); err == nil && i >= 0 && i < len(n) {
				next = n[i]
			}
		}
		if next == nil {
			return "", nil, fmt.Errorf("$ref %q: %q not found", ref, tok)
		}
		node = next
	}
	return file, node, nil
}

// validate returns the violations of value v against the schema node of file,
// each prefixed with the JSON path at.
func (s schemaSet) validate(file string, node, v any, at string) []string {
	if b, ok := node.(bool); ok {
		if b {
			return nil
		}
		return []string{at + ": schema false"}
	}
	n, ok := node.(map[string]any)
	if !ok {
		return []string{fmt.Sprintf("%s: schema is a %T, want an object", at, node)}
	}
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, at+": "+fmt.Sprintf(format, args...)) }
	obj, isObj := v.(map[string]any)
	str, isStr := v.(string)
	num, isNum := v.(json.Number)
	arr, isArr := v.([]any)
	for kw, arg := range n {
		switch kw {
		case "$schema", "$id", "$comment", "$defs", "title", "description", "default", "examples", "format", "then", "else":
		case "$ref":
			f, target, err := s.resolve(file, arg.(string))
			if err != nil {
				fail("%v", err)
				continue
			}
			errs = append(errs, s.validate(f, target, v, at)...)
		case "type":
			types, ok := arg.([]any)
			if !ok {
				types = []any{arg}
			}
			if !slices.ContainsFunc(types, func(t any) bool { return hasType(v, t.(string)) }) {
				fail("want type %v, got %s", arg, describe(v))
			}
		case "const":
			if !jsonEqual(v, arg) {
				fail("want %v, got %s", arg, describe(v))
			}
		case "enum":
			if !slices.ContainsFunc(arg.([]any), func(e any) bool { return jsonEqual(v, e) }) {
				fail("want one of %v, got %s", arg, describe(v))
			}
		case "pattern":
			re, err := regexp.Compile(arg.(string))
			if err != nil {
				fail("bad pattern: %v", err)
			} else if isStr && !re.MatchString(str) {
				fail("%q does not match %s", str, arg)
			}
		case "minLength":
			if isStr && utf8.RuneCountInString(str) < toInt(arg) {
				fail("shorter than %v characters", arg)
			}
		case "maxLength":
			if isStr && utf8.RuneCountInString(str) > toInt(arg) {
				fail("longer than %v characters", arg)
			}
		case "minimum":
			if isNum && rat(num).Cmp(rat(arg.(json.Number))) < 0 {
				fail("%s is below the minimum %s", num, arg)
			}
		case "maximum":
			if isNum && rat(num).Cmp(rat(arg.(json.Number))) > 0 {
				fail("%s is above the maximum %s", num, arg)
			}
		case "items":
			for i, el := range arr {
				errs = append(errs, s.validate(file, arg, el, fmt.Sprintf("%s[%d]", at, i))...)
			}
		case "minItems":
			if isArr && len(arr) < toInt(arg) {
				fail("fewer than %v items", arg)
			}
		case "maxItems":
			if isArr && len(arr) > toInt(arg) {
				fail("more than %v items", arg)
			}
		case "required":
			for _, k := range arg.([]any) {
				if _, ok := obj[k.(string)]; isObj && !ok {
					fail("missing required property %q", k)
				}
			}
		case "properties":
			for k, sub := range arg.(map[string]any) {
				if val, ok := obj[k]; isObj && ok {
					errs = append(errs, s.validate(file, sub, val, at+"."+k)...)
				}
			}
		case "additionalProperties":
			allowed, ok := arg.(bool)
			if !ok {
				fail("additionalProperties: only true/false are supported")
			} else if isObj && !allowed {
				props, _ := n["properties"].(map[string]any)
				for k := range obj {
					if _, ok := props[k]; !ok {
						fail("unexpected property %q", k)
					}
				}
			}
		case "anyOf":
			if !slices.ContainsFunc(arg.([]any), func(sub any) bool { return len(s.validate(file, sub, v, at)) == 0 }) {
				fail("matches no anyOf branch")
			}
		case "oneOf":
			if n := len(s.oneOfMatches(file, arg, v, at)); n != 1 {
				fail("matches %d oneOf branches, want exactly 1", n)
			}
		case "allOf":
			for _, sub := range arg.([]any) {
				errs = append(errs, s.validate(file, sub, v, at)...)
			}
		case "not":
			if len(s.validate(file, arg, v, at)) == 0 {
				fail("matches the not schema %v", arg)
			}
		case "if":
			branch := "else"
			if len(s.validate(file, arg, v, at)) == 0 {
				branch = "then"
			}
			if sub, ok := n[branch]; ok {
				errs = append(errs, s.validate(file, sub, v, at)...)
			}
		default:
			fail("unsupported keyword %q", kw)
		}
	}
	return errs
}

// oneOfMatches returns the indexes of the branches of the oneOf argument arg
// that v matches.
func (s schemaSet) oneOfMatches(file string, arg, v any, at string) []int {
	var matches []int
	for i, sub := range arg.([]any) {
		if len(s.validate(file, sub, v, at)) == 0 {
			matches = append(matches, i)
		}
	}
	return matches
}

// walkSchema calls fn for every subschema object of node, including node.
func walkSchema(node any, at string, fn func(at string, n map[string]any)) {
	n, ok := node.(map[string]any)
	if !ok {
		return
	}
	fn(at, n)
	for _, kw := range []string{"properties", "$defs"} {
		m, _ := n[kw].(map[string]any)
		for k, sub := range m {
			walkSchema(sub, at+"/"+kw+"/"+k, fn)
		}
	}
	for _, kw := range []string{"anyOf", "allOf", "oneOf"} {
		l, _ := n[kw].([]any)
		for i, sub := range l {
			walkSchema(sub, fmt.Sprintf("%s/%s/%d", at, kw, i), fn)
		}
	}
	for _, kw := range []string{"not", "if", "then", "else", "additionalProperties", "items"} {
		walkSchema(n[kw], at+"/"+kw, fn)
	}
}

func hasType(v any, typ string) bool {
	switch typ {
	case "null":
		return v == nil
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "number":
		_, ok := v.(json.Number)
		return ok
	case "integer":
		n, ok := v.(json.Number)
		return ok && rat(n).IsInt()
	}
	return false
}

// rat parses a JSON number exactly. It panics on a malformed number, which a
// successful decode rules out.
func rat(n json.Number) *big.Rat {
	r, ok := new(big.Rat).SetString(n.String())
	if !ok {
		panic(fmt.Sprintf("bad JSON number %q", n))
	}
	return r
}

func toInt(v any) int {
	n, err := v.(json.Number).Int64()
	if err != nil {
		panic(fmt.Sprintf("want an integer keyword argument, got %v", v))
	}
	return int(n)
}

// jsonEqual compares two decoded JSON values, numbers by value.
func jsonEqual(a, b any) bool {
	an, aok := a.(json.Number)
	bn, bok := b.(json.Number)
	if aok || bok {
		return aok && bok && rat(an).Cmp(rat(bn)) == 0
	}
	return reflect.DeepEqual(a, b)
}

func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		return fmt.Sprintf("string %q", v)
	case json.Number:
		return "number " + v.String()
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("%T %v", v, v)
}
