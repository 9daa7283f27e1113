package sku

// Fuzz target of the pure core (the changelog decoder's, FuzzDecodeChange, is
// in package schemas). The seed corpus is in testdata/fuzz/<target>/ (plus the
// f.Add seeds below), and plain `go test` runs it. To fuzz:
//
//	go test -run '^$' -fuzz '^FuzzApply$' -fuzztime 60s ./processor/sku/

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reservations/reservations/schemas"
)

// fuzzSetup is the state FuzzApply starts from, built through the core and the
// model (and compared on the way): SKU A with a threshold, a due-soon hold, a
// released, an extended and a consumed one, and a hold prepared for a cart
// commit (due soon, but a prepared hold never expires); SKU B oversold by
// stock.set; SKU sku/2 with no stock and threshold 0.
var fuzzSetup = []string{
	`{"command_id":"setup-1","type":"stock.set","sku":"A","on_hand":10,"low_stock_threshold":3}`,
	`{"command_id":"setup-2","type":"reserve","sku":"A","reservation_id":"r1","quantity":4,"ttl_seconds":60,"cart_id":"cart-1"}`,
	`{"command_id":"setup-3","type":"reserve","sku":"A","reservation_id":"r2","quantity":2}`,
	`{"command_id":"setup-4","type":"release","sku":"A","reservation_id":"r2"}`,
	`{"command_id":"setup-5","type":"reserve","sku":"A","reservation_id":"ü/1","quantity":1,"ttl_seconds":86400,"store_id":"köln"}`,
	`{"command_id":"setup-6","type":"extend","sku":"A","reservation_id":"ü/1","ttl_seconds":600}`,
	`{"command_id":"setup-7","type":"reserve","sku":"A","reservation_id":"r3","quantity":1}`,
	`{"command_id":"setup-8","type":"commit","sku":"A","reservation_id":"r3","order_id":"o-1"}`,
	`{"command_id":"setup-9","type":"stock.set","sku":"B","on_hand":5}`,
	`{"command_id":"setup-10","type":"reserve","sku":"B","reservation_id":"h1","quantity":5,"ttl_seconds":3600}`,
	`{"command_id":"setup-11","type":"stock.set","sku":"B","on_hand":2}`,
	`{"command_id":"setup-12","type":"stock.set","sku":"sku/2","on_hand":0,"low_stock_threshold":0}`,
	`{"command_id":"setup-13","type":"reserve","sku":"A","reservation_id":"p1","quantity":1,"ttl_seconds":30,"cart_id":"cart-2"}`,
	`{"command_id":"setup-14","type":"prepare","sku":"A","reservation_id":"p1","order_id":"o-p"}`,
}

// newFuzzRun returns a copy of the setup state in the core and in the model.
func newFuzzRun(t testing.TB) *propRun {
	fuzzSetupOnce.Do(func() { fuzzSetupRun = buildFuzzRun(t) })
	if fuzzSetupRun == nil {
		t.Fatal("setup failed")
	}
	p := *fuzzSetupRun
	p.st, p.m, p.stats, p.log = clone(p.st), p.m.clone(), map[string]int{}, slices.Clone(p.log)
	return &p
}

var (
	fuzzSetupOnce sync.Once
	fuzzSetupRun  *propRun
)

// buildFuzzRun builds the setup state in the core and in the model.
func buildFuzzRun(t testing.TB) *propRun {
	rules := refRules{window: 24 * time.Hour, maxExt: 1}
	p := &propRun{core: Core{Rules: DefaultRules()}, st: make(Entities), m: newRefModel(rules), now: propT0, stats: map[string]int{}}
	for _, raw := range fuzzSetup {
		var sku struct {
			SKU string `json:"sku"`
		}
		if err := json.Unmarshal([]byte(raw), &sku); err != nil {
			t.Fatal(err)
		}
		if err := p.step(propStep{key: sku.SKU, raw: []byte(raw)}, true); err != nil {
			t.Fatalf("setup %s: %v", raw, err)
		}
	}
	return p
}

// contractReasons are the reason codes of CONTRACT.md, plus the extension
// reservation_prepared (schemas/README.md).
var contractReasons = []string{"insufficient_stock", "unknown_sku", "unknown_reservation", "reservation_exists",
	"reservation_not_active", "extension_limit", "stale_expected_on_hand", "negative_stock", "invalid_command", "sku_mismatch",
	"reservation_prepared"}

// contractFields are the command fields of CONTRACT.md: the field an
// invalid_command message names.
var contractFields = append(slices.Clone(refStringFields), refIntFields...)

