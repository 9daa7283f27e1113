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
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/plugin/kprom"

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
	cfg  Config
	log  *slog.Logger
	reg  prometheus.Registerer
	now  func() time.Time
	role role
	// io are the topics of this processor's role: its input (Commands),
	// results, changelog and DLQ.
	io      topics.Names
	metrics *metrics
	// static: the instance joins as a static member (Config.StaticMembership,
	// decided in New: runOnce may fill InstanceID from StateDir later).
	static bool

	// Set by Run (and Rebuild) for a session.
	ctx  context.Context
	sess *kgo.GroupTransactSession
	adm  *kadm.Client
	// lay is the session's topic layout (partitions is also guarded by mu for
	// interactive queries).
	lay         layout
	env         *partitionEnv
	lastCleanup time.Time // of unowned store folders (main loop)
	// learned are committed offsets of running partitions read from the group
	// because the client does not list them (learnOffsets; main loop).
	learned   map[int32]kgo.EpochOffset
	learnedAt time.Time

	mu      sync.Mutex
	events  []groupEvent
	failErr error
	parts   map[int32]*partition // owned by the main loop
	// touched are the partitions sent a job in the open transaction: only they
	// seal, commit or abort it (main loop only).
	touched map[int32]bool
	// sealed are the partitions whose last job of the open transaction
	// sealed it already (a dispatch known to be the last; main loop only).
	sealed map[int32]bool
	// live are the partitions in parts (guarded by mu), so that the group
	// goroutine can stop a revoked or lost partition at once (stopNow).
	live map[int32]*partition
	// assignment is this member's whole assignment of the latest generation
	// (from SyncGroup; empty after a loss): a partition is started, and a
	// transaction may write for it, only while it is in there.
	assignment atomic.Pointer[map[int32]bool]
	restored   chan restoreDone
	status     map[int32]string // guarded by mu; for readiness
	joined     bool             // guarded by mu: the group assigned us (possibly nothing)
	brokerOK   bool             // guarded by mu: the last broker ping answered
	// Interactive queries (guarded by mu).
	queryable map[int32]*partition // running partitions
	owners    map[int32]string     // partition -> advertised address, from DescribeGroups
	ownersAt  time.Time
	// Standby replicas (standby.go): the latest generation's standby
	// partitions (set on the group goroutine), the running standbys (main
	// loop; guarded by mu for warmOffsets), when one last failed (main loop),
	// and the stores of partitions this instance stopped owning or standing
	// by for (guarded by mu): what JoinGroup advertises as warm.
	standbyWant   atomic.Pointer[[]int32]
	standbys      map[int32]*standby
	standbyFailed map[int32]time.Time
	released      map[int32]warmStore
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
	p := &Processor{cfg: cfg, now: time.Now, parts: make(map[int32]*partition), touched: make(map[int32]bool), sealed: make(map[int32]bool), live: make(map[int32]*partition),
		status: make(map[int32]string), queryable: make(map[int32]*partition),
		standbys: make(map[int32]*standby), standbyFailed: make(map[int32]time.Time), released: make(map[int32]warmStore),
		static: cfg.StaticMembership()}
	for _, o := range opts {
		o(p)
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.reg == nil {
		p.reg = prometheus.NewRegistry()
	}
	p.role = newRole(cfg.Role, &p.cfg)
	p.io = p.role.io(cfg.Topics)
	p.metrics = newMetrics(p.reg, p.role)
	return p, nil
}

