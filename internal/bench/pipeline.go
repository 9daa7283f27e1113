package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/topics"
)

// clientOpts are the options of every client the harness creates (fast
// metadata refresh: a just-created topic is seen at once).
func clientOpts(brokers []string) []kgo.Opt {
	return []kgo.Opt{kgo.SeedBrokers(brokers...), kgo.MetadataMinAge(100 * time.Millisecond)}
}

// startBroker starts the in-process kfake broker on loopback; its goroutines
// carry the profile label component=broker.
func startBroker(ctx context.Context) (*kfake.Cluster, error) {
	var c *kfake.Cluster
	var err error
	labeled(ctx, "broker", func(context.Context) {
		c, err = kfake.NewCluster(kfake.NumBrokers(1))
	})
	if err != nil {
		return nil, fmt.Errorf("start kfake broker: %w", err)
	}
	return c, nil
}

// ensureTopics creates the pipeline topics of names.
func ensureTopics(ctx context.Context, brokers []string, names topics.Names, partitions int32) error {
	cl, err := kgo.NewClient(clientOpts(brokers)...)
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := topics.Ensure(ctx, kadm.NewClient(cl), names, partitions, 1); err != nil {
		return fmt.Errorf("create topics %s: %w", names.Commands, err)
	}
	return nil
}

