package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/sink"
	"github.com/reservations/reservations/statestore"
	"github.com/reservations/reservations/topics"
)

// Restore is the restore and sink measurement of a changelog holding
// Reservations active reservations over SKUs SKUs.
type Restore struct {
	Reservations int   `json:"reservations"`
	SKUs         int   `json:"skus"`
	Records      int64 `json:"records"` // changelog data records (stock + reservation entities)
	// ProduceSeconds is how long writing the changelog took (setup, informational).
	ProduceSeconds float64 `json:"produce_seconds"`
	// Rebuild: processor.(*Processor).Rebuild of every partition into an empty
	// folder (as many partitions at once as CPUs, as the operator's tool does).
	RebuildSeconds     float64 `json:"rebuild_seconds"`
	RebuildRecordsPerS float64 `json:"rebuild_records_per_s"`
	RebuildPartitions  int     `json:"rebuild_partitions"`
	// ReadOnly: the same changelog read by clients like the restore's (one
	// per partition, read_committed, as many at once as CPUs), doing nothing
	// with the records: the fastest a restore can read from this broker.
	ReadOnlySeconds     float64 `json:"read_only_seconds"`
	ReadOnlyRecordsPerS float64 `json:"read_only_records_per_s"`
	// StoreOnly: the same records, held in memory, written into fresh stores
	// the way the restore writes them (chunks of 10,000 keys, one store per
	// partition, as many at once as CPUs), no broker: how fast Badger alone
	// takes them, so the most a restore writing them all can reach.
	StoreOnlySeconds     float64 `json:"store_only_seconds"`
	StoreOnlyRecordsPerS float64 `json:"store_only_records_per_s"`
	StoreOnlyCoresBusy   float64 `json:"store_only_cores_busy"`
	// StoreBulk: the same, each partition's last values bulk-loaded in one
	// go with Badger's StreamWriter (statestore.Load, as the restore of a
	// wiped store does): Badger's other way in.
	StoreBulkSeconds     float64 `json:"store_bulk_seconds"`
	StoreBulkRecordsPerS float64 `json:"store_bulk_records_per_s"`
	StoreBulkCoresBusy   float64 `json:"store_bulk_cores_busy"`
	// RebuildCoresBusy is the harness process's CPU time during Rebuild (the
	// in-process broker included) over its wall time: near the CPU count, the
	// Rebuild is bound by CPU, not by waiting.
	RebuildCoresBusy     float64 `json:"rebuild_cores_busy"`
	ReadySeconds         float64 `json:"ready_seconds"` // processor.Run on an empty folder until Ready (partitions in parallel, group join included)
	ReadyRecordsPerS     float64 `json:"ready_records_per_s"`
	ReadyHeapDeltaBytes  int64   `json:"ready_heap_delta_bytes"` // Go heap in use after GC, ready processor minus before
	SinkSeconds          float64 `json:"sink_seconds"`           // sink.Run from empty tables until sink_offsets reach the changelog end
	SinkRecordsPerS      float64 `json:"sink_records_per_s"`
	SinkReservationsRows int64   `json:"sink_reservation_rows"`
	SinkError            string  `json:"sink_error,omitempty"`
}

