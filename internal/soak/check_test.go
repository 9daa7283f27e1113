package soak

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/internal/kafkatest"
	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// checker reads what the pipeline wrote once it is drained and stopped and
// checks it against the ledger of what was sent.
type checker struct {
	brokers []string
	names   topics.Names
	led     *ledger
	rs      *results
	rep     *report
	pool    *pgxpool.Pool
	stopped time.Time      // when the processors were stopped
	walk    *changelogWalk // the mirror's, or nil: read the changelog
	walked  *changelogWalk // the walk the checks used

	// Figures for the report.
	changelogRecords int
	dlqRecords       int
	forwarded        int
	pgRows           int
	carts            cartFigures
}

// endOffsets lists the end offsets of topic.
func endOffsets(ctx context.Context, cl *kgo.Client, topic string) (map[int32]int64, error) {
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list end offsets of %s: %w", topic, err)
	}
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, nil
}

// readTopic reads topic (read_committed) from the start to the end offsets it
// has when called and calls fn for every data record, in offset order per
// partition. Transaction markers are fetched (KeepControlRecords) so that a
// partition ending in one is seen to its end, and skipped.
//
// The fetch sizes keep the response limit out of reach: kfake leaves out the
// aborted transactions of a partition whose data is cut by the response's
// MaxBytes (kfake 01_fetch.go, "break full"), and the client then returns
// that partition's aborted records as committed. The response can hold every
// partition's share plus one batch each (up to 1 MiB) that did not fit it.
// (The results reader's defaults, 1 MiB of 50 MiB, are safe too.)
func readTopic(ctx context.Context, brokers []string, topic string, fn func(*kgo.Record)) (map[int32]int64, error) {
	const perPartition = 2 << 20
	cl, err := kgo.NewClient(append(kafkatest.ClientOpts(), kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), kgo.FetchMaxPartitionBytes(perPartition), kgo.FetchMaxBytes(partitions*(perPartition+1<<20)))...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ends, err := endOffsets(ctx, cl, topic)
	if err != nil {
		return nil, err
	}
	seen := map[int32]int64{}
	for !reached(seen, ends) {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read %s: stalled at %v of %v: %w", topic, seen, ends, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= ends[r.Partition] {
				return
			}
			seen[r.Partition] = r.Offset
			if !r.Attrs.IsControl() {
				fn(r)
			}
		})
	}
	return ends, nil
}

// reached reports whether every partition with records was read to its end.
func reached(seen, ends map[int32]int64) bool {
	for p, e := range ends {
		if s, ok := seen[p]; e > 0 && (!ok || s < e-1) {
			return false
		}
	}
	return true
}

func (c *checker) run(ctx context.Context) error {
	final, err := c.changelog(ctx)
	if err != nil {
		return err
	}
	c.stock(final)
	c.agree(final)
	c.decisions(final)
	if err := c.deadLetters(ctx); err != nil {
		return err
	}
	if err := c.forwards(ctx); err != nil {
		return err
	}
	return c.postgres(ctx, final)
}

// changelogState is what the walk of the changelog leaves: the latest
// stock/ and reservation/ entities, and the records per command/ key.
type changelogState struct {
	entities map[string]processor.Change
	commands map[string]int
}

// changelog takes the walk of the mirror, which read the changelog while the
// soak ran (the changelog was compacted meanwhile: reading it now would miss
// records), or, without a mirror, reads the whole changelog through a new walk.
func (c *checker) changelog(ctx context.Context) (*changelogState, error) {
	w := c.walk
	if w == nil {
		w = newChangelogWalk(c.rep)
		if _, err := readTopic(ctx, c.brokers, c.names.Changelog, w.add); err != nil {
			return nil, err
		}
	}
	c.walked = w
	c.changelogRecords = w.records
	c.rep.check(invTerminal, "%d changelog records", w.records)
	c.rep.check(invTombstone, "%d tombstones", w.tombstones)
	return w.st, nil
}

