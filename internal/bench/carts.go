package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/processor/cart"
	"github.com/reservations/reservations/schemas"
)

// Carts is the cart measurement: all-or-nothing holds of 3-line carts, the
// pipeline (SKU processor + cart coordinator, a saga per cart) against one
// Postgres transaction per cart with row locks.
type Carts struct {
	Lines        int     `json:"lines"`
	SKUs         int     `json:"skus"`
	SoldOutSKUs  int     `json:"sold_out_skus"`
	SoldOutShare float64 `json:"sold_out_share"`
	KeepShare    float64 `json:"keep_share"`
	// Steps are every measured step, pipeline (per commit interval) and SQL.
	Steps []CartStep `json:"steps"`
	// Best is each system's best point: the highest accepted holds/s whose
	// p99 is within LatencyBudget (else the lowest-p99 step, flagged).
	Best []CartBest `json:"best"`
	// Checks are the invariant checks after the runs.
	Checks []CartCheck `json:"checks"`
	// Profile is the CPU profile of the pipeline's cart runs.
	Profile *ProfileSummary `json:"profile,omitempty"`
}

// CartBest is a system's best cart step.
type CartBest struct {
	System         string        `json:"system"`
	Series         string        `json:"series"`
	CommitInterval time.Duration `json:"commit_interval"`
	Clients        int           `json:"clients"`
	HoldsPerS      float64       `json:"holds_per_s"`
	P50            float64       `json:"p50_ms"`
	P99            float64       `json:"p99_ms"`
	WithinBudget   bool          `json:"within_budget"`
	// The step with the most accepted holds/s, whatever its p99.
	MaxHoldsPerS  float64 `json:"max_holds_per_s"`
	P99AtMax      float64 `json:"p99_ms_at_max"`
	ClientsAtMax  int     `json:"clients_at_max"`
	SeriesAtMax   string  `json:"series_at_max"`
	CommitMsAtMax int64   `json:"commit_interval_ms_at_max"`
}

