package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// idResults are the results read for one command id.
type idResults struct {
	decisive int    // non-duplicate results
	dups     int    // duplicate results
	hash     uint64 // of the first decisive result
	outcome  string
	reason   string
	badDups  int // duplicates that do not repeat the decisive result
}

// results reads the results topic (read_committed) from the start while the
// soak runs and checks it as it goes, in decision order per partition: the
// stock every result reports is walked per SKU (available < 0 only through
// stock.set/stock.adjust; every change explained by its decision).
type results struct {
	cl  *kgo.Client
	led *ledger
	rep *report

	mu      sync.Mutex
	n       int // results read
	byID    map[string]*idResults
	dead    map[pos]int                  // results of dead-lettered records, by source position
	times   map[int32][]int64            // decided_at (ms) of non-duplicate results, per partition, in offset order
	last    map[int32]int64              // last offset read (control records included), per partition
	views   map[string]schemas.StockView // per SKU, after its latest decision
	qty     map[string]int64             // per reservation (sku/id), its quantity after its latest decision
	active  map[string]schemas.Millis    // active reservations (sku/id) and their expires_at
	notices map[string]int               // expired, low_stock
	lags    []int64                      // expiry notices of timers: decided_at - expires_at (ms)
	lagAt   []int64                      // their expires_at (ms), in the order of lags
	// lines are the command ids of per-SKU commands the cart coordinator sent
	// (cart.LineCommandID: "cart-" and 32 hex digits); they are not in the ledger.
	lines map[string]bool
	// ended says how each reservation (sku/id) ended: expired, released or
	// committed; a second end is a violation.
	ended map[string]string
	// expiredWith are the reservations (sku/id) an unprepare expired in its
	// decision, with that decision's offset (see walk).
	expiredWith map[string]int64
}

func newResults(cl *kgo.Client, led *ledger, rep *report) *results {
	return &results{cl: cl, led: led, rep: rep, byID: map[string]*idResults{}, dead: map[pos]int{},
		times: map[int32][]int64{}, last: map[int32]int64{}, views: map[string]schemas.StockView{},
		qty: map[string]int64{}, active: map[string]schemas.Millis{}, notices: map[string]int{},
		lines: map[string]bool{}, ended: map[string]string{}, expiredWith: map[string]int64{}}
}

// isLineID reports whether id has the form of the command ids the cart
// coordinator gives its per-SKU commands (cart.LineCommandID).
func isLineID(id string) bool {
	if len(id) != len("cart-")+32 || !strings.HasPrefix(id, "cart-") {
		return false
	}
	for _, c := range id[len("cart-"):] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// run polls until ctx ends.
func (rs *results) run(ctx context.Context) {
	for ctx.Err() == nil {
		fs := rs.cl.PollFetches(ctx)
		rs.mu.Lock()
		fs.EachRecord(rs.observe)
		rs.mu.Unlock()
	}
}

// caughtUp reports whether every partition was read up to end (exclusive).
func (rs *results) caughtUp(ends map[int32]int64) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return reached(rs.last, ends)
}

var (
	dupTrue  = []byte(`"duplicate":true`)
	dupFalse = []byte(`"duplicate":false`)
)

