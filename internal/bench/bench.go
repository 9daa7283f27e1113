// Package bench is the benchmark harness of the reservation pipeline:
// it measures, in one run on one machine, this pipeline end to end through an
// in-process kfake broker, the Postgres row-lock designs it replaces (the
// seed's Serializable SELECT ... FOR UPDATE, and the best careful SQL), the
// Redis baseline of flash sales (a Lua script per command, appendfsync
// everysec and always, on a throwaway redis-server), the
// broker's own exactly-once pass-through limit, restore and sink rates, expiry
// lag, the pure core, Badger commits and memory per active reservation,
// all-or-nothing 3-line cart holds (SKU processor + cart coordinator against
// one Postgres transaction per cart), and reports every comparison as a ratio.
//
// Run is the entry point (cmd/benchharness and a future `reservations bench`
// subcommand are thin wiring around it). It writes docs/BENCHMARKS.md,
// docs/bench/latest.json (flat keys, numbers only) and docs/bench/chart.svg
// under Config.OutDir.
//
// Invariants: every loop is bounded in count and in time; everything runs on
// loopback; a Postgres server the harness starts is stopped when Run returns
// (and by the kernel if the process dies); the systems compared see the same
// generated commands (same seeds) and the same client concurrencies.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/reservations/reservations/topics"
)

// Modes of Config.Mode.
const (
	ModeShort = "short" // make bench-short: about 4 minutes on 2 cores
	ModeFull  = "full"  // make bench
	ModeTiny  = "tiny"  // the package's own test: seconds
)

// Latency budget of the reservation story: a system's throughput counts only
// while its p99 stays at or below it.
const LatencyBudget = 150 * time.Millisecond

// Config configures one harness run. Zero fields take the preset of Mode
// (see Preset); Mode "" means short.
type Config struct {
	// Mode selects the preset: short, full or tiny.
	Mode string
	// OutDir is the repository's docs folder: BENCHMARKS.md is written there and
	// latest.json, chart.svg under OutDir/bench. Empty: nothing is written.
	OutDir string
	// PGDSN names an existing PostgreSQL server (its database is used; schemas
	// bench_* in it are dropped and recreated). Empty: the harness starts a
	// throwaway cluster from /usr/lib/postgresql/*/bin (as the postgres OS user
	// when running as root) and removes it afterwards.
	PGDSN string
	// CoreBenchFile is the output of `go test -run '^$' -bench 'Apply|Codec'
	// -benchmem ./processor/`, parsed into the report (optional: Core.Apply is
	// also measured in process).
	CoreBenchFile string
	// CPUProfile, when set, is where the CPU profile of the pipeline phase is
	// written (pprof format, with labels component=broker|processor|load).
	CPUProfile string
	// Phases, when set, runs only the named phases (core, pipeline, sql,
	// redis, restore, carts, binary, failover) and writes no report files:
	// a partial run must not replace the recorded one.
	Phases []string
	// Command is the command line that produced the run, quoted in the report.
	Command string
	// Logger receives the processors' and sinks' warnings (default: discarded).
	Logger *slog.Logger

	// Partitions of every topic (default 12).
	Partitions int32
	// SKUs of the uniform part of every workload (default 10,000).
	SKUs int
	// CommitIntervals of the pipeline runs (short: 20ms, 50ms).
	CommitIntervals []time.Duration
	// MaxBatch is the processor's and pass-through's records per transaction
	// (default 5000, the processor default).
	MaxBatch int
	// Concurrencies are the closed-loop client counts swept per system.
	Concurrencies []int
	// PoolCap caps the pgxpool size of the SQL baselines (pool = min(clients,
	// cap); default max(16, 4 x CPUs): more backends than that only thrash).
	PoolCap int
	// Rounds, MinOps and MaxOps size a closed-loop step: clients*Rounds
	// commands, clamped to [MinOps, MaxOps].
	Rounds, MinOps, MaxOps int
	// StepTimeout bounds one closed-loop step; a step that hits it reports what
	// completed (and says so).
	StepTimeout time.Duration
	// OpenLoopOps is the command count of an open-loop (and pass-through) run.
	OpenLoopOps int
	// PacedDuration is the length of the paced run at half the maximum throughput.
	PacedDuration time.Duration
	// RestoreReservations is the active reservations in the restore changelog.
	RestoreReservations int
	// ExpiryHolds is the holds of the expiry run, with TTLs spread over
	// [ExpiryMinTTL, ExpiryMinTTL+ExpiryWindow).
	ExpiryHolds                int
	ExpiryMinTTL, ExpiryWindow time.Duration
	// MemoryReservations is the reservations of the memory model (full: 1M,
	// short: 200k; the figure is per reservation).
	MemoryReservations int
	// CoreDuration bounds each in-process micro-measurement (Badger commit,
	// the Apply fallback).
	CoreDuration time.Duration
	// CartSKUs is the SKU set the 3-line carts draw from (ample stock; default
	// 1,000), plus a few sold-out SKUs. CartRounds, CartMinCarts and
	// CartMaxCarts size a cart step (clients*CartRounds carts, clamped), which
	// stops taking new carts after CartStepTimeout. The cart steps run at every
	// commit interval and concurrency of the other phases.
	CartSKUs                               int
	CartRounds, CartMinCarts, CartMaxCarts int
	CartStepTimeout                        time.Duration
	// BinaryConcurrencies are the closed-loop client counts of the binary
	// measurement (the reservations binary and the broker as processes, see
	// binary.go); none: the binary measurement is skipped (tiny mode).
	BinaryConcurrencies []int
	// FailoverHolds is the active holds in the changelog of the failover and
	// rolling-restart measurement (failover.go; full: 1M); 0: skipped (tiny).
	FailoverHolds int
	// FailoverSessionTimeout is the processors' --session-timeout there (0:
	// the binary's default, 30 s for a static member; short mode: 10 s).
	FailoverSessionTimeout time.Duration
	// FailoverRate is the paced load during the failover measurements
	// (commands/s; default 300).
	FailoverRate float64
	// Timeout bounds the whole run.
	Timeout time.Duration
}