// deleteTopics drops topics to free the in-memory broker (best effort).
func deleteTopics(brokers []string, ts ...string) {
	cl, err := kgo.NewClient(clientOpts(brokers)...)
	if err != nil {
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = kadm.NewClient(cl).DeleteTopics(ctx, ts...)
}

// route correlates the results of one step with its commands by command_id
// (tag.N): closed-loop clients wait on ch[N]; open-loop and paced runs record
// the latency from sent[N] and the outcome.
type route struct {
	tag     string
	ch      []chan outcome
	sent    []atomic.Int64  // send time (Unix ns) per slot
	outcome []atomic.Uint32 // 1 accepted, 2 rejected (first non-duplicate result)
	lat     samples
	got     atomic.Int64
	want    int64
	done    chan struct{} // closed when got reaches want
	last    atomic.Int64  // Unix ns of the last result routed
}

func newRoute(tag string, slots, want int, closed bool) *route {
	ro := &route{tag: tag, sent: make([]atomic.Int64, slots), outcome: make([]atomic.Uint32, slots),
		want: int64(want), done: make(chan struct{})}
	if closed {
		ro.ch = make([]chan outcome, slots)
		for i := range ro.ch {
			ro.ch[i] = make(chan outcome, 1)
		}
	}
	return ro
}

// router reads the results topic (read_committed) and hands every result to
// the route of its command_id's tag; results without a command_id (notices)
// go to the notice hook.
type router struct {
	routes[route]
	notice atomic.Pointer[func(r *kgo.Record, seen time.Time)]
}

// routes maps the tag of a command_id ("tag.N") to the route of a step.
type routes[R any] struct {
	mu sync.RWMutex
	m  map[string]*R
}

func (rs *routes[R]) add(tag string, ro *R) {
	rs.mu.Lock()
	if rs.m == nil {
		rs.m = map[string]*R{}
	}
	rs.m[tag] = ro
	rs.mu.Unlock()
}

func (rs *routes[R]) remove(tag string) {
	rs.mu.Lock()
	delete(rs.m, tag)
	rs.mu.Unlock()
}

// lookup returns the route of id's tag and the command's index N; nil when
// id is not "tag.N" of a route.
func (rs *routes[R]) lookup(id string) (*R, int) {
	dot := strings.LastIndexByte(id, '.')
	if dot < 0 {
		return nil, 0
	}
	n, err := strconv.Atoi(id[dot+1:])
	if err != nil || n < 0 {
		return nil, 0
	}
	rs.mu.RLock()
	ro := rs.m[id[:dot]]
	rs.mu.RUnlock()
	if ro == nil {
		return nil, 0
	}
	return ro, n
}

var (
	acceptedBytes  = []byte(`"outcome":"accepted"`)
	duplicateBytes = []byte(`"duplicate":true`)
)

func (rt *router) handle(r *kgo.Record, now time.Time) {
	id := ""
	for _, h := range r.Headers {
		if h.Key == processor.HeaderCommandID {
			id = string(h.Value)
			break
		}
	}
	if id == "" {
		if f := rt.notice.Load(); f != nil {
			(*f)(r, now)
		}
		return
	}
	ro, n := rt.lookup(id)
	if ro == nil || n >= len(ro.sent) {
		return
	}
	oc := outcome{accepted: bytes.Contains(r.Value, acceptedBytes), duplicate: bytes.Contains(r.Value, duplicateBytes)}
	if ro.ch != nil {
		select {
		case ro.ch[n] <- oc:
		default:
		}
	}
	if s := ro.sent[n].Load(); s > 0 {
		ro.lat.add(now.Sub(time.Unix(0, s)))
	}
	if !oc.duplicate {
		v := uint32(2)
		if oc.accepted {
			v = 1
		}
		ro.outcome[n].CompareAndSwap(0, v)
	}
	ro.last.Store(now.UnixNano())
	if ro.got.Add(1) == ro.want {
		close(ro.done)
	}
}

// pipeEnv is one processor (one commit interval) on its own topics of the
// shared broker, with the load generator's producer and results reader.
type pipeEnv struct {
	r       *run
	brokers []string
	names   topics.Names
	ci      time.Duration
	proc    *processor.Processor
	pcancel context.CancelFunc // stops the processor
	done    chan error
	prod    *kgo.Client
	reader  *topicReader // the results
	rt      *router
	dir     string
	reg     *prometheus.Registry // the processor's metrics
}

// stockLine is the stock a pipeline starts with for one SKU.
type stockLine struct {
	sku    string
	onHand int64
}

// startPipeline creates topics, starts the results reader and the processor,
// waits until it is ready and sets the stock of the uniform SKUs.
func (r *run) startPipeline(ctx context.Context, brokers []string, ci time.Duration) (*pipeEnv, error) {
	stock := make([]stockLine, r.cfg.SKUs)
	for i := range stock {
		stock[i] = stockLine{uniformSKU(i), uniformOnHand}
	}
	return r.startPipelineWith(ctx, brokers, ci, fmt.Sprintf("bench-ci%d", ci.Milliseconds()), stock)
}

// startPipelineWith is startPipeline on the topics of prefix, with the given
// initial stock.
func (r *run) startPipelineWith(ctx context.Context, brokers []string, ci time.Duration, prefix string, stock []stockLine) (_ *pipeEnv, err error) {
	e := &pipeEnv{r: r, brokers: brokers, ci: ci, rt: &router{}}
	e.names = topics.NewNames(prefix)
	if err := ensureTopics(ctx, brokers, e.names, r.cfg.Partitions); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	e.dir, err = os.MkdirTemp("", "reservations-bench-state-")
	if err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	e.prod, err = kgo.NewClient(append(clientOpts(brokers), kgo.ProducerLinger(0), kgo.MaxBufferedRecords(100_000))...)
	if err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	e.reader, err = startReader(ctx, brokers, e.names.Results, e.rt.handle)
	if err != nil {
		return nil, fmt.Errorf("results reader: %w", err)
	}

	cfg := processor.Config{
		Brokers:        brokers,
		Topics:         e.names,
		Group:          e.names.Commands + "-group",
		StateDir:       e.dir,
		CommitInterval: ci,
		MaxBatch:       r.cfg.MaxBatch,
		KafkaOpts:      []kgo.Opt{kgo.MetadataMinAge(100 * time.Millisecond)},
	}
	e.reg = prometheus.NewRegistry()
	e.proc, err = processor.New(cfg, processor.WithLogger(r.cfg.Logger), processor.WithRegisterer(e.reg))
	if err != nil {
		return nil, err
	}
	pctx, pcancel := context.WithCancel(context.WithoutCancel(ctx))
	e.done = make(chan error, 1)
	labeled(pctx, "processor", func(pctx context.Context) {
		go func() { e.done <- e.proc.Run(pctx) }()
	})
	e.pcancel = pcancel
	if err := waitReady(ctx, e.proc, r.cfg.Partitions, e.done, 60*time.Second, 10*time.Millisecond, "processor"); err != nil {
		return nil, err
	}
	// The initial stock (the uniform SKUs, with ample stock).
	p := &plan{tag: "setup-" + prefix + "-" + strconv.FormatInt(ci.Milliseconds(), 10)}
	ss := make(session, len(stock))
	for i, l := range stock {
		id := fmt.Sprintf("%s.%d", p.tag, i)
		ss[i] = op{id: id, slot: i, sku: l.sku, value: stockSetValue(id, l.sku, l.onHand)}
	}
	p.sessions, p.ops, p.slots = []session{ss}, len(ss), len(ss)
	st := e.openLoop(ctx, p, 2*time.Minute)
	if st.Completed != p.ops {
		return nil, fmt.Errorf("set stock of %d SKUs: %d results within 2m", p.ops, st.Completed)
	}
	return e, nil
}

// waitReady polls (every poll) until p is ready with every one of partitions
// assigned, and fails when p stops (its Run result, put back on done for
// whoever stops it), ctx ends or timeout passes. what names p in errors.
func waitReady(ctx context.Context, p *processor.Processor, partitions int32, done chan error, timeout, poll time.Duration, what string) error {
	deadline := time.Now().Add(timeout)
	for !p.Ready() || len(p.Status()) != int(partitions) {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("%s stopped before it was ready: %w", what, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s", what, timeout)
		}
	}
	return nil
}

// close stops the processor and the clients and removes the state folder.
func (e *pipeEnv) close() error {
	var err error
	if e.pcancel != nil {
		e.pcancel()
		select {
		case err = <-e.done:
		case <-time.After(60 * time.Second):
			err = errors.New("processor did not stop within 60s")
		}
	}
	e.reader.close()
	if e.prod != nil {
		e.prod.Close()
	}
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
	deleteTopics(e.brokers, e.names.All()...)
	return err
}

// pipeExec sends one command and waits for its result (closed loop).
type pipeExec struct {
	e  *pipeEnv
	ro *route
}

func (x pipeExec) exec(ctx context.Context, o *op) (outcome, error) {
	errc := make(chan error, 1)
	x.e.prod.Produce(ctx, &kgo.Record{Topic: x.e.names.Commands, Key: []byte(o.sku), Value: o.value}, func(_ *kgo.Record, err error) {
		if err != nil {
			errc <- err
		}
	})
	select {
	case oc := <-x.ro.ch[o.slot]:
		return oc, nil
	case err := <-errc:
		return outcome{}, fmt.Errorf("produce command %s: %w", o.id, err)
	case <-ctx.Done():
		return outcome{}, fmt.Errorf("no result for command %s: %w", o.id, ctx.Err())
	}
}

// setStock sets the stock of one SKU and waits for the result.
func (e *pipeEnv) setStock(ctx context.Context, tag, sku string, onHand int64) error {
	ro := newRoute(tag, 1, 1, true)
	e.rt.add(ro.tag, ro)
	defer e.rt.remove(ro.tag)
	o := op{id: tag + ".0", sku: sku, value: stockSetValue(tag+".0", sku, onHand)}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	oc, err := pipeExec{e, ro}.exec(ctx, &o)
	if err == nil && !oc.accepted {
		err = fmt.Errorf("stock.set %s rejected", sku)
	}
	return err
}

// closed runs one closed-loop step of plan p.
func (e *pipeEnv) closed(ctx context.Context, p *plan, clients int) (Step, error) {
	st := Step{System: SystemPipeline, CommitInterval: e.ci}
	if p.hotSKU != "" {
		if err := e.setStock(ctx, p.tag+"s", p.hotSKU, p.hotStock); err != nil {
			return st, err
		}
	}
	ro := newRoute(p.tag, p.slots, -1, true)
	e.rt.add(ro.tag, ro)
	defer e.rt.remove(ro.tag)
	t0 := e.txnStats()
	closedLoop(ctx, pipeExec{e, ro}, p, clients, e.r.cfg.StepTimeout, &st)
	e.txnStats().since(t0, &st)
	return st, nil
}

// openLoop produces every command of p as fast as possible and times until
// every result is visible (or timeout).
func (e *pipeEnv) openLoop(ctx context.Context, p *plan, timeout time.Duration) Step {
	return e.produceAll(ctx, p, 0, timeout)
}

// produceAll sends p's commands in order, at rate commands/s (0: as fast as
// possible), and waits until each has a result or timeout passes after the
// last send. Latency is measured from each command's scheduled send time, so
// a producer that falls behind does not hide queueing (coordinated omission).
func (e *pipeEnv) produceAll(ctx context.Context, p *plan, rate float64, timeout time.Duration) Step {
	st := Step{System: SystemPipeline, CommitInterval: e.ci, Kind: KindOpen, Planned: p.ops, HotStock: p.hotStock}
	if rate > 0 {
		st.Kind, st.TargetRate = KindPaced, rate
	}
	ro := newRoute(p.tag, p.slots, p.ops, false)
	e.rt.add(ro.tag, ro)
	defer e.rt.remove(ro.tag)
	var prodErrs atomic.Int64
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			prodErrs.Add(1)
		}
	}
	t0 := e.txnStats()
	start := time.Now()
	i := 0
	for _, ss := range p.sessions {
		for k := range ss {
			o := &ss[k]
			at := time.Now()
			if rate > 0 {
				at = start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
				if d := time.Until(at); d > time.Millisecond {
					time.Sleep(d)
				}
			}
			ro.sent[o.slot].Store(at.UnixNano())
			e.prod.Produce(ctx, &kgo.Record{Topic: e.names.Commands, Key: []byte(o.sku), Value: o.value}, promise)
			i++
		}
	}
	select {
	case <-ro.done:
	case <-ctx.Done():
	case <-time.After(timeout):
	}
	e.txnStats().since(t0, &st)
	st.Completed = int(ro.got.Load())
	st.Errors = int(prodErrs.Load())
	st.TimedOut = st.Completed < p.ops
	end := time.Unix(0, ro.last.Load())
	if st.Completed == 0 {
		end = time.Now()
	}
	st.Seconds = end.Sub(start).Seconds()
	if st.Seconds > 0 {
		st.Throughput = float64(st.Completed) / st.Seconds
	}
	ro.lat.fill(&st)
	for _, ss := range p.sessions {
		for k := range ss {
			o := &ss[k]
			v := ro.outcome[o.slot].Load()
			switch {
			case o.dup:
				st.Duplicates++
			case v == 1:
				st.Accepted++
			case v == 2:
				st.Rejected++
			}
			if o.hot && !o.dup {
				st.HotAsked += o.qty
				if v == 1 {
					st.HotAccepted += o.qty
				}
			}
		}
	}
	return st
}

