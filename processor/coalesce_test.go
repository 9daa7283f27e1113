package processor_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
)

// TestChangelogCoalescesPerTransaction: many reserves of one SKU decided in
// few transactions write the SKU's stock entity once per transaction (its
// last value), not once per command, while every command still gets its own
// result and every reservation its own entity. The final changelog state is
// exact. Without coalescing the stock key has one record per command.
func TestChangelogCoalescesPerTransaction(t *testing.T) {
	const n = 300
	h := newHarness(t, 1)
	in := h.start("", func(c *processor.Config) { c.CommitInterval = 500 * time.Millisecond })
	h.waitReady(in)
	h.send(stockSet("set", "HOT", 1_000_000))
	h.waitDecided(30*time.Second, "set")
	var cmds []schemas.Command
	var ids []string
	for i := range n {
		id := fmt.Sprintf("c%d", i)
		cmds = append(cmds, reserve(id, "HOT", fmt.Sprintf("r%d", i), 1))
		ids = append(ids, id)
	}
	h.send(cmds...)
	h.waitDecided(60*time.Second, ids...)
	in.stop(t)

	recs := h.changelogRecords()
	stockKey := schemas.StockKey("HOT")
	var versions []int64
	perKey := map[string]int{}
	var last schemas.StockEntity
	for _, r := range recs {
		perKey[string(r.Key)]++
		if string(r.Key) != stockKey {
			continue
		}
		c, err := processor.DecodeChange(string(r.Key), r.Value)
		require.NoError(t, err)
		versions = append(versions, c.Stock.Version)
		last = *c.Stock
	}
	t.Logf("%d commands, %d stock records", n, len(versions))
	assert.Less(t, len(versions), n/2, "the stock entity is written per transaction, not per command")
	for i := 1; i < len(versions); i++ {
		assert.Greater(t, versions[i], versions[i-1], "versions increase")
	}
	assert.EqualValues(t, n, last.Reserved, "the last record holds the last state")
	assert.EqualValues(t, 1+n, last.Version, "version counts every change")
	for i := range n {
		assert.Equal(t, 1, perKey[schemas.ReservationKey("HOT", fmt.Sprintf("r%d", i))], "one record per new reservation")
	}
	decided := 0
	for _, id := range ids {
		if h.decisive(id) != nil {
			decided++
		}
	}
	assert.Equal(t, n, decided, "one result per command")
	assert.Positive(t, in.counter("reservations_changelog_coalesced_total"))
	state := h.changelogState()
	assert.EqualValues(t, n, state[stockKey].Stock.Reserved)
	assertInvariants(t, state)
}

// changelogRecords returns every committed changelog record in offset order
// (one partition per call of the harness's single-partition tests: all of
// them, partition after partition).
func (h *harness) changelogRecords() []*kgo.Record {
	t := h.t
	t.Helper()
	ends := h.endOffsets(h.names.Changelog)
	cl := h.c.Client(t, kgo.ConsumeTopics(h.names.Changelog), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seen := map[int32]int64{}
	var out []*kgo.Record
	for {
		done := true
		for p, e := range ends {
			if e > 0 && seen[p] < e-1 {
				done = false
			}
		}
		if done {
			return out
		}
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "changelog read stalled at %v of %v", seen, ends)
		fs.EachRecord(func(r *kgo.Record) {
			seen[r.Partition] = r.Offset
			if r.Attrs.IsControl() {
				return
			}
			out = append(out, r)
		})
	}
}
