package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Report is everything one Run measured.
type Report struct {
	Mode     string    `json:"mode"`
	Started  time.Time `json:"started"`
	Command  string    `json:"command"`
	Machine  Machine   `json:"machine"`
	Settings Settings  `json:"settings"`
	// Steps are every measured run: closed-loop sweeps, open-loop, paced and
	// pass-through runs of every system.
	Steps    []Step          `json:"steps"`
	Best     []Best          `json:"best"`
	Restore  Restore         `json:"restore"`
	Expiry   Expiry          `json:"expiry"`
	Core     Core            `json:"core"`
	Oversell []OversellCheck `json:"oversell"`
	// Carts are the all-or-nothing 3-line cart holds, pipeline vs SQL.
	Carts   Carts           `json:"carts"`
	Profile *ProfileSummary `json:"profile,omitempty"`
	// Redis is the Redis baselines' servers and invariant checks.
	Redis RedisInfo `json:"redis"`
	// PipelineGC is the Go GC of the harness process during the pipeline phase
	// (broker, processors and load generator share that heap).
	PipelineGC GCStats `json:"pipeline_gc"`
	// RestoreProfile is the CPU profile of the restore phase (Rebuild, start to
	// ready, sink).
	RestoreProfile *ProfileSummary `json:"restore_profile,omitempty"`
	// Headline is latest.json: flat keys, numbers only.
	Headline     map[string]float64 `json:"headline"`
	Targets      []Target           `json:"targets"`
	PhaseSeconds map[string]float64 `json:"phase_seconds"`
	TotalSeconds float64            `json:"total_seconds"`

	// Binary is the reservations binary as its own process (binary.go); nil
	// when not measured.
	Binary *Binary `json:"binary,omitempty"`
	// Failover is the SIGKILL failover and rolling-restart measurement
	// (failover.go); nil when not measured.
	Failover *Failover `json:"failover,omitempty"`
}

// GCStats summarise the Go garbage collector over a phase.
type GCStats struct {
	Cycles         int     `json:"cycles"`
	PauseTotalMs   float64 `json:"pause_total_ms"`
	MaxPauseMs     float64 `json:"max_pause_ms"`
	HeapInUseEndMB float64 `json:"heap_in_use_end_mb"`
}

// Settings are the knobs of the run, as reported.
type Settings struct {
	Partitions      int32           `json:"partitions"`
	SKUs            int             `json:"skus"`
	CommitIntervals []time.Duration `json:"commit_intervals"`
	MaxBatch        int             `json:"max_batch"`
	Concurrencies   []int           `json:"concurrencies"`
	PoolCap         int             `json:"pool_cap"`
	StepOps         string          `json:"step_ops"`
	StepTimeout     time.Duration   `json:"step_timeout"`
	OpenLoopOps     int             `json:"open_loop_ops"`
	PacedDuration   time.Duration   `json:"paced_duration"`
}

// Target is one performance target of the project and whether this run met it.
type Target struct {
	Key    string  `json:"key"`
	Name   string  `json:"name"`
	Want   string  `json:"want"`
	Value  float64 `json:"value"`
	Met    bool    `json:"met"`
	Detail string  `json:"detail"`
}

func newReport(cfg Config) *Report {
	return &Report{
		Mode:    cfg.Mode,
		Started: time.Now().UTC(),
		Command: cfg.Command,
		Settings: Settings{
			Partitions: cfg.Partitions, SKUs: cfg.SKUs, CommitIntervals: cfg.CommitIntervals, MaxBatch: cfg.MaxBatch,
			Concurrencies: cfg.Concurrencies, PoolCap: cfg.PoolCap,
			StepOps:     fmt.Sprintf("clients x %d, clamped to [%d, %d]", cfg.Rounds, cfg.MinOps, cfg.MaxOps),
			StepTimeout: cfg.StepTimeout, OpenLoopOps: cfg.OpenLoopOps, PacedDuration: cfg.PacedDuration,
		},
		PhaseSeconds: map[string]float64{},
		Headline:     map[string]float64{},
	}
}

// series returns the distinct series of closed-loop steps of a system, in order.
func (rep *Report) series(system string) []string {
	var out []string
	for i := range rep.Steps {
		s := &rep.Steps[i]
		if s.System == system && s.Kind == KindClosed && !slices.Contains(out, s.Series()) {
			out = append(out, s.Series())
		}
	}
	return out
}

// bestOfSystem is the best point of a system over all its series (commit
// intervals): within budget first, then by throughput.
func (rep *Report) bestOfSystem(system, workload string) (Best, bool) {
	var best Best
	found := false
	for _, se := range rep.series(system) {
		b, ok := bestOf(rep.Steps, se, workload)
		if !ok {
			continue
		}
		if !found || (b.WithinBudget && !best.WithinBudget) ||
			(b.WithinBudget == best.WithinBudget && b.Throughput > best.Throughput) {
			best, found = b, true
		}
	}
	return best, found
}

