package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/client"
	"github.com/reservations/reservations/client/internal/pipelinetest"
	"github.com/reservations/reservations/internal/kafkatest"
	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
)

// TestReplyRouteDefault: a client reads its replies partitions, not the
// results topic: its commands carry reply_to "replies" and one of its
// partitions, and it subscribes no result partition. WithResultsPartitions
// keeps the old mode (no group, result partitions).
func TestReplyRouteDefault(t *testing.T) {
	pl := newTestPipeline(t, 4, processor.RoleSKU)
	ctx := ctxFor(t, 60*time.Second)
	c := newTestClient(t, pl)
	own := c.ReplyPartitions()
	require.Len(t, own, 4, "the only instance of the group owns every replies partition")
	res, err := c.SetStock(ctx, client.SetStockRequest{SKU: "R-1", OnHand: 5})
	require.NoError(t, err)
	require.Equal(t, schemas.OutcomeAccepted, res.Outcome)
	res, err = c.Reserve(ctx, client.ReserveRequest{CommandID: "rr-1", SKU: "R-1", ReservationID: "r-1", Quantity: 2})
	require.NoError(t, err)
	assert.Equal(t, "rr-1", res.CommandID)
	assert.Equal(t, int64(3), res.Stock.Available)
	s := c.Stats()
	assert.Equal(t, int64(2), s.ResultsMatched)
	assert.Equal(t, int64(2), s.RecordsRead, "only its own replies")
	assert.Zero(t, s.Subscribes, "no result partition subscribed")

	// What was sent: reply_to "replies" and one of the client's partitions.
	cmds := readAll(t, pl.Brokers, pl.Names.Commands, 2)
	var sent schemas.Command
	require.NoError(t, json.Unmarshal(cmds[1].Value, &sent))
	assert.Equal(t, schemas.ReplyToReplies, sent.ReplyTo)
	require.NotNil(t, sent.ReplyPartition)
	assert.Contains(t, own, int32(*sent.ReplyPartition))

	old := newTestClient(t, pl, client.WithResultsPartitions())
	assert.Nil(t, old.ReplyPartitions())
	res, err = old.Reserve(ctx, client.ReserveRequest{SKU: "R-1", ReservationID: "r-2", Quantity: 1})
	require.NoError(t, err)
	assert.Equal(t, int64(2), res.Stock.Available)
	assert.Equal(t, int64(1), old.Stats().Subscribes)
	cmds = readAll(t, pl.Brokers, pl.Names.Commands, 3)
	var plain schemas.Command
	require.NoError(t, json.Unmarshal(cmds[2].Value, &plain))
	assert.Equal(t, "r-2", plain.ReservationID)
	assert.Empty(t, plain.ReplyTo)
	assert.Nil(t, plain.ReplyPartition)
}

// TestReplyRouteFallback: without a replies topic (an older deployment) the
// client reads result partitions, and its calls work as before.
func TestReplyRouteFallback(t *testing.T) {
	pl := newTestPipeline(t, 2, processor.RoleSKU)
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(pl.Brokers...)}, kafkatest.ClientOpts()...)...)
	require.NoError(t, err)
	defer cl.Close()
	ctx := ctxFor(t, 60*time.Second)
	_, err = kadm.NewClient(cl).DeleteTopic(ctx, pl.Names.Replies)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		td, err := kadm.NewClient(cl).ListTopics(ctx, pl.Names.Replies)
		return err == nil && !td.Has(pl.Names.Replies)
	}, 10*time.Second, 50*time.Millisecond)

	c := newTestClient(t, pl)
	assert.Nil(t, c.ReplyPartitions(), "no replies topic: the results mode")
	res, err := c.SetStock(ctx, client.SetStockRequest{SKU: "F-1", OnHand: 5})
	require.NoError(t, err)
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome)
	assert.Equal(t, int64(1), c.Stats().Subscribes)
}

// TestReplyRouteRebalance: calls in flight on one client while a second
// instance joins the group and takes some of its replies partitions. The
// calls whose partition moved are sent again with the same command_id; every
// call is answered exactly once, with its own command id, and every reserve
// is decided once.
func TestReplyRouteRebalance(t *testing.T) {
	pl := newTestPipeline(t, 4, processor.RoleSKU)
	ctx := ctxFor(t, 120*time.Second)
	setup := newTestClient(t, pl, client.WithResultsPartitions())
	const skus, calls = 4, 40
	setStocks(ctx, t, setup, "B", skus, 1000)
	a := newTestClient(t, pl, client.WithTimeout(90*time.Second))
	require.Len(t, a.ReplyPartitions(), 4)

	b, answers := rebalanceMidCalls(t, pl, a, calls, func(i int) (schemas.Result, error) {
		return a.Reserve(ctx, client.ReserveRequest{CommandID: fmt.Sprintf("rb-%d", i), SKU: fmt.Sprintf("B-%d", i%skus),
			ReservationID: fmt.Sprintf("r-%d", i), Quantity: 1})
	})
	perSKU := map[string]int64{}
	for i, res := range answers {
		assert.Equal(t, fmt.Sprintf("rb-%d", i), res.CommandID)
		assert.Equal(t, schemas.OutcomeAccepted, res.Outcome)
		perSKU[res.SKU]++
	}
	sa, sb := a.Stats(), b.Stats()
	t.Logf("a: %+v; b: %+v", sa, sb)
	assert.Equal(t, int64(calls), sa.ResultsMatched)
	assert.Zero(t, sb.ResultsMatched, "b had no calls")
	assert.Zero(t, sa.Subscribes, "a read no result partition")
	for i := range skus {
		sku := fmt.Sprintf("B-%d", i)
		res, err := b.AdjustStock(ctx, client.AdjustStockRequest{SKU: sku, Delta: 1})
		require.NoError(t, err)
		assert.Equal(t, perSKU[sku], res.Stock.Reserved, "%s: each reserve decided once", sku)
	}
}

