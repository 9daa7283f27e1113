package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/internal/pgtest"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

var testNames = topics.NewNames("")

// auditEnv adds the results topics to a kafkaEnv and produces results and
// cart results, remembering the rows the audit must hold.
type auditEnv struct {
	t    testing.TB
	e    *kafkaEnv
	prod *kgo.Client
	n    int
	mu   sync.Mutex
	want map[auditKey]auditRow // committed records
}

type auditKey struct {
	topic     string
	partition int32
	offset    int64
}

func newAuditEnv(t testing.TB, e *kafkaEnv) *auditEnv {
	t.Helper()
	require.NoError(t, e.cluster.CreateTopic(testNames.Results, testPartitions, map[string]string{"cleanup.policy": "delete"}))
	require.NoError(t, e.cluster.CreateTopic(testNames.CartResults, 2, map[string]string{"cleanup.policy": "delete"}))
	return &auditEnv{t: t, e: e, prod: e.newProducer("results-writer"), want: map[auditKey]auditRow{}}
}

func (a *auditEnv) auditConfig() AuditConfig {
	return AuditConfig{Results: testNames.Results, CartResults: testNames.CartResults}
}

// result returns a record of the results topic decided at at, and its row
// (without position), built by hand from the fields.
func (a *auditEnv) result(at time.Time) (*kgo.Record, auditRow) {
	a.n++
	i := a.n
	sku := fmt.Sprintf("SKU-%d", i%5)
	res := schemas.Result{CommandID: fmt.Sprintf("cmd-%d", i), Type: "reserve", SKU: sku,
		ReservationID: fmt.Sprintf("r-%d", i), Outcome: schemas.OutcomeAccepted, Partition: 1, Offset: int64(i),
		DecidedAt: schemas.MillisOf(at),
		Stock:     &schemas.StockView{OnHand: 10, Reserved: 1, Available: 9},
		Reservation: &schemas.Reservation{ReservationID: fmt.Sprintf("r-%d", i), SKU: sku, Quantity: int64(i%3 + 1),
			Status: schemas.StatusActive, CartID: fmt.Sprintf("cart-%d", i%4), ExpiresAt: schemas.MillisOf(at.Add(time.Minute))}}
	row := auditRow{kind: AuditKindDecision, commandID: res.CommandID, typ: "reserve", sku: sku,
		reservationID: res.ReservationID, cartID: res.Reservation.CartID, outcome: schemas.OutcomeAccepted,
		decidedAt: at.UTC().Truncate(time.Millisecond)}
	q := res.Reservation.Quantity
	row.quantity = &q
	switch i % 4 {
	case 1: // a rejection, no reservation
		res.Outcome, res.Reason, res.Message, res.Reservation, res.Stock = schemas.OutcomeRejected,
			schemas.ReasonInsufficientStock, "only 0 available", nil, nil
		row.outcome, row.reason, row.message, row.cartID, row.quantity = schemas.OutcomeRejected,
			schemas.ReasonInsufficientStock, "only 0 available", "", nil
	case 2: // a notice
		res.CommandID, res.Type = "", schemas.TypeExpired
		res.Reservation.Status = schemas.StatusExpired
		row.commandID, row.typ, row.kind = "", schemas.TypeExpired, AuditKindNotice
	case 3: // a commit, with its order, as a duplicate
		res.Type, res.Duplicate = "commit", true
		res.Reservation.Status, res.Reservation.OrderID = schemas.StatusConsumed, fmt.Sprintf("order-%d", i)
		row.typ, row.duplicate, row.orderID = "commit", true, res.Reservation.OrderID
	}
	b, err := json.Marshal(res)
	require.NoError(a.t, err)
	return &kgo.Record{Topic: testNames.Results, Key: []byte(sku), Value: b}, row
}

