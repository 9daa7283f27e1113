package processor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/processor/cart"
	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/schemas"
)

// cartReader reads the cart-results topic.
type cartReader struct {
	t      testing.TB
	cl     *kgo.Client
	pollMu sync.Mutex
	mu     sync.Mutex
	all    []schemas.CartResult
	byCmd  map[string][]schemas.CartResult
	decide map[string]int // non-duplicate results per command id
	// diagnose, when set, logs what is known of cart commands without a result.
	diagnose func(missing []string)
}

func (h *harness) cartResults() *cartReader {
	return &cartReader{t: h.t, byCmd: map[string][]schemas.CartResult{}, decide: map[string]int{},
		cl: h.c.Client(h.t, kgo.ConsumeTopics(h.names.CartResults), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))}
}

// waitDecided reads until every id has a non-duplicate cart result.
func (r *cartReader) waitDecided(timeout time.Duration, ids ...string) {
	r.t.Helper()
	if missing := r.tryDecided(timeout, ids...); len(missing) > 0 {
		if r.diagnose != nil {
			r.diagnose(missing)
		}
		r.t.Fatalf("%d of %d cart commands without a result after %s: %v", len(missing), len(ids), timeout, missing)
	}
}

// tryDecided reads until every id has a non-duplicate cart result or the
// timeout passes, and returns the ids still without one.
func (r *cartReader) tryDecided(timeout time.Duration, ids ...string) []string {
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		var missing []string
		for _, id := range ids {
			if r.decide[id] == 0 {
				missing = append(missing, id)
			}
		}
		r.mu.Unlock()
		if len(missing) == 0 || time.Now().After(deadline) {
			return missing
		}
		r.poll()
	}
}

// poll reads what one fetch (at most 200 ms) returns. One poll at a time.
func (r *cartReader) poll() {
	r.t.Helper()
	r.pollMu.Lock()
	defer r.pollMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	fs := r.cl.PollFetches(ctx)
	cancel()
	{
		r.mu.Lock()
		fs.EachRecord(func(rec *kgo.Record) {
			var res schemas.CartResult
			require.NoError(r.t, json.Unmarshal(rec.Value, &res), "cart result %s", rec.Value)
			require.Equal(r.t, res.CartID, string(rec.Key), "cart result keyed by its cart_id")
			r.all = append(r.all, res)
			r.byCmd[res.CommandID] = append(r.byCmd[res.CommandID], res)
			if !res.Duplicate {
				r.decide[res.CommandID]++
			}
		})
		r.mu.Unlock()
	}
}

func (r *cartReader) decisive(id string) schemas.CartResult {
	for _, res := range r.byCmd[id] {
		if !res.Duplicate {
			return res
		}
	}
	r.t.Fatalf("no result of cart command %s", id)
	return schemas.CartResult{}
}

// sendCarts produces cart commands keyed by cart_id (murmur2).
func (h *harness) sendCarts(cmds ...schemas.CartCommand) {
	h.t.Helper()
	recs := make([]*kgo.Record, len(cmds))
	for i, c := range cmds {
		v, err := json.Marshal(c)
		require.NoError(h.t, err)
		recs[i] = &kgo.Record{Topic: h.names.CartCommands, Key: []byte(c.CartID), Value: v}
	}
	require.NoError(h.t, h.prod.ProduceSync(context.Background(), recs...).FirstErr())
}

// cartWorkload: carts compete for few units of few SKUs; then a third of the
// carts commits, a third releases; some cart commands are sent twice.
type cartWorkload struct {
	skus     []string
	onHand   int64
	reserves []schemas.CartCommand
	finals   []schemas.CartCommand // cart.commit / cart.release, one per cart at most
	dupes    []schemas.CartCommand
}

