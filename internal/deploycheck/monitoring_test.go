package deploycheck

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/internal/kafkatest"
	"github.com/reservations/reservations/internal/pgtest"
)

const (
	rulesFile     = "prometheus/rules.yml"
	dashboardFile = "grafana/dashboards/reservations.json"
)

// ruleFile is a Prometheus rule file.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func loadRules(t testing.TB) ruleFile {
	t.Helper()
	var rf ruleFile
	decodeYAML(t, rulesFile, &rf)
	require.NotEmpty(t, rf.Groups, rulesFile)
	return rf
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Expr       string      `json:"expr"`
		RefID      string      `json:"refId"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
		Overrides []struct {
			Properties []struct {
				ID string `json:"id"`
			} `json:"properties"`
		} `json:"overrides"`
	} `json:"fieldConfig"`
	Panels []panel `json:"panels"` // of a collapsed row
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasource     `json:"datasource"`
}

// queryText is the query of a template variable (a string, or an object
// with a "query" field).
func (v variable) queryText() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(v.Query, &o)
	return o.Query
}

func loadDashboard(t testing.TB) dashboard {
	t.Helper()
	var d dashboard
	require.NoError(t, json.Unmarshal(readDeploy(t, dashboardFile), &d), dashboardFile)
	return d
}

// allPanels flattens rows: the panels of collapsed rows included.
func (d dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// metricUse is one use of a metric name in a rule or a panel.
type metricUse struct {
	name  string
	where string
	expr  string
}

// usedMetrics extracts every metric name the alert rules and the dashboard
// (panel queries and template variables) use.
func usedMetrics(t testing.TB) []metricUse {
	t.Helper()
	var uses []metricUse
	add := func(where, expr string, names []string, err error) {
		require.NoError(t, err, "%s: %s", where, expr)
		for _, n := range names {
			uses = append(uses, metricUse{n, where, expr})
		}
	}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			names, err := metricNames(r.Expr)
			add(fmt.Sprintf("%s alert %s", rulesFile, r.Alert+r.Record), r.Expr, names, err)
		}
	}
	d := loadDashboard(t)
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			names, err := metricNames(tg.Expr)
			add(fmt.Sprintf("%s panel %q", dashboardFile, p.Title), tg.Expr, names, err)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			q := v.queryText()
			names, err := templateMetricNames(q)
			add(fmt.Sprintf("%s variable %s", dashboardFile, v.Name), q, names, err)
		}
	}
	return uses
}

// generatedSeries are series Prometheus makes itself, not the binary.
var generatedSeries = setOf("up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS", "ALERTS_FOR_STATE")

// TestRulesAndDashboardUseRealMetrics extracts every metric name of the
// alert rules and the dashboard and checks each against what the real
// binary exposes on /metrics: the processor (`dev`, after commands, a
// low-stock notice and a restore from the changelog, so that per-partition
// and labelled families exist), two `serve` processes with a standby each
// (the standby families, which a single instance never exports) and the sink
// (`sink` against a real Postgres).
func TestRulesAndDashboardUseRealMetrics(t *testing.T) {
	uses := usedMetrics(t)
	require.NotEmpty(t, uses)
	var want []string
	for _, u := range uses {
		if !generatedSeries[u.name] && !slices.Contains(want, u.name) {
			want = append(want, u.name)
		}
	}
	exp := binaryMetrics(t, want)

	missing := map[string][]string{}
	for _, u := range uses {
		if !generatedSeries[u.name] && !exp.has(u.name) {
			missing[u.name] = append(missing[u.name], u.where)
		}
	}
	if len(missing) == 0 {
		return
	}
	names := make([]string, 0, len(missing))
	for n := range missing {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "  %s\n      used by: %s\n", n, strings.Join(slices.Compact(missing[n]), "; "))
	}
	t.Errorf("%d of %d metric names used by deploy/ are not exposed by the binary:\n%s", len(names), len(want), b.String())
}

// binaryMetrics runs the binary and returns the union of the families that
// the processors and the sink expose, once every name of want is exposed or
// 20 seconds passed.
func binaryMetrics(t *testing.T, want []string) exposition {
	t.Helper()
	table := configTable(t)
	data := t.TempDir()
	// First, so that the pair settles while dev runs.
	standbyURLs := startStandbyPair(t)

	// Run 1: decisions whose changelog run 2 restores.
	kafka := freePort(t)
	dev, _ := startDev(t, data, kafka)
	send(t, kafka, "stock.set", "--sku", "SKU-1", "--on-hand", "10", "--threshold", "5")
	send(t, kafka, "reserve", "--sku", "SKU-1", "--reservation", "r-1", "--qty", "6")
	dev.stop(t)
	require.NoError(t, dev.err, "dev run 1 exit. Output:\n%s", dev.output())

	// Run 2: the state folder is gone, so every partition restores from the
	// changelog; then more decisions (a low_stock notice among them).
	require.NoError(t, os.RemoveAll(filepath.Join(data, "state")))
	kafka = freePort(t)
	_, admin := startDev(t, data, kafka)
	send(t, kafka, "stock.set", "--sku", "SKU-2", "--on-hand", "10", "--threshold", "5")
	send(t, kafka, "reserve", "--sku", "SKU-2", "--reservation", "r-2", "--qty", "6")
	send(t, kafka, "cart.reserve", "--cart", "cart-1", "--items", "SKU-1:1,SKU-2:1") // the coordinator's metrics

	urls := append([]string{"http://" + admin + "/metrics"}, standbyURLs...)
	if table["sink"] == nil {
		t.Errorf("the binary has no `sink` subcommand (not in `reservations config-table`): " +
			"the sink metrics of the rules and the dashboard cannot be checked against it")
	} else {
		db := pgtestDatabase(t)
		sinkAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		sink := start(t, "sink", []string{
			"RESERVATIONS_BROKERS=" + fmt.Sprintf("127.0.0.1:%d", kafka),
			"RESERVATIONS_PG_DSN=" + db,
			"RESERVATIONS_HTTP_ADDR=" + sinkAddr,
		}, "sink")
		sink.waitHTTP(t, "http://"+sinkAddr+"/healthz", 30*time.Second)
		urls = append(urls, "http://"+sinkAddr+"/metrics")
	}

	deadline := time.Now().Add(20 * time.Second)
	for {
		exp := exposition{}
		var counts []string
		for _, u := range urls {
			one := scrape(t, u)
			counts = append(counts, fmt.Sprintf("%s: %d families", u, len(one)))
			exp.merge(one)
		}
		complete := true
		for _, n := range want {
			complete = complete && exp.has(n)
		}
		if complete || time.Now().After(deadline) {
			t.Logf("scraped %s", strings.Join(counts, ", "))
			return exp
		}
		time.Sleep(250 * time.Millisecond) // polling external processes
	}
}

// startStandbyPair runs two `serve` processes with --standby-replicas 1 in
// one group on a broker of their own (internal/kafkatest), with 2 partitions:
// each owns one and keeps a warm copy of the other, so that they export the
// standby families (reservations_standby_lag_records and the like), which
// `dev` alone never does. It returns their /metrics URLs once both answer
// /healthz; the caller's polling waits for the families.
func startStandbyPair(t *testing.T) []string {
	t.Helper()
	kafka := kafkatest.New(t)
	names := kafka.Topics(t, 2)
	prefix := strings.TrimSuffix(names.Commands, ".commands")
	var urls []string
	var procs []*process
	for _, id := range []string{"standby-a", "standby-b"} {
		admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		procs = append(procs, start(t, id, nil, "serve",
			"--brokers", strings.Join(kafka.Brokers, ","),
			"--topic-prefix", prefix,
			"--group", prefix+"-processor",
			"--instance-id", id,
			"--state-dir", t.TempDir(),
			"--http-addr", admin,
			"--standby-replicas", "1",
			"--carts=false",
			"--log-level", "info"))
		urls = append(urls, "http://"+admin+"/metrics")
	}
	for i, p := range procs {
		p.waitHTTP(t, strings.TrimSuffix(urls[i], "/metrics")+"/healthz", 60*time.Second)
	}
	return urls
}

// pgtestDatabase returns the DSN of a fresh database on a real PostgreSQL
// server (internal/pgtest), dropped when t ends.
func pgtestDatabase(t *testing.T) string { return pgtest.NewDatabase(t).DSN }

// startDev runs `reservations dev` on data with the embedded broker on
// 127.0.0.1:kafka and waits until /readyz answers 200. It returns the
// process and the admin address.
func startDev(t *testing.T, data string, kafka int) (*process, string) {
	t.Helper()
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, "dev", nil, "dev",
		"--kafka-port", fmt.Sprint(kafka),
		"--http-addr", admin,
		"--data-dir", data,
		"--partitions", "2",
		"--log-level", "info")
	p.waitHTTP(t, "http://"+admin+"/readyz", 90*time.Second)
	return p, admin
}

// send runs `reservations send` against the dev broker and requires an
// accepted result.
func send(t *testing.T, kafka int, typ string, args ...string) {
	t.Helper()
	p := start(t, "send-"+typ, nil, append([]string{"send", typ,
		"--brokers", fmt.Sprintf("127.0.0.1:%d", kafka), "--timeout", "30s"}, args...)...)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("send %s did not finish. Output:\n%s", typ, p.output())
	}
	require.NoError(t, p.err, "send %s %v: want accepted (exit 0). Output:\n%s", typ, args, p.output())
}

// TestRules checks the structure of the alert rules: every rule is an alert
// with a parsable expression and duration, a severity, summary, description
// and a runbook_url (TestRunbookLinks checks where it points); the alerts the
// issue asks for exist with the thresholds it names.
func TestRules(t *testing.T) {
	duration := regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)
	alerts := map[string]rule{}
	metricsOf := map[string][]string{} // metric -> alerts using it
	for _, g := range loadRules(t).Groups {
		assert.NotEmpty(t, g.Name)
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Alert, "group %s: only alerting rules here (record: %q)", g.Name, r.Record)
			assert.NotContains(t, alerts, r.Alert, "duplicate alert")
			alerts[r.Alert] = r
			names, err := metricNames(r.Expr)
			assert.NoError(t, err, r.Alert)
			assert.NotEmpty(t, names, "%s: expression selects no metric", r.Alert)
			for _, n := range names {
				metricsOf[n] = append(metricsOf[n], r.Alert)
			}
			if r.For != "" {
				assert.Regexp(t, duration, r.For, "%s: for", r.Alert)
			}
			assert.Contains(t, []string{"critical", "warning", "info"}, r.Labels["severity"], "%s: severity", r.Alert)
			for _, a := range []string{"summary", "description", "runbook_url"} {
				assert.NotEmpty(t, strings.TrimSpace(r.Annotations[a]), "%s: annotation %s", r.Alert, a)
			}
			assert.NotContains(t, r.Annotations, "runbook", "%s: a relative runbook path does not resolve in an alert: use runbook_url", r.Alert)
		}
	}
	for _, m := range []string{
		"reservations_expiry_backlog",
		"reservations_consumer_lag_records",
		"reservations_oversold_skus",
		"reservations_sink_records_lag",
		"reservations_restore_remaining_records",
		"reservations_transaction_aborts_total",
		"reservations_dlq_records_total",
		"reservations_sink_ready",
		"reservations_sink_stale_partitions_total",
		"reservations_end_to_end_latency_seconds_bucket",
		"reservations_state_wipes_total",
		"reservations_partitions_running",
		"reservations_standby_lag_records",
	} {
		assert.NotEmpty(t, metricsOf[m], "no alert uses %s", m)
	}
	// The seed's threshold: expiry backlog above 100 for 5 minutes.
	backlog := alerts["ReservationsExpiryBacklog"]
	assert.Contains(t, backlog.Expr, "> 100")
	assert.Equal(t, "5m", backlog.For)
	// Restore stuck: remaining > 0 and not below its value of 10 minutes ago.
	stuck := alerts["ReservationsRestoreStuck"].Expr
	assert.Contains(t, stuck, "> 0")
	assert.Contains(t, stuck, "offset 10m")
	assert.Contains(t, alerts["ReservationsDeadLetters"].Expr, "increase(")
	assert.Contains(t, alerts["ReservationsTransactionAborts"].Expr, "rate(")
	assert.Contains(t, alerts["ReservationsConsumerLagGrowing"].Expr, "deriv(")
	// A re-snapshot usually happens at the sink's start, before the first
	// scrape: increase() alone would miss a series that starts at 1.
	stale := alerts["ReservationsSinkStalePartition"].Expr
	assert.Contains(t, stale, "increase(")
	assert.Contains(t, stale, "unless")

	// The latency SLO: p95 of the end-to-end (decision) latency above 150 ms
	// for 10 minutes.
	slo := alerts["ReservationsEndToEndLatencySLO"]
	assert.Regexp(t, `histogram_quantile\(0\.95,\s*sum by \((job, )?le\) \(rate\(reservations_end_to_end_latency_seconds_bucket\{role="sku"\}\[`, slo.Expr, "p95 of the end-to-end latency")
	assert.Regexp(t, `\)\s*> 0\.15\s*$`, slo.Expr, "above 150 ms")
	assert.Equal(t, "10m", slo.For)
	// State wipes: increase, and a new series that starts at 1.
	wipes := alerts["ReservationsStateWiped"].Expr
	assert.Contains(t, wipes, "increase(reservations_state_wipes_total[")
	assert.Contains(t, wipes, "unless")
	// No partitions running: must not go silent when every processor is
	// down, i.e. when no series of the gauge (and maybe of up) exists.
	none := alerts["ReservationsNoPartitionsRunning"]
	job := processorJob(t)
	assert.Contains(t, none.Expr, `absent(up{job="`+job+`"} == 1)`,
		"fires when no target of the processor's job is up, or none is scraped at all")
	assert.Regexp(t, `absent\(sum\(reservations_partitions_running\{job="`+regexp.QuoteMeta(job)+`"`, none.Expr,
		"fires when no process exports the gauge")
	assert.Regexp(t, `sum by \(role\) \(reservations_partitions_running\{job="`+regexp.QuoteMeta(job)+`"\}\) == 0`, none.Expr,
		"fires when the processes run no partition of a role")
	assert.Equal(t, "critical", none.Labels["severity"])
	assert.NotEmpty(t, none.For)
	// A standby far behind: above the balancer's acceptable recovery lag for
	// minutes, per copy (instance and partition).
	standby := alerts["ReservationsStandbyLagging"]
	assert.Regexp(t, `^max by \(job, instance, role, partition\) \(reservations_standby_lag_records\) > 10000$`, strings.TrimSpace(standby.Expr))
	assert.Equal(t, "10m", standby.For)
}

// processorJob is the job name under which compose's Prometheus scrapes the
// processor: the rules that select a job use it, and so do the PodMonitors.
func processorJob(t testing.TB) string {
	t.Helper()
	for job, target := range composeScrapeJobs(t) {
		if target == "processor" {
			return job
		}
	}
	require.FailNow(t, "deploy/prometheus/prometheus.yml does not scrape the processor")
	return ""
}

// composeScrapeJobs maps the job names of deploy/prometheus/prometheus.yml to
// the compose service each scrapes.
func composeScrapeJobs(t testing.TB) map[string]string {
	t.Helper()
	var cfg struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	decodeYAML(t, "prometheus/prometheus.yml", &cfg)
	jobs := map[string]string{}
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, _, _ := strings.Cut(target, ":")
				jobs[sc.JobName] = host
			}
		}
	}
	return jobs
}

// runbookBase is the runbook base URL that deploy/README.md defines.
func runbookBase(t testing.TB) string {
	t.Helper()
	m := regexp.MustCompile("\\*\\*Runbook base URL:\\*\\* `([^`]+)`").FindStringSubmatch(string(readDeploy(t, "README.md")))
	require.NotNil(t, m, "deploy/README.md defines no **Runbook base URL:** `...`")
	return m[1]
}

// TestRunbookLinks: every alert's runbook_url is the runbook base URL of
// deploy/README.md, "#", and the alert's name in lower case; the base names
// this module's repository and a file of it; the anchor is a heading of that
// file under "## Runbooks"; and every runbook there belongs to one alert.
func TestRunbookLinks(t *testing.T) {
	base := runbookBase(t)
	gomod, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	require.NoError(t, err)
	module := regexp.MustCompile(`(?m)^module (\S+)`).FindSubmatch(gomod)
	require.NotNil(t, module)
	repoURL := "https://" + string(module[1]) + "/blob/main/"
	rel, ok := strings.CutPrefix(base, repoURL)
	require.True(t, ok, "runbook base URL %s: want the repository of module %s, %s<file>", base, module[1], repoURL)
	doc, err := os.ReadFile(filepath.Join(repoRoot(t), filepath.FromSlash(rel)))
	require.NoError(t, err, "runbook base URL %s: no file %s in the repository", base, rel)

	// The runbooks: the ### headings of the "## Runbooks" section.
	runbooks := map[string]bool{}
	in := false
	for _, line := range strings.Split(string(doc), "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			in = strings.TrimSpace(line[3:]) == "Runbooks"
		case in && strings.HasPrefix(line, "### "):
			for a := range headingAnchors(line) {
				runbooks[a] = true
			}
		}
	}
	require.NotEmpty(t, runbooks, "%s has no ### runbook sections under ## Runbooks", rel)

	used := map[string]string{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			u := r.Annotations["runbook_url"]
			want := base + "#" + strings.ToLower(r.Alert)
			if !assert.Equal(t, want, u, "%s: runbook_url", r.Alert) {
				continue
			}
			anchor := strings.ToLower(r.Alert)
			assert.True(t, runbooks[anchor], "%s: %s has no runbook section ### %s", r.Alert, rel, r.Alert)
			assert.NotContains(t, used, anchor, "%s and %s share a runbook", r.Alert, used[anchor])
			used[anchor] = r.Alert
		}
	}
	for a := range runbooks {
		assert.Contains(t, used, a, "runbook #%s of %s belongs to no alert", a, rel)
	}
}

// TestDashboard checks the dashboard's structure (unique panel ids, a grid
// that fits, every query on the ${datasource} variable) and that it has the
// panels the issue asks for: each required metric appears in some query,
// and each latency histogram has p50 and p99 panels.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	assert.NotEmpty(t, d.UID)
	assert.NotEmpty(t, d.Title)

	var dsVar bool
	for _, v := range d.Templating.List {
		if v.Name == "datasource" {
			dsVar = v.Type == "datasource" && v.queryText() == "prometheus"
		}
		if v.Type == "query" && assert.NotNil(t, v.Datasource, "variable %s datasource", v.Name) {
			assert.Equal(t, "${datasource}", v.Datasource.UID, "variable %s datasource", v.Name)
		}
	}
	assert.True(t, dsVar, "a datasource variable of type prometheus, so the dashboard imports anywhere")

	// Filters: namespace (Kubernetes), job, instance, each a multi-value query
	// variable with All (".*": also matches series without the label, as in
	// compose, which has no namespace), each narrowed by the ones before it.
	order := []string{}
	for _, v := range d.Templating.List {
		order = append(order, v.Name)
	}
	assert.Equal(t, []string{"datasource", "namespace", "job", "instance", "role"}, order, "template variables")
	for i, name := range dashboardFilters {
		v, ok := templateVar(d, name)
		if !assert.True(t, ok, "no template variable %s", name) {
			continue
		}
		assert.Equal(t, "query", v.Type, "variable %s", name)
		assert.Regexp(t, `^label_values\(.*, `+name+`\)$`, v.queryText(), "variable %s lists its label", name)
		for _, before := range dashboardFilters[:i] {
			assert.Contains(t, v.queryText(), before+`=~"$`+before+`"`, "variable %s is narrowed by %s", name, before)
		}
	}

	ids := map[int]string{}
	var exprs []string
	for _, p := range d.allPanels() {
		assert.NotContains(t, ids, p.ID, "panel %q reuses id %d of %q", p.Title, p.ID, ids[p.ID])
		ids[p.ID] = p.Title
		assert.NotEmpty(t, p.Title, "panel %d has no title", p.ID)
		g := p.GridPos
		assert.True(t, g.W > 0 && g.H > 0 && g.X >= 0 && g.X+g.W <= 24, "panel %q gridPos %+v", p.Title, g)
		if p.Type == "row" {
			continue
		}
		if assert.NotNil(t, p.Datasource, "panel %q datasource", p.Title) {
			assert.Equal(t, "${datasource}", p.Datasource.UID, "panel %q datasource", p.Title)
		}
		assert.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		checkPanelUnit(t, p)
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			assert.NotEmpty(t, tg.Expr, "panel %q", p.Title)
			for _, sel := range selectors(tg.Expr) {
				for _, f := range dashboardFilters {
					assert.Contains(t, sel, f+`=~"$`+f+`"`, "panel %q query %s: selector %s is not filtered by $%s", p.Title, tg.RefID, sel, f)
				}
			}
			if tg.Datasource != nil {
				assert.Equal(t, "${datasource}", tg.Datasource.UID, "panel %q query %s datasource", p.Title, tg.RefID)
			}
			assert.False(t, refs[tg.RefID], "panel %q: duplicate refId %s", p.Title, tg.RefID)
			refs[tg.RefID] = true
			exprs = append(exprs, tg.Expr)
		}
	}
	used := map[string]bool{}
	for _, e := range exprs {
		names, err := metricNames(e)
		require.NoError(t, err, e)
		for _, n := range names {
			used[n] = true
		}
	}
	for _, m := range []string{
		"reservations_commands_processed_total",
		"reservations_process_latency_seconds_bucket",
		"reservations_end_to_end_latency_seconds_bucket",
		"reservations_transaction_commit_seconds_bucket",
		"reservations_consumer_lag_records",
		"reservations_restore_remaining_records",
		"reservations_restore_last_duration_seconds",
		"reservations_restored_records_total",
		"reservations_expiry_backlog",
		"reservations_expiry_lag_seconds_bucket",
		"reservations_notices_total",
		"reservations_oversold_skus",
		"reservations_active_reservations",
		"reservations_sink_records_lag",
		"reservations_sink_rows_written_total",
		"reservations_sink_batch_duration_seconds_bucket",
		"reservations_sink_postgres_errors_total",
		"reservations_transaction_aborts_total",
		"reservations_dlq_records_total",
		"reservations_duplicates_total",
		"reservations_kafka_produce_bytes_total",
		"reservations_kafka_fetch_bytes_total",
		"go_goroutines",
		"go_memstats_heap_inuse_bytes",
		"reservations_partitions_running",
		"reservations_state_wipes_total",
		"reservations_standby_lag_records",
	} {
		assert.True(t, used[m], "no dashboard panel queries %s", m)
	}
	for _, h := range []string{
		"reservations_process_latency_seconds",
		"reservations_end_to_end_latency_seconds",
		"reservations_transaction_commit_seconds",
		"reservations_expiry_lag_seconds",
		"reservations_sink_batch_duration_seconds",
	} {
		for q, name := range map[string]string{"0.5": "p50", "0.99": "p99"} {
			found := slices.ContainsFunc(exprs, func(e string) bool {
				return strings.Contains(e, "histogram_quantile("+q+",") && strings.Contains(e, h+"_bucket")
			})
			assert.True(t, found, "no %s panel of %s", name, h)
		}
	}
}

// dashboardFilters are the template variables every panel query filters by,
// in the order they narrow each other.
var dashboardFilters = []string{"namespace", "job", "instance"}

func templateVar(d dashboard, name string) (variable, bool) {
	for _, v := range d.Templating.List {
		if v.Name == name {
			return v, true
		}
	}
	return variable{}, false
}

// selectors returns the vector selectors of a PromQL expression as written:
// each metric name with its {...} ("" braces when it has none).
func selectors(expr string) []string {
	names, err := metricNames(expr)
	if err != nil {
		return nil
	}
	var out []string
	for _, n := range names {
		re := regexp.MustCompile(`(^|[^A-Za-z0-9_:])` + regexp.QuoteMeta(n) + `(\{[^}]*\})?`)
		for _, m := range re.FindAllStringSubmatch(expr, -1) {
			out = append(out, n+m[2])
		}
	}
	return out
}

// quantity is what a query's values measure, as far as the axis unit is
// concerned.
type quantity string

const (
	qTime     quantity = "time"           // seconds
	qRate     quantity = "events/s"       // rate of a counter of things
	qByteRate quantity = "bytes/s"        // rate of a byte counter
	qRatio    quantity = "ratio"          // rate of a seconds counter (CPU), a fraction
	qBytes    quantity = "bytes"          // a byte gauge
	qCount    quantity = "count"          // a gauge of things, an increase, a quantile of a count
	qUnknown  quantity = "(not inferred)" // the rules below do not say
)

// quantityOf infers the quantity of a panel query from its outermost
// function and its metric names (Prometheus naming: _seconds, _bytes, _total):
// a quantile of a _seconds histogram or time() minus a timestamp is time; a
// rate of a _seconds_total counter is a ratio, of a _bytes_total counter a
// byte rate, of another counter an event rate; an increase is a count; a
// gauge is time, bytes or a count by its name.
func quantityOf(expr string) quantity {
	names, err := metricNames(expr)
	if err != nil || len(names) == 0 {
		return qUnknown
	}
	all := func(pred func(string) bool) bool {
		for _, n := range names {
			if !pred(n) {
				return false
			}
		}
		return true
	}
	suffix := func(s string) func(string) bool { return func(n string) bool { return strings.HasSuffix(n, s) } }
	switch {
	case strings.Contains(expr, "histogram_quantile("):
		if all(suffix("_seconds_bucket")) {
			return qTime
		}
		return qCount
	case regexp.MustCompile(`time\(\)\s*-`).MatchString(expr) && all(suffix("_timestamp_seconds")):
		return qTime
	case strings.Contains(expr, "rate("):
		switch {
		case all(suffix("_seconds_total")):
			return qRatio
		case all(suffix("_bytes_total")):
			return qByteRate
		case all(func(n string) bool {
			return !strings.HasSuffix(n, "_seconds_total") && !strings.HasSuffix(n, "_bytes_total")
		}):
			return qRate
		}
		return qUnknown
	case strings.Contains(expr, "increase("):
		return qCount
	case all(suffix("_seconds")):
		return qTime
	case all(suffix("_bytes")):
		return qBytes
	case all(func(n string) bool { return !strings.HasSuffix(n, "_seconds") && !strings.HasSuffix(n, "_bytes") }):
		return qCount
	}
	return qUnknown
}

// unitsOf are the Grafana units that display a quantity.
var unitsOf = map[quantity][]string{
	qTime:     {"s", "ms", "µs", "ns", "dtdurations"},
	qRate:     {"ops", "reqps", "rps", "wps", "cps", "opm"},
	qByteRate: {"Bps", "binBps", "bps"},
	qRatio:    {"percentunit"},
	qBytes:    {"bytes", "decbytes"},
	qCount:    {"short", "none"},
}

// checkPanelUnit: a panel shows one quantity on one axis in a unit of that
// quantity; overrides do not give some series another unit (or axis).
func checkPanelUnit(t *testing.T, p panel) {
	t.Helper()
	unit := p.FieldConfig.Defaults.Unit
	seen := map[quantity][]string{}
	for _, tg := range p.Targets {
		q := quantityOf(tg.Expr)
		seen[q] = append(seen[q], tg.RefID)
	}
	if !assert.Len(t, seen, 1, "panel %q mixes quantities on one axis: %v (split it)", p.Title, seen) {
		return
	}
	for q := range seen {
		if assert.NotEqual(t, qUnknown, q, "panel %q: cannot tell the quantity of its queries", p.Title) {
			assert.Contains(t, unitsOf[q], unit, "panel %q shows %s in unit %q", p.Title, q, unit)
		}
	}
	for _, o := range p.FieldConfig.Overrides {
		for _, prop := range o.Properties {
			assert.NotContains(t, []string{"unit", "custom.axisPlacement"}, prop.ID,
				"panel %q: an override sets %s: a second unit or axis in one panel (split it)", p.Title, prop.ID)
		}
	}
}

func TestQuantityOf(t *testing.T) {
	for expr, want := range map[string]quantity{
		`histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket[5m])))`: qTime,
		`histogram_quantile(0.5, sum by (le) (rate(x_records_bucket[5m])))`:  qCount,
		`time() - min(x_start_timestamp_seconds > 0)`:                        qTime,
		`sum(rate(x_total[5m]))`:                                             qRate,
		`rate(process_cpu_seconds_total[5m])`:                                qRatio,
		`sum(rate(x_bytes_total[5m]))`:                                       qByteRate,
		`sum(increase(x_total[5m]))`:                                         qCount,
		`max(x_duration_seconds)`:                                            qTime,
		`go_memstats_heap_inuse_bytes`:                                       qBytes,
		`sum(x_records)`:                                                     qCount,
		`sum(rate(x_total[5m])) + sum(rate(y_bytes_total[5m]))`:              qUnknown,
		`max(x_duration_seconds) + sum(y_records)`:                           qUnknown,
	} {
		assert.Equal(t, want, quantityOf(expr), expr)
	}
	assert.Equal(t, []string{`x{job=~"$job"}`, `y`}, selectors(`sum(x{job=~"$job"}[5m]) / y`))
}

// Both processor roles (sku, cart) publish the same metric names, labelled
// role: every panel query of such a metric filters by the role variable (or
// names the cart role), so a panel never adds the two roles up unasked.
func TestDashboardFiltersProcessorMetricsByRole(t *testing.T) {
	d := loadDashboard(t)
	v, ok := templateVar(d, "role")
	require.True(t, ok, "a role template variable")
	assert.Regexp(t, `^label_values\(reservations_partitions_running\{.*\}, role\)$`, v.queryText())
	checked := 0
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			for _, sel := range selectors(tg.Expr) {
				name, _, _ := strings.Cut(sel, "{")
				if !strings.HasPrefix(name, "reservations_") || strings.HasPrefix(name, "reservations_sink_") ||
					strings.HasPrefix(name, "reservations_cart_") || name == "reservations_build_info" || name == "reservations_partitions_running" {
					continue
				}
				checked++
				assert.True(t, strings.Contains(sel, `role=~"$role"`) || strings.Contains(sel, `role="cart"`),
					"panel %q: %s does not filter by role", p.Title, sel)
			}
		}
	}
	assert.Greater(t, checked, 20, "processor metric selectors checked")
}
