package processor_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/internal/kafkatest"
	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// harness runs processors against a broker and reads what they write.
type harness struct {
	t     testing.TB
	c     *kafkatest.Cluster
	names topics.Names
	parts int32
	prod  *kgo.Client
	cfg   processor.Config

	mu      sync.Mutex
	results []result // every result read so far, in read order
	byCmd   map[string][]result
	reader  *kgo.Client
	// drainMark is the result count at drain's last check.
	drainMark int
}

type result struct {
	schemas.Result
	rec *kgo.Record
}

func newHarness(t testing.TB, parts int32) *harness {
	t.Helper()
	return newHarnessOn(t, kafkatest.New(t), parts)
}

// newHarnessOn is newHarness on a given cluster.
func newHarnessOn(t testing.TB, c *kafkatest.Cluster, parts int32) *harness {
	t.Helper()
	h := &harness{t: t, c: c, parts: parts, byCmd: make(map[string][]result)}
	h.names = c.Topics(t, parts)
	h.prod = c.Client(t, kgo.RequiredAcks(kgo.AllISRAcks()))
	h.cfg = processor.Config{
		Brokers:            c.Brokers,
		Topics:             h.names,
		Group:              h.names.Commands + "-group",
		CommitInterval:     20 * time.Millisecond,
		TransactionTimeout: 5 * time.Second,
		SessionTimeout:     6 * time.Second,
		KafkaOpts:          kafkatest.ClientOpts(),
	}
	h.reader = c.Client(t, kgo.ConsumeTopics(h.names.Results), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	return h
}

func testLogger(t testing.TB) *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("TEST_LOG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With("test", t.Name())
}

// instance is one running processor.
type instance struct {
	p      *processor.Processor
	cancel context.CancelFunc
	done   chan error
	dir    string
	reg    *prometheus.Registry
	group  string
}

// gaugeSum sums a gauge metric over its label values.
func (in *instance) gaugeSum(name string) float64 {
	mfs, _ := in.reg.Gather()
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// counter sums a counter metric over its label values.
func (in *instance) counter(name string) float64 {
	mfs, _ := in.reg.Gather()
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// histogram returns count and sum of a histogram metric of the instance.
func (in *instance) histogram(name string) (uint64, float64) {
	mfs, _ := in.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	return 0, 0
}

// start runs a processor with state in dir (a new temp dir when empty).
func (h *harness) start(dir string, mod ...func(*processor.Config)) *instance {
	h.t.Helper()
	return h.startOpts(dir, nil, mod...)
}

// startWith runs a processor with extra options in a new temp dir.
func (h *harness) startWith(opt processor.Option, mod ...func(*processor.Config)) *instance {
	h.t.Helper()
	return h.startOpts("", []processor.Option{opt}, mod...)
}

func (h *harness) startOpts(dir string, opts []processor.Option, mod ...func(*processor.Config)) *instance {
	h.t.Helper()
	if dir == "" {
		dir = h.t.TempDir()
	}
	cfg := h.cfg
	cfg.StateDir = dir
	for _, m := range mod {
		m(&cfg)
	}
	reg := prometheus.NewRegistry()
	p, err := processor.New(cfg, append([]processor.Option{processor.WithLogger(testLogger(h.t)), processor.WithRegisterer(reg)}, opts...)...)
	require.NoError(h.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{p: p, cancel: cancel, done: make(chan error, 1), dir: dir, reg: reg, group: cfg.Group}
	go func() { in.done <- p.Run(ctx) }()
	h.t.Cleanup(func() { in.stop(h.t) })
	return in
}

// stop shuts the instance down cleanly (idempotent).
func (in *instance) stop(t testing.TB) {
	in.cancel()
	select {
	case err, ok := <-in.done:
		if ok {
			require.NoError(t, err)
			close(in.done)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("processor did not stop")
	}
}

// waitReady waits until the instances, all members of one group, are ready
// and own every partition between them. Instances of different groups (the
// SKU processors and the cart coordinator) are waited for one call each.
func (h *harness) waitReady(ins ...*instance) {
	h.t.Helper()
	require.NotEmpty(h.t, ins, "waitReady needs the instances to wait for")
	for _, in := range ins[1:] {
		require.Equal(h.t, ins[0].group, in.group, "waitReady counts the partitions of one group")
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		total := 0
		ready := true
		for _, in := range ins {
			if !in.p.Ready() {
				ready = false
			}
			total += len(in.p.Status())
		}
		if ready && total == int(h.parts) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("processors not ready with %d partitions", h.parts)
}

// send produces commands keyed by their SKU with the default (murmur2) partitioner.
func (h *harness) send(cmds ...schemas.Command) {
	h.t.Helper()
	recs := make([]*kgo.Record, len(cmds))
	for i, c := range cmds {
		v, err := json.Marshal(c)
		require.NoError(h.t, err)
		recs[i] = &kgo.Record{Topic: h.names.Commands, Key: []byte(c.SKU), Value: v}
	}
	require.NoError(h.t, h.prod.ProduceSync(context.Background(), recs...).FirstErr())
}

// sendRaw produces a raw record to an explicit partition (-1: by key).
func (h *harness) sendRaw(key, value []byte, partition int32) {
	h.t.Helper()
	r := &kgo.Record{Topic: h.names.Commands, Key: key, Value: value}
	if partition >= 0 {
		r.Partition = partition
		cl := h.c.Client(h.t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		require.NoError(h.t, cl.ProduceSync(context.Background(), r).FirstErr())
		return
	}
	require.NoError(h.t, h.prod.ProduceSync(context.Background(), r).FirstErr())
}

// read polls results until cond holds or the deadline passes.
func (h *harness) read(timeout time.Duration, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		h.mu.Lock()
		ok := cond()
		h.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("condition not met within %s (%d results read)", timeout, len(h.results))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fs := h.reader.PollFetches(ctx)
		cancel()
		h.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			var res schemas.Result
			require.NoError(h.t, json.Unmarshal(r.Value, &res), "result %s", r.Value)
			rr := result{res, r}
			h.results = append(h.results, rr)
			if res.CommandID != "" {
				h.byCmd[res.CommandID] = append(h.byCmd[res.CommandID], rr)
			}
		})
		h.mu.Unlock()
	}
}

// waitDecided reads until every id has a decisive (non-duplicate) result.
func (h *harness) waitDecided(timeout time.Duration, ids ...string) {
	h.t.Helper()
	h.read(timeout, func() bool {
		for _, id := range ids {
			if h.decisive(id) == nil {
				return false
			}
		}
		return true
	})
}

// decisive returns the first non-duplicate result of id (mu held or quiescent).
func (h *harness) decisive(id string) *schemas.Result {
	for _, r := range h.byCmd[id] {
		if !r.Duplicate {
			return &r.Result
		}
	}
	return nil
}

func i64(v int64) *int64 { return &v }

func stockSet(id, sku string, onHand int64) schemas.Command {
	return schemas.Command{CommandID: id, Type: schemas.TypeStockSet, SKU: sku, OnHand: i64(onHand)}
}

func reserve(id, sku, res string, qty int64) schemas.Command {
	return schemas.Command{CommandID: id, Type: schemas.TypeReserve, SKU: sku, ReservationID: res, Quantity: i64(qty)}
}

func cmdFor(typ, id, sku, res string) schemas.Command {
	return schemas.Command{CommandID: id, Type: typ, SKU: sku, ReservationID: res}
}

// duplicates counts duplicate results read (mu held).
func (h *harness) duplicates() int {
	n := 0
	for _, r := range h.results {
		if r.Duplicate {
			n++
		}
	}
	return n
}
