package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/internal/kafkatest"
	"github.com/reservations/reservations/internal/pgtest"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/sink"
	"github.com/reservations/reservations/topics"
)

const (
	partitions = 12 // of every topic, as the contract's default
	instances  = 3  // processor processes in the group
)

// deleteRetention is the changelogs' delete.retention.ms in the soak: low, so
// that compaction removes tombstones within the run, and a store away longer
// than half of it (7.5 s) is rebuilt in full (MEMBERSHIP.md rule 3).
const deleteRetention = 15 * time.Second

// size is how big a soak is.
type size struct {
	Name      string
	Commands  int           // records the load generator produces (all kinds)
	SKUs, Hot int           // SKUs, of which hot (30% of the traffic)
	Kills     int           // SIGKILLs of processor instances
	Load      time.Duration // the load is paced over this much traffic time
	Quiet     int           // quiet periods between traffic phases (no commands)
	QuietFor  time.Duration // each
	Freezes   int           // SIGSTOPs past the session timeout
	Stale     int           // stale-folder rejoins
	Carts     int           // cart.reserve commands (0: no cart coordinator)
	Producers int           // concurrent producers
	Drain     time.Duration // longest wait for every command to be decided after the load
	Seed      uint64        // of the load, the chaos schedule and the fault injector
}

// sizeFromEnv reads SOAK (short, the default, or full), the overrides
// SOAK_COMMANDS, SOAK_KILLS, SOAK_QUIET, SOAK_FREEZES, SOAK_STALE, SOAK_CARTS and
// SOAK_SECONDS, and SOAK_SEED (default: random).
func sizeFromEnv() (size, error) {
	s := size{Name: "short", Commands: 30_000, SKUs: 1_200, Hot: 8, Kills: 6, Load: 40 * time.Second,
		Quiet: 2, QuietFor: 10 * time.Second, Freezes: 2, Stale: 1, Carts: 150, Producers: 16, Drain: 2 * time.Minute}
	switch os.Getenv("SOAK") {
	case "", "short":
	case "full":
		s = size{Name: "full", Commands: 1_000_000, SKUs: 10_000, Hot: 20, Kills: 24, Load: 6 * time.Minute,
			Quiet: 4, QuietFor: 15 * time.Second, Freezes: 4, Stale: 2, Carts: 3_000, Producers: 16, Drain: 15 * time.Minute}
	default:
		return s, fmt.Errorf("SOAK=%q: want short or full", os.Getenv("SOAK"))
	}
	for env, dst := range map[string]*int{"SOAK_COMMANDS": &s.Commands, "SOAK_KILLS": &s.Kills, "SOAK_QUIET": &s.Quiet,
		"SOAK_FREEZES": &s.Freezes, "SOAK_STALE": &s.Stale, "SOAK_CARTS": &s.Carts} {
		if v := os.Getenv(env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return s, fmt.Errorf("%s=%q: want a number >= 0", env, v)
			}
			*dst = n
		}
	}
	if v := os.Getenv("SOAK_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return s, fmt.Errorf("SOAK_SECONDS=%q: want a number >= 1", v)
		}
		s.Load = time.Duration(n) * time.Second
	}
	s.Seed = uint64(time.Now().UnixNano())
	if v := os.Getenv("SOAK_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return s, fmt.Errorf("SOAK_SEED=%q: want a number", v)
		}
		s.Seed = n
	}
	return s, nil
}

