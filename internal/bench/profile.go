package bench

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/google/pprof/profile"
)

// ProfileSummary says where the CPU time of a phase went, read from its CPU
// profile with github.com/google/pprof/profile.
type ProfileSummary struct {
	File string `json:"file"`
	// TotalSeconds of CPU samples (2 cores busy for 10 s = 20 s).
	TotalSeconds float64 `json:"total_seconds"`
	// Components split the samples by the goroutine label component (broker,
	// processor, load, passthrough); "unlabeled" is the rest (GC workers,
	// runtime timers).
	Components []Share `json:"components"`
	// Packages split the flat samples by Go package.
	Packages []Share `json:"packages"`
	// Top are the heaviest functions of everything by flat time (as `go tool
	// pprof -top`); ProcessorCum the heaviest of the processor's goroutines by
	// cumulative time (as `-top -cum -tagfocus=component=processor`; of
	// everything when the profile has no labels). Percentages are of all
	// samples.
	Top          []FuncShare `json:"top"`
	ProcessorCum []FuncShare `json:"processor_cum"`
	// Hot are the heaviest non-runtime functions of ProcessorCum ("name (cum%)").
	Hot   []string `json:"hot"`
	Error string   `json:"error,omitempty"`
}

// Share is a part of the CPU time.
type Share struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	Percent float64 `json:"percent"`
}

// FuncShare is the CPU time of one function: flat (in the function itself)
// and cumulative (in it and what it called).
type FuncShare struct {
	Name        string  `json:"name"`
	Flat        float64 `json:"flat_seconds"`
	FlatPercent float64 `json:"flat_percent"`
	Cum         float64 `json:"cum_seconds"`
	CumPercent  float64 `json:"cum_percent"`
}

// Rows of the summary's function lists.
const (
	topRows = 25
	cumRows = 40
	hotRows = 8
)

func summarizeProfile(path string) *ProfileSummary {
	ps := &ProfileSummary{File: path}
	if err := ps.read(path); err != nil {
		ps.Error = err.Error() + " (run `go tool pprof -top " + path + "` by hand)"
	}
	return ps
}

// read fills ps from the CPU profile at path.
func (ps *ProfileSummary) read(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open cpu profile: %w", err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		return fmt.Errorf("parse cpu profile: %w", err)
	}
	cpu := slices.IndexFunc(p.SampleType, func(t *profile.ValueType) bool { return t.Type == "cpu" && t.Unit == "nanoseconds" })
	if cpu < 0 {
		return fmt.Errorf("%s is not a CPU profile (no cpu/nanoseconds sample type)", path)
	}

	var total int64
	components := map[string]int64{}
	for _, s := range p.Sample {
		total += s.Value[cpu]
		if c := s.Label["component"]; len(c) > 0 {
			components[c[0]] += s.Value[cpu]
		}
	}
	ps.TotalSeconds = seconds(total)
	var labeled int64
	for name, v := range components {
		labeled += v
		ps.Components = append(ps.Components, Share{Name: name, Seconds: seconds(v)})
	}
	slices.SortFunc(ps.Components, func(a, b Share) int {
		return cmp.Or(cmp.Compare(b.Seconds, a.Seconds), strings.Compare(a.Name, b.Name))
	})
	if rest := seconds(total - labeled); len(components) > 0 && rest > 0.001 {
		ps.Components = append(ps.Components, Share{Name: "unlabeled", Seconds: rest})
	}
	for i := range ps.Components {
		ps.Components[i].Percent = pct(ps.Components[i].Seconds, ps.TotalSeconds)
	}

	all := functionTimes(p.Sample, cpu, func(*profile.Sample) bool { return true })
	ps.Top = topFunctions(all, total, func(a, b FuncShare) bool { return a.Flat > b.Flat }, topRows)
	byPkg := map[string]float64{}
	for name, t := range all {
		byPkg[pkgOf(name)] += seconds(t.flat)
	}
	for name, s := range byPkg {
		if s > 0 {
			ps.Packages = append(ps.Packages, Share{Name: name, Seconds: s, Percent: pct(s, ps.TotalSeconds)})
		}
	}
	slices.SortFunc(ps.Packages, func(a, b Share) int {
		return cmp.Or(cmp.Compare(b.Seconds, a.Seconds), strings.Compare(a.Name, b.Name))
	})

	focus := func(*profile.Sample) bool { return true }
	if len(components) > 0 {
		focus = func(s *profile.Sample) bool { return slices.Contains(s.Label["component"], "processor") }
	}
	ps.ProcessorCum = topFunctions(functionTimes(p.Sample, cpu, focus), total,
		func(a, b FuncShare) bool { return a.Cum > b.Cum }, cumRows)
	ps.Hot = hotFunctions(ps.ProcessorCum, hotRows)
	return nil
}

