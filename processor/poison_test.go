package processor_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
)

// A command whose decision the broker rejects for what it is (here: a
// changelog batch over the topic's max.message.bytes; in production, a record
// over the producer's or broker's limit) is answered with a rejected
// invalid_command result and a DLQ copy, and the partition goes on deciding.
//
// Failed on the old code: the transaction aborted, was retried with the same
// records, and aborted again, forever; no later command was decided.
func TestPoisonCommandIsDeadLettered(t *testing.T) {
	h := newHarness(t, 2)
	// A producer limit of 1000 bytes per batch: a record over it fails at once
	// with MessageTooLarge, as a record over the 1 MB default does.
	in := h.start("", func(c *processor.Config) {
		c.KafkaOpts = append(append([]kgo.Opt(nil), c.KafkaOpts...), kgo.ProducerBatchMaxBytes(1000))
	})
	h.send(stockSet("set", "P", 10), reserve("ok-1", "P", "r1", 1))
	h.waitDecided(30*time.Second, "set", "ok-1")
	require.Equal(t, schemas.OutcomeAccepted, h.decisive("ok-1").Outcome)

	// Random ids of the longest allowed length (incompressible: the producer
	// compresses batches).
	long := func() string {
		b := make([]byte, schemas.MaxIDLen/2)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	}
	poison := reserve(long(), "P", long(), 1)
	poison.CartID = long()
	// A second poison so large that even its DLQ copy is rejected: the copy
	// goes without the value (the old refusal retried the same copy forever).
	huge := reserve(long(), "P", long(), 1)
	huge.CartID, huge.StoreID = long(), long()
	huge.Reason = long() + long()
	h.send(poison, reserve("ok-2", "P", "r2", 1), huge, reserve("ok-3", "P", "r3", 1))
	h.waitDecided(60*time.Second, poison.CommandID, "ok-2", huge.CommandID, "ok-3")
	assert.Equal(t, schemas.ReasonInvalidCommand, h.decisive(huge.CommandID).Reason)
	assert.Equal(t, schemas.OutcomeAccepted, h.decisive("ok-3").Outcome)
	res := h.decisive(poison.CommandID)
	assert.Equal(t, schemas.OutcomeRejected, res.Outcome)
	assert.Equal(t, schemas.ReasonInvalidCommand, res.Reason)
	assert.Contains(t, res.Message, "cannot be written")
	assert.Equal(t, schemas.OutcomeAccepted, h.decisive("ok-2").Outcome, "the partition goes on")
	assert.GreaterOrEqual(t, in.counter("reservations_poison_commands_total"), 3.0, "two poisons, the second refused twice")

	dlq := h.c.Client(t, kgo.ConsumeTopics(h.names.DLQ), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got []*kgo.Record
	for len(got) < 2 && ctx.Err() == nil {
		got = append(got, dlq.PollFetches(ctx).Records()...)
	}
	require.Len(t, got, 2)
	assert.Contains(t, string(got[0].Value), poison.CommandID)
	assert.Empty(t, got[1].Value, "the huge poison's copy has no value")
	dropped := false
	for _, hd := range got[1].Headers {
		dropped = dropped || hd.Key == processor.HeaderValueDropped
	}
	assert.True(t, dropped, "value_dropped header")
	in.stop(t)
	state := h.changelogState()
	assertInvariants(t, state)
	assert.Equal(t, int64(3), state[schemas.StockKey("P")].Stock.Reserved, "r1, r2 and r3, nothing of the poisons")
}