// changelogWalk checks every version of every entity in offset order:
// versions go up (by one per change; a transaction writes an entity once,
// with its last version, so a record may skip the versions of the changes
// before it in its transaction: the results topic, checked by the other
// invariants, holds every decision), stock is consistent, a reservation in a terminal
// state never changes again, and a tombstone deletes a live command or
// terminal reservation past the dedupe window. An entity deleted twice was
// kept by a store that missed its tombstone (a stale store replaying only its
// tail after compaction removed the tombstone: MEMBERSHIP.md rule 3), and its
// owner's sweep deleted it again.
type changelogWalk struct {
	rep        *report
	window     time.Duration // the processors' dedupe window
	st         *changelogState
	version    map[string]int64
	status     map[string]string         // of every reservation key; kept after its tombstone
	decidedAt  map[string]schemas.Millis // updated_at of every live command/ key
	orders     map[string]string         // order_id of consumed reservations of coordinated carts
	records    int
	tombstones int
	deleted    map[string]string // key -> where and by whom its last tombstone was written (for the report)
}

func newChangelogWalk(rep *report) *changelogWalk {
	return &changelogWalk{rep: rep, window: dedupeWindow,
		st:      &changelogState{entities: map[string]processor.Change{}, commands: map[string]int{}},
		version: map[string]int64{}, status: map[string]string{}, decidedAt: map[string]schemas.Millis{}, orders: map[string]string{}, deleted: map[string]string{}}
}

func (w *changelogWalk) add(r *kgo.Record) {
	w.records++
	key := string(r.Key)
	at := fmt.Sprintf("%s at %d/%d", key, r.Partition, r.Offset)
	ch, err := processor.DecodeChange(key, r.Value)
	if err != nil {
		w.rep.violate(invTerminal, "%s: %v", at, err)
		return
	}
	switch {
	case ch.Command != nil:
		w.st.commands[strings.TrimPrefix(key, schemas.CommandPrefix)]++
		w.decidedAt[key] = ch.Command.UpdatedAt
	case ch.Stock != nil:
		s := ch.Stock
		if s.Version <= w.version[key] || s.Available != s.OnHand-s.Reserved || s.OnHand < 0 || schemas.StockKey(s.SKU) != key {
			w.rep.violate(invStock, "%s: version %d after %d, stock %+v", at, s.Version, w.version[key], *s)
		}
		w.version[key] = s.Version
		w.st.entities[key] = ch
	case ch.Reservation != nil:
		res := ch.Reservation
		if prev := w.status[key]; prev != "" && prev != schemas.StatusActive {
			w.rep.violate(invTerminal, "%s: %s reservation changed by event %s (command %q) to %s",
				at, prev, res.Event, res.CommandID, res.Reservation.Status)
		}
		if res.Version <= w.version[key] {
			w.rep.violate(invTerminal, "%s: version %d after %d", at, res.Version, w.version[key])
		}
		if schemas.ReservationKey(res.Reservation.SKU, res.Reservation.ReservationID) != key || res.Reservation.Quantity < 1 {
			w.rep.violate(invTerminal, "%s: reservation %+v does not belong to its key", at, res.Reservation)
		}
		w.version[key], w.status[key] = res.Version, res.Reservation.Status
		if res.Reservation.Status == schemas.StatusConsumed && strings.HasPrefix(res.Reservation.CartID, cartPrefix) {
			w.orders[key] = res.Reservation.OrderID
		}
		w.st.entities[key] = ch
	default:
		w.tombstone(r, key, at)
	}
}

