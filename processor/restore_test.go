package processor_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/statestore"
	"github.com/reservations/reservations/topics"
)

// A local store is never trusted blindly: corrupt files, a store ahead of the
// changelog (the log was lost or truncated) and a store of a recreated topic are
// wiped and rebuilt from the changelog.
func TestRestoreDistrustsLocalState(t *testing.T) {
	h := newHarness(t, 2)
	dir := t.TempDir()
	in := h.start(dir)
	h.waitReady(in)
	h.send(stockSet("s1", "A", 10), stockSet("s2", "D", 10), reserve("r1", "A", "h1", 4), reserve("r2", "D", "h2", 3))
	h.waitDecided(20*time.Second, "s1", "s2", "r1", "r2")
	in.stop(t)
	pa := topics.Partition([]byte("A"), h.parts)
	pb := topics.Partition([]byte("D"), h.parts)
	require.NotEqual(t, pa, pb, "test needs A and D on different partitions")

	// Corrupt A's store files; move D's store offset beyond the end of its log.
	dirA := processor.StateDir(dir, h.names.Changelog, pa)
	entries, err := os.ReadDir(dirA)
	require.NoError(t, err)
	for _, e := range entries {
		require.NoError(t, os.WriteFile(filepath.Join(dirA, e.Name()), []byte("not badger"), 0o644))
	}
	s, err := statestore.Open(processor.StateDir(dir, h.names.Changelog, pb), statestore.Options{})
	require.NoError(t, err)
	require.NoError(t, s.Commit(map[string][]byte{"stock/D": []byte(`{"sku":"D","on_hand":999}`)}, 1_000_000))
	require.NoError(t, s.Close())

	in = h.start(dir)
	h.waitReady(in)
	// Both stores were wiped and rebuilt in full: the restore histogram
	// observed them as such, and the last-duration gauge has each partition.
	assert.Equal(t, map[string]uint64{"full": uint64(h.parts)}, histogramCounts(t, in.reg, "reservations_restore_duration_seconds", "kind"))
	assert.Equal(t, float64(h.parts), in.counter("reservations_state_wipes_total"))
	assert.Len(t, gaugeSeries(t, in.reg, "reservations_restore_last_duration_seconds"), int(h.parts))
	h.send(reserve("r3", "A", "h3", 6), reserve("r4", "A", "h4", 1), reserve("r5", "D", "h5", 7), reserve("r6", "D", "h6", 1))
	h.waitDecided(20*time.Second, "r3", "r4", "r5", "r6")
	assert.Equal(t, schemas.OutcomeAccepted, h.decisive("r3").Outcome, "A restored: 4 held + 6 fits 10")
	assert.Equal(t, schemas.ReasonInsufficientStock, h.decisive("r4").Reason)
	assert.Equal(t, schemas.OutcomeAccepted, h.decisive("r5").Outcome, "D restored from the log, not the bogus store")
	assert.Equal(t, schemas.ReasonInsufficientStock, h.decisive("r6").Reason)
	in.stop(t)

	// Recreate the topics under the same names: the old stores belong to
	// another topic id and must not leak into the new pipeline.
	adm := kadm.NewClient(h.c.Client(t))
	ctx := context.Background()
	_, err = adm.DeleteTopics(ctx, h.names.All()...)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := topics.Ensure(ctx, adm, h.names, h.parts, 1)
		return err == nil
	}, 20*time.Second, 100*time.Millisecond)
	// Fresh clients: the old ones cache the deleted topics' ids.
	h.prod = h.c.Client(t)
	h.reader = h.c.Client(t, kgo.ConsumeTopics(h.names.Results), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	in = h.start(dir)
	h.waitReady(in)
	h.send(reserve("fresh", "A", "h7", 1))
	h.read(20*time.Second, func() bool {
		for _, r := range h.byCmd["fresh"] {
			if r.Reason == schemas.ReasonUnknownSKU {
				return true
			}
		}
		return false
	})
}