// observe checks one record (mu held).
func (rs *results) observe(r *kgo.Record) {
	rs.last[r.Partition] = r.Offset
	if r.Attrs.IsControl() {
		return
	}
	rs.n++
	var res schemas.Result
	if err := json.Unmarshal(r.Value, &res); err != nil {
		rs.rep.violate(invOnce, "undecodable result at %d/%d: %v", r.Partition, r.Offset, err)
		return
	}
	if !res.Duplicate {
		rs.times[r.Partition] = append(rs.times[r.Partition], int64(res.DecidedAt))
		owner := topics.Partition([]byte(res.SKU), partitions)
		if res.Partition != r.Partition || (res.Stock != nil && owner != r.Partition) {
			rs.rep.violate(invForward, "%s %s of %s decided by partition %d, written to %d, its owner is %d",
				res.Type, res.CommandID, res.SKU, res.Partition, r.Partition, owner)
		}
	}
	if res.CommandID == "" && (res.Type == schemas.TypeExpired || res.Type == schemas.TypeLowStock) {
		rs.notices[res.Type]++
		if res.Type == schemas.TypeExpired && res.Offset == -1 && res.Reservation != nil {
			rs.lags = append(rs.lags, int64(res.DecidedAt-res.Reservation.ExpiresAt))
			rs.lagAt = append(rs.lagAt, int64(res.Reservation.ExpiresAt))
		}
		rs.walk(&res, sentCmd{})
		return
	}
	cmd, known := rs.led.cmd(res.CommandID)
	if !known && isLineID(res.CommandID) { // a step of a cart saga
		rs.lines[res.CommandID] = true
		cmd, known = sentCmd{typ: res.Type}, true
	}
	if !known { // the result of a dead-lettered record (no usable or an invalid command_id)
		rs.dead[pos{res.Partition, res.Offset}]++
		return
	}
	st := rs.byID[res.CommandID]
	if st == nil {
		st = &idResults{}
		rs.byID[res.CommandID] = st
	}
	h := hash(bytes.Replace(r.Value, dupTrue, dupFalse, 1))
	if res.Duplicate {
		st.dups++
		switch {
		case st.decisive == 0:
			rs.rep.violate(invOnce, "command %s: duplicate result at %d/%d before any decision", res.CommandID, r.Partition, r.Offset)
		case h != st.hash:
			st.badDups++
			rs.rep.violate(invOnce, "command %s: duplicate at %d/%d does not repeat the decision: %s", res.CommandID, r.Partition, r.Offset, r.Value)
		}
		return
	}
	st.decisive++
	if st.decisive > 1 {
		rs.rep.violate(invOnce, "command %s decided %d times (again at %d/%d): %s", res.CommandID, st.decisive, r.Partition, r.Offset, r.Value)
		return
	}
	st.hash, st.outcome, st.reason = h, res.Outcome, res.Reason
	rs.walk(&res, cmd)
}

