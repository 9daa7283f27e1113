package bench

import (
	"context"
	"encoding/json"
	"flag"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/schemas"
)

// TestBinaryPhase builds the reservations binary and the load generator,
// runs broker, processor and load generators as processes at one concurrency
// for a few seconds and checks the figures and the invariant check.
func TestBinaryPhase(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds two binaries and runs them as processes (make test runs it)")
	}
	_, err := exec.LookPath("go")
	require.NoError(t, err, "the binary benchmark builds the reservations binary with the go command")
	cfg, err := Preset(ModeTiny)
	require.NoError(t, err)
	cfg.BinaryConcurrencies = []int{16}
	cfg.MinOps, cfg.MaxOps = 1000, 3000
	cfg.OpenLoopOps = 2000
	cfg.PacedDuration = time.Second
	cfg, err = cfg.withDefaults()
	require.NoError(t, err)
	r := &run{cfg: cfg, out: logWriter{t}, rep: newReport(cfg)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	require.NoError(t, r.binaryPhase(ctx))

	b := r.rep.Binary
	require.NotNil(t, b)
	// uniform and hot at 16 clients, open loop of both, paced hot.
	require.Len(t, b.Steps, 5)
	for _, s := range b.Steps {
		assert.Equal(t, SystemBinary, s.System)
		assert.Positive(t, s.Completed, "%s %s", s.Workload, s.Kind)
		assert.Zero(t, s.Errors, "%s %s", s.Workload, s.Kind)
		assert.Positive(t, s.Throughput, "%s %s", s.Workload, s.Kind)
		assert.Positive(t, s.P50, "%s %s", s.Workload, s.Kind)
		assert.GreaterOrEqual(t, s.P99, s.P50, "%s %s", s.Workload, s.Kind)
		assert.Less(t, s.P50, 5000.0, "%s %s", s.Workload, s.Kind)
		// The transaction figures come from the processor's /metrics.
		assert.Positive(t, s.Txns, "%s %s", s.Workload, s.Kind)
		assert.GreaterOrEqual(t, s.RecordsPerTxn, 1.0, "%s %s", s.Workload, s.Kind)
		for _, ms := range []float64{s.DecideMs, s.FlushMs, s.CommitMs} {
			assert.Positive(t, ms, "%s %s", s.Workload, s.Kind)
			assert.Less(t, ms, 5000.0, "%s %s", s.Workload, s.Kind)
		}
		if s.Workload == WorkloadHot && s.Kind == KindClosed {
			assert.Positive(t, s.Rejected, "the hot SKU's stock covers 60%% of the asks")
			assert.LessOrEqual(t, s.HotAccepted, s.HotStock)
		}
	}
	// The same-layout pass-through: open loop, then 16 clients closed loop.
	for _, s := range []*BinaryStep{b.Passthrough, b.Passthrough16} {
		require.NotNil(t, s)
		assert.Equal(t, SystemPassthrough, s.System)
		assert.Positive(t, s.Completed)
		assert.Zero(t, s.Errors)
	}
	assert.Equal(t, 16, b.Passthrough16.Clients)
	// The same, with records as large as the processor's, and paced at the
	// binary's hot paced rate.
	for _, s := range []*BinaryStep{b.PassthroughSized, b.PassthroughSized16, b.PassthroughSizedPaced} {
		require.NotNil(t, s)
		assert.Equal(t, SystemPassthroughSized, s.System)
		assert.Positive(t, s.Completed)
		assert.Zero(t, s.Errors)
	}
	assert.Equal(t, KindPaced, b.PassthroughSizedPaced.Kind)
	// The pass-through's transaction figures come from its own /metrics.
	for _, s := range []*BinaryStep{b.Passthrough, b.Passthrough16, b.PassthroughSized, b.PassthroughSized16, b.PassthroughSizedPaced} {
		assert.Positive(t, s.Txns, "%s %s", s.System, s.Kind)
		for _, ms := range []float64{s.DecideMs, s.FlushMs, s.CommitMs} {
			assert.Positive(t, ms, "%s %s", s.System, s.Kind)
		}
	}
	for _, s := range b.Steps {
		if s.Kind == KindPaced {
			assert.Equal(t, s.TargetRate, b.PassthroughSizedPaced.TargetRate, "the same rate as the binary's paced step")
		}
	}
	require.Len(t, b.PassChangelogBytes, 3, "reservation, idempotency entry, stock")
	assert.Greater(t, b.PassResultBytes, b.PassCommandBytes, "a result is larger than its command")
	c := b.Check
	assert.NoError(t, c.verdict())
	assert.Equal(t, cfg.SKUs+1+1+1+1, c.SKUs, "the uniform SKUs and a hot SKU per hot step (closed, warm-up, open, paced)")
	assert.Greater(t, c.CommandIDs, cfg.SKUs)
	assert.Equal(t, c.CommandIDs, c.Results, "one result per command id (the workloads send no duplicates)")

	r.rep.finish()
	h := r.rep.Headline
	for _, k := range []string{"binary_uniform_max_throughput", "binary_uniform_throughput_at_p99_150ms", "binary_uniform_p99_ms_at_best",
		"binary_uniform_clients_at_best", "binary_hot_max_throughput", "binary_p50_ms_at_16_clients", "binary_hot_p99_ms_at_half_max",
		"binary_open_loop_uniform_throughput", "passthrough_same_layout_p50_ms_at_16_clients",
		"passthrough_sized_p50_ms_at_16_clients", "passthrough_sized_throughput", "passthrough_sized_bytes_per_command",
		"binary_16_clients_records_per_txn", "binary_16_clients_decide_ms", "binary_16_clients_flush_ms", "binary_16_clients_end_ms",
		"passthrough_sized_16_clients_records_per_txn", "passthrough_sized_16_clients_copy_ms", "passthrough_sized_16_clients_flush_ms",
		"passthrough_sized_16_clients_end_ms"} {
		assert.Positive(t, h[k], k)
	}
	assert.Equal(t, 16.0, h["binary_uniform_clients_at_best"])
	assert.Zero(t, h["binary_violations"])
	assert.NotContains(t, h, "binary_vs_redis_throughput_ratio_uniform", "no Redis in this run")
	assert.NotContains(t, h, "binary_vs_best_sql_throughput_ratio_uniform", "no SQL in this run")
	assert.Contains(t, strings.Join(b.Notes, "\n"), "binary_vs_redis_throughput_ratio_uniform left out")
	if runtime.GOOS == "linux" {
		us := h["binary_processor_cpu_us_per_command"]
		assert.Positive(t, us)
		assert.Less(t, us, 1e5, "100 ms of processor CPU per command is not plausible")
		assert.Positive(t, h["binary_processor_max_rss_mb"])
	}
	md := r.rep.markdown()
	assert.Contains(t, md, "## The binary as a user runs it")
	assert.Contains(t, md, "reservations serve")
	assert.Contains(t, md, "the floor of `p50_ms_at_16_clients`")
	assert.Contains(t, md, "**The same pass-through with records as large as the processor's**")
}

