package bench

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Systems measured.
const (
	SystemPipeline     = "pipeline"
	SystemSerializable = "serializable"
	SystemBestSQL      = "best_sql"
	SystemPassthrough  = "passthrough"
	// SystemPassthroughSized is the binary's pass-through with records as
	// large as the processor's.
	SystemPassthroughSized = "passthrough_sized"
)

// Step kinds.
const (
	KindClosed = "closed" // N clients, each sending one command and waiting for its result
	KindOpen   = "open"   // every command produced at once, timed until all results are visible
	KindPaced  = "paced"  // a fixed rate, latency of each command
)

// Step is one measured run of one system: a point of a latency curve.
type Step struct {
	System   string `json:"system"`
	Workload string `json:"workload"`
	// CommitInterval of the pipeline or pass-through (0 for SQL).
	CommitInterval time.Duration `json:"commit_interval"`
	Kind           string        `json:"kind"`
	// Clients is the closed-loop concurrency (in-flight commands).
	Clients int `json:"clients"`
	// Pool is the pgxpool size of a SQL step.
	Pool int `json:"pool"`
	// TargetRate is the offered rate of a paced step (commands/s).
	TargetRate float64 `json:"target_rate"`
	// Planned commands, Completed (a result came back), Errors (timeouts, SQL errors).
	Planned   int `json:"planned"`
	Completed int `json:"completed"`
	Errors    int `json:"errors"`
	// Outcomes of the completed commands.
	Accepted   int `json:"accepted"`
	Rejected   int `json:"rejected"`
	Duplicates int `json:"duplicates"`
	// Retries of Serializable transactions (40001/40P01).
	Retries int `json:"retries"`
	// Seconds of wall time; Throughput is Completed / Seconds.
	Seconds    float64 `json:"seconds"`
	Throughput float64 `json:"throughput"`
	// Latency percentiles in milliseconds.
	P50  float64 `json:"p50_ms"`
	P95  float64 `json:"p95_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	Max  float64 `json:"max_ms"`
	// TimedOut: the step hit StepTimeout before every planned command completed.
	TimedOut bool `json:"timed_out"`
	// Pipeline: committed transactions during the step, command records per
	// transaction, the mean time of a transaction's phases (deciding, the
	// flush of its records, its end: offset commit, heartbeat, EndTxn),
	// aborted transactions.
	Txns          int     `json:"txns"`
	RecordsPerTxn float64 `json:"records_per_txn"`
	DecideMs      float64 `json:"decide_ms,omitempty"`
	FlushMs       float64 `json:"flush_ms,omitempty"`
	CommitMs      float64 `json:"commit_ms"`
	SlowCommits   int     `json:"slow_commits"` // transactions that took over 128 ms to end
	Aborts        int     `json:"aborts"`
	Restarts      int     `json:"restarts"` // processor sessions restarted after a failure
	// Hot workload: quantity asked of and accepted on the hot SKU, and its stock.
	HotAsked    int64 `json:"hot_asked"`
	HotAccepted int64 `json:"hot_accepted"`
	HotStock    int64 `json:"hot_stock"`
}

// txnLog is the step's transaction figures for the progress log ("" without).
func (s *Step) txnLog() string {
	if s.Txns == 0 {
		return ""
	}
	return fmt.Sprintf(" txns=%d (%.0f cmds, %.2fms decide + %.2fms flush + %.2fms commit, %d slow)",
		s.Txns, s.RecordsPerTxn, s.DecideMs, s.FlushMs, s.CommitMs, s.SlowCommits)
}

// Series names the curve a step belongs to (system, and commit interval).
func (s *Step) Series() string { return seriesName(s.System, s.CommitInterval) }

// seriesName is a system, with its commit interval when it has one.
func seriesName(system string, ci time.Duration) string {
	if ci > 0 {
		return system + " " + fmtDur(ci)
	}
	return system
}

func fmtDur(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d/time.Millisecond)
}

// samples collects latencies from many goroutines.
type samples struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *samples) add(d time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
}

func (s *samples) addAll(ds []time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, ds...)
	s.mu.Unlock()
}

// fill sets the percentiles of st from the samples.
func (s *samples) fill(st *Step) {
	s.mu.Lock()
	d := slices.Clone(s.d)
	s.mu.Unlock()
	st.P50, st.P95, st.P99, st.P999, st.Max = percentiles(d)
}

// percentiles returns p50, p95, p99, p99.9 and max in milliseconds (nearest
// rank; zeros for no samples).
func percentiles(d []time.Duration) (p50, p95, p99, p999, mx float64) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(d)))) - 1
		return ms(d[min(max(i, 0), len(d)-1)])
	}
	return q(0.50), q(0.95), q(0.99), q(0.999), ms(d[len(d)-1])
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// quantile returns the p quantile of float values (nearest rank).
func quantile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Best is a system's best sustained point on one workload: the highest
// closed-loop throughput whose p99 is within LatencyBudget.
type Best struct {
	Series     string  `json:"series"`
	System     string  `json:"system"`
	Workload   string  `json:"workload"`
	Clients    int     `json:"clients"`
	Throughput float64 `json:"throughput"`
	P99        float64 `json:"p99_ms"`
	// WithinBudget is false when no step met the budget: then the step with the
	// lowest p99 stands in (and the ratio built on it flatters that system).
	WithinBudget bool `json:"within_budget"`
	// MaxThroughput is the highest throughput of any step, whatever its p99.
	MaxThroughput float64 `json:"max_throughput"`
}

// bestOf returns the best point of the closed-loop steps of one series and
// workload (ok false when there are none).
func bestOf(steps []Step, series, workload string) (Best, bool) {
	var b Best
	found := false
	var fallback *Step
	for i := range steps {
		s := &steps[i]
		if s.Kind != KindClosed || s.Series() != series || s.Workload != workload || s.Completed == 0 {
			continue
		}
		if !found && fallback == nil {
			b = Best{Series: series, System: s.System, Workload: workload}
		}
		b.MaxThroughput = max(b.MaxThroughput, s.Throughput)
		if s.P99 <= ms(LatencyBudget) && !s.TimedOut {
			if !found || s.Throughput > b.Throughput {
				b.Clients, b.Throughput, b.P99, b.WithinBudget = s.Clients, s.Throughput, s.P99, true
			}
			found = true
		} else if fallback == nil || s.P99 < fallback.P99 {
			fallback = s
		}
	}
	if !found && fallback != nil {
		b.Clients, b.Throughput, b.P99 = fallback.Clients, fallback.Throughput, fallback.P99
		return b, true
	}
	return b, found
}
