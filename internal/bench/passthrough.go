package bench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// passthrough measures the broker's exactly-once limit on this machine: a
// GroupTransactSession consumes the same command records from a topic of the
// same partition count and produces one equally sized record per input to an
// output topic, committing the consumed offsets in the same transactions, with
// the processor's batching rule (MaxBatch records or CommitInterval) and no
// processing. Throughput is timed from the first produce until every output
// record is visible read_committed.
func (r *run) passthrough(ctx context.Context, brokers []string, ci time.Duration, p *plan) (Step, error) {
	st := Step{System: SystemPassthrough, Workload: WorkloadUniform, CommitInterval: ci, Kind: KindOpen, Planned: p.ops}
	in := fmt.Sprintf("bench-pt-ci%d.in", ci.Milliseconds())
	out := fmt.Sprintf("bench-pt-ci%d.out", ci.Milliseconds())
	admCl, err := kgo.NewClient(clientOpts(brokers)...)
	if err != nil {
		return st, fmt.Errorf("admin client: %w", err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	for _, t := range []string{in, out} {
		resp, err := adm.CreateTopic(ctx, r.cfg.Partitions, 1, nil, t)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			return st, fmt.Errorf("create topic %s: %w", t, err)
		}
	}
	defer deleteTopics(brokers, in, out)

	assigned := make(chan struct{}, 1)
	var sess *kgo.GroupTransactSession
	labeled(ctx, "passthrough", func(context.Context) {
		sess, err = kgo.NewGroupTransactSession(append(clientOpts(brokers),
			kgo.ConsumerGroup(in+"-group"),
			kgo.ConsumeTopics(in),
			kgo.Balancers(kgo.CooperativeStickyBalancer()),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.TransactionalID(in+"-txn"),
			kgo.TransactionTimeout(10*time.Second),
			kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.ProducerLinger(0),
			kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
				select {
				case assigned <- struct{}{}:
				default:
				}
			}),
		)...)
	})
	if err != nil {
		return st, fmt.Errorf("pass-through session: %w", err)
	}
	reader, err := kgo.NewClient(append(clientOpts(brokers), kgo.ConsumeTopics(out),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		sess.Close()
		return st, fmt.Errorf("pass-through reader: %w", err)
	}
	defer reader.Close()
	prod, err := kgo.NewClient(append(clientOpts(brokers), kgo.ProducerLinger(0), kgo.MaxBufferedRecords(100_000))...)
	if err != nil {
		sess.Close()
		return st, fmt.Errorf("pass-through producer: %w", err)
	}
	defer prod.Close()

	lctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	loopErr := make(chan error, 1)
	labeled(lctx, "passthrough", func(lctx context.Context) {
		go func() { loopErr <- passLoop(lctx, sess, out, ci, r.cfg.MaxBatch, nil) }()
	})
	defer func() {
		stop()
		<-loopErr
		sess.Close()
	}()
	// Wait for the group assignment: joining is not part of the measurement.
	select {
	case <-assigned:
	case err := <-loopErr:
		return st, fmt.Errorf("pass-through loop: %w", err)
	case <-time.After(60 * time.Second):
		return st, errors.New("pass-through session not assigned within 60s")
	}

	var seen atomic.Int64
	var last atomic.Int64
	want := int64(p.ops)
	done := make(chan struct{})
	rctx, rstop := context.WithCancel(lctx)
	defer rstop()
	go func() {
		for rctx.Err() == nil {
			fs := reader.PollFetches(rctx)
			n := int64(0)
			fs.EachRecord(func(*kgo.Record) { n++ })
			if n > 0 {
				last.Store(time.Now().UnixNano())
				if seen.Add(n) >= want {
					close(done)
					return
				}
			}
		}
	}()
	var prodErrs atomic.Int64
	start := time.Now()
	for _, ss := range p.sessions {
		for k := range ss {
			prod.Produce(ctx, &kgo.Record{Topic: in, Key: []byte(ss[k].sku), Value: ss[k].value}, func(_ *kgo.Record, err error) {
				if err != nil {
					prodErrs.Add(1)
				}
			})
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
	case <-time.After(2 * time.Minute):
	}
	st.Completed = int(min(seen.Load(), want))
	st.Errors = int(prodErrs.Load())
	st.TimedOut = st.Completed < p.ops
	if l := last.Load(); l > 0 {
		st.Seconds = time.Unix(0, l).Sub(start).Seconds()
	}
	if st.Seconds > 0 {
		st.Throughput = float64(st.Completed) / st.Seconds
	}
	return st, nil
}

// passLoop is the pass-through's transaction loop: poll, copy each record to
// the same partition of out, flush, commit (offsets in the transaction).
func passLoop(ctx context.Context, sess *kgo.GroupTransactSession, out string, ci time.Duration, maxBatch int, ph *txnPhases) error {
	return passLoopWith(ctx, sess, ci, maxBatch, ph, func(rec *kgo.Record, produce func(*kgo.Record)) {
		v := make([]byte, len(rec.Value)) // an equally sized output record
		copy(v, rec.Value)
		produce(&kgo.Record{Topic: out, Partition: rec.Partition, Key: rec.Key, Value: v})
	})
}

// passLoopWith is the transaction loop of both pass-throughs, with the
// processor's batching rule: poll, hand each record to copyOut (which
// produces what it stands for into the transaction), repeat while records
// are buffered up to maxBatch or ci, flush, and commit with the consumed
// offsets (abort when a produce failed). ph (nil: none) times the phases as
// the processor's metrics do.
func passLoopWith(ctx context.Context, sess *kgo.GroupTransactSession, ci time.Duration, maxBatch int, ph *txnPhases,
	copyOut func(rec *kgo.Record, produce func(*kgo.Record))) error {
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		recs := sess.PollRecords(pctx, maxBatch).Records()
		cancel()
		if len(recs) == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		var failed atomic.Bool
		promise := func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Store(true)
			}
		}
		octx := context.WithoutCancel(ctx)
		produce := func(r *kgo.Record) { sess.Produce(octx, r, promise) }
		start := time.Now()
		n := 0
		for len(recs) > 0 {
			for _, rec := range recs {
				copyOut(rec, produce)
			}
			n += len(recs)
			if n >= maxBatch || time.Since(start) >= ci {
				break
			}
			//lint:ignore SA1012 a nil context makes PollRecords return what is buffered without waiting (kgo documents it)
			recs = sess.PollRecords(nil, maxBatch-n).Records()
		}
		decided := time.Now()
		ectx, ecancel := context.WithTimeout(octx, 20*time.Second)
		if err := sess.Client().Flush(ectx); err != nil {
			failed.Store(true)
		}
		flushed := time.Now()
		try := kgo.TryCommit
		if failed.Load() {
			try = kgo.TryAbort
		}
		committed, err := sess.End(ectx, try)
		ecancel()
		if err != nil {
			return fmt.Errorf("end transaction: %w", err)
		}
		ph.observe(start, decided, flushed, n, committed)
	}
	return nil
}