// checkHot verifies from the processor's committed state and from the results
// that the hot SKU of a step was not oversold.
func (e *pipeEnv) checkHot(ctx context.Context, st *Step, p *plan) OversellCheck {
	c := OversellCheck{System: SystemPipeline, Scope: fmt.Sprintf("%s %s %s clients=%d", st.Series(), st.Workload, st.Kind, st.Clients)}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := e.proc.Stock(ctx, p.hotSKU)
	if err != nil {
		c.Error = err.Error()
		return c
	}
	c.SKUsChecked = 1
	if s.Reserved > s.OnHand || st.HotAccepted > p.hotStock {
		c.OversoldSKUs = 1
	}
	c.Detail = fmt.Sprintf("hot SKU: on_hand %d, reserved %d; accepted %d of %d asked", s.OnHand, s.Reserved, st.HotAccepted, st.HotAsked)
	return c
}

// txnStats are the processor's transaction counters at one moment.
type txnStats struct {
	txns, records, commits float64
	commitSeconds, aborts  float64
	decides, decideSeconds float64
	flushes, flushSeconds  float64
	slowCommits            float64 // ended in more than slowCommit
	restarts               float64 // Kafka sessions replaced after a failure
}

// slowCommit is the bound above which ending a transaction counts as slow (a
// bucket bound of reservations_transaction_commit_seconds).
const slowCommit = 0.128