func genCartWorkload(seed uint64, skus, carts int, onHand int64) cartWorkload {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	w := cartWorkload{onHand: onHand}
	for i := range skus {
		w.skus = append(w.skus, fmt.Sprintf("S%d", i))
	}
	ttl := int64(3600) // nothing expires during the test
	for i := range carts {
		cartID := fmt.Sprintf("cart-%d", i)
		n := 1 + rng.IntN(3)
		var items []schemas.CartItem
		for _, k := range rng.Perm(skus)[:n] {
			items = append(items, schemas.CartItem{SKU: w.skus[k], Quantity: i64(1 + rng.Int64N(3))})
		}
		res := schemas.CartCommand{CommandID: fmt.Sprintf("cr-%d", i), Type: schemas.TypeCartReserve, CartID: cartID,
			TTLSeconds: &ttl, Items: items}
		w.reserves = append(w.reserves, res)
		switch i % 3 {
		case 0:
			w.finals = append(w.finals, schemas.CartCommand{CommandID: fmt.Sprintf("cc-%d", i), Type: schemas.TypeCartCommit,
				CartID: cartID, OrderID: fmt.Sprintf("order-%d", i)})
		case 1:
			w.finals = append(w.finals, schemas.CartCommand{CommandID: fmt.Sprintf("cx-%d", i), Type: schemas.TypeCartRelease, CartID: cartID})
		}
		if rng.IntN(5) == 0 {
			w.dupes = append(w.dupes, res)
		}
	}
	return w
}

func cartIDs(cmds []schemas.CartCommand) []string {
	out := make([]string, len(cmds))
	for i, c := range cmds {
		out[i] = c.CommandID
	}
	return out
}