// TestSoak runs the chaos soak (see the package documentation) and fails on
// any violated invariant. Its last output line is the summary.
func TestSoak(t *testing.T) {
	sz, err := sizeFromEnv()
	require.NoError(t, err)
	t.Logf("soak %s, SOAK_SEED=%d", sz.Name, sz.Seed)
	var tm timings
	began := time.Now()
	p := startPipeline(t, sz)
	require.NoError(t, p.load.stock(t.Context())) // the stock of every SKU first
	require.True(t, waitFor(90*time.Second, func() bool { return p.rs.undecided() == 0 }), "initial stock decided (see %s)", p.root)
	p.stocked = time.Now()
	tm.setup = time.Since(began)

	start := time.Now()
	ph := newPhases(start, sz)
	ch, faults := p.runLoad(ph)
	tm.load = time.Since(start)

	start = time.Now()
	p.drain()
	tm.drain = time.Since(start)
	stopped := p.stopProcessors()

	start = time.Now()
	ck := p.check(stopped)
	logs := processLogs(p.rep, p.broker.log, p.insts, ch.corrupted)
	mem := p.membership(ch)
	tm.check = time.Since(start)
	tm.total = time.Since(began)

	out := p.report(ch, ph, faults, ck, logs, mem, tm)
	for _, s := range out {
		t.Log(s)
	}
	fmt.Println(strings.Join(out, "\n"))
	if p.rep.total() > 0 {
		for _, in := range p.insts {
			t.Logf("%s: warnings and errors (last 30):\n%s", in.name, warnings(in.log, 30))
		}
		t.Fail()
	}
}

// pipeline is what the soak runs: the broker and processor processes,
// Postgres and the sink, the load generator and the results reader.
type pipeline struct {
	t       *testing.T
	sz      size
	root    string // logs and data
	rep     *report
	names   topics.Names
	group   string
	pg      *pgtest.Server
	db      *pgtest.Database
	broker  *brokerProc
	brokers []string
	adm     *kadm.Client
	insts   []*instance
	sinkLog string
	sink    struct {
		stop context.CancelFunc
		done chan error
	}
	load     *load
	rs       *results
	carts    *cartResults
	mirror   *mirror   // of the changelog
	stocked  time.Time // when the stock of every SKU was decided: the first decisions of the soak
	stopRead func()    // stops the results, cart results and changelog readers and waits for them
}

func startPipeline(t *testing.T, sz size) *pipeline {
	p := &pipeline{t: t, sz: sz, root: t.TempDir(), rep: newReport(), names: topics.NewNames("soak"), group: "soak-processor"}
	if keep := os.Getenv("SOAK_DIR"); keep != "" { // keep the logs and data of the run there
		require.NoError(t, os.MkdirAll(keep, 0o755))
		var err error
		p.root, err = os.MkdirTemp(keep, "soak-")
		require.NoError(t, err)
	}
	p.pg = pgtest.NewServer(t)
	p.db = p.pg.NewDatabase(t)
	exited := func(c *child) {
		p.rep.violate(invProcesses, "%s exited unexpectedly: %v; log tail:\n%s", c.name, c.err, tailLog(c.log, 15))
	}
	p.broker = startBrokerProc(t, p.root, "soak", sz.Seed, exited)
	p.brokers = []string{p.broker.addr}
	p.adm = kadm.NewClient(p.client())
	_, err := topics.Ensure(t.Context(), p.adm, p.names, partitions, 1)
	require.NoError(t, err)
	retention := strconv.FormatInt(deleteRetention.Milliseconds(), 10)
	altered, err := p.adm.AlterTopicConfigs(t.Context(), []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "delete.retention.ms", Value: &retention}},
		p.names.Changelog, p.names.CartChangelog)
	require.NoError(t, err)
	for _, a := range altered {
		require.NoError(t, a.Err, "delete.retention.ms of %s", a.Name)
	}
	// Read from the start before anything is compacted.
	p.mirror, err = newMirror(p.brokers, p.names.Changelog, p.rep)
	require.NoError(t, err)

	for i := range instances {
		in := &instance{name: fmt.Sprintf("p%d", i+1)}
		in.dir = filepath.Join(p.root, in.name)
		in.log = filepath.Join(p.root, in.name+".log")
		cfg := childConfig{Role: "processor", Name: in.name, Prefix: "soak", Brokers: p.brokers, Group: p.group, StateDir: in.dir}
		if sz.Carts > 0 {
			cfg.CartGroup = cartGroup
		}
		in.start = func() *child { return startChild(t, cfg, in.log, nil, exited) }
		in.launch()
		p.insts = append(p.insts, in)
	}

	p.sinkLog = filepath.Join(p.root, "sink.log")
	f, err := os.Create(p.sinkLog)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	w, err := sink.New(sink.Config{Brokers: p.brokers, Topic: p.names.Changelog, DSN: p.db.DSN, RetryMax: time.Second, PingInterval: time.Second},
		sink.WithKafkaOpts(kafkatest.ClientOpts()...), sink.WithLogger(slog.New(slog.NewTextHandler(f, nil))))
	require.NoError(t, err)
	sinkCtx, stop := context.WithCancel(context.Background())
	p.sink.stop, p.sink.done = stop, make(chan error, 1)
	go func() { p.sink.done <- w.Run(sinkCtx) }()
	t.Cleanup(func() {
		stop()
		w.Close()
	})

	p.load = newLoad(sz, p.names, partitions, p.client(), p.client(kgo.RecordPartitioner(kgo.ManualPartitioner())))
	p.rs = newResults(p.client(kgo.ConsumeTopics(p.names.Results), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords()), p.load.led, p.rep)
	p.carts = newCartResults(p.client(kgo.ConsumeTopics(p.names.CartResults), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords()), p.rep)
	readCtx, stopRead := context.WithCancel(context.Background())
	var readers sync.WaitGroup
	readers.Go(func() { p.rs.run(readCtx) })
	readers.Go(func() { p.carts.run(readCtx) })
	readers.Go(func() { p.mirror.run(readCtx) })
	var once sync.Once
	p.stopRead = func() {
		once.Do(func() {
			stopRead()
			readers.Wait()
		})
	}
	t.Cleanup(p.stopRead)
	return p
}