// tombstone checks a tombstone: only a live command/ entry or a live terminal
// reservation gets one, once its dedupe window passed (the sweep deletes what
// it decided or ended at least a window ago; 1 s of slack for the clock).
func (w *changelogWalk) tombstone(r *kgo.Record, key, at string) {
	w.tombstones++
	defer func() {
		w.deleted[key] = fmt.Sprintf("%d/%d (producer %d epoch %d, at %s)", r.Partition, r.Offset, r.ProducerID, r.ProducerEpoch, r.Timestamp.Format("15:04:05.000"))
	}()
	this := fmt.Sprintf("producer %d epoch %d, at %s", r.ProducerID, r.ProducerEpoch, r.Timestamp.Format("15:04:05.000"))
	ts := schemas.MillisOf(r.Timestamp)
	early := func(updated schemas.Millis) bool {
		return ts < updated+schemas.Millis(w.window.Milliseconds())-1000
	}
	switch schemas.KeyKind(key) {
	case schemas.CommandPrefix:
		decided, live := w.decidedAt[key]
		switch {
		case !live:
			w.rep.violate(invRetomb, "%s (%s): tombstone of a command that is not in the log (deleted before at %s, or never decided): a store kept what the changelog deleted", at, this, w.deleted[key])
		case early(decided):
			w.rep.violate(invTombstone, "%s: tombstone at %s, decided at %s: within the dedupe window", at, ts, decided)
		}
		delete(w.decidedAt, key)
	case schemas.ReservationPrefix:
		e, live := w.st.entities[key]
		switch {
		case !live:
			w.rep.violate(invRetomb, "%s (%s): tombstone of a reservation that is not in the log (status %q before, deleted at %s): a store kept what the changelog deleted", at, this, w.status[key], w.deleted[key])
		case e.Reservation.Reservation.Status == schemas.StatusActive:
			w.rep.violate(invTombstone, "%s: tombstone of an active reservation", at)
		case early(e.Reservation.UpdatedAt):
			w.rep.violate(invTombstone, "%s: tombstone at %s, %s at %s: within the dedupe window", at, ts, e.Reservation.Reservation.Status, e.Reservation.UpdatedAt)
		}
		delete(w.st.entities, key)
	default:
		w.rep.violate(invTombstone, "%s: tombstone of a %q entity", at, schemas.KeyKind(key))
		delete(w.st.entities, key)
	}
}

// stock checks the final state: reserved == sum(active) per SKU, and no active
// hold is past its expires_at (the processors ran their timers until stopped).
func (c *checker) stock(st *changelogState) {
	active := map[string]int64{}
	holds, overdue := 0, 0
	for key, ch := range st.entities {
		r := ch.Reservation
		if r == nil || r.Reservation.Status != schemas.StatusActive {
			continue
		}
		holds++
		active[r.Reservation.SKU] += r.Reservation.Quantity
		if _, ok := st.entities[schemas.StockKey(r.Reservation.SKU)]; !ok {
			c.rep.violate(invStock, "active reservation %s of a SKU without stock", key)
		}
		if r.Reservation.ExpiresAt.Time().Before(c.stopped.Add(-2 * time.Second)) {
			overdue++
			c.rep.violate(invExpired, "%s still active, expires_at %s, processors stopped at %s",
				key, r.Reservation.ExpiresAt, c.stopped.UTC().Format(schemas.TimeLayout))
		}
	}
	skus := 0
	for key, ch := range st.entities {
		if s := ch.Stock; s != nil {
			skus++
			if s.Reserved != active[s.SKU] {
				c.rep.violate(invStock, "%s: reserved %d, active reservations hold %d", key, s.Reserved, active[s.SKU])
			}
		}
	}
	c.rep.check(invStock, "%d SKUs, %d active holds", skus, holds)
	c.rep.check(invExpired, "%d active holds at the end", holds)
}

