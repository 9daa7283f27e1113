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