func (e *pipeEnv) txnStats() txnStats { return gatherTxnStats(e.reg, "reservations") }

// gatherTxnStats reads the transaction counters of the processor whose
// metrics registry is reg and whose metric names start with ns (both roles
// publish reservations_*, labelled role; each has its own registry here).
func gatherTxnStats(reg *prometheus.Registry, ns string) txnStats {
	mfs, err := reg.Gather()
	if err != nil {
		return txnStats{}
	}
	return txnStatsOf(mfs, ns)
}

// txnStatsOf reads the transaction counters from gathered or scraped metrics.
func txnStatsOf(mfs []*dto.MetricFamily, ns string) txnStats {
	var t txnStats
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			switch strings.TrimPrefix(mf.GetName(), ns+"_") {
			case "transaction_records":
				t.txns += float64(h.GetSampleCount())
				t.records += h.GetSampleSum()
			case "transaction_decide_seconds":
				t.decides += float64(h.GetSampleCount())
				t.decideSeconds += h.GetSampleSum()
			case "transaction_flush_seconds":
				t.flushes += float64(h.GetSampleCount())
				t.flushSeconds += h.GetSampleSum()
			case "transaction_commit_seconds":
				t.commits += float64(h.GetSampleCount())
				t.commitSeconds += h.GetSampleSum()
				fast := 0.0
				for _, b := range h.GetBucket() {
					if b.GetUpperBound() <= slowCommit+1e-9 {
						fast = max(fast, float64(b.GetCumulativeCount()))
					}
				}
				t.slowCommits += float64(h.GetSampleCount()) - fast
			case "transaction_aborts_total":
				t.aborts += m.GetCounter().GetValue()
			case "session_restarts_total":
				t.restarts += m.GetCounter().GetValue()
			}
		}
	}
	return t
}

