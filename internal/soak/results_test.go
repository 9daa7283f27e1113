package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
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
}

func newResults(cl *kgo.Client, led *ledger, rep *report) *results {
	return &results{cl: cl, led: led, rep: rep, byID: map[string]*idResults{}, dead: map[pos]int{},
		times: map[int32][]int64{}, last: map[int32]int64{}, views: map[string]schemas.StockView{},
		qty: map[string]int64{}, active: map[string]schemas.Millis{}, notices: map[string]int{}}
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
		}
		rs.walk(&res, sentCmd{})
		return
	}
	cmd, known := rs.led.cmd(res.CommandID)
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
	case res.Type == schemas.TypeExpired:
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
	type sent struct {
		id    string
		acked int
	}
	rs.led.mu.Lock() // not while holding rs.mu: observe locks mu, then the ledger
	all := make([]sent, 0, len(rs.led.cmds))
	for id, c := range rs.led.cmds {
		if c.acked > 0 {
			all = append(all, sent{id, c.acked})
		}
	}
	rs.led.mu.Unlock()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	n := 0
	for _, c := range all {
		st := rs.byID[c.id]
		if st == nil || st.decisive == 0 || st.decisive+st.dups < c.acked {
			n++
		}
	}
	return n
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