// newEnv builds what the session's partitions need (after loadLayout).
func (p *Processor) newEnv() *partitionEnv {
	env := &partitionEnv{cfg: &p.cfg, io: p.io, all: p.cfg.Topics, layout: p.lay, role: p.role, metrics: p.metrics,
		log: p.log, produce: p.produce, fail: p.fail,
		changelog: &changelogReader{cfg: &p.cfg, topic: p.io.Changelog, adm: p.adm, metrics: p.metrics},
		storeOpts: statestore.Options{Logger: p.log}}
	if p.sess != nil {
		env.flush = p.sess.Client().Flush
	}
	return env
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

// Run joins the group and processes until ctx ends (nil error) or a fatal
// error. A failure of the Kafka session (fencing, exhausted retries, a store
// write error) is not fatal: like Kafka Streams replacing a failed stream
// thread, Run stops every partition at a transaction boundary, backs off, and
// starts a new session, restoring partitions from their stores and the
// changelog. Fatal are: a broken topic layout, ErrInstanceFenced (a static
// member replaced by another process with its InstanceID) and ctx ending.
func (p *Processor) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		started := time.Now()
		err := p.runOnce(ctx)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, topics.ErrLayout) || errors.Is(err, ErrInstanceFenced) {
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
	p.lastCleanup = time.Now() // the first cleanup waits a minute past the start (and the first assignment)
	p.learned = make(map[int32]kgo.EpochOffset)
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
	p.scanWarmStores()

	t := p.io
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(p.cfg.Brokers...),
		kgo.ClientID(p.clientID()),
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(t.Commands),
		// The tracker tells stopNow the whole assignment of every generation,
		// so a revoke the transact session swallows still stops the partition.
		kgo.Balancers(p.balancers()...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.TransactionalID(p.TransactionalID()),
		kgo.TransactionTimeout(p.cfg.TransactionTimeout),
		kgo.SessionTimeout(p.cfg.SessionTimeout),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0),
		// No batch compression, as Kafka's producer default (franz-go's is
		// snappy): the records are small JSON, the processor is CPU-bound,
		// and a broker or topic can still compress (compression.type).
		// KafkaOpts can set it back (kgo.ProducerBatchCompression).
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.OnPartitionsAssigned(p.onAssigned),
		kgo.OnPartitionsRevoked(p.onRevoked),
		kgo.OnPartitionsLost(p.onLost),
		// franz-go's client metrics (reservations_kafka_*), unregistered when
		// the session's client closes.
		kgo.WithHooks(kprom.NewMetrics("reservations", kprom.Subsystem("kafka"),
			kprom.Registerer(prometheus.WrapRegistererWith(prometheus.Labels{"role": p.role.name()}, p.reg)))),
	}, p.groupOpts()...)
	opts = append(opts, p.cfg.KafkaOpts...)
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return fmt.Errorf("transactional group client: %w", err)
	}
	// Initialise the transactional producer now: with a stable transactional id
	// this fences a predecessor (a crashed or restarted instance) and aborts its
	// open transaction at once, instead of leaving it to block restores until
	// the transaction timeout.
	pid, epoch, err := sess.Client().ProducerID(ctx)
	if err != nil {
		sess.Close()
		return fmt.Errorf("init transactional producer %s: %w", p.TransactionalID(), err)
	}
	p.mu.Lock()
	p.sess = sess
	p.brokerOK = true
	p.mu.Unlock()
	p.env = p.newEnv()
	p.standbyWant.Store(nil) // until this session's first SyncGroup
	go p.pingBrokers(ctx, sess.Client())
	p.log.Info("processor started", "role", p.role.name(), "group", p.cfg.Group, "transactional_id", p.TransactionalID(),
		"producer_id", pid, "producer_epoch", epoch, "static_member", p.static, "session_timeout", p.cfg.SessionTimeout,
		"commands", t.Commands, "partitions", p.lay.partitions, "state_dir", p.cfg.StateDir)

	runErr := p.loop(ctx)
	// Stop standbys and partitions, then leave the group (a static member
	// stays in it, see leaveGroup). An open transaction is aborted by Close
	// (its records will be decided again by the next owner).
	p.stopStandbys()
	for _, w := range p.parts {
		p.stopPartition(w)
	}
	memberID, _ := sess.Client().GroupMetadata()
	sess.Close()
	p.mu.Lock()
	p.sess = nil
	p.mu.Unlock()
	if !errors.Is(runErr, context.Canceled) { // loop returns only on an error or a cancel
		return p.staticFailure(runErr, memberID)
	}
	p.leaveGroup()
	return nil
}

// groupOpts are the client options of the group membership: static
// membership (group.instance.id) when configured.
func (p *Processor) groupOpts() []kgo.Opt {
	if !p.static {
		return nil
	}
	return []kgo.Opt{kgo.InstanceID(p.cfg.InstanceID)}
}

// ErrInstanceFenced ends Run when another process joined the group with this
// instance's InstanceID (a static member replaced): starting a new session
// would take the group slot and the transactional id back from it, and the
// two would fence each other in turn. The process should exit; whoever
// started two instances with one id must stop one.
var ErrInstanceFenced = errors.New("another process joined the group with this instance id")

