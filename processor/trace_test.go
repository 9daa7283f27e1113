package processor_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
)

// The W3C trace context of a command (traceparent and tracestate, nothing
// else) is copied onto its result; a cart command's goes onto its saga's
// line commands, their results and the cart result.
func TestTraceContextIsCarried(t *testing.T) {
	h := newHarness(t, 2)
	skuProc := h.start("")
	h.waitReady(skuProc)
	h.start("", func(c *processor.Config) { // the cart coordinator
		c.Role = processor.RoleCart
		c.Group += "-cart"
	})
	h.send(stockSet("s", "A", 10), stockSet("s2", "B", 10))
	h.waitDecided(20*time.Second, "s", "s2")

	trace := func(parent, state string) []kgo.RecordHeader {
		return []kgo.RecordHeader{{Key: "traceparent", Value: []byte(parent)}, {Key: "tracestate", Value: []byte(state)},
			{Key: "baggage", Value: []byte("not-copied")}}
	}
	cmd, err := json.Marshal(reserve("r1", "A", "h1", 1))
	require.NoError(t, err)
	cartCmd, err := json.Marshal(cartReserve("k1", "cart-1", "A", 1, "B", 2))
	require.NoError(t, err)
	const tp1, tp2 = "00-11111111111111111111111111111111-2222222222222222-01", "00-33333333333333333333333333333333-4444444444444444-01"
	require.NoError(t, h.prod.ProduceSync(context.Background(),
		&kgo.Record{Topic: h.names.Commands, Key: []byte("A"), Value: cmd, Headers: trace(tp1, "vendor=one")},
		&kgo.Record{Topic: h.names.CartCommands, Key: []byte("cart-1"), Value: cartCmd, Headers: trace(tp2, "vendor=two")},
	).FirstErr())

	headers := func(r *kgo.Record) map[string]string {
		m := map[string]string{}
		for _, h := range r.Headers {
			m[h.Key] = string(h.Value)
		}
		return m
	}
	// Read a topic until want says it saw everything it needs.
	read := func(topic string, want func(*kgo.Record) bool) {
		cl := h.c.Client(t, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for done := false; !done; {
			fs := cl.PollFetches(ctx)
			require.NoError(t, ctx.Err(), "reading %s", topic)
			fs.EachRecord(func(r *kgo.Record) { done = done || want(r) })
		}
	}

	read(h.names.Results, func(r *kgo.Record) bool {
		hs := headers(r)
		if hs["command_id"] != "r1" {
			return false
		}
		assert.Equal(t, tp1, hs["traceparent"])
		assert.Equal(t, "vendor=one", hs["tracestate"])
		assert.NotContains(t, hs, "baggage")
		return true
	})
	lines := 0
	read(h.names.Commands, func(r *kgo.Record) bool {
		hs := headers(r)
		if strings.HasPrefix(hs["command_id"], "cart-") {
			lines++
			assert.Equal(t, tp2, hs["traceparent"], "line command %s", hs["command_id"])
			assert.Equal(t, "vendor=two", hs["tracestate"], "line command %s", hs["command_id"])
			assert.NotContains(t, hs, "baggage")
		}
		return lines == 2
	})
	read(h.names.CartResults, func(r *kgo.Record) bool {
		hs := headers(r)
		if hs["command_id"] != "k1" {
			return false
		}
		var res schemas.CartResult
		require.NoError(t, json.Unmarshal(r.Value, &res))
		assert.Equal(t, schemas.OutcomeAccepted, res.Outcome)
		assert.Equal(t, tp2, hs["traceparent"])
		assert.Equal(t, "vendor=two", hs["tracestate"])
		return true
	})
}
