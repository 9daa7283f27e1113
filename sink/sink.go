// Package sink keeps a PostgreSQL snapshot of the reservations changelog:
// table stock (one row per SKU) and table reservations (one row per
// reservation, keyed by its changelog key), exactly once.
//
// Invariants:
//   - Postgres holds, per entity, the newest version the changelog committed
//     since the entity's last tombstone; a row is never moved backwards to an
//     older version (every upsert is guarded by version), and a tombstone
//     deletes the row.
//   - The rows and the next changelog offset of every partition they reflect
//     (table sink_offsets) are written in one transaction, and consumption
//     always resumes from the stored offsets: after a crash, a Postgres outage
//     or a commit whose outcome was not seen, nothing is lost or applied twice.
//   - Only committed changelog records are read (isolation read_committed);
//     records of aborted transactions never reach Postgres.
//   - A batch continues from the offsets it read: the stored offsets are
//     checked in the batch's transaction under a per-topic advisory lock, so a
//     second sink on the same database cannot interleave its writes.
//   - A stored offset is resumed only if the changelog still holds every
//     record after it: not below the log start, and not older than half the
//     changelog's delete.retention.ms while records wait after it (compaction
//     may have removed tombstones). Otherwise the partition is re-snapshotted
//     from its log start in one transaction (stale.go); the sink never lets the
//     Kafka client reset an offset by itself.
//   - A record whose value cannot be decoded is logged, counted, recorded in
//     sink_errors and skipped; it never stops the sink. command/ records and
//     unknown key prefixes are skipped silently.
//
// The Writer is not a consumer group member: it assigns itself every partition
// of the topic, starting where sink_offsets says (partitions without a row
// from the beginning), and lists the partitions again every MetadataInterval.
// The tables live in their own PostgreSQL schema (Config.Schema, default of
// the command line: DefaultSchema), created at start with the embedded
// migrations (migrations/*.sql, recorded in MigrationsTable); an install of
// an older version, in public, is moved there (store.adoptLegacy).
//
// With Config.Audit the Writer also keeps an audit trail: every record of the
// results topics as a row of the append-only, monthly partitioned table
// audit_events, exactly once through the same sink_offsets bookkeeping, read
// and written by a second consumer beside the changelog's (audit.go,
// docs/AUDIT.md). QueryAudit reads it; Verify compares it with the topics.
//
// Two operator tools build on the Writer and the schema:
//   - Verify reads the changelog to its end, checks the contract's invariants
//     on it (reserved == sum of the active holds, available == on_hand -
//     reserved, oversold only through stock changes, increasing versions,
//     frozen terminal reservations) and compares the tables with the latest
//     entities at the offsets the sink stored (check.go, verify.go).
//   - Replay rebuilds the tables from scratch: it empties them in the
//     transaction that records a replay_runs row, runs a Writer up to the
//     changelog end, and marks the run finished; an unfinished run is resumed,
//     not emptied again (replay.go).
package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Time limits of Postgres operations, so that a server that stops answering
// (rather than refusing connections) is detected as an outage too.
const (
	pgTimeout   = time.Minute     // migrations, reading offsets, one batch
	pingTimeout = 5 * time.Second // the idle health check
)

// ErrClosed is returned by Run after Close.
var ErrClosed = errors.New("sink closed")

// Writer applies the changelog to Postgres. Create it with New, run it with
// Run, release it with Close.
type Writer struct {
	cfg     Config
	log     *slog.Logger
	baseLog *slog.Logger // the logger given, without the Writer's attributes
	metrics *metrics
	store   *store
	pool    *pgxpool.Pool
	ownPool bool
	kopts   []kgo.Opt

	ready    atomic.Bool
	migrated bool // touched by Run only

	mu      sync.Mutex
	running bool
	closed  bool
	cancel  context.CancelFunc
	done    chan struct{}

	// afterCommit, if set by a test, runs after each committed batch; an error
	// is handled like a failed commit (a commit whose outcome was not seen).
	afterCommit func() error

	// audit writes the results topics into audit_events (nil: Config.Audit
	// off); Run runs it next to the changelog consumer.
	audit *auditor
}