// funcTime is a function's flat and cumulative sample value.
type funcTime struct{ flat, cum int64 }

// functionTimes sums the value at index v of the samples keep accepts per
// function: flat to the innermost frame of the leaf location, cumulative once
// per sample to every function on its stack (inlined frames included).
func functionTimes(samples []*profile.Sample, v int, keep func(*profile.Sample) bool) map[string]*funcTime {
	out := map[string]*funcTime{}
	at := func(name string) *funcTime {
		t := out[name]
		if t == nil {
			t = &funcTime{}
			out[name] = t
		}
		return t
	}
	for _, s := range samples {
		if !keep(s) || len(s.Location) == 0 {
			continue
		}
		val := s.Value[v]
		seen := map[string]bool{}
		for i, loc := range s.Location {
			for j, line := range loc.Line {
				if line.Function == nil {
					continue
				}
				name := line.Function.Name
				if i == 0 && j == 0 {
					at(name).flat += val
				}
				if !seen[name] {
					seen[name] = true
					at(name).cum += val
				}
			}
		}
	}
	return out
}

// topFunctions returns the first n functions in the order of heavier (then by
// name), with their percentages of total.
func topFunctions(times map[string]*funcTime, total int64, heavier func(a, b FuncShare) bool, n int) []FuncShare {
	out := make([]FuncShare, 0, len(times))
	for name, t := range times {
		out = append(out, FuncShare{Name: name, Flat: seconds(t.flat), Cum: seconds(t.cum),
			FlatPercent: pct(float64(t.flat), float64(total)), CumPercent: pct(float64(t.cum), float64(total))})
	}
	slices.SortFunc(out, func(a, b FuncShare) int {
		switch {
		case heavier(a, b):
			return -1
		case heavier(b, a):
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out[:min(n, len(out))]
}

// hotFunctions picks the first n functions that are neither the runtime nor
// goroutine entry plumbing, as "function (cum%)".
func hotFunctions(cum []FuncShare, n int) []string {
	var out []string
	for _, f := range cum {
		switch pkg := pkgOf(f.Name); {
		case pkg == "runtime", pkg == "syscall", strings.HasPrefix(pkg, "internal/"), pkg == "sync", pkg == "runtime/pprof":
			continue
		}
		out = append(out, fmt.Sprintf("%s (%.1f%%)", shortFn(f.Name), f.CumPercent))
		if len(out) == n {
			break
		}
	}
	return out
}

// shortFn drops the module path of a function name.
func shortFn(fn string) string {
	for _, p := range []string{"github.com/reservations/reservations/", "github.com/twmb/franz-go/pkg/", "github.com/dgraph-io/"} {
		fn = strings.TrimPrefix(fn, p)
	}
	return fn
}

func seconds(ns int64) float64 { return float64(ns) / 1e9 }

func pct(part, total float64) float64 {
	if total <= 0 {
		return 0
	}
	return 100 * part / total
}

// pkgOf returns the package of a function name, with the runtime's internal
// packages and the runtime folded together.
func pkgOf(fn string) string {
	slash := strings.LastIndexByte(fn, '/')
	dot := strings.IndexByte(fn[slash+1:], '.')
	pkg := fn
	if dot >= 0 {
		pkg = fn[:slash+1+dot]
	}
	if pkg == "runtime" || strings.HasPrefix(pkg, "internal/runtime") {
		return "runtime"
	}
	if pkg == "syscall" || strings.HasPrefix(pkg, "internal/poll") {
		return "syscall"
	}
	return pkg
}
