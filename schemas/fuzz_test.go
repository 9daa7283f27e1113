package schemas

// The command decoders' fuzz targets. The seed corpus is in
// testdata/fuzz/FuzzDecodeCommand/ (plus the golden and invalid examples, added
// below), and plain `go test` runs it. To fuzz:
//
//	go test -run '^$' -fuzz '^FuzzDecodeCommand$' -fuzztime 60s ./schemas/
//	go test -run '^$' -fuzz '^FuzzDecodeCartCommand$' -fuzztime 60s ./schemas/

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// fuzzFields are the JSON names of Command: the fields an error may name.
var fuzzFields = []string{"command_id", "type", "sku", "reason", "issued_at", "on_hand", "expected_on_hand",
	"low_stock_threshold", "delta", "reservation_id", "quantity", "ttl_seconds", "cart_id", "store_id", "order_id",
	"reply_to", "reply_partition"}

// cartFuzzField matches the fields a cart command error may name: a field of
// CartCommand, or a line (items[3]) or a field of one (items[3].quantity).
var cartFuzzField = regexp.MustCompile(`^(command_id|type|cart_id|reason|issued_at|ttl_seconds|order_id|reply_to|reply_partition|items|items\[(0|[1-9][0-9]*)\](\.(sku|quantity|reservation_id))?)$`)

// fuzzLimit is a record size limit small enough for the fuzzer to cross.
const fuzzLimit = 256

// FuzzDecodeCommand: DecodeCommand and Validate never panic; every error is an
// *UndecodableError with a message, or a *FieldError naming a field of the
// contract with a message; the size limit sends exactly the records over it to
// the DLQ and changes nothing else; a command that passes both re-encodes and
// decodes to the same command, which passes again.
func FuzzDecodeCommand(f *testing.F) {
	for _, dir := range []string{"testdata/golden", "testdata/invalid"} {
		files, _ := filepath.Glob(filepath.Join(dir, "command*.json"))
		if dir == "testdata/invalid" {
			files, _ = filepath.Glob(filepath.Join(dir, "*"))
		}
		for _, name := range files {
			if b, err := os.ReadFile(name); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b, 0)
		checkDecodeError(t, err)

		limited, lerr := DecodeCommand(b, fuzzLimit)
		var ue *UndecodableError
		if len(b) > fuzzLimit {
			if !errors.As(lerr, &ue) || !strings.Contains(ue.Msg, "exceeds the limit") {
				t.Fatalf("a record of %d bytes over the limit of %d: %v", len(b), fuzzLimit, lerr)
			}
		} else if !reflect.DeepEqual(limited, c) || !reflect.DeepEqual(lerr, err) {
			t.Fatalf("the size limit changed the decoding of a record under it:\n%+v %v\n%+v %v", c, err, limited, lerr)
		}

		if errors.As(err, &ue) {
			return
		}
		fe := c.Validate()
		if fe != nil {
			checkFieldError(t, fe)
		}
		if err != nil || fe != nil {
			return
		}
		enc, merr := json.Marshal(c)
		if merr != nil {
			t.Fatalf("encode %+v: %v", c, merr)
		}
		back, err := DecodeCommand(enc, 0)
		if err != nil {
			t.Fatalf("decode the encoding %s: %v", enc, err)
		}
		if !reflect.DeepEqual(c, back) {
			t.Fatalf("round trip:\n%+v\n%+v\n(encoding %s)", c, back, enc)
		}
		if fe := back.Validate(); fe != nil {
			t.Fatalf("the round trip of a valid command is invalid: %v", fe)
		}
	})
}

func checkDecodeError(t *testing.T, err error) {
	t.Helper()
	var ue *UndecodableError
	var fe *FieldError
	switch {
	case err == nil:
	case errors.As(err, &ue):
		if ue.Msg == "" {
			t.Fatalf("undecodable without a message: %+v", ue)
		}
	case errors.As(err, &fe):
		checkFieldError(t, fe)
	default:
		t.Fatalf("decoder error of neither class: %T %v", err, err)
	}
}

func checkFieldError(t *testing.T, fe *FieldError) {
	t.Helper()
	if fe.Field == "" || fe.Msg == "" || !slices.Contains(fuzzFields, fe.Field) {
		t.Fatalf("field error must name a contract field and say why: %+v", fe)
	}
	if !strings.HasPrefix(fe.Error(), fe.Field+": ") {
		t.Fatalf("field error message %q does not start with the field", fe.Error())
	}
}