// New returns a Writer for cfg. It connects to nothing: Run does.
func New(cfg Config, opts ...Option) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.reg == nil {
		o.reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(o.reg)
	if err != nil {
		return nil, fmt.Errorf("register sink metrics: %w", err)
	}
	w := &Writer{
		cfg:     cfg,
		log:     o.logger.With("component", "sink", "topic", cfg.Topic),
		baseLog: o.logger,
		metrics: m,
		pool:    cfg.Pool,
		kopts:   o.kafkaOpt,
	}
	if w.pool == nil {
		if w.pool, err = newPool(context.Background(), cfg.DSN, cfg.Schema); err != nil {
			return nil, err
		}
		w.ownPool = true
	}
	w.store = &store{pool: w.pool, topic: cfg.Topic, schema: cfg.Schema, apply: copyApply}
	if cfg.Audit.Enabled() {
		w.store.owned = append([]string{cfg.Topic}, cfg.Audit.topics()...)
		w.audit = newAuditor(w)
	}
	return w, nil
}

// schemaLabel names a Config.Schema in logs.
func schemaLabel(schema string) string {
	if schema == "" {
		return "(search_path of the connection)"
	}
	return schema
}

// Ready reports whether the sink is running and reaches Postgres: false
// before the schema is migrated and while Postgres fails.
func (w *Writer) Ready() bool { return w.ready.Load() }

func (w *Writer) setReady(ok bool) {
	w.ready.Store(ok)
	if ok {
		w.metrics.ready.Set(1)
	} else {
		w.metrics.ready.Set(0)
	}
}

// Close stops Run, if running, waits for it to return, and closes the pool if
// the Writer created it.
func (w *Writer) Close() {
	w.mu.Lock()
	w.closed = true
	cancel, done := w.cancel, w.done
	w.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	if w.ownPool {
		w.pool.Close()
	}
}

// Run applies the changelog until ctx ends (then it returns nil) or a fatal
// error: a migration Postgres rejects, an unusable Kafka configuration.
// Postgres outages are retried with exponential backoff.
func (w *Writer) Run(ctx context.Context) error {
	w.mu.Lock()
	switch {
	case w.closed:
		w.mu.Unlock()
		return ErrClosed
	case w.running:
		w.mu.Unlock()
		return errors.New("sink already running")
	}
	ctx, cancel := context.WithCancel(ctx)
	w.running, w.cancel, w.done = true, cancel, make(chan struct{})
	done := w.done
	w.mu.Unlock()
	defer func() {
		cancel()
		w.setReady(false)
		w.mu.Lock()
		w.running = false
		w.mu.Unlock()
		close(done)
	}()

	w.log.Info("sink starting", "batch_size", w.cfg.BatchSize, "batch_wait", w.cfg.BatchWait, "audit", w.audit != nil)
	if w.audit == nil {
		return w.runChangelog(ctx)
	}
	// The audit runs beside the snapshot, each with its own retries; a fatal
	// error of either ends both.
	auditErr := make(chan error, 1)
	go func() {
		err := w.audit.run(ctx)
		if err != nil {
			cancel()
		}
		auditErr <- err
	}()
	err := w.runChangelog(ctx)
	cancel()
	if aerr := <-auditErr; err == nil {
		err = aerr
	}
	return err
}

// runChangelog applies the changelog until ctx ends or a fatal error (Run).
func (w *Writer) runChangelog(ctx context.Context) error {
	bo := backoff{min: w.cfg.RetryMin, max: w.cfg.RetryMax}
	for {
		err := w.session(ctx, &bo)
		if ctx.Err() != nil {
			w.log.Info("sink stopped")
			return nil
		}
		var fatal *fatalError
		var fenced *fencedError
		var stale *staleError
		var kafka *kafkaError
		wait := bo.next()
		switch {
		case errors.As(err, &fatal):
			w.log.Error("sink failed", "err", fatal.err)
			return fatal.err
		case errors.As(err, &fenced):
			w.log.Warn("stored offsets moved under the sink, resuming from them", "err", err)
		case errors.As(err, &stale):
			w.log.Warn("changelog position cannot be trusted any more, checking the stored offsets again", "err", err)
		case errors.As(err, &kafka):
			w.metrics.kafkaErrors.Inc()
			w.log.Warn("kafka unavailable, retrying", "err", err, "retry_in", wait)
		default:
			w.setReady(false)
			w.metrics.pgErrors.Inc()
			w.log.Warn("postgres unavailable, retrying", "err", err, "retry_in", wait)
		}
		select {
		case <-ctx.Done():
			w.log.Info("sink stopped")
			return nil
		case <-time.After(wait):
		}
	}
}

