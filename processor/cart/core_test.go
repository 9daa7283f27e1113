package cart

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/schemas"
)

var t0 = scenarioStart

func i64(v int64) *int64 { return &v }

func item(sku string, q int64) schemas.CartItem { return schemas.CartItem{SKU: sku, Quantity: i64(q)} }

func cartCmd(id, typ, cart string, items ...schemas.CartItem) Input {
	c := &schemas.CartCommand{CommandID: id, Type: typ, CartID: cart, Items: items}
	if typ == schemas.TypeCartCommit {
		c.OrderID = "o-" + id
	}
	return Input{Key: cart, Command: c, Partition: 3, Offset: 100}
}

func reserveIn(id, cart string, items ...schemas.CartItem) Input {
	return cartCmd(id, schemas.TypeCartReserve, cart, items...)
}

// lineIn is the routed decision on the per-SKU command of a line: outcome
// "accepted" or a reason; status "" for a result without a reservation.
func lineIn(cart, cmdID, phase, sku, rid, outcome, status string, exp schemas.Millis) Input {
	r := &schemas.Result{
		CommandID: LineCommandID(cart, cmdID, phase, sku, rid), Type: phaseTypes[phase], SKU: sku, ReservationID: rid,
		Outcome: schemas.OutcomeAccepted,
	}
	if outcome != schemas.OutcomeAccepted {
		r.Outcome, r.Reason, r.Message = schemas.OutcomeRejected, outcome, "because "+outcome
	}
	if status != "" {
		r.Reservation = &schemas.Reservation{ReservationID: rid, SKU: sku, Quantity: 1, Status: status, ExpiresAt: exp, CartID: cart}
	}
	return Input{Key: cart, LineResult: r}
}

const ok = schemas.OutcomeAccepted

var exp15 = t0 + 15*60*1000

// summary renders outputs compactly for table tests.
func summary(o Outputs) []string {
	var got []string
	for _, r := range o.Results {
		s := fmt.Sprintf("result %s %s", r.CommandID, r.Outcome)
		if r.Reason != "" {
			s += " " + r.Reason
		}
		if r.Duplicate {
			s += " dup"
		}
		if r.Message != "" {
			s += fmt.Sprintf(" %q", r.Message)
		}
		var ls []string
		for _, l := range r.Lines {
			ls = append(ls, fmt.Sprintf("%s/%s:%s:%s", l.SKU, l.ReservationID, l.Outcome, l.Status))
		}
		got = append(got, s+" ["+strings.Join(ls, " ")+"]")
	}
	for _, c := range o.Changes {
		switch {
		case c.Tombstone():
			got = append(got, "tombstone "+c.Key)
		case c.Decided != nil:
			got = append(got, fmt.Sprintf("put %s v%d", c.Key, c.Decided.Version))
		default:
			e := c.Cart
			s := fmt.Sprintf("put %s v%d %s by %s holds=%d", c.Key, e.Version, e.Event, e.CommandID, len(e.Holds))
			if e.Saga != nil {
				s += " saga=" + e.Saga.Command.CommandID + "/" + e.Saga.Phase
			}
			if len(e.Queue) > 0 {
				s += fmt.Sprintf(" queue=%d", len(e.Queue))
			}
			got = append(got, s)
		}
	}
	for _, c := range o.Commands {
		got = append(got, fmt.Sprintf("-> %s %s/%s", c.Type, c.SKU, c.ReservationID))
	}
	return got
}

// setup applies inputs in order at t0 on an empty state.
func setup(t *testing.T, core *Core, inputs ...Input) Entities {
	t.Helper()
	st := Entities{}
	for _, in := range inputs {
		st.Apply(core.Apply(st, in, t0).Changes)
	}
	return st
}

// held sets up cart-1 holding SKU-A/h1 and SKU-B/h1 (via an accepted cart.reserve h1).
var held = []Input{
	reserveIn("h1", "cart-1", item("SKU-A", 1), item("SKU-B", 2)),
	lineIn("cart-1", "h1", PhaseReserve, "SKU-A", "h1", ok, schemas.StatusActive, exp15),
	lineIn("cart-1", "h1", PhaseReserve, "SKU-B", "h1", ok, schemas.StatusActive, exp15),
}

func with(base []Input, more ...Input) []Input { return append(append([]Input(nil), base...), more...) }

// filled sets up cart-1 holding n SKUs (SKU-0...) via an accepted cart.reserve
// f1 (n <= schemas.MaxCartItems).
func filled(n int) []Input {
	in := reserveIn("f1", "cart-1")
	for i := range n {
		in.Command.Items = append(in.Command.Items, item(fmt.Sprint("SKU-", i), 1))
	}
	out := []Input{in}
	for i := range n {
		out = append(out, lineIn("cart-1", "f1", PhaseReserve, fmt.Sprint("SKU-", i), "f1", ok, schemas.StatusActive, exp15))
	}
	return out
}

// items returns n lines of SKUs X-0...
func items(n int) []schemas.CartItem {
	var it []schemas.CartItem
	for i := range n {
		it = append(it, item(fmt.Sprint("X-", i), 1))
	}
	return it
}

