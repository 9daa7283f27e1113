package processor

import (
	"context"
	"fmt"
	"runtime"
	"sort"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/reservations/reservations/statestore"
)

// Rebuild brings the local stores of partitions (every partition when empty)
// under cfg.StateDir up to the end of the changelog, exactly as an assignment
// would: a valid store only replays the tail (so an interrupted rebuild resumes
// where it stopped, and a second run is a no-op), an unreadable or foreign one
// is rebuilt in full. With full set, every store is wiped first. It needs no
// consumer group and produces nothing: it is the operator's recovery tool for a
// processor's state folder (e.g. onto a new disk), run while that processor is
// stopped. It returns the partitions it rebuilt, in order.
func (p *Processor) Rebuild(ctx context.Context, partitions []int32, full bool) ([]int32, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.ctx = ctx
	admCl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(p.cfg.Brokers...)}, p.cfg.KafkaOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("admin client: %w", err)
	}
	defer admCl.Close()
	p.mu.Lock()
	p.adm = kadm.NewClient(admCl)
	p.mu.Unlock()
	if err := p.loadLayout(ctx); err != nil {
		return nil, err
	}
	env := p.newEnv()
	n := p.lay.partitions
	if len(partitions) == 0 {
		for n := range n {
			partitions = append(partitions, n)
		}
	}
	sort.Slice(partitions, func(i, j int) bool { return partitions[i] < partitions[j] })
	for _, x := range partitions {
		if x < 0 || x >= n {
			return nil, fmt.Errorf("partition %d: the changelog has partitions 0..%d", x, n-1)
		}
	}
	// Partitions are independent: restore several at once (bounded, as a full
	// restore holds its partition's live state in memory before the bulk load).
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, runtime.GOMAXPROCS(0)))
	for _, n := range partitions {
		g.Go(func() error {
			dir := StateDir(p.cfg.StateDir, p.io.Changelog, n)
			if full {
				if err := statestore.Remove(dir); err != nil {
					return err
				}
			}
			w := newPartition(env, ctx, n)
			err := w.restore(gctx)
			if w.store != nil {
				if cerr := w.store.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				return fmt.Errorf("rebuild partition %d: %w", n, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return partitions, nil
}