// cartResult returns a record of the cart results topic and its row.
func (a *auditEnv) cartResult(at time.Time) (*kgo.Record, auditRow) {
	a.n++
	i := a.n
	c := schemas.CartResult{CommandID: fmt.Sprintf("cart-cmd-%d", i), Type: schemas.TypeCartCommit,
		CartID: fmt.Sprintf("cart-%d", i%4), OrderID: fmt.Sprintf("order-%d", i), Outcome: schemas.OutcomeAccepted,
		Message: "", DecidedAt: schemas.MillisOf(at),
		Lines: []schemas.CartLine{{SKU: "SKU-1", ReservationID: "x", Quantity: 2}, {SKU: "SKU-2", ReservationID: "y", Quantity: 3}}}
	b, err := json.Marshal(c)
	require.NoError(a.t, err)
	q := int64(5)
	row := auditRow{kind: AuditKindCart, commandID: c.CommandID, typ: c.Type, cartID: c.CartID, orderID: c.OrderID,
		quantity: &q, outcome: c.Outcome, decidedAt: at.UTC().Truncate(time.Millisecond)}
	return &kgo.Record{Topic: testNames.CartResults, Key: []byte(c.CartID), Value: b}, row
}

// produce writes n results and n/5 cart results decided from start on, one
// every step, in transactions of 5 records, every third aborted.
func (a *auditEnv) produce(start time.Time, step time.Duration, n int) time.Time {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	at := start
	for txn := 0; n > 0; txn++ {
		var recs []*kgo.Record
		var rows []auditRow
		for j := 0; j < 5 && n > 0; j++ {
			var r *kgo.Record
			var row auditRow
			if a.n%5 == 4 {
				r, row = a.cartResult(at)
			} else {
				r, row = a.result(at)
				n--
			}
			recs, rows = append(recs, r), append(rows, row)
			at = at.Add(step)
		}
		require.NoError(a.t, a.prod.BeginTransaction())
		require.NoError(a.t, a.prod.ProduceSync(ctx, recs...).FirstErr())
		commit := txn%3 != 2
		require.NoError(a.t, a.prod.EndTransaction(ctx, kgo.TransactionEndTry(commit)))
		if commit {
			a.mu.Lock()
			for i, r := range recs {
				row := rows[i]
				row.topic, row.partition, row.offset = r.Topic, r.Partition, r.Offset
				a.want[auditKey{r.Topic, r.Partition, r.Offset}] = row
			}
			a.mu.Unlock()
		}
	}
	return at
}

// ends lists the end offsets of the results topics (markers included: where a
// caught-up audit stores its offsets).
func (a *auditEnv) ends() map[string]map[int32]int64 {
	a.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(a.e.brokers...))
	require.NoError(a.t, err)
	defer cl.Close()
	offs, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), testNames.Results, testNames.CartResults)
	require.NoError(a.t, err)
	out := map[string]map[int32]int64{}
	offs.Each(func(o kadm.ListedOffset) {
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]int64{}
		}
		if o.Offset > 0 {
			out[o.Topic][o.Partition] = o.Offset
		}
	})
	return out
}

