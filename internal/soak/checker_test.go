package soak

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor/cart"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// The soak's checks can fail: planted breaches in a results stream and a
// changelog are each reported under their invariant.
func TestCheckerFindsViolations(t *testing.T) {
	led := newLedger()
	led.cmds["set"] = &sentCmd{typ: schemas.TypeStockSet, value: 10}
	for _, id := range []string{"r1", "r2", "rel"} {
		led.cmds[id] = &sentCmd{typ: schemas.TypeReserve}
	}
	rep := newReport()
	rs := newResults(nil, led, rep)
	p := topics.Partition([]byte("A"), partitions)
	off := int64(0)
	observe := func(r schemas.Result) {
		r.SKU, r.Partition, r.Offset = "A", p, off
		if r.Outcome == "" {
			r.Outcome = schemas.OutcomeAccepted
		}
		v, err := json.Marshal(r)
		assert.NoError(t, err)
		rs.observe(&kgo.Record{Partition: p, Offset: off, Value: v})
		off++
	}
	stock := func(onHand, reserved int64) *schemas.StockView {
		return &schemas.StockView{OnHand: onHand, Reserved: reserved, Available: onHand - reserved}
	}
	hold := func(id string, qty int64, status string) *schemas.Reservation {
		return &schemas.Reservation{ReservationID: id, SKU: "A", Quantity: qty, Status: status}
	}
	found := func() map[string]int {
		rep.mu.Lock()
		defer rep.mu.Unlock()
		out := map[string]int{}
		for k, v := range rep.found {
			out[k] = v
		}
		return out
	}

	observe(schemas.Result{CommandID: "set", Type: schemas.TypeStockSet, Stock: stock(10, 0)})
	observe(schemas.Result{CommandID: "r1", Type: schemas.TypeReserve, ReservationID: "h1", Stock: stock(10, 3), Reservation: hold("h1", 3, schemas.StatusActive)})
	assert.Empty(t, found(), "a consistent stream")

	// Oversell: a reserve accepted beyond available.
	observe(schemas.Result{CommandID: "r2", Type: schemas.TypeReserve, ReservationID: "h2", Stock: stock(10, 11), Reservation: hold("h2", 8, schemas.StatusActive)})
	assert.Equal(t, map[string]int{invOversell: 1}, found())
	// A release that does not give the stock back.
	observe(schemas.Result{CommandID: "rel", Type: schemas.TypeRelease, ReservationID: "h1", Stock: stock(10, 11), Reservation: hold("h1", 3, schemas.StatusReleased)})
	assert.Equal(t, 1, found()[invContinuity])
	// A command decided twice, and a duplicate that does not repeat its decision.
	observe(schemas.Result{CommandID: "r1", Type: schemas.TypeReserve, ReservationID: "h1", Stock: stock(10, 8), Reservation: hold("h1", 3, schemas.StatusActive)})
	observe(schemas.Result{CommandID: "set", Type: schemas.TypeStockSet, Duplicate: true, Stock: stock(11, 0)})
	assert.Equal(t, 2, found()[invOnce])

	// The changelog: a released reservation active again, a stock version
	// going back. A skipped version is no violation (a transaction writes an
	// entity once, with its last version).
	rep = newReport()
	w := newChangelogWalk(rep)
	for i, kv := range [][2]string{
		{"reservation/A/h1", `{"reservation":{"reservation_id":"h1","sku":"A","quantity":3,"status":"active"},"version":1}`},
		{"reservation/A/h1", `{"reservation":{"reservation_id":"h1","sku":"A","quantity":3,"status":"released"},"version":2}`},
		{"reservation/A/h1", `{"reservation":{"reservation_id":"h1","sku":"A","quantity":3,"status":"active"},"version":3}`},
		{"stock/A", `{"sku":"A","on_hand":10,"reserved":0,"available":10,"version":1}`},
		{"stock/A", `{"sku":"A","on_hand":10,"reserved":3,"available":7,"version":3}`},
		{"stock/A", `{"sku":"A","on_hand":10,"reserved":2,"available":8,"version":2}`},
	} {
		w.add(&kgo.Record{Key: []byte(kv[0]), Value: []byte(kv[1]), Offset: int64(i)})
	}
	assert.Equal(t, map[string]int{invTerminal: 1, invStock: 1}, found())
}

