package sink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// VerifyConfig configures Verify. Zero fields take the defaults documented on
// them.
type VerifyConfig struct {
	// Brokers are the Kafka seed brokers, host:port. Required.
	Brokers []string
	// Topic is the changelog topic. Default: reservations.changelog.
	Topic string
	// DSN or Pool name the sink's database, whose stock and reservations rows
	// are compared with the changelog. Neither: the changelog alone is checked.
	DSN  string
	Pool *pgxpool.Pool
	// Schema is the schema of the sink's tables, as Config.Schema (the
	// sink's --pg-schema); with DSN the connections' search_path is set to
	// it, a Pool must have it already. Empty: the connection's search_path.
	Schema string
	// Wait is how long Verify waits for the sink's stored offsets to reach the
	// changelog end before it gives up with a *SinkBehindError. Default 0:
	// look once.
	Wait time.Duration
	// MaxReport is how many mismatches the report lists (all are counted).
	// Default 20.
	MaxReport int
	// Progress, if set, is called while the changelog is read with the
	// offsets covered so far and the offsets to cover.
	Progress func(covered, total int64)
	// Audit names the results topics whose audit trail (audit_events) is
	// compared with them, with a database (Retention is not used). Zero: the
	// audit is not compared.
	Audit AuditConfig
	// AuditRequired: compare the audit of every topic of Audit, waiting up to
	// Wait for it. Otherwise a topic of which the sink stored no offset (it
	// does not keep the audit) is reported as not kept, not compared.
	AuditRequired bool
}

// DefaultMaxReport is the default VerifyConfig.MaxReport.
const DefaultMaxReport = 20

// Validate reports the first field of c that cannot work.
func (c VerifyConfig) Validate() error {
	switch {
	case len(c.Brokers) == 0:
		return errors.New("verify config: Brokers: at least one broker required")
	case c.DSN != "" && c.Pool != nil:
		return errors.New("verify config: at most one of DSN and Pool")
	case c.Wait < 0:
		return fmt.Errorf("verify config: Wait %s: must be >= 0", c.Wait)
	case c.MaxReport < 0:
		return fmt.Errorf("verify config: MaxReport %d: must be >= 0", c.MaxReport)
	}
	if err := validSchema(c.Schema); err != nil {
		return fmt.Errorf("verify config: Schema: %w", err)
	}
	return nil
}

// Report is the outcome of Verify.
type Report struct {
	Topic      string
	Partitions int
	// Checked is, per partition, the offset at which the cross-entity
	// invariants were checked: the last stable offset when Verify started (a
	// transaction boundary). Read is where reading stopped: Checked, or the
	// sink's stored offset when Postgres was compared.
	Checked, Read map[int32]int64

	// Records read, by kind (Records counts every data record; markers of
	// transactions are not records).
	Records, StockRecords, ReservationRecords, CommandRecords, OtherRecords int64
	Tombstones, Undecodable                                                 int64

	// The latest state: SKUs with a stock entity, of which oversold
	// (available < 0), and reservations by status.
	SKUs, Oversold int
	Reservations   map[string]int

	// Postgres is true when the snapshot was compared; StockRows and
	// ReservationRows are the rows read.
	Postgres                   bool
	StockRows, ReservationRows int

	// Mismatches are the first MaxReport mismatches: changelog violations
	// ordered by key, then Postgres mismatches ordered by key. MismatchCount
	// counts them all.
	Mismatches    []Mismatch
	MismatchCount int
	// Violations, PostgresMismatches and AuditMismatches split
	// MismatchCount.
	Violations, PostgresMismatches, AuditMismatches int

	// Audit is what was compared of the audit trail, per results topic
	// (empty when it was not compared).
	Audit []AuditTopicReport

	Took time.Duration
}

