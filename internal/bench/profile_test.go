package bench

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/pprof/profile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeProfile writes a CPU profile of three stacks (leaf first) to a file:
// 3 s in processor.apply called from processor.run (component processor, with
// json inlined into apply for 1 of them), 1 s in kfake under the broker and
// 0.5 s of unlabeled GC.
func writeProfile(t *testing.T) string {
	t.Helper()
	fns := map[string]*profile.Function{}
	fn := func(name string) *profile.Function {
		if fns[name] == nil {
			fns[name] = &profile.Function{ID: uint64(len(fns) + 1), Name: name}
		}
		return fns[name]
	}
	var locs []*profile.Location
	loc := func(names ...string) *profile.Location { // innermost inlined frame first
		l := &profile.Location{ID: uint64(len(locs) + 1)}
		for _, n := range names {
			l.Line = append(l.Line, profile.Line{Function: fn(n)})
		}
		locs = append(locs, l)
		return l
	}
	apply := loc("github.com/reservations/reservations/processor.apply")
	inlined := loc("encoding/json.Unmarshal", "github.com/reservations/reservations/processor.apply")
	run := loc("github.com/reservations/reservations/processor.run")
	kfake := loc("github.com/twmb/franz-go/pkg/kfake.(*Cluster).run")
	gc := loc("runtime.gcBgMarkWorker")
	sample := func(ns int64, comp string, stack ...*profile.Location) *profile.Sample {
		s := &profile.Sample{Value: []int64{ns / 1e7, ns}, Location: stack}
		if comp != "" {
			s.Label = map[string][]string{"component": {comp}}
		}
		return s
	}
	var fnList []*profile.Function
	for _, f := range fns {
		fnList = append(fnList, f)
	}
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
		Period:     1e7,
		Sample: []*profile.Sample{
			sample(2e9, "processor", apply, run),
			sample(1e9, "processor", inlined, run),
			sample(1e9, "broker", kfake),
			sample(5e8, "", gc),
		},
		Location: locs,
		Function: fnList,
	}
	path := filepath.Join(t.TempDir(), "cpu.prof")
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, p.Write(f))
	require.NoError(t, f.Close())
	return path
}

func TestSummarizeProfile(t *testing.T) {
	ps := summarizeProfile(writeProfile(t))
	require.Empty(t, ps.Error)
	assert.InDelta(t, 4.5, ps.TotalSeconds, 1e-9)

	assert.Equal(t, []string{"processor", "broker", "unlabeled"}, names(ps.Components))
	assert.InDelta(t, 3.0, ps.Components[0].Seconds, 1e-9)
	assert.InDelta(t, 100*3/4.5, ps.Components[0].Percent, 1e-9)
	assert.InDelta(t, 0.5, ps.Components[2].Seconds, 1e-9)

	// Flat: the innermost frame of the leaf location only.
	require.Len(t, ps.Top, 5)
	assert.Equal(t, "github.com/reservations/reservations/processor.apply", ps.Top[0].Name)
	assert.InDelta(t, 2.0, ps.Top[0].Flat, 1e-9)
	assert.InDelta(t, 3.0, ps.Top[0].Cum, 1e-9, "the inlined sample counts once in apply's cumulative time")
	assert.Equal(t, []string{"github.com/reservations/reservations/processor", "encoding/json", "github.com/twmb/franz-go/pkg/kfake", "runtime"},
		names(ps.Packages))
	assert.InDelta(t, 0, ps.Packages[0].Seconds-2.0, 1e-9)

	// The processor's goroutines only, by cumulative time.
	assert.Equal(t, []string{
		"github.com/reservations/reservations/processor.apply",
		"github.com/reservations/reservations/processor.run",
		"encoding/json.Unmarshal",
	}, funcNames(ps.ProcessorCum))
	assert.Equal(t, []string{"processor.apply (66.7%)", "processor.run (66.7%)", "encoding/json.Unmarshal (22.2%)"}, ps.Hot)
}

func TestSummarizeProfileErrors(t *testing.T) {
	ps := summarizeProfile(filepath.Join(t.TempDir(), "missing.prof"))
	assert.Contains(t, ps.Error, "open cpu profile")
	bad := filepath.Join(t.TempDir(), "bad.prof")
	require.NoError(t, os.WriteFile(bad, []byte("not a profile"), 0o644))
	assert.Contains(t, summarizeProfile(bad).Error, "parse cpu profile")
}

func TestPkgOf(t *testing.T) {
	for in, want := range map[string]string{
		"github.com/twmb/franz-go/pkg/kfake.(*Cluster).run": "github.com/twmb/franz-go/pkg/kfake",
		"runtime.mallocgc":                    "runtime",
		"internal/runtime/maps.(*Map).Get":    "runtime",
		"internal/poll.(*FD).Read":            "syscall",
		"encoding/json.(*decodeState).object": "encoding/json",
	} {
		assert.Equal(t, want, pkgOf(in), in)
	}
}

func names(s []Share) []string {
	var out []string
	for _, x := range s {
		out = append(out, x.Name)
	}
	return out
}

func funcNames(s []FuncShare) []string {
	var out []string
	for _, x := range s {
		out = append(out, x.Name)
	}
	return out
}