// txnPhases are a pass-through's transaction metrics, under the processor's
// names (txnStatsOf reads both alike): the time to copy the records
// ("decide"), to flush them, to end the transaction, and the records of each
// committed one.
type txnPhases struct {
	decide, flush, commit, records prometheus.Histogram
}

func newTxnPhases(reg prometheus.Registerer) *txnPhases {
	h := func(name string, buckets []float64) prometheus.Histogram {
		m := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "reservations", Name: name, Help: name, Buckets: buckets})
		reg.MustRegister(m)
		return m
	}
	secs := prometheus.ExponentialBuckets(0.0005, 2, 14)
	return &txnPhases{decide: h("transaction_decide_seconds", secs), flush: h("transaction_flush_seconds", secs),
		commit: h("transaction_commit_seconds", secs), records: h("transaction_records", prometheus.ExponentialBuckets(1, 4, 8))}
}

// observe records one ended transaction that began deciding at start.
func (ph *txnPhases) observe(start, decided, flushed time.Time, records int, committed bool) {
	if ph == nil {
		return
	}
	ph.decide.Observe(decided.Sub(start).Seconds())
	ph.flush.Observe(flushed.Sub(decided).Seconds())
	ph.commit.Observe(time.Since(flushed).Seconds())
	if committed {
		ph.records.Observe(float64(records))
	}
}