// The cart saga end to end: SKU processors and cart coordinators are killed
// with SIGKILL at random points (so in the middle of sagas, mid-transaction)
// and restarted on their folders or on empty ones, while carts compete for
// the last units of a few SKUs. Afterwards: exactly one result per cart
// command, no hold left by a rejected cart, all or nothing for commits, no
// saga left in flight, every per-SKU command of a saga decided exactly once,
// and the stock invariants of every SKU.
func TestCartSagaSurvivesKills(t *testing.T) {
	h := newHarness(t, 4)
	carts := h.cartResults()
	w := genCartWorkload(7, 16, 300, 15)
	var sets []schemas.Command
	for _, s := range w.skus {
		sets = append(sets, stockSet("set-"+s, s, w.onHand))
	}
	carts.diagnose = func(missing []string) {
		cartOf := map[string]string{}
		for _, c := range append(append([]schemas.CartCommand(nil), w.reserves...), w.finals...) {
			cartOf[c.CommandID] = c.CartID
		}
		state := h.changelogStateOf(h.names.CartChangelog)
		h.drain()
		for _, id := range missing[:min(len(missing), 5)] {
			c := state[cart.CartPrefix+cartOf[id]]
			js, _ := json.Marshal(c.Cart)
			t.Logf("cart command %s (cart %s): cart entity %s", id, cartOf[id], js)
			if c.Cart != nil && c.Cart.Cart != nil && c.Cart.Cart.Saga != nil {
				sg := c.Cart.Cart.Saga
				for _, l := range sg.Lines {
					lid := cart.LineCommandID(cartOf[id], sg.Command.CommandID, sg.Phase, l.SKU, l.ReservationID)
					t.Logf("  line %s pending=%v: command %s, per-SKU results %d", l.SKU, l.Pending, lid, len(h.byCmd[lid]))
				}
			}
		}
		t.Logf("per-SKU results read: %d", len(h.results))
	}
	skuDir, cartDir := t.TempDir(), t.TempDir()
	var mu sync.Mutex
	sku := h.startChildRole(skuDir, processor.RoleSKU)
	coord := h.startChildRole(cartDir, processor.RoleCart)
	h.send(sets...)
	h.waitDecided(60*time.Second, idsOf(sets)...)
	require.True(t, sku.waitAssigned(60*time.Second), "SKU processor got no partitions")
	require.True(t, coord.waitAssigned(60*time.Second), "cart coordinator got no partitions")

	// The killer: kill -9 one of the two 0.2-1.5 s after the last restarted
	// child got its partitions (it may still be restoring: see markAssigned
	// for why not earlier) and the pipeline made progress (3 more cart
	// results), and restart it on its folder, or on an empty one every third
	// time (a full restore); 8 kills in all.
	stop := make(chan struct{})
	killerDone := make(chan struct{})
	kills := 0
	decided := func() int {
		carts.mu.Lock()
		defer carts.mu.Unlock()
		return len(carts.decide)
	}
	go func() { // keep reading while the main goroutine sends, for the killer's progress gate
		for {
			select {
			case <-stop:
				return
			default:
				carts.poll()
			}
		}
	}()
	go func() {
		defer close(killerDone)
		rng := rand.New(rand.NewPCG(99, 100))
		for i := 0; i < 8; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(200+rng.IntN(1300)) * time.Millisecond):
			}
			mu.Lock()
			var restarted *child
			if rng.IntN(2) == 0 {
				sku.kill()
				if i%3 == 2 {
					skuDir = t.TempDir()
				}
				sku = h.startChildRole(skuDir, processor.RoleSKU)
				restarted = sku
			} else {
				coord.kill()
				if i%3 == 2 {
					cartDir = t.TempDir()
				}
				coord = h.startChildRole(cartDir, processor.RoleCart)
				restarted = coord
			}
			kills++
			mu.Unlock()
			if !restarted.waitAssigned(90 * time.Second) {
				t.Errorf("restarted child %s got no partitions", restarted.dir)
			}
			for from := decided(); decided() < from+3; {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
	}()
	paced := func(cmds []schemas.CartCommand) {
		// ~45 s in all: long enough for several kills (a restart takes a
		// session timeout, 6 s, to get the dead member's partitions back).
		for i := 0; i < len(cmds); i += 3 {
			h.sendCarts(cmds[i:min(i+3, len(cmds))]...)
			time.Sleep(250 * time.Millisecond)
		}
	}
	// The finals of the first half are sent while the second half of the
	// reserves is still in flight (a final waits in its cart's queue if its
	// reserve's saga is running).
	half := len(w.reserves) / 2
	paced(w.reserves[:half])
	carts.waitDecided(180*time.Second, cartIDs(w.reserves[:half])...)
	var early, late []schemas.CartCommand
	for _, f := range w.finals {
		if i := slices.IndexFunc(w.reserves[:half], func(r schemas.CartCommand) bool { return r.CartID == f.CartID }); i >= 0 {
			early = append(early, f)
		} else {
			late = append(late, f)
		}
	}
	var mixed []schemas.CartCommand
	for i := range max(len(early), len(w.reserves)-half) {
		if i < len(early) {
			mixed = append(mixed, early[i])
		}
		if half+i < len(w.reserves) {
			mixed = append(mixed, w.reserves[half+i])
		}
	}
	paced(mixed)
	carts.waitDecided(180*time.Second, cartIDs(w.reserves)...)
	paced(append(late, w.dupes...))
	carts.waitDecided(180*time.Second, cartIDs(w.finals)...)
	close(stop)
	<-killerDone
	t.Logf("%d kills", kills)
	require.GreaterOrEqual(t, kills, 4, "the kills should land while sagas are in flight")
	// Let duplicates answer, then stop cleanly.
	deadline := time.Now().Add(60 * time.Second)
	for {
		carts.poll()
		carts.mu.Lock()
		n := 0
		for _, d := range w.dupes {
			for _, r := range carts.byCmd[d.CommandID] {
				if r.Duplicate {
					n++
					break
				}
			}
		}
		carts.mu.Unlock()
		if n == len(w.dupes) {
			break
		}
		require.True(t, time.Now().Before(deadline), "only %d of %d duplicate cart commands answered", n, len(w.dupes))
	}
	mu.Lock()
	sku.stop(t)
	coord.stop(t)
	mu.Unlock()

	checkCartSaga(t, h, carts, w)
}

