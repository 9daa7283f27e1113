package bench

import (
	"fmt"
	"html"
	"math"
	"slices"
	"strings"
)

// The chart: per workload, throughput (x) against p99 latency (y) of every
// closed-loop step, one line per system and commit interval, both axes
// logarithmic, with the 150 ms budget dashed; below, the best sustained
// throughput of each system per workload (log scale).

const (
	chartW     = 1200
	panelW     = 350
	panelH     = 300
	panelTop   = 70
	panelLeft0 = 60
	panelGap   = 30
	barTop     = 500
	barH       = 200
)

var palette = []string{"#1f77b4", "#2ca02c", "#17becf", "#9467bd", "#8c564b"}

func seriesColor(series string, pipeSeries []string) string {
	switch {
	case strings.HasPrefix(series, SystemSerializable):
		return "#d62728"
	case strings.HasPrefix(series, SystemBestSQL):
		return "#ff7f0e"
	case strings.HasPrefix(series, SystemPassthrough):
		return "#7f7f7f"
	}
	if i := slices.Index(pipeSeries, series); i >= 0 {
		return palette[i%len(palette)]
	}
	return "#000000"
}

// logAxis maps values in [lo, hi] (decades) to pixels [p0, p1].
type logAxis struct {
	lo, hi float64 // log10
	p0, p1 float64
}

func newLogAxis(vals []float64, p0, p1 float64) logAxis {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range vals {
		if v > 0 {
			lo, hi = min(lo, math.Log10(v)), max(hi, math.Log10(v))
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 0, 1
	}
	lo, hi = math.Floor(lo), math.Ceil(hi)
	if hi <= lo {
		hi = lo + 1
	}
	return logAxis{lo: lo, hi: hi, p0: p0, p1: p1}
}

func (a logAxis) pos(v float64) float64 {
	if v <= 0 {
		return a.p0
	}
	return a.p0 + (math.Log10(v)-a.lo)/(a.hi-a.lo)*(a.p1-a.p0)
}

// ticks are 1, 2 and 5 times the powers of ten in range.
func (a logAxis) ticks() []float64 {
	var out []float64
	for e := a.lo; e <= a.hi; e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if math.Log10(v) <= a.hi+1e-9 {
				out = append(out, v)
			}
		}
	}
	return out
}

func human(v float64) string {
	switch {
	case v >= 1e6:
		return trimZero(fmt.Sprintf("%.1fM", v/1e6))
	case v >= 1e3:
		return trimZero(fmt.Sprintf("%.1fk", v/1e3))
	case v >= 10:
		return fmt.Sprintf("%.0f", v)
	}
	return trimZero(fmt.Sprintf("%.1f", v))
}

func trimZero(s string) string { return strings.Replace(s, ".0", "", 1) }

