package processor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
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

	// Gauges of committed state, and latency histograms.
	require.Eventually(t, func() bool { return in.gaugeSum("reservations_active_reservations") == 1 }, 5*time.Second, 10*time.Millisecond)
	assert.Zero(t, in.gaugeSum("reservations_oversold_skus"))
	h.send(stockSet("s2", "SKU-1", 1))
	h.waitDecided(20*time.Second, "s2")
	require.Eventually(t, func() bool { return in.gaugeSum("reservations_oversold_skus") == 1 }, 5*time.Second, 10*time.Millisecond,
		"on_hand 1 below reserved 3: oversold")
	h.send(cmdFor(schemas.TypeRelease, "rel", "SKU-1", "res-1"))
	h.waitDecided(20*time.Second, "rel")
	require.Eventually(t, func() bool {
		return in.gaugeSum("reservations_active_reservations") == 0 && in.gaugeSum("reservations_oversold_skus") == 0
	}, 5*time.Second, 10*time.Millisecond, "the release fixed the oversell")
	n, _ := in.histogram("reservations_process_latency_seconds")
	assert.EqualValues(t, 5, n, "one observation per decided command")
	n, _ = in.histogram("reservations_end_to_end_latency_seconds")
	assert.EqualValues(t, 5, n)

	// Every transaction reports its phases: deciding, flushing (the ones that
	// decided without failure), ending. Read in the reverse order of their
	// observation (a transaction may run meanwhile: a timer, a sweep), so
	// that each count read includes the later phases' counts read before it.
	withRecords, _ := in.histogram("reservations_transaction_records")
	ended, _ := in.histogram("reservations_transaction_commit_seconds")
	flushed, _ := in.histogram("reservations_transaction_flush_seconds")
	decided, _ := in.histogram("reservations_transaction_decide_seconds")
	assert.InDelta(t, ended, decided, 1, "one decide phase per ended transaction (one may be running)")
	assert.GreaterOrEqual(t, flushed, withRecords, "every committed transaction with records was flushed")
	assert.LessOrEqual(t, flushed, decided)
	assert.Positive(t, withRecords)
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

// Rebalance: two instances share the partitions; one leaves mid-stream, its
// partitions move to the other, which restores them from the changelog and
// continues. Then a third joins and takes some back.
func TestRebalanceMovesPartitions(t *testing.T) {
	h := newHarness(t, 6)
	a := h.start("")
	b := h.start("")
	h.waitReady(a, b)
	w := genWorkload(3, 30, 3000)
	h.sendConcurrently(w.sets, 1, 0)
	h.waitDecided(30*time.Second, idsOf(w.sets)...)
	third := len(w.cmds) / 3
	h.sendConcurrently(w.cmds[:third], 3, 10)
	h.waitDecided(60*time.Second, idsOf(w.cmds[:third])...)
	b.stop(t) // leaves the group: its partitions move to a
	h.sendConcurrently(w.cmds[third:2*third], 3, 10)
	h.waitDecided(60*time.Second, idsOf(w.cmds[third:2*third])...)
	assert.Len(t, a.p.Status(), int(h.parts), "a owns every partition")
	c := h.start("")
	h.sendConcurrently(w.cmds[2*third:], 3, 10)
	h.sendConcurrently(w.dupes, 2, 0)
	h.waitReady(a, c)
	h.waitDecided(60*time.Second, w.ids()...)
	h.read(30*time.Second, func() bool { return h.duplicates() >= len(w.dupes) })
	assert.NotEmpty(t, c.p.Status(), "the new instance took partitions")
	h.checkAgainstModel(w)
}

