package cart

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/schemas"
)

// TestPropertyRandomSagas drives many carts competing for few SKUs through the
// simulator: cart commands (reserve, release, commit, re-sent duplicates,
// invalid ones) arrive at random moments, per-SKU commands and line results
// are delivered in random order (with duplicate line results), and the clock
// jumps so that holds expire mid-saga. The invariants of sim.violations hold
// after every step; each cart result is checked against the SKU core's state when
// it is emitted; and once everything is delivered: exactly one result per cart
// command id, no saga left running, and every hold that ended was ended by a
// cart command entitled to end it.
func TestPropertyRandomSagas(t *testing.T) {
	seeds := 400
	if testing.Short() {
		seeds = 50
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { randomRun(t, uint64(seed)) })
		if t.Failed() {
			return
		}
	}
}

type propRun struct {
	t        *testing.T
	rng      *rand.Rand
	s        *sim
	skus     []string
	carts    []string
	initial  map[string]int64
	sent     map[string]schemas.CartCommand // first body of each command id
	order    []string                       // command ids in the order first sent
	results  map[string][]schemas.CartResult
	accepted map[string]bool // outcome of each decided command id
	stats    map[string]int
}

func randomRun(t *testing.T, seed uint64) *propRun {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	rules := Rules{DedupeWindow: 24 * time.Hour, MaxQueue: 1 + rng.IntN(4)}
	if rng.IntN(2) == 0 {
		// Small limits, so that carts fill up (cart_full) and queued lines
		// run out (cart_busy); otherwise the defaults.
		rules.MaxHolds, rules.MaxQueuedLines = 2+rng.IntN(8), 1+rng.IntN(6)
	}
	r := &propRun{
		t: t, rng: rng,
		s:        newSim(t, rules, t0),
		initial:  map[string]int64{},
		sent:     map[string]schemas.CartCommand{},
		results:  map[string][]schemas.CartResult{},
		accepted: map[string]bool{},
		stats:    map[string]int{},
	}
	for i := range 2 + rng.IntN(5) {
		sku := fmt.Sprintf("SKU-%d", i)
		r.skus = append(r.skus, sku)
		r.initial[sku] = int64(rng.IntN(9))
		r.s.sku.setStock(sku, r.initial[sku], t0)
	}
	for i := range 1 + rng.IntN(5) {
		r.carts = append(r.carts, fmt.Sprintf("cart-%d", i))
	}
	r.s.onResult = r.checkResult
	// The whole run stays well inside the dedupe window, so that a re-sent
	// id is always a duplicate.
	limit := t0 + schemas.Millis(20*time.Hour/time.Millisecond)
	toSend := 10 + rng.IntN(40)
	for toSend > 0 || len(r.s.cmds)+len(r.s.replies) > 0 {
		switch n := rng.IntN(100); {
		case n < 25 && toSend > 0:
			r.sendRandom()
			toSend--
		case n < 55 && len(r.s.cmds) > 0:
			r.s.deliver(rng.IntN(len(r.s.cmds)))
		case n < 85 && len(r.s.replies) > 0:
			r.s.reply(rng.IntN(len(r.s.replies)))
		case n < 88 && len(r.s.last) > 0:
			// A duplicate line result: it must change nothing.
			rp := r.s.last[r.skus[rng.IntN(len(r.skus))]]
			if rp.key == "" {
				continue
			}
			r.s.replies = append(r.s.replies, rp)
			_, o := r.s.reply(len(r.s.replies) - 1)
			if len(o.Changes) > 0 {
				// Legitimate only when the copy overtook the original, which
				// must then still be in flight (and be ignored later).
				require.True(t, slices.ContainsFunc(r.s.replies, func(x reply) bool { return x.res.CommandID == rp.res.CommandID }),
					"a line result recorded twice: %+v", rp.res)
				r.stats["dup line result first"]++
			} else {
				require.Empty(t, o.Results)
				require.Empty(t, o.Commands)
				r.stats["dup line result ignored"]++
			}
		case n < 100 && r.s.now < limit:
			step := schemas.Millis(rng.IntN(90_000))
			if rng.IntN(10) == 0 {
				step = schemas.Millis(rng.IntN(15 * 60_000))
			}
			r.s.advance(step)
		}
		require.Empty(t, r.s.violations(), "seed %d", seed)
	}
	r.final()
	return r
}