// walk checks the stock a decision or notice reports against the previous
// one of its SKU (mu held): the difference must be what the decision does,
// and available may only drop below 0 through stock.set or stock.adjust.
func (rs *results) walk(res *schemas.Result, cmd sentCmd) {
	rkey := res.SKU + "/" + res.ReservationID
	if res.Reservation != nil {
		rkey = res.Reservation.SKU + "/" + res.Reservation.ReservationID
	}
	accepted := res.Outcome == schemas.OutcomeAccepted
	if accepted && res.Reservation != nil {
		switch res.Type {
		case schemas.TypeExpired, schemas.TypeRelease, schemas.TypeCommit:
			if how, ok := rs.ended[rkey]; ok {
				rs.rep.violate(invEnded, "reservation %s ended twice: %s, then %s (%s at %d/%d)",
					rkey, how, res.Type, res.CommandID, res.Partition, res.Offset)
			} else {
				rs.ended[rkey] = res.Type
			}
		}
	}
	if accepted && res.Reservation != nil {
		defer func() {
			if res.Reservation.Status == schemas.StatusActive {
				rs.active[rkey] = res.Reservation.ExpiresAt
			} else {
				delete(rs.active, rkey)
			}
			rs.qty[rkey] = res.Reservation.Quantity
		}()
	}
	if res.Stock == nil {
		return
	}
	s := *res.Stock
	prev, seen := rs.views[res.SKU]
	rs.views[res.SKU] = s
	at := fmt.Sprintf("%s %s %s at %d/%d", res.Type, res.CommandID, res.SKU, res.Partition, res.Offset)
	if s.Available != s.OnHand-s.Reserved || s.OnHand < 0 {
		rs.rep.violate(invContinuity, "%s: inconsistent stock %+v", at, s)
	}
	stockCmd := res.Type == schemas.TypeStockSet || res.Type == schemas.TypeStockAdjust
	if s.Available < 0 && !stockCmd && (!seen || s.Available < prev.Available) {
		rs.rep.violate(invOversell, "%s: available %d (was %d) after a %s", at, s.Available, prev.Available, res.Type)
	}
	if res.Type == schemas.TypeReserve && accepted && prev.Available <= 0 {
		rs.rep.violate(invOversell, "%s: reserve accepted at available %d", at, prev.Available)
	}
	want := prev
	q := int64(0)
	if res.Reservation != nil {
		q = res.Reservation.Quantity
	}
	switch {
	case res.Type == schemas.TypeUnprepare && accepted && res.Reservation != nil && res.Reservation.Status == schemas.StatusExpired:
		// A hold past its expires_at expires in its unprepare's decision; the
		// result shows the final stock (the hold's quantity given back), and
		// the expired notice that follows repeats it (processor/core.go,
		// unprepare).
		want.Reserved -= q
		rs.expiredWith[rkey] = res.Offset
	case res.Type == schemas.TypeExpired:
		if off, ok := rs.expiredWith[rkey]; ok && off == res.Offset {
			delete(rs.expiredWith, rkey) // given back by the unprepare's result
			break
		}
		want.Reserved -= q
	case !accepted, res.Type == schemas.TypeLowStock, res.Type == schemas.TypeExtend:
	case res.Type == schemas.TypeReserve:
		want.Reserved += q
	case res.Type == schemas.TypeAdjust:
		want.Reserved += q - rs.qty[rkey]
	case res.Type == schemas.TypeRelease:
		want.Reserved -= q
	case res.Type == schemas.TypeCommit:
		want.Reserved -= q
		want.OnHand = max(0, want.OnHand-q)
	case res.Type == schemas.TypeStockSet:
		want.OnHand = cmd.value
	case res.Type == schemas.TypeStockAdjust:
		want.OnHand += cmd.value
	}
	if (res.Type == schemas.TypeRelease || res.Type == schemas.TypeCommit || res.Type == schemas.TypeExpired) && q != rs.qty[rkey] {
		rs.rep.violate(invContinuity, "%s: reservation %s has quantity %d, its last decision said %d", at, rkey, q, rs.qty[rkey])
	}
	want.Available = want.OnHand - want.Reserved
	if want != s {
		rs.rep.violate(invContinuity, "%s (%s): stock %+v, want %+v from the previous %+v", at, res.Outcome, s, want, prev)
	}
}

// undecided returns how many sent commands have no decision yet, or fewer
// results than acknowledged sends.
func (rs *results) undecided() int {
	n, _ := rs.undecidedIDs(0)
	return n
}

// undecidedIDs also returns up to max of those command ids, with their types.
func (rs *results) undecidedIDs(max int) (int, []string) {
	type sent struct {
		id, typ string
		acked   int
	}
	rs.led.mu.Lock() // not while holding rs.mu: observe locks mu, then the ledger
	all := make([]sent, 0, len(rs.led.cmds))
	for id, c := range rs.led.cmds {
		if c.acked > 0 {
			all = append(all, sent{id, c.typ, c.acked})
		}
	}
	rs.led.mu.Unlock()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	n := 0
	var ids []string
	for _, c := range all {
		st := rs.byID[c.id]
		if st == nil || st.decisive == 0 || st.decisive+st.dups < c.acked {
			n++
			if len(ids) < max {
				ids = append(ids, c.id+" ("+c.typ+")")
			}
		}
	}
	return n, ids
}

// dueHolds counts the active reservations (as the results report them) that
// expire before t.
func (rs *results) dueHolds(t time.Time) int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	n := 0
	for _, exp := range rs.active {
		if exp.Time().Before(t) {
			n++
		}
	}
	return n
}

func (rs *results) count() int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.n
}

// recovery returns, for a kill at `at` of an instance that owned parts, the
// time until every one of those partitions decided again (false when one
// never did or parts is empty).
func (rs *results) recovery(at time.Time, parts []int32) (time.Duration, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	ms := at.UnixMilli()
	var worst int64
	for _, p := range parts {
		ts := rs.times[p]
		i := sort.Search(len(ts), func(i int) bool { return ts[i] > ms })
		if i == len(ts) {
			return 0, false
		}
		worst = max(worst, ts[i]-ms)
	}
	return time.Duration(worst) * time.Millisecond, len(parts) > 0
}
