package processor_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/reservations/reservations/internal/kafkatest"
	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/statestore"
)

// shiftedClock is a clock a test can move forward.
type shiftedClock struct{ d atomic.Int64 }

func (c *shiftedClock) now() time.Time      { return time.Now().Add(time.Duration(c.d.Load())) }
func (c *shiftedClock) add(d time.Duration) { c.d.Add(int64(d)) }

// A store that comes back after its partition was owned elsewhere and the
// changelog was compacted meanwhile must not resurrect what the other owner
// deleted: A holds h1 and stops; B releases h1 and its sweep tombstones it (B's
// clock a day ahead); compaction removes the tombstone (delete.retention.ms=0);
// A restarts on its old folder. Its store is older than half the changelog's
// delete.retention.ms, so it is rebuilt in full and h1 stays gone.
//
// Failed on the old code: A replayed only its tail, which no longer had the
// tombstone; h1 came back, expired again, and stock went to reserved=-3.
//
// kfake moves the log start when compaction removes the first records (Kafka
// never does), and a store behind the log start is rebuilt in full anyway,
// which would hide the bug. So the partition keeps one record of A's first
// batch alive (stock/Y is never written again) and the test asserts that the
// log start stayed at or below A's store offset, as it would on Kafka.
func TestStaleStoreAfterCompactionRestoresInFull(t *testing.T) {
	c := kafkatest.New(t)
	fake := c.RequireFake(t)
	h := newHarnessOn(t, c, 1)
	adm := kadm.NewClient(h.c.Client(t))
	zero := "0"
	r, err := adm.AlterTopicConfigs(context.Background(),
		[]kadm.AlterConfig{{Op: kadm.SetConfig, Name: "delete.retention.ms", Value: &zero}}, h.names.Changelog)
	require.NoError(t, err)
	for _, x := range r {
		require.NoError(t, x.Err)
	}

	dirA := t.TempDir()
	a := h.start(dirA)
	h.send(stockSet("set-y", "Y", 5), stockSet("set-z", "Z", 10), reserve("r1", "Z", "h1", 3))
	h.waitDecided(30*time.Second, "set-y", "set-z", "r1")
	require.Equal(t, schemas.OutcomeAccepted, h.decisive("r1").Outcome)
	a.stop(t)
	s, err := statestore.Open(processor.StateDir(dirA, h.names.Changelog, 0), statestore.Options{})
	require.NoError(t, err)
	offA, err := s.Offset()
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.Positive(t, offA, "A's store kept its decisions")

	clockB := &shiftedClock{}
	b := h.startWith(processor.WithClock(clockB.now))
	h.send(cmdFor(schemas.TypeRelease, "rel1", "Z", "h1"))
	h.waitDecided(30*time.Second, "rel1")
	require.Equal(t, schemas.OutcomeAccepted, h.decisive("rel1").Outcome)
	clockB.add(25 * time.Hour) // past the dedupe window: the sweep tombstones h1 and the commands
	require.Eventually(t, func() bool {
		_, ok := h.changelogState()[schemas.ReservationKey("Z", "h1")]
		return !ok
	}, 30*time.Second, 200*time.Millisecond, "B's sweep tombstones h1")
	h.send(stockSet("set-w", "W", 1)) // so the tombstones are not in the last (never compacted) batch
	h.waitDecided(30*time.Second, "set-w")
	b.stop(t)

	fake.Compact()
	starts, err := adm.ListStartOffsets(context.Background(), h.names.Changelog)
	require.NoError(t, err)
	start, _ := starts.Lookup(h.names.Changelog, 0)
	require.LessOrEqual(t, start.Offset, offA, "the log start did not pass A's store (as on Kafka)")
	assert.NotContains(t, h.changelogRaw(), schemas.ReservationKey("Z", "h1"))

	clockA := &shiftedClock{}
	clockA.add(25 * time.Hour) // a resurrected h1 would be due at once
	a2 := h.startOpts(dirA, []processor.Option{processor.WithClock(clockA.now)})
	h.waitReady(a2)
	time.Sleep(2 * time.Second)
	a2.stop(t)
	h.drain()
	assert.Zero(t, h.expiredNotices()["h1"], "h1 was released, it never expires")
	state := h.changelogState()
	assertInvariants(t, state)
	assert.Equal(t, int64(0), state[schemas.StockKey("Z")].Stock.Reserved)
	s, err = statestore.Open(processor.StateDir(dirA, h.names.Changelog, 0), statestore.Options{})
	require.NoError(t, err)
	defer s.Close()
	v, err := s.Get(schemas.ReservationKey("Z", "h1"))
	require.NoError(t, err)
	assert.Empty(t, string(v), "A's store has no h1")
}