// waitAuditCaughtUp polls until the audit's stored offsets reach the end of
// the results topics.
func (a *auditEnv) waitAuditCaughtUp(pool *pgxpool.Pool, timeout time.Duration) {
	a.t.Helper()
	want := a.ends()
	deadline := time.Now().Add(timeout)
	for {
		got := map[string]map[int32]int64{}
		for t := range want {
			got[t] = storedOffsets(a.t, pool, t)
		}
		ok := true
		for t := range want {
			ok = ok && equalOffsets(got[t], want[t])
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			require.Equal(a.t, want, got, "audit did not catch up within %s", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// auditRows reads audit_events by position.
func auditRows(t testing.TB, pool *pgxpool.Pool) map[auditKey]auditRow {
	t.Helper()
	rows, _ := pool.Query(context.Background(), `SELECT `+quotedColumns(auditColumns)+` FROM audit_events`)
	out := map[auditKey]auditRow{}
	var r auditRow
	_, err := pgx.ForEachRow(rows, r.scanTargets(), func() error {
		row := r
		row.decidedAt = row.decidedAt.UTC()
		out[auditKey{r.topic, r.partition, r.offset}] = row
		r.quantity = nil
		return nil
	})
	require.NoError(t, err)
	return out
}

// assertAudit checks that audit_events holds exactly the committed records.
func (a *auditEnv) assertAudit(pool *pgxpool.Pool) {
	a.t.Helper()
	got := auditRows(a.t, pool)
	a.mu.Lock()
	defer a.mu.Unlock()
	require.Len(a.t, got, len(a.want))
	for k, w := range a.want {
		g, ok := got[k]
		if !assert.True(a.t, ok, "no row for %v", k) {
			continue
		}
		for _, f := range auditFields(&w, &g) {
			assert.Equal(a.t, f.want, f.got, "%v %s", k, f.name)
		}
	}
}

// countAttempts installs a trigger that records every row a committed audit
// transaction tried to insert (BEFORE INSERT triggers fire before ON CONFLICT
// skips a row): a record applied twice shows as two attempts even though the
// primary key keeps one row.
func countAttempts(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `
		CREATE TABLE audit_attempts (topic text, partition int, "offset" bigint);
		CREATE FUNCTION audit_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN INSERT INTO audit_attempts VALUES (NEW.topic, NEW.partition, NEW."offset"); RETURN NEW; END $$;
		CREATE TRIGGER audit_attempt BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_attempt();`)
	require.NoError(t, err)
}

func assertAttemptedOnce(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	var dup int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM (SELECT 1 FROM audit_attempts
		GROUP BY topic, partition, "offset" HAVING count(*) > 1) d`).Scan(&dup))
	assert.Zero(t, dup, "records inserted by more than one committed transaction")
}

// runWriter runs a new Writer for cfg after setup, until stop (or the test's
// end).
func runWriter(t testing.TB, cfg Config, setup func(*Writer)) (w *Writer, stop func()) {
	t.Helper()
	w, err := New(cfg, WithLogger(testLogger(t)), WithKafkaOpts(testKafkaOpts...))
	require.NoError(t, err)
	if setup != nil {
		setup(w)
	}
	errc := make(chan error, 1)
	go func() { errc <- w.Run(context.Background()) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			w.Close()
			assert.NoError(t, <-errc, "Run")
		})
	}
	t.Cleanup(stop)
	return w, stop
}

// migratedPool runs the migrations on db (through a Writer's store) so that
// a test can install its triggers first.
func migratedPool(t testing.TB, e *kafkaEnv, db *pgtest.Database) {
	t.Helper()
	w, err := New(e.sinkConfig(db.DSN))
	require.NoError(t, err)
	defer w.Close()
	_, err = w.store.migrate(context.Background())
	require.NoError(t, err)
}

var jan = time.Date(2026, 1, 30, 22, 0, 0, 0, time.UTC)

// TestAuditExactlyOnceAcrossCrash: batches rolled back before their commit
// (a crash mid-batch), a commit whose outcome the auditor did not see, and a
// sink stopped while records stream in and started again: every committed
// result is in audit_events exactly once (inserted by one committed
// transaction), field for field; aborted ones are not. Results decided across
// two month boundaries land in the partition of their month.
func TestAuditExactlyOnceAcrossCrash(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	a := newAuditEnv(t, e)
	db := pgtest.NewDatabase(t)
	migratedPool(t, e, db)
	countAttempts(t, db.Pool)
	cfg := e.sinkConfig(db.DSN)
	cfg.Audit = a.auditConfig()
	cfg.BatchSize = 8

	at := a.produce(jan, 10*time.Minute, 40) // Jan 30 22:00 onwards: crosses into February
	var before, after, commits atomic.Int32
	_, stop := runWriter(t, cfg, func(w *Writer) {
		w.audit.now = func() time.Time { return jan }
		w.audit.beforeCommit = func() error {
			if n := before.Add(1); n == 2 || n == 5 {
				return errors.New("crash before the commit")
			}
			return nil
		}
		w.audit.afterCommit = func() error {
			commits.Add(1)
			if after.Add(1) == 3 {
				return errors.New("commit outcome not seen")
			}
			return nil
		}
	})
	a.produce(at, 24*time.Hour, 40) // and on to March
	require.Eventually(t, func() bool { return commits.Load() >= 6 }, 30*time.Second, time.Millisecond)
	stop() // mid-stream: about 13 batches of 8
	assert.Less(t, commits.Load(), int32(13), "the first sink was meant to stop before the end")

	runWriter(t, cfg, func(w *Writer) { w.audit.now = func() time.Time { return jan } })
	a.waitAuditCaughtUp(db.Pool, 30*time.Second)
	a.assertAudit(db.Pool)
	assertAttemptedOnce(t, db.Pool)

	// Rows in the partition of their month; this month and the next exist
	// ahead of need (the clock says January).
	rows, _ := db.Pool.Query(context.Background(), `SELECT tableoid::regclass::text, min(decided_at), max(decided_at)
		FROM audit_events GROUP BY 1`)
	var name string
	var lo, hi time.Time
	months := map[string]bool{}
	_, err := pgx.ForEachRow(rows, []any{&name, &lo, &hi}, func() error {
		_, from, to := auditPartition(month(lo))
		assert.Equal(t, month(lo), month(hi), name)
		assert.False(t, lo.Before(from) || !hi.Before(to), name)
		months[name] = true
		return nil
	})
	require.NoError(t, err)
	assert.True(t, months["audit_events_y2026m01"] && months["audit_events_y2026m02"] && months["audit_events_y2026m03"], "%v", months)
	parts, err := auditPartitions(context.Background(), db.Pool)
	require.NoError(t, err)
	assert.Subset(t, parts, []string{"audit_events_y2026m01", "audit_events_y2026m02", "audit_events_y2026m03"})
}

// TestAuditRetentionAndVerify: the retention drops whole partitions whose
// month ended longer ago than it, and a record of a dropped month read late is
// not written again; verify compares the rest with the results topics and
// names a missing, an extra and an altered row.
func TestAuditRetentionAndVerify(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	a := newAuditEnv(t, e)
	db := pgtest.NewDatabase(t)
	cfg := e.sinkConfig(db.DSN)
	cfg.Audit = a.auditConfig()
	a.produce(jan, 20*time.Hour, 100) // Jan 30 to about April 5

	_, stop := runWriter(t, cfg, func(w *Writer) { w.audit.now = func() time.Time { return jan } })
	a.waitAuditCaughtUp(db.Pool, 30*time.Second)
	stop()
	a.assertAudit(db.Pool)
	vcfg := e.verifyConfig()
	vcfg.Pool, vcfg.Audit = db.Pool, a.auditConfig()
	rep := verify(t, vcfg)
	require.True(t, rep.OK(), "%v", rep.Mismatches)
	require.Len(t, rep.Audit, 2)
	assert.Equal(t, int64(len(a.want)), rep.Audit[0].Rows+rep.Audit[1].Rows)

	// May 20 with a retention of 60 days: the cut is March 21, so January
	// and February go, March stays.
	now := time.Date(2026, 5, 20, 0, 0, 0, 0, time.UTC)
	cfg.Audit.Retention = 60 * 24 * time.Hour
	w, _ := runWriter(t, cfg, func(w *Writer) { w.audit.now = func() time.Time { return now } })
	_ = w
	require.Eventually(t, func() bool {
		var n int
		err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM audit_dropped_partitions`).Scan(&n)
		return err == nil && n == 2
	}, 30*time.Second, 20*time.Millisecond)
	parts, err := auditPartitions(context.Background(), db.Pool)
	require.NoError(t, err)
	assert.NotContains(t, parts, "audit_events_y2026m01")
	assert.NotContains(t, parts, "audit_events_y2026m02")
	assert.Subset(t, parts, []string{"audit_events_y2026m03", "audit_events_y2026m04", "audit_events_y2026m05", "audit_events_y2026m06"})
	cut := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	a.mu.Lock()
	kept := 0
	for k, r := range a.want {
		if r.decidedAt.Before(cut) {
			delete(a.want, k)
		} else {
			kept++
		}
	}
	a.mu.Unlock()
	require.Positive(t, kept)

	// Late records of a dropped month: read, not written.
	a.produce(time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC), time.Hour, 3)
	a.mu.Lock()
	for k, r := range a.want {
		if r.decidedAt.Before(cut) {
			delete(a.want, k)
		}
	}
	a.mu.Unlock()
	a.waitAuditCaughtUp(db.Pool, 30*time.Second)
	a.assertAudit(db.Pool)
	parts, err = auditPartitions(context.Background(), db.Pool)
	require.NoError(t, err)
	assert.NotContains(t, parts, "audit_events_y2026m01", "a late record recreated a dropped partition")
	rep = verify(t, vcfg)
	require.True(t, rep.OK(), "%v", rep.Mismatches)
	assert.Positive(t, rep.Audit[0].Skipped, "records of dropped months are not expected")

	// A missing, an extra and an altered row.
	ctx := context.Background()
	var p int32
	var o int64
	require.NoError(t, db.Pool.QueryRow(ctx, `DELETE FROM audit_events_y2026m03 WHERE ctid = (SELECT ctid FROM audit_events_y2026m03
		WHERE topic = $1 ORDER BY partition, "offset" LIMIT 1) RETURNING partition, "offset"`,
		testNames.Results).Scan(&p, &o))
	_, err = db.Pool.Exec(ctx, `INSERT INTO audit_events (topic, partition, "offset", kind, command_id, type, sku, reservation_id,
		cart_id, order_id, outcome, reason, message, duplicate, decided_at)
		VALUES ($1, 0, 100000, 'decision', 'ghost', 'reserve', 'SKU-1', '', '', '', 'accepted', '', '', false, '2026-04-01')`,
		testNames.Results)
	require.NoError(t, err)
	var ap int32
	var ao int64
	require.NoError(t, db.Pool.QueryRow(ctx, `UPDATE audit_events SET reason = 'tampered' WHERE (partition, "offset") =
		(SELECT partition, "offset" FROM audit_events WHERE topic = $1 AND decided_at >= '2026-04-01' ORDER BY 1, 2 LIMIT 1)
		AND topic = $1 RETURNING partition, "offset"`, testNames.CartResults).Scan(&ap, &ao))
	rep = verify(t, vcfg)
	assert.Equal(t, 3, rep.AuditMismatches, "%v", rep.Mismatches)
	assert.Equal(t, 3, rep.MismatchCount)
	found := map[string]bool{}
	for _, m := range rep.Mismatches {
		switch {
		case m.Check == CheckAudit && m.Key == testNames.Results && m.Partition == p && m.Offset == o:
			found["missing"] = assert.Contains(t, m.Detail, "no audit row")
		case m.Check == CheckAudit && m.Key == testNames.Results && m.Offset == 100000:
			found["extra"] = assert.Contains(t, m.Detail, "without a result record")
		case m.Check == CheckAudit && m.Key == testNames.CartResults && m.Partition == ap && m.Offset == ao:
			found["altered"] = assert.Equal(t, "reason", m.Field) && assert.Equal(t, `"tampered"`, m.Got)
		}
	}
	assert.Equal(t, map[string]bool{"missing": true, "extra": true, "altered": true}, found, "%v", rep.Mismatches)
}

