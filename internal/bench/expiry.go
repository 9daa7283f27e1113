package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/schemas"
)

// Expiry is the expiry measurement: many holds expiring over a window while
// closed-loop traffic runs, and the delay of each expiry notice.
type Expiry struct {
	Holds          int           `json:"holds"`
	Received       int           `json:"received"`
	MinTTL         time.Duration `json:"min_ttl"`
	Window         time.Duration `json:"window"`
	CommitInterval time.Duration `json:"commit_interval"`
	// Lag* are decided_at - expires_at of the notices (the processor's own
	// timers), in milliseconds.
	LagP50 float64 `json:"lag_p50_ms"`
	LagP99 float64 `json:"lag_p99_ms"`
	LagMax float64 `json:"lag_max_ms"`
	// Visible* are (time the notice was read, read_committed) - expires_at.
	VisibleP50 float64 `json:"visible_p50_ms"`
	VisibleP99 float64 `json:"visible_p99_ms"`
	VisibleMax float64 `json:"visible_max_ms"`
	// Background is the concurrent closed-loop traffic during the window.
	Background Step `json:"background"`
	TimedOut   bool `json:"timed_out"`
}

var expiredBytes = []byte(`"type":"expired"`)

// expiry reserves Config.ExpiryHolds holds with TTLs spread over the window,
// while 64 closed-loop clients send uniform reserves, and collects the expiry
// notices of the holds.
func (e *pipeEnv) expiry(ctx context.Context) (Expiry, error) {
	cfg := &e.r.cfg
	ex := Expiry{Holds: cfg.ExpiryHolds, MinTTL: cfg.ExpiryMinTTL, Window: cfg.ExpiryWindow, CommitInterval: e.ci}
	tag := e.r.tag("x")
	var mu sync.Mutex
	var lags, vis []float64
	all := make(chan struct{})
	hook := func(rec *kgo.Record, seen time.Time) {
		if !bytes.Contains(rec.Value, expiredBytes) {
			return
		}
		var res schemas.Result
		if err := json.Unmarshal(rec.Value, &res); err != nil || res.Reservation == nil ||
			!strings.HasPrefix(res.ReservationID, tag+".") {
			return
		}
		exp := res.Reservation.ExpiresAt
		mu.Lock()
		defer mu.Unlock()
		lags = append(lags, float64(res.DecidedAt-exp))
		vis = append(vis, float64(schemas.MillisOf(seen)-exp))
		if len(lags) == cfg.ExpiryHolds {
			close(all)
		}
	}
	e.rt.notice.Store(&hook)
	defer e.rt.notice.Store(nil)

	// Concurrent traffic for the whole window.
	clients := min(64, slices.Max(cfg.Concurrencies))
	window := cfg.ExpiryMinTTL + cfg.ExpiryWindow + 2*time.Second
	bg := genPlan(WorkloadUniform, e.r.tag("b"), min(clients*int(window/(10*time.Millisecond)), 300_000), cfg.SKUs, seedOf("background", clients))
	bg.encode()
	bgRoute := newRoute(bg.tag, bg.slots, -1, true)
	e.rt.add(bgRoute.tag, bgRoute)
	defer e.rt.remove(bgRoute.tag)
	bgDone := make(chan struct{})
	ex.Background = Step{System: SystemPipeline, Workload: WorkloadUniform, CommitInterval: e.ci}
	go func() {
		defer close(bgDone)
		closedLoop(ctx, pipeExec{e, bgRoute}, bg, clients, window, &ex.Background)
	}()

	// The holds: TTLs of MinTTL + (i mod window seconds).
	p := &plan{tag: tag}
	secs := max(int(cfg.ExpiryWindow/time.Second), 1)
	ss := make(session, cfg.ExpiryHolds)
	for i := range ss {
		o := op{typ: schemas.TypeReserve, sku: uniformSKU(i % cfg.SKUs), res: fmt.Sprintf("%s.r%d", tag, i), qty: 1,
			id: fmt.Sprintf("%s.%d", tag, i), slot: i, ttl: int64(cfg.ExpiryMinTTL/time.Second) + int64(i%secs)}
		o.value = encodeCommand(&o)
		ss[i] = o
	}
	p.sessions, p.ops, p.slots = []session{ss}, len(ss), len(ss)
	st := e.openLoop(ctx, p, time.Minute)
	if st.Completed < p.ops {
		<-bgDone
		return ex, fmt.Errorf("%d of %d holds decided within 1m", st.Completed, p.ops)
	}
	select {
	case <-all:
	case <-ctx.Done():
		ex.TimedOut = true
	case <-time.After(cfg.ExpiryMinTTL + cfg.ExpiryWindow + 30*time.Second):
		ex.TimedOut = true
	}
	<-bgDone
	mu.Lock()
	defer mu.Unlock()
	ex.Received = len(lags)
	ex.LagP50, ex.LagP99, ex.LagMax = quantile(lags, 0.5), quantile(lags, 0.99), quantile(lags, 1)
	ex.VisibleP50, ex.VisibleP99, ex.VisibleMax = quantile(vis, 0.5), quantile(vis, 0.99), quantile(vis, 1)
	return ex, nil
}
