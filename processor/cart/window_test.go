package cart

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/schemas"
)

// A cart command retried within the dedupe window is a duplicate however late
// it is processed: the window is measured at the retry's record timestamp.
func TestCartDedupeWindowMeasuredAtProduction(t *testing.T) {
	window := time.Hour
	core := &Core{Rules: Rules{DedupeWindow: window}}
	late := t0 + schemas.Millis((2 * window).Milliseconds())
	for _, tc := range []struct {
		name      string
		produced  schemas.Millis
		duplicate bool
	}{
		{"produced within the window", t0 + 5_000, true},
		{"produced after the window", t0 + schemas.Millis(window.Milliseconds()) + 1, false},
		{"no timestamp: the processing clock", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := Entities{}
			o := core.Apply(st, cartCmd("k1", schemas.TypeCartCommit, "cart-1"), t0)
			require.Len(t, o.Results, 1)
			require.Equal(t, schemas.ReasonCartEmpty, o.Results[0].Reason)
			st.Apply(o.Changes)

			retry := cartCmd("k1", schemas.TypeCartCommit, "cart-1")
			retry.Produced = tc.produced
			again := core.Apply(st, retry, late)
			require.Len(t, again.Results, 1)
			assert.Equal(t, tc.duplicate, again.Results[0].Duplicate)
			if tc.duplicate {
				assert.Equal(t, o.Results[0].DecidedAt, again.Results[0].DecidedAt)
				assert.Empty(t, again.Changes)
			}
		})
	}
}
