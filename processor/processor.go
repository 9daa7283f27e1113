package processor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/reservations/reservations/processor/cart"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/statestore"
	"github.com/reservations/reservations/topics"
)

// Option is a seam for tests and wiring.
type Option func(*Processor)

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(p *Processor) { p.log = l } }

// WithRegisterer registers the metrics on r (default: a private registry).
func WithRegisterer(r prometheus.Registerer) Option { return func(p *Processor) { p.reg = r } }

// WithClock sets the clock decisions are made with (default time.Now).
func WithClock(now func() time.Time) Option { return func(p *Processor) { p.now = now } }

// Processor consumes the commands topic in a consumer group and decides every
// command exactly once. See the package documentation for the design.
type Processor struct {
	cfg      Config
	log      *slog.Logger
	reg      prometheus.Registerer
	now      func() time.Time
	core     Core
	cartCore cart.Core
	// io are the topics of this processor's role: its input (Commands),
	// results, changelog and DLQ (cfg.Topics, or cfg.Topics.Cart() for RoleCart).
	io        topics.Names
	metrics   *metrics
	storeOpts statestore.Options

	// Set by Run.
	ctx           context.Context
	sess          *kgo.GroupTransactSession
	adm           *kadm.Client
	partitions    int32
	dlqPartitions int32
	// peerPartitions is the partition count of the other role's input: the
	// cart-commands topic for RoleSKU (0 when it does not exist: decisions of
	// reply_to=cart commands are then not routed), the commands topic for RoleCart.
	peerPartitions int32
	changelogID    []byte

	mu       sync.Mutex
	events   []groupEvent
	failErr  error
	parts    map[int32]*partition // owned by the main loop
	restored chan restoreDone
	status   map[int32]string // guarded by mu; for readiness
	joined   bool             // guarded by mu: the group assigned us (possibly nothing)
	brokerOK bool             // guarded by mu: the last broker ping answered
	// Interactive queries (guarded by mu).
	queryable map[int32]*partition // running partitions
	owners    map[int32]string     // partition -> advertised address, from DescribeGroups
	ownersAt  time.Time
}

type groupEvent struct {
	assigned bool
	parts    []int32
}

// New validates cfg and allocates a Processor; it starts nothing.
func New(cfg Config, opts ...Option) (*Processor, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("processor config: %w", err)
	}
	p := &Processor{cfg: cfg, now: time.Now, parts: make(map[int32]*partition), status: make(map[int32]string),
		queryable: make(map[int32]*partition)}
	for _, o := range opts {
		o(p)
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.reg == nil {
		p.reg = prometheus.NewRegistry()
	}
	p.core = Core{Rules: cfg.Rules}
	p.cartCore = cart.Core{Rules: cfg.CartRules}
	p.io = cfg.Topics
	if cfg.Role == RoleCart {
		p.io = cfg.Topics.Cart()
	}
	p.metrics = newMetrics(p.reg, cfg.Role)
	p.storeOpts = statestore.Options{Logger: p.log}
	return p, nil
}

// instanceID reads or creates the persistent id of the instance using dir.
func instanceID(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create state dir %s: %w", dir, err)
	}
	f := filepath.Join(dir, "instance-id")
	if b, err := os.ReadFile(f); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate instance id: %w", err)
	}
	id := hex.EncodeToString(b[:])
	if err := os.WriteFile(f, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("write instance id: %w", err)
	}
	return id, nil
}

// TransactionalID is the producer's transactional id (known once Run started,
// or when Config.InstanceID is set).
func (p *Processor) TransactionalID() string { return p.cfg.Group + "-" + p.cfg.InstanceID }

// Status returns each assigned partition's state ("restoring" or "running").
func (p *Processor) Status() map[int32]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[int32]string, len(p.status))
	for k, v := range p.status {
		out[k] = v
	}
	return out
}

// Ready reports whether the processor is in its group and every assigned
// partition is restored and processing.
func (p *Processor) Ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sess == nil || p.failErr != nil || !p.joined || !p.brokerOK {
		return false
	}
	for _, s := range p.status {
		if s != "running" {
			return false
		}
	}
	return true
}