// fatalError ends Run.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }

// session migrates (once), reads the stored offsets, checks them against the
// changelog (re-snapshotting the partitions it cannot resume), and consumes
// from them with a new Kafka client until Postgres fails, a position turns
// stale or ctx ends. Every error discards the client and what it buffered; the
// next session starts again from what Postgres committed.
func (w *Writer) session(ctx context.Context, bo *backoff) error {
	if !w.migrated {
		mctx, cancel := context.WithTimeout(ctx, pgTimeout)
		applied, err := w.store.migrate(mctx)
		cancel()
		if err != nil {
			if permanent(err) {
				return &fatalError{fmt.Errorf("migrate sink schema: %w", err)}
			}
			return err
		}
		w.migrated = true
		if w.store.adopted != "" {
			w.log.Warn("sink tables of an older install adopted", "what", w.store.adopted)
		}
		w.log.Info("sink schema ready", "schema", schemaLabel(w.cfg.Schema), "migrations_table", MigrationsTable,
			"applied_migrations", applied)
	}
	octx, cancel := context.WithTimeout(ctx, pgTimeout)
	pos, seen, err := w.store.positions(octx)
	cancel()
	if err != nil {
		return err
	}
	w.setReady(true)

	kopts := append([]kgo.Opt{
		kgo.SeedBrokers(w.cfg.Brokers...),
		kgo.ClientID("reservations-sink"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Transaction markers are returned so that the stored offsets move
		// past them: a caught-up sink is at the partition's end offset.
		kgo.KeepControlRecords(),
		// An offset out of range is reported, never silently reset to the
		// log start: the records skipped could hold tombstones (stale.go).
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
		kgo.WithLogger(kafkaLogger{w.log}),
	}, w.kopts...)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return &fatalError{fmt.Errorf("create kafka client: %w", err)}
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	retention, known, err := w.checkPositions(ctx, adm, pos, seen)
	if err != nil {
		return err
	}
	c := consumer{w: w, cl: cl, adm: adm, pos: pos, seen: seen, marks: make(map[int32]mark),
		retention: retention, retentionKnown: known,
		assigned: make(map[int32]bool), lso: make(map[int32]int64)}
	return c.run(ctx, bo)
}

// consumer is one session's consumption state.
type consumer struct {
	w        *Writer
	cl       *kgo.Client
	adm      *kadm.Client
	pos      map[int32]int64     // next offset per partition, as stored in Postgres
	seen     map[int32]time.Time // when pos was last current (sink_offsets.current_at); zero: unknown
	marks    map[int32]mark      // per partition behind its mark: the mark to reach
	assigned map[int32]bool
	lso      map[int32]int64 // last stable offset per partition, last seen
	// retention is the changelog's delete.retention.ms, when known (the topic
	// existed at the session start).
	retention      time.Duration
	retentionKnown bool
	// outOfRange is set by take when the client reports a position the
	// partition does not hold (any more), or data loss.
	outOfRange *staleError
}

// mark is a partition's last stable offset listed at a time: once the
// partition's position reaches lso, every record still to read was committed
// after at, which becomes the partition's current_at.
type mark struct {
	at  time.Time
	lso int64
}

func (c *consumer) run(ctx context.Context, bo *backoff) error {
	w := c.w
	b := newBatch()
	var batchStart time.Time
	var nextMeta time.Time
	lastPG := time.Now()
	for {
		now := time.Now()
		if !now.Before(nextMeta) {
			if err := c.discover(ctx); err != nil {
				return err
			}
			interval := w.cfg.MetadataInterval
			if len(c.assigned) == 0 {
				interval = min(interval, time.Second) // topic not there yet
			}
			nextMeta = now.Add(interval)
		}

		// Poll until the batch is due, or, while idle, until the next
		// metadata listing or Postgres ping.
		var until time.Time
		if b.records > 0 {
			until = batchStart.Add(w.cfg.BatchWait)
		} else {
			until = nextMeta
			if ping := lastPG.Add(w.cfg.PingInterval); ping.Before(until) {
				until = ping
			}
		}
		if wait := time.Until(until); wait > 0 || b.records == 0 {
			pctx, cancel := context.WithTimeout(ctx, max(wait, time.Millisecond))
			fs := c.cl.PollRecords(pctx, w.cfg.BatchSize-b.records)
			cancel()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			had := b.records
			c.take(fs, b)
			if c.outOfRange != nil {
				return c.outOfRange
			}
			if had == 0 && b.records > 0 {
				batchStart = time.Now()
			}
		}

		switch {
		case b.records > 0 && (b.records >= w.cfg.BatchSize || !time.Now().Before(batchStart.Add(w.cfg.BatchWait))):
			if err := c.flush(ctx, b); err != nil {
				return err
			}
			bo.reset()
			b.reset()
			lastPG = time.Now()
		case b.records == 0 && time.Since(lastPG) >= w.cfg.PingInterval:
			pctx, cancel := context.WithTimeout(ctx, pingTimeout)
			err := w.store.ping(pctx)
			cancel()
			if err != nil {
				return err
			}
			w.setReady(true)
			lastPG = time.Now()
		}
	}
}

// take folds polled records into b and notes errors and stable offsets.
func (c *consumer) take(fs kgo.Fetches, b *batch) {
	fs.EachError(func(topic string, p int32, err error) {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return
		}
		var loss *kgo.ErrDataLoss
		switch {
		case topic != c.w.cfg.Topic || c.outOfRange != nil:
		case errors.Is(err, kerr.OffsetOutOfRange):
			c.outOfRange = &staleError{partition: p, why: fmt.Sprintf(
				"position %d out of range: the partition no longer holds it (records deleted, topic recreated)", c.pos[p])}
		case errors.As(err, &loss):
			// The client moved its cursor back itself; the session must
			// not write that as the stored offset.
			c.outOfRange = &staleError{partition: p, why: fmt.Sprintf("the broker lost records the sink had read: %v", err)}
		}
		c.w.metrics.kafkaErrors.Inc()
		c.w.log.Warn("fetch error", "partition", p, "err", err)
	})
	fs.EachPartition(func(fp kgo.FetchTopicPartition) {
		if fp.Topic != c.w.cfg.Topic {
			return
		}
		if fp.LastStableOffset > 0 {
			c.lso[fp.Partition] = fp.LastStableOffset
			c.w.metrics.setLag(fp.Partition, fp.LastStableOffset-c.pos[fp.Partition])
		}
		for _, r := range fp.Records {
			if r.Attrs.IsControl() {
				b.skip(r.Partition, r.Offset)
				continue
			}
			b.add(r.Partition, r.Offset, r.Key, r.Value)
		}
	})
}