// foundIn returns a snapshot of the violations found per invariant.
func foundIn(rep *report) map[string]int {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	out := map[string]int{}
	for k, v := range rep.found {
		out[k] = v
	}
	return out
}

// The ownership check reads runs from slog text logs and fails on overlapping
// runs of one partition, on a killed process's run that the next owner
// started before the kill, and on a partition that never ran.
func TestOwnershipCheckFindsOverlaps(t *testing.T) {
	dir := t.TempDir()
	at := func(s int) string { return time.Date(2026, 1, 1, 0, 0, s, 0, time.UTC).Format(time.RFC3339Nano) }
	line := func(s int, msg string, kv ...string) string {
		l := fmt.Sprintf("time=%s level=INFO msg=%q instance=p1", at(s), msg)
		for i := 0; i < len(kv); i += 2 {
			l += " " + kv[i] + "=" + kv[i+1]
		}
		return l + "\n"
	}
	// p1 runs partition 0 from 10 s, stops with last commit 19 s; p2 runs it from
	// 20 s (a handover) and is killed at 30 s; p1 runs it again from 31 s.
	// Partition 1 (cart role) runs on p1 from 10 s and is killed at 25 s.
	p1 := line(10, "partition running", "partition", "0", "instance", "p1", "generation", "1", "role", "sku") +
		line(10, "partition running", "component", cartComponent, "partition", "1", "instance", "p1", "generation", "1", "role", "cart") +
		line(19, "partition stopped", "partition", "0", "instance", "p1", "generation", "1", "role", "sku", "last_commit", at(19))
	p1b := line(31, "partition running", "partition", "0", "instance", "p1", "generation", "3", "role", "sku") +
		line(40, "partition stopped", "partition", "0", "instance", "p1", "generation", "3", "role", "sku", "last_commit", at(39))
	p2 := line(20, "partition running", "partition", "0", "instance", "p2", "generation", "2", "role", "sku") +
		line(26, "partition running", "component", cartComponent, "partition", "1", "instance", "p2", "generation", "2", "role", "cart")
	write := func(name, s string) string {
		f := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(f, []byte(s), 0o644))
		return f
	}
	l1, l2 := write("p1.log", p1+p1b), write("p2.log", p2)
	incs := func(killedP1, killedP2 time.Time) []incarnation {
		return []incarnation{
			{inst: "p1", log: l1, from: 0, to: int64(len(p1)), killedAt: killedP1},
			{inst: "p1", log: l1, from: int64(len(p1)), to: -1},
			{inst: "p2", log: l2, from: 0, to: -1, killedAt: killedP2},
		}
	}
	check := func(incs []incarnation, roles []string) map[string]int {
		rep := newReport()
		var runs []run
		for _, inc := range incs {
			runs = append(runs, runsOf(inc, inc.lines())...)
		}
		require.Len(t, runs, 5)
		checkOwnership(rep, runs, roles)
		return foundIn(rep)
	}
	killedAt := func(s int) time.Time { return time.Date(2026, 1, 1, 0, 0, s, 0, time.UTC) }

	// The sku role is consistent (the killed p2's run ends at the kill, 30 s);
	// the cart role's partition 1 ran on p1 until its kill at 25 s, p2 from 26 s.
	got := check(incs(killedAt(25), killedAt(30)), []string{"sku"})
	assert.Equal(t, map[string]int{invOwnership: partitions - 1}, got, "sku partitions 1.. never ran")

	// p2 killed only at 32 s: its run overlaps p1's from 31 s.
	got = check(incs(killedAt(25), killedAt(32)), nil)
	assert.Equal(t, map[string]int{invOwnership: 1}, got)
	// p1's first process killed at 27 s: its cart run overlaps p2's from 26 s.
	got = check(incs(killedAt(27), killedAt(30)), nil)
	assert.Equal(t, map[string]int{invOwnership: 1}, got)
	// Not killed: p1's open cart run ends at its last line (19 s), before p2's start.
	got = check(incs(time.Time{}, killedAt(30)), nil)
	assert.Equal(t, map[string]int{}, got, "a run without a stop ends at its process's last line")

	// A stopped run's end is its last commit: a last commit after the next start overlaps.
	late := strings.Replace(p1, "last_commit="+at(19), "last_commit="+at(21), 1)
	l1 = write("p1.log", late+p1b)
	got = check(incs(killedAt(25), killedAt(30)), nil)
	assert.Equal(t, map[string]int{invOwnership: 1}, got)
}

