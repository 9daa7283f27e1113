package bench

import (
	"embed"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"text/template"
	"time"
)

// The exact commands of the Makefile targets (keep in step with the Makefile).
const (
	goBenchCmd = "go test -run '^$' -bench 'Apply|Codec' -benchmem ./processor/"
	harnessCmd = "go run ./internal/bench/cmd/benchharness"
)

// The prose of docs/BENCHMARKS.md lives in these templates; the Go code below
// only computes the figures they show (mdView).
//
//go:embed report.md.tmpl carts.md.tmpl
var reportFS embed.FS

var reportTmpl = template.Must(template.New("report.md.tmpl").Funcs(template.FuncMap{
	"f0":          f0,
	"f1":          f1,
	"fx":          fx,
	"n":           func(v any) string { return commas(toInt64(v)) },
	"dash":        orDash,
	"dur":         fmtDur,
	"durs":        func(ds []time.Duration) string { return joinMap(ds, fmtDur) },
	"ints":        func(vs []int) string { return joinMap(vs, func(v int) string { return fmt.Sprint(v) }) },
	"addDur":      func(a, b time.Duration) time.Duration { return a + b },
	"sum":         func(a, b int) int { return a + b },
	"half":        func(v float64) float64 { return v / 2 },
	"mb":          func(b int64) float64 { return float64(b) / 1e6 },
	"percent":     func(share float64) float64 { return 100 * share },
	"pctOf":       func(part, whole float64) float64 { return 100 * part / whole },
	"targetValue": targetValue,
	"binRatios":   binaryRatioKeys,
	"commitOf":    commitOf,
	"join":        strings.Join,
	"list":        func() []string { return nil },
	"add":         func(l []string, s string) []string { return append(l, s) },
	"shares": func(label string, s []Share, n int) shareTable {
		if n > 0 && len(s) > n {
			s = s[:n]
		}
		return shareTable{Label: label, Shares: s}
	},
	"cartCell": func(b CartBest, atMax bool) cartCell { return cartCell{B: b, AtMax: atMax} },
}).ParseFS(reportFS, "report.md.tmpl", "carts.md.tmpl"))

// mdView is what report.md.tmpl renders: the report and the figures derived
// from it for the text.
type mdView struct {
	*Report
	GoBenchCmd, HarnessCmd string
	MaxAttempts            int
	TargetsMet             int
	BestRows               []bestRow
	Curves                 []curve
	// Open are the open-loop, paced and pass-through steps.
	Open   []*Step
	Missed *missedView // nil: every target met (or not measured)
	Cart   *cartView   // nil: no cart steps
}

type bestRow struct {
	Workload                        string
	Pipeline, BestSQL, Serializable *Best // nil: not measured
	VsBestSQL, VsSerializable       float64
}

type curve struct {
	Workload string
	Steps    []*Step
}

type shareTable struct {
	Label  string
	Shares []Share
}

type cartCell struct {
	B     CartBest
	AtMax bool
}

// missedView explains each missed target from this run's data.
type missedView struct {
	H map[string]float64
	// Ratios are the missed throughput ratio targets, explained together;
	// Others the other missed targets with a note, in the targets' order.
	Ratios, Others    []Target
	Split             *cpuSplit
	SlowPaced         []*Step
	BadgerOpenCloseMs float64
	RestoreHot        []string
	NoProfile         bool
	CPUs              int
}

// cpuSplit is the pipeline phase's CPU share per component, in percent.
type cpuSplit struct {
	Processor, Broker, Load, Passthrough float64
	Hot                                  []string
}

type cartView struct {
	*Carts
	Command                  string // the Makefile target (or test) of the mode
	Pipeline, SQL            CartBest
	Violations, ChecksFailed float64
	Summary                  *cartSummary // nil without a pipeline cart figure
	Explain                  *cartExplain // nil unless both systems have a best point
}

type cartSummary struct {
	HoldsPerS, P99, SQLHoldsPerS, SQLP99, Ratio, Violations, ChecksFailed float64
}

type cartExplain struct {
	P, Q            CartBest
	Ratio, MaxRatio float64
	At              *CartStep // the pipeline's best step
	Profile         *ProfileSummary
	CPUs            int
}

func (rep *Report) markdown() string {
	var b strings.Builder
	if err := reportTmpl.Execute(&b, rep.mdView()); err != nil {
		// The templates are fixed and tested: an error here is a bug.
		panic(fmt.Sprintf("render BENCHMARKS.md: %v", err))
	}
	return b.String()
}

func (rep *Report) mdView() mdView {
	v := mdView{Report: rep, GoBenchCmd: goBenchCmd, HarnessCmd: harnessCmd, MaxAttempts: maxAttempts,
		TargetsMet: rep.targetsMet(), Missed: rep.missed(), Cart: rep.cartView()}
	for _, w := range Workloads {
		row := bestRow{Workload: w}
		for sys, dst := range map[string]**Best{SystemPipeline: &row.Pipeline, SystemBestSQL: &row.BestSQL, SystemSerializable: &row.Serializable} {
			if b, ok := rep.bestOfSystem(sys, w); ok {
				*dst = &b
			}
		}
		p, q, s := throughput(row.Pipeline), throughput(row.BestSQL), throughput(row.Serializable)
		row.VsBestSQL, row.VsSerializable = ratio(p, q), ratio(p, s)
		v.BestRows = append(v.BestRows, row)
		v.Curves = append(v.Curves, curve{Workload: w,
			Steps: rep.find(func(s *Step) bool { return s.Workload == w && s.Kind == KindClosed })})
	}
	v.Open = rep.find(func(s *Step) bool { return s.Kind != KindClosed })
	return v
}