// flush writes b in one transaction and advances the positions.
func (c *consumer) flush(ctx context.Context, b *batch) error {
	w := c.w
	start := time.Now()
	seen := make(map[int32]time.Time, len(b.next))
	for p, o := range b.next {
		seen[p] = c.seen[p]
		if m, ok := c.marks[p]; ok && o >= m.lso && m.at.After(seen[p]) {
			seen[p] = m.at
		}
	}
	wctx, cancel := context.WithTimeout(ctx, pgTimeout)
	n, err := w.store.write(wctx, b, c.pos, seen, nil)
	cancel()
	if err != nil {
		return err
	}
	if w.afterCommit != nil {
		if err := w.afterCommit(); err != nil {
			return err
		}
	}
	took := time.Since(start)
	w.metrics.batchDuration.Observe(took.Seconds())
	w.metrics.committed(b, n)
	w.setReady(true)
	for p, o := range b.next {
		c.pos[p] = o
		c.seen[p] = seen[p]
		if m, ok := c.marks[p]; ok && o >= m.lso {
			delete(c.marks, p)
		}
		if lso, ok := c.lso[p]; ok {
			w.metrics.setLag(p, lso-o)
		}
	}
	for _, r := range b.bad {
		w.log.Warn("skipped undecodable changelog record", "partition", r.partition, "offset", r.offset, "err", r.err)
	}
	w.log.Debug("batch written", "records", b.records, "stock_rows", n.stockUpserted+n.stockDeleted,
		"reservation_rows", n.reservationsUpserted+n.reservationsDeleted, "took", took)
	return nil
}

