package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/client"
	"github.com/reservations/reservations/internal/kafkatest"
	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
)

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func i64(v int64) *int64 { return &v }

// Every command of the contract through its typed call: accepted decisions,
// and rejections as results with a nil error.
func TestCommands(t *testing.T) {
	pl := newTestPipeline(t, 3, processor.RoleSKU)
	c := newTestClient(t, pl)
	ctx := ctxFor(t, 60*time.Second)

	res, err := c.SetStock(ctx, client.SetStockRequest{SKU: "SKU-1", OnHand: 10, LowStockThreshold: i64(2)})
	require.NoError(t, err)
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome, "%+v", res)
	assert.Equal(t, int64(10), res.Stock.Available)
	assert.NotEmpty(t, res.CommandID, "a command id was generated")

	res, err = c.Reserve(ctx, client.ReserveRequest{SKU: "SKU-1", ReservationID: "r-1", Quantity: 3, CartID: "cart-1", TTLSeconds: 60})
	require.NoError(t, err)
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome, "%+v", res)
	assert.Equal(t, int64(7), res.Stock.Available)
	assert.Equal(t, "cart-1", res.Reservation.CartID)

	res, err = c.Reserve(ctx, client.ReserveRequest{SKU: "SKU-1", ReservationID: "r-2", Quantity: 8})
	require.NoError(t, err, "a business rejection is a result")
	assert.Equal(t, schemas.OutcomeRejected, res.Outcome)
	assert.Equal(t, schemas.ReasonInsufficientStock, res.Reason)

	res, err = c.Adjust(ctx, client.AdjustRequest{SKU: "SKU-1", ReservationID: "r-1", Quantity: 4})
	require.NoError(t, err)
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome, "%+v", res)
	assert.Equal(t, int64(4), res.Reservation.Quantity)

	res, err = c.Extend(ctx, client.ExtendRequest{SKU: "SKU-1", ReservationID: "r-1", TTLSeconds: 120})
	require.NoError(t, err)
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome, "%+v", res)

	res, err = c.Commit(ctx, client.CommitRequest{SKU: "SKU-1", ReservationID: "r-1", OrderID: "o-1"})
	require.NoError(t, err)
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome, "%+v", res)
	assert.Equal(t, schemas.StatusConsumed, res.Reservation.Status)
	assert.Equal(t, int64(6), res.Stock.OnHand)

	res, err = c.Release(ctx, client.ReleaseRequest{SKU: "SKU-1", ReservationID: "r-1"})
	require.NoError(t, err)
	assert.Equal(t, schemas.ReasonReservationNotActive, res.Reason)

	res, err = c.AdjustStock(ctx, client.AdjustStockRequest{SKU: "SKU-1", Delta: -2, ExpectedOnHand: i64(6)})
	require.NoError(t, err)
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome, "%+v", res)
	assert.Equal(t, int64(4), res.Stock.OnHand)

	res, err = c.AdjustStock(ctx, client.AdjustStockRequest{SKU: "SKU-1", Delta: 1, ExpectedOnHand: i64(99)})
	require.NoError(t, err)
	assert.Equal(t, schemas.ReasonStaleExpectedOnHand, res.Reason)
}

// An invalid command is caught before it is sent, naming the field.
func TestInvalidCommandNotSent(t *testing.T) {
	pl := newTestPipeline(t, 1) // no processor: nothing would answer
	c := newTestClient(t, pl)
	ctx := ctxFor(t, 10*time.Second)
	for _, tc := range []struct {
		call  func() error
		field string
	}{
		{func() error {
			_, err := c.Reserve(ctx, client.ReserveRequest{SKU: "SKU-1", ReservationID: "r"})
			return err
		}, "quantity"},
		{func() error {
			_, err := c.Reserve(ctx, client.ReserveRequest{SKU: "bad sku", ReservationID: "r", Quantity: 1})
			return err
		}, "sku"},
		{func() error { _, err := c.SetStock(ctx, client.SetStockRequest{SKU: "S", OnHand: -1}); return err }, "on_hand"},
		{func() error { _, err := c.Commit(ctx, client.CommitRequest{SKU: "S", ReservationID: "r"}); return err }, "order_id"},
		{func() error { _, err := c.AdjustStock(ctx, client.AdjustStockRequest{SKU: "S"}); return err }, "delta"},
		{func() error { _, err := c.CartReserve(ctx, client.CartReserveRequest{CartID: "k"}); return err }, "items"},
		{func() error { _, err := c.CartCommit(ctx, client.CartCommitRequest{CartID: "k"}); return err }, "order_id"},
	} {
		err := tc.call()
		require.ErrorIs(t, err, client.ErrInvalid)
		var fe *schemas.FieldError
		require.ErrorAs(t, err, &fe)
		assert.Equal(t, tc.field, fe.Field, "%v", err)
	}
	assert.Zero(t, c.Stats().Calls, "nothing was sent")
}