// agree compares the final state the results describe (the last stock of
// every SKU, the active holds) with the changelog's: a result committed without
// its changelog records, or the reverse, shows here.
func (c *checker) agree(st *changelogState) {
	active := 0
	for key, ch := range st.entities {
		switch {
		case ch.Stock != nil:
			v, ok := c.rs.views[ch.Stock.SKU]
			if w := ch.Stock.View(); !ok || v != *w {
				c.rep.violate(invAgree, "%s: changelog stock %+v, results say %+v", key, *w, v)
			}
		case ch.Reservation != nil && ch.Reservation.Reservation.Status == schemas.StatusActive:
			active++
			r := ch.Reservation.Reservation
			rkey := r.SKU + "/" + r.ReservationID
			exp, ok := c.rs.active[rkey]
			if !ok || exp != r.ExpiresAt || c.rs.qty[rkey] != r.Quantity {
				c.rep.violate(invAgree, "%s: active in the changelog (quantity %d, expires %s), results say active %v (quantity %d, expires %s)",
					key, r.Quantity, r.ExpiresAt, ok, c.rs.qty[rkey], exp)
			}
		}
	}
	if active != len(c.rs.active) {
		c.rep.violate(invAgree, "%d active holds in the changelog, %d according to the results", active, len(c.rs.active))
	}
	c.rep.check(invAgree, "%d SKUs, %d active holds", len(c.rs.views), active)
}

// decisions checks every command id sent: exactly one decision (and one
// command/ record in the changelog), as many results as sends, invalid
// commands rejected with the right reason.
func (c *checker) decisions(st *changelogState) {
	c.led.mu.Lock()
	defer c.led.mu.Unlock()
	c.rs.mu.Lock()
	defer c.rs.mu.Unlock()
	ids, invalid := 0, 0
	for id, sc := range c.led.cmds {
		if sc.attempts == 0 {
			continue
		}
		ids++
		r := c.rs.byID[id]
		switch {
		case r == nil || r.decisive == 0:
			if sc.acked > 0 {
				c.rep.violate(invOnce, "command %s (%s) sent %d times, never decided", id, sc.typ, sc.acked)
			}
			continue
		case r.decisive+r.dups < sc.acked || r.decisive+r.dups > sc.attempts:
			c.rep.violate(invOnce, "command %s: %d results for %d acknowledged sends (%d attempts)",
				id, r.decisive+r.dups, sc.acked, sc.attempts)
		}
		if n := st.commands[id]; n != 1 {
			c.rep.violate(invOnce, "command %s: %d command/ records in the changelog, want 1", id, n)
		}
		if sc.reason != "" {
			invalid++
			if r.outcome != schemas.OutcomeRejected || r.reason != sc.reason {
				c.rep.violate(invInvalid, "command %s: %s/%s, want rejected/%s", id, r.outcome, r.reason, sc.reason)
			}
		}
	}
	lines := 0
	for id := range c.rs.lines { // per-SKU commands of cart sagas: the coordinator sent them
		lines++
		n := 0
		if r := c.rs.byID[id]; r != nil {
			n = r.decisive
		}
		if n != 1 {
			c.rep.violate(invOnce, "line command %s of a cart saga: %d decisions, want 1", id, n)
		}
		if n := st.commands[id]; n != 1 {
			c.rep.violate(invOnce, "line command %s: %d command/ records in the changelog, want 1", id, n)
		}
	}
	for id := range st.commands {
		if _, ok := c.led.cmds[id]; !ok && !c.rs.lines[id] {
			c.rep.violate(invOnce, "command/%s in the changelog was never sent", id)
		}
	}
	c.rep.check(invOnce, "%d command ids, %d line commands of cart sagas", ids, lines)
	c.rep.check(invInvalid, "%d invalid commands", invalid)
}

