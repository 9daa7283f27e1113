package processor_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
)

// cartReply is one cart result read from the replies topic.
type cartReply = replyOf[schemas.CartResult]

// readCartReplies is readReplies for cart results.
func (h *harness) readCartReplies(want int, quiet time.Duration) []cartReply {
	return readRepliesOf[schemas.CartResult](h, want, quiet)
}

func cartWithReply(c schemas.CartCommand, p int64) schemas.CartCommand {
	c.ReplyTo, c.ReplyPartition = schemas.ReplyToReplies, &p
	return c
}

// TestCartReplyRoute: a cart command sent with reply_to "replies" gets its
// cart result, byte for byte, on the replies partition it names, in the
// transaction of the cart-results record; the route survives a restart of
// the coordinator mid-saga (its new instance restores the cart from the
// changelog, in an empty state directory) and the result is routed when the
// saga ends; a rejection at intake is routed at once; a re-sent command is
// answered as a duplicate on its own reply_partition; a reply_partition beyond
// the replies topic still gets its cart result on cart-results, unrouted and
// counted.
func TestCartReplyRoute(t *testing.T) {
	h := newHarness(t, 3)
	carts := h.cartResults()
	cartMod := func(c *processor.Config) {
		c.Role = processor.RoleCart
		c.Group += "-cart"
	}
	skuP := h.start("")
	h.waitReady(skuP)
	h.send(stockSet("s1", "A", 5), stockSet("s2", "B", 5))
	h.waitDecided(20*time.Second, "s1", "s2")
	skuP.stop(t) // the saga below waits for its line results

	coord := h.start("", cartMod)
	h.waitReady(coord)
	bad := cartWithReply(schemas.CartCommand{CommandID: "bad-1", Type: schemas.TypeCartReserve, CartID: "cart-2"}, 1)
	h.sendCarts(cartWithReply(cartReserve("k1", "cart-1", "A", 2, "B", 1), 2), bad)
	carts.waitDecided(20*time.Second, "bad-1")
	require.Equal(t, schemas.ReasonInvalidCommand, carts.decisive("bad-1").Reason)
	require.Eventually(t, func() bool { return coord.gaugeSum("reservations_cart_sagas_in_flight") == 1 },
		20*time.Second, 20*time.Millisecond)
	assert.Equal(t, float64(1), coord.counterWith("reservations_replies_total", "outcome", "routed"), "bad-1 at once")

	// The coordinator goes; its successor has no local state: the saga and
	// its route come back from the cart-changelog.
	coord.stop(t)
	coord = h.start(t.TempDir(), cartMod)
	h.waitReady(coord)
	require.Equal(t, float64(1), coord.gaugeSum("reservations_cart_sagas_in_flight"), "the saga restored")
	skuP = h.start("")
	h.waitReady(skuP) // each in its own group: waitReady counts one group's partitions
	h.waitReady(coord)
	carts.waitDecided(30*time.Second, "k1")
	k1 := carts.decisive("k1")
	require.Equal(t, schemas.OutcomeAccepted, k1.Outcome, "%+v", k1)

	// A duplicate on its own partition; an out-of-range partition: cart-results only.
	h.sendCarts(cartWithReply(cartReserve("k1", "cart-1", "A", 2, "B", 1), 0),
		cartWithReply(schemas.CartCommand{CommandID: "x1", Type: schemas.TypeCartRelease, CartID: "cart-3"}, 7))
	carts.waitDecided(20*time.Second, "x1")
	require.Eventually(t, func() bool { carts.poll(); return len(carts.byCmd["k1"]) == 2 }, 20*time.Second, 10*time.Millisecond)
	assert.Equal(t, schemas.OutcomeAccepted, carts.decisive("x1").Outcome, "an out-of-range reply_partition does not fail the result")

	replies := h.readCartReplies(3, 500*time.Millisecond)
	require.Len(t, replies, 3, "bad-1, k1 and k1's duplicate")
	byID := map[string][]cartReply{}
	for _, r := range replies {
		byID[r.id] = append(byID[r.id], r)
	}
	require.Len(t, byID["bad-1"], 1)
	assert.Equal(t, int32(1), byID["bad-1"][0].p)
	assert.Equal(t, "cart-2", byID["bad-1"][0].key)
	require.Len(t, byID["k1"], 2)
	for _, r := range byID["k1"] {
		assert.Equal(t, "cart-1", r.key, "keyed by cart_id")
		if r.res.Duplicate {
			assert.Equal(t, int32(0), r.p, "the duplicate goes where the re-sent command says")
			continue
		}
		assert.Equal(t, int32(2), r.p, "the route kept in the restored saga")
		assert.Equal(t, k1, r.res)
	}
	// Byte for byte: the cart-results records of the same decisions.
	raw := h.c.Client(t, kgo.ConsumeTopics(h.names.CartResults), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	onResults := map[string]string{}
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		raw.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			var res schemas.CartResult
			require.NoError(t, json.Unmarshal(r.Value, &res))
			if !res.Duplicate {
				onResults[res.CommandID] = string(r.Value)
			}
		})
		return onResults["k1"] != "" && onResults["bad-1"] != ""
	}, 20*time.Second, 10*time.Millisecond)
	for _, r := range replies {
		if !r.res.Duplicate {
			assert.Equal(t, onResults[r.id], string(r.value), "the reply of %s is its cart result, byte for byte", r.id)
		}
	}
	assert.Equal(t, float64(2), coord.counterWith("reservations_replies_total", "outcome", "routed"), "k1 and its duplicate")
	assert.Equal(t, float64(1), coord.counterWith("reservations_replies_total", "outcome", "out_of_range"))
}
