package processor

import (
	"bytes"
	"log/slog"
	"testing"

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
	var logged bytes.Buffer
	w.log = slog.New(slog.NewTextHandler(&logged, nil))
	var failed error
	w.env.fail = func(err error) { failed = err }
	w.handleJob(job{kind: jobCommit})
	require.ErrorIs(t, failed, errUnsealed)
	require.ErrorContains(t, failed, "partition 0: commit: changes were never sealed into the changelog: 1 changed keys (first: stock/A)")
	assert.Equal(t, failed, w.broken, "the partition decides nothing more")
	assert.Contains(t, logged.String(), "without their changelog records (a bug)", "its own message, not the store-write one")
	assert.NotContains(t, logged.String(), "write committed state")
	_, cached := w.cache.get(schemas.StockKey("A"))
	assert.False(t, cached)
}
