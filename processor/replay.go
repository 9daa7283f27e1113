package processor

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/reservations/reservations/statestore"
)

// RebuildOptions say what Rebuild rebuilds and whom it tells how far it got.
type RebuildOptions struct {
	// Partitions are the changelog partitions to rebuild (empty: every one).
	// Duplicates are ignored; a partition the changelog does not have is an
	// error (*PartitionRangeError).
	Partitions []int32
	// Full wipes every store first, so each is rebuilt from the log start.
	Full bool
	// Progress, when set, is called with the rebuild's progress: when each
	// partition's range is known, as its restore reads (at most every
	// ProgressInterval), and when each partition is done. Calls never
	// overlap. It must not block for long: the partitions' restores wait.
	Progress func(RebuildProgress)
	// ProgressInterval is the least time between two Progress calls while
	// restores read (default 200ms); the calls at the start and end of a
	// partition are always made.
	ProgressInterval time.Duration
}

// RebuildProgress is how far a Rebuild got. Amounts are changelog offsets
// (data records and transaction markers) to replay, over all the partitions
// of the rebuild; a partition whose restore has not started yet counts with
// an estimate (from its store's offset, or the log start), replaced by its
// restore's own range when it starts.
type RebuildProgress struct {
	// Partition is the partition whose restore moved.
	Partition int32
	// Done and Total are over all partitions; PartitionDone and
	// PartitionTotal over Partition's alone.
	Done, Total                   int64
	PartitionDone, PartitionTotal int64
	// Elapsed is the time since the rebuild started.
	Elapsed time.Duration
	// ETA is the estimated time left, at the rate so far; valid only with
	// ETAKnown (false before anything was read).
	ETA      time.Duration
	ETAKnown bool
}

// Percent is Done of Total, 0..100 (100 when there is nothing to replay).
func (p RebuildProgress) Percent() float64 {
	if p.Total <= 0 {
		return 100
	}
	return 100 * float64(p.Done) / float64(p.Total)
}

// RebuildSummary is what a Rebuild did.
type RebuildSummary struct {
	// Changelog is the changelog topic replayed.
	Changelog string
	// Partitions are the partitions rebuilt, in partition order.
	Partitions []PartitionRebuild
	// Took is the whole rebuild's duration.
	Took time.Duration
}

// PartitionRebuild is what Rebuild did to one partition's store.
type PartitionRebuild struct {
	Partition int32
	// Full reports a rebuild of the whole log into an empty store: asked for
	// (RebuildOptions.Full), a new or empty store, or a store that could not
	// be trusted and was wiped; FullReason says which. Otherwise only the
	// tail [From, To) was replayed (nothing when From == To: the store was
	// current).
	Full       bool
	FullReason string
	// From and To bound the changelog offsets replayed: [From, To). To is
	// the changelog end offset the store now reflects.
	From, To int64
	// Records is how many changelog data records were applied (transaction
	// markers and records of aborted transactions excluded).
	Records int64
	// Took is the partition's restore duration.
	Took time.Duration
}

// Records is the data records applied over all partitions.
func (s *RebuildSummary) Records() int64 {
	var n int64
	for _, p := range s.Partitions {
		n += p.Records
	}
	return n
}

// PartitionIDs lists the partitions rebuilt, in order.
func (s *RebuildSummary) PartitionIDs() []int32 {
	out := make([]int32, len(s.Partitions))
	for i, p := range s.Partitions {
		out[i] = p.Partition
	}
	return out
}

// Ends maps each partition rebuilt to the changelog end offset its store
// reflects.
func (s *RebuildSummary) Ends() map[int32]int64 {
	out := make(map[int32]int64, len(s.Partitions))
	for _, p := range s.Partitions {
		out[p.Partition] = p.To
	}
	return out
}

// PartitionRangeError is a partition asked of Rebuild that the changelog does
// not have: a usage error of the caller.
type PartitionRangeError struct {
	Partition  int32
	Changelog  string
	Partitions int32 // the changelog's partition count
}

func (e *PartitionRangeError) Error() string {
	return fmt.Sprintf("partition %d: %s has partitions 0..%d", e.Partition, e.Changelog, e.Partitions-1)
}