// staticFailure turns a failed session of a static member into
// ErrInstanceFenced when another process holds its instance id now: the
// broker said so (FENCED_INSTANCE_ID), or the session was fenced otherwise
// (its producer, say: the newcomer's InitProducerID comes first) and the group
// lists the instance id under another member id than this session's.
func (p *Processor) staticFailure(err error, memberID string) error {
	if !p.static {
		return err
	}
	if errors.Is(err, kerr.FencedInstanceID) {
		return fmt.Errorf("%w (%s): %w", ErrInstanceFenced, p.cfg.InstanceID, err)
	}
	if memberID == "" {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), 5*time.Second)
	defer cancel()
	groups, derr := p.adm.DescribeGroups(ctx, p.cfg.Group)
	if derr != nil {
		return err
	}
	g, ok := groups[p.cfg.Group]
	if !ok || g.Err != nil {
		return err
	}
	for _, m := range g.Members {
		if m.InstanceID != nil && *m.InstanceID == p.cfg.InstanceID && m.MemberID != memberID {
			return fmt.Errorf("%w (%s is member %s now, this session was %s): %w",
				ErrInstanceFenced, p.cfg.InstanceID, m.MemberID, memberID, err)
		}
	}
	return err
}

// leaveGroup, after a clean stop, makes a static member with
// LeaveGroupOnShutdown leave the group by its instance id: franz-go does not
// send LeaveGroup for a static member on Close (so that a restart finds its
// partitions waiting), and without it they would move only after the session
// timeout. A dynamic member left in Close already.
func (p *Processor) leaveGroup() {
	if !p.static || !p.cfg.LeaveGroupOnShutdown {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), 5*time.Second)
	defer cancel()
	resp, err := p.adm.LeaveGroup(ctx, kadm.LeaveGroup(p.cfg.Group).InstanceIDs(p.cfg.InstanceID).
		Reason("static member stopping for good (leave-group-on-shutdown)"))
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		p.log.Warn("leaving the group failed: the partitions move after the session timeout",
			"instance", p.cfg.InstanceID, "session_timeout", p.cfg.SessionTimeout, "err", err)
		return
	}
	p.log.Info("left the group (static member)", "instance", p.cfg.InstanceID)
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
	var lay layout
	if lay.deleteRetention, err = topics.ChangelogDeleteRetention(ctx, p.adm, p.io.Changelog); err != nil {
		return err
	}
	peer, required := p.role.peer(p.cfg.Topics)
	details, err := p.adm.ListTopics(ctx, p.io.Commands, p.io.DLQ, p.io.Changelog, peer)
	if err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	lay.partitions = n
	lay.dlqPartitions = int32(len(details[p.io.DLQ].Partitions))
	if lay.dlqPartitions < 1 {
		return fmt.Errorf("%w: %s has no partitions", topics.ErrLayout, p.io.DLQ)
	}
	if d, ok := details[peer]; ok && d.Err == nil {
		lay.peerPartitions = int32(len(d.Partitions))
	}
	if required && lay.peerPartitions < 1 {
		return fmt.Errorf("%w: %w: %s", topics.ErrLayout, topics.ErrMissing, peer)
	}
	id := details[p.io.Changelog].ID
	lay.changelogID = append([]byte(nil), id[:]...)
	lay.commandsID = details[p.io.Commands].ID
	p.mu.Lock()
	p.lay = lay
	p.mu.Unlock()
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
		p.stopNow(ps, "revoked")
		p.pushEvent(groupEvent{parts: ps})
	}
}

func (p *Processor) onLost(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	p.assignment.Store(&map[int32]bool{})
	if ps := m[p.io.Commands]; len(ps) > 0 {
		p.stopNow(ps, "lost")
		p.pushEvent(groupEvent{parts: ps})
	}
}

// onSynced receives the whole assignment of each generation (from the
// balancer, on the group goroutine, before franz-go revokes anything) and stops
// every running partition that is not in it. The revoke callbacks are not
// enough: the GroupTransactSession calls them only for the first revoke (or
// loss) between two ends of a transaction, so during a quiet period a second
// revoke would never reach us.
func (p *Processor) onSynced(m map[string][]int32) {
	keep := make(map[int32]bool, len(m[p.io.Commands]))
	for _, n := range m[p.io.Commands] {
		keep[n] = true
	}
	p.assignment.Store(&keep)
	var gone []int32
	p.mu.Lock()
	for n := range p.live {
		if !keep[n] {
			gone = append(gone, n)
		}
	}
	p.mu.Unlock()
	if len(gone) > 0 {
		p.stopNow(gone, "not in the new assignment")
	}
}