// Preset returns the configuration of a mode.
func Preset(mode string) (Config, error) {
	c := Config{
		Mode:               mode,
		Partitions:         topics.DefaultPartitions,
		SKUs:               10_000,
		MaxBatch:           5000,
		PoolCap:            max(16, 4*runtime.NumCPU()),
		MemoryReservations: 1_000_000,
		CartSKUs:           1000,
		FailoverRate:       300,
	}
	switch mode {
	case ModeShort, "":
		c.Mode = ModeShort
		c.CommitIntervals = []time.Duration{20 * time.Millisecond, 50 * time.Millisecond}
		c.Concurrencies = []int{16, 64, 256, 1024}
		c.Rounds, c.MinOps, c.MaxOps = 20, 3000, 20_000
		c.StepTimeout = 3 * time.Second
		c.OpenLoopOps = 60_000
		c.PacedDuration = 2 * time.Second
		c.RestoreReservations = 100_000
		c.ExpiryHolds = 10_000
		c.ExpiryMinTTL, c.ExpiryWindow = 3*time.Second, 4*time.Second
		c.MemoryReservations = 200_000
		c.CoreDuration = 500 * time.Millisecond
		c.CartRounds, c.CartMinCarts, c.CartMaxCarts = 12, 2000, 12_000
		c.CartStepTimeout = 4 * time.Second
		c.BinaryConcurrencies = []int{16, 256, 1024}
		c.FailoverHolds, c.FailoverSessionTimeout = 50_000, 10*time.Second
		c.Timeout = 600 * time.Second // the binary phase adds about a minute (and its build, uncached), failover about 3
	case ModeFull:
		c.CommitIntervals = []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond}
		c.Concurrencies = []int{16, 64, 256, 1024, 4096}
		c.Rounds, c.MinOps, c.MaxOps = 40, 20_000, 200_000
		c.StepTimeout = 15 * time.Second
		c.OpenLoopOps = 300_000
		c.PacedDuration = 10 * time.Second
		c.RestoreReservations = 1_000_000
		c.ExpiryHolds = 100_000
		c.ExpiryMinTTL, c.ExpiryWindow = 10*time.Second, 30*time.Second
		c.CoreDuration = 2 * time.Second
		c.CartRounds, c.CartMinCarts, c.CartMaxCarts = 20, 10_000, 100_000
		c.CartStepTimeout = 15 * time.Second
		c.BinaryConcurrencies = []int{16, 64, 256, 1024}
		c.FailoverHolds = 1_000_000
		c.Timeout = 60 * time.Minute
	case ModeTiny:
		c.SKUs = 200
		c.CommitIntervals = []time.Duration{20 * time.Millisecond}
		c.Concurrencies = []int{4, 16}
		c.PoolCap = 8
		c.Rounds, c.MinOps, c.MaxOps = 4, 40, 200
		c.StepTimeout = 3 * time.Second
		c.OpenLoopOps = 300
		c.PacedDuration = 500 * time.Millisecond
		c.RestoreReservations = 2000
		c.ExpiryHolds = 100
		c.ExpiryMinTTL, c.ExpiryWindow = time.Second, time.Second
		c.MemoryReservations = 20_000
		c.CoreDuration = 100 * time.Millisecond
		c.CartSKUs = 100
		c.CartRounds, c.CartMinCarts, c.CartMaxCarts = 4, 20, 100
		c.CartStepTimeout = 3 * time.Second
		c.Timeout = 150 * time.Second
	default:
		return Config{}, fmt.Errorf("mode %q: want short, full or tiny", mode)
	}
	return c, nil
}

