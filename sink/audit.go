package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The audit trail: table audit_events holds one row per record of the results
// topics (Config.Audit), written by an auditor that the Writer runs next to
// its changelog consumer, with its own Kafka client and its own Postgres
// transactions:
//
//   - Exactly once: the rows of a batch and the next offsets of the results
//     topics' partitions (rows of those topics in sink_offsets, the changelog's
//     bookkeeping) are written in one transaction, under the topic's advisory
//     lock, after checking that the stored offsets are those the batch
//     continues from; every session resumes from the stored offsets. The
//     primary key (topic, partition, offset, decided_at) makes a record that
//     is read twice anyway collide with its row (ON CONFLICT DO NOTHING).
//   - Monthly RANGE partitions on decided_at (UTC), created ahead: this month
//     and the next at every session start and every hour, and any month a
//     batch needs, in the batch's transaction. AuditConfig.Retention drops
//     whole partitions whose month ended longer ago than the retention
//     (recorded in audit_dropped_partitions); a record of a dropped month read
//     late is not written again.
//   - The results topics delete by time: a stored offset that the topic no
//     longer holds (the sink was away longer than its retention.ms) cannot be
//     caught up. The auditor records the offsets it missed in audit_gaps, logs
//     an error, counts reservations_sink_audit_gaps_total and goes on from the
//     log start; it never lets the Kafka client reset by itself.
//
// A failure of the audit (Postgres, Kafka) is retried with backoff and does
// not hold up the snapshot; the snapshot's failures do not hold up the audit.

// AuditConfig configures the audit trail of a Writer (Config.Audit). The zero
// value turns it off.
type AuditConfig struct {
	// Results is the results topic (reservations.results): decisions and
	// notices. Empty: not audited.
	Results string
	// CartResults is the cart results topic (reservations.cart-results).
	// Empty: not audited. A topic that does not exist (yet) is looked for
	// again every MetadataInterval.
	CartResults string
	// Retention drops the monthly partitions of audit_events whose whole
	// month ended longer ago than Retention: a row is kept at least
	// Retention, at most Retention plus a month. 0: keep forever.
	Retention time.Duration
}

// Enabled reports whether the audit is on.
func (c AuditConfig) Enabled() bool { return c.Results != "" || c.CartResults != "" }

func (c AuditConfig) topics() []string {
	var ts []string
	for _, t := range []string{c.Results, c.CartResults} {
		if t != "" {
			ts = append(ts, t)
		}
	}
	return ts
}

// auditMaintainEvery is how often partitions are created ahead and the
// retention applied while the auditor runs.
const auditMaintainEvery = time.Hour

// auditLockName is the advisory lock of partition maintenance in the schema.
func (s *store) auditLockName() string { return "reservations.sink/" + s.schema + "/audit" }

// auditor writes the results topics into audit_events.
type auditor struct {
	w      *Writer
	cfg    AuditConfig
	log    *slog.Logger
	stores map[string]*store // per audited topic: its sink_offsets rows and lock
	main   *store            // any of them, for what is not per topic
	now    func() time.Time  // the clock of partitions and retention

	migrated      bool
	known         map[string]bool // partitions of audit_events known to exist
	droppedBefore time.Time       // rows decided before it were dropped by the retention

	// afterCommit, if set by a test, runs after each committed batch, like
	// Writer.afterCommit; beforeCommit runs in the batch's transaction just
	// before its commit (an error rolls the batch back, as a crash would).
	afterCommit, beforeCommit func() error
}

func newAuditor(w *Writer) *auditor {
	a := &auditor{w: w, cfg: w.cfg.Audit, log: w.baseLog.With("component", "sink-audit"), stores: map[string]*store{},
		now: time.Now, known: map[string]bool{}}
	for _, t := range a.cfg.topics() {
		a.stores[t] = &store{pool: w.pool, topic: t, schema: w.cfg.Schema, owned: w.store.owned}
		a.main = a.stores[t]
	}
	return a
}

// source is the metric label of an audited topic.
func (a *auditor) source(topic string) string {
	if topic == a.cfg.CartResults {
		return "cart_results"
	}
	return "results"
}

