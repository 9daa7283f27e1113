package deploycheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// promtool unit tests (https://prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules/),
// built here from the expressions of deploy/prometheus/rules.yml so that they
// test what the file says.
type promtoolFile struct {
	RuleFiles          []string       `yaml:"rule_files"`
	EvaluationInterval string         `yaml:"evaluation_interval"`
	Tests              []promtoolTest `yaml:"tests"`
}

type promtoolTest struct {
	Name        string           `yaml:"name"`
	Interval    string           `yaml:"interval"`
	InputSeries []promtoolSeries `yaml:"input_series"`
	ExprTests   []promtoolExpr   `yaml:"promql_expr_test"`
}

type promtoolSeries struct {
	Series string `yaml:"series"`
	Values string `yaml:"values"`
}

type promtoolExpr struct {
	Expr       string           `yaml:"expr"`
	EvalTime   string           `yaml:"eval_time"`
	ExpSamples []promtoolSample `yaml:"exp_samples"`
}

type promtoolSample struct {
	Labels string  `yaml:"labels"`
	Value  float64 `yaml:"value"`
}

// TestAlertExpressionsWithPromtool evaluates the expressions of the new
// alerts on synthetic series with promtool, when it is on PATH: above all
// that ReservationsNoPartitionsRunning keeps firing when every processor is
// down (its series gone) or none is discovered at all.
func TestAlertExpressionsWithPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not on PATH (Debian: apt-get install prometheus): TestRules checks the structure of the expressions only")
	}
	exprs := map[string]string{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			exprs[r.Alert] = r.Expr
		}
	}
	job := processorJob(t)
	sel := func(metric, labels string) string { return metric + `{job="` + job + `", ` + labels + `}` }
	series := func(s, values string) promtoolSeries { return promtoolSeries{Series: s, Values: values} }
	fires := []promtoolSample{{Labels: "{}", Value: 1}}
	silent := []promtoolSample{}
	count := func(alert string) string {
		e, ok := exprs[alert]
		require.True(t, ok, "no alert %s in %s", alert, rulesFile)
		return "count(" + e + ")"
	}

	none := exprs["ReservationsNoPartitionsRunning"]
	require.NotEmpty(t, none, "no alert ReservationsNoPartitionsRunning")
	running := "reservations_partitions_running"
	var tests []promtoolTest
	add := func(name, expr, at string, want []promtoolSample, in ...promtoolSeries) {
		tests = append(tests, promtoolTest{Name: name, Interval: "1m", InputSeries: in,
			ExprTests: []promtoolExpr{{Expr: expr, EvalTime: at, ExpSamples: want}}})
	}

	add("no partitions: every processor down, targets still discovered", none, "10m", fires,
		series(sel("up", `instance="p0"`), "1 1 0x20"),
		series(sel("up", `instance="p1"`), "1 1 0x20"),
		series(sel(running, `instance="p0", role="sku"`), "6 6"),
		series(sel(running, `instance="p1", role="sku"`), "6 6"))
	add("no partitions: no processor target at all", none, "10m", fires,
		series(`up{job="reservations-sink", instance="s0"}`, "1x20"))
	add("no partitions: processors up, the gauge missing everywhere", none, "10m", fires,
		series(sel("up", `instance="p0"`), "1x20"))
	add("no partitions: processors up, running none", none, "10m",
		[]promtoolSample{{Labels: `{role="cart"}`, Value: 0}, {Labels: `{role="sku"}`, Value: 0}},
		series(sel("up", `instance="p0"`), "1x20"),
		series(sel("up", `instance="p1"`), "1x20"),
		series(sel(running, `instance="p0", role="sku"`), "0x20"),
		series(sel(running, `instance="p1", role="sku"`), "0x20"),
		series(sel(running, `instance="p0", role="cart"`), "0x20"),
		series(sel(running, `instance="p1", role="cart"`), "0x20"))
	add("no partitions: healthy", none, "10m", silent,
		series(sel("up", `instance="p0"`), "1x20"),
		series(sel("up", `instance="p1"`), "1x20"),
		series(sel(running, `instance="p0", role="sku"`), "6x20"),
		series(sel(running, `instance="p1", role="sku"`), "6x20"),
		series(sel(running, `instance="p0", role="cart"`), "0x20"),
		series(sel(running, `instance="p1", role="cart"`), "12x20"))
	add("no partitions: one processor down, the other runs everything", none, "10m", silent,
		series(sel("up", `instance="p0"`), "0x20"),
		series(sel("up", `instance="p1"`), "1x20"),
		series(sel(running, `instance="p1", role="sku"`), "12x20"),
		series(sel(running, `instance="p1", role="cart"`), "12x20"))

	bucket := func(le, values string) promtoolSeries {
		return series(sel("reservations_end_to_end_latency_seconds_bucket", `instance="p0", role="sku", le="`+le+`"`), values)
	}
	slo := count("ReservationsEndToEndLatencySLO")
	add("latency: 20% above 150 ms", slo, "15m", fires,
		bucket("0.1", "0+50x20"), bucket("0.15", "0+80x20"), bucket("0.25", "0+100x20"), bucket("+Inf", "0+100x20"))
	add("latency: 4% above 150 ms", slo, "15m", silent,
		bucket("0.1", "0+90x20"), bucket("0.15", "0+96x20"), bucket("0.25", "0+100x20"), bucket("+Inf", "0+100x20"))
	add("latency: no traffic", slo, "15m", silent,
		bucket("0.1", "0x20"), bucket("0.15", "0x20"), bucket("+Inf", "0x20"))

	wipes := count("ReservationsStateWiped")
	counter := func(values string) promtoolSeries {
		return series(sel("reservations_state_wipes_total", `instance="p0"`), values)
	}
	add("wipes: a new process whose first scrape shows 1", wipes, "20m", fires, counter("1x30"))
	add("wipes: a wipe while running", wipes, "100m", fires, counter("0x90 1x30"))
	add("wipes: none", wipes, "120m", silent, counter("0x150"))
	add("wipes: one more than an hour ago", wipes, "150m", silent, counter("1x200"))

	// Standby lag: the alert fires per copy (instance and partition), above
	// 10000 only, and not for a copy that caught up again.
	standby := exprs["ReservationsStandbyLagging"]
	require.NotEmpty(t, standby, "no alert ReservationsStandbyLagging")
	lag := func(instance, partition, values string) promtoolSeries {
		return series(sel("reservations_standby_lag_records", `instance="`+instance+`", role="sku", partition="`+partition+`"`), values)
	}
	add("standby lag: one copy far behind", standby, "10m",
		[]promtoolSample{{Labels: `{job="` + job + `", instance="p1", role="sku", partition="3"}`, Value: 25000}},
		lag("p1", "3", "25000x20"), lag("p2", "4", "0x20"), lag("p0", "5", "10000x20"))
	add("standby lag: caught up", standby, "10m", silent,
		lag("p1", "3", "25000x5 0x15"), lag("p2", "4", "0x20"))
	add("standby lag: no standbys", standby, "10m", silent,
		series(sel(running, `instance="p0", role="sku"`), "6x20"))

	b, err := yaml.Marshal(promtoolFile{RuleFiles: []string{}, EvaluationInterval: "1m", Tests: tests})
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "rules_test.yml")
	require.NoError(t, os.WriteFile(file, b, 0o644))
	out, err := exec.Command(promtool, "test", "rules", file).CombinedOutput()
	require.NoError(t, err, "promtool test rules:\n%s\ntests:\n%s", out, b)
	t.Logf("promtool: %d tests passed", len(tests))
}
