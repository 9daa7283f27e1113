package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ReplayConfig configures Replay.
type ReplayConfig struct {
	// Config is the sink's configuration (brokers, topic, database, batches).
	Config
	// Progress, if set, is called about every PollInterval with the changelog
	// offsets the snapshot covers and the offsets it must cover.
	Progress func(covered, total int64)
	// PollInterval is how often the stored offsets are read to follow the
	// replay. Default 200ms.
	PollInterval time.Duration
}

// ReplaySummary is the outcome of Replay.
type ReplaySummary struct {
	Topic string
	// Run is the replay_runs id; Resumed is true when Replay continued an
	// interrupted run instead of emptying the tables.
	Run     int64
	Resumed bool
	// Total is the changelog offsets the snapshot covers (start to end, over
	// every partition); Replayed those this call applied.
	Total, Replayed int64
	// End is the changelog end (last stable offset) per partition the replay
	// reached.
	End map[int32]int64
	// Rows in the rebuilt tables.
	StockRows, ReservationRows int64
	Took                       time.Duration
}

// Replay rebuilds the Postgres snapshot from the changelog: it empties the
// stock and reservations tables and the topic's sink_offsets (and
// sink_errors) in one transaction that also records a replay_runs row, runs a
// Writer until its stored offsets reach the changelog end offsets listed at
// the start, and marks the run finished.
//
// An interrupted run (ctx ended, crash) is resumed by the next Replay from
// the stored offsets, without emptying the tables again; a finished run is
// not resumed: a second Replay rebuilds from scratch again, with the same
// result. A Writer running on the same database meanwhile is harmless: its
// next batch finds the stored offsets changed and resumes from them.
func Replay(ctx context.Context, cfg ReplayConfig, opts ...Option) (*ReplaySummary, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Config = cfg.withDefaults()
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	log := o.logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "replay", "topic", cfg.Topic)
	started := time.Now()

	// Kafka first: an unreachable broker must not leave the tables emptied.
	admCl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...), kgo.WithLogger(kafkaLogger{log})},
		o.kafkaOpt...)...)
	if err != nil {
		return nil, fmt.Errorf("create kafka client: %w", err)
	}
	defer admCl.Close()
	bounds, err := listBounds(ctx, kadm.NewClient(admCl), cfg.Topic)
	if err != nil {
		return nil, err
	}

	pool := cfg.Pool
	if pool == nil {
		if pool, err = openPool(ctx, cfg.DSN, cfg.Schema); err != nil {
			return nil, err
		}
		defer pool.Close()
	}
	st := &store{pool: pool, topic: cfg.Topic, schema: cfg.Schema, apply: copyApply}
	mctx, cancel := context.WithTimeout(ctx, pgTimeout)
	_, err = st.migrate(mctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("migrate sink schema: %w", err)
	}
	sum := &ReplaySummary{Topic: cfg.Topic, End: map[int32]int64{}}
	pctx, cancel := context.WithTimeout(ctx, pgTimeout)
	sum.Run, sum.Resumed, err = st.startReplay(pctx)
	cancel()
	if err != nil {
		return nil, err
	}
	if sum.Resumed {
		log.Info("resuming an interrupted replay", "run", sum.Run)
	} else {
		log.Info("replay started: tables emptied", "run", sum.Run)
	}

	end := map[int32]int64{}
	for _, p := range bounds.partitions {
		if bounds.stable[p] > bounds.start[p] {
			end[p] = bounds.stable[p]
			sum.Total += bounds.stable[p] - bounds.start[p]
		}
		sum.End[p] = bounds.stable[p]
	}
	covered := func(stored map[int32]int64) (n int64, done bool) {
		done = true
		for p, e := range end {
			s := stored[p]
			if s < e {
				done = false
			}
			n += max(min(s, e)-bounds.start[p], 0)
		}
		return n, done
	}
	octx, cancel := context.WithTimeout(ctx, pgTimeout)
	stored, err := st.offsets(octx)
	cancel()
	if err != nil {
		return nil, err
	}
	before, done := covered(stored)

	if !done {
		wcfg := cfg.Config
		wcfg.DSN, wcfg.Pool = "", pool
		w, err := New(wcfg, opts...)
		if err != nil {
			return nil, err
		}
		wctx, stop := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- w.Run(wctx) }()
		err = follow(ctx, st, cfg, covered, sum.Total, errc, log)
		stop()
		if rerr := <-errc; err == nil && rerr != nil {
			err = rerr
		}
		w.Close()
		if err != nil {
			return nil, err
		}
	}
	if cfg.Progress != nil {
		cfg.Progress(sum.Total, sum.Total)
	}
	sum.Replayed = sum.Total - before

	fctx, cancel := context.WithTimeout(ctx, pgTimeout)
	defer cancel()
	if err := st.finishReplay(fctx, sum); err != nil {
		return nil, err
	}
	sum.Took = time.Since(started)
	log.Info("replay finished", "run", sum.Run, "records", sum.Total, "stock_rows", sum.StockRows,
		"reservation_rows", sum.ReservationRows, "took", sum.Took.Round(time.Millisecond))
	return sum, nil
}

