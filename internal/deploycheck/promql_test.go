package deploycheck

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// promqlWords are the identifiers of PromQL that are not metric names:
// aggregation operators, functions, keywords and binary operators.
var promqlWords = setOf(
	// aggregations
	"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
	"quantile", "limitk", "limit_ratio",
	// functions
	"abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
	"day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor",
	"histogram_avg", "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
	"histogram_stdvar", "histogram_sum", "double_exponential_smoothing", "holt_winters", "hour", "idelta",
	"increase", "irate", "label_join", "label_replace", "ln", "log2", "log10", "minute", "month",
	"predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sort_by_label",
	"sort_by_label_desc", "sqrt", "time", "timestamp", "vector", "year", "avg_over_time", "min_over_time",
	"max_over_time", "sum_over_time", "count_over_time", "quantile_over_time", "stddev_over_time",
	"stdvar_over_time", "last_over_time", "present_over_time", "mad_over_time", "acos", "acosh", "asin",
	"asinh", "atan", "atanh", "cos", "cosh", "sin", "sinh", "tan", "tanh", "deg", "rad", "pi",
	// keywords and operators
	"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless",
	"atan2", "inf", "nan", "start", "end",
)

// groupingWords take a parenthesised list of label names.
var groupingWords = setOf("by", "without", "on", "ignoring", "group_left", "group_right")

func setOf(words ...string) map[string]bool {
	m := make(map[string]bool, len(words))
	for _, w := range words {
		m[w] = true
	}
	return m
}