func (p *Processor) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failErr == nil {
		p.failErr = err
	}
}

func (p *Processor) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failErr
}

func (p *Processor) pushEvent(e groupEvent) {
	p.mu.Lock()
	p.events = append(p.events, e)
	p.mu.Unlock()
}

func (p *Processor) takeEvents() []groupEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	ev := p.events
	p.events = nil
	return ev
}

func (p *Processor) produce(r *kgo.Record, promise func(*kgo.Record, error)) {
	// Not canceled with Run's context: the open transaction is ended (committed
	// or aborted) properly on shutdown.
	p.sess.Produce(context.WithoutCancel(p.ctx), r, promise)
}

// Close releases nothing: Run owns and releases every resource it opens.
func (p *Processor) Close() {}

// Run joins the group and processes until ctx ends (nil error) or a fatal
// error. A failure of the Kafka session (fencing, exhausted retries, a store
// write error) is not fatal: like Kafka Streams replacing a failed stream
// thread, Run stops every partition at a transaction boundary, backs off, and
// starts a new session, restoring partitions from their stores and the
// changelog. Fatal are: a broken topic layout and ctx ending.
func (p *Processor) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		started := time.Now()
		err := p.runOnce(ctx)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, topics.ErrLayout) {
			return err
		}
		if time.Since(started) > time.Minute {
			backoff = 100 * time.Millisecond
		}
		p.metrics.restarts.Inc()
		p.log.Warn("processor session failed: restarting", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (p *Processor) runOnce(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if p.cfg.InstanceID == "" {
		id, err := instanceID(p.cfg.StateDir)
		if err != nil {
			return err
		}
		p.cfg.InstanceID = id
	}
	p.ctx = ctx
	p.restored = make(chan restoreDone, 64)
	p.mu.Lock()
	p.failErr = nil
	p.events = nil
	p.joined = false
	p.mu.Unlock()

	admCl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(p.cfg.Brokers...)}, p.cfg.KafkaOpts...)...)
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	defer admCl.Close()
	p.mu.Lock()
	p.adm = kadm.NewClient(admCl)
	p.mu.Unlock()
	if err := p.loadLayout(ctx); err != nil {
		return err
	}

	t := p.io
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(p.cfg.Brokers...),
		kgo.ClientID(p.clientID()),
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(t.Commands),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.TransactionalID(p.TransactionalID()),
		kgo.TransactionTimeout(p.cfg.TransactionTimeout),
		kgo.SessionTimeout(p.cfg.SessionTimeout),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0),
		kgo.OnPartitionsAssigned(p.onAssigned),
		kgo.OnPartitionsRevoked(p.onRevoked),
		kgo.OnPartitionsLost(p.onRevoked),
		// franz-go's client metrics (reservations_kafka_*), unregistered when
		// the session's client closes.
		kgo.WithHooks(kprom.NewMetrics(p.metrics.namespace, kprom.Subsystem("kafka"), kprom.Registerer(p.reg))),
	}, p.cfg.KafkaOpts...)
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return fmt.Errorf("transactional group client: %w", err)
	}
	// Initialise the transactional producer now: with a stable transactional id
	// this fences a predecessor (a crashed or restarted instance) and aborts its
	// open transaction at once, instead of leaving it to block restores until
	// the transaction timeout.
	if _, _, err := sess.Client().ProducerID(ctx); err != nil {
		sess.Close()
		return fmt.Errorf("init transactional producer %s: %w", p.TransactionalID(), err)
	}
	p.mu.Lock()
	p.sess = sess
	p.brokerOK = true
	p.mu.Unlock()
	go p.pingBrokers(ctx, sess.Client())
	p.log.Info("processor started", "role", p.cfg.Role.String(), "group", p.cfg.Group, "transactional_id", p.TransactionalID(),
		"commands", t.Commands, "partitions", p.partitions, "state_dir", p.cfg.StateDir)

	runErr := p.loop(ctx)
	// Stop partitions, then leave the group. An open transaction is aborted by
	// Close (its records will be decided again by the next owner).
	for _, w := range p.parts {
		p.stopPartition(w)
	}
	sess.Close()
	p.mu.Lock()
	p.sess = nil
	p.mu.Unlock()
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return runErr
	}
	return nil
}