func TestApply(t *testing.T) {
	fe := &schemas.FieldError{Field: "ttl_seconds", Msg: "want an integer, got JSON string"}
	mismatch := reserveIn("c1", "cart-2", item("SKU-A", 1))
	mismatch.Key = "cart-1"
	withFE := reserveIn("c1", "cart-1", item("SKU-A", 1))
	withFE.FieldErr = fe
	tests := []struct {
		name   string
		rules  Rules
		before []Input
		at     schemas.Millis // default t0
		in     Input
		want   []string
	}{
		{
			name: "reserve starts the saga: one reserve per line",
			in:   reserveIn("c1", "cart-1", item("SKU-A", 1), item("SKU-B", 2)),
			want: []string{"put cart/cart-1 v1 started by c1 holds=0 saga=c1/reserve", "-> reserve SKU-A/c1", "-> reserve SKU-B/c1"},
		},
		{
			name: "field error of the decoder wins",
			in:   withFE,
			want: []string{`result c1 rejected invalid_command "ttl_seconds: want an integer, got JSON string" []`, "put cart-command/c1 v1"},
		},
		{
			name: "invalid by Validate",
			in:   reserveIn("c1", "cart-1"),
			want: []string{`result c1 rejected invalid_command "items: want 1..100 lines" []`, "put cart-command/c1 v1"},
		},
		{
			name: "cart_id differs from the record key",
			in:   mismatch,
			want: []string{`result c1 rejected invalid_command "cart_id \"cart-2\" != record key \"cart-1\"" []`, "put cart-command/c1 v1"},
		},
		{
			name:   "decided command: the original result again",
			before: []Input{reserveIn("c1", "cart-1")},
			in:     reserveIn("c1", "cart-1", item("SKU-A", 1)),
			want:   []string{`result c1 rejected invalid_command dup "items: want 1..100 lines" []`},
		},
		{
			name:   "decided command past the window: decided anew",
			before: []Input{cartCmd("x1", schemas.TypeCartRelease, "cart-1")},
			at:     t0 + schemas.Millis(24*time.Hour/time.Millisecond),
			in:     cartCmd("x1", schemas.TypeCartRelease, "cart-1"),
			want:   []string{"result x1 accepted []", "put cart-command/x1 v2"},
		},
		{
			name:   "re-sent while its saga runs: nothing",
			before: []Input{reserveIn("c1", "cart-1", item("SKU-A", 1))},
			in:     reserveIn("c1", "cart-1", item("SKU-A", 1)),
		},
		{
			name:   "re-sent while queued: nothing",
			before: []Input{reserveIn("c1", "cart-1", item("SKU-A", 1)), cartCmd("x1", schemas.TypeCartRelease, "cart-1")},
			in:     cartCmd("x1", schemas.TypeCartRelease, "cart-1"),
		},
		{
			name:   "another command while a saga runs is queued",
			before: []Input{reserveIn("c1", "cart-1", item("SKU-A", 1))},
			in:     cartCmd("x1", schemas.TypeCartRelease, "cart-1"),
			want:   []string{"put cart/cart-1 v2 queued by x1 holds=0 saga=c1/reserve queue=1"},
		},
		{
			name:   "queue full: cart_busy",
			rules:  Rules{MaxQueue: 1},
			before: []Input{reserveIn("c1", "cart-1", item("SKU-A", 1)), cartCmd("x1", schemas.TypeCartRelease, "cart-1")},
			in:     cartCmd("x2", schemas.TypeCartRelease, "cart-1"),
			want:   []string{`result x2 rejected cart_busy "cart cart-1 has 1 cart commands waiting, the limit" []`, "put cart-command/x2 v1"},
		},
		{
			name: "MaxQueue 0 means 16",
			before: func() []Input {
				in := []Input{reserveIn("c1", "cart-1", item("SKU-A", 1))}
				for i := range 16 {
					in = append(in, cartCmd(fmt.Sprint("x", i), schemas.TypeCartRelease, "cart-1"))
				}
				return in
			}(),
			in:   cartCmd("x16", schemas.TypeCartRelease, "cart-1"),
			want: []string{`result x16 rejected cart_busy "cart cart-1 has 16 cart commands waiting, the limit" []`, "put cart-command/x16 v1"},
		},
		{
			name:   "holds + lines over MaxHolds: cart_full, nothing sent",
			rules:  Rules{MaxHolds: 3},
			before: held,
			in:     reserveIn("c1", "cart-1", item("SKU-C", 1), item("SKU-D", 1)),
			want: []string{`result c1 rejected cart_full "cart cart-1 keeps 2 holds: 2 more lines would exceed the limit of 3 holds" []`,
				"put cart-command/c1 v1", "put cart/cart-1 v4 finished by c1 holds=2"},
		},
		{
			name:   "holds + lines at MaxHolds: the saga starts",
			rules:  Rules{MaxHolds: 4},
			before: held,
			in:     reserveIn("c1", "cart-1", item("SKU-C", 1), item("SKU-D", 1)),
			want:   []string{"put cart/cart-1 v4 started by c1 holds=2 saga=c1/reserve", "-> reserve SKU-C/c1", "-> reserve SKU-D/c1"},
		},
		{
			name:  "more lines than MaxHolds on an empty cart: cart_full, no entity",
			rules: Rules{MaxHolds: 1},
			in:    reserveIn("c1", "cart-1", item("SKU-C", 1), item("SKU-D", 1)),
			want:  []string{`result c1 rejected cart_full "cart cart-1 keeps 0 holds: 2 more lines would exceed the limit of 1 holds" []`, "put cart-command/c1 v1"},
		},
		{
			name:   "ended holds count until they are pruned",
			rules:  Rules{MaxHolds: 3},
			before: held,
			at:     exp15 + schemas.Millis(24*time.Hour/time.Millisecond) - 1,
			in:     reserveIn("c1", "cart-1", item("SKU-C", 1), item("SKU-D", 1)),
			want: []string{`result c1 rejected cart_full "cart cart-1 keeps 2 holds: 2 more lines would exceed the limit of 3 holds" []`,
				"put cart-command/c1 v1", "put cart/cart-1 v4 finished by c1 holds=2"},
		},
		{
			name:   "holds pruned first: room again",
			rules:  Rules{MaxHolds: 3},
			before: held,
			at:     exp15 + schemas.Millis(24*time.Hour/time.Millisecond),
			in:     reserveIn("c1", "cart-1", item("SKU-C", 1), item("SKU-D", 1)),
			want:   []string{"put cart/cart-1 v4 started by c1 holds=0 saga=c1/reserve", "-> reserve SKU-C/c1", "-> reserve SKU-D/c1"},
		},
		{
			name:   "a cart_full command re-sent: the original result",
			rules:  Rules{MaxHolds: 3},
			before: with(held, reserveIn("c1", "cart-1", item("SKU-C", 1), item("SKU-D", 1))),
			in:     reserveIn("c1", "cart-1", item("SKU-C", 1)),
			want:   []string{`result c1 rejected cart_full dup "cart cart-1 keeps 2 holds: 2 more lines would exceed the limit of 3 holds" []`},
		},
		{
			name:   "MaxHolds 0 means 100",
			before: filled(100),
			in:     reserveIn("c1", "cart-1", item("SKU-X", 1)),
			want: []string{`result c1 rejected cart_full "cart cart-1 keeps 100 holds: 1 more lines would exceed the limit of 100 holds" []`,
				"put cart-command/c1 v1", "put cart/cart-1 v102 finished by c1 holds=100"},
		},
		{
			name:   "MaxHolds 0: 99 holds + 1 line fit",
			before: filled(99),
			in:     reserveIn("c1", "cart-1", item("SKU-X", 1)),
			want:   []string{"put cart/cart-1 v101 started by c1 holds=99 saga=c1/reserve", "-> reserve SKU-X/c1"},
		},
		{
			name:   "cart.commit and cart.release of a full cart run as usual",
			rules:  Rules{MaxHolds: 2},
			before: held,
			in:     cartCmd("x1", schemas.TypeCartRelease, "cart-1"),
			want:   []string{"put cart/cart-1 v4 started by x1 holds=2 saga=x1/release", "-> release SKU-A/h1", "-> release SKU-B/h1"},
		},
		{
			name:  "queued lines over MaxQueuedLines: cart_busy",
			rules: Rules{MaxQueuedLines: 3},
			before: []Input{
				reserveIn("c1", "cart-1", item("SKU-A", 1)),
				reserveIn("c2", "cart-1", items(2)...),
			},
			in: reserveIn("c3", "cart-1", items(2)...),
			want: []string{`result c3 rejected cart_busy "cart cart-1 has 2 lines waiting in 1 cart commands: 2 more would exceed the limit of 3" []`,
				"put cart-command/c3 v1"},
		},
		{
			name:  "queued lines at MaxQueuedLines: queued",
			rules: Rules{MaxQueuedLines: 3},
			before: []Input{
				reserveIn("c1", "cart-1", item("SKU-A", 1)),
				reserveIn("c2", "cart-1", items(2)...),
			},
			in:   reserveIn("c3", "cart-1", item("SKU-B", 1)),
			want: []string{"put cart/cart-1 v3 queued by c3 holds=0 saga=c1/reserve queue=2"},
		},
		{
			name:  "a release still queues behind MaxQueuedLines lines",
			rules: Rules{MaxQueuedLines: 2},
			before: []Input{
				reserveIn("c1", "cart-1", item("SKU-A", 1)),
				reserveIn("c2", "cart-1", items(2)...),
			},
			in:   cartCmd("x1", schemas.TypeCartRelease, "cart-1"),
			want: []string{"put cart/cart-1 v3 queued by x1 holds=0 saga=c1/reserve queue=2"},
		},
		{
			name: "MaxQueuedLines 0 means 100",
			before: []Input{
				reserveIn("c1", "cart-1", item("SKU-A", 1)),
				reserveIn("c2", "cart-1", items(100)...),
			},
			in: reserveIn("c3", "cart-1", item("SKU-B", 1)),
			want: []string{`result c3 rejected cart_busy "cart cart-1 has 100 lines waiting in 1 cart commands: 1 more would exceed the limit of 100" []`,
				"put cart-command/c3 v1"},
		},
		{
			name: "release of a cart that holds nothing: accepted at once, no entity",
			in:   cartCmd("x1", schemas.TypeCartRelease, "cart-1"),
			want: []string{"result x1 accepted []", "put cart-command/x1 v1"},
		},
		{
			name: "commit of a cart that holds nothing: cart_empty",
			in:   cartCmd("k1", schemas.TypeCartCommit, "cart-1"),
			want: []string{`result k1 rejected cart_empty "cart cart-1 holds nothing" []`, "put cart-command/k1 v1"},
		},
		{
			name:   "release of the holds",
			before: held,
			in:     cartCmd("x1", schemas.TypeCartRelease, "cart-1"),
			want:   []string{"put cart/cart-1 v4 started by x1 holds=2 saga=x1/release", "-> release SKU-A/h1", "-> release SKU-B/h1"},
		},
		{
			name:   "commit prepares every hold",
			before: held,
			in:     cartCmd("k1", schemas.TypeCartCommit, "cart-1"),
			want:   []string{"put cart/cart-1 v4 started by k1 holds=2 saga=k1/prepare", "-> prepare SKU-A/h1", "-> prepare SKU-B/h1"},
		},
		{
			name:   "holds a window past expiry are pruned: the commit finds the cart empty",
			before: held,
			at:     exp15 + schemas.Millis(24*time.Hour/time.Millisecond),
			in:     cartCmd("k1", schemas.TypeCartCommit, "cart-1"),
			want:   []string{`result k1 rejected cart_empty "cart cart-1 holds nothing" []`, "put cart-command/k1 v1", "tombstone cart/cart-1"},
		},
		{
			name:   "holds just short of the window are kept",
			before: held,
			at:     exp15 + schemas.Millis(24*time.Hour/time.Millisecond) - 1,
			in:     cartCmd("k1", schemas.TypeCartCommit, "cart-1"),
			want:   []string{"put cart/cart-1 v4 started by k1 holds=2 saga=k1/prepare", "-> prepare SKU-A/h1", "-> prepare SKU-B/h1"},
		},

		// Line results.
		{
			name: "line result of an unknown cart: ignored",
			in:   lineIn("cart-1", "c1", PhaseReserve, "SKU-A", "c1", ok, schemas.StatusActive, exp15),
		},
		{
			name:   "line result of an idle cart: ignored",
			before: held,
			in:     lineIn("cart-1", "h1", PhaseReserve, "SKU-A", "h1", ok, schemas.StatusActive, exp15),
		},
		{
			name:   "line result of another phase: ignored",
			before: []Input{reserveIn("c1", "cart-1", item("SKU-A", 1), item("SKU-B", 1))},
			in:     lineIn("cart-1", "c1", PhaseCompensate, "SKU-A", "c1", ok, schemas.StatusReleased, exp15),
		},
		{
			name:   "line result of another cart command: ignored",
			before: []Input{reserveIn("c1", "cart-1", item("SKU-A", 1), item("SKU-B", 1))},
			in:     lineIn("cart-1", "c0", PhaseReserve, "SKU-A", "c0", ok, schemas.StatusActive, exp15),
		},
		{
			name: "line result already recorded: ignored",
			before: []Input{
				reserveIn("c1", "cart-1", item("SKU-A", 1), item("SKU-B", 1)),
				lineIn("cart-1", "c1", PhaseReserve, "SKU-A", "c1", ok, schemas.StatusActive, exp15),
			},
			in: lineIn("cart-1", "c1", PhaseReserve, "SKU-A", "c1", ok, schemas.StatusActive, exp15),
		},
		{
			name:   "line recorded, another pending",
			before: []Input{reserveIn("c1", "cart-1", item("SKU-A", 1), item("SKU-B", 1))},
			in:     lineIn("cart-1", "c1", PhaseReserve, "SKU-B", "c1", ok, schemas.StatusActive, exp15),
			want:   []string{"put cart/cart-1 v2 recorded by c1 holds=0 saga=c1/reserve"},
		},
		{
			name: "every reserve accepted: accepted, the lines are holds",
			before: []Input{
				reserveIn("c1", "cart-1", item("SKU-A", 1), item("SKU-B", 1)),
				lineIn("cart-1", "c1", PhaseReserve, "SKU-B", "c1", ok, schemas.StatusActive, exp15),
			},
			in:   lineIn("cart-1", "c1", PhaseReserve, "SKU-A", "c1", ok, schemas.StatusActive, exp15),
			want: []string{"result c1 accepted [SKU-A/c1:accepted:active SKU-B/c1:accepted:active]", "put cart-command/c1 v1", "put cart/cart-1 v3 finished by c1 holds=2"},
		},
		{
			name: "a reserve rejected: the held lines are released first",
			before: []Input{
				reserveIn("c1", "cart-1", item("SKU-A", 1), item("SKU-B", 1), item("SKU-C", 1)),
				lineIn("cart-1", "c1", PhaseReserve, "SKU-A", "c1", ok, schemas.StatusActive, exp15),
				lineIn("cart-1", "c1", PhaseReserve, "SKU-C", "c1", ok, schemas.StatusActive, exp15),
			},
			in:   lineIn("cart-1", "c1", PhaseReserve, "SKU-B", "c1", schemas.ReasonInsufficientStock, "", 0),
			want: []string{"put cart/cart-1 v4 advanced by c1 holds=0 saga=c1/compensate", "-> release SKU-A/c1", "-> release SKU-C/c1"},
		},
		{
			name: "every reserve rejected: rejected at once, reason of the first line in line order",
			before: []Input{
				reserveIn("c1", "cart-1", item("SKU-A", 1), item("SKU-B", 1)),
				lineIn("cart-1", "c1", PhaseReserve, "SKU-B", "c1", schemas.ReasonUnknownSKU, "", 0),
			},
			in: lineIn("cart-1", "c1", PhaseReserve, "SKU-A", "c1", schemas.ReasonInsufficientStock, "", 0),
			want: []string{`result c1 rejected insufficient_stock "2 of 2 lines rejected" [SKU-A/c1:rejected: SKU-B/c1:rejected:]`,
				"put cart-command/c1 v1", "tombstone cart/cart-1"},
		},
		{
			name: "reservation_exists describes another reservation: the line holds nothing",
			before: []Input{
				reserveIn("c1", "cart-1", item("SKU-A", 1), item("SKU-B", 1)),
				lineIn("cart-1", "c1", PhaseReserve, "SKU-B", "c1", schemas.ReasonInsufficientStock, "", 0),
			},
			in: lineIn("cart-1", "c1", PhaseReserve, "SKU-A", "c1", schemas.ReasonReservationExists, schemas.StatusActive, exp15),
			want: []string{`result c1 rejected reservation_exists "2 of 2 lines rejected" [SKU-A/c1:rejected: SKU-B/c1:rejected:]`,
				"put cart-command/c1 v1", "tombstone cart/cart-1"},
		},
		{
			name: "compensation done: rejected with the reserve outcomes and final statuses",
			before: []Input{
				reserveIn("c1", "cart-1", item("SKU-A", 1), item("SKU-B", 1), item("SKU-C", 1)),
				lineIn("cart-1", "c1", PhaseReserve, "SKU-A", "c1", ok, schemas.StatusActive, exp15),
				lineIn("cart-1", "c1", PhaseReserve, "SKU-C", "c1", ok, schemas.StatusActive, exp15),
				lineIn("cart-1", "c1", PhaseReserve, "SKU-B", "c1", schemas.ReasonInsufficientStock, "", 0),
				lineIn("cart-1", "c1", PhaseCompensate, "SKU-C", "c1", schemas.ReasonReservationNotActive, schemas.StatusExpired, exp15),
			},
			in: lineIn("cart-1", "c1", PhaseCompensate, "SKU-A", "c1", ok, schemas.StatusReleased, exp15),
			want: []string{`result c1 rejected insufficient_stock "1 of 3 lines rejected" [SKU-A/c1:accepted:released SKU-B/c1:rejected: SKU-C/c1:accepted:expired]`,
				"put cart-command/c1 v1", "tombstone cart/cart-1"},
		},
		{
			name: "compensation keeps the cart's earlier hold of the same reservation id",
			before: with(held,
				reserveIn("c1", "cart-1", schemas.CartItem{SKU: "SKU-A", Quantity: i64(1), ReservationID: "h1"}, item("SKU-C", 1)),
				lineIn("cart-1", "c1", PhaseReserve, "SKU-A", "h1", schemas.ReasonReservationExists, schemas.StatusActive, exp15),
				lineIn("cart-1", "c1", PhaseReserve, "SKU-C", "c1", ok, schemas.StatusActive, exp15),
			),
			in: lineIn("cart-1", "c1", PhaseCompensate, "SKU-C", "c1", ok, schemas.StatusReleased, exp15),
			want: []string{`result c1 rejected reservation_exists "1 of 2 lines rejected" [SKU-A/h1:rejected: SKU-C/c1:accepted:released]`,
				"put cart-command/c1 v1", "put cart/cart-1 v7 finished by c1 holds=2"},
		},
		{
			name:   "release done: holds removed, an ended hold reported with its status",
			before: with(held, cartCmd("x1", schemas.TypeCartRelease, "cart-1"), lineIn("cart-1", "x1", PhaseRelease, "SKU-B", "h1", schemas.ReasonReservationNotActive, schemas.StatusExpired, exp15)),
			in:     lineIn("cart-1", "x1", PhaseRelease, "SKU-A", "h1", ok, schemas.StatusReleased, exp15),
			want:   []string{"result x1 accepted [SKU-A/h1:accepted:released SKU-B/h1:rejected:expired]", "put cart-command/x1 v1", "tombstone cart/cart-1"},
		},
		{
			name:   "release refused for a still active hold: rejected, the hold stays",
			before: with(held, cartCmd("x1", schemas.TypeCartRelease, "cart-1"), lineIn("cart-1", "x1", PhaseRelease, "SKU-B", "h1", ok, schemas.StatusReleased, exp15)),
			in:     lineIn("cart-1", "x1", PhaseRelease, "SKU-A", "h1", schemas.ReasonReservationPrepared, schemas.StatusActive, exp15),
			want: []string{`result x1 rejected reservation_prepared "1 of 2 holds not released" [SKU-A/h1:rejected:active SKU-B/h1:accepted:released]`,
				"put cart-command/x1 v1", "put cart/cart-1 v6 finished by x1 holds=1"},
		},
		{
			name:   "every hold prepared: commit",
			before: with(held, cartCmd("k1", schemas.TypeCartCommit, "cart-1"), lineIn("cart-1", "k1", PhasePrepare, "SKU-B", "h1", ok, schemas.StatusActive, exp15)),
			in:     lineIn("cart-1", "k1", PhasePrepare, "SKU-A", "h1", ok, schemas.StatusActive, exp15),
			want:   []string{"put cart/cart-1 v6 advanced by k1 holds=2 saga=k1/commit", "-> commit SKU-A/h1", "-> commit SKU-B/h1"},
		},
		{
			name:   "a prepare rejected: the prepared holds are unprepared, the ended one is no hold",
			before: with(held, cartCmd("k1", schemas.TypeCartCommit, "cart-1"), lineIn("cart-1", "k1", PhasePrepare, "SKU-B", "h1", ok, schemas.StatusActive, exp15)),
			in:     lineIn("cart-1", "k1", PhasePrepare, "SKU-A", "h1", schemas.ReasonReservationNotActive, schemas.StatusExpired, exp15),
			want:   []string{"put cart/cart-1 v6 advanced by k1 holds=1 saga=k1/unprepare", "-> unprepare SKU-B/h1"},
		},
		{
			name:   "every prepare rejected: rejected at once, the cart holds nothing",
			before: with(held, cartCmd("k1", schemas.TypeCartCommit, "cart-1"), lineIn("cart-1", "k1", PhasePrepare, "SKU-B", "h1", schemas.ReasonUnknownReservation, "", 0)),
			in:     lineIn("cart-1", "k1", PhasePrepare, "SKU-A", "h1", schemas.ReasonReservationNotActive, schemas.StatusExpired, exp15),
			want: []string{`result k1 rejected reservation_not_active "2 of 2 lines rejected" [SKU-A/h1:rejected:expired SKU-B/h1:rejected:]`,
				"put cart-command/k1 v1", "tombstone cart/cart-1"},
		},
		{
			name: "unprepared: rejected, the remaining hold stays active",
			before: with(held, cartCmd("k1", schemas.TypeCartCommit, "cart-1"),
				lineIn("cart-1", "k1", PhasePrepare, "SKU-B", "h1", ok, schemas.StatusActive, exp15),
				lineIn("cart-1", "k1", PhasePrepare, "SKU-A", "h1", schemas.ReasonReservationNotActive, schemas.StatusExpired, exp15)),
			in: lineIn("cart-1", "k1", PhaseUnprepare, "SKU-B", "h1", ok, schemas.StatusActive, exp15),
			want: []string{`result k1 rejected reservation_not_active "1 of 2 lines rejected" [SKU-A/h1:rejected:expired SKU-B/h1:accepted:active]`,
				"put cart-command/k1 v1", "put cart/cart-1 v7 finished by k1 holds=1"},
		},
		{
			name: "committed: accepted, consumed, the cart holds nothing",
			before: with(held, cartCmd("k1", schemas.TypeCartCommit, "cart-1"),
				lineIn("cart-1", "k1", PhasePrepare, "SKU-B", "h1", ok, schemas.StatusActive, exp15),
				lineIn("cart-1", "k1", PhasePrepare, "SKU-A", "h1", ok, schemas.StatusActive, exp15),
				lineIn("cart-1", "k1", PhaseCommit, "SKU-A", "h1", ok, schemas.StatusConsumed, exp15)),
			in:   lineIn("cart-1", "k1", PhaseCommit, "SKU-B", "h1", ok, schemas.StatusConsumed, exp15),
			want: []string{"result k1 accepted [SKU-A/h1:accepted:consumed SKU-B/h1:accepted:consumed]", "put cart-command/k1 v1", "tombstone cart/cart-1"},
		},
		{
			name: "a commit rejected after its prepare: reported as it is",
			before: with(held, cartCmd("k1", schemas.TypeCartCommit, "cart-1"),
				lineIn("cart-1", "k1", PhasePrepare, "SKU-B", "h1", ok, schemas.StatusActive, exp15),
				lineIn("cart-1", "k1", PhasePrepare, "SKU-A", "h1", ok, schemas.StatusActive, exp15),
				lineIn("cart-1", "k1", PhaseCommit, "SKU-A", "h1", ok, schemas.StatusConsumed, exp15)),
			in: lineIn("cart-1", "k1", PhaseCommit, "SKU-B", "h1", schemas.ReasonUnknownReservation, "", 0),
			want: []string{`result k1 rejected unknown_reservation "1 of 2 lines rejected at commit; the others are committed" [SKU-A/h1:accepted:consumed SKU-B/h1:rejected:]`,
				"put cart-command/k1 v1", "tombstone cart/cart-1"},
		},
		{
			name: "the end of a saga starts the queued commands; one may end at once",
			before: []Input{
				reserveIn("c1", "cart-1", item("SKU-A", 1)),
				cartCmd("k1", schemas.TypeCartCommit, "cart-1"),
				cartCmd("x1", schemas.TypeCartRelease, "cart-1"),
			},
			in: lineIn("cart-1", "c1", PhaseReserve, "SKU-A", "c1", schemas.ReasonInsufficientStock, "", 0),
			want: []string{
				`result c1 rejected insufficient_stock "1 of 1 lines rejected" [SKU-A/c1:rejected:]`,
				`result k1 rejected cart_empty "cart cart-1 holds nothing" []`,
				"result x1 accepted []",
				"put cart-command/c1 v1", "put cart-command/k1 v1", "put cart-command/x1 v1", "tombstone cart/cart-1",
			},
		},
		{
			name:  "a queued cart.reserve that no longer fits is rejected when it would start; the next one starts",
			rules: Rules{MaxHolds: 3},
			before: []Input{
				reserveIn("c1", "cart-1", item("SKU-A", 1), item("SKU-B", 1)),
				reserveIn("c2", "cart-1", item("SKU-C", 1), item("SKU-D", 1)),
				cartCmd("x1", schemas.TypeCartRelease, "cart-1"),
				lineIn("cart-1", "c1", PhaseReserve, "SKU-A", "c1", ok, schemas.StatusActive, exp15),
			},
			in: lineIn("cart-1", "c1", PhaseReserve, "SKU-B", "c1", ok, schemas.StatusActive, exp15),
			want: []string{
				"result c1 accepted [SKU-A/c1:accepted:active SKU-B/c1:accepted:active]",
				`result c2 rejected cart_full "cart cart-1 keeps 2 holds: 2 more lines would exceed the limit of 3 holds" []`,
				"put cart-command/c1 v1", "put cart-command/c2 v1", "put cart/cart-1 v5 started by x1 holds=2 saga=x1/release",
				"-> release SKU-A/c1", "-> release SKU-B/c1",
			},
		},
		{
			name: "the end of a saga starts the next, which emits its commands",
			before: []Input{
				reserveIn("c1", "cart-1", item("SKU-A", 1)),
				cartCmd("k1", schemas.TypeCartCommit, "cart-1"),
				cartCmd("x1", schemas.TypeCartRelease, "cart-1"),
			},
			in: lineIn("cart-1", "c1", PhaseReserve, "SKU-A", "c1", ok, schemas.StatusActive, exp15),
			want: []string{
				"result c1 accepted [SKU-A/c1:accepted:active]",
				"put cart-command/c1 v1", "put cart/cart-1 v4 started by k1 holds=1 saga=k1/prepare queue=1",
				"-> prepare SKU-A/c1",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			core := &Core{Rules: tc.rules}
			st := setup(t, core, tc.before...)
			before := snapshot(t, st)
			at := tc.at
			if at == 0 {
				at = t0
			}
			got := summary(core.Apply(st, tc.in, at))
			assert.Equal(t, tc.want, got)
			assert.Equal(t, before, snapshot(t, st), "Apply changed its state")
		})
	}
}