// client returns a Kafka client of the broker, closed when the test ends.
func (p *pipeline) client(opts ...kgo.Opt) *kgo.Client {
	cl, err := kgo.NewClient(append(append(kafkatest.ClientOpts(), kgo.SeedBrokers(p.brokers...)), opts...)...)
	require.NoError(p.t, err)
	p.t.Cleanup(cl.Close)
	return cl
}

// runLoad sends the load while the broker injects faults and the chaos
// schedule runs; it returns when both are done.
func (p *pipeline) runLoad(ph phases) (*chaos, faultReport) {
	t := p.t
	require.NoError(t, p.broker.cmd.Process.Signal(syscall.SIGUSR1)) // start injecting faults
	loadErr := make(chan error, 1)
	go func() { loadErr <- p.load.run(t.Context(), ph) }()
	ch := newChaos(p, ph)
	ch.run()
	require.NoError(t, <-loadErr)
	require.NoError(t, p.broker.cmd.Process.Signal(syscall.SIGUSR2)) // stop injecting, report
	line, err := p.broker.expect("faults ", 30*time.Second)
	require.NoError(t, err)
	var faults faultReport
	require.NoError(t, json.Unmarshal([]byte(line), &faults))
	return ch, faults
}

// drain waits until every command is decided, every expiring hold resolved,
// and no new result came for a second.
func (p *pipeline) drain() {
	if !waitFor(p.sz.Drain, func() bool { return p.rs.undecided() == 0 && p.carts.undecided(p.load.carts) == 0 }) {
		n, ids := p.rs.undecidedIDs(5)
		nc, cids := p.carts.undecidedIDs(p.load.carts, 5)
		p.rep.violate(invLiveness, "%d commands (%s) and %d cart commands (%s) not decided within %s after the load",
			n, strings.Join(ids, ", "), nc, strings.Join(cids, ", "), p.sz.Drain)
	}
	waitFor(time.Minute, func() bool { return p.rs.dueHolds(time.Now().Add(time.Minute)) == 0 })
	last, lastAt := -1, time.Now()
	waitFor(30*time.Second, func() bool {
		if n := p.rs.count(); n != last {
			last, lastAt = n, time.Now()
		}
		return time.Since(lastAt) > time.Second
	})
}