// A re-sent command id is answered with the original decision, duplicate.
func TestDuplicate(t *testing.T) {
	pl := newTestPipeline(t, 3, processor.RoleSKU)
	c := newTestClient(t, pl)
	ctx := ctxFor(t, 60*time.Second)
	_, err := c.SetStock(ctx, client.SetStockRequest{SKU: "S", OnHand: 5})
	require.NoError(t, err)
	req := client.ReserveRequest{CommandID: "my-id-1", SKU: "S", ReservationID: "r", Quantity: 2}
	first, err := c.Reserve(ctx, req)
	require.NoError(t, err)
	again, err := c.Reserve(ctx, req)
	require.NoError(t, err)
	assert.False(t, first.Duplicate)
	assert.True(t, again.Duplicate)
	assert.Equal(t, "my-id-1", again.CommandID)
	assert.Equal(t, first.Outcome, again.Outcome)
	assert.Equal(t, first.Offset, again.Offset, "the original decision, not a new one")
	assert.Equal(t, int64(3), again.Stock.Available, "decided once")
}

// No processor: the call times out with ErrNoResult naming the command id;
// once the command is decided, the retry with that id is a duplicate.
func TestTimeoutThenRetry(t *testing.T) {
	pl := newTestPipeline(t, 3)
	c := newTestClient(t, pl)
	short, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := c.SetStock(short, client.SetStockRequest{SKU: "S", OnHand: 5})
	require.ErrorIs(t, err, client.ErrNoResult)
	var ce *client.CallError
	require.ErrorAs(t, err, &ce)
	require.NotEmpty(t, ce.CommandID)
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	require.NoError(t, pl.Start(processor.RoleSKU))
	// Wait until the first send is decided, reading the results topic.
	reader, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(pl.Brokers...), kgo.ConsumeTopics(pl.Names.Results),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())},
		kafkatest.ClientOpts()...)...)
	require.NoError(t, err)
	defer reader.Close()
	ctx := ctxFor(t, 60*time.Second)
	var first schemas.Result
	for found := false; !found; {
		fs := reader.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "the first send was never decided")
		fs.EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if !found && h.Key == "command_id" && string(h.Value) == ce.CommandID {
					found = true
					require.NoError(t, json.Unmarshal(r.Value, &first))
				}
			}
		})
	}
	res, err := c.SetStock(ctx, client.SetStockRequest{CommandID: ce.CommandID, SKU: "S", OnHand: 5})
	require.NoError(t, err)
	// The answer is the first send's decision: the duplicate repeat of it, or,
	// on the reply route, that decision's own reply when the client's replies
	// reader reaches it only after the retry began to wait (both carry the
	// first decision; nothing is decided twice).
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome)
	assert.Equal(t, first.Offset, res.Offset, "the first send's decision: %+v", res)
	assert.Equal(t, first.DecidedAt, res.DecidedAt, "the first send's decision: %+v", res)
	if !res.Duplicate {
		assert.Equal(t, first, res, "not a duplicate: the original decision itself")
	}
}

// The processor stops and restarts while calls are in flight: every call is
// answered once the new instance runs, and nothing is decided twice.
func TestProcessorRestartMidway(t *testing.T) {
	pl := newTestPipeline(t, 3, processor.RoleSKU)
	c := newTestClient(t, pl, client.WithTimeout(90*time.Second))
	ctx := ctxFor(t, 120*time.Second)
	const skus, callers, perCaller = 6, 8, 25
	setStocks(ctx, t, c, "S", skus, 1000)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		accepted = map[string]int64{}
		answered int
	)
	restart := make(chan struct{})
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perCaller {
				if g == 0 && i == perCaller/3 {
					close(restart)
				}
				sku := fmt.Sprintf("S-%d", (g+i)%skus)
				res, err := c.Reserve(ctx, client.ReserveRequest{SKU: sku, ReservationID: fmt.Sprintf("r-%d-%d", g, i), Quantity: 1})
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				answered++
				if res.Outcome == schemas.OutcomeAccepted {
					accepted[sku]++
				}
				mu.Unlock()
			}
		}()
	}
	<-restart
	require.NoError(t, pl.Stop(processor.RoleSKU))
	time.Sleep(200 * time.Millisecond) // calls pile up meanwhile
	require.NoError(t, pl.Start(processor.RoleSKU))
	wg.Wait()
	require.Equal(t, callers*perCaller, answered)
	for i := range skus {
		sku := fmt.Sprintf("S-%d", i)
		res, err := c.AdjustStock(ctx, client.AdjustStockRequest{SKU: sku, Delta: 1})
		require.NoError(t, err)
		assert.Equal(t, accepted[sku], res.Stock.Reserved, "%s: each reserve decided once", sku)
	}
}

