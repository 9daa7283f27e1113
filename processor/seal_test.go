package processor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/schemas"
)

// TestCommitRefusesUnsealedChanges: a change that reached no changelog record
// never reaches the cache or the store either; the commit fails the partition.
func TestCommitRefusesUnsealedChanges(t *testing.T) {
	w, _ := storePartition(t, DefaultConfig())
	w.putChange(&Change{Change: sku.Change{Key: schemas.StockKey("A"), Stock: &schemas.StockEntity{SKU: "A", OnHand: 5}}})
	err := w.commit(time.Time{})
	require.ErrorContains(t, err, "1 changed keys were never sealed into the changelog (first: stock/A)")
	_, cached := w.cache[schemas.StockKey("A")]
	assert.False(t, cached)
}