// changelogRecord encodes one changelog change as the processor writes it.
func changelogRecord(t *testing.T, ch processor.Change) []byte {
	t.Helper()
	v, err := processor.EncodeChange(&ch)
	require.NoError(t, err)
	return v
}

// TestBinaryCheckDetects feeds the check a consistent world, then fabricated
// breaches of each invariant, and checks each is counted and fails the run.
func TestBinaryCheckDetects(t *testing.T) {
	stock := func(sku string, onHand, reserved int64) (string, *schemas.StockEntity) {
		return schemas.StockKey(sku), &schemas.StockEntity{SKU: sku, OnHand: onHand, Reserved: reserved, Available: onHand - reserved,
			Version: 1, Event: schemas.EventReserved, CommandID: "t.0"}
	}
	reservation := func(sku, id string, qty int64) (string, *schemas.ReservationEntity) {
		return schemas.ReservationKey(sku, id), &schemas.ReservationEntity{Reservation: schemas.Reservation{ReservationID: id, SKU: sku,
			Quantity: qty, Status: schemas.StatusActive, ExpiresAt: 1}, Version: 1, Event: schemas.EventReserved, CommandID: "t.0"}
	}
	command := func(id string) (string, *schemas.CommandEntity) {
		return schemas.CommandKey(id), &schemas.CommandEntity{CommandID: id, Version: 1, Event: schemas.EventDecided,
			Result: schemas.Result{CommandID: id, Type: schemas.TypeReserve, SKU: "U-1", Outcome: schemas.OutcomeAccepted}}
	}
	result := func(id string, dup bool) *kgo.Record {
		v, err := json.Marshal(schemas.Result{CommandID: id, Type: schemas.TypeReserve, SKU: "U-1", Outcome: schemas.OutcomeAccepted, Duplicate: dup})
		require.NoError(t, err)
		return &kgo.Record{Value: v, Headers: []kgo.RecordHeader{{Key: processor.HeaderCommandID, Value: []byte(id)}}}
	}
	type world struct {
		stockOnHand, stockReserved int64
		commands, results          []string // command ids with a command/ record, with a result
		dupResults                 []string // duplicate answers
	}
	clean := world{stockOnHand: 10, stockReserved: 3, commands: []string{"t.0", "t.1"}, results: []string{"t.0", "t.1"}}
	tests := []struct {
		name  string
		edit  func(w *world)
		check func(t *testing.T, c BinaryCheck)
	}{
		{"clean", func(*world) {}, func(t *testing.T, c BinaryCheck) {
			assert.Zero(t, c.Violations(), c.Examples)
			assert.NoError(t, c.verdict())
		}},
		{"a duplicate answer is no second decision", func(w *world) { w.dupResults = []string{"t.0"} }, func(t *testing.T, c BinaryCheck) {
			assert.Zero(t, c.Violations(), c.Examples)
		}},
		{"reserved != sum(active)", func(w *world) { w.stockReserved = 5 }, func(t *testing.T, c BinaryCheck) {
			assert.Equal(t, 1, c.MismatchedSKUs)
		}},
		{"oversold", func(w *world) { w.stockOnHand = 2 }, func(t *testing.T, c BinaryCheck) {
			assert.Equal(t, 1, c.OversoldSKUs)
		}},
		{"two command records", func(w *world) { w.commands = append(w.commands, "t.1") }, func(t *testing.T, c BinaryCheck) {
			assert.Equal(t, 1, c.DecidedTwice)
		}},
		{"two decisions", func(w *world) { w.results = append(w.results, "t.0") }, func(t *testing.T, c BinaryCheck) {
			assert.Equal(t, 1, c.DecidedTwice)
		}},
		{"result without its decision", func(w *world) { w.results = append(w.results, "t.2") }, func(t *testing.T, c BinaryCheck) {
			assert.Equal(t, 1, c.Unmatched)
		}},
		{"decision without its result", func(w *world) { w.commands = append(w.commands, "t.2") }, func(t *testing.T, c BinaryCheck) {
			assert.Equal(t, 1, c.Unmatched)
		}},
		{"a command nobody sent", func(w *world) {
			w.commands = append(w.commands, "x.0")
			w.results = append(w.results, "x.0")
		}, func(t *testing.T, c BinaryCheck) {
			assert.Equal(t, 1, c.Unknown)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := clean
			w.commands, w.results = append([]string(nil), clean.commands...), append([]string(nil), clean.results...)
			tc.edit(&w)
			c := newBinChecker([]string{"t"})
			k, s := stock("U-1", w.stockOnHand, w.stockReserved)
			c.changelog(k, changelogRecord(t, processor.Change{Change: skuChange(k, s, nil, nil)}))
			k, rv := reservation("U-1", "r-1", 3)
			c.changelog(k, changelogRecord(t, processor.Change{Change: skuChange(k, nil, rv, nil)}))
			for _, id := range w.commands {
				k, cmd := command(id)
				c.changelog(k, changelogRecord(t, processor.Change{Change: skuChange(k, nil, nil, cmd)}))
			}
			for _, id := range w.results {
				c.result(result(id, false))
			}
			for _, id := range w.dupResults {
				c.result(result(id, true))
			}
			c.result(&kgo.Record{Value: []byte(`{"type":"expired"}`)}) // a notice: no command id, ignored
			v := c.verdict()
			assert.Equal(t, 1, v.SKUs)
			tc.check(t, v)
			if tc.name != "clean" && v.Violations() > 0 {
				err := v.verdict()
				require.Error(t, err, "a violation fails the run")
				assert.Contains(t, err.Error(), "violations")
			}
		})
	}
	t.Run("undecodable changelog record", func(t *testing.T) {
		c := newBinChecker([]string{"t"})
		c.changelog(schemas.StockKey("U-1"), []byte(`{not json`))
		assert.Equal(t, 1, c.verdict().Undecodable)
	})
	t.Run("nothing checked fails", func(t *testing.T) {
		v := newBinChecker(nil).verdict()
		assert.Error(t, v.verdict())
	})
}