// pingBrokers keeps brokerOK current (once a second), so that readiness goes
// false while the cluster is unreachable and true again when it answers.
func (p *Processor) pingBrokers(ctx context.Context, cl *kgo.Client) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := cl.Ping(pctx)
		cancel()
		p.mu.Lock()
		if ok := err == nil; ok != p.brokerOK {
			p.brokerOK = ok
			if ok {
				p.log.Info("brokers reachable again")
			} else {
				p.log.Warn("brokers unreachable: not ready", "err", err)
			}
		}
		p.mu.Unlock()
	}
}

// loadLayout verifies the topics and reads partition counts and the changelog id.
func (p *Processor) loadLayout(ctx context.Context) error {
	n, err := topics.Verify(ctx, p.adm, p.io)
	if err != nil {
		return err
	}
	peer := p.cfg.Topics.CartCommands
	if p.cfg.Role == RoleCart {
		peer = p.cfg.Topics.Commands
	}
	details, err := p.adm.ListTopics(ctx, p.io.DLQ, p.io.Changelog, peer)
	if err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	p.mu.Lock()
	p.partitions = n
	p.mu.Unlock()
	p.dlqPartitions = int32(len(details[p.io.DLQ].Partitions))
	if p.dlqPartitions < 1 {
		return fmt.Errorf("%w: %s has no partitions", topics.ErrLayout, p.io.DLQ)
	}
	p.peerPartitions = 0
	if d, ok := details[peer]; ok && d.Err == nil {
		p.peerPartitions = int32(len(d.Partitions))
	}
	if p.cfg.Role == RoleCart && p.peerPartitions < 1 {
		return fmt.Errorf("%w: %w: %s", topics.ErrLayout, topics.ErrMissing, peer)
	}
	id := details[p.io.Changelog].ID
	p.changelogID = append([]byte(nil), id[:]...)
	return nil
}

func (p *Processor) onAssigned(_ context.Context, cl *kgo.Client, m map[string][]int32) {
	p.mu.Lock()
	p.joined = true
	p.mu.Unlock()
	ps := m[p.io.Commands]
	if len(ps) == 0 {
		return
	}
	// Nothing is fetched for a partition until its state is restored.
	cl.PauseFetchPartitions(map[string][]int32{p.io.Commands: ps})
	p.pushEvent(groupEvent{assigned: true, parts: ps})
}

func (p *Processor) onRevoked(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	if ps := m[p.io.Commands]; len(ps) > 0 {
		p.pushEvent(groupEvent{parts: ps})
	}
}

// handleEvents applies assignment changes between transactions.
func (p *Processor) handleEvents() {
	for _, e := range p.takeEvents() {
		sort.Slice(e.parts, func(i, j int) bool { return e.parts[i] < e.parts[j] })
		for _, n := range e.parts {
			if old, ok := p.parts[n]; ok {
				p.stopPartition(old)
			}
			if !e.assigned {
				p.log.Info("partition revoked", "partition", n)
				continue
			}
			w := newPartition(p, n)
			p.parts[n] = w
			p.setStatus(n, "restoring")
			p.log.Info("partition assigned: restoring", "partition", n)
			go w.run(p.restored)
		}
	}
	p.resumeUnpaused()
}

func (p *Processor) setStatus(n int32, s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s == "" {
		delete(p.status, n)
	} else {
		p.status[n] = s
	}
	if s == "running" {
		p.queryable[n] = p.parts[n]
	} else {
		delete(p.queryable, n)
	}
}

func (p *Processor) stopPartition(w *partition) {
	w.stop()
	<-w.exit
	if p.parts[w.p] == w {
		delete(p.parts, w.p)
		p.setStatus(w.p, "")
		p.metrics.forget(w.p)
	}
}