// readAll reads n records of topic from the start (read_committed), ordered
// by offset (use it on records of one partition).
func readAll(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted())},
		kafkatest.ClientOpts()...)...)
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "%d of %d records of %s", len(out), n, topic)
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	slices.SortStableFunc(out, func(x, y *kgo.Record) int { return int(x.Offset - y.Offset) })
	return out
}

// TestCartReplyRoute: cart calls take the reply route: the cart command
// carries reply_to "replies" and a partition of the instance, whose cart
// result comes there (no cart-results partition read); a cart command that
// sets reply_to itself is sent as is and answered through cart-results; Send
// adds the route to a raw valid command (the other bytes unchanged) and
// leaves a raw command with reply fields, or an invalid one, alone.
func TestCartReplyRoute(t *testing.T) {
	pl := newTestPipeline(t, 3, processor.RoleSKU, processor.RoleCart)
	ctx := ctxFor(t, 60*time.Second)
	c := newTestClient(t, pl)
	own := c.ReplyPartitions()
	require.Len(t, own, 3)
	_, err := c.SetStock(ctx, client.SetStockRequest{SKU: "K-1", OnHand: 5})
	require.NoError(t, err)
	res, err := c.CartReserve(ctx, client.CartReserveRequest{CommandID: "kr-1", CartID: "cart-r1",
		Items: []schemas.CartItem{{SKU: "K-1", Quantity: i64(2)}}})
	require.NoError(t, err)
	require.Equal(t, schemas.OutcomeAccepted, res.Outcome, "%+v", res)
	assert.Zero(t, c.Stats().Subscribes, "no cart-results partition subscribed")
	cmds := readAll(t, pl.Brokers, pl.Names.CartCommands, 1)
	var sent schemas.CartCommand
	require.NoError(t, json.Unmarshal(cmds[0].Value, &sent))
	assert.Equal(t, schemas.ReplyToReplies, sent.ReplyTo)
	require.NotNil(t, sent.ReplyPartition)
	assert.Contains(t, own, int32(*sent.ReplyPartition))

	// reply_to set by the caller: as is (here invalid for a cart command),
	// answered on cart-results.
	_, err = c.DoCart(ctx, schemas.CartCommand{CommandID: "kr-2", Type: schemas.TypeCartRelease, CartID: "cart-r1", ReplyTo: "cart"})
	require.ErrorIs(t, err, client.ErrInvalid, "validated before sending")
	p := int64(own[0])
	res, err = c.DoCart(ctx, schemas.CartCommand{CommandID: "kr-3", Type: schemas.TypeCartRelease, CartID: "cart-r9",
		ReplyTo: schemas.ReplyToReplies, ReplyPartition: &p})
	require.NoError(t, err)
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome)
	assert.Equal(t, int64(1), c.Stats().Subscribes, "a command with its own route is answered through cart-results")

	// Send: a raw valid cart command gets the route added before its brace.
	before := c.Stats().Subscribes
	raw := []byte(`{"command_id":"kr-4","type":"cart.release","cart_id":"cart-r1" , "reason":"raw"}` + "\n")
	out, err := c.Send(ctx, client.Record{Key: "cart-r1", Value: raw, CommandID: "kr-4", Cart: true})
	require.NoError(t, err)
	var rel schemas.CartResult
	require.NoError(t, json.Unmarshal(out, &rel))
	assert.Equal(t, schemas.OutcomeAccepted, rel.Outcome, "%s", out)
	assert.Equal(t, before, c.Stats().Subscribes, "answered on the reply route")
	recs := readAll(t, pl.Brokers, pl.Names.CartCommands, 3)
	var last *kgo.Record
	for _, r := range recs {
		if strings.Contains(string(r.Value), `"kr-4"`) {
			last = r
		}
	}
	require.NotNil(t, last)
	assert.Regexp(t, `^\{"command_id":"kr-4","type":"cart.release","cart_id":"cart-r1" , "reason":"raw","reply_to":"replies","reply_partition":[0-9]+\}$`,
		string(last.Value))

	// Send of a raw invalid SKU command: as is, its rejection read from the
	// results topic.
	out, err = c.Send(ctx, client.Record{Key: "K-1", CommandID: "kr-5",
		Value: []byte(`{"command_id":"kr-5","type":"reserve","sku":"K-1","reservation_id":"r","quantity":0}`)})
	require.NoError(t, err)
	var rej schemas.Result
	require.NoError(t, json.Unmarshal(out, &rej))
	assert.Equal(t, schemas.ReasonInvalidCommand, rej.Reason)
	assert.Equal(t, before+1, c.Stats().Subscribes, "an invalid raw command is answered through the results topic")
}