// since sets the step's transaction figures from the counters' growth.
func (t txnStats) since(t0 txnStats, st *Step) {
	st.Txns = int(t.txns - t0.txns)
	st.Aborts = int(t.aborts - t0.aborts)
	st.SlowCommits = int(t.slowCommits - t0.slowCommits)
	st.Restarts = int(t.restarts - t0.restarts)
	if st.Txns > 0 {
		st.RecordsPerTxn = (t.records - t0.records) / float64(st.Txns)
	}
	mean := func(sum, sum0, n, n0 float64) float64 {
		if n-n0 <= 0 {
			return 0
		}
		return 1000 * (sum - sum0) / (n - n0)
	}
	st.CommitMs = mean(t.commitSeconds, t0.commitSeconds, t.commits, t0.commits)
	st.DecideMs = mean(t.decideSeconds, t0.decideSeconds, t.decides, t0.decides)
	st.FlushMs = mean(t.flushSeconds, t0.flushSeconds, t.flushes, t0.flushes)
}

// topicReader reads a topic read_committed from its start in a goroutine,
// handing each record and its arrival time to handle, until closed.
type topicReader struct {
	cl     *kgo.Client
	cancel context.CancelFunc
	done   chan struct{}
}

func startReader(ctx context.Context, brokers []string, topic string, handle func(*kgo.Record, time.Time)) (*topicReader, error) {
	cl, err := kgo.NewClient(append(clientOpts(brokers), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &topicReader{cl: cl, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			fs := cl.PollFetches(rctx)
			if rctx.Err() != nil {
				return
			}
			now := time.Now()
			fs.EachRecord(func(rec *kgo.Record) { handle(rec, now) })
		}
	}()
	return r, nil
}

// close stops the reader and closes its client (nil: nothing to do).
func (r *topicReader) close() {
	if r == nil {
		return
	}
	r.cancel()
	<-r.done
	r.cl.Close()
}