// OK reports whether nothing was found.
func (r *Report) OK() bool { return r.MismatchCount == 0 }

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "verify %s: %d partitions, %d records read in %s\n", r.Topic, r.Partitions, r.Records,
		r.Took.Round(time.Millisecond))
	fmt.Fprintf(w, "  records:      %d stock, %d reservation, %d command, %d other; %d tombstones, %d undecodable\n",
		r.StockRecords, r.ReservationRecords, r.CommandRecords, r.OtherRecords, r.Tombstones, r.Undecodable)
	fmt.Fprintf(w, "  checked at:   %s\n", offsetList(r.Checked))
	fmt.Fprintf(w, "  SKUs:         %d (%d oversold)\n", r.SKUs, r.Oversold)
	total := 0
	var parts []string
	for _, s := range []string{schemas.StatusActive, schemas.StatusReleased, schemas.StatusExpired, schemas.StatusConsumed} {
		total += r.Reservations[s]
		parts = append(parts, fmt.Sprintf("%d %s", r.Reservations[s], s))
	}
	for s, n := range r.Reservations {
		if !slices.Contains([]string{schemas.StatusActive, schemas.StatusReleased, schemas.StatusExpired, schemas.StatusConsumed}, s) {
			total += n
			parts = append(parts, fmt.Sprintf("%d %q", n, s))
		}
	}
	fmt.Fprintf(w, "  reservations: %d (%s)\n", total, strings.Join(parts, ", "))
	if r.Postgres {
		fmt.Fprintf(w, "  postgres:     %d stock rows, %d reservation rows compared at the sink's offsets %s\n",
			r.StockRows, r.ReservationRows, offsetList(r.Read))
	} else {
		fmt.Fprintln(w, "  postgres:     not compared (no DSN)")
	}
	var audit strings.Builder
	writeAuditText(&audit, r.Audit)
	fmt.Fprint(w, audit.String())
	if r.OK() {
		fmt.Fprintln(w, "OK: no mismatch")
		return
	}
	fmt.Fprintf(w, "FAILED: %s (%d in the changelog, %d between Postgres and the changelog",
		plural(r.MismatchCount, "mismatch", "mismatches"), r.Violations, r.PostgresMismatches)
	if len(r.Audit) > 0 {
		fmt.Fprintf(w, ", %d between the audit trail and the results", r.AuditMismatches)
	}
	fmt.Fprint(w, ")")
	if len(r.Mismatches) < r.MismatchCount {
		fmt.Fprintf(w, ", the first %d:\n", len(r.Mismatches))
	} else {
		fmt.Fprintln(w, ":")
	}
	for _, m := range r.Mismatches {
		fmt.Fprintf(w, "  %s\n", m)
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// offsetList formats per-partition offsets as "0:12 1:40 ...".
func offsetList(offs map[int32]int64) string {
	ps := make([]int32, 0, len(offs))
	for p := range offs {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d:%d", p, offs[p])
	}
	if b.Len() == 0 {
		return "(no partition)"
	}
	return b.String()
}

// SinkBehindError is returned by Verify when the sink's stored offsets did not
// reach the changelog end within VerifyConfig.Wait: Postgres cannot be
// compared.
type SinkBehindError struct {
	Topic string
	Wait  time.Duration
	// Behind lists, per partition that is behind, the stored next offset
	// (-1: none) and the changelog end it must reach.
	Behind map[int32][2]int64
	// NoSchema: the database has no sink tables (the sink never ran on it,
	// or it keeps them in another schema than Schema).
	NoSchema bool
	// Schema is VerifyConfig.Schema.
	Schema string
	// Replaying: a `replay --to postgres` run is in progress.
	Replaying bool
	// Audit: Topic is a results topic, whose audit trail is behind.
	Audit bool
}

func (e *SinkBehindError) Error() string {
	var b strings.Builder
	if e.NoSchema {
		fmt.Fprintf(&b, "the database has no sink tables (sink_offsets) in %s: the sink never ran on it, or keeps its tables "+
			"in another schema (its --pg-schema) (waited %s)", schemaLabel(e.Schema), e.Wait)
		return b.String()
	}
	ps := make([]int32, 0, len(e.Behind))
	for p := range e.Behind {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	if e.Audit {
		fmt.Fprintf(&b, "the sink's audit trail is behind the results topic %s after waiting %s:", e.Topic, e.Wait)
	} else {
		fmt.Fprintf(&b, "the sink is behind the changelog %s after waiting %s:", e.Topic, e.Wait)
	}
	for i, p := range ps {
		if i == 5 {
			fmt.Fprintf(&b, " and %d more partitions", len(ps)-5)
			break
		}
		o := e.Behind[p]
		stored := strconv.FormatInt(o[0], 10)
		if o[0] < 0 {
			stored = "nothing"
		}
		fmt.Fprintf(&b, " partition %d stored %s of %d;", p, stored, o[1])
	}
	switch {
	case e.Audit:
		b.WriteString(" is the sink running, with its audit on (verify --check-audit off skips it)?")
	case e.Replaying:
		b.WriteString(" a replay --to postgres is in progress")
	default:
		b.WriteString(" is the sink running?")
	}
	return strings.TrimSuffix(b.String(), ";")
}

// Verify reads the changelog to its end, builds the latest state and checks
// the contract's invariants (see the Check* constants); with a database it
// also compares the stock and reservations tables with the latest entities, at
// the offsets the sink stored. An error means no verdict: Kafka or Postgres
// unreachable, the topic missing, or the sink behind (*SinkBehindError).
// Mismatches are in the report, not errors.
func Verify(ctx context.Context, cfg VerifyConfig, opts ...Option) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Topic == "" {
		cfg.Topic = topics.NewNames("").Changelog
	}
	if cfg.MaxReport == 0 {
		cfg.MaxReport = DefaultMaxReport
	}
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	log := o.logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	started := time.Now()
	kopts := append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...), kgo.WithLogger(kafkaLogger{log})}, o.kafkaOpt...)
	admCl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("create kafka client: %w", err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	bounds, err := listBounds(ctx, adm, cfg.Topic)
	if err != nil {
		return nil, err
	}
	checked := make(map[int32]int64, len(bounds.partitions))
	for _, p := range bounds.partitions {
		checked[p] = bounds.stable[p]
	}
	log.Info("changelog bounds", "topic", cfg.Topic, "partitions", len(bounds.partitions), "records", bounds.records())

	rep := &Report{Topic: cfg.Topic, Partitions: len(bounds.partitions), Checked: checked,
		Reservations: map[string]int{}}
	read := maps(checked)
	var snap *snapshot
	var offsetIssues []Mismatch
	var pgPool *pgxpool.Pool
	if cfg.DSN != "" || cfg.Pool != nil {
		pool := cfg.Pool
		if pool == nil {
			if pool, err = openPool(ctx, cfg.DSN, cfg.Schema); err != nil {
				return nil, err
			}
			defer pool.Close()
		}
		if snap, err = waitSnapshot(ctx, pool, cfg.Topic, bounds, checked, cfg.Wait, log); err != nil {
			var behind *SinkBehindError
			if errors.As(err, &behind) {
				behind.Schema = cfg.Schema
			}
			return nil, err
		}
		// Read up to what the sink stored, unless that is beyond the log
		// (a recreated topic): the log end moved on since it was listed.
		now, err := listBounds(ctx, adm, cfg.Topic)
		if err != nil {
			return nil, err
		}
		for p, s := range snap.offsets {
			if !slices.Contains(bounds.partitions, p) || s > now.end[p] {
				offsetIssues = append(offsetIssues, Mismatch{Check: CheckOffsets, Key: fmt.Sprintf("sink_offsets/%d", p),
					Field: "next_offset", Want: "<= " + itoa(now.end[p]), Got: itoa(s), Offset: -1,
					Detail: "the sink stored an offset beyond the changelog end: was the topic recreated? rebuild with replay --to postgres"})
				continue
			}
			read[p] = max(read[p], s)
		}
		pgPool = pool
		rep.Postgres = true
		rep.StockRows, rep.ReservationRows = len(snap.stock), len(snap.reservations)
	}
	rep.Read = read

	var total int64
	for _, p := range bounds.partitions {
		total += max(read[p]-bounds.start[p], 0)
	}
	c := newChecker(checked)
	progress := func(covered int64) {
		if cfg.Progress != nil {
			cfg.Progress(covered, total)
		}
	}
	err = readLog(ctx, kopts, cfg.Topic, bounds.start, read, func(r *kgo.Record) error {
		c.add(r.Partition, r.Offset, r.Key, r.Value)
		return nil
	}, progress)
	if err != nil {
		return nil, fmt.Errorf("read changelog %s: %w", cfg.Topic, err)
	}
	c.finish(bounds.partitions)

	rep.Records, rep.StockRecords, rep.ReservationRecords = c.counts.records, c.counts.stock, c.counts.reservations
	rep.CommandRecords, rep.OtherRecords = c.counts.commands, c.counts.other
	rep.Tombstones, rep.Undecodable = c.counts.tombstones, c.counts.undecodable
	rep.SKUs = len(c.stock)
	for _, s := range c.stock {
		if s.row.available < 0 {
			rep.Oversold++
		}
	}
	for _, r := range c.res {
		rep.Reservations[r.row.status]++
	}

	violations := append(c.sortedViolations(), offsetIssues...)
	rep.Violations = c.nViolation + len(offsetIssues)
	var pgMismatches []Mismatch
	if snap != nil {
		pgMismatches, rep.PostgresMismatches = compareSnapshot(c, snap, cfg.MaxReport)
	}
	var auditMismatches []Mismatch
	if snap != nil && cfg.Audit.Enabled() {
		rep.Audit, auditMismatches, rep.AuditMismatches, err = verifyAudit(ctx, kopts, adm, pgPool, cfg.Audit, cfg.AuditRequired, cfg.Wait, log, cfg.MaxReport)
		if err != nil {
			return nil, err
		}
	}
	rep.MismatchCount = rep.Violations + rep.PostgresMismatches + rep.AuditMismatches
	for _, list := range [][]Mismatch{violations, pgMismatches, auditMismatches} {
		for _, m := range list {
			if len(rep.Mismatches) < cfg.MaxReport {
				rep.Mismatches = append(rep.Mismatches, m)
			}
		}
	}
	rep.Took = time.Since(started)
	return rep, nil
}