// stopNow stops partitions the group took away, from the group goroutine, and
// waits until their goroutines have exited: from then on they decide nothing,
// fire no timer and answer no query, before the group can hand them to another
// instance. The main loop forgets them at its next turn (an open transaction
// that wrote for them aborts: the session saw the revoke, or the partition
// left the barrier).
func (p *Processor) stopNow(ps []int32, why string) {
	var ws []*partition
	p.mu.Lock()
	for _, n := range ps {
		if w, ok := p.live[n]; ok && !w.revoked.Load() {
			w.revoked.Store(true)
			delete(p.queryable, n)
			delete(p.status, n) // not ready with it, not running it
			p.metrics.running.Set(float64(len(p.queryable)))
			ws = append(ws, w)
		}
	}
	p.mu.Unlock()
	for _, w := range ws {
		w.stop()
	}
	for _, w := range ws {
		<-w.exit
		w.log.Info("partition stopped by the group", "why", why)
		if w.offset > 0 && !w.ownedAt.IsZero() {
			// Advertised as warm in the JoinGroup that follows a revoke.
			p.mu.Lock()
			p.released[w.p] = warmStore{offset: w.offset, ownedAt: w.ownedAt}
			p.mu.Unlock()
		}
	}
}

// assignmentTracker is a group balancer that reports each member's assignment
// as it is parsed from SyncGroup, and its standby partitions (none unless the
// standby balancer was chosen).
type assignmentTracker struct {
	kgo.GroupBalancer
	onSync    func(map[string][]int32)
	onStandby func([]int32)
}

func (b assignmentTracker) ParseSyncAssignment(a []byte) (map[string][]int32, error) {
	m, err := b.GroupBalancer.ParseSyncAssignment(a)
	if err == nil {
		b.onSync(m)
		if b.onStandby != nil {
			b.onStandby(parseStandbys(a))
		}
	}
	return m, err
}

// balancers are the group protocols this member offers, in order of
// preference: with standbys, the standby balancer (balancer.go), then
// cooperative-sticky (which a group in a rolling upgrade keeps until every
// member offers the first). The tracker tells stopNow the whole assignment of
// every generation, so a revoke the transact session swallows still stops the
// partition.
func (p *Processor) balancers() []kgo.GroupBalancer {
	if p.cfg.StandbyReplicas == 0 {
		return []kgo.GroupBalancer{assignmentTracker{kgo.CooperativeStickyBalancer(), p.onSynced, nil}}
	}
	sb := &standbyBalancer{topic: p.io.Commands, replicas: p.cfg.StandbyReplicas, warm: p.warmOffsets}
	return []kgo.GroupBalancer{
		assignmentTracker{sb, p.onSynced, p.onStandbys},
		// Chosen while some member lacks the protocol above: no standbys then.
		assignmentTracker{kgo.CooperativeStickyBalancer(), p.onSynced, p.onStandbys},
	}
}

// handleEvents applies assignment changes between transactions.
func (p *Processor) handleEvents() {
	for _, w := range p.parts {
		if w.revoked.Load() {
			p.stopPartition(w)
		}
	}
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
			if !p.owns(n) {
				// Assigned, then revoked before we got here, and the revoke did
				// not reach our callback (the session passes on only the first
				// revoke between two transaction ends).
				p.log.Info("partition assigned and revoked again before it started", "partition", n)
				continue
			}
			p.startPartition(n)
			p.log.Info("partition assigned: restoring", "partition", n)
		}
	}
	p.resumeUnpaused()
}

// startPartition starts partition n (restore, then ready); fetching it stays
// paused until it is ready (resumeUnpaused).
func (p *Processor) startPartition(n int32) {
	if s, ok := p.standbys[n]; ok {
		// Promotion: the standby stops and closes the store before the owner
		// opens it, and the owner replays only the tail it had not read.
		p.stopStandby(s)
		p.log.Info("standby promoted to owner", "partition", n, "offset", s.offset.Load())
	}
	w := newPartition(p.env, p.ctx, n)
	p.parts[n] = w
	p.mu.Lock()
	p.live[n] = w
	delete(p.released, n)
	p.mu.Unlock()
	p.setStatus(n, "restoring")
	go w.run(p.restored)
}