// metricNames returns the metric names a PromQL expression selects, in order
// of first use: the identifiers outside label matchers ({...}), range and
// subquery brackets ([...]), string literals, comments, grouping label lists
// (by (...), on (...), ...) and Grafana variables ($x, ${x}), that are not
// PromQL words. It fails on unbalanced brackets or an unterminated string.
func metricNames(expr string) ([]string, error) {
	var names []string
	seen := map[string]bool{}
	depth := 0 // parentheses
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') }
	isIdent := func(c byte) bool { return isIdentStart(c) || ('0' <= c && c <= '9') }
	i := 0
	// skipString skips the string literal starting at i.
	skipString := func() error {
		q := expr[i]
		for j := i + 1; j < len(expr); j++ {
			switch {
			case expr[j] == '\\' && q != '`':
				j++
			case expr[j] == q:
				i = j + 1
				return nil
			}
		}
		return fmt.Errorf("unterminated string at %d in %q", i, expr)
	}
	// skipTo skips the bracketed part starting at i (expr[i] == open),
	// strings included.
	skipTo := func(open, close byte) error {
		start := i
		i++
		for i < len(expr) {
			switch c := expr[i]; {
			case c == '"' || c == '\'' || c == '`':
				if err := skipString(); err != nil {
					return err
				}
				continue
			case c == open:
				return fmt.Errorf("nested %c at %d in %q", open, i, expr)
			case c == close:
				i++
				return nil
			}
			i++
		}
		return fmt.Errorf("unbalanced %c at %d in %q", open, start, expr)
	}
	for i < len(expr) {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(); err != nil {
				return nil, err
			}
		case c == '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '{':
			if err := skipTo('{', '}'); err != nil {
				return nil, err
			}
		case c == '[':
			if err := skipTo('[', ']'); err != nil {
				return nil, err
			}
		case c == '}' || c == ']':
			return nil, fmt.Errorf("unbalanced %c at %d in %q", c, i, expr)
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			if depth < 0 {
				return nil, fmt.Errorf("unbalanced ) at %d in %q", i, expr)
			}
			i++
		case c == '$': // Grafana variable: $name, ${name}, ${name:format}
			i++
			if i < len(expr) && expr[i] == '{' {
				if err := skipTo('{', '}'); err != nil {
					return nil, err
				}
				continue
			}
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
		case '0' <= c && c <= '9' || c == '.': // number or duration literal
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.' ||
				((expr[i] == '+' || expr[i] == '-') && (expr[i-1] == 'e' || expr[i-1] == 'E'))) {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
			word := expr[start:i]
			if groupingWords[strings.ToLower(word)] {
				j := i
				for j < len(expr) && (expr[j] == ' ' || expr[j] == '\t' || expr[j] == '\n') {
					j++
				}
				if j < len(expr) && expr[j] == '(' {
					i = j
					if err := skipTo('(', ')'); err != nil {
						return nil, err
					}
				}
				continue
			}
			if promqlWords[strings.ToLower(word)] {
				continue
			}
			if !seen[word] {
				seen[word] = true
				names = append(names, word)
			}
		default:
			i++
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("unbalanced ( in %q", expr)
	}
	return names, nil
}

// labelValuesArg matches Grafana's label_values(<selector>, <label>) and
// label_values(<label>) template queries.
var labelValuesArg = regexp.MustCompile(`^\s*label_values\(\s*(.*?)\s*(?:,\s*[A-Za-z_][A-Za-z0-9_]*\s*)?\)\s*$`)

// templateMetricNames returns the metric names of a Grafana Prometheus
// template variable query: label_values(selector, label) or a PromQL query.
func templateMetricNames(query string) ([]string, error) {
	if m := labelValuesArg.FindStringSubmatch(query); m != nil {
		if !strings.ContainsAny(m[1], "{(") && !strings.Contains(query, ",") {
			return nil, nil // label_values(label): no metric
		}
		return metricNames(m[1])
	}
	q := strings.TrimSpace(query)
	if strings.HasPrefix(q, "label_names(") {
		return nil, nil
	}
	if inner, ok := strings.CutPrefix(q, "query_result("); ok && strings.HasSuffix(inner, ")") {
		return metricNames(strings.TrimSuffix(inner, ")"))
	}
	return metricNames(q)
}

// family maps a series name to its metric family when the name carries a
// histogram or summary suffix: x_bucket -> x (histogram), x_sum and x_count ->
// x (histogram or summary). ok is false for a plain name.
func family(name string) (base string, types []string, ok bool) {
	switch {
	case strings.HasSuffix(name, "_bucket"):
		return strings.TrimSuffix(name, "_bucket"), []string{"histogram"}, true
	case strings.HasSuffix(name, "_sum"):
		return strings.TrimSuffix(name, "_sum"), []string{"histogram", "summary"}, true
	case strings.HasSuffix(name, "_count"):
		return strings.TrimSuffix(name, "_count"), []string{"histogram", "summary"}, true
	}
	return name, nil, false
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`reservations_expiry_backlog`, []string{"reservations_expiry_backlog"}},
		{`sum by (job) (reservations_expiry_backlog) > 100`, []string{"reservations_expiry_backlog"}},
		{`sum(rate(reservations_commands_processed_total{instance=~"$instance",outcome="rejected"}[$__rate_interval])) by (reason)`,
			[]string{"reservations_commands_processed_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(reservations_process_latency_seconds_bucket{instance=~"$instance"}[5m])))`,
			[]string{"reservations_process_latency_seconds_bucket"}},
		{"a_total > 0\nand # a comment naming not_a_metric\nb_total offset 10m >= bool 1e-3",
			[]string{"a_total", "b_total"}},
		{`x / on (partition) group_left (instance) y unless absent(z{label="{not}"})`, []string{"x", "y", "z"}},
		{`max_over_time(go_goroutines[${__range}:1m]) and process_cpu_seconds_total @ start()`,
			[]string{"go_goroutines", "process_cpu_seconds_total"}},
		{`sum without(partition)(x) + SUM BY(le)(y)`, []string{"x", "y"}},
		{`1 + 2.5e+3`, nil},
	}
	for _, tt := range tests {
		got, err := metricNames(tt.expr)
		require.NoError(t, err, tt.expr)
		assert.Equal(t, tt.want, got, tt.expr)
	}
	for _, bad := range []string{`sum(x`, `x)`, `x{a="b"`, `x[5m`, `x{a="b}`, `x]`} {
		_, err := metricNames(bad)
		assert.Error(t, err, bad)
	}

	for q, want := range map[string][]string{
		"label_values(reservations_build_info, instance)":          {"reservations_build_info"},
		`label_values(up{job="reservations-processor"}, instance)`: {"up"},
		"label_values(instance)":                                   {},
		"label_names()":                                            {},
		"query_result(sum by (job) (x))":                           {"x"},
	} {
		got, err := templateMetricNames(q)
		require.NoError(t, err, q)
		sort.Strings(got)
		assert.ElementsMatch(t, want, got, q)
	}

	base, types, ok := family("x_seconds_bucket")
	assert.True(t, ok)
	assert.Equal(t, "x_seconds", base)
	assert.Equal(t, []string{"histogram"}, types)
	_, _, ok = family("x_total")
	assert.False(t, ok)
}