// deadLetters checks the DLQ: every malformed record exactly once, unchanged,
// nothing else; a keyed one also got exactly one result.
func (c *checker) deadLetters(ctx context.Context) error {
	got := map[pos]int{}
	same := map[pos]uint64{}
	_, err := readTopic(ctx, c.brokers, c.names.DLQ, func(r *kgo.Record) {
		c.dlqRecords++
		hs := headers(r)
		p, _ := strconv.ParseInt(hs[processor.HeaderSourcePart], 10, 32)
		o, err := strconv.ParseInt(hs[processor.HeaderSourceOffset], 10, 64)
		if err != nil || hs[processor.HeaderSourceTopic] != c.names.Commands || hs[processor.HeaderError] == "" {
			c.rep.violate(invDLQ, "DLQ record %d/%d has headers %v", r.Partition, r.Offset, hs)
			return
		}
		at := pos{int32(p), o}
		got[at]++
		same[at] = hash(r.Value)
	})
	if err != nil {
		return err
	}
	c.led.mu.Lock()
	defer c.led.mu.Unlock()
	c.rs.mu.Lock()
	defer c.rs.mu.Unlock()
	keyed := map[pos]bool{}
	for _, d := range c.led.dead {
		switch {
		case got[d.at] != 1:
			c.rep.violate(invDLQ, "malformed record %d/%d: %d DLQ records, want 1", d.at.p, d.at.o, got[d.at])
		case same[d.at] != d.hash:
			c.rep.violate(invDLQ, "malformed record %d/%d: DLQ value differs from the record", d.at.p, d.at.o)
		}
		delete(got, d.at)
		if d.keyed {
			keyed[d.at] = true
			if n := c.rs.dead[d.at]; n != 1 {
				c.rep.violate(invDLQ, "malformed record %d/%d with a SKU key: %d invalid_command results, want 1", d.at.p, d.at.o, n)
			}
		}
	}
	for at := range got {
		c.rep.violate(invDLQ, "DLQ record of %d/%d: no malformed record was sent there", at.p, at.o)
	}
	for at, n := range c.rs.dead {
		if !keyed[at] {
			c.rep.violate(invDLQ, "%d results with an unknown command id for %d/%d", n, at.p, at.o)
		}
	}
	c.rep.check(invDLQ, "%d malformed records, %d with a SKU key", len(c.led.dead), len(keyed))
	return nil
}

// forwards checks that every command sent to a partition its key does not
// hash to was forwarded exactly once (header forwarded_from "p/o"), and
// nothing else was.
func (c *checker) forwards(ctx context.Context) error {
	got := map[pos]int{}
	_, err := readTopic(ctx, c.brokers, c.names.Commands, func(r *kgo.Record) {
		from, ok := headers(r)[processor.HeaderForwardedFrom]
		if !ok {
			return
		}
		c.forwarded++
		ps, offs, _ := strings.Cut(from, "/")
		p, err1 := strconv.ParseInt(ps, 10, 32)
		o, err2 := strconv.ParseInt(offs, 10, 64)
		if err1 != nil || err2 != nil {
			c.rep.violate(invForward, "forwarded record %d/%d: header %q", r.Partition, r.Offset, from)
			return
		}
		got[pos{int32(p), o}]++
		if want := topics.Partition(r.Key, partitions); r.Partition != want {
			c.rep.violate(invForward, "record %s forwarded to partition %d, its key hashes to %d", from, r.Partition, want)
		}
	})
	if err != nil {
		return err
	}
	c.led.mu.Lock()
	defer c.led.mu.Unlock()
	for at := range c.led.misrouted {
		if got[at] != 1 {
			c.rep.violate(invForward, "misrouted command %d/%d forwarded %d times", at.p, at.o, got[at])
		}
		delete(got, at)
	}
	for at, n := range got {
		c.rep.violate(invForward, "%d/%d forwarded %d times, but it was not misrouted", at.p, at.o, n)
	}
	c.rep.check(invForward, "%d misrouted", len(c.led.misrouted))
	return nil
}

func headers(r *kgo.Record) map[string]string {
	hs := make(map[string]string, len(r.Headers))
	for _, h := range r.Headers {
		hs[h.Key] = string(h.Value)
	}
	return hs
}