func maps(m map[int32]int64) map[int32]int64 {
	out := make(map[int32]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// openPool connects to dsn with search_path schema (when set) and checks that
// Postgres answers.
func openPool(ctx context.Context, dsn, schema string) (*pgxpool.Pool, error) {
	pool, err := newPool(ctx, dsn, schema)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, kafkaTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	return pool, nil
}

// snapshotTimeout bounds reading the offsets and every row.
const snapshotTimeout = 10 * time.Minute

// snapshot is what the sink stored, read in one transaction.
type snapshot struct {
	offsets      map[int32]int64
	stock        map[string]*stockRow       // by SKU
	reservations map[string]*reservationRow // by changelog key
}

// waitSnapshot polls the sink's stored offsets until every partition with
// records reached end (or wait passed: *SinkBehindError), then reads the rows
// in the same repeatable-read transaction as the offsets.
func waitSnapshot(ctx context.Context, pool *pgxpool.Pool, topic string, b logBounds, end map[int32]int64,
	wait time.Duration, log *slog.Logger) (*snapshot, error) {
	deadline := time.Now().Add(wait)
	logged := time.Now()
	for {
		snap, behind, err := readSnapshot(ctx, pool, topic, b, end)
		var pgErr *pgconn.PgError
		noSchema := errors.As(err, &pgErr) && pgErr.Code == "42P01" // undefined_table
		if err != nil && !noSchema {
			return nil, fmt.Errorf("read the sink's snapshot: %w", err)
		}
		if err == nil && len(behind) == 0 {
			return snap, nil
		}
		if !time.Now().Before(deadline) {
			e := &SinkBehindError{Topic: topic, Wait: wait, Behind: behind, NoSchema: noSchema}
			if !noSchema {
				e.Replaying = replayInProgress(ctx, pool, topic)
			}
			return nil, e
		}
		if time.Since(logged) > 5*time.Second {
			log.Info("waiting for the sink to reach the changelog end", "behind_partitions", len(behind))
			logged = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(100*time.Millisecond, time.Until(deadline))):
		}
	}
}

// readSnapshot reads the stored offsets and, when none is behind end, the rows.
func readSnapshot(ctx context.Context, pool *pgxpool.Pool, topic string, b logBounds, end map[int32]int64) (
	*snapshot, map[int32][2]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only
	snap := &snapshot{offsets: map[int32]int64{}, stock: map[string]*stockRow{}, reservations: map[string]*reservationRow{}}
	rows, _ := tx.Query(ctx, `SELECT partition, next_offset FROM sink_offsets WHERE topic = $1`, topic)
	var p int32
	var o int64
	if _, err := pgx.ForEachRow(rows, []any{&p, &o}, func() error {
		snap.offsets[p] = o
		return nil
	}); err != nil {
		return nil, nil, err
	}
	behind := map[int32][2]int64{}
	for _, p := range b.partitions {
		if end[p] <= b.start[p] {
			continue // nothing to read: the sink stores nothing either
		}
		stored, ok := snap.offsets[p]
		if !ok {
			stored = -1
		}
		if stored < end[p] {
			behind[p] = [2]int64{stored, end[p]}
		}
	}
	if len(behind) > 0 {
		return nil, behind, nil
	}

	rows, _ = tx.Query(ctx, `SELECT `+strings.Join(stockColumns, ", ")+` FROM stock`)
	var s stockRow
	var updated *time.Time
	if _, err := pgx.ForEachRow(rows, []any{&s.sku, &s.onHand, &s.reserved, &s.available, &s.lowStockThreshold,
		&s.version, &s.event, &s.commandID, &updated}, func() error {
		s.updatedAt = millisOf(updated)
		row := s
		snap.stock[s.sku] = &row
		s.lowStockThreshold = nil
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("read stock: %w", err)
	}
	rows, _ = tx.Query(ctx, `SELECT `+strings.Join(reservationColumns, ", ")+` FROM reservations`)
	var r reservationRow
	var expires *time.Time
	if _, err := pgx.ForEachRow(rows, []any{&r.key, &r.sku, &r.reservationID, &r.quantity, &r.status, &expires,
		&r.extensions, &r.cartID, &r.orderID, &r.storeID, &r.version, &r.event, &r.commandID, &updated,
		&r.prepared}, func() error {
		r.expiresAt, r.updatedAt = millisOf(expires), millisOf(updated)
		row := r
		snap.reservations[r.key] = &row
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("read reservations: %w", err)
	}
	return snap, nil, nil
}

// replayInProgress reports whether a replay run of topic is unfinished.
func replayInProgress(ctx context.Context, pool *pgxpool.Pool, topic string) bool {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	var n int
	err := pool.QueryRow(ctx, `SELECT count(*) FROM replay_runs WHERE topic = $1 AND finished_at IS NULL`, topic).Scan(&n)
	return err == nil && n > 0
}

func millisOf(t *time.Time) schemas.Millis {
	if t == nil {
		return 0
	}
	return schemas.MillisOf(*t)
}

// compareSnapshot compares the rows with the checker's latest entities. It
// returns the first limit mismatches in key order and the number of all.
func compareSnapshot(c *checker, snap *snapshot, limit int) ([]Mismatch, int) {
	keys := make([]string, 0, len(c.stock)+len(c.res)+len(snap.stock)+len(snap.reservations))
	for sku := range c.stock {
		keys = append(keys, schemas.StockKey(sku))
	}
	for sku := range snap.stock {
		if _, ok := c.stock[sku]; !ok {
			keys = append(keys, schemas.StockKey(sku))
		}
	}
	for key := range c.res {
		keys = append(keys, key)
	}
	for key := range snap.reservations {
		if _, ok := c.res[key]; !ok {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	var out []Mismatch
	n := 0
	pg := func(key, field, want, got, detail string) {
		n++
		if len(out) < limit {
			out = append(out, Mismatch{Check: CheckPostgres, Key: key, Field: field, Want: want, Got: got,
				Detail: detail, Offset: -1})
		}
	}
	for _, key := range keys {
		var fields []field
		var version int64
		var have, live bool
		if sku, ok := strings.CutPrefix(key, schemas.StockPrefix); ok {
			s, isLive := c.stock[sku]
			row, isRow := snap.stock[sku]
			have, live = isRow, isLive
			if isLive {
				version = s.row.version
			}
			if isLive && isRow {
				fields = stockFields(s.row, row)
			}
		} else {
			r, isLive := c.res[key]
			row, isRow := snap.reservations[key]
			have, live = isRow, isLive
			if isLive {
				version = r.row.version
			}
			if isLive && isRow {
				fields = reservationFields(r.row, row)
			}
		}
		switch {
		case live && !have:
			pg(key, "", "", "", fmt.Sprintf("no row for the changelog entity (version %d)", version))
		case !live && c.gone[key]:
			pg(key, "", "", "", "row for a key the changelog tombstoned")
		case !live:
			pg(key, "", "", "", "row without a changelog entity")
		}
		for _, f := range fields {
			if f.want != f.got {
				pg(key, f.name, f.want, f.got, "")
			}
		}
	}
	return out, n
}

// field is one column: the changelog's value and the row's.
type field struct{ name, want, got string }

func stockFields(want, got *stockRow) []field {
	return []field{
		{"on_hand", itoa(want.onHand), itoa(got.onHand)},
		{"reserved", itoa(want.reserved), itoa(got.reserved)},
		{"available", itoa(want.available), itoa(got.available)},
		{"low_stock_threshold", optInt(want.lowStockThreshold), optInt(got.lowStockThreshold)},
		{"version", itoa(want.version), itoa(got.version)},
		{"event", strconv.Quote(want.event), strconv.Quote(got.event)},
		{"command_id", strconv.Quote(want.commandID), strconv.Quote(got.commandID)},
		{"updated_at", timeText(want.updatedAt), timeText(got.updatedAt)},
	}
}

func reservationFields(want, got *reservationRow) []field {
	return []field{
		{"sku", strconv.Quote(want.sku), strconv.Quote(got.sku)},
		{"reservation_id", strconv.Quote(want.reservationID), strconv.Quote(got.reservationID)},
		{"quantity", itoa(want.quantity), itoa(got.quantity)},
		{"status", want.status, got.status},
		{"expires_at", timeText(want.expiresAt), timeText(got.expiresAt)},
		{"extensions", itoa(want.extensions), itoa(got.extensions)},
		{"cart_id", strconv.Quote(want.cartID), strconv.Quote(got.cartID)},
		{"order_id", strconv.Quote(want.orderID), strconv.Quote(got.orderID)},
		{"store_id", strconv.Quote(want.storeID), strconv.Quote(got.storeID)},
		{"prepared", strconv.FormatBool(want.prepared), strconv.FormatBool(got.prepared)},
		{"version", itoa(want.version), itoa(got.version)},
		{"event", strconv.Quote(want.event), strconv.Quote(got.event)},
		{"command_id", strconv.Quote(want.commandID), strconv.Quote(got.commandID)},
		{"updated_at", timeText(want.updatedAt), timeText(got.updatedAt)},
	}
}

func optInt(p *int64) string {
	if p == nil {
		return "null"
	}
	return itoa(*p)
}

func timeText(m schemas.Millis) string {
	if m == 0 {
		return "null"
	}
	return m.String()
}
