package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// logWriter sends the harness's progress lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestRunTiny runs every phase of the harness in a tiny configuration end to
// end and checks the report's structure and the files it writes.
func TestRunTiny(t *testing.T) {
	db := pgtest.NewDatabase(t)
	out := t.TempDir()
	coreFile := filepath.Join(out, "core.txt")
	require.NoError(t, os.WriteFile(coreFile, []byte(sampleGoBench), 0o644))
	cfg := Config{Mode: ModeTiny, OutDir: out, PGDSN: db.DSN, CoreBenchFile: coreFile, Command: "test"}
	rep, err := Run(context.Background(), cfg, logWriter{t})
	require.NoError(t, err)

	// Every system, workload and concurrency was measured.
	for _, system := range []string{SystemPipeline, SystemSerializable, SystemBestSQL, SystemRedis, SystemRedisAlways} {
		for _, w := range Workloads {
			n := len(rep.find(func(s *Step) bool { return s.System == system && s.Workload == w && s.Kind == KindClosed }))
			assert.Equal(t, 2, n, "%s %s closed-loop steps", system, w)
		}
	}
	for _, s := range rep.Steps {
		assert.Positive(t, s.Completed, "%s %s %s clients=%d completed nothing", s.Series(), s.Workload, s.Kind, s.Clients)
		assert.Zero(t, s.Errors, "%s %s %s clients=%d", s.Series(), s.Workload, s.Kind, s.Clients)
		if s.Kind != KindClosed || s.System != SystemPipeline || s.Workload != WorkloadHot {
			continue
		}
		assert.Positive(t, s.Rejected, "the hot SKU's stock covers 60%% of the asks: some reserves are rejected")
		assert.LessOrEqual(t, s.HotAccepted, s.HotStock)
	}
	assert.Len(t, rep.find(func(s *Step) bool { return s.Kind == KindPaced }), 1)
	assert.Len(t, rep.find(func(s *Step) bool { return s.System == SystemPassthrough }), 1)

	// The headline has every key of the issue, as finite numbers.
	for _, k := range []string{"hot_vs_serializable_throughput_ratio", "hot_vs_best_sql_throughput_ratio",
		"uniform_vs_best_sql_throughput_ratio", "e2e_vs_passthrough_ratio", "hot_p99_ms_at_half_max",
		"restore_records_per_s", "expiry_lag_p99_ms", "core_commands_per_s"} {
		v, ok := rep.Headline[k]
		if assert.True(t, ok, "headline key %s", k) {
			assert.False(t, math.IsNaN(v) || math.IsInf(v, 0), "%s = %v", k, v)
			if k == "expiry_lag_p99_ms" {
				assert.GreaterOrEqual(t, v, 0.0, k) // timers often fire in the millisecond they are due
			} else {
				assert.Positive(t, v, k)
			}
		}
	}
	assert.InDelta(t, 1e9/1367.0, rep.Headline["core_go_bench_commands_per_s"], 1, "taken from the go test output")
	assert.Len(t, rep.Targets, 13)
	// The Redis baselines: the keys of both durability classes, no violation.
	for _, prefix := range []string{SystemRedis, SystemRedisAlways} {
		for _, w := range Workloads {
			for _, k := range []string{"max_throughput", "p99_ms_at_best", "clients_at_best", "throughput_at_p99_150ms"} {
				assert.Positive(t, rep.Headline[prefix+"_"+w+"_"+k], "%s_%s_%s", prefix, w, k)
			}
		}
	}
	assert.Contains(t, rep.Headline, "redis_violations")
	assert.Zero(t, rep.Headline["redis_violations"])
	require.Len(t, rep.Redis.Checks, 2)
	for _, c := range rep.Redis.Checks {
		assert.True(t, c.OK(), c.summary())
		assert.Positive(t, c.Duplicates, "%s: the mixed workload's re-sent ids", c.System)
	}

	// Restore, sink and expiry produced figures; nothing was oversold.
	assert.Equal(t, int64(rep.Settings.SKUs+2000), rep.Restore.Records)
	assert.Empty(t, rep.Restore.SinkError)
	assert.Equal(t, int64(2000), rep.Restore.SinkReservationsRows)
	// The restore's parts alone: the broker read, the Badger writes both ways.
	assert.Positive(t, rep.Restore.ReadOnlyRecordsPerS)
	assert.Positive(t, rep.Restore.StoreOnlyRecordsPerS)
	assert.Positive(t, rep.Restore.StoreBulkRecordsPerS)
	assert.Positive(t, rep.Headline["restore_store_best_records_per_s"])
	if runtime.GOOS == "linux" {
		assert.Positive(t, rep.Restore.RebuildCoresBusy)
	}
	assert.Equal(t, rep.Expiry.Holds, rep.Expiry.Received)
	assert.Less(t, rep.Expiry.LagP99, 5000.0)
	require.NotEmpty(t, rep.Oversell)
	for _, c := range rep.Oversell {
		assert.True(t, c.OK(), "oversell check %+v", c)
	}
	// Carts: both systems at every concurrency, the same carts, nothing partial.
	for _, system := range []string{SystemPipeline, SystemSQLCart} {
		var steps []CartStep
		for _, s := range rep.Carts.Steps {
			if s.System == system {
				steps = append(steps, s)
			}
		}
		require.Len(t, steps, 2, "%s cart steps", system)
		for _, s := range steps {
			assert.Positive(t, s.Accepted, "%s clients=%d accepted carts", system, s.Clients)
			assert.Zero(t, s.Errors+s.ReleaseErrors+s.Problems, "%s clients=%d", system, s.Clients)
			assert.Equal(t, s.Accepted, s.Kept+s.Releases, "%s: every accepted cart is kept or released", system)
			assert.Positive(t, s.HoldsPerS)
			assert.Positive(t, s.P99)
		}
	}
	rejected := func(system string) (n int) {
		for _, s := range rep.Carts.Steps {
			if s.System == system {
				n += s.Rejected
			}
		}
		return n
	}
	assert.Positive(t, rejected(SystemPipeline), "carts with a sold-out line are rejected")
	assert.Equal(t, rejected(SystemPipeline), rejected(SystemSQLCart), "the same carts are rejected in both systems")
	require.Len(t, rep.Carts.Checks, 2)
	for _, c := range rep.Carts.Checks {
		assert.True(t, c.OK(), "cart check %+v", c)
		assert.Positive(t, c.Kept)
		assert.Positive(t, c.Released)
		assert.Positive(t, c.Rejected)
	}
	for _, k := range []string{"cart_holds_per_s", "cart_p99_ms", "sql_cart_holds_per_s", "sql_cart_p99_ms", "cart_vs_sql_ratio"} {
		assert.Positive(t, rep.Headline[k], k)
	}
	assert.Contains(t, rep.Headline, "cart_violations")
	assert.Zero(t, rep.Headline["cart_violations"])
	assert.Positive(t, rep.Core.Memory.TimersBytes)
	assert.Greater(t, rep.Core.Memory.CachedBytes, rep.Core.Memory.TimersBytes)
	assert.Positive(t, rep.Core.Badger.KeysPerS)

	// The files.
	b, err := os.ReadFile(filepath.Join(out, "bench", "latest.json"))
	require.NoError(t, err)
	var flat map[string]float64
	require.NoError(t, json.Unmarshal(b, &flat), "latest.json must be flat keys with numbers only")
	assert.Equal(t, rep.Headline["restore_records_per_s"], flat["restore_records_per_s"])
	svg, err := os.ReadFile(filepath.Join(out, "bench", "chart.svg"))
	require.NoError(t, err)
	assert.True(t, bytes.HasPrefix(svg, []byte("<svg")))
	assert.Contains(t, string(svg), "polyline")
	md, err := os.ReadFile(filepath.Join(out, "BENCHMARKS.md"))
	require.NoError(t, err)
	for _, s := range []string{"## Targets", "## Machine", "## Latency curves", "## Restore and sink",
		"## Expiry", "## No oversell", "| its parts alone: writing the same records, held in memory, into fresh stores", "BenchmarkApply/reserve", "bench/chart.svg", "## Carts: all-or-nothing 3-line holds",
		"`cart_vs_sql_ratio`", "**0** violations",
		"| workload | best SQL (`fsync=off`) | Redis, `appendfsync everysec` (comparable) | Redis, `appendfsync always` |", "| Redis | redis-server "} {
		assert.Contains(t, string(md), s)
	}
}