// run writes the audit until ctx ends (nil) or a fatal error.
func (a *auditor) run(ctx context.Context) error {
	a.log.Info("audit trail starting", "topics", a.cfg.topics(), "retention", a.cfg.Retention)
	bo := backoff{min: a.w.cfg.RetryMin, max: a.w.cfg.RetryMax}
	for {
		err := a.session(ctx, &bo)
		if ctx.Err() != nil {
			return nil
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			a.log.Error("audit trail failed", "err", fatal.err)
			return fatal.err
		}
		wait := bo.next()
		a.w.metrics.auditErrors.Inc()
		a.log.Warn("audit trail interrupted, resuming from the stored offsets", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// auditPos is a position per topic and partition.
type auditPos map[string]map[int32]int64

func (p auditPos) set(topic string, part int32, o int64) {
	if p[topic] == nil {
		p[topic] = map[int32]int64{}
	}
	p[topic][part] = o
}

// session reads the stored offsets, records the gaps, and consumes from them
// until an error or the end of ctx.
func (a *auditor) session(ctx context.Context, bo *backoff) error {
	if !a.migrated {
		mctx, cancel := context.WithTimeout(ctx, pgTimeout)
		_, err := a.main.migrate(mctx)
		cancel()
		if err != nil {
			if permanent(err) {
				return &fatalError{fmt.Errorf("migrate sink schema: %w", err)}
			}
			return err
		}
		a.migrated = true
	}
	pctx, cancel := context.WithTimeout(ctx, pgTimeout)
	err := a.loadPartitions(pctx)
	if err == nil {
		err = a.maintain(pctx)
	}
	pos := auditPos{}
	for t, s := range a.stores {
		if err != nil {
			break
		}
		var offs map[int32]int64
		if offs, err = s.offsets(pctx); err == nil {
			pos[t] = offs
		}
	}
	cancel()
	if err != nil {
		return err
	}

	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(a.w.cfg.Brokers...),
		kgo.ClientID("reservations-sink-audit"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
		kgo.WithLogger(kafkaLogger{a.log}),
	}, a.w.kopts...)...)
	if err != nil {
		return &fatalError{fmt.Errorf("create kafka client: %w", err)}
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if err := a.checkGaps(ctx, adm, pos); err != nil {
		return err
	}
	assigned := map[string]map[int32]bool{}
	b := newAuditBatch()
	var batchStart, nextMeta time.Time
	nextMaintain := time.Now().Add(auditMaintainEvery)
	lag := map[string]map[int32]int64{}
	for {
		now := time.Now()
		if !now.Before(nextMeta) {
			a.discover(ctx, cl, adm, pos, assigned)
			nextMeta = now.Add(a.w.cfg.MetadataInterval)
		}
		if !now.Before(nextMaintain) && b.records == 0 {
			mctx, cancel := context.WithTimeout(ctx, pgTimeout)
			err := a.maintain(mctx)
			cancel()
			if err != nil {
				return err
			}
			nextMaintain = now.Add(auditMaintainEvery)
		}
		until := nextMeta
		if b.records > 0 {
			until = batchStart.Add(a.w.cfg.BatchWait)
		}
		if wait := time.Until(until); wait > 0 || b.records == 0 {
			fctx, cancel := context.WithTimeout(ctx, max(wait, time.Millisecond))
			fs := cl.PollRecords(fctx, a.w.cfg.BatchSize-b.records)
			cancel()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			had := b.records
			if err := a.take(fs, b, pos, lag); err != nil {
				return err
			}
			if had == 0 && b.records > 0 {
				batchStart = time.Now()
			}
		}
		if b.records > 0 && (b.records >= a.w.cfg.BatchSize || !time.Now().Before(batchStart.Add(a.w.cfg.BatchWait))) {
			wctx, cancel := context.WithTimeout(ctx, pgTimeout)
			n, err := a.write(wctx, b, pos)
			cancel()
			if err != nil {
				return err
			}
			if a.afterCommit != nil {
				if err := a.afterCommit(); err != nil {
					return err
				}
			}
			for t, next := range b.next {
				for p, o := range next {
					pos.set(t, p, o)
				}
			}
			for t, c := range n {
				a.w.metrics.auditRows.WithLabelValues(a.source(t)).Add(float64(c))
			}
			for _, bad := range b.bad {
				a.w.metrics.decodeErrors.Inc()
				a.log.Warn("skipped undecodable result record", "topic", bad.topic, "partition", bad.partition,
					"offset", bad.offset, "err", bad.err)
			}
			a.setLag(pos, lag)
			bo.reset()
			b.reset()
		}
	}
}

// take folds polled records into b. An offset the partition no longer holds
// ends the session: the next session's checkGaps records the gap.
func (a *auditor) take(fs kgo.Fetches, b *auditBatch, pos auditPos, lag map[string]map[int32]int64) error {
	var stop error
	fs.EachError(func(topic string, p int32, err error) {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return
		}
		var loss *kgo.ErrDataLoss
		if stop == nil && (errors.Is(err, kerr.OffsetOutOfRange) || errors.As(err, &loss)) {
			stop = &staleError{partition: p, why: fmt.Sprintf("%s: position %d is not in the partition any more: %v",
				topic, pos[topic][p], err)}
		}
		a.w.metrics.kafkaErrors.Inc()
		a.log.Warn("fetch error", "topic", topic, "partition", p, "err", err)
	})
	if stop != nil {
		return stop
	}
	fs.EachTopic(func(ft kgo.FetchTopic) {
		s, ok := a.stores[ft.Topic]
		if !ok {
			return
		}
		id := topicIDString(ft.TopicID)
		for _, fp := range ft.Partitions {
			a.takePartition(s, id, ft.Topic, fp, b, lag)
		}
	})
	a.setLag(pos, lag)
	return nil
}

// takePartition folds the records of one fetched partition of topic (Kafka
// topic ID id, "" unknown) into b.
func (a *auditor) takePartition(s *store, id, topic string, fp kgo.FetchPartition, b *auditBatch, lag map[string]map[int32]int64) {
	if fp.LastStableOffset > 0 {
		if lag[topic] == nil {
			lag[topic] = map[int32]int64{}
		}
		lag[topic][fp.Partition] = fp.LastStableOffset
	}
	for _, r := range fp.Records {
		b.records++
		b.setNext(s.topic, r.Partition, r.Offset+1)
		if r.Attrs.IsControl() {
			continue
		}
		row, err := decodeAuditRow(r, s.topic == a.cfg.CartResults)
		if err != nil {
			key := string(r.Key)
			if storableKey(key) != nil {
				key = fmt.Sprintf("%q", r.Key)
			}
			b.bad = append(b.bad, auditBad{topic: s.topic, badRecord: badRecord{partition: r.Partition,
				offset: r.Offset, key: key, value: r.Value, err: err}})
			continue
		}
		row.topicID = id
		b.rows = append(b.rows, row)
	}
}

// setLag publishes, per audited topic, the records between the stored
// offsets and the last stable offsets last fetched.
func (a *auditor) setLag(pos auditPos, lso map[string]map[int32]int64) {
	for t, ps := range lso {
		var n int64
		for p, o := range ps {
			n += max(o-pos[t][p], 0)
		}
		a.w.metrics.auditLag.WithLabelValues(a.source(t)).Set(float64(n))
	}
}

// discover starts consuming the partitions of the audited topics not yet
// consumed, from their stored offsets or the log start. A topic that does not
// exist is looked for again at the next call.
func (a *auditor) discover(ctx context.Context, cl *kgo.Client, adm *kadm.Client, pos auditPos, assigned map[string]map[int32]bool) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tds, err := adm.ListTopics(lctx, a.cfg.topics()...)
	if err != nil {
		if ctx.Err() == nil {
			a.w.metrics.kafkaErrors.Inc()
			a.log.Warn("list results partitions", "err", err)
		}
		return
	}
	add := map[string]map[int32]kgo.Offset{}
	for _, t := range a.cfg.topics() {
		td, ok := tds[t]
		if !ok || td.Err != nil {
			continue
		}
		if assigned[t] == nil {
			assigned[t] = map[int32]bool{}
		}
		for p := range td.Partitions {
			if assigned[t][p] {
				continue
			}
			assigned[t][p] = true
			if add[t] == nil {
				add[t] = map[int32]kgo.Offset{}
			}
			if o, ok := pos[t][p]; ok {
				add[t][p] = kgo.NewOffset().At(o)
			} else {
				add[t][p] = kgo.NewOffset().AtStart()
			}
		}
	}
	if len(add) > 0 {
		cl.AddConsumePartitions(add)
		a.log.Info("auditing results partitions", "added", len(add))
	}
}

