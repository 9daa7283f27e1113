package bench

import (
	"context"
	"fmt"
	"hash/fnv"
	"runtime"
	"slices"
	"time"
)

// seedOf makes the commands of a (workload, concurrency) step the same for
// every system.
func seedOf(w string, clients int) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", w, clients)
	return h.Sum64()
}

// tag returns a fresh command id tag (unique within the run).
func (r *run) tag(prefix string) string {
	r.tags++
	return fmt.Sprintf("%s%d", prefix, r.tags)
}

func (r *run) addStep(st Step) {
	r.rep.Steps = append(r.rep.Steps, st)
	extra := ""
	if st.Kind == KindPaced {
		extra = fmt.Sprintf(" at %.0f/s", st.TargetRate)
	}
	if st.Retries > 0 {
		extra += fmt.Sprintf(" retries=%d", st.Retries)
	}
	extra += st.txnLog()
	if st.Aborts+st.Restarts > 0 {
		extra += fmt.Sprintf(" aborts=%d restarts=%d", st.Aborts, st.Restarts)
	}
	if st.Errors > 0 {
		extra += fmt.Sprintf(" errors=%d", st.Errors)
	}
	if st.TimedOut {
		extra += " (step timeout)"
	}
	r.logf("%-18s %-7s %-6s clients=%-5d %6d cmds %8.0f/s p50=%.1fms p99=%.1fms p99.9=%.1fms%s",
		st.Series(), st.Workload, st.Kind, st.Clients, st.Completed, st.Throughput, st.P50, st.P99, st.P999, extra)
}

// expiryCI is the commit interval whose processor also runs the expiry
// measurement: the processor default (50ms) when swept, else the last.
func (r *run) expiryCI() time.Duration {
	if slices.Contains(r.cfg.CommitIntervals, 50*time.Millisecond) {
		return 50 * time.Millisecond
	}
	return r.cfg.CommitIntervals[len(r.cfg.CommitIntervals)-1]
}

// pipelinePhase runs the pipeline, pass-through and expiry measurements on one
// kfake broker, with the CPU profile on.
func (r *run) pipelinePhase(ctx context.Context) error {
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	defer func() {
		var m1 runtime.MemStats
		runtime.ReadMemStats(&m1)
		g := &r.rep.PipelineGC
		g.Cycles = int(m1.NumGC - m0.NumGC)
		g.PauseTotalMs = float64(m1.PauseTotalNs-m0.PauseTotalNs) / 1e6
		for k := max(m0.NumGC+1, m1.NumGC-min(m1.NumGC, 255)); k <= m1.NumGC && k > 0; k++ { // the ring keeps 256
			g.MaxPauseMs = max(g.MaxPauseMs, float64(m1.PauseNs[(k+255)%256])/1e6)
		}
		g.HeapInUseEndMB = float64(m1.HeapInuse) / 1e6
	}()
	return r.profiled("", &r.rep.Profile, func() error {
		var err error
		labeled(ctx, "load", func(ctx context.Context) { err = r.pipelineRuns(ctx) })
		return err
	})
}