// withDefaults fills zero fields from the preset of c.Mode.
func (c Config) withDefaults() (Config, error) {
	p, err := Preset(c.Mode)
	if err != nil {
		return c, err
	}
	c.Mode = p.Mode
	orPreset(&c.Partitions, p.Partitions)
	orPreset(&c.SKUs, p.SKUs)
	if len(c.CommitIntervals) == 0 {
		c.CommitIntervals = p.CommitIntervals
	}
	orPreset(&c.MaxBatch, p.MaxBatch)
	if len(c.Concurrencies) == 0 {
		c.Concurrencies = p.Concurrencies
	}
	orPreset(&c.PoolCap, p.PoolCap)
	orPreset(&c.Rounds, p.Rounds)
	orPreset(&c.MinOps, p.MinOps)
	orPreset(&c.MaxOps, p.MaxOps)
	orPreset(&c.StepTimeout, p.StepTimeout)
	orPreset(&c.OpenLoopOps, p.OpenLoopOps)
	orPreset(&c.PacedDuration, p.PacedDuration)
	orPreset(&c.RestoreReservations, p.RestoreReservations)
	orPreset(&c.ExpiryHolds, p.ExpiryHolds)
	orPreset(&c.ExpiryMinTTL, p.ExpiryMinTTL)
	orPreset(&c.ExpiryWindow, p.ExpiryWindow)
	orPreset(&c.MemoryReservations, p.MemoryReservations)
	orPreset(&c.CoreDuration, p.CoreDuration)
	orPreset(&c.CartSKUs, p.CartSKUs)
	orPreset(&c.CartRounds, p.CartRounds)
	orPreset(&c.CartMinCarts, p.CartMinCarts)
	orPreset(&c.CartMaxCarts, p.CartMaxCarts)
	orPreset(&c.CartStepTimeout, p.CartStepTimeout)
	orPreset(&c.Timeout, p.Timeout)
	if len(c.BinaryConcurrencies) == 0 {
		c.BinaryConcurrencies = p.BinaryConcurrencies
	}
	orPreset(&c.FailoverHolds, p.FailoverHolds)
	orPreset(&c.FailoverSessionTimeout, p.FailoverSessionTimeout)
	orPreset(&c.FailoverRate, p.FailoverRate)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, c.validate()
}

// orPreset sets a zero *v to the preset's value.
func orPreset[T comparable](v *T, preset T) {
	var zero T
	if *v == zero {
		*v = preset
	}
}

func (c Config) validate() error {
	var errs []error
	if c.Partitions < 1 {
		errs = append(errs, fmt.Errorf("partitions: %d must be >= 1", c.Partitions))
	}
	if c.SKUs < 1 {
		errs = append(errs, fmt.Errorf("skus: %d must be >= 1", c.SKUs))
	}
	for _, ci := range c.CommitIntervals {
		if ci <= 0 {
			errs = append(errs, fmt.Errorf("commit-interval: %s must be > 0", ci))
		}
	}
	for _, n := range append(slices.Clone(c.Concurrencies), c.BinaryConcurrencies...) {
		if n < 1 || n > 100_000 {
			errs = append(errs, fmt.Errorf("concurrency: %d must be in 1..100000", n))
		}
	}
	if c.MinOps < 1 || c.MaxOps < c.MinOps {
		errs = append(errs, fmt.Errorf("ops: want 1 <= min-ops (%d) <= max-ops (%d)", c.MinOps, c.MaxOps))
	}
	if c.ExpiryMinTTL < time.Second || c.ExpiryWindow < time.Second {
		errs = append(errs, errors.New("expiry: min TTL and window must be >= 1s (TTLs are whole seconds)"))
	}
	if c.ExpiryHolds < 1 || c.RestoreReservations < 1 || c.MemoryReservations < 1 || c.OpenLoopOps < 1 {
		errs = append(errs, errors.New("expiry holds, restore reservations, memory reservations and open-loop ops must be >= 1"))
	}
	if len(c.CommitIntervals) == 0 || len(c.Concurrencies) == 0 {
		errs = append(errs, errors.New("at least one commit interval and one concurrency are required"))
	}
	if c.CartSKUs < cartLines || c.CartMinCarts < 1 || c.CartMaxCarts < c.CartMinCarts || c.CartStepTimeout <= 0 {
		errs = append(errs, fmt.Errorf("carts: want cart SKUs (%d) >= %d, 1 <= min carts (%d) <= max carts (%d), a step timeout > 0",
			c.CartSKUs, cartLines, c.CartMinCarts, c.CartMaxCarts))
	}
	if c.FailoverHolds < 0 || c.FailoverSessionTimeout < 0 || c.FailoverRate <= 0 {
		errs = append(errs, fmt.Errorf("failover: want holds (%d) >= 0, session timeout (%s) >= 0, rate (%g) > 0",
			c.FailoverHolds, c.FailoverSessionTimeout, c.FailoverRate))
	}
	if c.PoolCap < 1 {
		errs = append(errs, fmt.Errorf("pool-cap: %d must be >= 1", c.PoolCap))
	}
	return errors.Join(errs...)
}

