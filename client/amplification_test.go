package client_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/client"
	"github.com/reservations/reservations/processor"
)

// TestReadAmplification measures how many result records the clients read
// per result they needed, with 1 and 10 client instances on 12 partitions,
// each client running 4 callers of 20 reserves over 48 SKUs, for three
// partition lingers (docs/CLIENT.md records the figures). A client that read
// every result partition would read every result: an amplification of N with
// N clients. The bounds that make it fail: one client reads exactly the
// results it needs (nothing from before its calls, nothing of partitions it
// does not wait on); ten clients without linger stay well below every client
// reading everything.
func TestReadAmplification(t *testing.T) {
	pl := newTestPipeline(t, 12, processor.RoleSKU)
	setup := newTestClient(t, pl)
	ctx := ctxFor(t, 180*time.Second)
	const skus = 48
	for i := range skus {
		_, err := setup.SetStock(ctx, client.SetStockRequest{SKU: fmt.Sprintf("A-%d", i), OnHand: 1 << 40})
		require.NoError(t, err)
	}
	for _, tc := range []struct {
		clients int
		linger  time.Duration
		max     float64
	}{
		{1, 250 * time.Millisecond, 1.0},
		{10, 250 * time.Millisecond, 10},
		{10, 25 * time.Millisecond, 10},
		{10, 0, 7.5},
	} {
		t.Run(fmt.Sprintf("clients=%d,linger=%s", tc.clients, tc.linger), func(t *testing.T) {
			cs := make([]*client.Client, tc.clients)
			for i := range cs {
				cs[i] = newTestClient(t, pl, client.WithPartitionLinger(tc.linger))
			}
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
			var read, matched, subs int64
			for _, c := range cs {
				s := c.Stats()
				read += s.RecordsRead
				matched += s.ResultsMatched
				subs += s.Subscribes
			}
			require.Equal(t, int64(tc.clients*callers*calls), matched, "every call got its result")
			amp := float64(read) / float64(matched)
			t.Logf("clients=%d linger=%s: %d calls in %s, %d result records read for %d results needed: amplification %.2f "+
				"(reading every partition: %d); %d subscriptions (%.2f per call)",
				tc.clients, tc.linger, matched, elapsed.Round(time.Millisecond), read, matched, amp, tc.clients, subs,
				float64(subs)/float64(matched))
			assert.LessOrEqual(t, amp, tc.max)
		})
	}
}