// FuzzDecodeCartCommand is FuzzDecodeCommand for DecodeCartCommand and
// CartCommand.Validate; a field error names a CartCommand field or a line.
func FuzzDecodeCartCommand(f *testing.F) {
	golden, _ := filepath.Glob(filepath.Join("testdata/golden", "cart-command.*.json"))
	invalid, _ := filepath.Glob(filepath.Join("testdata/invalid-cart", "*"))
	for _, name := range append(golden, invalid...) {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"command_id":"c","type":"cart.reserve","cart_id":"k","items":[{"sku":"a","quantity":1},{"sku":"b","quantity":1}],"items":[{"sku":"a","quantity":"1"}]}`))
	f.Add([]byte(`{"command_id":"c","type":"cart.reserve","cart_id":"k","Items":[null,{"SKU":"a","Quantity":1}]}`))
	check := func(t *testing.T, fe *FieldError) {
		t.Helper()
		if fe.Msg == "" || !cartFuzzField.MatchString(fe.Field) || !strings.HasPrefix(fe.Error(), fe.Field+": ") {
			t.Fatalf("field error must name a cart command field or line and say why: %+v", fe)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCartCommand(b, 0)
		var ue *UndecodableError
		var fe *FieldError
		switch {
		case err == nil:
		case errors.As(err, &ue):
			if ue.Msg == "" {
				t.Fatalf("undecodable without a message: %+v", ue)
			}
		case errors.As(err, &fe):
			check(t, fe)
		default:
			t.Fatalf("decoder error of neither class: %T %v", err, err)
		}

		limited, lerr := DecodeCartCommand(b, fuzzLimit)
		if len(b) > fuzzLimit {
			if !errors.As(lerr, &ue) || !strings.Contains(ue.Msg, "exceeds the limit") {
				t.Fatalf("a record of %d bytes over the limit of %d: %v", len(b), fuzzLimit, lerr)
			}
		} else if !reflect.DeepEqual(limited, c) || !reflect.DeepEqual(lerr, err) {
			t.Fatalf("the size limit changed the decoding of a record under it:\n%+v %v\n%+v %v", c, err, limited, lerr)
		}

		if errors.As(err, &ue) {
			return
		}
		vfe := c.Validate()
		if vfe != nil {
			check(t, vfe)
		}
		if err != nil || vfe != nil {
			return
		}
		enc, merr := json.Marshal(c)
		if merr != nil {
			t.Fatalf("encode %+v: %v", c, merr)
		}
		back, err := DecodeCartCommand(enc, 0)
		if err != nil {
			t.Fatalf("decode the encoding %s: %v", enc, err)
		}
		if !reflect.DeepEqual(c, back) {
			t.Fatalf("round trip:\n%+v\n%+v\n(encoding %s)", c, back, enc)
		}
		if fe := back.Validate(); fe != nil {
			t.Fatalf("the round trip of a valid cart command is invalid: %v", fe)
		}
	})
}

// FuzzFastCommand: the fast path of the command decoder either declines or
// reads exactly what encoding/json reads.
func FuzzFastCommand(f *testing.F) {
	for _, dir := range []string{"testdata/golden", "testdata/invalid"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		for _, name := range files {
			if b, err := os.ReadFile(name); err == nil {
				f.Add(b)
			}
		}
	}
	for _, s := range []string{`{}`, ` {"command_id":"c1","type":"reserve","sku":"A","quantity":-0,"ttl_seconds":null} `,
		`{"command_id":"c","quantity":1,"quantity":null}`, `{"command_id":"c","sku":null}`, `{"command_id":"c","quantity":1e3}`,
		`{"command_id":"c","quantity":01}`, `{"command_id":"c","quantity":1.0}`, `{"command_id":"c","quantity":999999999999999999}`,
		`{"command_id":"c","quantity":9999999999999999999}`, `{"command_id":"c","SKU":"x"}`, `{"command_id":"c","sku":"a\u0041"}`,
		`{"command_id":"c","extra":1}`, `{"command_id":"c"} x`, `{"command_id":"c",}`, `{"command_id":"c","quantity":nul}`,
		`{"command_id":"c","quantity":nullx}`, `{"command_id":"c","quantity":"1"}`, `{"command_id":1}`, `[]`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast Command
		if !fastCommand(b, &fast) {
			return
		}
		var slow Command
		if err := json.Unmarshal(b, &slow); err != nil {
			t.Fatalf("the fast path read %q, which encoding/json refuses: %v", b, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q:\nfast %+v\njson %+v", b, fast, slow)
		}
	})
}

// TestFastCommandReadsWhatProducersWrite: the fast path takes the commands of
// the golden files and of the project's own encoder (so it is the path of a
// normal record, not a decoder that always declines), except those it is meant
// to leave to encoding/json.
func TestFastCommandReadsWhatProducersWrite(t *testing.T) {
	declined := map[string]bool{
		"command.reserve.extra-fields.json": true, // fields outside the contract
		"command.reserve.limits.json":       true, // non-ASCII strings
	}
	files, err := filepath.Glob("testdata/golden/command*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden commands: %v", err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		var c Command
		if got := !fastCommand(b, &c); got != declined[filepath.Base(name)] {
			t.Errorf("%s: the fast path declined: %v, want %v", name, got, declined[filepath.Base(name)])
			continue
		}
		if declined[filepath.Base(name)] {
			continue
		}
		enc, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var back Command
		if !fastCommand(enc, &back) || !reflect.DeepEqual(c, back) {
			t.Errorf("%s: the fast path declined or misread the encoder's output %s", name, enc)
		}
	}
}