func (r *propRun) sendRandom() {
	rng := r.rng
	cart := r.carts[rng.IntN(len(r.carts))]
	id := fmt.Sprintf("k%d", len(r.order))
	var cmd schemas.CartCommand
	switch n := rng.IntN(100); {
	case n < 10 && len(r.order) > 0:
		// Re-send an earlier command id, same body.
		cmd = r.sent[r.order[rng.IntN(len(r.order))]]
		r.s.send(cmd.CartID, cmd, nil)
		r.stats["re-sent"]++
		return
	case n < 13:
		cmd = schemas.CartCommand{CommandID: id, Type: schemas.TypeCartReserve, CartID: cart} // no items: invalid
	case n < 63:
		cmd = schemas.CartCommand{CommandID: id, Type: schemas.TypeCartReserve, CartID: cart}
		if rng.IntN(2) == 0 {
			cmd.TTLSeconds = i64(int64(30 + rng.IntN(870)))
		}
		ids := rng.Perm(3)
		for _, i := range rng.Perm(len(r.skus))[:1+rng.IntN(min(4, len(r.skus)))] {
			it := item(r.skus[i], int64(1+rng.IntN(3)))
			if len(ids) > 0 && rng.IntN(5) == 0 {
				// An explicit reservation id from a small pool: it may clash
				// with a reservation of this or another cart.
				it.ReservationID = fmt.Sprintf("r%d", ids[0])
				ids = ids[1:]
			}
			cmd.Items = append(cmd.Items, it)
		}
	case n < 78:
		cmd = schemas.CartCommand{CommandID: id, Type: schemas.TypeCartRelease, CartID: cart}
	default:
		cmd = schemas.CartCommand{CommandID: id, Type: schemas.TypeCartCommit, CartID: cart, OrderID: "order-" + id}
	}
	r.sent[id] = cmd
	r.order = append(r.order, id)
	r.s.send(cart, cmd, nil)
}

// holds reports whether the coordinator lists sku/id as a hold of cart.
func (r *propRun) holds(cart, sku, id string) bool {
	e, ok := r.s.state.Cart(cart)
	return ok && slices.ContainsFunc(e.Holds, func(h Hold) bool { return h.SKU == sku && h.ReservationID == id })
}

// res returns the SKU processor's reservation, or nil.
func (r *propRun) res(sku, id string) *simRes { return r.s.sku.res(sku, id) }