// A store entry that cannot be decoded fails every retry of the batch that
// reads it. The partition escalates: its store is marked, the session
// restarts, and the restore rebuilds the partition from the changelog, after
// which the command is decided.
//
// Failed on the old code: the transaction aborted and was retried forever; the
// release was never decided.
func TestUndecodableStoreEntryRebuildsThePartition(t *testing.T) {
	h := newHarness(t, 1)
	dir := t.TempDir()
	a := h.start(dir)
	h.send(stockSet("set", "Z", 10), reserve("r1", "Z", "h1", 2))
	h.waitDecided(30*time.Second, "set", "r1")
	a.stop(t)

	s, err := statestore.Open(processor.StateDir(dir, h.names.Changelog, 0), statestore.Options{})
	require.NoError(t, err)
	off, err := s.Offset()
	require.NoError(t, err)
	require.NoError(t, s.Commit(map[string][]byte{schemas.ReservationKey("Z", "h1"): []byte(`{"reservation":`)}, off))
	require.NoError(t, s.Close())

	b := h.start(dir)
	h.send(cmdFor(schemas.TypeRelease, "rel1", "Z", "h1"))
	h.waitDecided(60*time.Second, "rel1")
	assert.Equal(t, schemas.OutcomeAccepted, h.decisive("rel1").Outcome)
	assert.GreaterOrEqual(t, b.counter("reservations_state_wipes_total"), 1.0)
	b.stop(t)
	state := h.changelogState()
	assertInvariants(t, state)
	assert.Equal(t, int64(0), state[schemas.StockKey("Z")].Stock.Reserved)
}

// The other side of the stale-store rule: a store that comes back soon (well
// within half the changelog's delete.retention.ms, 1 day by default) replays
// only the tail the other owner wrote, not the whole log.
func TestRecentStoreReplaysOnlyTheTail(t *testing.T) {
	h := newHarness(t, 1)
	dirA := t.TempDir()
	a := h.start(dirA)
	var first []schemas.Command
	for i := range 40 {
		first = append(first, reserve(fmt.Sprintf("a-%d", i), "T", fmt.Sprintf("ra-%d", i), 1))
	}
	h.send(append([]schemas.Command{stockSet("set", "T", 1000)}, first...)...)
	h.waitDecided(30*time.Second, append([]string{"set"}, idsOf(first)...)...)
	a.stop(t)

	b := h.start("")
	h.send(reserve("b-1", "T", "rb-1", 1))
	h.waitDecided(30*time.Second, "b-1")
	b.stop(t)

	a2 := h.start(dirA)
	h.waitReady(a2)
	assert.Zero(t, a2.counter("reservations_state_wipes_total"), "no full rebuild")
	restored := a2.counter("reservations_restored_records_total")
	total := float64(h.endOffsets(h.names.Changelog)[0])
	assert.Positive(t, restored, "the tail B wrote is replayed")
	assert.Less(t, restored, total/4, "only the tail (%v of %v changelog offsets)", restored, total)
	h.send(cmdFor(schemas.TypeRelease, "rel", "T", "rb-1"))
	h.waitDecided(30*time.Second, "rel")
	assert.Equal(t, schemas.OutcomeAccepted, h.decisive("rel").Outcome, "A knows B's hold")
	a2.stop(t)
}