// tinyRun is a run of the tiny preset on a fresh database of the test server.
func tinyRun(ctx context.Context, t *testing.T) *run {
	t.Helper()
	db := pgtest.NewDatabase(t)
	pg, err := openPostgres(ctx, db.DSN, logWriter{t})
	require.NoError(t, err)
	cfg, err := Config{Mode: ModeTiny}.withDefaults()
	require.NoError(t, err)
	return &run{cfg: cfg, out: logWriter{t}, pg: pg}
}

// TestOversellCheckDetects makes sure the SQL check fails on an oversold and
// on an inconsistent table, and passes on a consistent one.
func TestOversellCheckDetects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := tinyRun(ctx, t)
	pg, cfg := r.pg, r.cfg
	require.NoError(t, r.createSQLSchema(ctx, "bench_ser"))
	pool, err := pg.pool(ctx, "bench_ser", 2)
	require.NoError(t, err)
	defer pool.Close()

	// Consistent: reserves through the baseline.
	p := genPlan(WorkloadHot, "c1", 50, cfg.SKUs, 1)
	require.NoError(t, pg.exec(ctx, `INSERT INTO bench_ser.stock (sku, on_hand) VALUES ('`+p.hotSKU+`', 10)`))
	var st Step
	closedLoop(ctx, sqlExec{pool: pool, system: SystemSerializable}, p, 4, 10*time.Second, &st)
	require.Zero(t, st.Errors)
	require.LessOrEqual(t, st.HotAccepted, int64(10))
	c := checkSQL(ctx, pool, SystemSerializable)
	assert.True(t, c.OK(), "%+v", c)
	assert.Equal(t, cfg.SKUs+1, c.SKUsChecked)

	// Oversold: more reserved than on hand (with matching reservations).
	_, err = pool.Exec(ctx, `INSERT INTO stock (sku, on_hand, reserved) VALUES ('OVER', 1, 2)`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO reservations (reservation_id, sku, quantity, status, expires_at)
		VALUES ('o1', 'OVER', 1, 'active', now()), ('o2', 'OVER', 1, 'active', now())`)
	require.NoError(t, err)
	c = checkSQL(ctx, pool, SystemSerializable)
	assert.False(t, c.OK())
	assert.Equal(t, 1, c.OversoldSKUs)
	assert.Zero(t, c.MismatchedSKUs)

	// Inconsistent: reserved differs from the sum of active reservations.
	_, err = pool.Exec(ctx, `UPDATE stock SET reserved = reserved + 1 WHERE sku = $1`, uniformSKU(0))
	require.NoError(t, err)
	c = checkSQL(ctx, pool, SystemSerializable)
	assert.Equal(t, 1, c.MismatchedSKUs)

	// And the report turns a violation into a missed target.
	rep := newReport(cfg)
	rep.Oversell = []OversellCheck{c}
	rep.finish()
	last := rep.Targets[len(rep.Targets)-1]
	assert.Equal(t, "invariant_violations", last.Key)
	assert.False(t, last.Met)
}

const sampleGoBench = `goos: linux
goarch: amd64
pkg: github.com/reservations/reservations/processor
cpu: Intel(R) Xeon(R) Processor
BenchmarkApply/reserve-2         	  239280	      1367 ns/op	    731497 commands/s	    1506 B/op	      15 allocs/op
BenchmarkApply/duplicate-2       	 1103571	       316.4 ns/op	   3161010 commands/s	     400 B/op	       2 allocs/op
BenchmarkCodec/decode-command-2  	  220417	      1510 ns/op	     464 B/op	      12 allocs/op
BenchmarkCodec/encode-outputs-2  	  215088	      1724 ns/op	    1216 B/op	       3 allocs/op
PASS
ok  	github.com/reservations/reservations/processor	2.522s
`

func TestParseGoBench(t *testing.T) {
	bs, err := parseGoBench(strings.NewReader(sampleGoBench))
	require.NoError(t, err)
	require.Len(t, bs, 4)
	assert.Equal(t, GoBench{Name: "BenchmarkApply/reserve", N: 239280, NsPerOp: 1367, BytesPerOp: 1506, AllocsPerOp: 15,
		Metrics: map[string]float64{"commands/s": 731497}}, bs[0])
	assert.Equal(t, "BenchmarkCodec/decode-command", bs[2].Name)
	assert.Empty(t, bs[2].Metrics)
}

func TestPercentiles(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 1000; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	p50, p95, p99, p999, mx := percentiles(d)
	assert.Equal(t, []float64{500, 950, 990, 999, 1000}, []float64{p50, p95, p99, p999, mx})
	_, _, p99, _, _ = percentiles(nil)
	assert.Zero(t, p99)
}

func TestBestOfPrefersBudget(t *testing.T) {
	steps := []Step{
		{System: SystemBestSQL, Workload: WorkloadHot, Kind: KindClosed, Clients: 16, Completed: 1, Throughput: 100, P99: 20},
		{System: SystemBestSQL, Workload: WorkloadHot, Kind: KindClosed, Clients: 64, Completed: 1, Throughput: 300, P99: 140},
		{System: SystemBestSQL, Workload: WorkloadHot, Kind: KindClosed, Clients: 256, Completed: 1, Throughput: 400, P99: 600},
	}
	b, ok := bestOf(steps, SystemBestSQL, WorkloadHot)
	require.True(t, ok)
	assert.Equal(t, Best{Series: SystemBestSQL, System: SystemBestSQL, Workload: WorkloadHot, Clients: 64, Throughput: 300,
		P99: 140, WithinBudget: true, MaxThroughput: 400}, b)
	// No step within the budget: the lowest p99 stands in, flagged.
	steps[0].P99, steps[1].P99 = 500, 400
	b, _ = bestOf(steps, SystemBestSQL, WorkloadHot)
	assert.False(t, b.WithinBudget)
	assert.Equal(t, 64, b.Clients)
}

// TestMarkdownOfEmptyReport renders the report templates on a report that
// measured nothing: every optional section says so instead of failing.
func TestMarkdownOfEmptyReport(t *testing.T) {
	md := (&Report{Mode: ModeTiny, Headline: map[string]float64{}}).markdown()
	for _, s := range []string{"## Targets", "0 of 0 targets met", "## Carts: all-or-nothing 3-line holds\n\nNot measured this run.",
		"No profile this run (pass `-cpuprofile`).", "## Method and fairness", goBenchCmd} {
		assert.Contains(t, md, s)
	}
	assert.NotContains(t, md, "### Missed targets")
	assert.NotContains(t, md, "{{")
}

func TestRoutesLookup(t *testing.T) {
	var rs routes[route]
	a := &route{tag: "c1.hot"}
	rs.add(a.tag, a)
	for _, tc := range []struct {
		id   string
		want *route
		n    int
	}{
		{"c1.hot.7", a, 7},
		{"c1.hot.0", a, 0},
		{"c2.hot.7", nil, 0},
		{"c1.hot.-1", nil, 0},
		{"c1.hot.x", nil, 0},
		{"nodot", nil, 0},
	} {
		ro, n := rs.lookup(tc.id)
		assert.Same(t, tc.want, ro, tc.id)
		assert.Equal(t, tc.n, n, tc.id)
	}
	rs.remove(a.tag)
	ro, _ := rs.lookup("c1.hot.7")
	assert.Nil(t, ro)
}

func TestTargetValueFormats(t *testing.T) {
	for _, tc := range []struct {
		key  string
		v    float64
		want string
	}{
		{"binary_vs_redis_throughput_ratio_uniform", 1.6865, "1.69x"},
		{"e2e_vs_passthrough_same_layout_ratio", 0.315, "0.315x"},
		{"e2e_vs_passthrough_same_layout_ratio", 0.4987, "0.499x"}, // a miss of the 0.5 target must not read 0.50
		{"p50_ms_at_16_clients", 3.586, "3.6 ms"},
		{"failover_takeover_seconds_with_standby", 0.2199, "0.22 s"},
		{"processor_cpu_us_per_command", 28.58, "28.6 µs"},
		{"restore_records_per_s", 260190.4, "260,190/s"},
		{"rolling_restart_partition_moves", 0, "0"},
	} {
		assert.Equal(t, tc.want, targetValue(Target{Key: tc.key, Value: tc.v}), tc.key)
	}
}

// TestRestoreMissExplained renders the missed restore target with Badger
// alone under the target (the limit is stated), over it (the rest of the
// restore is blamed), and without the parts measured (nothing claimed).
func TestRestoreMissExplained(t *testing.T) {
	const limit = "no restore with Badger reaches 500,000 records/s"
	for _, c := range []struct {
		name        string
		store, bulk float64
		want, not   []string
	}{
		{"Badger under the target", 380_000, 430_000, []string{limit, "(1.9 of 2 cores busy in the faster of the two)",
			"Rebuild reached 70% of Badger's own rate", "kept 1.8 of 2 cores busy"}, []string{"Badger alone is fast enough"}},
		{"Badger over the target", 900_000, 700_000, []string{"Badger alone is fast enough here"}, []string{limit}},
		{"parts not measured", 0, 0, nil, []string{limit, "Badger alone"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			md := renderReport(t, func(rep *Report) {
				rep.Restore = Restore{Records: 1000, RebuildSeconds: 1, RebuildRecordsPerS: 301_000,
					RebuildCoresBusy: 1.8, ReadOnlyRecordsPerS: 1.5e6, StoreOnlyRecordsPerS: c.store, StoreOnlyCoresBusy: 1.7,
					StoreBulkRecordsPerS: c.bulk, StoreBulkCoresBusy: 1.9}
			})
			require.Contains(t, md, "`restore_records_per_s`")
			assertMentions(t, md, c.want, c.not)
		})
	}
}

// TestHotP99MissExplained: the missed paced hot p99 quotes the sized
// pass-through paced at the same rate when the run measured it.
func TestHotP99MissExplained(t *testing.T) {
	const kafka = "the Kafka protocol alone has a tail at this rate, with transactions this small"
	for _, c := range []struct {
		name   string
		paced  *BinaryStep
		want   []string
		absent []string
	}{
		{"pass-through paced", &BinaryStep{Step: Step{System: SystemPassthroughSized, Kind: KindPaced, Workload: WorkloadUniform,
			TargetRate: 22_000, Completed: 44_000, P99: 27.4}, ProcessorCPUUsPerCommand: 26},
			[]string{"paced at the same rate with uniform commands (no decisions, no store; the binary's hot step puts 90% of its commands on one SKU), had p99 27.4 ms and spent 26 µs per command itself", kafka}, nil},
		{"not measured", nil, nil, []string{kafka}},
	} {
		t.Run(c.name, func(t *testing.T) {
			md := renderReport(t, func(rep *Report) {
				rep.Binary = &Binary{Steps: []BinaryStep{{Step: Step{System: SystemBinary, Kind: KindPaced, Workload: WorkloadHot,
					TargetRate: 22_000, Completed: 44_000, Seconds: 2, P99: 88}, ProcessorCPUSeconds: 1.8, ProcessorCPUUsPerCommand: 41}},
					PassthroughSizedPaced: c.paced}
			})
			require.Contains(t, md, "88.0 ms at 22,000/s")
			assertMentions(t, md, c.want, c.absent)
		})
	}
}

// renderReport renders the Markdown report of a tiny-mode run on 2 CPUs
// whose measurements set fills in.
func renderReport(t *testing.T, set func(*Report)) string {
	t.Helper()
	cfg, err := Config{Mode: ModeTiny}.withDefaults()
	require.NoError(t, err)
	rep := newReport(cfg)
	rep.Machine.CPUs = 2
	set(rep)
	rep.finish()
	return rep.markdown()
}

// assertMentions checks that md contains every string of want and none of absent.
func assertMentions(t *testing.T, md string, want, absent []string) {
	t.Helper()
	for _, s := range want {
		assert.Contains(t, md, s)
	}
	for _, s := range absent {
		assert.NotContains(t, md, s)
	}
}

// TestP50MissSplitsTheTransaction: the missed 16-client p50 quotes the
// phases of the step's transactions when the processor reported them, and
// the step's row shows them.
func TestP50MissSplitsTheTransaction(t *testing.T) {
	const split = "At 16 clients a committed transaction held 4.4 commands on average, and a transaction took on average 0.38 ms to decide"
	for _, c := range []struct {
		name   string
		decide float64
		want   []string
		absent []string
	}{
		{"phases reported", 0.384, []string{split, "0.52 ms until the broker had acknowledged its records, and 0.82 ms to end",
			"5000 txns, 4 cmds/txn, decide 0.4 + flush 0.5 + end 0.8 ms",
			"it has p50 2.9 ms; its transactions held 3.7 commands and took 0.02 ms to copy them on average, 0.45 ms to flush and 0.80 ms to end."},
			[]string{"commit 0.8 ms"}},
		{"no phases", 0, []string{"5000 txns, 4 cmds/txn, commit 0.8 ms", "it has p50 2.9 ms."}, []string{"to decide (the", "to copy them"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			md := renderReport(t, func(rep *Report) {
				rep.Binary = &Binary{Steps: []BinaryStep{{Step: Step{System: SystemBinary, Kind: KindClosed, Workload: WorkloadUniform,
					Clients: 16, Completed: 22_000, Seconds: 5, Throughput: 4400, P50: 4.1, P99: 9, Txns: 5000, RecordsPerTxn: 4.4,
					DecideMs: c.decide, FlushMs: 0.518, CommitMs: 0.819}}},
					PassthroughSized16: &BinaryStep{Step: Step{System: SystemPassthroughSized, Kind: KindClosed, Workload: WorkloadUniform,
						Clients: 16, Completed: 22_000, P50: 2.9, Txns: 6000, RecordsPerTxn: 3.7, DecideMs: c.decide / 20, FlushMs: 0.45, CommitMs: 0.8}}}
			})
			require.Contains(t, md, "(4.1 ms)")
			assertMentions(t, md, c.want, c.absent)
		})
	}
}

// TestParseMetrics reads the transaction counters from the text a
// processor's /metrics serves.
func TestParseMetrics(t *testing.T) {
	text := `# TYPE reservations_transaction_decide_seconds histogram
reservations_transaction_decide_seconds_bucket{role="sku",le="0.001"} 3
reservations_transaction_decide_seconds_bucket{role="sku",le="+Inf"} 4
reservations_transaction_decide_seconds_sum{role="sku"} 0.006
reservations_transaction_decide_seconds_count{role="sku"} 4
# TYPE reservations_transaction_flush_seconds histogram
reservations_transaction_flush_seconds_bucket{role="sku",le="+Inf"} 4
reservations_transaction_flush_seconds_sum{role="sku"} 0.002
reservations_transaction_flush_seconds_count{role="sku"} 4
# TYPE reservations_transaction_commit_seconds histogram
reservations_transaction_commit_seconds_bucket{role="sku",le="0.128"} 3
reservations_transaction_commit_seconds_bucket{role="sku",le="+Inf"} 4
reservations_transaction_commit_seconds_sum{role="sku"} 0.4
reservations_transaction_commit_seconds_count{role="sku"} 4
# TYPE reservations_transaction_records histogram
reservations_transaction_records_bucket{role="sku",le="+Inf"} 4
reservations_transaction_records_sum{role="sku"} 10
reservations_transaction_records_count{role="sku"} 4
`
	mfs, err := parseMetrics(strings.NewReader(text))
	require.NoError(t, err)
	var st Step
	txnStatsOf(mfs, "reservations").since(txnStats{}, &st)
	assert.Equal(t, 4, st.Txns)
	assert.InDelta(t, 2.5, st.RecordsPerTxn, 1e-9)
	assert.InDelta(t, 1.5, st.DecideMs, 1e-9)
	assert.InDelta(t, 0.5, st.FlushMs, 1e-9)
	assert.InDelta(t, 100, st.CommitMs, 1e-9)
	assert.Equal(t, 1, st.SlowCommits)

	_, err = parseMetrics(strings.NewReader("reservations_x{ 1\n"))
	assert.Error(t, err)
}