func checkCartSaga(t *testing.T, h *harness, carts *cartReader, w cartWorkload) {
	t.Helper()
	// Exactly one decision per cart command; duplicates repeat it.
	for _, c := range append(append([]schemas.CartCommand(nil), w.reserves...), w.finals...) {
		assert.Equal(t, 1, carts.decide[c.CommandID], "decisions of cart command %s", c.CommandID)
	}
	for _, d := range w.dupes {
		orig := carts.decisive(d.CommandID)
		for _, r := range carts.byCmd[d.CommandID] {
			if r.Duplicate {
				assert.Equal(t, orig.Outcome, r.Outcome, "duplicate of %s", d.CommandID)
				assert.Equal(t, orig.Lines, r.Lines, "duplicate of %s", d.CommandID)
			}
		}
	}

	state := h.changelogState()
	status := func(sku, rid string) string {
		r, ok := state.Reservation(sku, rid)
		if !ok {
			return ""
		}
		return r.Reservation.Status
	}
	finals := map[string]schemas.CartCommand{}
	for _, f := range w.finals {
		finals[f.CartID] = f
	}
	accepted, rejected := 0, 0
	for _, res := range w.reserves {
		r := carts.decisive(res.CommandID)
		f, hasFinal := finals[res.CartID]
		if r.Outcome == schemas.OutcomeRejected {
			rejected++
			assert.NotEmpty(t, r.Reason, "rejected cart %s has a reason", res.CommandID)
			// No partial hold: none of its lines is active (or was ever consumed).
			for _, it := range res.Items {
				s := status(it.SKU, res.CommandID)
				assert.Contains(t, []string{"", schemas.StatusReleased}, s, "line %s of rejected cart %s", it.SKU, res.CommandID)
			}
			if hasFinal && f.Type == schemas.TypeCartCommit {
				fr := carts.decisive(f.CommandID)
				assert.Equal(t, schemas.OutcomeRejected, fr.Outcome, "commit of a cart that holds nothing")
				assert.Equal(t, schemas.ReasonCartEmpty, fr.Reason)
			}
			continue
		}
		accepted++
		require.Len(t, r.Lines, len(res.Items))
		want := schemas.StatusActive
		if hasFinal {
			fr := carts.decisive(f.CommandID)
			assert.Equal(t, schemas.OutcomeAccepted, fr.Outcome, "%s of cart %s (holds never expire here): %+v", f.Type, res.CartID, fr)
			want = map[string]string{schemas.TypeCartCommit: schemas.StatusConsumed, schemas.TypeCartRelease: schemas.StatusReleased}[f.Type]
		}
		for _, it := range res.Items {
			assert.Equal(t, want, status(it.SKU, res.CommandID), "line %s of cart %s", it.SKU, res.CommandID)
			if want == schemas.StatusConsumed {
				rr, _ := state.Reservation(it.SKU, res.CommandID)
				assert.Equal(t, f.OrderID, rr.Reservation.OrderID)
			}
		}
	}
	t.Logf("%d carts accepted, %d rejected", accepted, rejected)
	assert.Positive(t, accepted)
	assert.Positive(t, rejected, "the workload should make carts compete")

	// Stock invariants per SKU.
	for _, s := range w.skus {
		st, ok := state.Stock(s)
		require.True(t, ok, s)
		var active, consumed int64
		for _, c := range state {
			if r := c.Reservation; r != nil && r.Reservation.SKU == s {
				switch r.Reservation.Status {
				case schemas.StatusActive:
					active += r.Reservation.Quantity
					assert.False(t, r.Reservation.Prepared, "prepared hold left: %+v", r.Reservation)
				case schemas.StatusConsumed:
					consumed += r.Reservation.Quantity
				}
			}
		}
		assert.Equal(t, active, st.Reserved, "%s: reserved == sum of active holds", s)
		assert.Equal(t, w.onHand-consumed, st.OnHand, "%s: on_hand == initial - committed", s)
		assert.GreaterOrEqual(t, st.OnHand-st.Reserved, int64(0), "%s oversold", s)
	}

	// Every per-SKU command of a saga was decided exactly once.
	h.drain()
	n := 0
	for id, rs := range h.byCmd {
		if len(id) > 5 && id[:5] == "cart-" {
			n++
			dec := 0
			for _, r := range rs {
				if !r.Duplicate {
					dec++
				}
			}
			assert.Equal(t, 1, dec, "decisions of line command %s", id)
		}
	}
	assert.Positive(t, n, "line commands seen")

	// No saga left in flight, no queued command left.
	for k, c := range h.changelogStateOf(h.names.CartChangelog) {
		if c.Cart != nil && c.Cart.Cart != nil {
			assert.Nil(t, c.Cart.Cart.Saga, "saga left in %s", k)
			assert.Empty(t, c.Cart.Cart.Queue, "queue left in %s", k)
		}
	}
}