func (rep *Report) find(pred func(*Step) bool) []*Step {
	var out []*Step
	for i := range rep.Steps {
		if pred(&rep.Steps[i]) {
			out = append(out, &rep.Steps[i])
		}
	}
	return out
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

// finish computes the best points, the headline figures and the targets.
func (rep *Report) finish() {
	h := rep.Headline
	rep.Best = nil
	for _, system := range []string{SystemPipeline, SystemSerializable, SystemBestSQL, SystemRedis, SystemRedisAlways} {
		for _, w := range Workloads {
			for _, se := range rep.series(system) {
				if b, ok := bestOf(rep.Steps, se, w); ok {
					rep.Best = append(rep.Best, b)
				}
			}
			if b, ok := rep.bestOfSystem(system, w); ok {
				h[fmt.Sprintf("%s_%s_throughput_at_p99_150ms", system, w)] = b.Throughput
				h[fmt.Sprintf("%s_%s_p99_ms_at_best", system, w)] = b.P99
				h[fmt.Sprintf("%s_%s_clients_at_best", system, w)] = float64(b.Clients)
				h[fmt.Sprintf("%s_%s_max_throughput", system, w)] = b.MaxThroughput
				h[fmt.Sprintf("%s_%s_within_budget", system, w)] = b2f(b.WithinBudget)
			}
		}
	}
	pipe := func(w string) float64 { b, _ := rep.bestOfSystem(SystemPipeline, w); return b.Throughput }
	base := func(s, w string) float64 { b, _ := rep.bestOfSystem(s, w); return b.Throughput }
	h["hot_vs_serializable_throughput_ratio"] = ratio(pipe(WorkloadHot), base(SystemSerializable, WorkloadHot))
	h["hot_vs_best_sql_throughput_ratio"] = ratio(pipe(WorkloadHot), base(SystemBestSQL, WorkloadHot))
	h["uniform_vs_best_sql_throughput_ratio"] = ratio(pipe(WorkloadUniform), base(SystemBestSQL, WorkloadUniform))
	h["uniform_vs_serializable_throughput_ratio"] = ratio(pipe(WorkloadUniform), base(SystemSerializable, WorkloadUniform))
	h["mixed_vs_best_sql_throughput_ratio"] = ratio(pipe(WorkloadMixed), base(SystemBestSQL, WorkloadMixed))
	h["mixed_vs_serializable_throughput_ratio"] = ratio(pipe(WorkloadMixed), base(SystemSerializable, WorkloadMixed))

	// End to end against the broker's pass-through, at the commit interval
	// with the highest open-loop uniform throughput.
	var e2eCI time.Duration
	for _, s := range rep.find(func(s *Step) bool {
		return s.System == SystemPipeline && s.Kind == KindOpen && s.Workload == WorkloadUniform
	}) {
		h[fmt.Sprintf("pipeline_open_loop_uniform_throughput_%s", fmtDur(s.CommitInterval))] = s.Throughput
		if s.Throughput > h["pipeline_open_loop_uniform_throughput"] {
			h["pipeline_open_loop_uniform_throughput"] = s.Throughput
			e2eCI = s.CommitInterval
		}
	}
	for _, s := range rep.find(func(s *Step) bool { return s.System == SystemPipeline && s.Kind == KindOpen }) {
		k := fmt.Sprintf("pipeline_open_loop_%s_throughput", s.Workload)
		h[k] = max(h[k], s.Throughput)
	}
	for _, s := range rep.find(func(s *Step) bool { return s.System == SystemPassthrough }) {
		h[fmt.Sprintf("passthrough_throughput_%s", fmtDur(s.CommitInterval))] = s.Throughput
		if s.CommitInterval == e2eCI {
			h["passthrough_throughput"] = s.Throughput
			h["e2e_vs_passthrough_ratio"] = ratio(h["pipeline_open_loop_uniform_throughput"], s.Throughput)
			h["e2e_commit_interval_ms"] = float64(e2eCI.Milliseconds())
		}
	}
	// p99 at half the maximum: the best commit interval's paced run.
	paced := rep.find(func(s *Step) bool { return s.Kind == KindPaced })
	h["hot_p99_ms_at_half_max"] = math.NaN()
	for _, s := range paced {
		h[fmt.Sprintf("hot_p99_ms_at_half_max_%s", fmtDur(s.CommitInterval))] = s.P99
		if math.IsNaN(h["hot_p99_ms_at_half_max"]) || s.P99 < h["hot_p99_ms_at_half_max"] {
			h["hot_p99_ms_at_half_max"] = s.P99
			h["hot_half_max_rate"] = s.TargetRate
			h["hot_half_max_commit_interval_ms"] = float64(s.CommitInterval.Milliseconds())
		}
	}
	if math.IsNaN(h["hot_p99_ms_at_half_max"]) {
		delete(h, "hot_p99_ms_at_half_max")
	}
	r := rep.Restore
	h["restore_records_per_s"] = r.RebuildRecordsPerS
	if r.ReadOnlyRecordsPerS > 0 {
		h["restore_read_only_records_per_s"] = r.ReadOnlyRecordsPerS
	}
	if r.StoreOnlyRecordsPerS > 0 {
		h["restore_store_only_records_per_s"] = r.StoreOnlyRecordsPerS
		h["restore_store_bulk_records_per_s"] = r.StoreBulkRecordsPerS
		best, busy := r.StoreOnlyRecordsPerS, r.StoreOnlyCoresBusy
		if r.StoreBulkRecordsPerS > best {
			best, busy = r.StoreBulkRecordsPerS, r.StoreBulkCoresBusy
		}
		// Badger alone, fed from memory: the most a restore that writes
		// every record into it can reach on this machine.
		h["restore_store_best_records_per_s"] = best
		if busy > 0 {
			h["restore_store_best_cores_busy"] = busy
		}
	}
	if r.RebuildCoresBusy > 0 {
		h["restore_rebuild_cores_busy"] = r.RebuildCoresBusy
	}
	h["restore_seconds"] = r.RebuildSeconds
	h["restore_active_reservations"] = float64(r.Reservations)
	h["restore_time_to_ready_s"] = r.ReadySeconds
	h["restore_ready_records_per_s"] = r.ReadyRecordsPerS
	h["sink_records_per_s"] = r.SinkRecordsPerS
	e := rep.Expiry
	h["expiry_holds"] = float64(e.Holds)
	h["expiry_notices_received"] = float64(e.Received)
	h["expiry_lag_p50_ms"] = e.LagP50
	h["expiry_lag_p99_ms"] = e.LagP99
	h["expiry_lag_max_ms"] = e.LagMax
	h["expiry_visible_lag_p99_ms"] = e.VisibleP99
	c := rep.Core
	h["core_commands_per_s"] = c.CommandsPerS
	h["core_with_codec_commands_per_s"] = c.WithCodecCommandsPerS
	if c.GoBenchCommandsPerS > 0 {
		h["core_go_bench_commands_per_s"] = c.GoBenchCommandsPerS
		h["core_go_bench_with_codec_commands_per_s"] = c.GoBenchWithCodecCommandsPerS
	}
	h["badger_commit_ms_per_1000_keys"] = c.Badger.MsPerBatch
	h["badger_commit_keys_per_s"] = c.Badger.KeysPerS
	h["badger_open_close_ms"] = c.Badger.OpenCloseMs
	h["memory_bytes_per_active_reservation_timers"] = float64(c.Memory.TimersBytes)
	h["memory_bytes_per_active_reservation_cached"] = float64(c.Memory.CachedBytes)
	// Bytes per reservation times one million, in MB (1e6 bytes).
	h["memory_mb_per_1m_active_reservations"] = float64(c.Memory.CachedBytes)
	h["memory_mb_per_1m_active_reservations_timers_only"] = float64(c.Memory.TimersBytes)
	oversold, failed := 0, 0
	for _, o := range rep.Oversell {
		oversold += o.OversoldSKUs + o.MismatchedSKUs
		if o.Error != "" || o.SKUsChecked == 0 {
			failed++
		}
		k := "oversold_skus_" + o.System
		h[k] += float64(o.OversoldSKUs)
	}
	rep.finishCarts()
	rep.finishRedis()
	rep.finishBinary() // after finishRedis: it reads the redis_* keys for its ratios
	rep.finishFailover()
	h["oversell_checks"] = float64(len(rep.Oversell))
	h["oversell_violations"] = float64(oversold)
	h["oversell_checks_failed"] = float64(failed)
	h["max_batch"] = float64(rep.Settings.MaxBatch)
	h["partitions"] = float64(rep.Settings.Partitions)
	h["full_mode"] = b2f(rep.Mode == ModeFull)
	h["total_seconds"] = rep.TotalSeconds
	if rep.Profile != nil {
		for _, s := range rep.Profile.Components {
			h["profile_cpu_share_"+s.Name] = s.Percent / 100
		}
	}
	for k, v := range h {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			delete(h, k)
		}
	}

	// The target names of the binary's figures (the binary is what a user
	// runs). The CPU per command is the saturated processor's (open loop):
	// the all-steps figure (binary_processor_cpu_us_per_command) also counts
	// closed-loop steps of a few clients, where a transaction carries a
	// handful of commands and the loop polls while idle.
	for alias, key := range map[string]string{"processor_cpu_us_per_command": "binary_processor_cpu_us_per_command_open_loop",
		"p50_ms_at_16_clients": "binary_p50_ms_at_16_clients"} {
		if v, ok := h[key]; ok {
			h[alias] = v
		}
	}
	h["invariant_violations"] = h["oversell_violations"] + h["redis_violations"] + h["binary_violations"] + h["binary_check_failed"] +
		h["failover_violations"] + h["failover_check_failed"]
	ge := func(x float64) func(float64) bool { return func(v float64) bool { return v >= x } }
	le := func(x float64) func(float64) bool { return func(v float64) bool { return v <= x } }
	rep.Targets = []Target{
		target(h, "binary_vs_redis_throughput_ratio_uniform", "the binary vs one Redis Lua script per command (uniform)", ">= 3x", ge(3)),
		target(h, "binary_vs_redis_throughput_ratio_hot", "the binary vs one Redis Lua script per command (hot)", ">= 3x", ge(3)),
		target(h, "binary_vs_best_sql_throughput_ratio_uniform", "the binary vs the best SQL (uniform)", ">= 5x", ge(5)),
		target(h, "binary_vs_best_sql_throughput_ratio_hot", "the binary vs the best SQL (hot)", ">= 5x", ge(5)),
		target(h, "e2e_vs_passthrough_same_layout_ratio", "open loop vs a pass-through with the same records in and out", ">= 0.5", ge(0.5)),
		target(h, "processor_cpu_us_per_command", "CPU of the processor process per command", "<= 8 µs", le(8)),
		target(h, "p50_ms_at_16_clients", "p50 at 16 clients (the binary, uniform)", "<= 3 ms", le(3)),
		target(h, "binary_hot_p99_ms_at_half_max", "p99 at half the maximum throughput (the binary, hot)", "<= 50 ms", le(50)),
		target(h, "restore_records_per_s", "restore (changelog into Badger)", ">= 500,000 records/s", ge(500_000)),
		target(h, "expiry_lag_p99_ms", "expiry notice after expires_at, p99", "<= 1000 ms", le(1000)),
		// (After index 6, which is addressed below; invariant_violations stays last.)
		target(h, "failover_takeover_seconds_with_standby", "SIGKILL takeover with a standby replica (assignment to first decision; the session timeout's detection excluded)", "<= 2 s", le(2)),
		target(h, "rolling_restart_partition_moves", "partitions moved by a rolling restart of 3 static members", "0", func(v float64) bool { return v == 0 }),
		target(h, "invariant_violations", "no oversell, reserved == sum(active), one decision per command, in every system", "0",
			func(v float64) bool { return v == 0 && failed == 0 }),
	}
	if e.TimedOut || e.Received < e.Holds {
		rep.Targets[6].Met = false
		rep.Targets[6].Detail = fmt.Sprintf("only %d of %d expiry notices arrived", e.Received, e.Holds)
	}
	for _, w := range []string{WorkloadHot, WorkloadUniform} {
		for _, s := range []string{SystemSerializable, SystemBestSQL} {
			if b, ok := rep.bestOfSystem(s, w); ok && !b.WithinBudget {
				for i := range rep.Targets {
					if strings.HasPrefix(rep.Targets[i].Key, w+"_vs_") && strings.Contains(rep.Targets[i].Key, s) {
						rep.Targets[i].Detail = fmt.Sprintf("%s never met p99 <= 150 ms on %s: its lowest-p99 step stands in", s, w)
					}
				}
			}
		}
	}
	if b, ok := rep.bestOfSystem(SystemPipeline, WorkloadHot); ok && !b.WithinBudget {
		rep.Targets[0].Detail = "the pipeline never met p99 <= 150 ms on hot: its lowest-p99 step stands in"
	}
}

func target(h map[string]float64, key, name, want string, ok func(float64) bool) Target {
	v, present := h[key]
	t := Target{Key: key, Name: name, Want: want, Value: v}
	if !present {
		t.Detail = "not measured"
		return t
	}
	t.Met = ok(v)
	return t
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (rep *Report) targetsMet() int {
	n := 0
	for _, t := range rep.Targets {
		if t.Met {
			n++
		}
	}
	return n
}

// write writes BENCHMARKS.md under dir and latest.json and chart.svg under dir/bench.
func (rep *Report) write(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "bench"), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	js, err := json.MarshalIndent(rep.Headline, "", "  ")
	if err != nil {
		return fmt.Errorf("encode latest.json: %w", err)
	}
	files := map[string][]byte{
		filepath.Join(dir, "bench", "latest.json"): append(js, '\n'),
		filepath.Join(dir, "bench", "chart.svg"):   []byte(rep.chart()),
		filepath.Join(dir, "BENCHMARKS.md"):        []byte(rep.markdown()),
	}
	for name, b := range files {
		if err := os.WriteFile(name, b, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}