// checkGaps compares the stored offsets with the results topics: a stored
// offset below the log start (records deleted before the sink read them) or
// beyond the log end (a recreated topic) is moved to the log start, and the
// offsets missed are recorded in audit_gaps, in one transaction.
func (a *auditor) checkGaps(ctx context.Context, adm *kadm.Client, pos auditPos) error {
	for _, t := range a.cfg.topics() {
		if len(pos[t]) == 0 {
			continue
		}
		bounds, err := listBounds(ctx, adm, t)
		if errors.Is(err, ErrNoTopic) {
			continue
		}
		if err != nil {
			return &kafkaError{err}
		}
		for _, p := range bounds.partitions {
			stored, ok := pos[t][p]
			if !ok {
				continue
			}
			var reason string
			switch {
			case stored < bounds.start[p]:
				reason = staleBehindLogStart
			case stored > bounds.end[p]:
				reason = staleAheadOfLogEnd
			default:
				continue
			}
			start := bounds.start[p]
			if err := a.recordGap(ctx, t, p, stored, start, reason); err != nil {
				return err
			}
			a.w.metrics.auditGaps.Inc()
			a.log.Error("results records lost to the audit: the topic no longer holds them; resuming at the log start",
				"topic", t, "partition", p, "stored_offset", stored, "log_start", start, "log_end", bounds.end[p], "reason", reason)
			pos.set(t, p, start)
		}
	}
	return nil
}