// stopProcessors stops every processor with SIGTERM (each must exit 0), all
// at once so that their partitions do not move, and returns when they were
// all stopped.
func (p *pipeline) stopProcessors() time.Time {
	var wg sync.WaitGroup
	for _, in := range p.insts {
		wg.Go(func() {
			if err := in.proc.stop(30 * time.Second); err != nil {
				p.rep.violate(invProcesses, "%s: clean stop: %v", in.name, err)
			}
		})
	}
	wg.Wait()
	return time.Now()
}

// check reads the rest of the results, cart results and changelog, then runs
// the checker and the cart check, and stops the sink.
func (p *pipeline) check(stopped time.Time) *checker {
	t := p.t
	cl := p.client()
	ends, err := endOffsets(t.Context(), cl, p.names.Results)
	require.NoError(t, err)
	cartEnds, err := endOffsets(t.Context(), cl, p.names.CartResults)
	require.NoError(t, err)
	changelogEnds, err := endOffsets(t.Context(), cl, p.names.Changelog)
	require.NoError(t, err)
	require.True(t, waitFor(60*time.Second, func() bool {
		return p.rs.caughtUp(ends) && p.carts.caughtUp(cartEnds) && p.mirror.caughtUp(changelogEnds)
	}), "results, cart results and changelog read to the end")
	p.stopRead()
	ck := &checker{brokers: p.brokers, names: p.names, led: p.load.led, rs: p.rs, rep: p.rep, pool: p.db.Pool, stopped: stopped,
		walk: p.mirror.walk}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	require.NoError(t, ck.run(ctx))
	carts, err := cartState(ctx, p.brokers, p.names.CartChangelog, p.rep)
	require.NoError(t, err)
	ck.carts = checkCarts(p.rep, p.load.carts, p.carts, len(p.rs.lines), ck.walked, carts)
	p.rep.check(invCarts, "%d cart command ids, %d line commands, %d carts left", ck.carts.commands, ck.carts.lineCommands, ck.carts.carts)
	p.sink.stop()
	if err := <-p.sink.done; err != nil {
		p.rep.violate(invProcesses, "sink: %v", err)
	}
	return ck
}

// timings of the phases of the soak.
type timings struct {
	setup, load, drain, check, total time.Duration
}