// Oversell race through the broker: many concurrent producers reserve one unit
// each of a SKU with 10 units; exactly 10 are accepted.
func TestOversellRaceConcurrentProducers(t *testing.T) {
	h := newHarness(t, 4)
	in := h.start("")
	h.waitReady(in)
	h.send(stockSet("set", "FLASH", 10))
	h.waitDecided(20*time.Second, "set")
	var cmds []schemas.Command
	for i := range 200 {
		cmds = append(cmds, reserve(fmt.Sprintf("buy-%d", i), "FLASH", fmt.Sprintf("cart-%d", i), 1))
	}
	h.sendConcurrently(cmds, 16, 0)
	h.waitDecided(30*time.Second, idsOf(cmds)...)
	accepted := 0
	for _, c := range cmds {
		r := h.decisive(c.CommandID)
		if r.Outcome == schemas.OutcomeAccepted {
			accepted++
		} else {
			assert.Equal(t, schemas.ReasonInsufficientStock, r.Reason)
		}
		assert.GreaterOrEqual(t, r.Stock.Available, int64(0))
	}
	assert.Equal(t, 10, accepted)
	assertInvariants(t, h.changelogState())
}

// Cron-free expiry through the broker: holds expire by the processor's own
// timers, with no command traffic, within 1 s of expires_at.
func TestExpiryWithoutTraffic(t *testing.T) {
	h := newHarness(t, 4)
	in := h.start("")
	h.waitReady(in)
	one := int64(1)
	var cmds []schemas.Command
	for i := range 20 {
		sku := fmt.Sprintf("E-%d", i)
		cmds = append(cmds, stockSet("set-"+sku, sku, 2))
		r := reserve("res-"+sku, sku, "h", 2)
		r.TTLSeconds = &one
		cmds = append(cmds, r)
	}
	h.send(cmds...)
	h.waitDecided(20*time.Second, idsOf(cmds)...)
	expired := func() []schemas.Result {
		var out []schemas.Result
		for _, r := range h.results {
			if r.Type == schemas.TypeExpired {
				out = append(out, r.Result)
			}
		}
		return out
	}
	h.read(20*time.Second, func() bool { return len(expired()) >= 20 })
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range expired() {
		lag := r.DecidedAt.Time().Sub(r.Reservation.ExpiresAt.Time())
		assert.GreaterOrEqual(t, lag, time.Duration(0), "never early")
		assert.Less(t, lag, time.Second, "emitted within 1 s of expires_at")
		assert.Equal(t, int64(0), r.Stock.Reserved)
		assert.Equal(t, int64(2), r.Stock.Available)
	}
	assert.Len(t, expired(), 20, "exactly one notice per hold")
}