// CartCheck is the verdict of the invariant check of one system after its
// cart steps.
type CartCheck struct {
	System string `json:"system"`
	Scope  string `json:"scope"`
	// Carts checked (every cart whose final state the client knows), of them
	// Kept (3 active lines wanted), Released (3 released lines wanted) and
	// Rejected (no line held wanted).
	Carts    int `json:"carts"`
	Kept     int `json:"kept"`
	Released int `json:"released"`
	Rejected int `json:"rejected"`
	// PartialCarts: carts whose lines are not all in the wanted state (an
	// accepted cart without its 3 lines held, or released; a rejected cart
	// holding a line).
	PartialCarts int `json:"partial_carts"`
	// SKUs checked, OversoldSKUs (reserved > on_hand) and MismatchedSKUs
	// (reserved != sum of the active holds).
	SKUs           int `json:"skus"`
	OversoldSKUs   int `json:"oversold_skus"`
	MismatchedSKUs int `json:"mismatched_skus"`
	// Other: pipeline: cart commands answered more than once, sagas or queued
	// cart commands left in the coordinator's state; answers that showed a
	// partial cart.
	Other  int    `json:"other"`
	Detail string `json:"detail,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Violations is the check's count of broken invariants.
func (c *CartCheck) Violations() int {
	return c.PartialCarts + c.OversoldSKUs + c.MismatchedSKUs + c.Other
}

// OK reports whether the check ran and found nothing wrong.
func (c *CartCheck) OK() bool {
	return c.Error == "" && c.Carts > 0 && c.SKUs > 0 && c.Violations() == 0
}

// cartsPhase measures the carts: the pipeline at every commit interval (with
// the CPU profile on), then the SQL baseline.
func (r *run) cartsPhase(ctx context.Context) error {
	cr := &r.rep.Carts
	cr.Lines, cr.SKUs, cr.SoldOutSKUs = cartLines, r.cfg.CartSKUs, cartSoldOutSKUs
	cr.SoldOutShare, cr.KeepShare = cartSoldOutShare, cartKeepShare
	err := r.profiled("-carts", &cr.Profile, func() error {
		var err error
		labeled(ctx, "load", func(ctx context.Context) { err = r.cartPipelineRuns(ctx) })
		return err
	})
	if err != nil {
		return err
	}
	return r.cartSQLRuns(ctx)
}

// cartPlanOf is the plan of one step (the same carts for every system).
func (r *run) cartPlanOf(tag string, clients int) *cartPlan {
	n := min(max(clients*r.cfg.CartRounds, r.cfg.CartMinCarts), r.cfg.CartMaxCarts)
	return genCartPlan(tag, n, r.cfg.CartSKUs, seedOf("cart", clients))
}

func (r *run) logCartStep(st *CartStep) {
	extra := ""
	if st.Pool > 0 {
		extra += fmt.Sprintf(" pool=%d", st.Pool)
	}
	if st.Retries > 0 {
		extra += fmt.Sprintf(" retries=%d", st.Retries)
	}
	if st.SagaMs > 0 {
		extra += fmt.Sprintf(" pickup=%.0fms saga=%.0fms (line %.0fms) visible=%.0fms sku-txns=%d coord-txns=%d",
			st.PickupMs, st.SagaMs, st.LineMs, st.VisibleMs, st.SKUTxns, st.CoordTxns)
	}
	if st.Errors+st.ReleaseErrors+st.Problems > 0 {
		extra += fmt.Sprintf(" errors=%d release-errors=%d problems=%d", st.Errors, st.ReleaseErrors, st.Problems)
	}
	if st.TimeBoxed {
		extra += fmt.Sprintf(" (time-boxed: %d of %d carts)", st.Carts+st.Errors, st.Planned)
	}
	r.logf("%-18s cart    closed clients=%-5d %6d carts (%d acc, %d rej) %7.0f holds/s p50=%.1fms p99=%.1fms; release p99=%.1fms%s",
		st.Series(), st.Clients, st.Carts, st.Accepted, st.Rejected, st.HoldsPerS, st.P50, st.P99, st.ReleaseP99, extra)
}

// cartPipelineRuns runs the pipeline's cart steps on a fresh broker.
func (r *run) cartPipelineRuns(ctx context.Context) error {
	cluster, err := startBroker(ctx)
	if err != nil {
		return err
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	for _, ci := range r.cfg.CommitIntervals {
		r.logf("carts: pipeline at commit interval %s: SKU processor + cart coordinator, %d+%d SKUs",
			ci, r.cfg.CartSKUs, cartSoldOutSKUs)
		env, err := r.startCartPipeline(ctx, brokers, ci)
		if err != nil {
			return fmt.Errorf("start cart pipeline (commit interval %s): %w", ci, err)
		}
		err = r.cartPipelineCI(ctx, env)
		if cerr := env.close(); err == nil && cerr != nil {
			err = fmt.Errorf("stop processors: %w", cerr)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *run) cartPipelineCI(ctx context.Context, env *cartEnv) error {
	cfg := &r.cfg
	warm := genCartPlan(r.tag("cw"), min(100, cfg.CartMinCarts), cfg.CartSKUs, seedOf("cart", -1))
	warm.encode()
	if _, err := env.step(ctx, warm, min(16, slices.Max(cfg.Concurrencies))); err != nil {
		return fmt.Errorf("cart warm-up: %w", err)
	}
	plans := []*cartPlan{warm}
	for _, c := range cfg.Concurrencies {
		p := r.cartPlanOf(r.tag("c"), c)
		p.encode()
		st, err := env.step(ctx, p, c)
		if err != nil {
			return fmt.Errorf("carts clients=%d: %w", c, err)
		}
		r.rep.Carts.Steps = append(r.rep.Carts.Steps, st)
		r.logCartStep(&st)
		plans = append(plans, p)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	chk := env.check(ctx, plans)
	r.rep.Carts.Checks = append(r.rep.Carts.Checks, chk)
	r.rep.Oversell = append(r.rep.Oversell, OversellCheck{System: SystemPipeline, Scope: chk.Scope,
		SKUsChecked: chk.SKUs, OversoldSKUs: chk.OversoldSKUs, MismatchedSKUs: chk.MismatchedSKUs, Detail: "cart phase", Error: chk.Error})
	r.logCartCheck(&chk)
	return nil
}

func (r *run) logCartCheck(c *CartCheck) {
	r.logf("%s cart check: %d carts (%d kept, %d released, %d rejected): %d partial; %d SKUs: %d oversold, %d mismatched; %d other %s %s",
		c.Scope, c.Carts, c.Kept, c.Released, c.Rejected, c.PartialCarts, c.SKUs, c.OversoldSKUs, c.MismatchedSKUs, c.Other, c.Detail, c.Error)
}

// cartEnv is the SKU processor (a pipeEnv on its own topics) plus the cart
// coordinator, the cart commands' producer and the cart results' reader.
type cartEnv struct {
	*pipeEnv
	coord   *processor.Processor
	ccancel context.CancelFunc
	cdone   chan error
	creg    *prometheus.Registry
	cdir    string
	creader *topicReader // the cart results
	crt     *cartRouter
	// problems: answers of every step so far (warm-up included) that showed a
	// partial cart or came twice.
	problems int
}

// startCartPipeline starts the SKU processor with the cart stock, then the
// coordinator, and waits until both are ready.
func (r *run) startCartPipeline(ctx context.Context, brokers []string, ci time.Duration) (_ *cartEnv, err error) {
	pe, err := r.startPipelineWith(ctx, brokers, ci, fmt.Sprintf("bench-cart-ci%d", ci.Milliseconds()), cartStock(r.cfg.CartSKUs))
	if err != nil {
		return nil, err
	}
	e := &cartEnv{pipeEnv: pe, crt: &cartRouter{}}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	// The SKU results (line decisions) are not the cart service's business:
	// the load generator stops reading them.
	pe.reader.cl.PauseFetchTopics(pe.names.Results)

	e.creader, err = startReader(ctx, brokers, pe.names.CartResults, e.crt.handle)
	if err != nil {
		return nil, fmt.Errorf("cart results reader: %w", err)
	}

	e.cdir, err = os.MkdirTemp("", "reservations-bench-cart-")
	if err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	cfg := processor.Config{
		Role:           processor.RoleCart,
		Brokers:        brokers,
		Topics:         pe.names,
		Group:          pe.names.CartCommands + "-group",
		StateDir:       e.cdir,
		CommitInterval: ci,
		MaxBatch:       r.cfg.MaxBatch,
		KafkaOpts:      []kgo.Opt{kgo.MetadataMinAge(100 * time.Millisecond)},
	}
	e.creg = prometheus.NewRegistry()
	e.coord, err = processor.New(cfg, processor.WithLogger(r.cfg.Logger), processor.WithRegisterer(e.creg))
	if err != nil {
		return nil, fmt.Errorf("cart coordinator: %w", err)
	}
	cctx, ccancel := context.WithCancel(context.WithoutCancel(ctx))
	e.cdone = make(chan error, 1)
	labeled(cctx, "coordinator", func(cctx context.Context) {
		go func() { e.cdone <- e.coord.Run(cctx) }()
	})
	e.ccancel = ccancel
	if err := waitReady(ctx, e.coord, r.cfg.Partitions, e.cdone, 60*time.Second, 10*time.Millisecond, "cart coordinator"); err != nil {
		return nil, err
	}
	return e, nil
}

// close stops the coordinator, then the SKU processor (removing the topics).
func (e *cartEnv) close() error {
	var err error
	if e.ccancel != nil {
		e.ccancel()
		select {
		case err = <-e.cdone:
		case <-time.After(60 * time.Second):
			err = errors.New("cart coordinator did not stop within 60s")
		}
		if err != nil {
			err = fmt.Errorf("cart coordinator: %w", err)
		}
	}
	e.creader.close()
	if e.cdir != "" {
		_ = os.RemoveAll(e.cdir)
	}
	if perr := e.pipeEnv.close(); err == nil {
		err = perr
	}
	return err
}

// cartRoute correlates the cart results of one step with its cart commands
// (command_id tag.N).
type cartRoute struct {
	tag     string
	ch      []chan cartAnswer
	decided []atomic.Int32 // non-duplicate results per command
}

// cartRouter reads the cart results topic and hands each result to its route.
type cartRouter struct {
	routes[cartRoute]
	bad atomic.Int64 // results that could not be read
}

func (rt *cartRouter) handle(rec *kgo.Record, now time.Time) {
	var res schemas.CartResult
	if err := json.Unmarshal(rec.Value, &res); err != nil {
		rt.bad.Add(1)
		return
	}
	ro, n := rt.lookup(res.CommandID)
	if ro == nil || n >= len(ro.ch) {
		return
	}
	if res.Duplicate {
		return
	}
	ro.decided[n].Add(1)
	a := cartAnswer{accepted: res.Outcome == schemas.OutcomeAccepted, problem: resultProblem(&res),
		visible: max(0, now.Sub(res.DecidedAt.Time()))}
	select {
	case ro.ch[n] <- a:
	default:
	}
}

// resultProblem says what is wrong with a cart result's lines ("" when
// nothing): an accepted cart.reserve has every line accepted and active, a
// rejected one none active.
func resultProblem(res *schemas.CartResult) string {
	if res.Type != schemas.TypeCartReserve {
		return ""
	}
	if res.Outcome == schemas.OutcomeAccepted {
		if len(res.Lines) != cartLines {
			return fmt.Sprintf("accepted with %d lines", len(res.Lines))
		}
		for _, l := range res.Lines {
			if l.Outcome != schemas.OutcomeAccepted || l.Status != schemas.StatusActive {
				return fmt.Sprintf("accepted, but line %s is %s/%s", l.SKU, l.Outcome, l.Status)
			}
		}
		return ""
	}
	for _, l := range res.Lines {
		if l.Status == schemas.StatusActive || l.Status == schemas.StatusConsumed {
			return fmt.Sprintf("rejected, but line %s is %s", l.SKU, l.Status)
		}
	}
	return ""
}

// cartPipeExec sends cart commands and waits for their cart results.
type cartPipeExec struct {
	e  *cartEnv
	ro *cartRoute
}

func (x cartPipeExec) send(ctx context.Context, id, cartID string, slot int, value []byte) (cartAnswer, error) {
	errc := make(chan error, 1)
	x.e.prod.Produce(ctx, &kgo.Record{Topic: x.e.names.CartCommands, Key: []byte(cartID), Value: value}, func(_ *kgo.Record, err error) {
		if err != nil {
			errc <- err
		}
	})
	select {
	case a := <-x.ro.ch[slot]:
		return a, nil
	case err := <-errc:
		return cartAnswer{}, fmt.Errorf("produce cart command %s: %w", id, err)
	case <-ctx.Done():
		return cartAnswer{}, fmt.Errorf("no cart result for %s: %w", id, ctx.Err())
	}
}

func (x cartPipeExec) reserve(ctx context.Context, c *cartOp) (cartAnswer, error) {
	return x.send(ctx, c.id, c.cart, c.slot, c.reserve)
}

func (x cartPipeExec) release(ctx context.Context, c *cartOp) (cartAnswer, error) {
	return x.send(ctx, c.relID, c.cart, c.slot+1, c.release)
}

// histSums returns the sum and count of every histogram of reg by name.
func histSums(reg *prometheus.Registry) map[string][2]float64 {
	out := map[string][2]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				v := out[mf.GetName()]
				out[mf.GetName()] = [2]float64{v[0] + h.GetSampleSum(), v[1] + float64(h.GetSampleCount())}
			}
		}
	}
	return out
}

// meanMs is the mean of histogram name between two snapshots, in milliseconds.
func meanMs(a, b map[string][2]float64, name string) float64 {
	n := b[name][1] - a[name][1]
	if n <= 0 {
		return 0
	}
	return 1000 * (b[name][0] - a[name][0]) / n
}

// step runs one closed-loop cart step.
func (e *cartEnv) step(ctx context.Context, p *cartPlan, clients int) (CartStep, error) {
	st := CartStep{System: SystemPipeline, CommitInterval: e.ci}
	ro := &cartRoute{tag: p.tag, ch: make([]chan cartAnswer, 2*len(p.carts)), decided: make([]atomic.Int32, 2*len(p.carts))}
	for i := range ro.ch {
		ro.ch[i] = make(chan cartAnswer, 1)
	}
	e.crt.add(ro.tag, ro)
	defer e.crt.remove(ro.tag)
	s0, c0 := e.txnStats(), gatherTxnStats(e.creg, "reservations")
	h0, ch0 := histSums(e.reg), histSums(e.creg)
	cartLoop(ctx, cartPipeExec{e, ro}, p, clients, e.r.cfg.CartStepTimeout, &st)
	s1, c1 := e.txnStats(), gatherTxnStats(e.creg, "reservations")
	h1, ch1 := histSums(e.reg), histSums(e.creg)
	var sku, coord Step
	s1.since(s0, &sku)
	c1.since(c0, &coord)
	st.SKUTxns, st.SKURecordsTxn, st.SKUCommitMs = sku.Txns, sku.RecordsPerTxn, sku.CommitMs
	st.CoordTxns, st.CoordRecordsTxn, st.CoordCommitMs = coord.Txns, coord.RecordsPerTxn, coord.CommitMs
	st.Aborts, st.Restarts = sku.Aborts+coord.Aborts, sku.Restarts+coord.Restarts
	st.PickupMs = meanMs(ch0, ch1, "reservations_process_latency_seconds")
	st.SagaMs = meanMs(ch0, ch1, "reservations_cart_saga_seconds")
	st.LineMs = meanMs(h0, h1, "reservations_process_latency_seconds")
	// Answered more than once (the route lives only as long as the step: a
	// late second answer would be missed here, the changelog check sees the
	// state it leaves).
	for i := range ro.decided {
		if ro.decided[i].Load() > 1 {
			st.Problems++
		}
	}
	e.problems += st.Problems
	if st.Carts == 0 && st.Errors > 0 {
		return st, fmt.Errorf("every cart failed (%d errors)", st.Errors)
	}
	return st, nil
}

// check replays the SKU processor's and the coordinator's changelogs (the
// committed state) and checks every cart of plans and every cart SKU.
func (e *cartEnv) check(ctx context.Context, plans []*cartPlan) CartCheck {
	c := CartCheck{System: SystemPipeline, Scope: fmt.Sprintf("pipeline %s, all cart steps", fmtDur(e.ci))}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	state := processor.Entities{}
	err := e.replay(ctx, e.names.Changelog, func(key string) bool {
		return strings.HasPrefix(key, schemas.StockPrefix) || strings.HasPrefix(key, schemas.ReservationPrefix)
	}, state)
	if err != nil {
		c.Error = err.Error()
		return c
	}
	// Stock: no oversell, reserved == sum of the active holds.
	active := map[string]int64{}
	for _, ch := range state {
		if rv := ch.Reservation; rv != nil && rv.Reservation.Status == schemas.StatusActive {
			active[rv.Reservation.SKU] += rv.Reservation.Quantity
		}
	}
	for _, l := range cartStock(e.r.cfg.CartSKUs) {
		s, ok := state.Stock(l.sku)
		if !ok {
			c.Error = "no stock entity of " + l.sku
			return c
		}
		c.SKUs++
		if s.Reserved > s.OnHand {
			c.OversoldSKUs++
		}
		if s.Reserved != active[l.sku] {
			c.MismatchedSKUs++
		}
	}
	// Carts: all or nothing.
	var bad []string
	for _, p := range plans {
		for i := range p.carts {
			o := &p.carts[i]
			status := func(sku string) string {
				rv, ok := state.Reservation(sku, o.id)
				if !ok {
					return ""
				}
				return rv.Reservation.Status
			}
			if !countCart(&c, o, status) && len(bad) < 3 {
				bad = append(bad, o.cart)
			}
		}
	}
	// The coordinator's state: no saga or queued cart command left.
	carts := processor.Entities{}
	if err := e.replay(ctx, e.names.CartChangelog, func(key string) bool { return strings.HasPrefix(key, cart.CartPrefix) }, carts); err != nil {
		c.Error = err.Error()
		return c
	}
	// Its holds: a kept cart holds its 3 lines, a cart known to be released or
	// rejected holds nothing.
	states := map[string]int{}
	for _, p := range plans {
		for i := range p.carts {
			states[p.carts[i].cart] = p.carts[i].state
		}
	}
	left, wrong, holding := 0, 0, 0
	for _, ch := range carts {
		if ch.Cart == nil || ch.Cart.Cart == nil {
			continue
		}
		ent := ch.Cart.Cart
		if ent.Saga != nil || len(ent.Queue) > 0 {
			left++
		}
		if len(ent.Holds) > 0 {
			holding++
		}
		switch states[ent.CartID] {
		case cartKept:
			if len(ent.Holds) != cartLines {
				wrong++
			}
		case cartReleased, cartRejected:
			if len(ent.Holds) > 0 {
				wrong++
			}
		}
	}
	for id, st := range states {
		if _, ok := carts[cart.CartKey(id)]; !ok && st == cartKept {
			wrong++
		}
	}
	answered := e.problems
	c.Other = left + wrong + answered + int(e.crt.bad.Load())
	c.Detail = fmt.Sprintf("coordinator: %d carts holding (%d kept), %d whose holds disagree with the answers, %d with a saga or queue left; "+
		"%d answers showing a partial cart or answered twice; %d unreadable cart results",
		holding, c.Kept, wrong, left, answered, e.crt.bad.Load())
	if len(bad) > 0 {
		c.Detail += "; partial carts: " + strings.Join(bad, ", ")
	}
	return c
}

// countCart counts cart o into c, reading each line's reservation status
// with status; it reports whether the cart is whole (all or nothing).
func countCart(c *CartCheck, o *cartOp, status func(sku string) string) bool {
	var want func(string) bool
	switch o.state {
	case cartKept:
		c.Kept++
		want = func(s string) bool { return s == schemas.StatusActive }
	case cartReleased:
		c.Released++
		want = func(s string) bool { return s == schemas.StatusReleased }
	case cartRejected:
		c.Rejected++
		want = func(s string) bool { return s == "" || s == schemas.StatusReleased }
	default:
		return true // not tried, or its final state is unknown
	}
	c.Carts++
	for _, sku := range o.skus {
		if !want(status(sku)) {
			c.PartialCarts++
			return false
		}
	}
	return true
}

// replay reads a changelog topic from the start to its last stable offsets
// into state (only keys keep accepts).
func (e *cartEnv) replay(ctx context.Context, topic string, keep func(string) bool, state processor.Entities) error {
	adm, err := kgo.NewClient(clientOpts(e.brokers)...)
	if err != nil {
		return err
	}
	defer adm.Close()
	ends, err := kadm.NewClient(adm).ListCommittedOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	if len(want) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append(clientOpts(e.brokers), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())...)
	if err != nil {
		return err
	}
	defer cl.Close()
	seen := map[int32]int64{}
	done := func() bool {
		for p, end := range want {
			if seen[p] < end-1 {
				return false
			}
		}
		return true
	}
	var derr error
	for !done() {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("replay %s stalled at %v of %v: %w", topic, seen, want, err)
		}
		fs.EachRecord(func(rec *kgo.Record) {
			seen[rec.Partition] = rec.Offset
			if rec.Attrs.IsControl() || !keep(string(rec.Key)) {
				return
			}
			ch, err := processor.DecodeChange(string(rec.Key), rec.Value)
			if err != nil {
				derr = err
				return
			}
			if ch.Tombstone() {
				delete(state, ch.Key)
			} else {
				state[ch.Key] = ch
			}
		})
		if derr != nil {
			return fmt.Errorf("replay %s: %w", topic, derr)
		}
	}
	return nil
}

// cartBest is the best cart point of a system over its series.
func (cr *Carts) cartBest(system string) (CartBest, bool) {
	b := CartBest{System: system}
	var best, fallback, top *CartStep
	for i := range cr.Steps {
		s := &cr.Steps[i]
		if s.System != system || s.Carts == 0 {
			continue
		}
		if top == nil || s.HoldsPerS > top.HoldsPerS {
			top = s
		}
		if s.P99 <= ms(LatencyBudget) {
			if best == nil || s.HoldsPerS > best.HoldsPerS {
				best = s
			}
		} else if fallback == nil || s.P99 < fallback.P99 {
			fallback = s
		}
	}
	if top == nil {
		return b, false
	}
	pick := best
	b.WithinBudget = best != nil
	if pick == nil {
		pick = fallback
	}
	b.Series, b.CommitInterval, b.Clients = pick.Series(), pick.CommitInterval, pick.Clients
	b.HoldsPerS, b.P50, b.P99 = pick.HoldsPerS, pick.P50, pick.P99
	b.MaxHoldsPerS, b.P99AtMax, b.ClientsAtMax, b.SeriesAtMax = top.HoldsPerS, top.P99, top.Clients, top.Series()
	b.CommitMsAtMax = top.CommitInterval.Milliseconds()
	return b, true
}

// finishCarts computes the cart best points and headline figures.
func (rep *Report) finishCarts() {
	cr := &rep.Carts
	h := rep.Headline
	cr.Best = nil
	for _, sys := range []string{SystemPipeline, SystemSQLCart} {
		b, ok := cr.cartBest(sys)
		if !ok {
			continue
		}
		cr.Best = append(cr.Best, b)
		k := "cart"
		if sys == SystemSQLCart {
			k = "sql_cart"
		}
		h[k+"_holds_per_s"] = b.HoldsPerS
		h[k+"_p99_ms"] = b.P99
		h[k+"_p50_ms"] = b.P50
		h[k+"_clients_at_best"] = float64(b.Clients)
		h[k+"_within_budget"] = b2f(b.WithinBudget)
		h[k+"_max_holds_per_s"] = b.MaxHoldsPerS
		h[k+"_p99_ms_at_max"] = b.P99AtMax
		if sys == SystemPipeline {
			h["cart_commit_interval_ms"] = float64(b.CommitInterval.Milliseconds())
		}
	}
	if len(cr.Best) == 2 {
		h["cart_vs_sql_ratio"] = ratio(cr.Best[0].HoldsPerS, cr.Best[1].HoldsPerS)
		h["cart_vs_sql_max_ratio"] = ratio(cr.Best[0].MaxHoldsPerS, cr.Best[1].MaxHoldsPerS)
	}
	if len(cr.Steps) > 0 {
		h["cart_lines"] = cartLines
	}
	violations, failed := 0, 0
	for i := range cr.Checks {
		c := &cr.Checks[i]
		violations += c.Violations()
		if c.Error != "" || c.Carts == 0 || c.SKUs == 0 {
			failed++
		}
	}
	if len(cr.Steps) > 0 {
		h["cart_checks"] = float64(len(cr.Checks))
		h["cart_violations"] = float64(violations)
		h["cart_checks_failed"] = float64(failed)
	}
}
