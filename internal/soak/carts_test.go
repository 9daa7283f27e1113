package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/processor/cart"
	"github.com/reservations/reservations/schemas"
)

// Carts (schemas/README.md extensions (i)-(k)): every processor process also
// runs the cart coordinator (its own group), and a cart producer sends
// cart.reserve commands of 1-3 lines on the soak's SKUs (competing with the
// other producers for stock), some with short TTLs, then cart.commit or
// cart.release of the cart a few seconds later; some cart commands are re-sent
// and a few are invalid (a SKU twice). The coordinator's sagas run through the
// same kills, freezes and faults as everything else.

// cartPrefix starts the ids of the carts the cart producer uses (reserve
// commands of the other producers carry cart ids "cart-N" for no coordinator).
const cartPrefix = "sc-"

// cartGroup is the consumer group of the cart coordinators.
const cartGroup = "soak-cart"

// sentCart is a cart command the cart producer sent.
type sentCart struct {
	cmd      schemas.CartCommand
	invalid  bool // must be rejected with invalid_command
	attempts int  // produce calls with this command id
	acked    int  // of which acknowledged
}

// cartLedger is every cart command sent.
type cartLedger struct {
	mu      sync.Mutex
	cmds    map[string]*sentCart
	records int // cart command records acknowledged
	resent  int // of which re-sent command ids
	failed  int // produce attempts that failed (and were retried)
}

func newCartLedger() *cartLedger { return &cartLedger{cmds: map[string]*sentCart{}} }

// cartSend is one cart command of the plan, at a traffic time.
type cartSend struct {
	tau     time.Duration
	cmd     schemas.CartCommand
	invalid bool
	resend  bool
}

// cartPlan returns the cart commands of the load in traffic-time order:
// sz.Carts cart.reserve commands spread over the load, on about 2/3 as many
// carts (so some carts hold the lines of several), each followed 1-8 s later
// by a cart.commit (40%), a cart.release (30%) or nothing; 5% are re-sent,
// 1 in 30 reserves is invalid.
func cartPlan(sz size, skus, hot []string) []cartSend {
	if sz.Carts == 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(sz.Seed, 7))
	load := sz.Load
	within := func(d time.Duration) time.Duration { return min(d, load) }
	jitter := func(d time.Duration) time.Duration { return time.Duration(rng.Int64N(int64(d))) }
	carts := max(1, sz.Carts*2/3)
	var plan []cartSend
	add := func(cs cartSend) {
		plan = append(plan, cs)
		if rng.IntN(20) == 0 {
			cs.tau, cs.resend = within(cs.tau+500*time.Millisecond+jitter(2500*time.Millisecond)), true
			plan = append(plan, cs)
		}
	}
	for i := range sz.Carts {
		tau := load * time.Duration(2*i+1) / time.Duration(2*sz.Carts)
		cartID := fmt.Sprintf("%s%d", cartPrefix, rng.IntN(carts))
		c := schemas.CartCommand{CommandID: fmt.Sprintf("k%d", i), Type: schemas.TypeCartReserve, CartID: cartID, Reason: "soak"}
		ttl := int64(600)
		if rng.IntN(3) == 0 { // may expire before its commit: the commit's prepare is rejected, the saga unprepares
			ttl = 2 + rng.Int64N(6)
		}
		c.TTLSeconds = &ttl
		seen := map[string]bool{}
		for n := 1 + rng.IntN(3); len(c.Items) < n; {
			sku := skus[rng.IntN(len(skus))]
			if rng.IntN(5) < 2 {
				sku = hot[rng.IntN(len(hot))]
			}
			if !seen[sku] {
				seen[sku] = true
				c.Items = append(c.Items, schemas.CartItem{SKU: sku, Quantity: i64(1 + rng.Int64N(3))})
			}
		}
		invalid := rng.IntN(30) == 0
		if invalid { // a SKU in two lines: invalid_command
			c.Items = append(c.Items, schemas.CartItem{SKU: c.Items[0].SKU, Quantity: i64(1)})
		}
		add(cartSend{tau: tau, cmd: c, invalid: invalid})
		if invalid {
			continue
		}
		at := within(tau + time.Second + jitter(7*time.Second))
		switch k := rng.IntN(10); {
		case k < 4:
			add(cartSend{tau: at, cmd: schemas.CartCommand{CommandID: fmt.Sprintf("kc%d", i), Type: schemas.TypeCartCommit,
				CartID: cartID, OrderID: fmt.Sprintf("order-k%d", i)}})
		case k < 7:
			add(cartSend{tau: at, cmd: schemas.CartCommand{CommandID: fmt.Sprintf("kr%d", i), Type: schemas.TypeCartRelease, CartID: cartID}})
		}
	}
	sort.SliceStable(plan, func(i, j int) bool { return plan[i].tau < plan[j].tau })
	return plan
}