// report returns the report's lines; the last one is the summary.
func (p *pipeline) report(ch *chaos, ph phases, faults faultReport, ck *checker, logs logFigures, mem memFigures, tm timings) []string {
	sz, led, rs := p.sz, p.load.led, p.rs
	kills, recov := p.recoveries(ch)
	freezes, frecov := p.freezes(ch)
	decisions, dups := 0, 0
	for _, r := range rs.byID {
		decisions += min(r.decisive, 1)
		dups += r.dups
	}
	var lags, quietLags []time.Duration
	for i, ms := range rs.lags {
		lags = append(lags, time.Duration(ms)*time.Millisecond)
		if ph.quietAt(time.UnixMilli(rs.lagAt[i])) {
			quietLags = append(quietLags, time.Duration(ms)*time.Millisecond)
		}
	}
	if ph.quiet > 0 && len(quietLags) == 0 {
		p.rep.violate(invExpired, "no hold expired in the %d quiet periods", ph.quiet)
	}
	for _, d := range quietLags {
		if d > maxRecovery {
			p.rep.violate(invLiveness, "a hold due in a quiet period expired only %s after its expires_at", d)
			break
		}
	}
	r := func(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }
	nFaults := faults.Injected + 1 + 1 // broker requests failed, the Postgres restart, the corrupted store
	cf := ck.carts
	cartLed := p.load.carts
	out := []string{
		fmt.Sprintf("soak %s (SOAK_SEED=%d): %d records paced over %s by %d producers, %d SKUs (%d hot), %d partitions, %d processor processes",
			sz.Name, sz.Seed, sz.Commands, sz.Load, sz.Producers, sz.SKUs, sz.Hot, partitions, instances),
		fmt.Sprintf("phases: %d traffic phases of %s, %d quiet periods of %s without commands (%d holds expired in them, lag behind expires_at %s)",
			ph.quiet+1, r(sz.Load/time.Duration(ph.quiet+1)), ph.quiet, sz.QuietFor, len(quietLags), percentiles(quietLags)),
		fmt.Sprintf("commands: %d produced (%d re-sent, %d invalid, %d malformed, %d misrouted), %d produce attempts retried",
			led.records, led.resent, led.invalid, len(led.dead), len(led.misrouted), led.failed),
		fmt.Sprintf("results: %d read: %d decisions, %d duplicates absorbed, %d expired and %d low_stock notices",
			rs.n, decisions, dups, rs.notices[schemas.TypeExpired], rs.notices[schemas.TypeLowStock]),
		fmt.Sprintf("carts: %d cart command records (%d re-sent, %d invalid): %d cart.reserve (%d accepted), %d cart.commit (%d accepted), %d cart.release (%d accepted); rejected: %s; %d cart results (%d duplicates), %d line commands of sagas; %d carts left",
			cartLed.records, cartLed.resent, cf.invalid, cf.reserves, cf.reservesAccepted, cf.commits, cf.commitsAccepted, cf.releases, cf.releasesAccepted,
			cf.reasons(), cf.results, cf.duplicates, cf.lineCommands, cf.carts),
		fmt.Sprintf("kills: %d, each restarted after 0.5-3 s: %s", len(ch.kills), strings.Join(kills, ", ")),
		fmt.Sprintf("recovery after a kill (until every partition the instance owned decided again): %s", percentiles(recov)),
		fmt.Sprintf("freezes (SIGSTOP until expelled and past the %s session timeout, then SIGCONT): %d: %s; recovery %s",
			sessionTimeout, len(ch.freezes), strings.Join(freezes, "; "), percentiles(frecov)),
		fmt.Sprintf("stale rejoins (SIGTERM, compaction, restart on the old folder): %d: %s", len(ch.stales), strings.Join(p.stales(ch, mem), "; ")),
		fmt.Sprintf("compactions (delete.retention.ms %s; processors stopped meanwhile): %s", deleteRetention, compactions(ch)),
		fmt.Sprintf("faults: %d: %d broker requests failed by %d installed kfake faults (%s); Postgres down %s (the sink retried %d times); %d partition stores of %s wiped after corruption",
			nFaults, faults.Injected, faults.Installed, faults, r(ch.pgDown), countInLog(p.sinkLog, 0, "postgres unavailable"),
			logs.wiped, ch.corrupted.name),
		fmt.Sprintf("pipeline: %d misrouted forwarded, %d DLQ records, %d changelog records (%d tombstones), %d Postgres rows; processors: %d session restarts, %d aborted transactions, %d partitions restored",
			ck.forwarded, ck.dlqRecords, ck.changelogRecords, ck.walked.tombstones, ck.pgRows, logs.restarts, logs.aborts, logs.restored),
		fmt.Sprintf("ownership: %d runs of %d partitions (roles %s) in the logs of %d processes", mem.runs, mem.parts, strings.Join(mem.roles, ", "), mem.procs),
		fmt.Sprintf("expiry timers: %d fired notices, lag behind expires_at %s", len(lags), percentiles(lags)),
		fmt.Sprintf("time: setup %s, load %s, drain %s, check %s, total %s", r(tm.setup), r(tm.load), r(tm.drain), r(tm.check), r(tm.total)),
		"invariants:",
	}
	p.rep.check(invLiveness, "%d kills, %d freezes, %d commands, %d cart commands", len(ch.kills), len(ch.freezes), led.records, cartLed.records)
	out = append(out, p.rep.lines()...)
	return append(out, fmt.Sprintf("soak: %d commands, %d kills, %d faults, %d quiet periods, %d freezes, %d stale rejoins, %d compactions, %d cart commands, %d violations",
		led.records, len(ch.kills), nFaults, ph.quiet, len(ch.freezes), len(ch.stales), len(ch.compactions), cartLed.records, p.rep.total()))
}