// resync restarts the partitions of a transaction whose commit the loop asked
// for but End did not confirm. Their local state cannot be trusted: a broker
// may have committed what the client reports as failed (franz-go turns an
// unconfirmed EndTxn, e.g. UNKNOWN_SERVER_ERROR, into an abort), and then the
// log has a transaction the store does not. A restart restores them from the
// changelog (usually a tail of one transaction or none).
func (p *Processor) resync(parts []int32) {
	var restart []int32
	for _, n := range parts {
		w, ok := p.parts[n]
		if !ok || !w.ready.Load() || w.revoked.Load() || !p.owns(n) {
			continue
		}
		p.stopPartition(w)
		restart = append(restart, n)
	}
	if len(restart) == 0 {
		return
	}
	p.sess.Client().PauseFetchPartitions(map[string][]int32{p.io.Commands: restart})
	for _, n := range restart {
		p.startPartition(n)
	}
	p.log.Info("transaction commit not confirmed: restoring the partitions it wrote for from the changelog", "partitions", restart)
}

func (p *Processor) setStatus(n int32, s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w := p.parts[n]; s != "" && w != nil && w.revoked.Load() {
		return // stopped by the group meanwhile (stopNow, under mu)
	}
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
	p.metrics.running.Set(float64(len(p.queryable)))
}

// stopPartition stops w (if it still runs) and forgets it. A partition that
// was running logs "partition stopped" with the start of its last committed
// transaction: runs of one partition on different instances never overlap
// (the membership tests check it from these lines).
func (p *Processor) stopPartition(w *partition) {
	w.stop()
	<-w.exit
	if p.parts[w.p] == w {
		delete(p.parts, w.p)
		delete(p.learned, w.p)
		p.mu.Lock()
		delete(p.live, w.p)
		if w.offset > 0 && !w.ownedAt.IsZero() {
			p.released[w.p] = warmStore{offset: w.offset, ownedAt: w.ownedAt}
		}
		p.mu.Unlock()
		p.setStatus(w.p, "")
		p.metrics.forget(w.p)
		if w.ready.Load() {
			last := w.lastCommit
			if last.IsZero() {
				last = w.started
			}
			w.log.Info("partition stopped", "instance", p.cfg.InstanceID, "generation", w.generation,
				"role", p.role.name(), "last_commit", last)
		}
	}
}