// follow polls the stored offsets until covered reports done, the Writer
// fails (its error) or ctx ends.
func follow(ctx context.Context, st *store, cfg ReplayConfig, covered func(map[int32]int64) (int64, bool),
	total int64, errc <-chan error, log *slog.Logger) error {
	t := time.NewTicker(cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			if err == nil {
				err = errors.New("sink stopped before the replay finished")
			}
			return fmt.Errorf("replay: %w", err)
		case <-t.C:
		}
		octx, cancel := context.WithTimeout(ctx, pingTimeout)
		stored, err := st.offsets(octx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				log.Debug("read stored offsets", "err", err) // the Writer reports outages
			}
			continue
		}
		n, done := covered(stored)
		if cfg.Progress != nil {
			cfg.Progress(n, total)
		}
		if done {
			return nil
		}
	}
}

// The start of a replay takes topicLock, the lock of the topic's batches:
// replays are serialised with each other and with the batches of running
// sinks.

// startReplay resumes the topic's unfinished replay run, or empties the
// snapshot and records a new run, in one transaction.
func (s *store) startReplay(ctx context.Context) (run int64, resumed bool, err error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("begin replay: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	if _, err := tx.Exec(ctx, topicLock, s.lockName()); err != nil {
		return 0, false, fmt.Errorf("lock topic %s: %w", s.topic, err)
	}
	err = tx.QueryRow(ctx, `UPDATE replay_runs SET resumed_at = now(), resumes = resumes + 1
		WHERE topic = $1 AND finished_at IS NULL RETURNING id`, s.topic).Scan(&run)
	switch {
	case err == nil:
		resumed = true
	case errors.Is(err, pgx.ErrNoRows):
		for _, q := range []string{
			`TRUNCATE stock, reservations`,
			`DELETE FROM sink_offsets WHERE topic = $1`,
			`DELETE FROM sink_errors WHERE topic = $1`,
		} {
			var args []any
			if q[0] == 'D' {
				args = append(args, s.topic)
			}
			if _, err := tx.Exec(ctx, q, args...); err != nil {
				return 0, false, fmt.Errorf("empty the snapshot: %w", err)
			}
		}
		if err := tx.QueryRow(ctx, `INSERT INTO replay_runs (topic) VALUES ($1) RETURNING id`, s.topic).Scan(&run); err != nil {
			return 0, false, fmt.Errorf("record replay run: %w", err)
		}
	default:
		return 0, false, fmt.Errorf("find an unfinished replay run: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, false, fmt.Errorf("commit replay start: %w", err)
	}
	return run, resumed, nil
}

// finishReplay marks the run finished and counts the rows.
func (s *store) finishReplay(ctx context.Context, sum *ReplaySummary) error {
	if _, err := s.pool.Exec(ctx, `UPDATE replay_runs SET finished_at = now(), records = $2
		WHERE id = $1 AND finished_at IS NULL`, sum.Run, sum.Total); err != nil {
		return fmt.Errorf("finish replay run %d: %w", sum.Run, err)
	}
	err := s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM stock), (SELECT count(*) FROM reservations)`).
		Scan(&sum.StockRows, &sum.ReservationRows)
	if err != nil {
		return fmt.Errorf("count rows: %w", err)
	}
	return nil
}