// TestAuditGap: offsets the results topic deleted before the audit read them
// are recorded as a gap, and the audit resumes at the log start.
func TestAuditGap(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	a := newAuditEnv(t, e)
	db := pgtest.NewDatabase(t)
	cfg := e.sinkConfig(db.DSN)
	cfg.Audit = a.auditConfig()
	a.produce(jan, time.Minute, 20)
	_, stop := runWriter(t, cfg, nil)
	a.waitAuditCaughtUp(db.Pool, 30*time.Second)
	stop()

	a.produce(jan.Add(time.Hour), time.Minute, 20)
	ends := a.ends()[testNames.Results]
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...))
	require.NoError(t, err)
	defer cl.Close()
	var p int32 = -1
	for q, end := range ends {
		if end > storedOffsets(t, db.Pool, testNames.Results)[q] {
			p = q
			break
		}
	}
	require.NotEqual(t, int32(-1), p)
	del := kadm.Offsets{}
	del.AddOffset(testNames.Results, p, ends[p], -1)
	_, err = kadm.NewClient(cl).DeleteRecords(context.Background(), del)
	require.NoError(t, err)
	stored := storedOffsets(t, db.Pool, testNames.Results)[p]

	_, _ = runWriter(t, cfg, nil)
	a.waitAuditCaughtUp(db.Pool, 30*time.Second)
	var from, to int64
	var reason string
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT from_offset, to_offset, reason FROM audit_gaps
		WHERE topic = $1 AND partition = $2`, testNames.Results, p).Scan(&from, &to, &reason))
	assert.Equal(t, [2]int64{stored, ends[p]}, [2]int64{from, to})
	assert.Equal(t, staleBehindLogStart, reason)
}

// TestAuditAdoptedWithItsPartitions: an install of this version without a
// schema (tables in public) moves into the schema with its audit trail, the
// monthly partitions included (SET SCHEMA moves only a partitioned table's
// parent), and the audit resumes there from its stored offsets.
func TestAuditAdoptedWithItsPartitions(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	a := newAuditEnv(t, e)
	db := pgtest.NewDatabase(t)
	cfg := e.sinkConfig(db.DSN)
	cfg.Audit = a.auditConfig()
	cfg.Schema = ""
	a.produce(jan, 24*time.Hour, 30)
	_, stop := runWriter(t, cfg, nil)
	a.waitAuditCaughtUp(db.Pool, 30*time.Second)
	stop()
	before, err := auditPartitions(context.Background(), db.Pool)
	require.NoError(t, err)
	require.Contains(t, before, "audit_events_y2026m02")

	cfg.Schema = DefaultSchema
	_, _ = runWriter(t, cfg, nil)
	a.produce(jan.AddDate(0, 2, 0), time.Hour, 10)
	pool := schemaPool(t, db.DSN, DefaultSchema)
	a.waitAuditCaughtUp(pool, 30*time.Second)
	a.assertAudit(pool)
	assert.NotContains(t, tablesIn(t, db.Pool, "public"), "audit_events_y2026m01", "a partition left behind")
	moved := tablesIn(t, db.Pool, DefaultSchema)
	for _, p := range before {
		assert.Contains(t, moved, p)
	}
}

// TestAuditVerifyAfterTopicRecreated: the results topic is deleted and
// created again, so its offsets start at 0 again, while audit_events keeps the
// rows of the old topic at the same positions. The sink records the gap and
// audits the new records; verify compares the new topic with the rows read
// from it only (clean), and still names an altered row of the new topic.
func TestAuditVerifyAfterTopicRecreated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newKafkaEnv(t, testPartitions)
	a := newAuditEnv(t, e)
	db := pgtest.NewDatabase(t)
	cfg := e.sinkConfig(db.DSN)
	cfg.Audit = a.auditConfig()
	a.produce(jan, time.Minute, 40)
	_, stop := runWriter(t, cfg, nil)
	a.waitAuditCaughtUp(db.Pool, 30*time.Second)
	stop()
	old := storedOffsets(t, db.Pool, testNames.Results)
	resultRows := func() (n int64) {
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE topic = $1`, testNames.Results).Scan(&n))
		return n
	}
	oldRows := resultRows()

	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...))
	require.NoError(t, err)
	defer cl.Close()
	resp, err := kadm.NewClient(cl).DeleteTopics(ctx, testNames.Results)
	require.NoError(t, err)
	require.NoError(t, resp.Error())
	require.NoError(t, e.cluster.CreateTopic(testNames.Results, testPartitions, map[string]string{"cleanup.policy": "delete"}))
	a.prod.Close()
	a.prod = e.newProducer("results-writer-2")
	a.produce(jan.Add(24*time.Hour), time.Minute, 4)
	ends := a.ends()[testNames.Results]
	for p, o := range old {
		require.Greater(t, o, ends[p], "partition %d: the new topic must end before the stored offset, so that the sink sees it was recreated", p)
	}

	_, _ = runWriter(t, cfg, nil)
	require.Eventually(t, func() bool {
		stored := storedOffsets(t, db.Pool, testNames.Results)
		for p := range old {
			if stored[p] != ends[p] {
				return false
			}
		}
		for p, o := range ends {
			if stored[p] != o {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "the audit did not reach the end of the recreated topic")
	var gaps int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_gaps WHERE topic = $1 AND reason = $2`,
		testNames.Results, staleAheadOfLogEnd).Scan(&gaps))
	assert.Equal(t, len(old), gaps, "one gap per partition the old topic had records in")

	vcfg := e.verifyConfig()
	vcfg.Pool, vcfg.Audit, vcfg.AuditRequired = db.Pool, a.auditConfig(), true
	rep := verify(t, vcfg)
	require.True(t, rep.OK(), "%v", rep.Mismatches)
	results := rep.Audit[0]
	require.Equal(t, testNames.Results, results.Topic)
	assert.Positive(t, results.Records)
	assert.Equal(t, results.Records, results.Rows, "the new topic's rows, compared")
	assert.Equal(t, oldRows+results.Rows, resultRows(), "the old topic's rows stay")
	assert.Equal(t, oldRows, results.OtherTopicRows, "the old topic's rows, kept and not compared")
	assert.NotEmpty(t, results.TopicID)
	var unknown int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE topic_id = ''`).Scan(&unknown))
	assert.Zero(t, unknown, "rows without the topic ID they were read from")

	// Rows of the old topic without their ID (written before the sink
	// recorded IDs) at positions the new topic reused: of an earlier topic
	// too, not compared.
	tag, err := db.Pool.Exec(ctx, `UPDATE audit_events a SET topic_id = '' WHERE topic = $1 AND decided_at < $2 AND EXISTS
		(SELECT 1 FROM audit_events n WHERE n.topic = a.topic AND n.partition = a.partition AND n."offset" = a."offset"
		AND n.decided_at >= $2)`, testNames.Results, jan.Add(24*time.Hour))
	require.NoError(t, err)
	require.Positive(t, tag.RowsAffected(), "positions reused by the new topic")
	rep = verify(t, vcfg)
	require.True(t, rep.OK(), "%v", rep.Mismatches)
	assert.Equal(t, oldRows, rep.Audit[0].OtherTopicRows)

	// An altered row of the new topic is still a mismatch.
	var p int32
	var o int64
	require.NoError(t, db.Pool.QueryRow(ctx, `UPDATE audit_events SET outcome = 'tampered' WHERE (topic, partition, "offset", decided_at) =
		(SELECT topic, partition, "offset", decided_at FROM audit_events WHERE topic = $1 AND decided_at >= $2
		ORDER BY partition, "offset" LIMIT 1) RETURNING partition, "offset"`, testNames.Results, jan.Add(24*time.Hour)).Scan(&p, &o))
	rep = verify(t, vcfg)
	require.Equal(t, 1, rep.AuditMismatches, "%v", rep.Mismatches)
	m := rep.Mismatches[0]
	assert.Equal(t, [4]any{CheckAudit, testNames.Results, p, o}, [4]any{m.Check, m.Key, m.Partition, m.Offset})
	assert.Equal(t, "outcome", m.Field)
}