// resumeUnpaused resumes fetching the running partitions that are paused.
// Only those: a partition onAssigned paused on the group goroutine may not be
// in parts yet, and resuming it would fetch records no partition can decide.
func (p *Processor) resumeUnpaused() {
	cl := p.sess.Client()
	var resume []int32
	for _, n := range cl.PauseFetchPartitions(nil)[p.io.Commands] {
		if w, ok := p.parts[n]; ok && w.ready.Load() && !w.revoked.Load() {
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
			if p.parts[d.w.p] != d.w || d.w.revoked.Load() {
				continue // stopped meanwhile
			}
			if d.err != nil {
				return fmt.Errorf("restore partition %d: %w", d.w.p, d.err)
			}
			_, d.w.generation = p.sess.Client().GroupMetadata()
			d.w.started = time.Now()
			d.w.ready.Store(true)
			p.setStatus(d.w.p, "running")
			d.w.log.Info("partition running", "instance", p.cfg.InstanceID, "generation", d.w.generation,
				"role", p.role.name())
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
		p.reconcileStandbys()
		if err := p.handleRestored(); err != nil {
			return err
		}
		p.cleanupStores(time.Now())
		p.learnOffsets(ctx)
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
	known := p.committedOffsets()
	for _, w := range p.parts {
		if _, ok := known[w.p]; !ok || !w.ready.Load() {
			continue // timers wait until the partition's committed offset is known (see fence)
		}
		if d := schemas.Millis(w.nextDue.Load()); d > 0 && (m == 0 || d < m) {
			m = d
		}
	}
	return m
}

// committedOffsets returns the committed offsets of the input partitions the
// client knows: a newly assigned partition appears once the group's offset
// fetch for it ended (it can wait for the previous owner's transaction), or
// once learnOffsets read it from the group (a partition that was never
// committed, which the client never lists).
func (p *Processor) committedOffsets() map[int32]kgo.EpochOffset {
	known := p.sess.Client().CommittedOffsets()[p.io.Commands]
	if len(p.learned) == 0 {
		return known
	}
	out := make(map[int32]kgo.EpochOffset, len(known)+len(p.learned))
	for n, eo := range p.learned {
		out[n] = eo
	}
	for n, eo := range known {
		out[n] = eo
	}
	return out
}

// learnOffsets (main loop, at most once a second) reads from the group, with
// RequireStable, the committed offsets of running partitions the client does
// not know. The answer is stable: no transaction of ours is open, a pending
// one of a previous owner makes the fetch fail (it is tried again), and only
// the owner commits. A partition without a commit gets offset 0 (the consumer
// starts at the log start, as without a commit).
func (p *Processor) learnOffsets(ctx context.Context) {
	if time.Since(p.learnedAt) < time.Second {
		return
	}
	known := p.sess.Client().CommittedOffsets()[p.io.Commands]
	var missing []int32
	for n, w := range p.parts {
		_, k := known[n]
		_, l := p.learned[n]
		if !k && !l && w.ready.Load() && !w.revoked.Load() {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return
	}
	p.learnedAt = time.Now()
	fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := p.adm.FetchOffsetsForTopics(kadm.RequireStable(fctx), p.cfg.Group, p.io.Commands)
	if err != nil {
		p.log.Debug("committed offsets not known yet", "partitions", missing, "err", err)
		return
	}
	for _, n := range missing {
		o, ok := resp.Lookup(p.io.Commands, n)
		if !ok || o.Err != nil {
			continue
		}
		eo := kgo.EpochOffset{Epoch: o.LeaderEpoch, Offset: o.At}
		if o.At < 0 {
			eo = kgo.EpochOffset{Epoch: -1, Offset: 0}
		}
		p.learned[n] = eo
	}
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
	// Timers fire for at most a tenth of the transaction timeout (at least the
	// commit interval) per transaction, besides MaxExpiriesPerTransaction.
	timerDeadline := start.Add(max(p.cfg.CommitInterval, p.cfg.TransactionTimeout/10))
	known := p.committedOffsets()
	n := 0
	ok := true
	var stamps []time.Time
	for {
		// Without a linger, take what is already buffered first: when
		// nothing more is, this dispatch is the transaction's last, and the
		// partitions seal in the same job (one hand-off each instead of two).
		last := false
		if p.cfg.Linger <= 0 {
			if n+len(recs) < p.cfg.MaxBatch && time.Since(start) < p.cfg.CommitInterval {
				//lint:ignore SA1012 a nil context makes PollRecords return what is buffered without waiting (kgo documents it)
				more, _ := p.records(p.sess.PollRecords(nil, p.cfg.MaxBatch-n-len(recs)))
				recs = append(recs, more...)
				last = len(more) == 0
			} else {
				last = true
			}
		}
		for _, r := range recs {
			stamps = append(stamps, r.Timestamp)
		}
		if err := p.dispatch(recs, timerDeadline, known, last); err != nil {
			p.log.Warn("batch failed: aborting the transaction", "err", err)
			ok = false
			break
		}
		n += len(recs)
		if last || n >= p.cfg.MaxBatch || time.Since(start) >= p.cfg.CommitInterval {
			break
		}
		//lint:ignore SA1012 a nil context makes PollRecords return what is buffered without waiting (kgo documents it)
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
	}
	if ok {
		if err := p.seal(); err != nil {
			p.log.Warn("sealing the changelog failed: aborting the transaction", "err", err)
			ok = false
		}
	}
	p.metrics.decideSeconds.Observe(time.Since(start).Seconds())
	// Wait for every produce of the transaction to be acknowledged BEFORE
	// choosing to commit: a record that failed must abort the transaction, or
	// a result could be committed without its changelog record (state the log
	// does not have). End's own flush would come too late for that choice.
	if ok {
		flushStart := time.Now()
		fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*p.cfg.TransactionTimeout)
		if err := p.sess.Client().Flush(fctx); err != nil {
			p.log.Warn("flush failed: aborting the transaction", "err", err)
			ok = false
		}
		fcancel()
		p.metrics.flushSeconds.Observe(time.Since(flushStart).Seconds())
	}
	for _, w := range p.parts {
		if w.ready.Load() {
			if err := w.produceErr(); err != nil {
				p.log.Warn("produce failed: aborting the transaction", "partition", w.p, "err", err)
				ok = false
				w.noteProduceFailure(err)
			}
		}
	}
	try := kgo.TryCommit
	if !ok {
		try = kgo.TryAbort
	}
	// Every transaction ends through the session, so that (a) a revoke or loss
	// since it began aborts it, (b) the session's revoke state is reset after
	// it (franz-go calls our revoke callback only for the first revoke between
	// two ends), and (c) an abort rewinds the consumer. And every transaction
	// that wrote for a partition commits that partition's offset, even when it
	// consumed nothing there (timers, sweeps): the broker checks the group
	// generation of a TxnOffsetCommit (KIP-447), so a zombie's transaction is
	// fenced. See fence.
	var wrote []int32
	for _, w := range p.parts {
		if w.wrote {
			wrote = append(wrote, w.p)
		}
	}
	empty := ok && len(wrote) == 0
	if empty {
		// Nothing to commit: timers of holds that had already ended, a sweep
		// step that found nothing. Ending it as an abort skips the session's
		// 500 ms pause after a commit that sent no offsets; the partitions
		// still commit locally (their timers were used, the sweep moved on).
		try = kgo.TryAbort
	}
	endStart := time.Now()
	endCtx, endCancel := context.WithTimeout(context.WithoutCancel(ctx), 2*p.cfg.TransactionTimeout)
	fenced := kgo.PreTxnCommitFnContext(endCtx, p.fence(wrote, p.committedOffsets()))
	committed, err := p.sess.End(fenced, try)
	endCancel()
	if errors.Is(err, errNotMember) || errors.Is(err, errNotOwner) || errors.Is(err, errUnknownOffset) {
		p.log.Info("transaction aborted: fenced before its offset commit (not in the group, or a partition it wrote for is not assigned to it)",
			"records", n, "err", err)
		err = nil
	}
	p.metrics.commitSeconds.Observe(time.Since(endStart).Seconds())
	kind := jobAbort
	if empty && err == nil {
		kind = jobCommit
	} else if committed && err == nil {
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
		j := job{kind: kind}
		if committed && err == nil && w.wrote {
			// The broker accepted this partition's writes with our member and
			// generation: we owned it when this transaction began to end.
			w.lastCommit = endStart
			j.owned = endStart
		}
		w.wrote = false
		if w.ready.Load() && p.touched[w.p] {
			select {
			case w.jobs <- j:
			case <-w.exit:
			}
		}
	}
	clear(p.touched)
	clear(p.sealed)
	if err != nil {
		return fmt.Errorf("end transaction: %w", err)
	}
	if try == kgo.TryCommit && !empty && !committed {
		p.resync(wrote)
	}
	return nil
}

// owns reports whether partition n is in this member's latest assignment.
func (p *Processor) owns(n int32) bool {
	a := p.assignment.Load()
	return a != nil && (*a)[n]
}

// errNotOwner fails the offset commit of a transaction that wrote for a
// partition outside this member's latest assignment: the group generation
// would not fence it (KIP-447 checks member and generation, not ownership).
var errNotOwner = errors.New("wrote for a partition this member does not own")

// errUnknownOffset fails the offset commit of a transaction that wrote for a
// partition (timers, sweeps) whose committed offset the client does not know
// yet; the loop fires no timers for such a partition (nextDue, dispatch).
var errUnknownOffset = errors.New("committed offset not known yet")

// errNotMember fails the offset commit of a transaction while the client has no
// member id or generation: such a commit would not be fenced (brokers accept a
// transactional offset commit without group metadata), so it is not sent and
// the transaction aborts.
var errNotMember = errors.New("not a member of the consumer group")

// fence returns the hook that completes a transaction's TxnOffsetCommit: it
// adds the committed offset (unchanged) of every partition the transaction
// wrote for but consumed nothing from, so the broker validates the member and
// generation for it too. It refuses to commit without group metadata, for a
// partition outside the latest assignment, and for one whose committed offset
// the client does not know yet.
func (p *Processor) fence(wrote []int32, committed map[int32]kgo.EpochOffset) func(*kmsg.TxnOffsetCommitRequest) error {
	topic, id := p.io.Commands, p.lay.commandsID
	return func(req *kmsg.TxnOffsetCommitRequest) error {
		if req.MemberID == "" || req.Generation < 0 {
			return errNotMember
		}
		for _, n := range wrote {
			if !p.owns(n) {
				return fmt.Errorf("partition %d: %w", n, errNotOwner)
			}
		}
		i := slices.IndexFunc(req.Topics, func(t kmsg.TxnOffsetCommitRequestTopic) bool { return t.Topic == topic })
		if i < 0 {
			t := kmsg.NewTxnOffsetCommitRequestTopic()
			t.Topic, t.TopicID = topic, id
			req.Topics = append(req.Topics, t)
			i = len(req.Topics) - 1
		}
		rt := &req.Topics[i]
		for _, n := range wrote {
			if slices.ContainsFunc(rt.Partitions, func(rp kmsg.TxnOffsetCommitRequestTopicPartition) bool { return rp.Partition == n }) {
				continue
			}
			eo, ok := committed[n]
			if !ok {
				// Just assigned, the group's offset fetch not done: committing a
				// guess would move the group's offset (back to 0, say).
				return fmt.Errorf("partition %d: %w", n, errUnknownOffset)
			}
			rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
			rp.Partition, rp.Offset, rp.LeaderEpoch = n, eo.Offset, eo.Epoch
			rp.Metadata = &req.MemberID
			rt.Partitions = append(rt.Partitions, rp)
		}
		if len(rt.Partitions) == 0 {
			req.Topics = slices.Delete(req.Topics, i, i+1)
		}
		return nil
	}
}

// dispatch hands each running partition its records (and the clock) and waits
// for all of them: the barrier that keeps one transaction consistent. A
// partition that stops meanwhile (revoked, lost, shutdown) fails the batch.
func (p *Processor) dispatch(recs []*kgo.Record, deadline time.Time, known map[int32]kgo.EpochOffset, last bool) error {
	now := schemas.MillisOf(p.now())
	by := make(map[int32][]*kgo.Record)
	for _, r := range recs {
		w, ok := p.parts[r.Partition]
		if !ok || !w.ready.Load() || w.revoked.Load() {
			// Not ours (revoked meanwhile) or not restored: never decide it here.
			// Aborting rewinds the session to the committed offsets.
			return fmt.Errorf("record of partition %d offset %d arrived for no running partition", r.Partition, r.Offset)
		}
		by[r.Partition] = append(by[r.Partition], r)
	}
	// A partition with no records and nothing due (timers, sweep) has
	// nothing to do: it is left alone (a hot SKU's partition does not wake
	// every other one).
	idle := func(n int32, w *partition) bool {
		d := w.nextDue.Load()
		return len(by[n]) == 0 && d > 0 && schemas.Millis(d) > now
	}
	return p.fanOut(false, idle, func(n int32) job {
		_, offsetKnown := known[n]
		if last {
			p.sealed[n] = true
		}
		return job{kind: jobApply, records: by[n], now: now, deadline: deadline, noTimers: !offsetKnown, seal: last}
	})
}

// seal has every running partition produce the changelog records of its
// pending writes, before the transaction is flushed and ended. A partition
// revoked since its records were decided seals too (its results are in the
// transaction; the session aborts a transaction that saw a revoke anyway),
// and one that stopped fails the transaction.
func (p *Processor) seal() error {
	untouched := func(n int32, _ *partition) bool { return !p.touched[n] || p.sealed[n] }
	return p.fanOut(true, untouched, func(int32) job { return job{kind: jobSeal} })
}

// fanOut sends the job mk makes to every running partition (revoked ones too
// when withRevoked) but those skip names, marks them touched, and waits for all
// answers; it returns the first failure.
func (p *Processor) fanOut(withRevoked bool, skip func(n int32, w *partition) bool, mk func(n int32) job) error {
	done := make(chan applied, len(p.parts))
	pending := make(map[int32]*partition, len(p.parts))
	var first error
	fail := func(err error) {
		if first == nil {
			first = err
		}
	}
	for n, w := range p.parts {
		if !w.ready.Load() || (w.revoked.Load() && !withRevoked) || skip(n, w) {
			continue
		}
		p.touched[n] = true
		j := mk(n)
		j.done = done
		select {
		case w.jobs <- j:
			pending[n] = w
		case <-w.exit:
			fail(fmt.Errorf("partition %d stopped", n))
		}
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for len(pending) > 0 {
		select {
		case a := <-done:
			delete(pending, a.p)
			if a.err != nil {
				fail(a.err)
			}
		case <-tick.C:
			for n, w := range pending {
				select {
				case <-w.exit:
					delete(pending, n)
					fail(fmt.Errorf("partition %d stopped during the batch", n))
				default:
				}
			}
		}
	}
	return first
}
