package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// CheckAudit: audit_events differs from the results topic (a record without
// its row, a row without its record, a field that differs).
const CheckAudit = "audit"

// AuditTopicReport is what Verify compared of one audited topic.
type AuditTopicReport struct {
	Topic string
	// Missing: the topic does not exist (nothing compared).
	Missing bool
	// NotKept: the sink stored no offset of the topic, and the audit was not
	// required (VerifyConfig.AuditRequired): it does not keep the audit.
	NotKept bool
	// From and To are, per partition, the offsets compared: from the log
	// start to the offset the sink stored.
	From, To map[int32]int64
	// Records read (data records, not markers), of which Skipped were not
	// expected in the table: undecodable (in sink_errors) or decided before
	// the retention's cut. Rows read.
	Records, Skipped, Rows int64
	// DroppedBefore is the retention's cut (zero: nothing dropped).
	DroppedBefore time.Time
}

// auditTimeout bounds reading the audit rows.
const auditTimeout = 10 * time.Minute

// verifyAudit compares audit_events with each topic of cfg: every data
// record of the topic from its log start to the offset the sink stored has
// exactly one row, field-equal, and there is no other row at or after the log
// start. Records decided before the retention's cut and rows before the log
// start (kept longer than the topic keeps them) are not compared. It waits up
// to wait for the sink's offsets to reach the last stable offsets listed at
// its start (*SinkBehindError).
func verifyAudit(ctx context.Context, kopts []kgo.Opt, adm *kadm.Client, pool *pgxpool.Pool, cfg AuditConfig,
	required bool, wait time.Duration, log *slog.Logger, limit int) ([]AuditTopicReport, []Mismatch, int, error) {
	var reps []AuditTopicReport
	var out []Mismatch
	n := 0
	add := func(m Mismatch) {
		n++
		if len(out) < limit {
			out = append(out, m)
		}
	}
	for _, topic := range cfg.topics() {
		rep := AuditTopicReport{Topic: topic}
		bounds, err := listBounds(ctx, adm, topic)
		if errors.Is(err, ErrNoTopic) {
			rep.Missing = true
			reps = append(reps, rep)
			continue
		}
		if err != nil {
			return nil, nil, 0, err
		}
		if !required {
			kept, err := auditKept(ctx, pool, topic)
			if err != nil {
				return nil, nil, 0, err
			}
			if !kept {
				rep.NotKept = true
				reps = append(reps, rep)
				continue
			}
		}
		stored, rows, cut, err := waitAudit(ctx, pool, topic, bounds, wait, log)
		if err != nil {
			return nil, nil, 0, err
		}
		rep.DroppedBefore = cut
		rep.From, rep.To = map[int32]int64{}, map[int32]int64{}
		for _, p := range bounds.partitions {
			rep.From[p] = bounds.start[p]
			rep.To[p] = max(stored[p], bounds.start[p])
		}
		rep.Rows = int64(len(rows))
		cart := topic == cfg.CartResults
		want := map[[2]int64]*auditRow{}
		err = readLog(ctx, kopts, topic, bounds.start, rep.To, func(r *kgo.Record) error {
			rep.Records++
			row, err := decodeAuditRow(r, cart)
			if err != nil || row.decidedAt.Before(cut) {
				rep.Skipped++
				return nil
			}
			want[[2]int64{int64(r.Partition), r.Offset}] = &row
			return nil
		}, nil)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("read %s: %w", topic, err)
		}
		keys := make([][2]int64, 0, len(want)+len(rows))
		for k := range want {
			keys = append(keys, k)
		}
		for k := range rows {
			if _, ok := want[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.SortFunc(keys, func(a, b [2]int64) int {
			if a[0] != b[0] {
				return int(a[0] - b[0])
			}
			return int(a[1] - b[1])
		})
		for _, k := range keys {
			w, got := want[k], rows[k]
			at := Mismatch{Check: CheckAudit, Key: topic, Partition: int32(k[0]), Offset: k[1]}
			switch {
			case got == nil:
				at.Detail = fmt.Sprintf("no audit row for the %s record (command_id %q, decided_at %s)",
					w.kind, w.commandID, w.decidedAt.Format(time.RFC3339Nano))
				add(at)
			case w == nil:
				at.Detail = fmt.Sprintf("audit row (command_id %q) without a result record at that offset", got.commandID)
				add(at)
			default:
				for _, f := range auditFields(w, got) {
					if f.want != f.got {
						m := at
						m.Field, m.Want, m.Got = f.name, f.want, f.got
						add(m)
					}
				}
			}
		}
		reps = append(reps, rep)
	}
	return reps, out, n, nil
}

// auditKept reports whether the sink stored offsets of topic: it keeps its
// audit trail (or did).
func auditKept(ctx context.Context, pool *pgxpool.Pool, topic string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	var kept bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM sink_offsets WHERE topic = $1)`, topic).Scan(&kept); err != nil {
		return false, fmt.Errorf("read the sink's offsets of %s: %w", topic, err)
	}
	return kept, nil
}

// waitAudit polls the sink's stored offsets of topic until every partition
// with records reached its last stable offset in b (or wait passed:
// *SinkBehindError), then reads, in the same repeatable-read transaction, the
// rows of the topic at or after the log start (by partition and offset) and
// the retention's cut.
func waitAudit(ctx context.Context, pool *pgxpool.Pool, topic string, b logBounds, wait time.Duration,
	log *slog.Logger) (map[int32]int64, map[[2]int64]*auditRow, time.Time, error) {
	deadline := time.Now().Add(wait)
	logged := time.Now()
	for {
		stored, rows, cut, behind, err := readAudit(ctx, pool, topic, b)
		if err != nil {
			return nil, nil, time.Time{}, fmt.Errorf("read the audit trail of %s: %w", topic, err)
		}
		if len(behind) == 0 {
			return stored, rows, cut, nil
		}
		if !time.Now().Before(deadline) {
			return nil, nil, time.Time{}, &SinkBehindError{Topic: topic, Wait: wait, Behind: behind, Audit: true}
		}
		if time.Since(logged) > 5*time.Second {
			log.Info("waiting for the sink's audit to reach the end of the results topic", "topic", topic,
				"behind_partitions", len(behind))
			logged = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, nil, time.Time{}, ctx.Err()
		case <-time.After(min(100*time.Millisecond, time.Until(deadline))):
		}
	}
}

func readAudit(ctx context.Context, pool *pgxpool.Pool, topic string, b logBounds) (
	map[int32]int64, map[[2]int64]*auditRow, time.Time, map[int32][2]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, auditTimeout)
	defer cancel()
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, nil, time.Time{}, nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only
	rs, _ := tx.Query(ctx, `SELECT partition, next_offset FROM sink_offsets WHERE topic = $1`, topic)
	stored := map[int32]int64{}
	var p int32
	var o int64
	if _, err := pgx.ForEachRow(rs, []any{&p, &o}, func() error { stored[p] = o; return nil }); err != nil {
		return nil, nil, time.Time{}, nil, err
	}
	behind := map[int32][2]int64{}
	for _, p := range b.partitions {
		if b.stable[p] <= b.start[p] {
			continue
		}
		s, ok := stored[p]
		if !ok {
			s = -1
		}
		if s < b.stable[p] {
			behind[p] = [2]int64{s, b.stable[p]}
		}
	}
	if len(behind) > 0 {
		return nil, nil, time.Time{}, behind, nil
	}
	var cut pgtype.Timestamptz
	if err := tx.QueryRow(ctx, `SELECT max(range_to) FROM audit_dropped_partitions`).Scan(&cut); err != nil {
		return nil, nil, time.Time{}, nil, fmt.Errorf("read audit_dropped_partitions: %w", err)
	}
	parts := make([]int32, 0, len(b.partitions))
	starts := make([]int64, 0, len(b.partitions))
	for _, p := range b.partitions {
		parts = append(parts, p)
		starts = append(starts, b.start[p])
	}
	rs, _ = tx.Query(ctx, `SELECT `+quotedColumns(auditColumns)+` FROM audit_events a
		JOIN unnest($2::integer[], $3::bigint[]) AS t(p, s) ON a.partition = t.p AND a."offset" >= t.s
		WHERE a.topic = $1`, topic, parts, starts)
	rows := map[[2]int64]*auditRow{}
	var r auditRow
	if _, err := pgx.ForEachRow(rs, []any{&r.topic, &r.partition, &r.offset, &r.kind, &r.commandID, &r.typ, &r.sku,
		&r.reservationID, &r.cartID, &r.orderID, &r.quantity, &r.outcome, &r.reason, &r.message, &r.duplicate,
		&r.decidedAt}, func() error {
		row := r
		rows[[2]int64{int64(r.partition), r.offset}] = &row
		r.quantity = nil
		return nil
	}); err != nil {
		return nil, nil, time.Time{}, nil, fmt.Errorf("read audit_events: %w", err)
	}
	var at time.Time
	if cut.Valid {
		at = cut.Time
	}
	return stored, rows, at, nil, nil
}

// writeAuditText writes the audit lines of a report.
func writeAuditText(b *strings.Builder, reps []AuditTopicReport) {
	for _, a := range reps {
		if a.Missing {
			fmt.Fprintf(b, "  audit:        %s does not exist: nothing to compare\n", a.Topic)
			continue
		}
		if a.NotKept {
			fmt.Fprintf(b, "  audit:        %s not compared: the sink stored no offset of it (it runs without --audit, or has not written yet)\n", a.Topic)
			continue
		}
		fmt.Fprintf(b, "  audit:        %d rows compared with %d records of %s (%d not expected) at the sink's offsets %s",
			a.Rows, a.Records, a.Topic, a.Skipped, offsetList(a.To))
		if !a.DroppedBefore.IsZero() {
			fmt.Fprintf(b, ", retention cut %s", a.DroppedBefore.UTC().Format(time.RFC3339))
		}
		b.WriteByte('\n')
	}
}
