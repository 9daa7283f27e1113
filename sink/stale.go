package sink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// A stored position (sink_offsets) is only worth resuming if the changelog
// still holds every record after it. Two things break that, and the Kafka
// client hides both:
//
//   - The log start moved past the stored offset (records deleted by
//     DeleteRecords, by retention while the policy included delete, or a
//     topic recreated). The client would reset to the log start without a
//     word and skip the deleted records, tombstones among them.
//   - The sink was away longer than the changelog's delete.retention.ms:
//     compaction may have removed tombstones written meanwhile (and the
//     records they deleted), while the log start stays where it was (Kafka
//     never moves it on compaction). Resuming would keep the deleted rows
//     forever, and a reservation id reused later would be blocked by the
//     stale row's higher version.
//
// At every session start the sink compares each stored position with the
// changelog (checkPositions) and re-snapshots each partition that cannot be
// resumed: it reads the partition from its log start to its last stable
// offset, and in one Postgres transaction deletes the partition's rows, loads
// the read state and stores the new offset (resnapshot). Readers never see the
// partition half loaded, and a crash leaves the old rows and offset, so the
// next start re-snapshots again. If the rows of the partition cannot be told
// apart (a record on it whose SKU belongs to another partition), the sink
// refuses to start instead and says to run `reservations replay --to
// postgres`.
//
// While running, the sink records when each stored offset was current
// (sink_offsets.current_at, see mark and migration 0004), and ends its session
// when the Kafka client reports an offset out of range (it never resets by
// itself: NoResetOffset) or when a partition it lags behind on has not been
// current for longer than the limit, so that the next session's check decides.
// docs/SINK_STALE_OFFSETS.md explains the design for operators.

// Reasons a stored position cannot be resumed: the values of the reason label
// of reservations_sink_stale_partitions_total.
const (
	staleBehindLogStart = "behind_log_start"
	staleAheadOfLogEnd  = "ahead_of_log_end"
	staleAway           = "away"
)

var staleReasons = [...]string{staleBehindLogStart, staleAheadOfLogEnd, staleAway}

// staleFraction is how much of the changelog's delete.retention.ms a stored
// offset may have gone without being current before the partition is
// re-snapshotted instead of resumed, as processor.StaleStoreFraction for the
// processor's stores. The other half is the margin for catching up: a
// tombstone written just after the offset was current stays readable for at
// least delete.retention.ms, and clocks of sink and brokers may differ.
const staleFraction = 0.5

// resnapshotTimeout bounds the Postgres transaction of one re-snapshot: a
// whole partition, far more than one batch.
const resnapshotTimeout = 10 * time.Minute

// awayTooLong reports whether a stored offset last current at seen (zero:
// unknown) is too old at now for a changelog with delete.retention.ms
// retention.
func awayTooLong(seen, now time.Time, retention time.Duration) bool {
	return seen.IsZero() || now.Sub(seen) > time.Duration(float64(retention)*staleFraction)
}

// staleness describes a partition whose stored position cannot be resumed.
type staleness struct {
	partition          int32
	reason             string // one of staleReasons
	stored             int64  // stored next offset
	start, stable, end int64  // the partition's log bounds when checked
	seen               time.Time
	away               time.Duration // since seen (0 when unknown)
	retention          time.Duration // the changelog's delete.retention.ms
}

// checkPartition returns what makes the stored position of partition p
// unusable, or nil. A partition with nothing new to read (stored at the last
// stable offset) is never stale by time: nothing it could miss was written.
func checkPartition(p int32, stored int64, seen, now time.Time, b logBounds, retention time.Duration) *staleness {
	s := &staleness{partition: p, stored: stored, start: b.start[p], stable: b.stable[p], end: b.end[p],
		seen: seen, retention: retention}
	if !seen.IsZero() {
		s.away = now.Sub(seen)
	}
	switch {
	case stored < s.start:
		s.reason = staleBehindLogStart
	case stored > s.end:
		s.reason = staleAheadOfLogEnd
	case stored < s.stable && awayTooLong(seen, now, retention):
		s.reason = staleAway
	default:
		return nil
	}
	return s
}

