package main

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"time"
)

// progress prints how far a long operation got, at most once per interval:
// "replay: 42.0% (1234 of 2938 records), 1500 records/s, ETA 2s".
type progress struct {
	w        io.Writer
	log      *slog.Logger // with --log-format json: lines become JSON records
	what     string
	interval time.Duration
	now      func() time.Time

	mu       sync.Mutex
	started  time.Time
	last     time.Time // of the last line
	lastDone int64
}

func newProgress(w io.Writer, what string) *progress {
	now := time.Now
	t := now()
	return &progress{w: w, what: what, interval: time.Second, now: now, started: t, last: t}
}

// newProgress returns the progress of a subcommand on c.stderr: lines of
// text, or with --log-format json one JSON record per line (level INFO,
// printed whatever --log-level says, as the text lines are).
func (c *cli) newProgress(what string, l logFlags) *progress {
	p := newProgress(c.stderr, what)
	if l.Format == logFormatJSON {
		p.log = newLogger(c.stderr, logFlags{Level: slog.LevelInfo, Format: logFormatJSON})
	}
	return p
}

// update notes that done of total records are processed and prints a line if
// the last one is at least interval old, with the time left at the average
// rate since the start.
func (p *progress) update(done, total int64) {
	elapsed := p.now().Sub(p.started)
	var eta time.Duration
	known := done >= total
	if !known && done > 0 && elapsed > 0 {
		eta, known = time.Duration(float64(elapsed)*float64(total-done)/float64(done)), true
	}
	p.report(done, total, eta, known)
}

// report is update with the time left estimated by the caller (etaKnown
// false: no estimate yet).
func (p *progress) report(done, total int64, eta time.Duration, etaKnown bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.now()
	since := t.Sub(p.last)
	if since < p.interval {
		return
	}
	rate := float64(done-p.lastDone) / since.Seconds()
	p.last, p.lastDone = t, done
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	etaText := "unknown"
	if etaKnown {
		etaText = shortDuration(eta.Round(time.Second))
	}
	if p.log != nil {
		attrs := []any{"what", p.what, "percent", math.Round(pct*10) / 10, "done", done, "total", total,
			"records_per_second", math.Round(max(rate, 0))}
		if etaKnown {
			attrs = append(attrs, "eta_seconds", math.Round(eta.Seconds()))
		}
		p.log.Info("progress", attrs...)
		return
	}
	fmt.Fprintf(p.w, "%s: %5.1f%% (%d of %d records), %.0f records/s, ETA %s\n", p.what, pct, done, total, max(rate, 0), etaText)
}

// rate is the average records/s of n records since the start.
func (p *progress) rate(n int64) float64 {
	return float64(n) / max(p.now().Sub(p.started).Seconds(), 1e-3)
}