// discover lists the topic's partitions and starts consuming new ones from
// their stored offsets (or the beginning), then marks the partitions (mark).
// Kafka failures are logged and counted (the next listing retries); a
// Postgres failure or a stale position ends the session.
func (c *consumer) discover(ctx context.Context) error {
	w := c.w
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tds, err := c.adm.ListTopics(lctx, w.cfg.Topic)
	if err == nil {
		err = tds[w.cfg.Topic].Err
	}
	if err != nil {
		if ctx.Err() == nil {
			w.metrics.kafkaErrors.Inc()
			w.log.Warn("list changelog partitions", "err", err)
		}
		return nil
	}
	add := make(map[int32]kgo.Offset)
	for p := range tds[w.cfg.Topic].Partitions {
		if c.assigned[p] {
			continue
		}
		c.assigned[p] = true
		if o, ok := c.pos[p]; ok {
			add[p] = kgo.NewOffset().At(o)
		} else {
			add[p] = kgo.NewOffset().AtStart()
			// Kafka's bound for a read from the log start: it sees every
			// tombstone it needs if it ends within delete.retention.ms of
			// its start. So the start is when the position was current.
			c.seen[p] = time.Now()
		}
	}
	if len(add) > 0 {
		c.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{w.cfg.Topic: add})
		w.log.Info("consuming changelog partitions", "added", len(add), "total", len(c.assigned))
	}
	return c.mark(ctx)
}

// mark lists the last stable offsets. A stored partition whose position has
// reached its offset is current now: its current_at is updated at once (an
// idle partition stays current without batches). A partition behind it gets
// the listing as its mark, unless it has one still to reach (so that a
// partition that is always a little behind still reaches its marks); flush
// stores the mark's time once the position reaches it.
//
// A stored partition behind its last stable offset whose position has not
// been current for longer than half the changelog's delete.retention.ms ends
// the session: tombstones ahead of it may be compacted away before it reads
// them, and the next session's check re-snapshots it.
func (c *consumer) mark(ctx context.Context) error {
	w := c.w
	at := time.Now() // before the listing, as in checkPositions
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	offs, err := c.adm.ListCommittedOffsets(lctx, w.cfg.Topic)
	cancel()
	if err == nil {
		err = offs.Error()
	}
	if err != nil {
		if ctx.Err() == nil {
			w.metrics.kafkaErrors.Inc()
			w.log.Warn("list changelog stable offsets", "err", err)
		}
		return nil
	}
	current := make(map[int32]int64)
	var stale *staleError
	offs.Each(func(o kadm.ListedOffset) {
		pos, stored := c.pos[o.Partition]
		if o.Topic != w.cfg.Topic || !c.assigned[o.Partition] || !stored {
			return // partitions without a row start from the log start
		}
		p := o.Partition
		if pos >= o.Offset {
			current[p] = o.Offset
			delete(c.marks, p)
			return
		}
		if _, pending := c.marks[p]; !pending {
			c.marks[p] = mark{at: at, lso: o.Offset}
		}
		if c.retentionKnown && stale == nil && awayTooLong(c.seen[p], at, c.retention) {
			since := "never recorded as current"
			if !c.seen[p].IsZero() {
				since = "not current since " + c.seen[p].UTC().Format(time.RFC3339)
			}
			stale = &staleError{partition: p, why: fmt.Sprintf(
				"offset %d is %d offsets behind the last stable offset %d and %s, longer than half the changelog's delete.retention.ms %s",
				pos, o.Offset-pos, o.Offset, since, c.retention)}
		}
	})
	if stale != nil {
		return stale
	}
	if len(current) == 0 {
		return nil
	}
	tctx, cancel := context.WithTimeout(ctx, pgTimeout)
	err = w.store.touch(tctx, current, at)
	cancel()
	if err != nil {
		return err
	}
	for p := range current {
		if at.After(c.seen[p]) {
			c.seen[p] = at
		}
	}
	return nil
}

// backoff is capped exponential backoff with jitter.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	// +-20% so that sinks restarted together do not retry in lockstep.
	return time.Duration(float64(b.cur) * (0.8 + 0.4*rand.Float64()))
}

func (b *backoff) reset() { b.cur = 0 }

// kafkaLogger passes the Kafka client's warnings and errors to slog.
type kafkaLogger struct{ l *slog.Logger }

func (k kafkaLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kafkaLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := slog.LevelDebug
	switch level {
	case kgo.LogLevelError:
		lvl = slog.LevelError
	case kgo.LogLevelWarn:
		lvl = slog.LevelWarn
	case kgo.LogLevelInfo:
		lvl = slog.LevelInfo
	}
	k.l.Log(context.Background(), lvl, "kafka: "+msg, keyvals...)
}