// checkResult checks a cart result against the SKU core's state at the moment it is
// emitted.
func (r *propRun) checkResult(cr *schemas.CartResult) {
	t := r.t
	now := r.s.now
	r.results[cr.CommandID] = append(r.results[cr.CommandID], *cr)
	if cr.Duplicate {
		first := r.results[cr.CommandID][0]
		first.Duplicate = true
		require.Equal(t, first, *cr, "a duplicate repeats the original result")
		return
	}
	require.Len(t, r.results[cr.CommandID], 1, "one result per cart command id: %s", cr.CommandID)
	require.NotNil(t, cr.Lines)
	cmd := r.sent[cr.CommandID]
	require.Equal(t, cmd.Type, cr.Type)
	require.Equal(t, cmd.CartID, cr.CartID)
	accepted := cr.Outcome == schemas.OutcomeAccepted
	r.accepted[cr.CommandID] = accepted
	r.stats[cr.Type+" "+cr.Outcome+" "+cr.Reason]++
	switch cr.Type {
	case schemas.TypeCartReserve:
		if cr.Reason == schemas.ReasonInvalidCommand || cr.Reason == schemas.ReasonCartBusy {
			require.Empty(t, cr.Lines)
			return
		}
		if cr.Reason == schemas.ReasonCartFull {
			// Rejected before its saga: nothing tried, and the cart's holds
			// (which nothing else changed in this step) left no room.
			require.Empty(t, cr.Lines)
			e, _ := r.s.state.Cart(cmd.CartID)
			require.Greater(t, len(e.Holds)+len(cmd.Items), r.s.core.maxHolds(), "cart_full with room: %+v", cr)
			return
		}
		require.Len(t, cr.Lines, len(cmd.Items))
		for i, l := range cr.Lines {
			require.Equal(t, cmd.Items[i].SKU, l.SKU)
			rid := cmp.Or(cmd.Items[i].ReservationID, cmd.CommandID)
			require.Equal(t, rid, l.ReservationID)
			res := r.res(l.SKU, l.ReservationID)
			if l.Outcome == schemas.OutcomeAccepted {
				require.Equal(t, "cart "+cmd.CommandID, res.createdBy)
			}
			if accepted {
				// Every line held: active, unless it expired while the saga ran.
				require.Equal(t, schemas.StatusActive, l.Status)
				require.True(t, res.Status == schemas.StatusActive || (res.Status == schemas.StatusExpired && res.ExpiresAt <= now),
					"accepted line %s/%s is %s", l.SKU, l.ReservationID, res.Status)
				require.True(t, r.holds(cmd.CartID, l.SKU, l.ReservationID), "accepted line %s/%s is no hold", l.SKU, l.ReservationID)
				continue
			}
			if l.Outcome == schemas.OutcomeAccepted {
				// Rejected: what the saga held is held no more.
				r.stats["compensated line"]++
				require.NotEqual(t, schemas.StatusActive, res.Status, "rejected %s leaves %s held", cr.CommandID, l.SKU)
				require.Contains(t, []string{schemas.StatusReleased, schemas.StatusExpired}, l.Status)
				require.Equal(t, res.Status, l.Status)
				require.False(t, r.holds(cmd.CartID, l.SKU, l.ReservationID), "compensated line %s/%s is a hold", l.SKU, l.ReservationID)
			} else {
				require.Empty(t, l.Status)
			}
		}
		if !accepted {
			require.NotEmpty(t, cr.Reason)
		}
	case schemas.TypeCartCommit:
		for _, l := range cr.Lines {
			res := r.res(l.SKU, l.ReservationID)
			require.NotNil(t, res)
			require.False(t, res.Prepared, "%s/%s left prepared", l.SKU, l.ReservationID)
			// The cart's holds are the lines left active.
			require.Equal(t, l.Status == schemas.StatusActive, r.holds(cmd.CartID, l.SKU, l.ReservationID), "line %+v", l)
			if accepted {
				require.Equal(t, schemas.StatusConsumed, res.Status)
				require.Equal(t, cmd.OrderID, res.OrderID)
				require.Equal(t, schemas.StatusConsumed, l.Status)
			} else {
				if l.Outcome == schemas.OutcomeAccepted {
					r.stats["unprepared line"]++
					if l.Status == schemas.StatusExpired {
						// Its expires_at passed while it was prepared: the
						// SKU core expires it in the unprepare decision.
						r.stats["unprepared line expired"]++
					}
				}
				require.NotEqual(t, "cart "+cmd.CommandID, res.endedBy, "rejected commit %s consumed %s", cmd.CommandID, l.SKU)
			}
		}
		if accepted {
			require.NotEmpty(t, cr.Lines)
		}
	case schemas.TypeCartRelease:
		if cr.Reason != schemas.ReasonCartBusy {
			require.Equal(t, schemas.OutcomeAccepted, cr.Outcome, "a release is accepted unless the queue is full: %+v", cr)
		}
		for _, l := range cr.Lines {
			res := r.res(l.SKU, l.ReservationID)
			require.NotNil(t, res)
			require.NotEqual(t, schemas.StatusActive, res.Status)
			require.Equal(t, res.Status, l.Status)
			require.False(t, r.holds(cmd.CartID, l.SKU, l.ReservationID))
		}
	}
}