// Poison and misrouted records: undecodable bytes go to the DLQ with error
// headers (plus an invalid_command result when the key is a SKU), never
// stopping the partition; a misrouted command is forwarded and decided by the
// owner.
func TestDeadLettersAndForwarding(t *testing.T) {
	h := newHarness(t, 4)
	in := h.start("")
	h.waitReady(in)
	h.send(stockSet("set", "SKU-Q", 5))
	h.sendRaw([]byte("SKU-Q"), []byte("not json"), -1)
	h.sendRaw([]byte("SKU-Q"), []byte(`{"type":"reserve"}`), -1)
	h.sendRaw(nil, []byte(`{"command_id":"nokey","type":"reserve","sku":"SKU-Q"}`), 0)
	h.sendRaw([]byte("SKU-Q"), []byte(`{"command_id":"big","pad":"`+strings.Repeat("x", 70<<10)+`"}`), -1)
	wrong := (topics.Partition([]byte("SKU-Q"), h.parts) + 1) % h.parts
	v, _ := json.Marshal(reserve("misrouted", "SKU-Q", "m1", 2))
	h.sendRaw([]byte("SKU-Q"), v, wrong)
	h.send(reserve("after", "SKU-Q", "a1", 1))
	h.waitDecided(20*time.Second, "misrouted", "after")
	m := h.decisive("misrouted")
	assert.Equal(t, schemas.OutcomeAccepted, m.Outcome)
	assert.Equal(t, topics.Partition([]byte("SKU-Q"), h.parts), m.Partition, "decided by the owner partition")

	dlq := h.c.Client(t, kgo.ConsumeTopics(h.names.DLQ), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var got []*kgo.Record
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for len(got) < 4 && ctx.Err() == nil {
		got = append(got, dlq.PollFetches(ctx).Records()...)
	}
	require.Len(t, got, 4)
	for _, r := range got {
		hs := map[string]string{}
		for _, x := range r.Headers {
			hs[x.Key] = string(x.Value)
		}
		assert.NotEmpty(t, hs["error"])
		assert.Equal(t, h.names.Commands, hs["source_topic"])
		assert.NotEmpty(t, hs["source_partition"])
		assert.NotEmpty(t, hs["source_offset"])
	}
	// Results for the keyed poison records: rejected invalid_command.
	h.read(10*time.Second, func() bool {
		n := 0
		for _, r := range h.results {
			if r.Reason == schemas.ReasonInvalidCommand {
				n++
			}
		}
		return n >= 3 // not json, missing command_id, oversized
	})
}

// Timers are derived from persisted state: holds taken before a restart (on a
// new state folder, i.e. a partition move) still expire, once, on time.
func TestTimersSurviveRestartAndMove(t *testing.T) {
	h := newHarness(t, 2)
	a := h.start("")
	h.waitReady(a)
	ttl := int64(3)
	r := reserve("r", "T-1", "h", 1)
	r.TTLSeconds = &ttl
	h.send(stockSet("s", "T-1", 1), r)
	h.waitDecided(20*time.Second, "s", "r")
	a.stop(t)
	b := h.start("") // empty folder: full restore, as after a partition move
	h.waitReady(b)
	var notices []schemas.Result
	h.read(20*time.Second, func() bool {
		notices = notices[:0]
		for _, x := range h.results {
			if x.Type == schemas.TypeExpired {
				notices = append(notices, x.Result)
			}
		}
		return len(notices) > 0
	})
	require.Len(t, notices, 1)
	lag := notices[0].DecidedAt.Time().Sub(notices[0].Reservation.ExpiresAt.Time())
	assert.GreaterOrEqual(t, lag, time.Duration(0))
	assert.Less(t, lag, time.Second)
	// And a second restart does not expire it again.
	b.stop(t)
	c := h.start("")
	h.waitReady(c)
	h.send(reserve("r2", "T-1", "h2", 1))
	h.waitDecided(20*time.Second, "r2")
	assert.Equal(t, schemas.OutcomeAccepted, h.decisive("r2").Outcome, "the expired hold gave its unit back")
	n := 0
	for _, x := range h.results {
		if x.Type == schemas.TypeExpired {
			n++
		}
	}
	assert.Equal(t, 1, n, "exactly one expiry notice")
}

// Past the dedupe window the sweep tombstones decided commands and terminal
// reservations in the changelog (so it stays bounded); active ones stay.
func TestSweepTombstonesPastDedupeWindow(t *testing.T) {
	h := newHarness(t, 2)
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	in := h.startWith(processor.WithClock(clock), func(c *processor.Config) {
		c.Rules = sku.Rules{DedupeWindow: time.Hour, MaxExtensions: 1}
		c.SweepInterval = 50 * time.Millisecond
	})
	h.waitReady(in)
	long := int64(86400)
	keep := reserve("keep", "W-1", "active-hold", 1)
	keep.TTLSeconds = &long
	h.send(stockSet("s", "W-1", 5), reserve("r", "W-1", "done-hold", 1), keep,
		cmdFor(schemas.TypeRelease, "rel", "W-1", "done-hold"))
	h.waitDecided(20*time.Second, "s", "r", "keep", "rel")
	state := h.changelogState()
	require.Contains(t, state, "command/r")
	require.Contains(t, state, "reservation/W-1/done-hold")

	skew.Store(int64(2 * time.Hour))
	require.Eventually(t, func() bool {
		st := h.changelogState()
		_, cmd := st["command/r"]
		_, done := st["reservation/W-1/done-hold"]
		return !cmd && !done
	}, 20*time.Second, 100*time.Millisecond, "tombstoned after the window")
	st := h.changelogState()
	assert.Contains(t, st, "reservation/W-1/active-hold", "active holds are never forgotten")
	assert.Contains(t, st, "stock/W-1")
	// A command id past the window is decided afresh.
	h.send(reserve("r", "W-1", "done-hold", 1))
	h.read(20*time.Second, func() bool { return len(h.byCmd["r"]) == 2 })
	assert.False(t, h.byCmd["r"][1].Duplicate)
	assert.Equal(t, schemas.OutcomeAccepted, h.byCmd["r"][1].Outcome)
}
