package processor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
)

// replyOf is one record read from the replies topic, with its result
// decoded as R (schemas.Result of a command, schemas.CartResult of a cart
// command).
type replyOf[R any] struct {
	p     int32
	id    string // the command_id header
	key   string
	value []byte
	res   R
}

type replyRecord = replyOf[schemas.Result]

// readReplies reads the replies topic (read_committed, from the start) until
// want records came, then for a further quiet period, and returns them all.
func (h *harness) readReplies(want int, quiet time.Duration) []replyRecord {
	return readRepliesOf[schemas.Result](h, want, quiet)
}

func readRepliesOf[R any](h *harness, want int, quiet time.Duration) []replyOf[R] {
	h.t.Helper()
	cl := h.c.Client(h.t, kgo.ConsumeTopics(h.names.Replies), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var got []replyOf[R]
	deadline := time.Now().Add(30 * time.Second)
	var quietUntil time.Time
	for {
		if len(got) >= want && quietUntil.IsZero() {
			quietUntil = time.Now().Add(quiet)
		}
		if !quietUntil.IsZero() && time.Now().After(quietUntil) {
			return got
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, r := range got {
				seen = append(seen, fmt.Sprintf("%s@%d", r.id, r.p))
			}
			h.t.Fatalf("%d of %d replies within 30 s: %v", len(got), want, seen)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			rr := replyOf[R]{p: r.Partition, key: string(r.Key), value: r.Value}
			for _, hd := range r.Headers {
				if hd.Key == processor.HeaderCommandID {
					rr.id = string(hd.Value)
				}
			}
			require.NoError(h.t, json.Unmarshal(r.Value, &rr.res), "reply %s", r.Value)
			got = append(got, rr)
		})
	}
}

func withReply(c schemas.Command, p int64) schemas.Command {
	c.ReplyTo, c.ReplyPartition = schemas.ReplyToReplies, &p
	return c
}

// TestReplyRoute: a command with reply_to "replies" gets a copy of its
// decision, byte for byte, on exactly the replies partition it names (and
// nowhere else), in the transaction of its result; a retry is routed by its
// own reply_partition; a reply_partition beyond the replies topic still gets
// its decision on the results topic, with no reply; invalid reply fields are
// rejected as invalid_command and not routed; commands without the fields
// are not routed.
func TestReplyRoute(t *testing.T) {
	h := newHarness(t, 3)
	in := h.start("")
	h.waitReady(in)
	h.send(stockSet("s1", "SKU-A", 100))
	h.waitDecided(30*time.Second, "s1")

	neg := withReply(reserve("bad-neg", "SKU-A", "r-neg", 1), -1)
	h.send(
		withReply(reserve("c1", "SKU-A", "r1", 1), 2),
		withReply(reserve("c2", "SKU-A", "r2", 1), 7), // the replies topic has 3 partitions
		reserve("c3", "SKU-A", "r3", 1),
		neg,
		withReply(reserve("c1", "SKU-A", "r1", 1), 0), // retry of c1: answered as a duplicate on partition 0
	)
	h.read(30*time.Second, func() bool {
		return len(h.byCmd["c1"]) == 2 && h.decisive("c2") != nil && h.decisive("c3") != nil && h.decisive("bad-neg") != nil
	})

	require.Equal(t, schemas.OutcomeAccepted, h.decisive("c2").Outcome, "an out-of-range reply_partition does not fail the decision")
	require.Equal(t, schemas.OutcomeAccepted, h.decisive("c3").Outcome)
	bad := h.decisive("bad-neg")
	require.Equal(t, schemas.ReasonInvalidCommand, bad.Reason)
	assert.Contains(t, bad.Message, "reply_partition")

	replies := h.readReplies(2, 500*time.Millisecond)
	require.Len(t, replies, 2, "only c1 and its retry are routed: %+v", replies)
	h.mu.Lock()
	c1 := h.byCmd["c1"]
	h.mu.Unlock()
	require.Len(t, c1, 2)
	for i, want := range []struct {
		p   int32
		dup bool
	}{{2, false}, {0, true}} {
		r := replies[i]
		if r.p != want.p { // partitions are read in any order
			r = replies[1-i]
		}
		assert.Equal(t, want.p, r.p)
		assert.Equal(t, "c1", r.id, "command_id header")
		assert.Equal(t, want.dup, r.res.Duplicate)
		assert.Equal(t, string(c1[i].rec.Value), string(r.value), "the reply is the result, byte for byte")
	}
	assert.Equal(t, float64(2), in.counterWith("reservations_replies_total", "outcome", "routed"))
	assert.Equal(t, float64(1), in.counterWith("reservations_replies_total", "outcome", "out_of_range"))
	assert.Equal(t, float64(0), in.counterWith("reservations_replies_total", "outcome", "no_topic"))
}

// TestReplyRouteWithoutRepliesTopic: a processor whose replies topic does not
// exist (an older deployment) still decides and writes every result; the
// replies are dropped and counted.
func TestReplyRouteWithoutRepliesTopic(t *testing.T) {
	h := newHarness(t, 2)
	in := h.start("", func(c *processor.Config) { c.Topics.Replies = h.names.Replies + "-missing" })
	h.waitReady(in)
	h.send(stockSet("s1", "SKU-A", 10), withReply(reserve("c1", "SKU-A", "r1", 1), 0))
	h.waitDecided(30*time.Second, "s1", "c1")
	assert.Equal(t, schemas.OutcomeAccepted, h.decisive("c1").Outcome)
	assert.Equal(t, float64(1), in.counterWith("reservations_replies_total", "outcome", "no_topic"))
	assert.Empty(t, h.readReplies(0, 300*time.Millisecond), "nothing on the (existing) replies topic of the harness")
}

// counterWith returns a counter's value for one label value.
func (in *instance) counterWith(name, label, value string) float64 {
	mfs, _ := in.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