// runCarts sends the cart plan, paced by the phases (nothing in a quiet period).
func (l *load) runCarts(ctx context.Context, ph phases) error {
	plan := cartPlan(l.sz, l.skus, l.hot)
	for i := 0; i < len(plan); {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(ph.wall(plan[i].tau))):
		}
		j := i + 1
		for j < len(plan) && !ph.wall(plan[j].tau).After(time.Now()) {
			j++
		}
		if err := l.sendCarts(ctx, plan[i:j]); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// sendCarts produces cart commands keyed by cart_id (retrying failed ones).
func (l *load) sendCarts(ctx context.Context, sends []cartSend) error {
	led := l.carts
	pending := sends
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt == 20 {
			return fmt.Errorf("produce: %d cart commands still failing after %d attempts", len(pending), attempt)
		}
		if attempt > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		krs := make([]*kgo.Record, len(pending))
		of := make(map[*kgo.Record]cartSend, len(pending))
		led.mu.Lock()
		for i, cs := range pending {
			v, _ := json.Marshal(cs.cmd)
			krs[i] = &kgo.Record{Topic: l.names.CartCommands, Key: []byte(cs.cmd.CartID), Value: v}
			of[krs[i]] = cs
			sc := led.cmds[cs.cmd.CommandID]
			if sc == nil {
				sc = &sentCart{cmd: cs.cmd, invalid: cs.invalid}
				led.cmds[cs.cmd.CommandID] = sc
			}
			sc.attempts++
		}
		led.mu.Unlock()
		res := l.prod.ProduceSync(ctx, krs...)
		if err := ctx.Err(); err != nil {
			return err
		}
		var retry []cartSend
		led.mu.Lock()
		for _, pr := range res {
			cs := of[pr.Record]
			if pr.Err != nil {
				retry = append(retry, cs)
				continue
			}
			led.cmds[cs.cmd.CommandID].acked++
			led.records++
			if cs.resend {
				led.resent++
			}
		}
		led.failed += len(retry)
		led.mu.Unlock()
		pending = retry
	}
	return nil
}

// cartResults reads the cart-results topic (read_committed) while the soak runs.
type cartResults struct {
	cl  *kgo.Client
	rep *report

	mu   sync.Mutex
	byID map[string][]schemas.CartResult
	last map[int32]int64
	n    int
}

func newCartResults(cl *kgo.Client, rep *report) *cartResults {
	return &cartResults{cl: cl, rep: rep, byID: map[string][]schemas.CartResult{}, last: map[int32]int64{}}
}

func (cr *cartResults) run(ctx context.Context) {
	for ctx.Err() == nil {
		fs := cr.cl.PollFetches(ctx)
		cr.mu.Lock()
		fs.EachRecord(cr.observe)
		cr.mu.Unlock()
	}
}

// observe records one cart result (mu held).
func (cr *cartResults) observe(r *kgo.Record) {
	cr.last[r.Partition] = r.Offset
	if r.Attrs.IsControl() {
		return
	}
	cr.n++
	var res schemas.CartResult
	if err := json.Unmarshal(r.Value, &res); err != nil || res.CartID != string(r.Key) {
		cr.rep.violate(invCarts, "cart result at %d/%d: key %q, value %s (%v)", r.Partition, r.Offset, r.Key, r.Value, err)
		return
	}
	cr.byID[res.CommandID] = append(cr.byID[res.CommandID], res)
}

func (cr *cartResults) caughtUp(ends map[int32]int64) bool {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	return reached(cr.last, ends)
}

// undecided counts the cart commands acknowledged without a decisive result yet.
func (cr *cartResults) undecided(led *cartLedger) int {
	n, _ := cr.undecidedIDs(led, 0)
	return n
}

// undecidedIDs also returns up to max of them, with type and cart.
func (cr *cartResults) undecidedIDs(led *cartLedger, max int) (int, []string) {
	led.mu.Lock()
	var sent []schemas.CartCommand
	for _, sc := range led.cmds {
		if sc.acked > 0 {
			sent = append(sent, sc.cmd)
		}
	}
	led.mu.Unlock()
	cr.mu.Lock()
	defer cr.mu.Unlock()
	n := 0
	var ids []string
	for _, c := range sent {
		if decisive(cr.byID[c.CommandID]) == nil {
			n++
			if len(ids) < max {
				ids = append(ids, fmt.Sprintf("%s (%s of %s)", c.CommandID, c.Type, c.CartID))
			}
		}
	}
	return n, ids
}