// TestCartReplyRouteRebalance: cart calls in flight (their sagas wait: the
// SKU processor is down) while a second instance joins the group and takes
// some of the first one's replies partitions. The calls whose partition moved
// send their cart command again, same command_id, naming a partition still
// theirs; the coordinator moves the route of the saga in progress there, and
// every call gets its cart result once, on the reply route.
func TestCartReplyRouteRebalance(t *testing.T) {
	pl := newTestPipeline(t, 4, processor.RoleSKU, processor.RoleCart)
	ctx := ctxFor(t, 120*time.Second)
	setup := newTestClient(t, pl, client.WithResultsPartitions())
	const skus, calls = 4, 16
	setStocks(ctx, t, setup, "KB", skus, 1000)
	a := newTestClient(t, pl, client.WithTimeout(60*time.Second))
	require.Len(t, a.ReplyPartitions(), 4)
	b, answers := rebalanceMidCalls(t, pl, a, calls, func(i int) (schemas.CartResult, error) {
		return a.CartReserve(ctx, client.CartReserveRequest{CommandID: fmt.Sprintf("kb-%d", i), CartID: fmt.Sprintf("cart-kb-%d", i),
			Items: []schemas.CartItem{{SKU: fmt.Sprintf("KB-%d", i%skus), Quantity: i64(1)}}})
	})
	for i, res := range answers {
		assert.Equal(t, fmt.Sprintf("kb-%d", i), res.CommandID)
		assert.Equal(t, schemas.OutcomeAccepted, res.Outcome, "%+v", res)
		assert.False(t, res.Duplicate, "the re-sent command took over the route of the saga in progress")
	}
	sa, sb := a.Stats(), b.Stats()
	t.Logf("a: %+v; b: %+v", sa, sb)
	assert.Equal(t, int64(calls), sa.ResultsMatched)
	assert.Zero(t, sa.Subscribes, "a read no cart-results partition")
	assert.Zero(t, sb.ResultsMatched, "b had no calls")
	assert.Zero(t, sb.RecordsRead, "no cart result went to a partition that moved to b")
}

// rebalanceMidCalls stops the SKU processor, makes calls concurrent calls on
// a (call i is call(i)) and waits until a has sent them all; then a second
// instance joins, takes some of a's replies partitions (none is read by
// both), and a sends again the calls that waited on the moved ones. Last the
// processor starts again. It returns the second instance and each call's
// answer, and fails the test on a call's error or a call answered twice.
func rebalanceMidCalls[R any](t *testing.T, pl *pipelinetest.Pipeline, a *client.Client, calls int, call func(i int) (R, error)) (*client.Client, []R) {
	t.Helper()
	require.NoError(t, pl.Stop(processor.RoleSKU))
	type answer struct {
		res R
		err error
	}
	answers := make([]chan answer, calls)
	var wg sync.WaitGroup
	for i := range calls {
		answers[i] = make(chan answer, 2)
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := call(i)
			answers[i] <- answer{res, err}
		}()
	}
	require.Eventually(t, func() bool { return a.Stats().Calls == int64(calls) }, 30*time.Second, 10*time.Millisecond)

	// Cooperative-sticky moves some of a's partitions to b.
	b := newTestClient(t, pl)
	require.NotEmpty(t, b.ReplyPartitions())
	require.Eventually(t, func() bool { return len(a.ReplyPartitions())+len(b.ReplyPartitions()) == 4 }, 30*time.Second, 20*time.Millisecond)
	for _, p := range b.ReplyPartitions() {
		assert.NotContains(t, a.ReplyPartitions(), p, "no partition is read by both")
	}
	require.Eventually(t, func() bool { return a.Stats().Resent > 0 }, 10*time.Second, 10*time.Millisecond,
		"the calls waiting on moved partitions are sent again")

	require.NoError(t, pl.Start(processor.RoleSKU))
	wg.Wait()
	out := make([]R, calls)
	for i := range calls {
		got := <-answers[i]
		require.NoError(t, got.err, "call %d", i)
		select {
		case extra := <-answers[i]:
			t.Fatalf("call %d answered twice: %+v", i, extra)
		default:
		}
		out[i] = got.res
	}
	return b, out
}
