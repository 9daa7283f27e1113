package processor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
)

// BenchmarkCartPipeline measures the cart path end to end on kfake, open loop:
// b.N 3-line cart.reserves (distinct SKUs of 1000, ample stock) produced at
// once, timed until every cart result is visible read_committed. Both roles
// run in process (SKU processor and cart coordinator, 6 partitions each).
func BenchmarkCartPipeline(b *testing.B) {
	h := newHarness(b, 6)
	h.cfg.CommitInterval = 50 * time.Millisecond
	carts := h.cartResults()
	skuP := h.start("")
	coord := h.start("", func(c *processor.Config) {
		c.Role = processor.RoleCart
		c.Group += "-cart"
	})
	h.waitReady(skuP)
	const skus = 1000
	var sets []*kgo.Record
	for i := range skus {
		sku := fmt.Sprintf("B-%d", i)
		v, _ := json.Marshal(stockSet("set-"+sku, sku, 1<<40))
		sets = append(sets, &kgo.Record{Topic: h.names.Commands, Key: []byte(sku), Value: v})
	}
	if err := h.prod.ProduceSync(context.Background(), sets...).FirstErr(); err != nil {
		b.Fatal(err)
	}
	h.read(60*time.Second, func() bool { return len(h.results) >= skus })
	// One cart first, so that the coordinator has its partitions.
	h.sendCarts(cartReserve("warm", "cart-warm", "B-0", 1, "B-1", 1, "B-2", 1))
	carts.waitDecided(60*time.Second, "warm")
	recs := make([]*kgo.Record, b.N)
	ids := make([]string, b.N)
	for i := range recs {
		ids[i] = fmt.Sprintf("k-%d", i)
		c := cartReserve(ids[i], fmt.Sprintf("cart-%d", i),
			fmt.Sprintf("B-%d", (3*i)%skus), 1+i%3, fmt.Sprintf("B-%d", (3*i+1)%skus), 1, fmt.Sprintf("B-%d", (3*i+2)%skus), 2)
		v, _ := json.Marshal(c)
		recs[i] = &kgo.Record{Topic: h.names.CartCommands, Key: []byte(c.CartID), Value: v}
	}
	b.ResetTimer()
	start := time.Now()
	for _, r := range recs {
		h.prod.Produce(context.Background(), r, nil)
	}
	carts.waitDecided(10*time.Minute, ids...)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "carts/s")
	b.StopTimer()
	for _, id := range ids {
		if res := carts.decisive(id); res.Outcome != schemas.OutcomeAccepted {
			b.Fatalf("cart %s: %+v", id, res)
		}
	}
	_ = coord
}