func throughput(b *Best) float64 {
	if b == nil {
		return 0
	}
	return b.Throughput
}

// missedTargetNotes are the keys of targets whose miss has a note of its own.
var missedTargetNotes = []string{"processor_cpu_us_per_command", "p50_ms_at_16_clients", "binary_hot_p99_ms_at_half_max",
	"restore_records_per_s", "expiry_lag_p99_ms", "invariant_violations"}

func (rep *Report) missed() *missedView {
	m := &missedView{H: rep.Headline, BadgerOpenCloseMs: rep.Core.Badger.OpenCloseMs,
		NoProfile: rep.Profile == nil || rep.Profile.Error != "", CPUs: rep.Machine.CPUs}
	for _, t := range rep.Targets {
		switch {
		case t.Met || t.Detail == "not measured":
		case strings.HasPrefix(t.Key, "binary_vs_"):
			m.Ratios = append(m.Ratios, t)
		case slices.Contains(missedTargetNotes, t.Key):
			m.Others = append(m.Others, t)
		}
	}
	if len(m.Ratios)+len(m.Others) == 0 {
		return nil
	}
	if ps := rep.Profile; ps != nil {
		share := func(name string) float64 {
			for _, s := range ps.Components {
				if s.Name == name {
					return s.Percent
				}
			}
			return 0
		}
		m.Split = &cpuSplit{Processor: share("processor"), Broker: share("broker"), Load: share("load"),
			Passthrough: share("passthrough"), Hot: ps.Hot}
	}
	m.SlowPaced = rep.find(func(s *Step) bool { return s.Kind == KindPaced && s.SlowCommits > 0 })
	if rp := rep.RestoreProfile; rp != nil {
		m.RestoreHot = rp.Hot
	}
	return m
}

func (rep *Report) cartView() *cartView {
	cr := &rep.Carts
	if len(cr.Steps) == 0 {
		return nil
	}
	h := rep.Headline
	v := &cartView{Carts: cr, Violations: h["cart_violations"], ChecksFailed: h["cart_checks_failed"],
		Command: map[string]string{ModeShort: "make bench-short", ModeFull: "make bench", ModeTiny: "the package's test"}[rep.Mode]}
	for _, b := range cr.Best {
		if b.System == SystemPipeline {
			v.Pipeline = b
		} else {
			v.SQL = b
		}
	}
	if _, ok := h["cart_holds_per_s"]; ok {
		v.Summary = &cartSummary{HoldsPerS: h["cart_holds_per_s"], P99: h["cart_p99_ms"], SQLHoldsPerS: h["sql_cart_holds_per_s"],
			SQLP99: h["sql_cart_p99_ms"], Ratio: h["cart_vs_sql_ratio"], Violations: v.Violations, ChecksFailed: v.ChecksFailed}
	}
	p, q := v.Pipeline, v.SQL
	if p.System != "" && q.System != "" {
		e := &cartExplain{P: p, Q: q, Ratio: ratio(p.HoldsPerS, q.HoldsPerS), MaxRatio: ratio(p.MaxHoldsPerS, q.MaxHoldsPerS),
			CPUs: rep.Machine.CPUs}
		for i := range cr.Steps {
			if s := &cr.Steps[i]; s.System == SystemPipeline && s.Series() == p.Series && s.Clients == p.Clients {
				e.At = s
			}
		}
		if ps := cr.Profile; ps != nil && ps.Error == "" && len(ps.Components) > 0 {
			e.Profile = ps
		}
		v.Explain = e
	}
	return v
}

// commitOf is the commit interval of a pipeline series ("pipeline 20ms"), else "".
func commitOf(series string) string {
	ci, ok := strings.CutPrefix(series, SystemPipeline+" ")
	if !ok {
		return ""
	}
	return ci
}

func joinMap[T any](vs []T, f func(T) string) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = f(v)
	}
	return strings.Join(out, ", ")
}

// toInt64 converts any integer or float for commas.
func toInt64(v any) int64 {
	r := reflect.ValueOf(v)
	switch {
	case r.CanInt():
		return r.Int()
	case r.CanUint():
		return int64(r.Uint())
	case r.CanFloat():
		return int64(math.Round(r.Float()))
	}
	panic(fmt.Sprintf("n: %T is not a number", v))
}

func f0(v float64) string { return commas(int64(math.Round(v))) }

func f1(v float64) string { return fmt.Sprintf("%.1f", v) }

func fx(v float64) string {
	switch {
	case v >= 10:
		return fmt.Sprintf("%.0fx", v)
	case v < 1:
		// Three decimals: 0.498 against a target of 0.5 must not read 0.50.
		return fmt.Sprintf("%.3fx", v)
	}
	return fmt.Sprintf("%.2fx", v)
}

func commas(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func targetValue(t Target) string {
	switch {
	case t.Key == "e2e_vs_passthrough_ratio":
		return fmt.Sprintf("%.2f", t.Value)
	case strings.Contains(t.Key, "_ratio"): // binary_vs_redis_throughput_ratio_uniform too
		return fx(t.Value)
	case strings.Contains(t.Key, "_ms"):
		return f1(t.Value) + " ms"
	case strings.Contains(t.Key, "_seconds"):
		return fmt.Sprintf("%.2f s", t.Value)
	case strings.Contains(t.Key, "_us_"):
		return f1(t.Value) + " µs"
	case strings.HasSuffix(t.Key, "_per_s"):
		return f0(t.Value) + "/s"
	}
	return f0(t.Value)
}