// A store that opens but cannot be read (its value log lost bytes its tables
// point at, as a machine crash can leave it) fails the restore once, is marked,
// and is wiped and rebuilt from the changelog at the next attempt: the old code
// failed the restore again and again (the expiry schedule's scan of the
// reservations read empty values or failed), and never ran the partition.
func TestRestoreWipesStoreWithUnreadableValues(t *testing.T) {
	h := newHarness(t, 2)
	dir := t.TempDir()
	in := h.start(dir)
	h.waitReady(in)
	hold := "h1-" + strings.Repeat("x", 120) // a reservation entity above the value log threshold
	h.send(stockSet("s1", "A", 10), reserve("r1", "A", hold, 4))
	h.waitDecided(20*time.Second, "s1", "r1")
	in.stop(t)
	pa := topics.Partition([]byte("A"), h.parts)

	// Zero the value logs past their headers: the tables still point there.
	vlogs, err := filepath.Glob(filepath.Join(processor.StateDir(dir, h.names.Changelog, pa), "*.vlog"))
	require.NoError(t, err)
	require.NotEmpty(t, vlogs)
	zeroed := 0
	for _, f := range vlogs {
		st, err := os.Stat(f)
		require.NoError(t, err)
		if st.Size() <= 20 {
			continue
		}
		require.NoError(t, os.WriteFile(f, append(mustRead(t, f)[:20], make([]byte, st.Size()-20)...), 0o644))
		zeroed++
	}
	require.Positive(t, zeroed, "the hold and the decided command are in a value log")

	in = h.start(dir)
	h.waitReady(in)
	assert.GreaterOrEqual(t, in.counter("reservations_state_wipes_total"), 1.0, "the unreadable store was wiped")
	h.send(reserve("r2", "A", "h2", 6), reserve("r3", "A", "h3", 1), reserve("r1", "A", hold, 4))
	h.waitDecided(20*time.Second, "r2", "r3")
	assert.Equal(t, schemas.OutcomeAccepted, h.decisive("r2").Outcome, "restored from the log: 4 held + 6 fits 10")
	assert.Equal(t, schemas.ReasonInsufficientStock, h.decisive("r3").Reason)
	h.read(20*time.Second, func() bool { return h.duplicates() >= 1 })
	assert.Equal(t, schemas.OutcomeAccepted, h.decisive("r1").Outcome, "the re-sent r1 is answered from the restored idempotency entry")
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// Rebuild (the replay tool) gives a store identical to the processor's, and a
// second run changes nothing.
func TestRebuildMatchesProcessorState(t *testing.T) {
	h := newHarness(t, 3)
	dir := t.TempDir()
	in := h.start(dir)
	h.waitReady(in)
	w := genWorkload(5, 10, 600)
	h.sendConcurrently(w.sets, 1, 0)
	h.sendConcurrently(w.cmds, 2, 0)
	h.waitDecided(60*time.Second, w.ids()...)
	in.stop(t)

	dump := func(root string) map[string]string {
		out := map[string]string{}
		for p := range h.parts {
			s, err := statestore.Open(processor.StateDir(root, h.names.Changelog, p), statestore.Options{})
			require.NoError(t, err)
			d, err := s.Dump()
			require.NoError(t, err)
			for k, v := range d {
				out[k] = string(v)
			}
			off, err := s.Offset()
			require.NoError(t, err)
			// The processor stores the offset after its last record, a rebuild the
			// log end (after the transaction marker): both are "read from here".
			end := h.endOffsets(h.names.Changelog)[p]
			assert.Contains(t, []int64{end - 1, end}, off, "store offset of partition %d", p)
			require.NoError(t, s.Close())
		}
		return out
	}
	want := dump(dir)
	ends := h.endOffsets(h.names.Changelog)
	var total int64
	for p := range h.parts {
		total += ends[p]
	}
	rebuilt := t.TempDir()
	for run := range 2 {
		cfg := h.cfg
		cfg.StateDir = rebuilt
		reg := prometheus.NewRegistry()
		p, err := processor.New(cfg, processor.WithLogger(testLogger(t)), processor.WithRegisterer(reg))
		require.NoError(t, err)
		var progress []processor.RebuildProgress
		sum, err := p.Rebuild(context.Background(), processor.RebuildOptions{
			Progress: func(pr processor.RebuildProgress) { progress = append(progress, pr) }})
		require.NoError(t, err)
		assert.Equal(t, want, dump(rebuilt), "run %d: rebuilt store == processor store", run)

		// The summary: every partition, up to the log end; the first run
		// replays the whole log into new stores, the second nothing.
		assert.Equal(t, h.names.Changelog, sum.Changelog)
		require.Len(t, sum.Partitions, int(h.parts))
		var records int64
		for i, pr := range sum.Partitions {
			assert.Equal(t, int32(i), pr.Partition)
			assert.Equal(t, ends[pr.Partition], pr.To, "run %d partition %d", run, i)
			if run == 0 {
				assert.True(t, pr.Full, "partition %d: new store", i)
				assert.NotEmpty(t, pr.FullReason)
				assert.Zero(t, pr.From)
				assert.Positive(t, pr.Records)
			} else {
				assert.False(t, pr.Full, "partition %d: current store", i)
				assert.Equal(t, pr.To, pr.From)
				assert.Zero(t, pr.Records)
			}
			records += pr.Records
		}
		assert.Equal(t, records, sum.Records())
		var restored float64
		mfs, err := reg.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() == "reservations_restored_records_total" {
				for _, m := range mf.GetMetric() {
					restored += m.GetCounter().GetValue()
				}
			}
		}
		assert.Equal(t, float64(records), restored, "summary records == restored_records_total")
		kind := map[int]string{0: "full", 1: "current"}[run]
		assert.Equal(t, map[string]uint64{kind: uint64(h.parts)}, histogramCounts(t, reg, "reservations_restore_duration_seconds", "kind"))

		// Progress: totals over all partitions, never going back, ending at
		// 100% with nothing left.
		require.NotEmpty(t, progress)
		var last int64
		for _, pr := range progress {
			assert.GreaterOrEqual(t, pr.Done, last)
			assert.LessOrEqual(t, pr.Done, pr.Total)
			assert.LessOrEqual(t, pr.PartitionDone, pr.PartitionTotal)
			last = pr.Done
		}
		end := progress[len(progress)-1]
		assert.Equal(t, end.Total, end.Done)
		assert.InDelta(t, 100, end.Percent(), 1e-9)
		assert.True(t, end.ETAKnown)
		assert.Zero(t, end.ETA)
		if run == 0 {
			assert.Equal(t, total, end.Total, "the whole log")
		} else {
			assert.Zero(t, end.Total, "nothing to replay")
		}
	}

	// One partition, in full; a partition the changelog does not have.
	sum, err := mustNew(t, h.cfg, rebuilt).Rebuild(context.Background(), processor.RebuildOptions{Partitions: []int32{1, 1}, Full: true})
	require.NoError(t, err)
	require.Equal(t, []int32{1}, sum.PartitionIDs())
	assert.True(t, sum.Partitions[0].Full)
	assert.Equal(t, map[int32]int64{1: ends[1]}, sum.Ends())
	assert.Equal(t, want, dump(rebuilt))
	_, err = mustNew(t, h.cfg, rebuilt).Rebuild(context.Background(), processor.RebuildOptions{Partitions: []int32{7}})
	var rangeErr *processor.PartitionRangeError
	require.ErrorAs(t, err, &rangeErr)
	assert.Equal(t, int32(7), rangeErr.Partition)
	assert.Equal(t, h.parts, rangeErr.Partitions)
}

func mustNew(t *testing.T, cfg processor.Config, dir string) *processor.Processor {
	t.Helper()
	cfg.StateDir = dir
	p, err := processor.New(cfg, processor.WithLogger(testLogger(t)))
	require.NoError(t, err)
	return p
}

// histogramCounts returns the sample count of histogram name per value of
// its label.
func histogramCounts(t *testing.T, g prometheus.Gatherer, name, label string) map[string]uint64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	out := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && m.GetHistogram().GetSampleCount() > 0 {
					out[lp.GetValue()] += m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return out
}

// gaugeSeries returns the values of gauge name by their label pairs.
func gaugeSeries(t *testing.T, g prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				out[m.String()] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}
