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

// size is how big a soak is.
type size struct {
	Name      string
	Commands  int           // records the load generator produces (all kinds)
	SKUs, Hot int           // SKUs, of which hot (30% of the traffic)
	Kills     int           // SIGKILLs of processor instances
	Load      time.Duration // the load is paced over this time
	Producers int           // concurrent producers
	Drain     time.Duration // longest wait for every command to be decided after the load
	Seed      uint64        // of the load, the chaos schedule and the fault injector
}

// sizeFromEnv reads SOAK (short, the default, or full), the overrides
// SOAK_COMMANDS, SOAK_KILLS and SOAK_SECONDS, and SOAK_SEED (default: random).
func sizeFromEnv() (size, error) {
	s := size{Name: "short", Commands: 30_000, SKUs: 1_200, Hot: 8, Kills: 6, Load: 40 * time.Second,
		Producers: 16, Drain: 2 * time.Minute}
	switch os.Getenv("SOAK") {
	case "", "short":
	case "full":
		s = size{Name: "full", Commands: 1_000_000, SKUs: 10_000, Hot: 20, Kills: 24, Load: 6 * time.Minute,
			Producers: 16, Drain: 15 * time.Minute}
	default:
		return s, fmt.Errorf("SOAK=%q: want short or full", os.Getenv("SOAK"))
	}
	for env, dst := range map[string]*int{"SOAK_COMMANDS": &s.Commands, "SOAK_KILLS": &s.Kills} {
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
	var tm timings
	began := time.Now()
	p := startPipeline(t, sz)
	require.NoError(t, p.load.stock(t.Context())) // the stock of every SKU first
	require.True(t, waitFor(90*time.Second, func() bool { return p.rs.undecided() == 0 }), "initial stock decided (see %s)", p.root)
	tm.setup = time.Since(began)

	start := time.Now()
	ch, faults := p.runLoad(start)
	tm.load = time.Since(start)

	start = time.Now()
	p.drain()
	tm.drain = time.Since(start)
	stopped := p.stopProcessors()

	start = time.Now()
	ck := p.check(stopped)
	logs := processLogs(p.rep, p.broker.log, p.insts, ch.corrupted)
	tm.check = time.Since(start)
	tm.total = time.Since(began)

	out := p.report(ch, faults, ck, logs, tm)
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
	stopRead func() // stops the results reader and waits for it
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

	for i := range instances {
		in := &instance{name: fmt.Sprintf("p%d", i+1)}
		in.dir = filepath.Join(p.root, in.name)
		in.log = filepath.Join(p.root, in.name+".log")
		cfg := childConfig{Role: "processor", Name: in.name, Prefix: "soak", Brokers: p.brokers, Group: p.group, StateDir: in.dir}
		in.start = func() *child { return startChild(t, cfg, in.log, nil, exited) }
		in.proc = in.start()
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
	readCtx, stopRead := context.WithCancel(context.Background())
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		p.rs.run(readCtx)
	}()
	p.stopRead = func() {
		stopRead()
		<-readDone
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
func (p *pipeline) runLoad(start time.Time) (*chaos, faultReport) {
	t := p.t
	require.NoError(t, p.broker.cmd.Process.Signal(syscall.SIGUSR1)) // start injecting faults
	loadErr := make(chan error, 1)
	go func() { loadErr <- p.load.run(t.Context(), start) }()
	ch := newChaos(t, p.sz, p.insts, p.adm, p.group, p.names, p.pg)
	ch.run(start)
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
	if !waitFor(p.sz.Drain, func() bool { return p.rs.undecided() == 0 }) {
		p.rep.violate(invLiveness, "%d commands not decided within %s after the load", p.rs.undecided(), p.sz.Drain)
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

// check reads the rest of the results, then runs the checker and stops the sink.
func (p *pipeline) check(stopped time.Time) *checker {
	t := p.t
	ends, err := endOffsets(t.Context(), p.client(), p.names.Results)
	require.NoError(t, err)
	require.True(t, waitFor(60*time.Second, func() bool { return p.rs.caughtUp(ends) }), "results read to the end")
	p.stopRead()
	ck := &checker{brokers: p.brokers, names: p.names, led: p.load.led, rs: p.rs, rep: p.rep, pool: p.db.Pool, stopped: stopped}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	require.NoError(t, ck.run(ctx))
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
func (p *pipeline) report(ch *chaos, faults faultReport, ck *checker, logs logFigures, tm timings) []string {
	sz, led, rs := p.sz, p.load.led, p.rs
	kills, recov := p.recoveries(ch)
	decisions, dups := 0, 0
	for _, r := range rs.byID {
		decisions += min(r.decisive, 1)
		dups += r.dups
	}
	var lags []time.Duration
	for _, ms := range rs.lags {
		lags = append(lags, time.Duration(ms)*time.Millisecond)
	}
	r := func(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }
	nFaults := faults.Injected + 1 + 1 // broker requests failed, the Postgres restart, the corrupted store
	out := []string{
		fmt.Sprintf("soak %s (SOAK_SEED=%d): %d records paced over %s by %d producers, %d SKUs (%d hot), %d partitions, %d processor processes",
			sz.Name, sz.Seed, sz.Commands, sz.Load, sz.Producers, sz.SKUs, sz.Hot, partitions, instances),
		fmt.Sprintf("commands: %d produced (%d re-sent, %d invalid, %d malformed, %d misrouted), %d produce attempts retried",
			led.records, led.resent, led.invalid, len(led.dead), len(led.misrouted), led.failed),
		fmt.Sprintf("results: %d read: %d decisions, %d duplicates absorbed, %d expired and %d low_stock notices",
			rs.n, decisions, dups, rs.notices[schemas.TypeExpired], rs.notices[schemas.TypeLowStock]),
		fmt.Sprintf("kills: %d, each restarted after 0.5-3 s: %s", len(ch.kills), strings.Join(kills, ", ")),
		fmt.Sprintf("recovery after a kill (until every partition the instance owned decided again): %s", percentiles(recov)),
		fmt.Sprintf("faults: %d: %d broker requests failed by %d installed kfake faults (%s); Postgres down %s (the sink retried %d times); %d partition stores of %s wiped after corruption",
			nFaults, faults.Injected, faults.Installed, faults, r(ch.pgDown), countInLog(p.sinkLog, 0, "postgres unavailable"),
			logs.wiped, ch.corrupted.name),
		fmt.Sprintf("pipeline: %d misrouted forwarded, %d DLQ records, %d changelog records, %d Postgres rows; processors: %d session restarts, %d aborted transactions, %d partitions restored",
			ck.forwarded, ck.dlqRecords, ck.changelogRecords, ck.pgRows, logs.restarts, logs.aborts, logs.restored),
		fmt.Sprintf("expiry timers: %d fired notices, lag behind expires_at %s", len(lags), percentiles(lags)),
		fmt.Sprintf("time: setup %s, load %s, drain %s, check %s, total %s", r(tm.setup), r(tm.load), r(tm.drain), r(tm.check), r(tm.total)),
		"invariants:",
	}
	out = append(out, p.rep.lines()...)
	return append(out, fmt.Sprintf("soak: %d commands, %d kills, %d faults, %d violations", led.records, len(ch.kills), nFaults, p.rep.total()))
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