// String says what is wrong, with the numbers an operator needs.
func (s *staleness) String() string {
	switch s.reason {
	case staleBehindLogStart:
		return fmt.Sprintf("stored offset %d is below the log start %d: offsets %d to %d were deleted before the sink read them "+
			"(the tombstones among them are lost)", s.stored, s.start, s.stored, s.start-1)
	case staleAheadOfLogEnd:
		return fmt.Sprintf("stored offset %d is beyond the log end %d: the topic was recreated or truncated", s.stored, s.end)
	case staleAway:
		limit := time.Duration(float64(s.retention) * staleFraction)
		if s.seen.IsZero() {
			return fmt.Sprintf("stored offset %d (log end %d) was never recorded as current, so the sink may have been away longer than %s "+
				"(half the changelog's delete.retention.ms %s): tombstones written since may have been compacted away",
				s.stored, s.stable, limit, s.retention)
		}
		return fmt.Sprintf("the sink was away %s (stored offset %d, log end %d, last current at %s), longer than %s "+
			"(half the changelog's delete.retention.ms %s): tombstones written since may have been compacted away",
			roundAway(s.away), s.stored, s.stable, s.seen.UTC().Format(time.RFC3339Nano), limit, s.retention)
	}
	return s.reason
}

// roundAway rounds a time away for people: to the second, below a minute to
// the millisecond.
func roundAway(d time.Duration) time.Duration {
	if d < time.Minute {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

// kafkaError is a Kafka failure that ends a session (the next one retries),
// as opposed to a Postgres failure.
type kafkaError struct{ err error }

func (e *kafkaError) Error() string { return e.err.Error() }
func (e *kafkaError) Unwrap() error { return e.err }

// staleError ends a session whose position on a partition cannot be trusted
// any more; the next session's checkPositions decides what to do.
type staleError struct {
	partition int32
	why       string
}

func (e *staleError) Error() string {
	return fmt.Sprintf("changelog partition %d: %s", e.partition, e.why)
}

// checkPositions compares the stored positions (pos, seen) with the
// changelog and re-snapshots each partition whose position cannot be
// resumed, updating pos and seen. It returns the changelog's
// delete.retention.ms, or known false when the topic does not exist yet (then
// nothing is stored that could be checked against it: a partition that
// appears later is read with NoResetOffset, and a position it does not hold
// ends the session).
func (w *Writer) checkPositions(ctx context.Context, adm *kadm.Client, pos map[int32]int64,
	seen map[int32]time.Time) (retention time.Duration, known bool, err error) {
	at := time.Now() // before the listing: what is below the stable offsets was committed by then
	bounds, err := listBounds(ctx, adm, w.cfg.Topic)
	if errors.Is(err, ErrNoTopic) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, &kafkaError{err}
	}
	rctx, cancel := context.WithTimeout(ctx, kafkaTimeout)
	retention, err = topics.ChangelogDeleteRetention(rctx, adm, w.cfg.Topic)
	cancel()
	switch {
	case errors.Is(err, topics.ErrLayout):
		// A changelog that deletes by time loses entities of idle SKUs: a
		// re-snapshot would delete their rows. The processor refuses it too.
		return 0, false, &fatalError{fmt.Errorf("changelog %s: %w", w.cfg.Topic, err)}
	case err != nil:
		return 0, false, &kafkaError{err}
	}
	current := make(map[int32]int64) // partitions with nothing to read: current at at
	for _, p := range bounds.partitions {
		stored, ok := pos[p]
		if !ok {
			continue // never written: read from the log start, as a replay does
		}
		s := checkPartition(p, stored, seen[p], at, bounds, retention)
		if s == nil {
			if stored >= bounds.stable[p] {
				current[p] = bounds.stable[p]
			}
			continue
		}
		w.metrics.stale.WithLabelValues(s.reason).Inc()
		w.log.Warn("changelog partition cannot be resumed: re-snapshotting it from the log start",
			"partition", p, "reason", s.reason, "detail", s.String(), "stored_offset", stored,
			"log_start", s.start, "log_end", s.stable, "away", roundAway(s.away), "delete_retention", retention)
		if err := w.resnapshot(ctx, bounds, s, at); err != nil {
			return 0, false, err
		}
		pos[p], seen[p] = bounds.stable[p], at
	}
	// Recorded now, not at the first mark: records may arrive before it, and
	// an old current_at would then make the partition look stale.
	if len(current) > 0 {
		tctx, cancel := context.WithTimeout(ctx, pgTimeout)
		err := w.store.touch(tctx, current, at)
		cancel()
		if err != nil {
			return 0, false, err
		}
		for p := range current {
			if at.After(seen[p]) {
				seen[p] = at
			}
		}
	}
	return retention, true, nil
}

// resnapshot rebuilds the rows of partition s.partition from the changelog:
// it reads the partition from its log start to the stable offset of bounds
// (as Replay and Verify read the log), then, in one transaction that first
// checks the stored offset is still s.stored, deletes the partition's rows,
// applies what it read and stores the stable offset, current at at.
func (w *Writer) resnapshot(ctx context.Context, bounds logBounds, s *staleness, at time.Time) error {
	started := time.Now()
	p, n := s.partition, int32(len(bounds.partitions))
	b := newBatch()
	kopts := append([]kgo.Opt{kgo.SeedBrokers(w.cfg.Brokers...), kgo.WithLogger(kafkaLogger{w.log})}, w.kopts...)
	err := readLog(ctx, kopts, w.cfg.Topic, map[int32]int64{p: bounds.start[p]}, map[int32]int64{p: bounds.stable[p]},
		func(r *kgo.Record) error {
			b.add(r.Partition, r.Offset, r.Key, r.Value)
			return nil
		}, nil)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &kafkaError{fmt.Errorf("re-snapshot partition %d: read the changelog: %w", p, err)}
	}
	// Up to the stable offset, past the markers after the last data record.
	b.next[p] = bounds.stable[p]
	if key, owner, ok := b.foreign(p, n); ok {
		return &fatalError{fmt.Errorf("changelog %s partition %d cannot be resumed: %s; "+
			"and the sink cannot re-snapshot it alone: its record %q belongs to partition %d by its SKU, not %d "+
			"(the partition count changed, or the changelog was not written by the processor), so the Postgres rows "+
			"of partition %d cannot be told apart. Fix: run `reservations replay --to postgres` to rebuild the "+
			"whole snapshot, then start the sink again",
			w.cfg.Topic, p, s, key, owner, p, p)}
	}

	var delStock, delRes int64
	wctx, cancel := context.WithTimeout(ctx, resnapshotTimeout)
	rows, err := w.store.write(wctx, b, map[int32]int64{p: s.stored}, map[int32]time.Time{p: at},
		func(ctx context.Context, tx pgx.Tx) error {
			var err error
			delStock, delRes, err = clearPartition(ctx, tx, p, n)
			return err
		})
	cancel()
	if err != nil {
		return err
	}
	rows.stockDeleted += delStock
	rows.reservationsDeleted += delRes
	w.metrics.committed(b, rows)
	for _, r := range b.bad {
		w.log.Warn("skipped undecodable changelog record", "partition", r.partition, "offset", r.offset, "err", r.err)
	}
	w.log.Info("changelog partition re-snapshotted", "partition", p, "from", bounds.start[p], "to", bounds.stable[p],
		"records", b.records, "rows_deleted", delStock+delRes,
		"rows_loaded", rows.stockUpserted+rows.reservationsUpserted, "took", time.Since(started).Round(time.Millisecond))
	return nil
}

// foreign returns the key of an entity of b whose SKU belongs to another
// partition than p of n, and that partition; ok is false when every entity
// belongs to p. Reservation tombstones are not checked (their key does not
// tell the SKU); they delete nothing a re-snapshot has not deleted already.
func (b *batch) foreign(p, n int32) (key string, owner int32, ok bool) {
	for sku := range b.stock {
		if q := topics.Partition([]byte(sku), n); q != p {
			return schemas.StockKey(sku), q, true
		}
	}
	for k, op := range b.reservations {
		if op.put == nil {
			continue
		}
		if q := topics.Partition([]byte(op.put.sku), n); q != p {
			return k, q, true
		}
	}
	return "", 0, false
}