func TestParseProcStat(t *testing.T) {
	// Field 2 may hold spaces and parentheses; utime 250 and stime 50 ticks.
	line := "4242 (my (odd) proc) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0"
	s, err := parseProcStat(line)
	require.NoError(t, err)
	assert.InDelta(t, 3.0, s, 1e-9)
	_, err = parseProcStat("4242 (x) S 1 2")
	assert.Error(t, err)
	if runtime.GOOS == "linux" {
		self, err := procCPUSeconds("self")
		require.NoError(t, err)
		assert.GreaterOrEqual(t, self, 0.0)
	}
}

func TestLoadConfigArgsRoundTrip(t *testing.T) {
	lc := LoadConfig{Brokers: []string{"127.0.0.1:1", "127.0.0.1:2"}, TopicPrefix: "p", Kind: KindPaced, Workload: WorkloadHot,
		Ops: 123, SKUs: 45, Seed: 1 << 63, Tag: "b7", Clients: 9, Rate: 1234.5, Timeout: 1500 * time.Millisecond,
		CPUPIDs: map[string]int{"processor": 10, "broker": 11}}
	var got LoadConfig
	fs := flagSet()
	got.RegisterFlags(fs)
	require.NoError(t, fs.Parse(lc.Args()))
	assert.Equal(t, lc, got)
	require.NoError(t, got.validate())
}

func skuChange(key string, s *schemas.StockEntity, r *schemas.ReservationEntity, c *schemas.CommandEntity) sku.Change {
	return sku.Change{Key: key, Stock: s, Reservation: r, Command: c}
}

func flagSet() *flag.FlagSet { return flag.NewFlagSet("loadgen load", flag.ContinueOnError) }