func (rep *Report) chart() string {
	var b strings.Builder
	pipeSeries := rep.series(SystemPipeline)
	allSeries := append(slices.Clone(pipeSeries), rep.series(SystemSerializable)...)
	allSeries = append(allSeries, rep.series(SystemBestSQL)...)
	height := barTop + barH + 125
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		chartW, height, chartW, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">Reservations: throughput vs p99 latency per system (closed-loop clients swept), %s mode, %d CPUs</text>`+"\n",
		panelLeft0, html.EscapeString(rep.Mode), rep.Machine.CPUs)
	fmt.Fprintf(&b, `<text x="%d" y="40" fill="#555">each point is one client concurrency (label); dashed: p99 budget 150 ms; pipeline lines per commit interval; both axes log scale</text>`+"\n", panelLeft0)

	// One scale for all panels, so the panels compare.
	var xs, ys []float64
	for _, s := range rep.Steps {
		if s.Kind == KindClosed && s.Completed > 0 {
			xs, ys = append(xs, s.Throughput), append(ys, s.P99)
		}
	}
	ys = append(ys, ms(LatencyBudget))
	for wi, w := range Workloads {
		x0 := float64(panelLeft0 + wi*(panelW+panelGap))
		ax := newLogAxis(xs, x0, x0+panelW)
		ay := newLogAxis(ys, panelTop+panelH, panelTop)
		fmt.Fprintf(&b, `<g><rect x="%.0f" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", x0, panelTop, panelW, panelH)
		fmt.Fprintf(&b, `<text x="%.0f" y="%d" font-size="13" font-weight="bold">%s</text>`+"\n", x0+4, panelTop-6, w)
		for _, t := range ax.ticks() {
			x := ax.pos(t)
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>`, x, panelTop, x, panelTop+panelH)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>`+"\n", x, panelTop+panelH+14, human(t))
		}
		for _, t := range ay.ticks() {
			y := ay.pos(t)
			fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#eee"/>`, x0, y, x0+panelW, y)
			fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", x0-4, y+4, human(t))
		}
		yb := ay.pos(ms(LatencyBudget))
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#d62728" stroke-dasharray="5,4"/>`+"\n", x0, yb, x0+panelW, yb)
		fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle" fill="#555">commands/s</text>`+"\n", x0+panelW/2, panelTop+panelH+30)
		if wi == 0 {
			fmt.Fprintf(&b, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle" fill="#555">p99 latency (ms)</text>`+"\n",
				panelTop+panelH/2, panelTop+panelH/2)
		}
		for _, se := range allSeries {
			var pts []string
			col := seriesColor(se, pipeSeries)
			for _, s := range rep.Steps {
				if s.Kind != KindClosed || s.Workload != w || s.Series() != se || s.Completed == 0 {
					continue
				}
				x, y := ax.pos(s.Throughput), ay.pos(s.P99)
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s %s: %d clients, %.0f/s, p99 %.1f ms</title></circle>`,
					x, y, col, html.EscapeString(se), w, s.Clients, s.Throughput, s.P99)
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="9" fill="%s">%d</text>`+"\n", x+4, y-3, col, s.Clients)
			}
			if len(pts) > 1 {
				fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5"/>`+"\n", strings.Join(pts, " "), col)
			}
		}
		b.WriteString("</g>\n")
	}
	// Legend.
	lx, ly := float64(panelLeft0), float64(panelTop+panelH+52)
	for _, se := range allSeries {
		col := seriesColor(se, pipeSeries)
		label := se
		if strings.HasPrefix(se, SystemPipeline) {
			label = "pipeline, commit interval " + strings.TrimPrefix(se, SystemPipeline+" ")
		}
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="3"/><text x="%.0f" y="%.0f">%s</text>`+"\n",
			lx, ly, lx+18, ly, col, lx+22, ly+4, html.EscapeString(label))
		lx += 30 + 6.5*float64(len(label))
	}

	// Bars: best sustained throughput (p99 <= 150 ms) per system and workload.
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13" font-weight="bold">Best throughput with p99 &lt;= 150 ms (each system at its best client concurrency; pipeline: best commit interval), commands/s, log scale</text>`+"\n",
		panelLeft0, barTop-20)
	type bar struct {
		label, color string
		v            float64
		note         string
	}
	var groups [][]bar
	var vals []float64
	for _, w := range Workloads {
		var g []bar
		for _, s := range []string{SystemPipeline, SystemBestSQL, SystemSerializable} {
			best, ok := rep.bestOfSystem(s, w)
			if !ok {
				continue
			}
			col := seriesColor(best.Series, pipeSeries)
			note := ""
			if !best.WithinBudget {
				note = " (p99 > 150 ms)"
			}
			g = append(g, bar{s, col, best.Throughput, note})
			vals = append(vals, best.Throughput)
		}
		if w == WorkloadUniform {
			for _, s := range rep.find(func(s *Step) bool { return s.System == SystemPassthrough }) {
				if s.Throughput > 0 {
					g = append(g, bar{"pass-through " + fmtDur(s.CommitInterval), "#7f7f7f", s.Throughput, " (open loop)"})
					vals = append(vals, s.Throughput)
				}
			}
		}
		groups = append(groups, g)
	}
	ay := newLogAxis(vals, barTop+barH, barTop)
	if ay.lo > 0 {
		ay.lo = max(ay.lo-1, 0)
	}
	for _, t := range ay.ticks() {
		y := ay.pos(t)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/><text x="%d" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n",
			panelLeft0, y, chartW-20, y, panelLeft0-4, y+4, human(t))
	}
	gx := float64(panelLeft0 + 10)
	for gi, g := range groups {
		fmt.Fprintf(&b, `<text x="%.0f" y="%d" font-size="12" font-weight="bold">%s</text>`+"\n", gx, barTop+barH+16, Workloads[gi])
		for _, br := range g {
			y := ay.pos(br.v)
			fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="44" height="%.1f" fill="%s"><title>%s %s: %.0f/s%s</title></rect>`,
				gx, y, float64(barTop+barH)-y, br.color, html.EscapeString(br.label), Workloads[gi], br.v, br.note)
			fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="middle" font-size="10">%s</text>`, gx+22, y-3, human(br.v))
			fmt.Fprintf(&b, `<text x="%.0f" y="%d" font-size="9" transform="rotate(30 %.0f %d)" fill="#333">%s%s</text>`+"\n",
				gx+4, barTop+barH+28, gx+4, barTop+barH+28, html.EscapeString(br.label), br.note)
			gx += 52
		}
		gx += 60
	}
	b.WriteString("</svg>\n")
	return b.String()
}