// resumeUnpaused resumes fetching partitions that are paused but neither
// restoring nor ours any more (revoked), keeping restoring ones paused.
func (p *Processor) resumeUnpaused() {
	cl := p.sess.Client()
	var resume []int32
	for _, n := range cl.PauseFetchPartitions(nil)[p.io.Commands] {
		if w, ok := p.parts[n]; !ok || w.ready.Load() {
			resume = append(resume, n)
		}
	}
	if len(resume) > 0 {
		cl.ResumeFetchPartitions(map[string][]int32{p.io.Commands: resume})
	}
}

// handleRestored makes restored partitions ready and resumes their fetching.
func (p *Processor) handleRestored() error {
	for {
		select {
		case d := <-p.restored:
			if p.parts[d.w.p] != d.w {
				continue // stopped meanwhile
			}
			if d.err != nil {
				return fmt.Errorf("restore partition %d: %w", d.w.p, d.err)
			}
			d.w.ready.Store(true)
			p.setStatus(d.w.p, "running")
			p.resumeUnpaused()
		default:
			return nil
		}
	}
}

// loop is the main loop: it polls, runs one transaction per batch across all
// partition goroutines (a barrier per dispatch), and commits or aborts it.
func (p *Processor) loop(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := p.failed(); err != nil {
			return err
		}
		p.handleEvents()
		if err := p.handleRestored(); err != nil {
			return err
		}
		wait := p.cfg.TimerTick
		now := p.now()
		if due := p.nextDue(); due > 0 {
			if d := due.Time().Sub(now); d < wait {
				wait = max(d, time.Millisecond)
			}
		}
		pctx, pcancel := context.WithTimeout(ctx, wait)
		fs := p.sess.PollRecords(pctx, p.cfg.MaxBatch)
		pcancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		recs, err := p.records(fs)
		if err != nil {
			return err
		}
		if len(recs) == 0 && !p.anyDue(schemas.MillisOf(p.now())) {
			continue
		}
		if err := p.transact(ctx, recs); err != nil {
			return err
		}
	}
}

// records flattens fetches, failing on errors that are not a poll timeout, and
// updates the consumer lag of each fetched partition.
func (p *Processor) records(fs kgo.Fetches) ([]*kgo.Record, error) {
	fs.EachPartition(func(ftp kgo.FetchTopicPartition) {
		if n := len(ftp.Records); n > 0 {
			end := ftp.LastStableOffset
			if end < 0 {
				end = ftp.HighWatermark
			}
			p.metrics.lag.WithLabelValues(partLabel(ftp.Partition)).Set(float64(max(0, end-ftp.Records[n-1].Offset-1)))
		}
	})
	var ferr error
	fs.EachError(func(t string, part int32, err error) {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return
		}
		if ferr == nil {
			ferr = fmt.Errorf("fetch %s partition %d: %w", t, part, err)
		}
	})
	return fs.Records(), ferr
}

func (p *Processor) nextDue() schemas.Millis {
	var m schemas.Millis
	for _, w := range p.parts {
		if !w.ready.Load() {
			continue
		}
		if d := schemas.Millis(w.nextDue.Load()); d > 0 && (m == 0 || d < m) {
			m = d
		}
	}
	return m
}

func (p *Processor) anyDue(now schemas.Millis) bool {
	d := p.nextDue()
	return d > 0 && d <= now
}