func (a *auditor) recordGap(ctx context.Context, topic string, p int32, from, to int64, reason string) error {
	ctx, cancel := context.WithTimeout(ctx, pgTimeout)
	defer cancel()
	s := a.stores[topic]
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin audit gap: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	next := map[int32]int64{p: to}
	if err := s.checkOffsets(ctx, tx, next, map[int32]int64{p: from}); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO audit_gaps (topic, partition, from_offset, to_offset, reason) VALUES ($1, $2, $3, $4, $5)`,
		topic, p, from, to, reason); err != nil {
		return fmt.Errorf("record audit gap: %w", err)
	}
	if err := s.storeOffsets(ctx, tx, next, nil); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit audit gap: %w", err)
	}
	return nil
}

// auditBatch is what one audit transaction writes.
type auditBatch struct {
	rows    []auditRow
	next    auditPos
	bad     []auditBad
	records int // records and markers read
}

type auditBad struct {
	topic string
	badRecord
}

func newAuditBatch() *auditBatch { return &auditBatch{next: auditPos{}} }

func (b *auditBatch) setNext(topic string, p int32, o int64) { b.next.set(topic, p, o) }

func (b *auditBatch) reset() {
	b.rows = b.rows[:0]
	clear(b.next)
	b.bad = b.bad[:0]
	b.records = 0
}

// write applies b in one transaction: per topic (in name order) the lock and
// the check of the stored offsets against pos, the partitions its rows need,
// the rows (a row of a record already stored, or decided before the
// retention's cut, is not written), the next offsets and the undecodable
// records. It returns the rows inserted per topic.
func (a *auditor) write(ctx context.Context, b *auditBatch, pos auditPos) (map[string]int64, error) {
	tx, err := a.main.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin audit batch: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	ts := make([]string, 0, len(b.next))
	for t := range b.next {
		ts = append(ts, t)
	}
	slices.Sort(ts)
	for _, t := range ts {
		if err := a.stores[t].checkOffsets(ctx, tx, b.next[t], pos[t]); err != nil {
			return nil, err
		}
	}
	rows := make([]*auditRow, 0, len(b.rows))
	var need []time.Time
	for i := range b.rows {
		r := &b.rows[i]
		if r.decidedAt.Before(a.droppedBefore) {
			continue
		}
		rows = append(rows, r)
		m := month(r.decidedAt)
		if name, _, _ := auditPartition(m); !a.known[name] && !slices.Contains(need, m) {
			need = append(need, m)
		}
	}
	created, err := a.createPartitions(ctx, tx, need)
	if err != nil {
		return nil, err
	}
	n := map[string]int64{}
	if len(rows) > 0 {
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE audit_stage ON COMMIT DROP AS SELECT `+quotedColumns(auditColumns)+
			` FROM audit_events WITH NO DATA`); err != nil {
			return nil, fmt.Errorf("create audit_stage: %w", err)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"audit_stage"}, auditColumns,
			pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) { return rows[i].values(), nil })); err != nil {
			return nil, fmt.Errorf("copy into audit_stage: %w", err)
		}
		cols := quotedColumns(auditColumns)
		rs, _ := tx.Query(ctx, `WITH ins AS (INSERT INTO audit_events (`+cols+`) SELECT `+cols+` FROM audit_stage
			ON CONFLICT DO NOTHING RETURNING topic) SELECT topic, count(*) FROM ins GROUP BY topic`)
		var t string
		var c int64
		if _, err := pgx.ForEachRow(rs, []any{&t, &c}, func() error { n[t] = c; return nil }); err != nil {
			return nil, fmt.Errorf("insert audit rows: %w", err)
		}
	}
	for _, t := range ts {
		if err := a.stores[t].storeOffsets(ctx, tx, b.next[t], nil); err != nil {
			return nil, err
		}
	}
	for _, bad := range b.bad {
		if err := a.stores[bad.topic].recordBad(ctx, tx, []badRecord{bad.badRecord}); err != nil {
			return nil, err
		}
	}
	if a.beforeCommit != nil {
		if err := a.beforeCommit(); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit audit batch: %w", err)
	}
	for _, name := range created {
		a.known[name] = true
	}
	return n, nil
}