// decisive returns the first non-duplicate result, nil if none.
func decisive(rs []schemas.CartResult) *schemas.CartResult {
	for i := range rs {
		if !rs[i].Duplicate {
			return &rs[i]
		}
	}
	return nil
}

// cartFigures are counted by checkCarts for the report.
type cartFigures struct {
	commands, results, duplicates, lineCommands int // commands: distinct ids
	reserves, reservesAccepted                  int
	commits, commitsAccepted                    int
	releases, releasesAccepted, invalid         int
	carts                                       int            // cart entities left in the coordinators' changelog
	rejected                                    map[string]int // rejections by type and reason
}

// reasons lists the rejections, e.g. "cart.commit/cart_empty 3".
func (f cartFigures) reasons() string {
	var out []string
	for k, n := range f.rejected {
		out = append(out, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// cartState reads the cart-changelog's final state: the cart entities by
// cart id. (Compaction does not change it: the latest value of every key and
// the tombstones younger than delete.retention.ms stay.)
func cartState(ctx context.Context, brokers []string, topic string, rep *report) (map[string]*cart.Entity, error) {
	carts := map[string]*cart.Entity{}
	_, err := readTopic(ctx, brokers, topic, func(r *kgo.Record) {
		key := string(r.Key)
		ch, err := processor.DecodeChange(key, r.Value)
		switch {
		case err != nil:
			rep.violate(invCarts, "cart-changelog %s at %d/%d: %v", key, r.Partition, r.Offset, err)
		case cart.KeyKind(key) != cart.CartPrefix:
		case ch.Cart == nil || ch.Cart.Cart == nil:
			delete(carts, key)
		default:
			carts[key] = ch.Cart.Cart
		}
	})
	return carts, err
}

// checkCarts checks every cart command against its results and the SKU
// changelog (w: its walk, which kept the last status of every reservation):
//   - exactly one decisive result per cart command sent, duplicates repeat it,
//     no result for a cart command never sent;
//   - invalid ones rejected with invalid_command;
//   - an accepted cart.reserve holds every line (each accepted and active, the
//     reservation in the changelog); a rejected one leaves no hold: none of its
//     reservations is active or consumed at the end (never made, released by
//     the compensation, or expired);
//   - an accepted cart.commit consumed every line for its order; a rejected
//     one consumed none;
//   - an accepted cart.release left no line active;
//   - no saga or queued cart command left in the coordinators' state, no
//     reservation left prepared.
func checkCarts(rep *report, led *cartLedger, cr *cartResults, lines int, w *changelogWalk, carts map[string]*cart.Entity) cartFigures {
	led.mu.Lock()
	defer led.mu.Unlock()
	cr.mu.Lock()
	defer cr.mu.Unlock()
	f := cartFigures{results: cr.n, lineCommands: lines, carts: len(carts), rejected: map[string]int{}}
	status := func(sku, rid string) string { return w.status[schemas.ReservationKey(sku, rid)] }
	for id, sc := range led.cmds {
		c := sc.cmd
		f.commands++
		rs := cr.byID[id]
		n := 0
		for _, r := range rs {
			if !r.Duplicate {
				n++
			}
		}
		r := decisive(rs)
		switch {
		case n == 0 && sc.acked > 0:
			rep.violate(invCarts, "cart command %s (%s of %s) sent %d times, no result", id, c.Type, c.CartID, sc.acked)
		case n > 1:
			rep.violate(invCarts, "cart command %s: %d decisive results", id, n)
		}
		if r == nil {
			continue
		}
		for _, d := range rs {
			if d.Duplicate {
				f.duplicates++
				if d.Outcome != r.Outcome || d.Reason != r.Reason || !reflect.DeepEqual(d.Lines, r.Lines) {
					rep.violate(invCarts, "cart command %s: duplicate %s/%s does not repeat %s/%s", id, d.Outcome, d.Reason, r.Outcome, r.Reason)
				}
			}
		}
		if r.CartID != c.CartID || r.Type != c.Type {
			rep.violate(invCarts, "cart command %s (%s of %s): result for %s of %s", id, c.Type, c.CartID, r.Type, r.CartID)
		}
		accepted := r.Outcome == schemas.OutcomeAccepted
		if sc.invalid {
			f.invalid++
			if accepted || r.Reason != schemas.ReasonInvalidCommand {
				rep.violate(invCarts, "invalid cart command %s: %s/%s, want rejected/invalid_command", id, r.Outcome, r.Reason)
			}
			continue
		}
		if !accepted {
			f.rejected[c.Type+"/"+r.Reason]++
			if r.Reason == "" {
				rep.violate(invCarts, "cart command %s rejected without a reason", id)
			}
		}
		switch c.Type {
		case schemas.TypeCartReserve:
			f.reserves++
			if accepted {
				f.reservesAccepted++
				checkReserveLines(rep, c, r, status)
				continue
			}
			for _, it := range c.Items { // nothing left held
				rid := cmp(it.ReservationID, c.CommandID)
				if s := status(it.SKU, rid); s == schemas.StatusActive || s == schemas.StatusConsumed {
					rep.violate(invCarts, "rejected cart.reserve %s (%s): its line %s/%s is %s", id, r.Reason, it.SKU, rid, s)
				}
			}
			for _, l := range r.Lines {
				if l.Status == schemas.StatusActive || l.Status == schemas.StatusConsumed {
					rep.violate(invCarts, "rejected cart.reserve %s: result line %s/%s is %s", id, l.SKU, l.ReservationID, l.Status)
				}
			}
		case schemas.TypeCartCommit:
			f.commits++
			if accepted {
				f.commitsAccepted++
			}
			for _, l := range r.Lines {
				key := schemas.ReservationKey(l.SKU, l.ReservationID)
				consumed := w.status[key] == schemas.StatusConsumed && w.orders[key] == c.OrderID
				switch {
				case accepted && (l.Status != schemas.StatusConsumed || !consumed):
					rep.violate(invCarts, "accepted cart.commit %s: line %s/%s is %s (changelog: %s, order %q)",
						id, l.SKU, l.ReservationID, l.Status, w.status[key], w.orders[key])
				case !accepted && (l.Status == schemas.StatusConsumed || consumed):
					rep.violate(invCarts, "rejected cart.commit %s (%s): line %s/%s consumed for order %s", id, r.Reason, l.SKU, l.ReservationID, c.OrderID)
				}
			}
		case schemas.TypeCartRelease:
			f.releases++
			if accepted {
				f.releasesAccepted++
				for _, l := range r.Lines {
					if l.Status == schemas.StatusActive {
						rep.violate(invCarts, "accepted cart.release %s: line %s/%s still active", id, l.SKU, l.ReservationID)
					}
				}
			}
		}
	}
	for id, rs := range cr.byID {
		if _, ok := led.cmds[id]; !ok {
			rep.violate(invCarts, "%d cart results for %s, which was never sent", len(rs), id)
		}
	}
	for key, e := range carts {
		if e.Saga != nil || len(e.Queue) > 0 {
			rep.violate(invCarts, "%s: saga of %s left (phase %v), %d cart commands queued", key, sagaCmd(e), sagaPhase(e), len(e.Queue))
		}
	}
	for key, ch := range w.st.entities {
		if r := ch.Reservation; r != nil && r.Reservation.Prepared {
			rep.violate(invCarts, "%s left prepared (order %s)", key, r.Reservation.OrderID)
		}
	}
	return f
}

// checkReserveLines checks an accepted cart.reserve: every item held as a line.
func checkReserveLines(rep *report, c schemas.CartCommand, r *schemas.CartResult, status func(sku, rid string) string) {
	if len(r.Lines) != len(c.Items) {
		rep.violate(invCarts, "accepted cart.reserve %s: %d lines for %d items", c.CommandID, len(r.Lines), len(c.Items))
		return
	}
	for i, it := range c.Items {
		l := r.Lines[i]
		rid := cmp(it.ReservationID, c.CommandID)
		if l.SKU != it.SKU || l.ReservationID != rid || l.Quantity != *it.Quantity || l.Outcome != schemas.OutcomeAccepted ||
			l.Status != schemas.StatusActive || status(it.SKU, rid) == "" {
			rep.violate(invCarts, "accepted cart.reserve %s: line %d %+v for item %s x%d (changelog status %q)",
				c.CommandID, i, l, it.SKU, *it.Quantity, status(it.SKU, rid))
		}
	}
}

// cmp returns a if it is not empty, else b.
func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func sagaCmd(e *cart.Entity) string {
	if e.Saga == nil {
		return "none"
	}
	return e.Saga.Command.CommandID
}

func sagaPhase(e *cart.Entity) string {
	if e.Saga == nil {
		return ""
	}
	return e.Saga.Phase
}