// restorePhase writes a changelog of active reservations directly (a
// transactional producer writing the contract's entity JSON), reads it alone,
// then times a Rebuild, a processor start until ready and the Postgres sink
// (the profiled part), and last writes the same records into Badger alone.
func (r *run) restorePhase(ctx context.Context) error {
	cfg := &r.cfg
	res := &r.rep.Restore
	res.Reservations, res.SKUs = cfg.RestoreReservations, cfg.SKUs
	cluster, err := startBroker(ctx)
	if err != nil {
		return err
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	names := topics.NewNames("bench-restore")
	if err := ensureTopics(ctx, brokers, names, cfg.Partitions); err != nil {
		return err
	}
	t0 := time.Now()
	if res.Records, err = writeChangelog(ctx, brokers, names.Changelog, cfg.Partitions, cfg.SKUs, cfg.RestoreReservations); err != nil {
		return err
	}
	res.ProduceSeconds = time.Since(t0).Seconds()
	r.logf("restore: changelog of %d records (%d active reservations, %d SKUs) written in %.1fs",
		res.Records, res.Reservations, res.SKUs, res.ProduceSeconds)

	t0 = time.Now()
	read, _, err := readChangelog(ctx, brokers, names.Changelog, cfg.Partitions, false)
	if err != nil {
		return err
	}
	res.ReadOnlySeconds = time.Since(t0).Seconds()
	res.ReadOnlyRecordsPerS = float64(read) / res.ReadOnlySeconds
	r.logf("restore: reading the changelog alone (%d records, no store): %.2fs, %.0f records/s", read, res.ReadOnlySeconds, res.ReadOnlyRecordsPerS)

	err = r.profiled("-restore", &r.rep.RestoreProfile, func() error { return r.restoreRuns(ctx, brokers, names) })
	if err != nil {
		return err
	}
	return r.storeRuns(ctx, brokers, names.Changelog, res)
}

// storeRuns writes the changelog's records, read into memory first (not
// timed), into fresh stores both ways and times each.
func (r *run) storeRuns(ctx context.Context, brokers []string, changelog string, res *Restore) error {
	read, recs, err := readChangelog(ctx, brokers, changelog, r.cfg.Partitions, true)
	if err != nil {
		return err
	}
	runtime.GC()
	if res.StoreOnlySeconds, res.StoreOnlyCoresBusy, err = writeStores(ctx, recs, false); err != nil {
		return err
	}
	res.StoreOnlyRecordsPerS = float64(read) / res.StoreOnlySeconds
	if res.StoreBulkSeconds, res.StoreBulkCoresBusy, err = writeStores(ctx, recs, true); err != nil {
		return err
	}
	res.StoreBulkRecordsPerS = float64(read) / res.StoreBulkSeconds
	r.logf("restore: writing the same records into Badger alone (no broker): %.2fs, %.0f records/s, %.1f cores busy; bulk-loaded: %.2fs, %.0f records/s, %.1f cores busy",
		res.StoreOnlySeconds, res.StoreOnlyRecordsPerS, res.StoreOnlyCoresBusy, res.StoreBulkSeconds, res.StoreBulkRecordsPerS, res.StoreBulkCoresBusy)
	return nil
}

// restoreRuns times a Rebuild, a processor start until ready, and the sink.
func (r *run) restoreRuns(ctx context.Context, brokers []string, names topics.Names) error {
	cfg := &r.cfg
	res := &r.rep.Restore
	pcfg := processor.Config{
		Brokers:   brokers,
		Topics:    names,
		Group:     "bench-restore-group",
		KafkaOpts: []kgo.Opt{kgo.MetadataMinAge(100 * time.Millisecond)},
	}
	// Rebuild into an empty folder.
	dir, err := os.MkdirTemp("", "reservations-bench-rebuild-")
	if err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	defer os.RemoveAll(dir)
	pcfg.StateDir = dir
	p, err := processor.New(pcfg, processor.WithLogger(cfg.Logger), processor.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		return err
	}
	t0, cpu0 := time.Now(), processCPU()
	sum, err := p.Rebuild(ctx, processor.RebuildOptions{Full: true})
	if err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	res.RebuildSeconds = time.Since(t0).Seconds()
	res.RebuildCoresBusy = (processCPU() - cpu0).Seconds() / res.RebuildSeconds
	parts := sum.Partitions
	res.RebuildPartitions = len(parts)
	res.RebuildRecordsPerS = float64(res.Records) / res.RebuildSeconds
	r.logf("restore: Rebuild of %d partitions in %.2fs: %.0f records/s, %.1f of %d cores busy", len(parts), res.RebuildSeconds,
		res.RebuildRecordsPerS, res.RebuildCoresBusy, runtime.NumCPU())
	_ = os.RemoveAll(dir)

	if err := r.readyRun(ctx, pcfg, res); err != nil {
		return err
	}
	if err := r.sinkRun(ctx, brokers, names.Changelog, res); err != nil {
		res.SinkError = err.Error()
		r.logf("restore: sink: %v", err)
	}
	return nil
}

// readyRun starts a processor on an empty folder and times it until ready; it
// also measures the memory the ready processor holds.
func (r *run) readyRun(ctx context.Context, pcfg processor.Config, res *Restore) error {
	dir, err := os.MkdirTemp("", "reservations-bench-ready-")
	if err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	defer os.RemoveAll(dir)
	pcfg.StateDir = dir
	runtime.GC()
	heap0 := heapInUse()
	p, err := processor.New(pcfg, processor.WithLogger(r.cfg.Logger), processor.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		return err
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	t0 := time.Now()
	go func() { done <- p.Run(pctx) }()
	defer func() {
		cancel()
		<-done
	}()
	if err := waitReady(ctx, p, r.cfg.Partitions, done, 10*time.Minute, 5*time.Millisecond, "processor"); err != nil {
		return err
	}
	res.ReadySeconds = time.Since(t0).Seconds()
	res.ReadyRecordsPerS = float64(res.Records) / res.ReadySeconds
	runtime.GC()
	res.ReadyHeapDeltaBytes = int64(heapInUse()) - int64(heap0)
	r.logf("restore: processor ready on an empty folder in %.2fs (%.0f records/s); heap in use +%.0f MB",
		res.ReadySeconds, res.ReadyRecordsPerS, float64(res.ReadyHeapDeltaBytes)/1e6)
	return nil
}

// sinkRun applies the changelog to empty tables with sink.Writer and times it
// until sink_offsets reach the changelog's end offsets.
func (r *run) sinkRun(ctx context.Context, brokers []string, changelog string, res *Restore) error {
	const schema = "bench_sink"
	if err := r.pg.exec(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`, `CREATE SCHEMA `+schema); err != nil {
		return err
	}
	pool, err := r.pg.pool(ctx, schema, 4)
	if err != nil {
		return err
	}
	defer pool.Close()
	end, err := endOffsets(ctx, brokers, changelog)
	if err != nil {
		return err
	}
	w, err := sink.New(sink.Config{Brokers: brokers, Topic: changelog, Pool: pool},
		sink.WithLogger(r.cfg.Logger), sink.WithKafkaOpts(kgo.MetadataMinAge(100*time.Millisecond)))
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	t0 := time.Now()
	go func() { done <- w.Run(sctx) }()
	defer func() {
		cancel()
		<-done
		w.Close()
	}()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var got int64
		// Fails until the sink has created its tables: keep polling.
		_ = pool.QueryRow(ctx, `SELECT coalesce(sum(next_offset), 0) FROM sink_offsets WHERE topic = $1`, changelog).Scan(&got)
		if got >= end {
			break
		}
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("sink stopped: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sink not caught up within 10m (%d of %d offsets)", got, end)
		}
	}
	res.SinkSeconds = time.Since(t0).Seconds()
	res.SinkRecordsPerS = float64(res.Records) / res.SinkSeconds
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM reservations`).Scan(&res.SinkReservationsRows); err != nil {
		return fmt.Errorf("count sink rows: %w", err)
	}
	r.logf("restore: sink applied %d records in %.2fs: %.0f records/s (%d reservation rows)",
		res.Records, res.SinkSeconds, res.SinkRecordsPerS, res.SinkReservationsRows)
	return nil
}

// endOffsets sums the end offsets (high watermarks) of a topic's partitions.
func endOffsets(ctx context.Context, brokers []string, topic string) (int64, error) {
	cl, err := kgo.NewClient(clientOpts(brokers)...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("list end offsets of %s: %w", topic, err)
	}
	var sum int64
	ends.Each(func(o kadm.ListedOffset) { sum += o.Offset })
	return sum, nil
}

// writeChangelog writes the stock entity of every SKU and n active
// reservations (spread over the SKUs) to the changelog, in transactions of
// 10,000 records, each to the partition its SKU hashes to.
func writeChangelog(ctx context.Context, brokers []string, topic string, partitions int32, skus, n int) (int64, error) {
	cl, err := kgo.NewClient(append(clientOpts(brokers),
		kgo.TransactionalID("bench-restore-writer"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.MaxBufferedRecords(100_000),
	)...)
	if err != nil {
		return 0, fmt.Errorf("changelog writer: %w", err)
	}
	defer cl.Close()
	now := schemas.MillisOf(time.Now())
	expires := now + schemas.Millis(24*time.Hour/time.Millisecond)
	parts := make([]int32, skus)
	perSKU := make([]int64, skus)
	for i := range skus {
		parts[i] = topics.Partition([]byte(uniformSKU(i)), partitions)
	}
	for i := range n {
		perSKU[i%skus]++
	}
	var records int64
	var mu sync.Mutex
	var failed error
	promise := func(_ *kgo.Record, err error) {
		mu.Lock()
		if err != nil && failed == nil {
			failed = err
		}
		mu.Unlock()
	}
	inTxn := 0
	produce := func(key string, value []byte, part int32) error {
		if inTxn == 0 {
			if err := cl.BeginTransaction(); err != nil {
				return fmt.Errorf("begin changelog transaction: %w", err)
			}
		}
		cl.Produce(ctx, &kgo.Record{Topic: topic, Partition: part, Key: []byte(key), Value: value}, promise)
		records++
		inTxn++
		if inTxn == 10_000 {
			inTxn = 0
			return endTxn(ctx, cl)
		}
		return nil
	}
	for i := range skus {
		sku := uniformSKU(i)
		s := schemas.StockEntity{SKU: sku, OnHand: 1_000_000, Reserved: perSKU[i], Available: 1_000_000 - perSKU[i],
			Version: 1 + perSKU[i], Event: schemas.EventReserved, CommandID: "bench-set-" + sku, UpdatedAt: now}
		if err := produce(schemas.StockKey(sku), schemas.AppendStockEntity(nil, &s), parts[i]); err != nil {
			return records, err
		}
	}
	for i := range n {
		k := i % skus
		sku := uniformSKU(k)
		id := fmt.Sprintf("r-%d", i)
		e := schemas.ReservationEntity{
			Reservation: schemas.Reservation{ReservationID: id, SKU: sku, Quantity: 1, Status: schemas.StatusActive,
				ExpiresAt: expires, CartID: "cart-" + id},
			Version: 1, Event: schemas.EventReserved, CommandID: "c-" + id, UpdatedAt: now,
		}
		if err := produce(schemas.ReservationKey(sku, id), schemas.AppendReservationEntity(nil, &e), parts[k]); err != nil {
			return records, err
		}
		if err := ctx.Err(); err != nil {
			return records, err
		}
	}
	if inTxn > 0 {
		if err := endTxn(ctx, cl); err != nil {
			return records, err
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if failed != nil {
		return records, fmt.Errorf("write changelog: %w", failed)
	}
	return records, nil
}

func endTxn(ctx context.Context, cl *kgo.Client) error {
	if err := cl.Flush(ctx); err != nil {
		return fmt.Errorf("flush changelog: %w", err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("commit changelog transaction: %w", err)
	}
	return nil
}

// kv is one changelog record held in memory.
type kv struct{ k, v []byte }

// readChangelog reads every partition of topic to its end the way the
// restore does (a client per partition, read_committed, control records
// kept, 16 MiB per partition fetch, as many partitions at once as CPUs) and
// returns how many data records it read and, with keep, the records by
// partition.
func readChangelog(ctx context.Context, brokers []string, topic string, partitions int32, keep bool) (int64, [][]kv, error) {
	admCl, err := kgo.NewClient(clientOpts(brokers)...)
	if err != nil {
		return 0, nil, fmt.Errorf("read changelog: %w", err)
	}
	defer admCl.Close()
	ends, err := kadm.NewClient(admCl).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, nil, fmt.Errorf("read changelog: end offsets: %w", err)
	}
	out := make([][]kv, partitions)
	var total atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.NumCPU())
	for p := range partitions {
		end, _ := ends.Lookup(topic, p)
		if end.Offset <= 0 {
			continue
		}
		g.Go(func() error {
			cl, err := kgo.NewClient(append(clientOpts(brokers),
				kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {p: kgo.NewOffset().At(0)}}),
				kgo.FetchIsolationLevel(kgo.ReadCommitted()),
				kgo.KeepControlRecords(),
				kgo.FetchMaxPartitionBytes(16<<20))...)
			if err != nil {
				return err
			}
			defer cl.Close()
			for {
				fs := cl.PollFetches(gctx)
				if err := gctx.Err(); err != nil {
					return err
				}
				if err := fs.Err0(); err != nil {
					return fmt.Errorf("read changelog partition %d: %w", p, err)
				}
				done := false
				fs.EachRecord(func(r *kgo.Record) {
					if r.Attrs.IsControl() {
						done = done || r.Offset+1 >= end.Offset
						return
					}
					total.Add(1)
					if keep {
						out[p] = append(out[p], kv{r.Key, r.Value})
					}
					done = done || r.Offset+1 >= end.Offset
				})
				if done {
					return nil
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return 0, nil, err
	}
	if !keep {
		out = nil
	}
	return total.Load(), out, nil
}

// writeStores writes recs (by partition) into fresh stores in a temporary
// folder, as many partitions at once as CPUs, each store opened and closed as
// in Rebuild, and returns the seconds that took and the process's CPU time
// over them (cores busy; 0 off Linux). It writes the way the restore of a
// tail does (the last value of each key in chunks of 10,000 keys, one Badger
// write per chunk with the offset it reaches; a new, empty store is restored
// that way too) or, with bulk, the way the restore of a wiped store does (the
// partition's last values in one StreamWriter load).
func writeStores(ctx context.Context, recs [][]kv, bulk bool) (seconds, coresBusy float64, err error) {
	dir, err := os.MkdirTemp("", "reservations-bench-stores-")
	if err != nil {
		return 0, 0, fmt.Errorf("create store dir: %w", err)
	}
	defer os.RemoveAll(dir)
	t0, cpu0 := time.Now(), processCPU()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.NumCPU())
	for p, part := range recs {
		g.Go(func() error {
			s, err := statestore.Open(filepath.Join(dir, fmt.Sprint(p)), statestore.Options{})
			if err != nil {
				return err
			}
			chunk := make(map[string][]byte)
			if bulk {
				for _, r := range part {
					chunk[string(r.k)] = r.v
				}
				if err := s.Load(chunk, int64(len(part)), nil); err != nil {
					_ = s.Close()
					return err
				}
				return s.Close()
			}
			for i, r := range part {
				chunk[string(r.k)] = r.v
				if len(chunk) >= 10_000 || i == len(part)-1 {
					if err := s.Commit(chunk, int64(i+1)); err != nil {
						_ = s.Close()
						return err
					}
					clear(chunk)
				}
				if i%10_000 == 0 && gctx.Err() != nil {
					_ = s.Close()
					return gctx.Err()
				}
			}
			return s.Close()
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, fmt.Errorf("write stores: %w", err)
	}
	seconds = time.Since(t0).Seconds()
	return seconds, (processCPU() - cpu0).Seconds() / seconds, nil
}