// A process started on a stale folder must rebuild every old store in full:
// a tail replay from an offset > 0 is a violation.
func TestStaleRestoreCheckFindsTailReplay(t *testing.T) {
	parse := func(s string) logLine {
		l, ok := parseLogLine(s)
		require.True(t, ok, s)
		return l
	}
	lines := []logLine{
		parse(`time=2026-01-01T00:00:01.000Z level=WARN msg="wiping state and restoring in full" instance=p3 partition=4 reason="the store was last owned 25s ago, more than 50% of the changelog's delete.retention.ms (15s): tombstones written since may have been compacted away" from=0 to=900`),
		parse(`time=2026-01-01T00:00:01.000Z level=WARN msg="wiping state and restoring in full" instance=p3 component=cart-coordinator partition=4 reason="the store (offset 3) is behind the changelog start 7" from=7 to=90`),
		parse(`time=2026-01-01T00:00:01.000Z level=INFO msg="restoring changelog tail" instance=p3 partition=5 from=0 to=800`),
		parse(`time=2026-01-01T00:00:01.000Z level=WARN msg="wiping state and restoring in full" instance=p3 partition=7 reason="the store (offset 0) is behind the changelog start 242" from=242 to=900`),
		parse(`time=2026-01-01T00:00:02.000Z level=INFO msg="restoring changelog tail" instance=p3 partition=4 from=880 to=900`), // a second restore: not checked
	}
	rep := newReport()
	f := checkStaleRestores(rep, "p3", lines)
	assert.Equal(t, staleFigures{byOwnedAt: 1, byLogStart: 1, fresh: 2}, f)
	assert.Empty(t, foundIn(rep))

	lines = append(lines, parse(`time=2026-01-01T00:00:03.000Z level=INFO msg="restoring changelog tail" instance=p3 partition=6 from=512 to=800`))
	f = checkStaleRestores(rep, "p3", lines)
	assert.Equal(t, 1, f.tail)
	assert.Equal(t, map[string]int{invStale: 1}, foundIn(rep))
}