// FuzzApply decodes arbitrary bytes as a command record with an arbitrary key
// and decides it at a fuzzed time against the setup state, after the due timers
// fired (as in the partition loop). The core never panics and gives exactly one
// decisive result (outcome accepted or rejected; a rejection has a reason of
// the contract, and invalid_command names a field); notices are accepted and
// have no command_id; a rejection changes nothing but the idempotency record;
// the invariants hold afterwards. A command the decoder read without a field
// error is also decided by the reference model (from its canonical encoding),
// and the results and state must agree.
func FuzzApply(f *testing.F) {
	f.Add("A", []byte(`{"command_id":"f1","type":"reserve","sku":"A","reservation_id":"x","quantity":2}`), uint16(0))
	f.Add("A", []byte(`{"command_id":"f2","type":"commit","sku":"A","reservation_id":"r1","order_id":"o"}`), uint16(61))
	f.Add("B", []byte(`{"command_id":"f3","type":"stock.adjust","sku":"B","delta":9223372036854775807}`), uint16(0))
	f.Add("A", []byte(`{"command_id":"setup-2","type":"reserve","sku":"A","reservation_id":"r1","quantity":4}`), uint16(5))
	f.Add("A", []byte(`{"command_id":"f4","type":"unprepare","sku":"A","reservation_id":"p1"}`), uint16(61))
	f.Add("A", []byte(`{"command_id":"f5","type":"commit","sku":"A","reservation_id":"p1","order_id":"o-2"}`), uint16(3600))
	f.Add("A", []byte(`{"command_id":"f6","type":"release","sku":"A","reservation_id":"p1"}`), uint16(0))
	f.Add("A", []byte(`{"command_id":"f7","type":"prepare","sku":"A","reservation_id":"r1","order_id":"o-3","reply_to":"cart","cart_id":"cart-1"}`), uint16(0))
	f.Fuzz(func(t *testing.T, key string, value []byte, advance uint16) {
		p := newFuzzRun(t)
		p.now += schemas.Millis(advance) * 1000
		if err := p.fireTimers(); err != nil {
			t.Fatal(err)
		}
		cmd, err := schemas.DecodeCommand(value, propMaxBytes)
		var ue *schemas.UndecodableError
		var fe *schemas.FieldError
		switch {
		case errors.As(err, &ue):
			if ue.Msg == "" {
				t.Fatalf("undecodable without a reason: %+v", ue)
			}
			return // the DLQ's, not the core's
		case err != nil && !errors.As(err, &fe):
			t.Fatalf("decoder error of neither class: %T %v", err, err)
		}
		before := clone(p.st)
		o := p.core.Apply(p.st, Input{Key: key, Command: cmd, FieldErr: fe, Offset: 99}, p.now)
		if err := checkChanges(p.st, o.Changes); err != nil {
			t.Fatal(err)
		}
		p.st.Apply(o.Changes)

		var decisive []schemas.Result
		for _, r := range o.Results {
			if r.CommandID == "" {
				if (r.Type != schemas.TypeExpired && r.Type != schemas.TypeLowStock) || r.Outcome != schemas.OutcomeAccepted || r.Duplicate {
					t.Fatalf("bad notice %+v", r)
				}
				continue
			}
			decisive = append(decisive, r)
		}
		if len(decisive) != 1 || decisive[0].CommandID != cmd.CommandID {
			t.Fatalf("want exactly one decisive result for %q, got %+v", cmd.CommandID, o.Results)
		}
		r := decisive[0]
		switch r.Outcome {
		case schemas.OutcomeAccepted:
			if r.Reason != "" {
				t.Fatalf("accepted with reason %q", r.Reason)
			}
		case schemas.OutcomeRejected:
			if !slices.Contains(contractReasons, r.Reason) {
				t.Fatalf("rejected with reason %q, not one of the contract", r.Reason)
			}
		default:
			t.Fatalf("outcome %q", r.Outcome)
		}
		if r.Reason == schemas.ReasonInvalidCommand {
			if field, _, ok := strings.Cut(r.Message, ": "); !ok || !slices.Contains(contractFields, field) {
				t.Fatalf("invalid_command message %q names no field", r.Message)
			}
		}
		if r.Duplicate {
			if len(o.Changes) > 0 {
				t.Fatalf("a duplicate changed %d entities", len(o.Changes))
			}
		} else if err := onlyDecisionRecorded(before, p.st, r.Outcome == schemas.OutcomeRejected); err != nil {
			t.Fatal(err)
		}
		if r.Stock != nil && !r.Duplicate {
			if s, ok := p.st.Stock(key); !ok || *s.View() != *r.Stock {
				t.Fatalf("result stock %+v, state %+v", *r.Stock, s)
			}
		}
		stockCmd := cmd.Type == schemas.TypeStockSet || cmd.Type == schemas.TypeStockAdjust
		if err := checkInvariants(before, p.st, stockCmd); err != nil {
			t.Fatal(err)
		}
		if fe != nil {
			return
		}
		// The model decides the same command from its canonical encoding (so
		// that letter case and duplicate names, which the contract leaves to
		// the decoder, do not matter).
		canonical, err := json.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		want, ok := p.m.decide(key, canonical, 0, p.now)
		if !ok {
			t.Fatalf("the model cannot read the canonical encoding %s", canonical)
		}
		if err := compareResults(o.Results, want); err != nil {
			t.Fatalf("%s (key %q, canonical %s)", err, key, canonical)
		}
		if err := p.compareState(true); err != nil {
			t.Fatalf("%s (key %q, canonical %s)", err, key, canonical)
		}
	})
}

// onlyDecisionRecorded checks that a decision wrote its idempotency record and,
// when rejected, nothing else.
func onlyDecisionRecorded(before, after Entities, rejected bool) error {
	cmds := 0
	for k, c := range after {
		if strings.HasPrefix(k, schemas.CommandPrefix) {
			if b, ok := before[k]; !ok || !reflect.DeepEqual(b, c) {
				cmds++
			}
			continue
		}
		if b, ok := before[k]; rejected && (!ok || !reflect.DeepEqual(b, c)) {
			return errors.New("a rejected command changed " + k)
		}
	}
	if cmds != 1 {
		return errors.New("want exactly one new idempotency record")
	}
	return nil
}
