package client_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/client"
	"github.com/reservations/reservations/client/internal/pipelinetest"
	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
)

// TestReadAmplification measures how many result (or reply) records the
// clients read per result they needed, with 1 and 10 client instances on 12
// partitions, each client running 4 callers of 20 reserves over 48 SKUs: on
// the reply route (the default: 12 replies partitions, one consumer group),
// and in the results mode (WithResultsPartitions) for three partition
// lingers (docs/CLIENT.md records the figures). A client that read every
// result partition would read every result: an amplification of N with N
// clients. The bounds that make it fail: on the reply route every instance
// reads only its own replies (1.0 with 1 and with 10 instances); in the
// results mode one client reads exactly the results it needs (nothing from
// before its calls, nothing of partitions it does not wait on) and ten
// clients without linger stay well below every client reading everything.
func TestReadAmplification(t *testing.T) {
	pl := newTestPipeline(t, 12, processor.RoleSKU)
	setup := newTestClient(t, pl, client.WithResultsPartitions())
	ctx := ctxFor(t, 180*time.Second)
	const skus = 48
	setStocks(ctx, t, setup, "A", skus, 1<<40)
	for _, tc := range []struct {
		replies bool
		clients int
		linger  time.Duration
		max     float64
	}{
		{true, 1, 0, 1.0},
		{true, 10, 0, 1.0},
		{false, 1, 250 * time.Millisecond, 1.0},
		{false, 10, 250 * time.Millisecond, 10},
		{false, 10, 25 * time.Millisecond, 10},
		{false, 10, 0, 7.5},
	} {
		mode := "results,linger=" + tc.linger.String()
		if tc.replies {
			mode = "replies"
		}
		t.Run(fmt.Sprintf("clients=%d,%s", tc.clients, mode), func(t *testing.T) {
			cs := startClients(t, pl, tc.clients, tc.replies, client.WithPartitionLinger(tc.linger))
			const callers, calls = 4, 20
			start := time.Now()
			var wg sync.WaitGroup
			for ci, c := range cs {
				for g := range callers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range calls {
							sku := fmt.Sprintf("A-%d", (ci*7+g*13+i)%skus)
							_, err := c.Reserve(ctx, client.ReserveRequest{SKU: sku, ReservationID: client.NewID(), Quantity: 1})
							if !assert.NoError(t, err) {
								return
							}
						}
					}()
				}
			}
			wg.Wait()
			elapsed := time.Since(start)
			var read, matched, subs, resent int64
			for _, c := range cs {
				s := c.Stats()
				read += s.RecordsRead
				matched += s.ResultsMatched
				subs += s.Subscribes
				resent += s.Resent
			}
			require.Equal(t, int64(tc.clients*callers*calls), matched, "every call got its result")
			amp := float64(read) / float64(matched)
			t.Logf("clients=%d %s: %d calls in %s, %d records read for %d results needed: amplification %.2f "+
				"(reading every partition: %d); %d subscriptions (%.2f per call); %d re-sent",
				tc.clients, mode, matched, elapsed.Round(time.Millisecond), read, matched, amp, tc.clients, subs,
				float64(subs)/float64(matched), resent)
			assert.LessOrEqual(t, amp, tc.max)
		})
	}
}

// TestCartReadAmplification is TestReadAmplification for cart calls (a
// cart.reserve of two lines, then a cart.release of the cart), with 1 and 10
// client instances: on the reply route, where the coordinator copies each
// cart result to the caller's replies partition, every instance reads only
// its own cart results (1.0); in the results mode (the only mode of cart
// calls before the route) every instance reads the cart-results partitions
// of its calls in flight, which under load is nearly every cart result
// (logged: docs/CLIENT.md records the figures).
func TestCartReadAmplification(t *testing.T) {
	pl := newTestPipeline(t, 12, processor.RoleSKU, processor.RoleCart)
	setup := newTestClient(t, pl, client.WithResultsPartitions())
	ctx := ctxFor(t, 240*time.Second)
	const skus = 48
	setStocks(ctx, t, setup, "C", skus, 1<<40)
	for _, tc := range []struct {
		replies bool
		clients int
		max     float64
	}{
		{true, 1, 1.0},
		{true, 10, 1.0},
		{false, 10, 10},
	} {
		mode := "results,linger=250ms"
		if tc.replies {
			mode = "replies"
		}
		t.Run(fmt.Sprintf("clients=%d,%s", tc.clients, mode), func(t *testing.T) {
			cs := startClients(t, pl, tc.clients, tc.replies)
			const callers, carts = 4, 5 // two calls per cart
			start := time.Now()
			var wg sync.WaitGroup
			for ci, c := range cs {
				for g := range callers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range carts {
							cartID := client.NewID()
							a, b := (ci*7+g*13+i)%skus, (ci*7+g*13+i+1)%skus
							res, err := c.CartReserve(ctx, client.CartReserveRequest{CartID: cartID, Items: []schemas.CartItem{
								{SKU: fmt.Sprintf("C-%d", a), Quantity: i64(1)}, {SKU: fmt.Sprintf("C-%d", b), Quantity: i64(1)}}})
							if !assert.NoError(t, err) || !assert.Equal(t, schemas.OutcomeAccepted, res.Outcome, "%+v", res) {
								return
							}
							res, err = c.CartRelease(ctx, client.CartReleaseRequest{CartID: cartID})
							if !assert.NoError(t, err) || !assert.Equal(t, schemas.OutcomeAccepted, res.Outcome, "%+v", res) {
								return
							}
						}
					}()
				}
			}
			wg.Wait()
			elapsed := time.Since(start)
			var read, matched, subs int64
			for _, c := range cs {
				s := c.Stats()
				read += s.RecordsRead
				matched += s.ResultsMatched
				subs += s.Subscribes
			}
			require.Equal(t, int64(tc.clients*callers*carts*2), matched, "every call got its cart result")
			amp := float64(read) / float64(matched)
			t.Logf("clients=%d %s: %d cart calls in %s, %d records read for %d cart results needed: amplification %.2f "+
				"(reading every partition: %d); %d subscriptions of cart-results partitions",
				tc.clients, mode, matched, elapsed.Round(time.Millisecond), read, matched, amp, tc.clients, subs)
			assert.LessOrEqual(t, amp, tc.max)
			if tc.replies {
				assert.Zero(t, subs, "the reply route reads no cart-results partition")
			}
		})
	}
}

// startClients starts n client instances: on the reply route (waiting until
// every instance has replies partitions of its own: New waits for the first,
// the group settles once the last joined), or in the results mode with
// resultsOpts.
func startClients(t *testing.T, pl *pipelinetest.Pipeline, n int, replies bool, resultsOpts ...client.Option) []*client.Client {
	t.Helper()
	cs := make([]*client.Client, n)
	for i := range cs {
		if replies {
			cs[i] = newTestClient(t, pl)
			continue
		}
		cs[i] = newTestClient(t, pl, append([]client.Option{client.WithResultsPartitions()}, resultsOpts...)...)
	}
	if replies {
		require.Eventually(t, func() bool {
			total := 0
			for _, c := range cs {
				if len(c.ReplyPartitions()) == 0 {
					return false
				}
				total += len(c.ReplyPartitions())
			}
			return total == 12
		}, 30*time.Second, 20*time.Millisecond)
	}
	return cs
}