// Tombstones: only of a live command or ended reservation past the dedupe
// window; a second tombstone of an entity (a store kept what the changelog
// deleted) is a violation.
func TestChangelogWalkChecksTombstones(t *testing.T) {
	rep := newReport()
	w := newChangelogWalk(rep)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(d time.Duration) string { return string(schemas.MillisOf(t0.Add(d)).String()) }
	off := int64(0)
	add := func(key, value string, at time.Duration) {
		var v []byte
		if value != "" {
			v = []byte(value)
		}
		w.add(&kgo.Record{Key: []byte(key), Value: v, Offset: off, Timestamp: t0.Add(at)})
		off++
	}
	add("command/c1", `{"command_id":"c1","result":{"command_id":"c1"},"version":1,"event":"decided","updated_at":"`+ms(0)+`"}`, 0)
	add("reservation/A/h1", `{"reservation":{"reservation_id":"h1","sku":"A","quantity":3,"status":"active"},"version":1,"updated_at":"`+ms(0)+`"}`, 0)
	add("reservation/A/h1", `{"reservation":{"reservation_id":"h1","sku":"A","quantity":3,"status":"released"},"version":2,"updated_at":"`+ms(time.Second)+`"}`, time.Second)
	add("command/c1", "", dedupeWindow+time.Second)
	add("reservation/A/h1", "", dedupeWindow+2*time.Second)
	assert.Empty(t, foundIn(rep), "tombstones past the window")
	assert.Equal(t, 2, w.tombstones)

	add("command/c1", "", dedupeWindow+3*time.Second)       // again: revived by a stale store
	add("reservation/A/h1", "", dedupeWindow+3*time.Second) // again
	assert.Equal(t, map[string]int{invRetomb: 2}, foundIn(rep))
	assert.Equal(t, 2, rep.total(), "a second tombstone fails the run")

	rep = newReport()
	w = newChangelogWalk(rep)
	add("command/c2", `{"command_id":"c2","result":{"command_id":"c2"},"version":1,"event":"decided","updated_at":"`+ms(0)+`"}`, 0)
	add("reservation/A/h2", `{"reservation":{"reservation_id":"h2","sku":"A","quantity":1,"status":"active"},"version":1,"updated_at":"`+ms(0)+`"}`, 0)
	add("stock/A", `{"sku":"A","on_hand":10,"reserved":1,"available":9,"version":1}`, 0)
	add("command/c2", "", 30*time.Second)                 // within the window
	add("reservation/A/h2", "", dedupeWindow+time.Minute) // active
	add("stock/A", "", dedupeWindow)                      // stock is never deleted
	assert.Equal(t, map[string]int{invTombstone: 3}, foundIn(rep))
}

// A hold that ends twice (expired twice, or released after it expired) is a
// violation.
func TestResultsFindHoldEndedTwice(t *testing.T) {
	led := newLedger()
	led.cmds["set"] = &sentCmd{typ: schemas.TypeStockSet, value: 10}
	led.cmds["r1"] = &sentCmd{typ: schemas.TypeReserve}
	rep := newReport()
	rs := newResults(nil, led, rep)
	p := topics.Partition([]byte("A"), partitions)
	off := int64(0)
	observe := func(r schemas.Result) {
		r.SKU, r.Partition, r.Offset, r.Outcome = "A", p, off, schemas.OutcomeAccepted
		v, err := json.Marshal(r)
		require.NoError(t, err)
		rs.observe(&kgo.Record{Partition: p, Offset: off, Value: v})
		off++
	}
	stock := func(reserved int64) *schemas.StockView {
		return &schemas.StockView{OnHand: 10, Reserved: reserved, Available: 10 - reserved}
	}
	hold := func(status string) *schemas.Reservation {
		return &schemas.Reservation{ReservationID: "h1", SKU: "A", Quantity: 3, Status: status}
	}
	observe(schemas.Result{CommandID: "set", Type: schemas.TypeStockSet, Stock: stock(0)})
	observe(schemas.Result{CommandID: "r1", Type: schemas.TypeReserve, ReservationID: "h1", Stock: stock(3), Reservation: hold(schemas.StatusActive)})
	observe(schemas.Result{Type: schemas.TypeExpired, ReservationID: "h1", Stock: stock(0), Reservation: hold(schemas.StatusExpired)})
	assert.Empty(t, foundIn(rep))
	observe(schemas.Result{Type: schemas.TypeExpired, ReservationID: "h1", Stock: stock(0), Reservation: hold(schemas.StatusExpired)})
	assert.Equal(t, 1, foundIn(rep)[invEnded])
}