// drain reads results until the results topic has nothing more to give
// (three empty polls in a row; use once the processors stopped).
func (h *harness) drain() {
	h.t.Helper()
	empty := 0
	h.read(60*time.Second, func() bool {
		n := len(h.results)
		if n == h.drainMark {
			empty++
		} else {
			empty = 0
		}
		h.drainMark = n
		return empty >= 3
	})
}

func cartReserve(id, cartID string, lines ...any) schemas.CartCommand {
	c := schemas.CartCommand{CommandID: id, Type: schemas.TypeCartReserve, CartID: cartID}
	for i := 0; i < len(lines); i += 2 {
		c.Items = append(c.Items, schemas.CartItem{SKU: lines[i].(string), Quantity: i64(int64(lines[i+1].(int)))})
	}
	return c
}

// The cart coordinator in process, next to a SKU processor: the contract's
// cart cases one by one, the DLQ and invalid_command paths of the cart
// topic, and the sweep of decided cart commands past the dedupe window.
func TestCartPipeline(t *testing.T) {
	h := newHarness(t, 3)
	carts := h.cartResults()
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	skuP := h.start("")
	coord := h.startWith(processor.WithClock(clock), func(c *processor.Config) {
		c.Role = processor.RoleCart
		c.Group += "-cart"
		c.Rules = sku.Rules{DedupeWindow: time.Hour, MaxExtensions: 1}
		c.SweepInterval = 50 * time.Millisecond
	})
	h.waitReady(skuP)
	h.send(stockSet("s1", "A", 5), stockSet("s2", "B", 2), stockSet("s3", "C", 1))
	h.waitDecided(20*time.Second, "s1", "s2", "s3")

	// All lines fit; one line short (nothing held); re-sent: same result.
	h.sendCarts(cartReserve("k1", "cart-1", "A", 2, "B", 1), cartReserve("k2", "cart-2", "A", 1, "C", 2))
	carts.waitDecided(30*time.Second, "k1", "k2")
	k1, k2 := carts.decisive("k1"), carts.decisive("k2")
	assert.Equal(t, schemas.OutcomeAccepted, k1.Outcome, "%+v", k1)
	require.Len(t, k1.Lines, 2)
	for _, l := range k1.Lines {
		assert.Equal(t, schemas.StatusActive, l.Status)
		assert.Equal(t, "k1", l.ReservationID, "default reservation id")
	}
	assert.Equal(t, schemas.OutcomeRejected, k2.Outcome, "%+v", k2)
	assert.Equal(t, schemas.ReasonInsufficientStock, k2.Reason)
	state := h.changelogState()
	a, _ := state.Stock("A")
	assert.Equal(t, int64(2), a.Reserved, "k2's line of A was released before k2's result")
	if r, ok := state.Reservation("A", "k2"); ok {
		assert.Equal(t, schemas.StatusReleased, r.Reservation.Status)
	}
	h.sendCarts(cartReserve("k1", "cart-1", "A", 2, "B", 1))
	require.Eventually(t, func() bool { carts.poll(); return len(carts.byCmd["k1"]) == 2 }, 20*time.Second, 10*time.Millisecond)
	assert.True(t, carts.byCmd["k1"][1].Duplicate)
	assert.Equal(t, k1.Lines, carts.byCmd["k1"][1].Lines)

	// Undecodable: DLQ (and a rejected result when a command id is readable);
	// a bad field: invalid_command naming it.
	dlq := h.c.Client(t, kgo.ConsumeTopics(h.names.DLQ), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, h.prod.ProduceSync(context.Background(),
		&kgo.Record{Topic: h.names.CartCommands, Key: []byte("cart-9"), Value: []byte("not json")},
		&kgo.Record{Topic: h.names.CartCommands, Key: []byte("cart-9"),
			Value: []byte(`{"command_id":"bad-qty","type":"cart.reserve","cart_id":"cart-9","items":[{"sku":"A","quantity":"2"}]}`)},
	).FirstErr())
	carts.waitDecided(20*time.Second, "bad-qty")
	bad := carts.decisive("bad-qty")
	assert.Equal(t, schemas.ReasonInvalidCommand, bad.Reason)
	assert.Contains(t, bad.Message, "items[0].quantity")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fs := dlq.PollFetches(ctx)
	require.NoError(t, ctx.Err())
	require.Equal(t, "not json", string(fs.Records()[0].Value))

	// Commit, then a commit of the emptied cart, then release of another.
	h.sendCarts(cartReserve("k3", "cart-3", "B", 1),
		schemas.CartCommand{CommandID: "c1", Type: schemas.TypeCartCommit, CartID: "cart-1", OrderID: "o-1"},
		schemas.CartCommand{CommandID: "c2", Type: schemas.TypeCartCommit, CartID: "cart-1", OrderID: "o-2"},
		schemas.CartCommand{CommandID: "x3", Type: schemas.TypeCartRelease, CartID: "cart-3"})
	carts.waitDecided(30*time.Second, "k3", "c1", "c2", "x3")
	assert.Equal(t, schemas.OutcomeAccepted, carts.decisive("c1").Outcome)
	assert.Equal(t, schemas.ReasonCartEmpty, carts.decisive("c2").Reason)
	assert.Equal(t, schemas.OutcomeAccepted, carts.decisive("x3").Outcome)
	state = h.changelogState()
	for _, s := range []string{"A", "B"} {
		st, _ := state.Stock(s)
		r, _ := state.Reservation(s, "k1")
		assert.Equal(t, schemas.StatusConsumed, r.Reservation.Status, s)
		assert.Equal(t, "o-1", r.Reservation.OrderID, s)
		assert.Equal(t, int64(0), st.Reserved, s)
	}
	b, _ := state.Stock("B")
	assert.Equal(t, int64(1), b.OnHand)
	r3, _ := state.Reservation("B", "k3")
	assert.Equal(t, schemas.StatusReleased, r3.Reservation.Status)

	// cart.commit after one line expired: nothing is committed, the result
	// names the line, the other hold is unprepared and stays active.
	short, long := int64(1), int64(3600)
	k5, k6 := cartReserve("k5", "cart-5", "A", 1), cartReserve("k6", "cart-5", "B", 1)
	k5.TTLSeconds, k6.TTLSeconds = &short, &long
	h.sendCarts(k5, k6)
	carts.waitDecided(20*time.Second, "k5", "k6")
	require.Equal(t, schemas.OutcomeAccepted, carts.decisive("k5").Outcome)
	require.Equal(t, schemas.OutcomeAccepted, carts.decisive("k6").Outcome)
	require.Eventually(t, func() bool {
		r, ok := h.changelogState().Reservation("A", "k5")
		return ok && r.Reservation.Status == schemas.StatusExpired
	}, 20*time.Second, 50*time.Millisecond, "the 1 s hold expires by the SKU processor's timer")
	h.sendCarts(schemas.CartCommand{CommandID: "c5", Type: schemas.TypeCartCommit, CartID: "cart-5", OrderID: "o-5"})
	carts.waitDecided(20*time.Second, "c5")
	c5 := carts.decisive("c5")
	assert.Equal(t, schemas.OutcomeRejected, c5.Outcome, "%+v", c5)
	assert.Equal(t, schemas.ReasonReservationNotActive, c5.Reason)
	state = h.changelogState()
	rb, _ := state.Reservation("B", "k6")
	assert.Equal(t, schemas.StatusActive, rb.Reservation.Status, "the other line stays held")
	assert.False(t, rb.Reservation.Prepared, "and is unprepared")
	assert.Empty(t, rb.Reservation.OrderID)
	for _, l := range c5.Lines {
		if l.SKU == "A" {
			assert.Equal(t, schemas.OutcomeRejected, l.Outcome)
			assert.Equal(t, schemas.StatusExpired, l.Status)
		}
	}

	// Interactive query of a cart: holds of cart-3 are gone, cart-9 never held.
	srv := httptest.NewServer(coord.p.QueryHandler())
	defer srv.Close()
	h.sendCarts(cartReserve("k4", "cart-4", "A", 1))
	carts.waitDecided(20*time.Second, "k4")
	require.Eventually(t, func() bool {
		resp, err := http.Get(srv.URL + "/v1/carts/cart-4")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var e cart.Entity
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&e) == nil &&
			len(e.Holds) == 1 && e.Holds[0].ReservationID == "k4" && e.Saga == nil
	}, 10*time.Second, 20*time.Millisecond)
	resp, err := http.Get(srv.URL + "/v1/carts/cart-9")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)

	// Past the window, decided cart commands are tombstoned; the id is new again.
	require.Contains(t, h.changelogStateOf(h.names.CartChangelog), "cart-command/k1")
	skew.Store(int64(2 * time.Hour))
	require.Eventually(t, func() bool {
		_, ok := h.changelogStateOf(h.names.CartChangelog)["cart-command/k1"]
		return !ok
	}, 20*time.Second, 100*time.Millisecond, "decided cart command tombstoned after the window")
}