// postgres waits for the sink to store the changelog end offsets, then
// compares the stock and reservations tables with the changelog's state.
func (c *checker) postgres(ctx context.Context, st *changelogState) error {
	cl, err := kgo.NewClient(append(kafkatest.ClientOpts(), kgo.SeedBrokers(c.brokers...))...)
	if err != nil {
		return err
	}
	ends, err := endOffsets(ctx, cl, c.names.Changelog)
	cl.Close()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		behind, err := sinkBehind(ctx, c.pool, c.names.Changelog, ends)
		if err == nil && behind == "" {
			break
		}
		if time.Now().After(deadline) {
			c.rep.violate(invPostgres, "the sink did not reach the changelog end within 90 s: %s (err %v)", behind, err)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	want := map[string]string{}
	for key, ch := range st.entities {
		switch {
		case ch.Stock != nil:
			s := ch.Stock
			want[key] = row(s.SKU, s.OnHand, s.Reserved, s.Available, optInt(s.LowStockThreshold), s.Version, s.Event, s.CommandID, s.UpdatedAt)
		case ch.Reservation != nil:
			r := ch.Reservation
			v := r.Reservation
			want[key] = row(v.SKU, v.ReservationID, v.Quantity, v.Status, v.ExpiresAt, v.Extensions, v.CartID, v.OrderID,
				v.StoreID, r.Version, r.Event, r.CommandID, r.UpdatedAt)
		}
	}
	got := map[string]string{}
	rows, _ := c.pool.Query(ctx, `SELECT sku, on_hand, reserved, available, low_stock_threshold, version, event,
		command_id, updated_at FROM stock`)
	var (
		sku, event, cmd                     string
		onHand, reserved, available, ver    int64
		threshold                           *int64
		updated, expires                    *time.Time
		key, id, status, cart, order, store string
		qty, ext                            int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&sku, &onHand, &reserved, &available, &threshold, &ver, &event, &cmd, &updated}, func() error {
		got[schemas.StockKey(sku)] = row(sku, onHand, reserved, available, optInt(threshold), ver, event, cmd, millis(updated))
		return nil
	}); err != nil {
		return fmt.Errorf("read stock: %w", err)
	}
	rows, _ = c.pool.Query(ctx, `SELECT changelog_key, sku, reservation_id, quantity, status, expires_at, extensions,
		cart_id, order_id, store_id, version, event, command_id, updated_at FROM reservations`)
	if _, err := pgx.ForEachRow(rows, []any{&key, &sku, &id, &qty, &status, &expires, &ext, &cart, &order, &store, &ver, &event, &cmd, &updated}, func() error {
		got[key] = row(sku, id, qty, status, millis(expires), ext, cart, order, store, ver, event, cmd, millis(updated))
		return nil
	}); err != nil {
		return fmt.Errorf("read reservations: %w", err)
	}
	c.pgRows = len(got)
	for k, w := range want {
		if g, ok := got[k]; !ok {
			c.rep.violate(invPostgres, "%s: no row, changelog has %s", k, w)
		} else if g != w {
			c.rep.violate(invPostgres, "%s: row %s, changelog has %s", k, g, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			c.rep.violate(invPostgres, "%s: row %s not in the changelog", k, g)
		}
	}
	c.rep.check(invPostgres, "%d rows", len(got))
	return nil
}

// sinkBehind describes the partitions of topic whose offset the sink stored is
// below end ("" when none).
func sinkBehind(ctx context.Context, pool *pgxpool.Pool, topic string, ends map[int32]int64) (string, error) {
	rows, _ := pool.Query(ctx, `SELECT partition, next_offset FROM sink_offsets WHERE topic = $1`, topic)
	stored := map[int32]int64{}
	var p int32
	var o int64
	if _, err := pgx.ForEachRow(rows, []any{&p, &o}, func() error {
		stored[p] = o
		return nil
	}); err != nil {
		return "", err
	}
	var behind []string
	for p, e := range ends {
		if e > 0 && stored[p] < e {
			behind = append(behind, fmt.Sprintf("partition %d at %d of %d", p, stored[p], e))
		}
	}
	return strings.Join(behind, ", "), nil
}

// row formats the fields of a row (or of the entity it must equal) for comparison.
func row(fields ...any) string {
	parts := make([]string, len(fields))
	for i, f := range fields {
		parts[i] = fmt.Sprint(f)
	}
	return strings.Join(parts, "|")
}

func optInt(p *int64) string {
	if p == nil {
		return "null"
	}
	return strconv.FormatInt(*p, 10)
}

func millis(t *time.Time) schemas.Millis {
	if t == nil {
		return 0
	}
	return schemas.MillisOf(*t)
}
