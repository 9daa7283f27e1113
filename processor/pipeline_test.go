package processor_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/schemas"
)

func TestPipelineSmoke(t *testing.T) {
	h := newHarness(t, 4)
	in := h.start("")
	h.waitReady(in)
	h.send(stockSet("s1", "SKU-1", 10), reserve("r1", "SKU-1", "res-1", 3), reserve("r2", "SKU-1", "res-2", 8))
	h.waitDecided(20*time.Second, "s1", "r1", "r2")
	r1 := h.decisive("r1")
	require.NotNil(t, r1)
	assert.Equal(t, schemas.OutcomeAccepted, r1.Outcome)
	assert.Equal(t, &schemas.StockView{OnHand: 10, Reserved: 3, Available: 7}, r1.Stock)
	r2 := h.decisive("r2")
	assert.Equal(t, schemas.OutcomeRejected, r2.Outcome)
	assert.Equal(t, schemas.ReasonInsufficientStock, r2.Reason)
}

// End to end on the broker: thousands of commands from several producers,
// duplicates, and a producer that ignores the murmur2 partitioner. Exactly one
// decisive result per command id, every decision equal to the reference model.
func TestEndToEndMatchesModel(t *testing.T) {
	h := newHarness(t, 6)
	in := h.start("")
	h.waitReady(in)
	w := genWorkload(1, 40, 3000)
	h.sendConcurrently(w.sets, 2, 0)
	h.waitDecided(30*time.Second, idsOf(w.sets)...)
	h.sendConcurrently(w.cmds, 4, 10)
	h.sendConcurrently(w.dupes, 2, 3)
	h.waitDecided(60*time.Second, w.ids()...)
	// Wait for the duplicates' repeats too.
	h.read(30*time.Second, func() bool { return h.duplicates() >= len(w.dupes) })
	h.checkAgainstModel(w)
}

func idsOf(cmds []schemas.Command) []string {
	out := make([]string, len(cmds))
	for i, c := range cmds {
		out[i] = c.CommandID
	}
	return out
}
