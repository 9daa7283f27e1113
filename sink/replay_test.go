package sink

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/internal/pgtest"
)

func replay(t *testing.T, cfg ReplayConfig) *ReplaySummary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sum, err := Replay(ctx, cfg, WithKafkaOpts(testKafkaOpts...), WithLogger(testLogger(t)))
	require.NoError(t, err)
	return sum
}

func replayRuns(t *testing.T, db *pgtest.Database) (finished, open int) {
	t.Helper()
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT count(finished_at), count(*) - count(finished_at)
		FROM replay_runs`).Scan(&finished, &open))
	return finished, open
}

// TestReplayRebuildsSnapshot rebuilds the snapshot into a fresh database, into
// the same one twice, and into a database whose sink keeps running.
func TestReplayRebuildsSnapshot(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	g := newGen(seed(t), 20)
	e.produceStream(g, 80)

	// The reference: a sink that ran all along.
	live := pgtest.NewDatabase(t)
	startSink(t, e.sinkConfig(live.DSN))
	waitCaughtUp(t, live.Pool, e, 30*time.Second)
	assertMatchesModel(t, live.Pool, e.model)

	fresh := pgtest.NewDatabase(t)
	var first *ReplaySummary
	for run := range 2 {
		sum := replay(t, ReplayConfig{Config: e.sinkConfig(fresh.DSN)})
		assert.False(t, sum.Resumed, "run %d", run)
		assert.Equal(t, sum.Total, sum.Replayed, "run %d: from scratch", run)
		assertMatchesModel(t, fresh.Pool, e.model)
		_, _, next := e.model.snapshot()
		assert.Equal(t, next, storedOffsets(t, fresh.Pool, e.topic), "run %d: offsets at the end", run)
		var bad int
		require.NoError(t, fresh.Pool.QueryRow(context.Background(), `SELECT count(*) FROM sink_errors`).Scan(&bad))
		assert.Equal(t, e.model.bad, bad, "run %d: sink_errors", run)
		if first == nil {
			first = sum
			assert.Positive(t, sum.Total)
			assert.Positive(t, sum.StockRows)
		} else {
			assert.Equal(t, first.Total, sum.Total)
			assert.Equal(t, first.StockRows, sum.StockRows)
			assert.Equal(t, first.ReservationRows, sum.ReservationRows)
			assert.NotEqual(t, first.Run, sum.Run)
		}
	}
	finished, open := replayRuns(t, fresh)
	assert.Equal(t, 2, finished)
	assert.Zero(t, open)

	// Into the live database, with a corrupted row, while its sink runs: the
	// replay repairs it and the sink carries on from the replayed offsets.
	_, err := live.Pool.Exec(context.Background(), `UPDATE stock SET on_hand = on_hand + 1000`)
	require.NoError(t, err)
	replay(t, ReplayConfig{Config: e.sinkConfig(live.DSN)})
	assertMatchesModel(t, live.Pool, e.model)
	e.produceStream(g, 20)
	waitCaughtUp(t, live.Pool, e, 30*time.Second)
	assertMatchesModel(t, live.Pool, e.model)

	// An empty changelog replays to empty tables.
	empty := newKafkaEnv(t, 2)
	db := pgtest.NewDatabase(t)
	sum := replay(t, ReplayConfig{Config: empty.sinkConfig(db.DSN)})
	assert.Zero(t, sum.Total)
	assert.Zero(t, sum.StockRows)
}

// TestReplayResumes interrupts a replay and runs it again: the second run
// continues the first from the stored offsets instead of emptying the tables.
func TestReplayResumes(t *testing.T) {
	t.Parallel()
	e := newKafkaEnv(t, testPartitions)
	g := newGen(seed(t), 30)
	e.produceStream(g, 150)
	db := pgtest.NewDatabase(t)
	installRegressionCheck(t, db.Pool)

	cfg := ReplayConfig{Config: e.sinkConfig(db.DSN), PollInterval: 2 * time.Millisecond}
	cfg.BatchSize = 4
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var progressed []int64
	cfg.Progress = func(covered, total int64) {
		progressed = append(progressed, covered)
		if covered > 0 && covered < total/2 {
			cancel()
		}
	}
	_, err := Replay(ctx, cfg, WithKafkaOpts(testKafkaOpts...), WithLogger(testLogger(t)))
	require.ErrorIs(t, err, context.Canceled)
	require.NotEmpty(t, progressed)
	finished, open := replayRuns(t, db)
	require.Equal(t, 0, finished)
	require.Equal(t, 1, open, "the interrupted run stays open")
	require.NotEmpty(t, storedOffsets(t, db.Pool, e.topic), "the interrupted run wrote batches")

	cfg.Progress = nil
	sum := replay(t, cfg)
	assert.True(t, sum.Resumed)
	assert.Less(t, sum.Replayed, sum.Total, "resumed from the stored offsets")
	assertMatchesModel(t, db.Pool, e.model)
	assertNoRegressions(t, db.Pool)
	finished, open = replayRuns(t, db)
	assert.Equal(t, 1, finished, "one run, resumed")
	assert.Zero(t, open)

	// Kafka unreachable: nothing is emptied.
	bad := cfg
	bad.Brokers = []string{"127.0.0.1:1"}
	bctx, bcancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer bcancel()
	_, err = Replay(bctx, bad, WithLogger(testLogger(t)))
	require.Error(t, err)
	assertMatchesModel(t, db.Pool, e.model)
}