func (r *run) pipelineRuns(ctx context.Context) error {
	cluster, err := startBroker(ctx)
	if err != nil {
		return err
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	for _, ci := range r.cfg.CommitIntervals {
		r.logf("pipeline: commit interval %s, max batch %d, %d partitions", ci, r.cfg.MaxBatch, r.cfg.Partitions)
		env, err := r.startPipeline(ctx, brokers, ci)
		if err != nil {
			return fmt.Errorf("start pipeline (commit interval %s): %w", ci, err)
		}
		err = r.pipelineCI(ctx, env, ci == r.expiryCI())
		if cerr := env.close(); err == nil && cerr != nil {
			err = fmt.Errorf("stop processor: %w", cerr)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// pipelineCI runs every pipeline measurement of one commit interval.
func (r *run) pipelineCI(ctx context.Context, env *pipeEnv, expiry bool) error {
	cfg := &r.cfg
	for _, w := range Workloads {
		warm := genPlan(w, r.tag("w"), min(200, cfg.MinOps), cfg.SKUs, seedOf(w, -1))
		warm.encode()
		if _, err := env.closed(ctx, warm, min(16, slices.Max(cfg.Concurrencies))); err != nil {
			return fmt.Errorf("warm-up %s: %w", w, err)
		}
		for _, c := range cfg.Concurrencies {
			p := genPlan(w, r.tag("p"), cfg.stepOps(c), cfg.SKUs, seedOf(w, c))
			p.encode()
			st, err := env.closed(ctx, p, c)
			if err != nil {
				return fmt.Errorf("%s clients=%d: %w", w, c, err)
			}
			st.Workload = w
			r.addStep(st)
			if w == WorkloadHot {
				r.rep.Oversell = append(r.rep.Oversell, env.checkHot(ctx, &st, p))
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	var hotMax float64
	for _, w := range Workloads {
		p := genPlan(w, r.tag("o"), cfg.OpenLoopOps, cfg.SKUs, seedOf(w, 0))
		p.encode()
		if p.hotSKU != "" {
			if err := env.setStock(ctx, p.tag+"s", p.hotSKU, p.hotStock); err != nil {
				return err
			}
		}
		st := env.openLoop(ctx, p, 2*time.Minute)
		st.Workload = w
		r.addStep(st)
		if w == WorkloadHot {
			hotMax = st.Throughput
			r.rep.Oversell = append(r.rep.Oversell, env.checkHot(ctx, &st, p))
		}
	}
	// Latency at half of this configuration's maximum (hot workload, paced).
	if rate := hotMax / 2; rate > 0 {
		n := max(int(rate*cfg.PacedDuration.Seconds()), 1)
		p := genPlan(WorkloadHot, r.tag("h"), n, cfg.SKUs, seedOf(WorkloadHot, -2))
		p.encode()
		if err := env.setStock(ctx, p.tag+"s", p.hotSKU, p.hotStock); err != nil {
			return err
		}
		st := env.produceAll(ctx, p, rate, cfg.PacedDuration+time.Minute)
		st.Workload = WorkloadHot
		r.addStep(st)
		r.rep.Oversell = append(r.rep.Oversell, env.checkHot(ctx, &st, p))
	}
	// The broker's exactly-once pass-through of the same uniform records.
	p := genPlan(WorkloadUniform, r.tag("t"), cfg.OpenLoopOps, cfg.SKUs, seedOf(WorkloadUniform, 0))
	p.encode()
	st, err := r.passthrough(ctx, env.brokers, env.ci, p)
	if err != nil {
		return fmt.Errorf("pass-through: %w", err)
	}
	r.addStep(st)
	if expiry {
		ex, err := env.expiry(ctx)
		if err != nil {
			return fmt.Errorf("expiry: %w", err)
		}
		r.rep.Expiry = ex
		r.logf("expiry: %d/%d notices, decided_at - expires_at p50=%.0fms p99=%.0fms max=%.0fms; visible p99=%.0fms",
			ex.Received, ex.Holds, ex.LagP50, ex.LagP99, ex.LagMax, ex.VisibleP99)
	}
	return nil
}

// sqlPhase runs both Postgres baselines over the same workloads and
// concurrencies, then checks their tables for oversell.
func (r *run) sqlPhase(ctx context.Context) error {
	cfg := &r.cfg
	for _, system := range []string{SystemSerializable, SystemBestSQL} {
		schema := sqlSchemas[system]
		if err := r.createSQLSchema(ctx, schema); err != nil {
			return err
		}
		for _, w := range Workloads {
			warm := genPlan(w, r.tag("w"), min(200, cfg.MinOps), cfg.SKUs, seedOf(w, -1))
			if _, err := r.sqlStep(ctx, system, warm, min(16, slices.Max(cfg.Concurrencies))); err != nil {
				return fmt.Errorf("%s warm-up %s: %w", system, w, err)
			}
			for _, c := range cfg.Concurrencies {
				p := genPlan(w, r.tag("s"), cfg.stepOps(c), cfg.SKUs, seedOf(w, c))
				st, err := r.sqlStep(ctx, system, p, c)
				if err != nil {
					return fmt.Errorf("%s %s clients=%d: %w", system, w, c, err)
				}
				st.Workload = w
				r.addStep(st)
				if err := ctx.Err(); err != nil {
					return err
				}
			}
		}
		pool, err := r.pg.pool(ctx, schema, 1)
		if err != nil {
			return err
		}
		c := checkSQL(ctx, pool, system)
		pool.Close()
		r.rep.Oversell = append(r.rep.Oversell, c)
		r.logf("%s oversell check: %d SKUs, %d oversold, %d with reserved != sum(active) %s",
			system, c.SKUsChecked, c.OversoldSKUs, c.MismatchedSKUs, c.Error)
	}
	return nil
}

// sqlStep runs one closed-loop step of a baseline on a fresh pool.
func (r *run) sqlStep(ctx context.Context, system string, p *plan, clients int) (Step, error) {
	schema := sqlSchemas[system]
	size := min(clients, r.cfg.PoolCap)
	st := Step{System: system, Pool: size}
	if p.hotSKU != "" {
		if err := r.pg.exec(ctx, fmt.Sprintf(`INSERT INTO %s.stock (sku, on_hand) VALUES ('%s', %d)`, schema, p.hotSKU, p.hotStock)); err != nil {
			return st, err
		}
	}
	pool, err := r.pg.pool(ctx, schema, size)
	if err != nil {
		return st, err
	}
	defer pool.Close()
	closedLoop(ctx, sqlExec{pool: pool, system: system}, p, clients, r.cfg.StepTimeout, &st)
	if st.Completed == 0 && st.Errors > 0 {
		return st, fmt.Errorf("every command failed (%d errors)", st.Errors)
	}
	return st, nil
}