// stepOps is the command count of a closed-loop step with n clients.
func (c *Config) stepOps(n int) int { return min(max(n*c.Rounds, c.MinOps), c.MaxOps) }

// Run runs every measurement, writes the report files under cfg.OutDir (when
// set) and returns the report. Progress lines go to out.
func Run(ctx context.Context, cfg Config, out io.Writer) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("bench config: %w", err)
	}
	if out == nil {
		out = io.Discard
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	r := &run{cfg: cfg, out: out, rep: newReport(cfg)}
	started := time.Now()
	r.rep.Machine = machineFacts()
	r.logf("bench %s: %d cpus, %s, %s", cfg.Mode, r.rep.Machine.CPUs, r.rep.Machine.CPUModel, r.rep.Machine.GoVersion)

	pg, err := openPostgres(ctx, cfg.PGDSN, out)
	if err != nil {
		return nil, err
	}
	defer pg.close()
	r.pg = pg
	r.rep.Machine.PostgresVersion = pg.version
	r.rep.Machine.PostgresSettings = pg.settings

	phases := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"core", r.core},
		{"pipeline", r.pipelinePhase},
		{"sql", r.sqlPhase},
		{"redis", r.redisPhase},
		{"restore", r.restorePhase},
		{"carts", r.cartsPhase},
		{"binary", r.binaryPhase},
		{"failover", r.failoverPhase},
	}
	if len(cfg.Phases) > 0 {
		var known []string
		for _, ph := range phases {
			known = append(known, ph.name)
		}
		for _, name := range cfg.Phases {
			if !slices.Contains(known, name) {
				return nil, fmt.Errorf("bench config: unknown phase %q (want %s)", name, strings.Join(known, ", "))
			}
		}
		phases = slices.DeleteFunc(phases, func(ph struct {
			name string
			fn   func(context.Context) error
		}) bool {
			return !slices.Contains(cfg.Phases, ph.name)
		})
		cfg.OutDir = ""
	}
	for _, ph := range phases {
		t0 := time.Now()
		r.logf("== %s", ph.name)
		if err := ph.fn(ctx); err != nil {
			return r.rep, fmt.Errorf("%s phase: %w", ph.name, err)
		}
		r.rep.PhaseSeconds[ph.name] = time.Since(t0).Seconds()
	}
	r.rep.Machine.LoadAvgEnd = loadAvg()
	r.rep.TotalSeconds = time.Since(started).Seconds()
	r.rep.finish()
	if cfg.OutDir != "" {
		if err := r.rep.write(cfg.OutDir); err != nil {
			return r.rep, err
		}
		r.logf("wrote %s, %s, %s", filepath.Join(cfg.OutDir, "BENCHMARKS.md"),
			filepath.Join(cfg.OutDir, "bench", "latest.json"), filepath.Join(cfg.OutDir, "bench", "chart.svg"))
	}
	r.logf("done in %.0fs: %d of %d targets met", r.rep.TotalSeconds, r.rep.targetsMet(), len(r.rep.Targets))
	return r.rep, nil
}

// run is the state of one Run.
type run struct {
	cfg  Config
	out  io.Writer
	rep  *Report
	pg   *postgres
	tags int // command id tags handed out
}

func (r *run) logf(format string, args ...any) {
	fmt.Fprintf(r.out, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// profiled runs fn with the CPU profile on (when configured), writing it to
// CPUProfile with suffix inserted before the extension, and summarises it into *sum.
func (r *run) profiled(suffix string, sum **ProfileSummary, fn func() error) error {
	if r.cfg.CPUProfile == "" {
		return fn()
	}
	path := r.cfg.CPUProfile
	if suffix != "" {
		ext := filepath.Ext(path)
		path = strings.TrimSuffix(path, ext) + suffix + ext
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create profile folder: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("start cpu profile: %w", err)
	}
	ferr := fn()
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil && ferr == nil {
		ferr = fmt.Errorf("write cpu profile: %w", err)
	}
	if ferr == nil {
		*sum = summarizeProfile(path)
	}
	return ferr
}

// labeled runs fn with pprof labels component=name, which goroutines started
// inside inherit: the profile then splits CPU time by component.
func labeled(ctx context.Context, name string, fn func(context.Context)) {
	pprof.Do(ctx, pprof.Labels("component", name), fn)
}
