package processor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkPipelineThroughput measures end-to-end open-loop throughput on kfake:
// b.N reserve commands over 1000 SKUs produced at once, timed until every
// result is visible read_committed. One processor, 12 partitions.
func BenchmarkPipelineThroughput(b *testing.B) {
	h := newHarness(b, 12)
	h.cfg.CommitInterval = 50 * time.Millisecond
	in := h.start("")
	h.waitReady(in)
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
	recs := make([]*kgo.Record, b.N)
	for i := range recs {
		sku := fmt.Sprintf("B-%d", i%skus)
		v, _ := json.Marshal(reserve(fmt.Sprintf("bench-%d", i), sku, fmt.Sprintf("r-%d", i), 1))
		recs[i] = &kgo.Record{Topic: h.names.Commands, Key: []byte(sku), Value: v}
	}
	b.ResetTimer()
	start := time.Now()
	for _, r := range recs {
		h.prod.Produce(context.Background(), r, nil)
	}
	h.read(10*time.Minute, func() bool { return len(h.results) >= skus+b.N })
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "commands/s")
	n, sum := in.histogram("reservations_transaction_records")
	b.ReportMetric(sum/float64(max(n, 1)), "records/txn")
	_, commit := in.histogram("reservations_transaction_commit_seconds")
	b.ReportMetric(commit/float64(max(n, 1))*1000, "ms-commit/txn")
}