// transact runs one transaction: recs and any further buffered records up to
// MaxBatch or CommitInterval, plus due timers, then commits or aborts.
func (p *Processor) transact(ctx context.Context, recs []*kgo.Record) error {
	if err := p.sess.Begin(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	start := time.Now()
	n := 0
	polled := len(recs) // records consumed from the session, decided or not
	ok := true
	var stamps []time.Time
	for {
		for _, r := range recs {
			stamps = append(stamps, r.Timestamp)
		}
		if err := p.dispatch(recs); err != nil {
			p.log.Warn("batch failed: aborting the transaction", "err", err)
			ok = false
			break
		}
		n += len(recs)
		if n >= p.cfg.MaxBatch || time.Since(start) >= p.cfg.CommitInterval {
			break
		}
		recs, _ = p.records(p.sess.PollRecords(nil, p.cfg.MaxBatch-n))
		if len(recs) == 0 && p.cfg.Linger > 0 {
			// Nothing buffered: give an in-flight fetch a moment to land.
			lctx, lcancel := context.WithTimeout(ctx, min(p.cfg.Linger, p.cfg.CommitInterval-time.Since(start)))
			recs, _ = p.records(p.sess.PollRecords(lctx, p.cfg.MaxBatch-n))
			lcancel()
		}
		if len(recs) == 0 {
			break
		}
		polled += len(recs)
	}
	// Wait for every produce of the transaction to be acknowledged BEFORE
	// choosing to commit: a record that failed must abort the transaction, or
	// a result could be committed without its changelog record (state the log
	// does not have). End's own flush would come too late for that choice.
	if ok {
		fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*p.cfg.TransactionTimeout)
		if err := p.sess.Client().Flush(fctx); err != nil {
			p.log.Warn("flush failed: aborting the transaction", "err", err)
			ok = false
		}
		fcancel()
	}
	for _, w := range p.parts {
		if w.ready.Load() {
			if err := w.produceErr(); err != nil {
				p.log.Warn("produce failed: aborting the transaction", "partition", w.p, "err", err)
				ok = false
			}
		}
	}
	try := kgo.TryCommit
	if !ok {
		try = kgo.TryAbort
	}
	endStart := time.Now()
	endCtx, endCancel := context.WithTimeout(context.WithoutCancel(ctx), 2*p.cfg.TransactionTimeout)
	var committed bool
	var err error
	if polled > 0 {
		// Records were consumed (even if none was decided because the batch
		// failed): only the session's End rewinds the consumer to the committed
		// offsets on abort, so that they are fetched and decided again.
		committed, err = p.sess.End(endCtx, try)
	} else {
		// A transaction of timers and sweeps only consumed nothing, so it commits
		// no offsets and has nothing to rewind: the session's rebalance guard has
		// nothing to protect, and its End would hold the session for 500 ms
		// afterwards (its pre-KIP-447 path, taken when no offset commit
		// answered). End it on the client. Committing its expiries after a
		// revoke is safe: the next owner restores only once this transaction
		// has ended.
		err = p.sess.Client().EndTransaction(endCtx, try)
		committed = err == nil && bool(try)
	}
	endCancel()
	p.metrics.commitSeconds.Observe(time.Since(endStart).Seconds())
	kind := jobAbort
	if committed && err == nil {
		kind = jobCommit
		p.metrics.batchRecords.Observe(float64(n))
		done := time.Now()
		for _, ts := range stamps {
			if !ts.IsZero() {
				p.metrics.e2eLatency.Observe(max(0, done.Sub(ts).Seconds()))
			}
		}
	} else {
		p.metrics.aborts.Inc()
		if err == nil {
			p.log.Info("transaction aborted; its records will be decided again", "records", n)
		}
	}
	for _, w := range p.parts {
		if w.ready.Load() {
			w.jobs <- job{kind: kind}
		}
	}
	if err != nil {
		return fmt.Errorf("end transaction: %w", err)
	}
	return nil
}

// dispatch hands each ready partition its records (and the clock) and waits
// for all of them: the barrier that keeps one transaction consistent.
func (p *Processor) dispatch(recs []*kgo.Record) error {
	now := schemas.MillisOf(p.now())
	by := make(map[int32][]*kgo.Record)
	for _, r := range recs {
		w, ok := p.parts[r.Partition]
		if !ok || !w.ready.Load() {
			// Not ours (revoked meanwhile) or not restored: never decide it here.
			// Aborting rewinds the session to the committed offsets.
			return fmt.Errorf("record of partition %d offset %d arrived for no running partition", r.Partition, r.Offset)
		}
		by[r.Partition] = append(by[r.Partition], r)
	}
	done := make(chan error, len(p.parts))
	sent := 0
	for n, w := range p.parts {
		if !w.ready.Load() {
			continue
		}
		w.jobs <- job{kind: jobApply, records: by[n], now: now, done: done}
		sent++
	}
	var first error
	for range sent {
		if err := <-done; err != nil && first == nil {
			first = err
		}
	}
	return first
}