// snapshot encodes every entity of st: a deep copy to compare.
func snapshot(t *testing.T, st Entities) map[string]string {
	m := map[string]string{}
	for k, c := range st {
		b, err := EncodeChange(&c)
		require.NoError(t, err)
		m[k] = string(b)
	}
	return m
}

// TestCommandFields checks every field of the per-SKU commands and of a cart
// result, which the summaries leave out.
func TestCommandFields(t *testing.T) {
	core := &Core{Rules: DefaultRules()}
	st := Entities{}
	in := reserveIn("c1", "cart-1", item("SKU-A", 2), schemas.CartItem{SKU: "SKU-B", Quantity: i64(1), ReservationID: "own"})
	in.Command.TTLSeconds = i64(60)
	o := core.Apply(st, in, t0)
	st.Apply(o.Changes)
	require.Len(t, o.Commands, 2)
	want := []schemas.Command{
		{CommandID: LineCommandID("cart-1", "c1", PhaseReserve, "SKU-A", "c1"), Type: schemas.TypeReserve, SKU: "SKU-A",
			Reason: "cart c1", ReservationID: "c1", Quantity: i64(2), TTLSeconds: i64(60), CartID: "cart-1", ReplyTo: schemas.ReplyToCart},
		{CommandID: LineCommandID("cart-1", "c1", PhaseReserve, "SKU-B", "own"), Type: schemas.TypeReserve, SKU: "SKU-B",
			Reason: "cart c1", ReservationID: "own", Quantity: i64(1), TTLSeconds: i64(60), CartID: "cart-1", ReplyTo: schemas.ReplyToCart},
	}
	assert.Equal(t, want, o.Commands)
	for _, c := range o.Commands {
		assert.Nil(t, c.Validate(), "per-SKU command %+v", c)
	}
	// The TTL is copied, not shared with the cart command.
	*in.Command.TTLSeconds = 5
	assert.Equal(t, int64(60), *o.Commands[0].TTLSeconds)

	// Without ttl_seconds the reserves carry none (the SKU default applies).
	o2 := core.Apply(Entities{}, reserveIn("c2", "cart-2", item("SKU-A", 1)), t0)
	require.Len(t, o2.Commands, 1)
	assert.Nil(t, o2.Commands[0].TTLSeconds)

	// Finish and check the result's fields.
	st.Apply(core.Apply(st, lineIn("cart-1", "c1", PhaseReserve, "SKU-A", "c1", ok, schemas.StatusActive, exp15), t0+1).Changes)
	o = core.Apply(st, lineIn("cart-1", "c1", PhaseReserve, "SKU-B", "own", ok, schemas.StatusActive, exp15+7), t0+2)
	require.Len(t, o.Results, 1)
	assert.Equal(t, schemas.CartResult{
		CommandID: "c1", Type: schemas.TypeCartReserve, CartID: "cart-1", Outcome: ok,
		Lines: []schemas.CartLine{
			{SKU: "SKU-A", ReservationID: "c1", Quantity: 2, Outcome: ok, Status: schemas.StatusActive, ExpiresAt: exp15},
			{SKU: "SKU-B", ReservationID: "own", Quantity: 1, Outcome: ok, Status: schemas.StatusActive, ExpiresAt: exp15 + 7},
		},
		Partition: 3, Offset: 100, DecidedAt: t0 + 2,
	}, o.Results[0])
	st.Apply(o.Changes)
	d, found := st.Decision("c1")
	require.True(t, found)
	assert.Equal(t, Decided{CommandID: "c1", Result: o.Results[0], Version: 1, Event: schemas.EventDecided, UpdatedAt: t0 + 2}, d)
	e, found := st.Cart("cart-1")
	require.True(t, found)
	assert.Equal(t, []Hold{{SKU: "SKU-A", ReservationID: "c1", Quantity: 2, ExpiresAt: exp15}, {SKU: "SKU-B", ReservationID: "own", Quantity: 1, ExpiresAt: exp15 + 7}}, e.Holds)
	assert.Equal(t, Entity{CartID: "cart-1", Holds: e.Holds, Version: 3, Event: EventFinished, CommandID: "c1", UpdatedAt: t0 + 2}, e)

	// The prepare and commit commands carry the order id.
	o = core.Apply(st, cartCmd("k1", schemas.TypeCartCommit, "cart-1"), t0+3)
	require.Len(t, o.Commands, 2)
	assert.Equal(t, schemas.Command{CommandID: LineCommandID("cart-1", "k1", PhasePrepare, "SKU-A", "c1"), Type: schemas.TypePrepare,
		SKU: "SKU-A", Reason: "cart k1", ReservationID: "c1", CartID: "cart-1", OrderID: "o-k1", ReplyTo: schemas.ReplyToCart}, o.Commands[0])

	// A duplicate result is the stored one, flagged.
	dup := core.Apply(st, reserveIn("c1", "cart-1", item("SKU-A", 2)), t0+10)
	want1 := d.Result
	want1.Duplicate = true
	assert.Equal(t, Outputs{Results: []schemas.CartResult{want1}}, dup)
}

