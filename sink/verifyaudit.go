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
	// TopicID is the Kafka topic ID of the topic compared ("": the broker
	// did not say; then every row is compared by position).
	TopicID string
	// OtherTopicRows are rows read from earlier topics of this name (deleted
	// and created again: another topic ID, offsets that started at 0 again).
	// They are history, kept and not compared.
	OtherTopicRows int64
}

// auditTimeout bounds reading the audit rows.
const auditTimeout = 10 * time.Minute

// verifyAudit compares audit_events with each topic of cfg: every data
// record of the topic from its log start to the offset the sink stored has
// exactly one row, field-equal, and there is no other row at or after the log
// start. A position names a record together with the topic's ID: rows read
// from an earlier topic of the same name (deleted and created again, its
// offsets restarted) are not compared (readAudit). Records decided
// before the retention's cut and rows before the log start (kept longer than
// the topic keeps them) are not compared. It waits up to wait for the sink's
// offsets to reach the last stable offsets listed at its start
// (*SinkBehindError).
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
		if rep.TopicID, err = currentTopicID(ctx, adm, topic); err != nil {
			return nil, nil, 0, err
		}
		read, err := waitAudit(ctx, pool, topic, rep.TopicID, bounds, wait, log)
		if err != nil {
			return nil, nil, 0, err
		}
		stored, rows, cut := read.stored, read.rows, read.cut
		rep.DroppedBefore, rep.OtherTopicRows = cut, read.other
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

// currentTopicID is the Kafka topic ID of topic (topicIDString; "" when the
// broker gives none).
func currentTopicID(ctx context.Context, adm *kadm.Client, topic string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tds, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return "", fmt.Errorf("topic ID of %s: %w", topic, err)
	}
	td, ok := tds[topic]
	if !ok {
		return "", fmt.Errorf("topic ID of %s: %w", topic, ErrNoTopic)
	}
	if td.Err != nil {
		return "", fmt.Errorf("topic ID of %s: %w", topic, td.Err)
	}
	return topicIDString(td.ID), nil
}

// auditRead is what readAudit read of one topic.
type auditRead struct {
	stored map[int32]int64        // the sink's next offsets
	rows   map[[2]int64]*auditRow // by partition and offset: the rows compared
	cut    time.Time              // the retention's cut (zero: none)
	other  int64                  // rows of other topic IDs, not compared
}

// waitAudit polls the sink's stored offsets of topic until every partition
// with records reached its last stable offset in b (or wait passed:
// *SinkBehindError), then reads, in the same repeatable-read transaction, the
// rows of the topic (ID id) at or after the log start (by partition and
// offset) and the retention's cut.
func waitAudit(ctx context.Context, pool *pgxpool.Pool, topic, id string, b logBounds, wait time.Duration,
	log *slog.Logger) (auditRead, error) {
	deadline := time.Now().Add(wait)
	logged := time.Now()
	for {
		read, behind, err := readAudit(ctx, pool, topic, id, b)
		if err != nil {
			return auditRead{}, fmt.Errorf("read the audit trail of %s: %w", topic, err)
		}
		if len(behind) == 0 {
			return read, nil
		}
		if !time.Now().Before(deadline) {
			return auditRead{}, &SinkBehindError{Topic: topic, Wait: wait, Behind: behind, Audit: true}
		}
		if time.Since(logged) > 5*time.Second {
			log.Info("waiting for the sink's audit to reach the end of the results topic", "topic", topic,
				"behind_partitions", len(behind))
			logged = time.Now()
		}
		select {
		case <-ctx.Done():
			return auditRead{}, ctx.Err()
		case <-time.After(min(100*time.Millisecond, time.Until(deadline))):
		}
	}
}

// readAudit reads, in one repeatable-read transaction, the sink's stored
// offsets of topic and, when every partition with records reached its last
// stable offset in b (else behind lists those that did not), the rows to
// compare: the rows at or after the log start that were read from the topic
// with ID id, or whose topic ID is unknown (”). Rows read from a topic of
// another ID are counted only. With id "" (the broker gives no IDs) every row
// at or after the log start is compared.
func readAudit(ctx context.Context, pool *pgxpool.Pool, topic, id string, b logBounds) (auditRead, map[int32][2]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, auditTimeout)
	defer cancel()
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return auditRead{}, nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only
	rs, _ := tx.Query(ctx, `SELECT partition, next_offset FROM sink_offsets WHERE topic = $1`, topic)
	read := auditRead{stored: map[int32]int64{}, rows: map[[2]int64]*auditRow{}}
	var p int32
	var o int64
	if _, err := pgx.ForEachRow(rs, []any{&p, &o}, func() error { read.stored[p] = o; return nil }); err != nil {
		return auditRead{}, nil, err
	}
	behind := map[int32][2]int64{}
	for _, p := range b.partitions {
		if b.stable[p] <= b.start[p] {
			continue
		}
		s, ok := read.stored[p]
		if !ok {
			s = -1
		}
		if s < b.stable[p] {
			behind[p] = [2]int64{s, b.stable[p]}
		}
	}
	if len(behind) > 0 {
		return auditRead{}, behind, nil
	}
	var cut pgtype.Timestamptz
	if err := tx.QueryRow(ctx, `SELECT max(range_to) FROM audit_dropped_partitions`).Scan(&cut); err != nil {
		return auditRead{}, nil, fmt.Errorf("read audit_dropped_partitions: %w", err)
	}
	if cut.Valid {
		read.cut = cut.Time
	}
	if id != "" {
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE topic = $1 AND topic_id NOT IN ('', $2)`,
			topic, id).Scan(&read.other); err != nil {
			return auditRead{}, nil, fmt.Errorf("count the rows of other topic IDs: %w", err)
		}
	}
	parts := make([]int32, 0, len(b.partitions))
	starts := make([]int64, 0, len(b.partitions))
	for _, p := range b.partitions {
		parts = append(parts, p)
		starts = append(starts, b.start[p])
	}
	rs, _ = tx.Query(ctx, `SELECT `+quotedColumns(auditColumns)+` FROM audit_events a
		JOIN unnest($2::integer[], $3::bigint[]) AS t(p, s) ON a.partition = t.p AND a."offset" >= t.s
		WHERE a.topic = $1 AND ($4 = '' OR a.topic_id IN ('', $4))`, topic, parts, starts, id)
	var r auditRow
	if _, err := pgx.ForEachRow(rs, r.scanTargets(), func() error {
		row := r
		r.quantity = nil
		k := [2]int64{int64(row.partition), row.offset}
		if prev, ok := read.rows[k]; ok && id != "" && (prev.topicID == "") != (row.topicID == "") {
			// A row without an ID (written before the sink recorded
			// them) at the position of a row of this topic is of an
			// earlier topic: one position holds one record per topic.
			read.other++
			if prev.topicID == id {
				return nil
			}
		}
		read.rows[k] = &row
		return nil
	}); err != nil {
		return auditRead{}, nil, fmt.Errorf("read audit_events: %w", err)
	}
	return read, nil, nil
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
		if a.OtherTopicRows > 0 {
			fmt.Fprintf(b, "; %d rows of earlier topics of this name (another topic ID) kept, not compared", a.OtherTopicRows)
		}
		b.WriteByte('\n')
	}
}