func quotedColumns(cols []string) string {
	out := ""
	for i, c := range cols {
		if i > 0 {
			out += ", "
		}
		out += pgx.Identifier{c}.Sanitize()
	}
	return out
}

// createPartitions creates, in tx, the partitions of audit_events for the
// months ms (that do not exist yet), under the audit's maintenance lock. It
// returns their names.
func (a *auditor) createPartitions(ctx context.Context, tx pgx.Tx, ms []time.Time) ([]string, error) {
	if len(ms) == 0 {
		return nil, nil
	}
	if _, err := tx.Exec(ctx, topicLock, a.main.auditLockName()); err != nil {
		return nil, fmt.Errorf("lock audit partitions: %w", err)
	}
	var names []string
	for _, m := range ms {
		name, from, to := auditPartition(m)
		if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s PARTITION OF audit_events FOR VALUES FROM ('%s') TO ('%s')`,
			pgx.Identifier{name}.Sanitize(), from.Format(time.RFC3339), to.Format(time.RFC3339))); err != nil {
			return nil, fmt.Errorf("create audit partition %s: %w", name, err)
		}
		names = append(names, name)
	}
	return names, nil
}

// loadPartitions reads the partitions of audit_events and the retention's
// cut (the end of the newest dropped partition).
func (a *auditor) loadPartitions(ctx context.Context) error {
	names, err := auditPartitions(ctx, a.main.pool)
	if err != nil {
		return err
	}
	clear(a.known)
	for _, n := range names {
		a.known[n] = true
	}
	var cut pgtype.Timestamptz
	if err := a.main.pool.QueryRow(ctx, `SELECT max(range_to) FROM audit_dropped_partitions`).Scan(&cut); err != nil {
		return fmt.Errorf("read audit_dropped_partitions: %w", err)
	}
	a.droppedBefore = time.Time{}
	if cut.Valid {
		a.droppedBefore = cut.Time
	}
	return nil
}

// querier is what pgxpool.Pool and pgx.Tx share.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// auditPartitions lists the partitions of audit_events, sorted by name (by
// month for those the sink created).
func auditPartitions(ctx context.Context, q querier) ([]string, error) {
	rows, _ := q.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'audit_events'::regclass ORDER BY 1`)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list the partitions of audit_events: %w", err)
	}
	return names, nil
}

// maintain creates the partitions of this month and the next (by a.now) and,
// with a retention, drops the partitions whose month ended longer ago than
// it, in one transaction under the audit's maintenance lock.
func (a *auditor) maintain(ctx context.Context) error {
	now := a.now()
	tx, err := a.main.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin audit maintenance: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	this := month(now)
	created, err := a.createPartitions(ctx, tx, []time.Time{this, this.AddDate(0, 1, 0)})
	if err != nil {
		return err
	}
	var dropped []string
	cut := a.droppedBefore
	if a.cfg.Retention > 0 {
		names, err := auditPartitions(ctx, tx)
		if err != nil {
			return err
		}
		limit := now.Add(-a.cfg.Retention)
		for _, name := range names {
			m, ok := parseAuditPartition(name)
			if !ok {
				continue // not one of the sink's: left alone
			}
			_, from, to := auditPartition(m)
			if to.After(limit) {
				continue
			}
			if _, err := tx.Exec(ctx, `DROP TABLE `+pgx.Identifier{name}.Sanitize()); err != nil {
				return fmt.Errorf("drop audit partition %s: %w", name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO audit_dropped_partitions (name, range_from, range_to) VALUES ($1, $2, $3)
				ON CONFLICT (name) DO UPDATE SET dropped_at = now()`, name, from, to); err != nil {
				return fmt.Errorf("record dropped audit partition %s: %w", name, err)
			}
			dropped = append(dropped, name)
			if to.After(cut) {
				cut = to
			}
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit audit maintenance: %w", err)
	}
	for _, name := range created {
		a.known[name] = true
	}
	for _, name := range dropped {
		delete(a.known, name)
	}
	a.droppedBefore = cut
	if len(dropped) > 0 {
		a.w.metrics.auditDropped.Add(float64(len(dropped)))
		a.log.Info("audit partitions dropped by the retention", "partitions", dropped, "retention", a.cfg.Retention,
			"rows_kept_from", cut)
	}
	return nil
}