// Many concurrent callers over two clients: every call gets its own result.
func TestManyConcurrentCallers(t *testing.T) {
	pl := newTestPipeline(t, 4, processor.RoleSKU)
	clients := []*client.Client{newTestClient(t, pl), newTestClient(t, pl, client.WithPartitionLinger(0))}
	ctx := ctxFor(t, 120*time.Second)
	_, err := clients[0].SetStock(ctx, client.SetStockRequest{SKU: "HOT", OnHand: 100})
	require.NoError(t, err)
	const callers, perCaller = 100, 4
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		accepted int64
		ids      = map[string]bool{}
	)
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[g%len(clients)]
			for i := range perCaller {
				sku := "HOT"
				if i%2 == 1 {
					sku = fmt.Sprintf("COLD-%d", g%7) // unknown SKUs: rejected
				}
				id := fmt.Sprintf("cc-%d-%d", g, i)
				res, err := c.Reserve(ctx, client.ReserveRequest{CommandID: id, SKU: sku, ReservationID: id, Quantity: 1})
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				assert.False(t, ids[res.CommandID], "one result per call")
				assert.Equal(t, id, res.CommandID)
				ids[res.CommandID] = true
				if res.Outcome == schemas.OutcomeAccepted {
					accepted++
				} else if sku == "HOT" {
					assert.Equal(t, schemas.ReasonInsufficientStock, res.Reason)
				} else {
					assert.Equal(t, schemas.ReasonUnknownSKU, res.Reason)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	assert.Len(t, ids, callers*perCaller)
	assert.Equal(t, int64(100), accepted, "100 of the 200 reserves of HOT fit")
}

// The cart calls, through the cart coordinator.
func TestCartCalls(t *testing.T) {
	pl := newTestPipeline(t, 3, processor.RoleSKU, processor.RoleCart)
	c := newTestClient(t, pl)
	ctx := ctxFor(t, 60*time.Second)
	for sku, n := range map[string]int64{"A": 5, "B": 1} {
		_, err := c.SetStock(ctx, client.SetStockRequest{SKU: sku, OnHand: n})
		require.NoError(t, err)
	}
	items := func(lines ...any) []schemas.CartItem {
		var out []schemas.CartItem
		for i := 0; i < len(lines); i += 2 {
			out = append(out, schemas.CartItem{SKU: lines[i].(string), Quantity: i64(int64(lines[i+1].(int)))})
		}
		return out
	}
	res, err := c.CartReserve(ctx, client.CartReserveRequest{CartID: "cart-1", Items: items("A", 2, "B", 1)})
	require.NoError(t, err)
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome, "%+v", res)
	require.Len(t, res.Lines, 2)

	res, err = c.CartReserve(ctx, client.CartReserveRequest{CartID: "cart-2", Items: items("A", 1, "B", 1)})
	require.NoError(t, err)
	assert.Equal(t, schemas.OutcomeRejected, res.Outcome, "%+v", res)
	assert.Equal(t, schemas.ReasonInsufficientStock, res.Reason)

	res, err = c.CartCommit(ctx, client.CartCommitRequest{CommandID: "commit-1", CartID: "cart-1", OrderID: "o-1"})
	require.NoError(t, err)
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome, "%+v", res)
	dup, err := c.CartCommit(ctx, client.CartCommitRequest{CommandID: "commit-1", CartID: "cart-1", OrderID: "o-1"})
	require.NoError(t, err)
	assert.True(t, dup.Duplicate)

	res, err = c.CartRelease(ctx, client.CartReleaseRequest{CartID: "cart-3"})
	require.NoError(t, err)
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome, "an empty cart releases at once")

	// Every cart result came on the reply route (the duplicate too): no
	// cart-results partition read, no record read that was not an answer.
	s := c.Stats()
	assert.Equal(t, int64(7), s.ResultsMatched)
	assert.Equal(t, s.ResultsMatched, s.RecordsRead)
	assert.Zero(t, s.Subscribes)
}

// Close fails the calls in flight.
func TestClose(t *testing.T) {
	pl := newTestPipeline(t, 1)
	c := newTestClient(t, pl)
	errc := make(chan error, 1)
	go func() {
		_, err := c.SetStock(context.Background(), client.SetStockRequest{SKU: "S", OnHand: 1})
		errc <- err
	}()
	time.Sleep(500 * time.Millisecond)
	c.Close()
	err := <-errc
	require.Error(t, err)
	assert.True(t, errors.Is(err, client.ErrClosed) || errors.Is(err, client.ErrNoResult), "%v", err)
	_, err = c.SetStock(context.Background(), client.SetStockRequest{SKU: "S", OnHand: 1})
	assert.ErrorIs(t, err, client.ErrClosed)
}

func TestRequestReplyOpts(t *testing.T) {
	cl, err := kgo.NewClient(client.RequestReplyOpts("127.0.0.1:1")...)
	require.NoError(t, err)
	defer cl.Close()
	assert.Equal(t, time.Duration(0), cl.OptValue(kgo.ProducerLinger))
	assert.Equal(t, 50*time.Millisecond, cl.OptValue(kgo.FetchMaxWait))
	assert.EqualValues(t, 1, cl.OptValue(kgo.FetchIsolationLevel), "read_committed")
}
