package processor_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/schemas"
)

// A retry produced within the dedupe window but processed long after it (the
// processors were down for two windows, then worked through a backlog) is
// still a duplicate: the core measures the window at the retry's record
// timestamp, and the sweep keeps decisions while a backlog may hold retries
// (stream time). Before, the retry was decided a second time (here: rejected
// as reservation_exists, a second decisive result for one command id).
func TestRetryAfterOutageIsStillADuplicate(t *testing.T) {
	h := newHarness(t, 2)
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	cfg := func(c *processor.Config) {
		c.Rules = sku.Rules{DedupeWindow: time.Hour, MaxExtensions: 1}
		c.SweepInterval = 20 * time.Millisecond
		c.MaxBatch = 20 // many transactions, so sweeps run between them while the backlog lasts
	}
	a := h.startWith(processor.WithClock(clock), cfg)
	h.waitReady(a)
	day := int64(86400)
	first := reserve("r", "W-1", "h1", 1)
	first.TTLSeconds = &day
	h.send(stockSet("s", "W-1", 1000), first)
	h.waitDecided(20*time.Second, "s", "r")
	a.stop(t)

	// The backlog, produced now (within the window of r's decision): fillers on
	// the same SKU and partition, the retry of r, more fillers.
	var ids []string
	var backlog []schemas.Command
	for i := range 200 {
		if i == 100 {
			backlog = append(backlog, first)
		}
		id := fmt.Sprintf("f%d", i)
		ids = append(ids, id)
		backlog = append(backlog, schemas.Command{CommandID: id, Type: schemas.TypeStockAdjust, SKU: "W-1", Delta: i64(1)})
	}
	h.send(backlog...)

	// The processors come back two windows later.
	skew.Store(int64(2 * time.Hour))
	b := h.startOpts(a.dir, []processor.Option{processor.WithClock(clock)}, cfg)
	h.waitReady(b)
	h.waitDecided(60*time.Second, ids...)
	h.read(20*time.Second, func() bool { return len(h.byCmd["r"]) == 2 })
	require.Len(t, h.byCmd["r"], 2)
	retry := h.byCmd["r"][1]
	assert.True(t, retry.Duplicate, "the retry was decided again: %+v", retry)
	assert.Equal(t, h.byCmd["r"][0].DecidedAt, retry.DecidedAt, "a duplicate repeats the stored decision")
}