func (r *propRun) final() {
	t := r.t
	for _, id := range r.order {
		n := 0
		for _, cr := range r.results[id] {
			if !cr.Duplicate {
				n++
			}
		}
		require.Equal(t, 1, n, "results of %s", id)
	}
	for _, c := range r.s.state {
		if e := c.Cart; e != nil {
			require.Nil(t, e.Saga, "saga of %s still running", e.CartID)
			require.Empty(t, e.Queue)
			require.NotEmpty(t, e.Holds, "an idle cart without holds is tombstoned")
		}
	}
	consumed := map[string]int64{}
	for _, res := range r.s.sku.reservations() {
		if res.Status == schemas.StatusConsumed {
			consumed[res.SKU] += res.Quantity
		}
		if res.endedBy == "" {
			continue
		}
		// Ended by "cart <id>": a command of the same cart entitled to it.
		id := strings.TrimPrefix(res.endedBy, "cart ")
		cmd, ok := r.sent[id]
		require.True(t, ok, "%s/%s ended by %q", res.SKU, res.ReservationID, res.endedBy)
		require.Equal(t, res.CartID, cmd.CartID)
		switch res.Status {
		case schemas.StatusConsumed:
			require.Equal(t, schemas.TypeCartCommit, cmd.Type)
			require.True(t, r.accepted[id], "consumed by rejected commit %s", id)
		case schemas.StatusReleased:
			if cmd.Type == schemas.TypeCartReserve {
				// Compensation: only its own lines, only when rejected.
				require.Equal(t, res.endedBy, res.createdBy)
				require.False(t, r.accepted[id], "released by accepted reserve %s", id)
			} else {
				require.Equal(t, schemas.TypeCartRelease, cmd.Type)
			}
		}
	}
	for _, sku := range r.skus {
		st, ok := r.s.sku.stock(sku)
		require.True(t, ok, "stock of %s", sku)
		require.Equal(t, r.initial[sku], st.OnHand+consumed[sku], "stock of %s is conserved", sku)
	}
	// Accepted reserves: each line is active, expired, or ended by a later
	// release/commit of the cart (checked above).
	for id, ok := range r.accepted {
		if cmd := r.sent[id]; ok && cmd.Type == schemas.TypeCartReserve {
			for _, it := range cmd.Items {
				res := r.res(it.SKU, cmp.Or(it.ReservationID, id))
				require.Equal(t, "cart "+id, res.createdBy)
			}
		}
	}
}

// TestPropertyCoverage makes sure the random runs reach the interesting paths,
// so that the property test cannot pass by exercising nothing.
func TestPropertyCoverage(t *testing.T) {
	total := map[string]int{}
	for seed := range 100 {
		var r *propRun
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { r = randomRun(t, uint64(seed)) })
		if r == nil {
			t.FailNow()
		}
		for k, v := range r.stats {
			total[k] += v
		}
	}
	t.Logf("100 runs: %v", total)
	for _, k := range []string{
		"cart.reserve accepted ",
		"cart.reserve rejected insufficient_stock",
		"cart.reserve rejected invalid_command",
		"cart.reserve rejected cart_full",
		"cart.reserve rejected cart_busy",
		"cart.commit accepted ",
		"cart.commit rejected reservation_not_active",
		"cart.commit rejected cart_empty",
		"cart.release accepted ",
		"re-sent",
		"dup line result ignored",
		"compensated line",
		"unprepared line",
		"unprepared line expired",
	} {
		require.Positive(t, total[k], "no %q in 100 runs: %v", k, total)
	}
}