// The cart check: one result per cart command, all or nothing, no saga left.
func TestCartCheckFindsViolations(t *testing.T) {
	q := func(n int64) *int64 { return &n }
	reserve := schemas.CartCommand{CommandID: "k1", Type: schemas.TypeCartReserve, CartID: "sc-1",
		Items: []schemas.CartItem{{SKU: "A", Quantity: q(1)}, {SKU: "B", Quantity: q(2)}}}
	rejected := schemas.CartCommand{CommandID: "k2", Type: schemas.TypeCartReserve, CartID: "sc-2",
		Items: []schemas.CartItem{{SKU: "A", Quantity: q(1)}, {SKU: "C", Quantity: q(9)}}}
	commit := schemas.CartCommand{CommandID: "kc1", Type: schemas.TypeCartCommit, CartID: "sc-1", OrderID: "o1"}
	led := newCartLedger()
	for _, c := range []schemas.CartCommand{reserve, rejected, commit} {
		led.cmds[c.CommandID] = &sentCart{cmd: c, attempts: 1, acked: 1}
	}
	line := func(sku, rid string, qty int64, outcome, status string) schemas.CartLine {
		return schemas.CartLine{SKU: sku, ReservationID: rid, Quantity: qty, Outcome: outcome, Status: status}
	}
	results := func(extra ...schemas.CartResult) *cartResults {
		cr := newCartResults(nil, newReport())
		for _, r := range append([]schemas.CartResult{
			{CommandID: "k1", Type: schemas.TypeCartReserve, CartID: "sc-1", Outcome: schemas.OutcomeAccepted,
				Lines: []schemas.CartLine{line("A", "k1", 1, "accepted", "active"), line("B", "k1", 2, "accepted", "active")}},
			{CommandID: "k2", Type: schemas.TypeCartReserve, CartID: "sc-2", Outcome: schemas.OutcomeRejected, Reason: "insufficient_stock",
				Lines: []schemas.CartLine{line("A", "k2", 1, "accepted", "released"), line("C", "k2", 9, "rejected", "")}},
			{CommandID: "kc1", Type: schemas.TypeCartCommit, CartID: "sc-1", OrderID: "o1", Outcome: schemas.OutcomeAccepted,
				Lines: []schemas.CartLine{line("A", "k1", 1, "accepted", "consumed"), line("B", "k1", 2, "accepted", "consumed")}},
		}, extra...) {
			cr.byID[r.CommandID] = append(cr.byID[r.CommandID], r)
		}
		return cr
	}
	walk := func() *changelogWalk {
		w := newChangelogWalk(newReport())
		for _, k := range []string{schemas.ReservationKey("A", "k1"), schemas.ReservationKey("B", "k1")} {
			w.status[k], w.orders[k] = schemas.StatusConsumed, "o1"
		}
		w.status[schemas.ReservationKey("A", "k2")] = schemas.StatusReleased
		return w
	}
	check := func(cr *cartResults, w *changelogWalk, carts map[string]*cart.Entity) map[string]int {
		rep := newReport()
		checkCarts(rep, led, cr, 0, w, carts)
		return foundIn(rep)
	}
	assert.Empty(t, check(results(), walk(), nil), "a consistent history")

	w := walk()
	w.status[schemas.ReservationKey("A", "k2")] = schemas.StatusActive // the compensation never released it
	assert.Equal(t, map[string]int{invCarts: 1}, check(results(), w, nil))
	w = walk()
	w.status[schemas.ReservationKey("B", "k1")] = schemas.StatusActive // commit accepted, one line not consumed
	assert.Equal(t, map[string]int{invCarts: 1}, check(results(), w, nil))
	// Decided twice.
	assert.Equal(t, map[string]int{invCarts: 1}, check(results(schemas.CartResult{CommandID: "k2", Type: schemas.TypeCartReserve,
		CartID: "sc-2", Outcome: schemas.OutcomeRejected, Reason: "insufficient_stock"}), walk(), nil))
	// A saga left in flight.
	assert.Equal(t, map[string]int{invCarts: 1}, check(results(), walk(),
		map[string]*cart.Entity{"cart/sc-3": {CartID: "sc-3", Saga: &cart.Saga{Phase: cart.PhasePrepare}}}))
	// An accepted reserve missing a line.
	cr := results()
	cr.byID["k1"][0].Lines = cr.byID["k1"][0].Lines[:1]
	assert.Equal(t, map[string]int{invCarts: 1}, check(cr, walk(), nil))
}