// Rebuild brings the local stores of opts.Partitions (every partition when
// empty) under cfg.StateDir up to the end of the changelog, exactly as an
// assignment would: a valid store only replays the tail (so an interrupted
// rebuild resumes where it stopped, and a second run is a no-op), an
// unreadable or foreign one is rebuilt in full. With opts.Full, every store is
// wiped first. It needs no consumer group and produces nothing: it is the
// operator's recovery tool for a processor's state folder (e.g. onto a new
// disk), run while that processor is stopped. It reports its progress to
// opts.Progress and returns what it did per partition.
func (p *Processor) Rebuild(ctx context.Context, opts RebuildOptions) (*RebuildSummary, error) {
	started := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.ctx = ctx
	admCl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(p.cfg.Brokers...)}, p.cfg.KafkaOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("admin client: %w", err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	p.mu.Lock()
	p.adm = adm
	p.mu.Unlock()
	if err := p.loadLayout(ctx); err != nil {
		return nil, err
	}
	env := p.newEnv()
	n := p.lay.partitions
	partitions := slices.Compact(slices.Sorted(slices.Values(opts.Partitions)))
	if len(partitions) == 0 {
		for n := range n {
			partitions = append(partitions, n)
		}
	}
	for _, x := range partitions {
		if x < 0 || x >= n {
			return nil, &PartitionRangeError{Partition: x, Changelog: p.io.Changelog, Partitions: n}
		}
	}
	track := &rebuildTracker{fn: opts.Progress, every: opts.ProgressInterval, started: started, now: time.Now,
		total: map[int32]int64{}, done: map[int32]int64{}}
	if track.every <= 0 {
		track.every = 200 * time.Millisecond
	}
	if opts.Progress != nil {
		if err := p.estimateRebuild(ctx, adm, partitions, opts.Full, track); err != nil {
			return nil, err
		}
	}
	// Partitions are independent: restore several at once (bounded, as a full
	// restore holds its partition's live state in memory before the bulk load).
	sum := &RebuildSummary{Changelog: p.io.Changelog, Partitions: make([]PartitionRebuild, len(partitions))}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, runtime.GOMAXPROCS(0)))
	for i, n := range partitions {
		g.Go(func() error {
			dir := StateDir(p.cfg.StateDir, p.io.Changelog, n)
			if opts.Full {
				if err := statestore.Remove(dir); err != nil {
					return err
				}
			}
			w := newPartition(env, ctx, n)
			var from int64
			st, err := w.restoreWith(gctx, &restoreHooks{
				plan:      func(f, end int64, _ string) { from = f; track.plan(n, end-f) },
				pos:       func(next int64) { track.at(n, next-from) },
				storeOnly: true,
			})
			if w.store != nil {
				if cerr := w.store.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				return fmt.Errorf("rebuild partition %d: %w", n, err)
			}
			track.finish(n)
			pr := PartitionRebuild{Partition: n, Full: st.fresh, FullReason: st.full,
				From: st.from, To: st.end, Records: st.records, Took: st.took}
			switch {
			case pr.FullReason != "":
			case opts.Full:
				pr.FullReason = "asked for: the store was wiped first"
			case st.fresh:
				pr.FullReason = "no store yet, or an empty one"
			}
			if !pr.Full {
				pr.FullReason = ""
			}
			sum.Partitions[i] = pr
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	sum.Took = time.Since(started)
	return sum, nil
}

// estimateRebuild sets the amount each partition is expected to replay,
// before any restore starts, so that the first progress reports have a total:
// from the store's offset when it lies within the log, else from the log
// start. Each restore replaces its estimate with its own range.
func (p *Processor) estimateRebuild(ctx context.Context, adm *kadm.Client, partitions []int32, full bool, track *rebuildTracker) error {
	t := p.io.Changelog
	starts, err := adm.ListStartOffsets(ctx, t)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("list start offsets of %s: %w", t, err)
	}
	ends, err := adm.ListEndOffsets(ctx, t)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("list end offsets of %s: %w", t, err)
	}
	for _, n := range partitions {
		s, _ := starts.Lookup(t, n)
		e, _ := ends.Lookup(t, n)
		from := s.Offset
		if !full {
			if off, ok := storeOffset(StateDir(p.cfg.StateDir, t, n)); ok && off >= s.Offset && off <= e.Offset {
				from = off
			}
		}
		track.total[n] = max(e.Offset-from, 0)
	}
	return nil
}

// storeOffset reads the changelog offset an existing store reflects, if it
// opens.
func storeOffset(dir string) (int64, bool) {
	if _, err := os.Stat(dir); err != nil {
		return 0, false
	}
	st, err := statestore.Open(dir, statestore.Options{})
	if err != nil {
		return 0, false
	}
	defer st.Close()
	off, err := st.Offset()
	return off, err == nil
}

// rebuildTracker sums the partitions' restore positions into
// RebuildProgress calls.
type rebuildTracker struct {
	fn      func(RebuildProgress)
	every   time.Duration
	started time.Time
	now     func() time.Time

	mu          sync.Mutex
	total, done map[int32]int64 // per partition
	last        time.Time       // of the last call
}

// plan sets partition n's amount to replay, now that its restore knows it.
func (t *rebuildTracker) plan(n int32, total int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total[n], t.done[n] = total, 0
	t.report(n, true)
}

// at notes that partition n replayed done of its amount.
func (t *rebuildTracker) at(n int32, done int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done[n] = min(max(done, 0), t.total[n])
	t.report(n, false)
}

// finish notes that partition n is done.
func (t *rebuildTracker) finish(n int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done[n] = t.total[n]
	t.report(n, true)
}

// report calls fn (t.mu held) unless the last call is more recent than
// every and force is false.
func (t *rebuildTracker) report(n int32, force bool) {
	if t.fn == nil {
		return
	}
	now := t.now()
	if !force && now.Sub(t.last) < t.every {
		return
	}
	t.last = now
	pr := RebuildProgress{Partition: n, PartitionDone: t.done[n], PartitionTotal: t.total[n], Elapsed: now.Sub(t.started)}
	for p, total := range t.total {
		pr.Total += total
		pr.Done += t.done[p]
	}
	pr.ETA, pr.ETAKnown = eta(pr.Elapsed, pr.Done, pr.Total)
	t.fn(pr)
}