// freezes describes every freeze with the time until the partitions of the
// frozen instance decided again; a slow or missing recovery, or a member the
// group never expelled, is a violation.
func (p *pipeline) freezes(ch *chaos) ([]string, []time.Duration) {
	var recov []time.Duration
	var out []string
	for _, f := range ch.freezes {
		desc := fmt.Sprintf("%s[%s]", f.inst, joinInts(f.parts))
		if f.unknown {
			desc = f.inst + "[ownership unknown: all partitions]"
		}
		if f.quiet {
			desc += " in a quiet period"
		}
		if f.expelled == 0 {
			p.rep.violate(invLiveness, "freeze of %s at %s: never expelled from its groups within %s", desc, f.at.Format(time.TimeOnly), 3*sessionTimeout)
		} else {
			desc += fmt.Sprintf(", expelled after %s", f.expelled.Round(100*time.Millisecond))
		}
		desc += fmt.Sprintf(", continued after %s", f.thawed.Sub(f.at).Round(100*time.Millisecond))
		d, ok := p.rs.recovery(f.at, f.parts)
		switch {
		case f.afterTraffic:
			desc += " (after the traffic: recovery not measured)"
		case !ok:
			p.rep.violate(invLiveness, "freeze of %s at %s: partitions %s never decided again", desc, f.at.Format(time.TimeOnly), joinInts(f.parts))
		case d > maxRecovery:
			p.rep.violate(invLiveness, "freeze of %s at %s: partitions decided again only after %s", desc, f.at.Format(time.TimeOnly), d)
		}
		if ok {
			recov = append(recov, d)
			desc += ", recovered " + d.Round(100*time.Millisecond).String()
		}
		out = append(out, desc)
	}
	return out, recov
}

// stales describes every stale rejoin.
func (p *pipeline) stales(ch *chaos, mem memFigures) []string {
	var out []string
	for i, sr := range ch.stales {
		f := mem.stale[i]
		compacted := fmt.Sprintf("compacted %s after it left", sr.compactedAt.Sub(sr.left).Round(100*time.Millisecond))
		if !sr.compacted {
			compacted = "NOT compacted"
		}
		exercised := ""
		if f.stale() == 0 {
			exercised = " (no partition it got back had a store in its folder: rule 3 not exercised this time)"
		}
		out = append(out, fmt.Sprintf("%s away %s, %s (%d tombstones written meanwhile older than delete.retention.ms; log start moved on %d changelog partitions), running again %s after the restart: first restores: %d stores rebuilt in full as away longer than half delete.retention.ms, %d as behind the log start (kfake only), %d otherwise, %d partitions without a store, %d tail replays%s",
			sr.inst.name, sr.rejoined.Sub(sr.left).Round(100*time.Millisecond), compacted, sr.removable, sr.logStartsMoved,
			sr.ready.Round(100*time.Millisecond), f.byOwnedAt, f.byLogStart, f.otherWipe, f.fresh, f.tail, exercised))
	}
	return out
}

// compactions describes the compactions.
func compactions(ch *chaos) string {
	var froze []time.Duration
	var whys []string
	moved := 0
	for _, c := range ch.compactions {
		froze = append(froze, c.frozeFor)
		whys = append(whys, fmt.Sprintf("%s (%s ms, attempt %d)", c.why, c.took, c.attempts))
		moved += c.startsMoved
	}
	out := fmt.Sprintf("%d: %s; stopped %s; log start moved %d times (kfake only: Kafka never moves it on compaction)",
		len(ch.compactions), strings.Join(whys, ", "), percentiles(froze), moved)
	if len(ch.skipped) > 0 {
		out += "; given up: " + strings.Join(ch.skipped, ", ")
	}
	return out
}

// memFigures are read from the processors' logs.
type memFigures struct {
	runs, parts, procs int
	roles              []string
	stale              []staleFigures // of each stale rejoin
}