func TestLineCommandID(t *testing.T) {
	long := strings.Repeat("x", schemas.MaxIDLen)
	id := LineCommandID(long, long, PhaseCompensate, long, long)
	assert.LessOrEqual(t, len(id), schemas.MaxIDLen)
	assert.Len(t, id, 37)
	assert.True(t, strings.HasPrefix(id, "cart-"))
	assert.Equal(t, id, LineCommandID(long, long, PhaseCompensate, long, long), "deterministic")
	assert.Equal(t, "cart-", LineCommandID("", "", "", "", "")[:5])

	base := []string{"cart-1", "c1", PhaseReserve, "SKU-A", "r1"}
	seen := map[string][]string{}
	variants := [][]string{
		base,
		{"cart-2", "c1", PhaseReserve, "SKU-A", "r1"},
		{"cart-1", "c2", PhaseReserve, "SKU-A", "r1"},
		{"cart-1", "c1", PhaseCompensate, "SKU-A", "r1"},
		{"cart-1", "c1", PhaseReserve, "SKU-B", "r1"},
		{"cart-1", "c1", PhaseReserve, "SKU-A", "r2"},
		// Field boundaries matter: no concatenation collisions.
		{"cart-1c", "1", PhaseReserve, "SKU-A", "r1"},
		{"cart-1", "c1", PhaseReserve, "SKU-Ar", "1"},
	}
	for _, v := range variants {
		id := LineCommandID(v[0], v[1], v[2], v[3], v[4])
		require.NotContains(t, seen, id, "%v collides with %v", v, seen[id])
		seen[id] = v
		cmd := schemas.Command{CommandID: id, Type: schemas.TypeRelease, SKU: "SKU-A", ReservationID: "r1"}
		assert.Nil(t, cmd.Validate())
	}
}