// A saga waits for its line results: while the SKU processor is down the
// coordinator reports it in flight (and keeps reporting it after a restart,
// from its restored state); the result comes once the SKU processor runs.
func TestCartSagaInFlightGauges(t *testing.T) {
	h := newHarness(t, 2)
	carts := h.cartResults()
	cartMod := func(c *processor.Config) {
		c.Role = processor.RoleCart
		c.Group += "-cart"
	}
	dir := t.TempDir()
	coord := h.start(dir, cartMod)
	h.waitReady(coord)
	h.sendCarts(cartReserve("k1", "cart-1", "A", 1, "B", 1))
	inFlight := func(in *instance) bool {
		return in.gaugeSum("reservations_cart_sagas_in_flight") == 1 &&
			in.gaugeSum("reservations_cart_oldest_saga_start_timestamp_seconds") > float64(time.Now().Add(-time.Minute).Unix())
	}
	require.Eventually(t, func() bool { return inFlight(coord) }, 20*time.Second, 20*time.Millisecond)
	coord.stop(t)
	coord = h.start(dir, cartMod)
	h.waitReady(coord)
	assert.True(t, inFlight(coord), "restored from the coordinator's state")

	skuP := h.start("")
	h.send(stockSet("s1", "A", 5), stockSet("s2", "B", 5))
	h.waitDecided(20*time.Second, "s1", "s2")
	// The saga started before the stock existed: its lines were rejected
	// (unknown SKU) only if they were decided first; either way it ends.
	carts.waitDecided(30*time.Second, "k1")
	require.Eventually(t, func() bool {
		return coord.gaugeSum("reservations_cart_sagas_in_flight") == 0 &&
			coord.gaugeSum("reservations_cart_oldest_saga_start_timestamp_seconds") == 0
	}, 20*time.Second, 20*time.Millisecond)
	_ = skuP
}
