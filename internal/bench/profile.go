package bench

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ProfileSummary says where the CPU time of the pipeline phase went, from the
// CPU profile (summarised with `go tool pprof`, when the go command is there).
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
	// Top is `go tool pprof -top` (flat) of everything; ProcessorCum is
	// `-top -cum` of the processor's goroutines (of everything when the profile
	// has no labels).
	Top          string `json:"top"`
	ProcessorCum string `json:"processor_cum"`
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

func pprofText(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", append([]string{"tool", "pprof"}, args...)...).Output()
	return string(out), err
}

var (
	totalRe = regexp.MustCompile(`Total samples = ([0-9.]+[a-zµ]*)`)
	tagRe   = regexp.MustCompile(`^\s*([0-9.]+[a-zµ]*) \(\s*([0-9.]+)%\): (\S+)`)
	durRe   = regexp.MustCompile(`^([0-9.]+)([a-zµ]*)$`)
)

func summarizeProfile(path string) *ProfileSummary {
	ps := &ProfileSummary{File: path}
	all, err := pprofText("-top", "-nodecount=100000", path)
	if err != nil {
		ps.Error = "go tool pprof: " + err.Error() + " (run `go tool pprof -top " + path + "` by hand)"
		return ps
	}
	if m := totalRe.FindStringSubmatch(all); m != nil {
		ps.TotalSeconds = pprofSeconds(m[1])
	}
	ps.Top = topLines(all, 25)
	ps.Packages = packageShares(all, ps.TotalSeconds)
	if tags, err := pprofText("-tags", path); err == nil {
		labeled := 0.0
		in := false
		for _, line := range strings.Split(tags, "\n") {
			t := strings.TrimSpace(line)
			switch m := tagRe.FindStringSubmatch(line); {
			case strings.HasPrefix(t, "component:"):
				in = true
			case in && m != nil:
				d := pprofSeconds(m[1])
				labeled += d
				ps.Components = append(ps.Components, Share{Name: m[3], Seconds: d})
			case t == "":
				in = false
			}
		}
		if rest := ps.TotalSeconds - labeled; rest > 0.001 {
			ps.Components = append(ps.Components, Share{Name: "unlabeled", Seconds: rest})
		}
		for i := range ps.Components {
			ps.Components[i].Percent = pct(ps.Components[i].Seconds, ps.TotalSeconds)
		}
	}
	args := []string{"-top", "-cum", "-nodecount=40"}
	if len(ps.Components) > 0 {
		args = append(args, "-tagfocus=component=processor")
	}
	if pt, err := pprofText(append(args, path)...); err == nil {
		ps.ProcessorCum = topLines(pt, 40)
		ps.Hot = hotFunctions(ps.ProcessorCum, 8)
	}
	return ps
}

// hotFunctions picks the first n rows of a `-top -cum` listing that are
// neither the runtime nor goroutine entry plumbing, as "function (cum%)".
func hotFunctions(cum string, n int) []string {
	var out []string
	for _, line := range strings.Split(cum, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || strings.Contains(line, "flat%") {
			continue
		}
		fn := strings.TrimSuffix(strings.Join(f[5:], " "), " (inline)")
		switch pkg := pkgOf(fn); {
		case pkg == "runtime", pkg == "syscall", strings.HasPrefix(pkg, "internal/"), pkg == "sync", pkg == "runtime/pprof":
			continue
		}
		out = append(out, fmt.Sprintf("%s (%s)", shortFn(fn), f[4]))
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

func pct(part, total float64) float64 {
	if total <= 0 {
		return 0
	}
	return 100 * part / total
}

// topLines keeps the header line and the first n rows of `pprof -top`.
func topLines(s string, n int) string {
	var out []string
	rows := -1
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, "flat%") {
			rows = 0
		}
		if rows >= 0 && rows <= n {
			out = append(out, line)
			rows++
		}
	}
	return strings.Join(out, "\n")
}

// packageShares sums the flat column of `pprof -top` by package.
func packageShares(s string, total float64) []Share {
	by := make(map[string]float64)
	started := false
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, "flat%") {
			started = true
			continue
		}
		f := strings.Fields(line)
		if !started || len(f) < 6 {
			continue
		}
		d := pprofSeconds(f[0])
		if d < 0 {
			continue
		}
		by[pkgOf(strings.Join(f[5:], " "))] += d
	}
	var out []Share
	for k, v := range by {
		out = append(out, Share{Name: k, Seconds: v, Percent: pct(v, total)})
	}
	slices.SortFunc(out, func(a, b Share) int {
		switch {
		case a.Seconds > b.Seconds:
			return -1
		case a.Seconds < b.Seconds:
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// pkgOf returns the package of a pprof function name, with the runtime's
// internal packages and the runtime folded together.
func pkgOf(fn string) string {
	fn = strings.TrimSuffix(fn, " (inline)")
	slash := strings.LastIndexByte(fn, '/')
	dot := strings.IndexByte(fn[slash+1:], '.')
	pkg := fn
	if dot >= 0 {
		pkg = fn[:slash+1+dot]
	}
	if pkg == "runtime" || strings.HasPrefix(pkg, "internal/runtime") || pkg == "internal/runtime/syscall" {
		return "runtime"
	}
	if pkg == "syscall" || strings.HasPrefix(pkg, "internal/poll") {
		return "syscall"
	}
	return pkg
}

// pprofSeconds parses a pprof time ("0", "270ms", "1.50s", "2.10mins",
// "1.1hrs") into seconds; -1 when it is not one.
func pprofSeconds(s string) float64 {
	m := durRe.FindStringSubmatch(s)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	switch m[2] {
	case "", "s":
		return v
	case "ns":
		return v / 1e9
	case "us", "µs":
		return v / 1e6
	case "ms":
		return v / 1e3
	case "min", "mins":
		return v * 60
	case "hr", "hrs":
		return v * 3600
	}
	return -1
}