// membership checks the processors' logs: no partition ran on two instances
// at once, and every process started on a stale folder rebuilt its stores in
// full.
func (p *pipeline) membership(ch *chaos) memFigures {
	m := memFigures{roles: []string{"sku"}}
	if p.sz.Carts > 0 {
		m.roles = append(m.roles, "cart")
	}
	var runs []run
	for _, in := range p.insts {
		for _, inc := range in.incarnations() {
			m.procs++
			runs = append(runs, runsOf(inc, inc.lines())...)
		}
	}
	m.runs, m.parts = checkOwnership(p.rep, runs, m.roles)
	p.rep.check(invOwnership, "%d runs of %d partitions on %d processes", m.runs, m.parts, m.procs)
	var total staleFigures
	for _, sr := range ch.stales {
		if !sr.compacted {
			p.rep.violate(invStale, "stale rejoin of %s: the changelogs could not be compacted before it", sr.inst.name)
		}
		var f staleFigures
		for i, inc := range sr.inst.incarnations() {
			if sr.inst.procs[i] == sr.proc {
				f = checkStaleRestores(p.rep, sr.inst.name, inc.lines())
			}
		}
		m.stale = append(m.stale, f)
		total = total.add(f)
	}
	p.rep.check(invStale, "%d stale rejoins: %d first restores of stale stores, %d of them in full", len(ch.stales), total.stale(), total.stale()-total.tail)
	return m
}

// recoveries describes every kill with the time until the partitions of the
// killed instance decided again; a slow or missing recovery is a violation.
func (p *pipeline) recoveries(ch *chaos) ([]string, []time.Duration) {
	var recov []time.Duration
	var kills []string
	for _, k := range ch.kills {
		desc := fmt.Sprintf("%s[%s]", k.inst, joinInts(k.parts))
		if k.unknown {
			desc = k.inst + "[ownership unknown: all partitions]"
		}
		d, ok := p.rs.recovery(k.at, k.parts)
		switch {
		case k.afterTraffic:
			desc += " (after the traffic: recovery not measured)"
		case !ok:
			p.rep.violate(invLiveness, "kill of %s at %s: partitions %s never decided again", desc, k.at.Format(time.TimeOnly), joinInts(k.parts))
		case d > maxRecovery:
			p.rep.violate(invLiveness, "kill of %s at %s: partitions decided again only after %s", desc, k.at.Format(time.TimeOnly), d)
		}
		if ok {
			recov = append(recov, d)
			desc += " " + d.Round(100*time.Millisecond).String()
		}
		if k.corrupt {
			desc += " (restarted on a corrupted store)"
		}
		kills = append(kills, desc)
	}
	p.rep.check(invLiveness, "%d kills", len(ch.kills))
	return kills, recov
}

// waitFor polls cond until it holds (true) or timeout passes (false).
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(250 * time.Millisecond)
	}
	return true
}

// logFigures are counted in the children's logs.
type logFigures struct {
	wiped, restarts, aborts, restored int
}

// processLogs scans the children's logs: a panic or a data race is a
// violation, and the instance restarted on a corrupted store must have
// wiped and restored at least one partition.
func processLogs(rep *report, brokerLog string, insts []*instance, corrupted corruption) logFigures {
	var f logFigures
	logs := []string{brokerLog}
	for _, in := range insts {
		logs = append(logs, in.log)
	}
	for _, l := range logs {
		for _, bad := range []string{"WARNING: DATA RACE", "panic: ", "fatal error: "} {
			if n := countInLog(l, 0, bad); n > 0 {
				rep.violate(invProcesses, "%s: %d times %q", filepath.Base(l), n, bad)
			}
		}
		f.restarts += countInLog(l, 0, "processor session failed: restarting")
		f.aborts += countInLog(l, 0, "transaction aborted")
		f.restored += countInLog(l, 0, `msg="partition restored"`)
	}
	if corrupted.name != "" {
		f.wiped = countInLog(corrupted.log, corrupted.from, corruptMarker)
		if f.wiped == 0 {
			rep.violate(invProcesses, "%s was restarted on a corrupted store but never reported it unreadable", corrupted.name)
		}
	} else {
		rep.violate(invProcesses, "no processor was restarted on a corrupted store")
	}
	rep.check(invProcesses, "%d processes, %d partition stores wiped", len(logs), f.wiped)
	return f
}