// A frozen member the group never expelled is a violation.
func TestFreezeNotExpelledIsAViolation(t *testing.T) {
	rep := newReport()
	rs := newResults(nil, newLedger(), rep)
	at := time.Now()
	rs.times[0] = []int64{at.Add(5 * time.Second).UnixMilli()}
	p := &pipeline{rep: rep, rs: rs}
	_, recov := p.freezes(&chaos{freezes: []*freeze{{inst: "p1", parts: []int32{0}, at: at, expelled: 4 * time.Second, thawed: at.Add(5 * time.Second)}}})
	assert.Empty(t, foundIn(rep))
	assert.Len(t, recov, 1)
	p.freezes(&chaos{freezes: []*freeze{{inst: "p1", parts: []int32{0}, at: at, thawed: at.Add(12 * time.Second)}}})
	assert.Equal(t, map[string]int{invLiveness: 1}, foundIn(rep))
}

// An unprepare of a hold whose expires_at passed while it was prepared expires
// it in the same decision: its result shows the stock with the hold given back,
// and the expired notice that follows repeats that stock. Any other figure is
// a continuity violation.
func TestResultsWalkUnprepareThatExpires(t *testing.T) {
	for _, tc := range []struct {
		name           string
		unprepared     int64 // reserved in the unprepare's result
		notice         int64 // reserved in the expired notice
		wantViolations int
	}{
		{"as the processor writes it", 0, 0, 0},
		{"the unprepare gives nothing back", 3, 0, 2},
		{"the notice gives it back again", 0, -3, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			led := newLedger()
			led.cmds["set"] = &sentCmd{typ: schemas.TypeStockSet, value: 10}
			rep := newReport()
			rs := newResults(nil, led, rep)
			p := topics.Partition([]byte("A"), partitions)
			off := int64(0)
			observe := func(r schemas.Result, sameOffset bool) {
				if !sameOffset {
					off++
				}
				r.SKU, r.Partition, r.Offset, r.Outcome = "A", p, off, schemas.OutcomeAccepted
				v, err := json.Marshal(r)
				require.NoError(t, err)
				rs.observe(&kgo.Record{Partition: p, Offset: off, Value: v})
			}
			stock := func(reserved int64) *schemas.StockView {
				return &schemas.StockView{OnHand: 10, Reserved: reserved, Available: 10 - reserved}
			}
			hold := func(status string, prepared bool) *schemas.Reservation {
				return &schemas.Reservation{ReservationID: "k1", SKU: "A", Quantity: 3, Status: status, Prepared: prepared}
			}
			line := func(phase string) string { return cart.LineCommandID("sc-1", "k1", phase, "A", "k1") }
			observe(schemas.Result{CommandID: "set", Type: schemas.TypeStockSet, Stock: stock(0)}, false)
			observe(schemas.Result{CommandID: line("reserve"), Type: schemas.TypeReserve, ReservationID: "k1", Stock: stock(3), Reservation: hold("active", false)}, false)
			observe(schemas.Result{CommandID: line("prepare"), Type: schemas.TypePrepare, ReservationID: "k1", Stock: stock(3), Reservation: hold("active", true)}, false)
			observe(schemas.Result{CommandID: line("unprepare"), Type: schemas.TypeUnprepare, ReservationID: "k1", Stock: stock(tc.unprepared), Reservation: hold("expired", false)}, false)
			observe(schemas.Result{Type: schemas.TypeExpired, ReservationID: "k1", Stock: stock(tc.notice), Reservation: hold("expired", false)}, true)
			assert.Equal(t, tc.wantViolations, foundIn(rep)[invContinuity], "%v", rep.examples)
			assert.Len(t, rs.lines, 3, "line commands recognised")
		})
	}
}
