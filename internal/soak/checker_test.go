package soak

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/twmb/franz-go/pkg/kgo"

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

	// The changelog: a released reservation active again, a stock version skipped.
	rep = newReport()
	w := newChangelogWalk(rep)
	for i, kv := range [][2]string{
		{"reservation/A/h1", `{"reservation":{"reservation_id":"h1","sku":"A","quantity":3,"status":"active"},"version":1}`},
		{"reservation/A/h1", `{"reservation":{"reservation_id":"h1","sku":"A","quantity":3,"status":"released"},"version":2}`},
		{"reservation/A/h1", `{"reservation":{"reservation_id":"h1","sku":"A","quantity":3,"status":"active"},"version":3}`},
		{"stock/A", `{"sku":"A","on_hand":10,"reserved":0,"available":10,"version":1}`},
		{"stock/A", `{"sku":"A","on_hand":10,"reserved":3,"available":7,"version":3}`},
	} {
		w.add(&kgo.Record{Key: []byte(kv[0]), Value: []byte(kv[1]), Offset: int64(i)})
	}
	assert.Equal(t, map[string]int{invTerminal: 1, invStock: 1}, found())
}
