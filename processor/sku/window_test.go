package sku

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/schemas"
)

// The dedupe window is measured at the retry's record timestamp (when known
// and not ahead of the clock), so a retry produced within the window is a
// duplicate however late it is processed.
func TestDedupeWindowMeasuredAtProduction(t *testing.T) {
	window := time.Hour
	c := &Core{Rules: Rules{DedupeWindow: window, MaxExtensions: 1}}
	late := t0 + schemas.Millis((2 * window).Milliseconds()) // processed two windows after the decision
	for _, tc := range []struct {
		name      string
		produced  schemas.Millis
		now       schemas.Millis
		duplicate bool
	}{
		{"retry within the window, processed at once", t0 + 5_000, t0 + 5_000, true},
		{"retry within the window, processed after a long backlog", t0 + 5_000, late, true},
		{"retry produced after the window", t0 + schemas.Millis(window.Milliseconds()) + 1, late, false},
		{"no timestamp: the processing clock", 0, late, false},
		{"timestamp ahead of the clock: the processing clock", late + 1_000, late, false},
		{"timestamp ahead of the clock, within the window", t0 + 10_000, t0 + 5_000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := make(Entities)
			apply(t, c, st, t0, schemas.Command{CommandID: "s", Type: schemas.TypeStockSet, SKU: "A", OnHand: i64(5)})
			first := apply(t, c, st, t0, schemas.Command{CommandID: "r", Type: schemas.TypeReserve, SKU: "A", ReservationID: "h", Quantity: i64(1), TTLSeconds: i64(int64(3 * window / time.Second))})
			require.Equal(t, schemas.OutcomeAccepted, first.Results[0].Outcome)

			retry := schemas.Command{CommandID: "r", Type: schemas.TypeReserve, SKU: "A", ReservationID: "h", Quantity: i64(1)}
			o := c.Apply(st, Input{Key: "A", Command: retry, Produced: tc.produced}, tc.now)
			require.NotEmpty(t, o.Results)
			got := o.Results[len(o.Results)-1]
			assert.Equal(t, tc.duplicate, got.Duplicate)
			if tc.duplicate {
				assert.Equal(t, first.Results[0].DecidedAt, got.DecidedAt, "the stored decision, repeated")
				assert.Empty(t, o.Changes, "a duplicate changes nothing")
			}
		})
	}
}