func TestForget(t *testing.T) {
	core := &Core{Rules: DefaultRules()}
	st := setup(t, core, cartCmd("x1", schemas.TypeCartRelease, "cart-1"))
	window := schemas.Millis(24 * time.Hour / time.Millisecond)
	_, found := core.Forget(st, "x1", t0+window-1)
	assert.False(t, found, "still remembered")
	c, found := core.Forget(st, "x1", t0+window)
	assert.True(t, found)
	assert.Equal(t, Change{Key: DecidedKey("x1")}, c)
	_, found = core.Forget(st, "nope", t0+2*window)
	assert.False(t, found)
}

func TestPrune(t *testing.T) {
	core := &Core{Rules: DefaultRules()}
	window := schemas.Millis(24 * time.Hour / time.Millisecond)
	two := with(held,
		reserveIn("c2", "cart-1", item("SKU-C", 1)),
		lineIn("cart-1", "c2", PhaseReserve, "SKU-C", "c2", ok, schemas.StatusActive, exp15+window))
	st := setup(t, core, two...)

	_, found := core.Prune(st, "cart-1", exp15+window-1)
	assert.False(t, found, "nothing a window past expiry")
	c, found := core.Prune(st, "cart-1", exp15+window)
	require.True(t, found)
	require.NotNil(t, c.Cart)
	assert.Equal(t, []Hold{{SKU: "SKU-C", ReservationID: "c2", Quantity: 1, ExpiresAt: exp15 + window}}, c.Cart.Holds)
	assert.Equal(t, EventPruned, c.Cart.Event)
	assert.Equal(t, int64(6), c.Cart.Version)
	c, found = core.Prune(st, "cart-1", exp15+2*window)
	require.True(t, found)
	assert.True(t, c.Tombstone())
	assert.Equal(t, CartKey("cart-1"), c.Key)

	// A cart whose saga runs is left alone.
	st = setup(t, core, with(held, cartCmd("k1", schemas.TypeCartCommit, "cart-1"))...)
	_, found = core.Prune(st, "cart-1", exp15+2*window)
	assert.False(t, found)
	_, found = core.Prune(st, "cart-9", exp15+2*window)
	assert.False(t, found)
}

// TestApplyIgnoresEmptyInput: an input that is neither a command nor a line
// result produces nothing.
func TestApplyIgnoresEmptyInput(t *testing.T) {
	core := &Core{}
	assert.Equal(t, Outputs{}, core.Apply(Entities{}, Input{Key: "cart-1"}, t0))
	// A line result without a command id matches nothing.
	st := setup(t, core, reserveIn("c1", "cart-1", item("SKU-A", 1)))
	assert.Equal(t, Outputs{}, core.Apply(st, Input{Key: "cart-1", LineResult: &schemas.Result{SKU: "SKU-A", Outcome: ok}}, t0))
}

// TestResultJSON: a cart result with no lines encodes lines as [], never null.
func TestResultJSON(t *testing.T) {
	o := (&Core{}).Apply(Entities{}, cartCmd("x1", schemas.TypeCartRelease, "cart-1"), t0)
	require.Len(t, o.Results, 1)
	b, err := json.Marshal(o.Results[0])
	require.NoError(t, err)
	assert.Contains(t, string(b), `"lines":[]`)
}
