package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/topics"
)

// The failover and rolling-restart measurement: three `reservations serve`
// processes (static members, instance ids p0..p2) on loopback against the
// broker process, a changelog holding FailoverHolds active holds, paced load
// from a load-generator process. (a) SIGKILL the owner of a third of the
// partitions and time until each of its partitions decides again on a
// survivor, with 0 and with 1 standby replica; (b) restart the three one after
// the other under load and count the partitions that moved.

// failoverPrefix is the topic prefix of the failover measurement.
const failoverPrefix = "bench-fo"

// failoverProcessors is how many processor processes the measurement runs.
const failoverProcessors = 3

// Failover is the failover and rolling-restart measurement.
type Failover struct {
	// Holds is the active holds in the changelog before the processors start.
	Holds      int   `json:"holds"`
	Partitions int32 `json:"partitions"`
	Processors int   `json:"processors"`
	// SessionTimeout is the processors' --session-timeout (0: the binary's
	// default, 30 s for a static member).
	SessionTimeout time.Duration `json:"session_timeout"`
	// Rate is the paced load during every measurement (commands/s).
	Rate float64 `json:"rate"`
	// ProduceSeconds is how long writing the changelog took (setup).
	ProduceSeconds float64        `json:"produce_seconds"`
	Kills          []FailoverKill `json:"kills"`
	Rolling        *Rolling       `json:"rolling,omitempty"`
	Check          BinaryCheck    `json:"check"`
	Notes          []string       `json:"notes,omitempty"`
}

// FailoverKill is one SIGKILL of the owner of a third of the partitions.
type FailoverKill struct {
	StandbyReplicas int `json:"standby_replicas"`
	// NotMeasured says why the kill was not measured (e.g. the binary has no
	// --standby-replicas); empty when it was.
	NotMeasured string  `json:"not_measured,omitempty"`
	Partitions  []int32 `json:"partitions"` // the killed process's
	// DetectionSeconds: kill until the group assigned every one of the killed
	// process's partitions to a survivor (the session timeout, mostly).
	DetectionSeconds float64 `json:"detection_seconds"`
	// TakeoverSeconds: from that assignment until every one of them decided a
	// command on its new owner (restore or standby promotion, first
	// transaction, the result's fetch).
	TakeoverSeconds float64 `json:"takeover_seconds"`
	// FailoverSeconds = DetectionSeconds + TakeoverSeconds: kill until every
	// partition answered again.
	FailoverSeconds float64 `json:"failover_seconds"`
	// ReadySeconds: kill until both survivors' /readyz answered 200 after the
	// assignment (every partition they own running).
	ReadySeconds float64 `json:"ready_seconds"`
	// LoadP99Ms is the p99 latency of the paced load around the kill.
	LoadP99Ms float64 `json:"load_p99_ms"`
}

// Rolling is the rolling restart of every processor under load.
type Rolling struct {
	// PartitionMoves: partitions whose owner changed during the restarts (from
	// the group's assignments, polled, and the processors' "partition
	// running" logs: the larger count).
	PartitionMoves int `json:"partition_moves"`
	// PartitionMovesGroup and PartitionMovesLogged are the two counts.
	PartitionMovesGroup  int `json:"partition_moves_group"`
	PartitionMovesLogged int `json:"partition_moves_logged"`
	// PartitionStarts counts "partition running" lines during the restarts:
	// each partition starts again on its restarted owner (at least once).
	PartitionStarts int     `json:"partition_starts"`
	Seconds         float64 `json:"seconds"`
	// Restarts of each process: SIGTERM until /readyz 200 again.
	RestartSeconds []float64 `json:"restart_seconds"`
	// Step is the paced load over the restarts, in windows of 5 s: commands
	// and errors summed, p50, p99 and max the largest of any window (p99 is the
	// headline figure).
	Step Step `json:"step"`
}

// foProc is one processor process of the measurement.
type foProc struct {
	name string // its instance id
	dir  string
	c    *child
	addr string
}

// foEnv is the measurement's processes and observers.
type foEnv struct {
	*binaryEnv
	procs   []*foProc
	standby int // --standby-replicas of the running processes
	own     *ownership
	first   *firstResults
}

// ownership follows partition owners from the processors' logs.
type ownership struct {
	mu     sync.Mutex
	owner  map[int32]string
	moves  int
	runs   int // "partition running" lines while counting
	counts bool
}

// running records a "partition running" log line of instance on partition p.
func (o *ownership) running(instance string, p int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if prev, ok := o.owner[p]; ok && prev != instance && o.counts {
		o.moves++
	}
	if o.counts {
		o.runs++
	}
	o.owner[p] = instance
}

// agrees reports whether the logged owner of every partition of want is
// want's.
func (o *ownership) agrees(want map[int32]string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for p, name := range want {
		if o.owner[p] != name {
			return false
		}
	}
	return true
}

// count starts (on) or stops counting moves and returns the moves and the
// partition starts so far.
func (o *ownership) count(on bool) (moves, runs int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if on && !o.counts {
		o.moves, o.runs = 0, 0
	}
	o.counts = on
	return o.moves, o.runs
}

// firstResults records, per partition of the results topic, when a result
// first arrived after a mark.
type firstResults struct {
	mu    sync.Mutex
	after map[int32]time.Time // partition -> the mark
	at    map[int32]time.Time
}

func (f *firstResults) handle(r *kgo.Record, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m, ok := f.after[r.Partition]; ok && now.After(m) {
		if _, done := f.at[r.Partition]; !done {
			f.at[r.Partition] = now
		}
	}
}

// watch starts waiting for the first result of p after t.
func (f *firstResults) watch(p int32, t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.after[p] = t
	delete(f.at, p)
}

func (f *firstResults) get(p int32) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.at[p]
	return t, ok
}

// failoverPhase runs the failover and rolling-restart measurement (skipped
// when FailoverHolds is 0).
func (r *run) failoverPhase(ctx context.Context) error {
	cfg := &r.cfg
	if cfg.FailoverHolds == 0 {
		r.logf("failover: no holds configured (%s mode): skipped", cfg.Mode)
		return nil
	}
	fo := &Failover{Holds: cfg.FailoverHolds, Partitions: cfg.Partitions, Processors: failoverProcessors,
		SessionTimeout: cfg.FailoverSessionTimeout, Rate: cfg.FailoverRate}
	r.rep.Failover = fo
	be := &binaryEnv{cfg: cfg, logf: r.logf, names: topics.NewNames(failoverPrefix)}
	var err error
	if be.dir, err = os.MkdirTemp("", "reservations-bench-failover-"); err != nil {
		return fmt.Errorf("failover: temp folder: %w", err)
	}
	e := &foEnv{binaryEnv: be, own: &ownership{owner: map[int32]string{}},
		first: &firstResults{after: map[int32]time.Time{}, at: map[int32]time.Time{}}}
	defer e.close()
	if be.reservations, be.loadgen, err = buildBinaries(ctx, be.dir); err != nil {
		return err
	}
	if err := be.startBroker(ctx); err != nil {
		return err
	}
	if err := ensureTopics(ctx, be.brokers, be.names, cfg.Partitions); err != nil {
		return err
	}
	t0 := time.Now()
	records, err := writeChangelog(ctx, be.brokers, be.names.Changelog, cfg.Partitions, cfg.SKUs, cfg.FailoverHolds)
	if err != nil {
		return fmt.Errorf("failover: %w", err)
	}
	fo.ProduceSeconds = time.Since(t0).Seconds()
	r.logf("failover: changelog of %d records (%d active holds, %d SKUs) written in %.1fs", records, fo.Holds, cfg.SKUs, fo.ProduceSeconds)
	reader, err := startReaderAtEnd(ctx, be.brokers, be.names.Results, e.first.handle)
	if err != nil {
		return fmt.Errorf("failover: results reader: %w", err)
	}
	defer reader.close()
	adm, err := kgo.NewClient(clientOpts(be.brokers)...)
	if err != nil {
		return err
	}
	defer adm.Close()
	group := kadm.NewClient(adm)

	standbyOK, why := e.binaryHasStandby(ctx)
	for i, standby := range []int{0, 1} {
		if standby > 0 && !standbyOK {
			fo.Kills = append(fo.Kills, FailoverKill{StandbyReplicas: standby, NotMeasured: why})
			r.logf("failover: with %d standby replica: not measured (%s)", standby, why)
			continue
		}
		if err := e.startAll(ctx, standby); err != nil {
			return err
		}
		if i == 0 {
			// Stock for the load's uniform SKUs is in the changelog already.
			r.logf("failover: %d processors ready (session timeout %s)", failoverProcessors, sessionTimeoutText(cfg.FailoverSessionTimeout))
		}
		k, err := e.kill(ctx, group, standby)
		if err != nil {
			return err
		}
		fo.Kills = append(fo.Kills, k)
		r.logf("failover: SIGKILL of %s (%d partitions) with %d standby: every partition decided again after %.2fs "+
			"(detection %.2fs + takeover %.2fs), survivors ready after %.2fs; load p99 %.0fms",
			e.procs[1].name, len(k.Partitions), standby, k.FailoverSeconds, k.DetectionSeconds, k.TakeoverSeconds, k.ReadySeconds, k.LoadP99Ms)
		if err := e.stopAll(); err != nil {
			return err
		}
	}
	// The rolling restart runs with the processors of the last measured kill.
	standby := 0
	if standbyOK {
		standby = 1
	}
	if err := e.startAll(ctx, standby); err != nil {
		return err
	}
	rl, err := e.rolling(ctx, group)
	if err != nil {
		return err
	}
	fo.Rolling = rl
	r.logf("failover: rolling restart of %d processors in %.1fs: %d partitions moved (group %d, logs %d); load p99 %.0fms over %d commands",
		failoverProcessors, rl.Seconds, rl.PartitionMoves, rl.PartitionMovesGroup, rl.PartitionMovesLogged, rl.Step.P99, rl.Step.Completed)
	if err := e.stopAll(); err != nil {
		return err
	}
	fo.Check = checkBinary(ctx, be.brokers, be.names.Changelog, be.names.Results, be.tags)
	c := &fo.Check
	r.rep.Oversell = append(r.rep.Oversell, OversellCheck{System: "failover", Scope: "kills and rolling restart (changelog replay)",
		SKUsChecked: c.SKUs, OversoldSKUs: c.OversoldSKUs, MismatchedSKUs: c.MismatchedSKUs, Error: c.Error,
		Detail: fmt.Sprintf("%d command ids, %d decided twice, %d unmatched, %d unknown", c.CommandIDs, c.DecidedTwice, c.Unmatched, c.Unknown)})
	r.logf("failover check: %d command ids, %d SKUs, %d active; %d violations %s %s", c.CommandIDs, c.SKUs, c.Active,
		c.Violations(), strings.Join(c.Examples, "; "), c.Error)
	return c.verdict()
}

func sessionTimeoutText(d time.Duration) string {
	if d == 0 {
		return "the binary's default"
	}
	return d.String()
}

// binaryHasStandby reports whether `reservations serve` takes
// --standby-replicas (from its usage), and if not, why.
func (e *foEnv) binaryHasStandby(ctx context.Context) (bool, string) {
	out, _ := exec.CommandContext(ctx, e.reservations, "serve", "--help").CombinedOutput()
	if bytes.Contains(out, []byte("--standby-replicas")) {
		return true, ""
	}
	return false, "the binary has no --standby-replicas flag"
}

// procArgs are the command line of processor i.
func (e *foEnv) procArgs(i, standby int) []string {
	name := fmt.Sprintf("p%d", i)
	args := []string{"serve", "--brokers", e.brokers[0], "--state-dir", filepath.Join(e.dir, name),
		"--http-addr", "127.0.0.1:0", "--topic-prefix", failoverPrefix, "--carts=false", "--log-format", "json",
		"--log-level", "info", "--instance-id", name}
	if d := e.cfg.FailoverSessionTimeout; d > 0 {
		args = append(args, "--session-timeout", d.String())
	}
	if standby > 0 {
		args = append(args, "--standby-replicas", strconv.Itoa(standby))
	}
	return args
}

// startAll starts the processors that are not running and waits until every
// one is ready and the partitions are spread over all of them.
func (e *foEnv) startAll(ctx context.Context, standby int) error {
	if len(e.procs) == 0 {
		e.procs = make([]*foProc, failoverProcessors)
	}
	if standby != e.standby {
		if err := e.stopAll(); err != nil {
			return err
		}
		e.standby = standby
	}
	for i := range e.procs {
		if e.procs[i] == nil || e.procs[i].c.exited() {
			p, err := e.startProc(ctx, i)
			if err != nil {
				return err
			}
			e.procs[i] = p
		}
	}
	return e.waitBalanced(ctx, 3*time.Minute)
}

// startProc starts processor i and waits for its admin address.
func (e *foEnv) startProc(ctx context.Context, i int) (*foProc, error) {
	args := e.procArgs(i, e.standby)
	p := &foProc{name: fmt.Sprintf("p%d", i), dir: filepath.Join(e.dir, fmt.Sprintf("p%d", i))}
	c := &child{name: "processor " + p.name, cmd: exec.Command(e.reservations, args...), tail: &tailBuffer{}}
	c.cmd.Env, c.cmd.SysProcAttr = childEnv(), childAttr()
	c.cmd.Stdout = io.Discard
	addrc := make(chan string, 1)
	c.cmd.Stderr = lines(func(line string) {
		var rec struct {
			Msg       string `json:"msg"`
			HTTP      string `json:"http"`
			Partition *int32 `json:"partition"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil {
			switch {
			case rec.Msg == "reservations serve running" && rec.HTTP != "":
				select {
				case addrc <- strings.TrimPrefix(rec.HTTP, "http://"):
				default:
				}
			case rec.Msg == "partition running" && rec.Partition != nil:
				e.own.running(p.name, *rec.Partition)
			}
		}
		c.tail.add(line)
	})
	if err := c.start(); err != nil {
		return nil, err
	}
	p.c = c
	select {
	case p.addr = <-addrc:
		return p, nil
	case <-c.done:
		return nil, fmt.Errorf("failover: processor %s exited at start: %v; output: %s", p.name, c.err, c.tail)
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(60 * time.Second):
		return nil, fmt.Errorf("failover: processor %s did not start within 60s; output: %s", p.name, c.tail)
	}
}

// waitBalanced waits until every running processor answers /readyz 200 and
// the group assigns every partition, each running processor holding some.
func (e *foEnv) waitBalanced(ctx context.Context, timeout time.Duration) error {
	adm, err := kgo.NewClient(clientOpts(e.brokers)...)
	if err != nil {
		return err
	}
	defer adm.Close()
	group := kadm.NewClient(adm)
	deadline := time.Now().Add(timeout)
	for {
		owners, err := e.owners(ctx, group)
		ok := err == nil && len(owners) == int(e.cfg.Partitions)
		held := map[string]int{}
		for _, o := range owners {
			held[o]++
		}
		for _, p := range e.procs {
			if p == nil || p.c.exited() {
				continue
			}
			if held[p.name] == 0 || !readyz(ctx, p.addr) {
				ok = false
			}
		}
		if ok {
			return nil
		}
		for _, p := range e.procs {
			if p != nil && p.c.exited() && !p.killed() {
				return fmt.Errorf("failover: processor %s exited: %v; output: %s", p.name, p.c.err, p.c.tail)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("failover: processors not ready and balanced within %s (owners %v)", timeout, owners)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// killed reports whether the process died of SIGKILL.
func (p *foProc) killed() bool {
	if !p.c.exited() || p.c.cmd.ProcessState == nil {
		return false
	}
	ws, ok := p.c.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// owners returns the group's assignment: partition -> instance id (member id
// for a member without one).
func (e *foEnv) owners(ctx context.Context, group *kadm.Client) (map[int32]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	gs, err := group.DescribeGroups(ctx, failoverGroup)
	if err != nil {
		return nil, err
	}
	g, ok := gs[failoverGroup]
	if !ok || g.Err != nil {
		return nil, fmt.Errorf("describe group %s: %v", failoverGroup, g.Err)
	}
	out := map[int32]string{}
	for _, m := range g.Members {
		name := m.MemberID
		if m.InstanceID != nil {
			name = *m.InstanceID
		}
		if c, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range c.Topics {
				if t.Topic != e.names.Commands {
					continue
				}
				for _, p := range t.Partitions {
					out[p] = name
				}
			}
		}
	}
	return out, nil
}

// failoverGroup is the processors' group (serve's default).
const failoverGroup = "reservations-processor"

// paced starts a paced load-generator step of d at the measurement's rate in
// the background; its result arrives on the returned channel.
func (e *foEnv) paced(ctx context.Context, tag string, d, wait time.Duration) <-chan loadOutcome {
	rate := e.cfg.FailoverRate
	lc := LoadConfig{Kind: KindPaced, Workload: WorkloadUniform, Ops: max(1, int(rate*d.Seconds())), Rate: rate,
		Seed: seedOf("failover/"+tag, 0), Tag: tag, Timeout: wait}
	out := make(chan loadOutcome, 1)
	go func() {
		res, err := e.load(ctx, lc)
		out <- loadOutcome{res, err}
	}()
	return out
}

type loadOutcome struct {
	res LoadResult
	err error
}

// detectionBound is the longest the measurement waits for the group to notice
// a killed process.
func (e *foEnv) detectionBound() time.Duration {
	if d := e.cfg.FailoverSessionTimeout; d > 0 {
		return d
	}
	return 45 * time.Second // the binary's static-member default (30 s) and more
}

// kill SIGKILLs processor 1 under load and measures how long until each of
// its partitions decides again on a survivor.
func (e *foEnv) kill(ctx context.Context, group *kadm.Client, standby int) (FailoverKill, error) {
	k := FailoverKill{StandbyReplicas: standby}
	victim := e.procs[1]
	owners, err := e.owners(ctx, group)
	if err != nil {
		return k, err
	}
	for p, o := range owners {
		if o == victim.name {
			k.Partitions = append(k.Partitions, p)
		}
	}
	slices.Sort(k.Partitions)
	if len(k.Partitions) == 0 {
		return k, fmt.Errorf("failover: %s owns no partition (owners %v)", victim.name, owners)
	}
	bound := e.detectionBound() + 60*time.Second
	load := e.paced(ctx, fmt.Sprintf("fk%d", standby), 2*time.Second+e.detectionBound()+15*time.Second, bound)
	time.Sleep(2 * time.Second) // the load runs before the kill
	killed := time.Now()
	_ = victim.c.cmd.Process.Kill()
	<-victim.c.done
	// Detection: every partition of the victim assigned to a survivor.
	assigned := map[int32]time.Time{}
	deadline := killed.Add(bound)
	for len(assigned) < len(k.Partitions) {
		if time.Now().After(deadline) {
			return k, fmt.Errorf("failover: the group did not reassign %s's partitions within %s", victim.name, bound)
		}
		now := time.Now()
		if o, err := e.owners(ctx, group); err == nil {
			for _, p := range k.Partitions {
				if _, done := assigned[p]; !done && o[p] != "" && o[p] != victim.name {
					assigned[p] = now
					e.first.watch(p, now)
				}
			}
		}
		select {
		case <-ctx.Done():
			return k, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	var detected time.Time
	for _, t := range assigned {
		detected = maxTime(detected, t)
	}
	k.DetectionSeconds = detected.Sub(killed).Seconds()
	// Readiness of the survivors after the assignment.
	readyDone := make(chan time.Time, 1)
	go func() {
		for time.Now().Before(deadline) && ctx.Err() == nil {
			ok := true
			for _, p := range e.procs {
				if p != victim && !readyz(ctx, p.addr) {
					ok = false
				}
			}
			if ok {
				readyDone <- time.Now()
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		readyDone <- time.Time{}
	}()
	// Takeover: the first decision of each partition on its new owner.
	var last time.Time
	for _, p := range k.Partitions {
		for {
			if t, ok := e.first.get(p); ok {
				last = maxTime(last, t)
				break
			}
			if time.Now().After(deadline) {
				return k, fmt.Errorf("failover: partition %d decided nothing within %s of the kill", p, bound)
			}
			select {
			case <-ctx.Done():
				return k, ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	k.FailoverSeconds = last.Sub(killed).Seconds()
	k.TakeoverSeconds = k.FailoverSeconds - k.DetectionSeconds
	if t := <-readyDone; !t.IsZero() {
		k.ReadySeconds = t.Sub(killed).Seconds()
	}
	lo := <-load
	if lo.err != nil {
		return k, fmt.Errorf("failover: load around the kill: %w", lo.err)
	}
	k.LoadP99Ms = lo.res.Step.P99
	return k, nil
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// rolling restarts every processor in turn (SIGTERM, start on the same
// folder and instance id, wait until ready) under paced load, and counts the
// partitions that changed owner.
func (e *foEnv) rolling(ctx context.Context, group *kadm.Client) (*Rolling, error) {
	rl := &Rolling{}
	before, err := e.owners(ctx, group)
	if err != nil {
		return nil, err
	}
	// The group may have given a partition to its owner before the owner
	// restored it and logged it running: counting moves from the logs before
	// they agree with the group would count the settling of the previous
	// phase as moves of the restarts.
	settle := time.Now().Add(time.Minute)
	for !e.own.agrees(before) {
		if time.Now().After(settle) {
			return nil, fmt.Errorf("failover: the processors' logs do not show the group's assignment %v within a minute", before)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Poll the group's assignment through the restarts.
	pollCtx, stopPoll := context.WithCancel(ctx)
	groupMoves := make(chan int, 1)
	go func() {
		last, moves := before, 0
		for pollCtx.Err() == nil {
			if o, err := e.owners(pollCtx, group); err == nil {
				for p, name := range o {
					if prev, ok := last[p]; ok && prev != name {
						moves++
					}
				}
				for p, name := range o {
					last[p] = name
				}
			}
			select {
			case <-pollCtx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
		groupMoves <- moves
	}()
	e.own.count(true)
	// The load runs in windows of 5 s until the restarts are done.
	loadDone := make(chan struct{})
	load := make(chan loadOutcome, 1)
	go func() {
		var sum loadOutcome
		for w := 0; ; w++ {
			lo := <-e.paced(ctx, fmt.Sprintf("fr%d-", w), 5*time.Second, 60*time.Second)
			if lo.err != nil {
				load <- lo
				return
			}
			s, st := &sum.res.Step, lo.res.Step
			s.Completed += st.Completed
			s.Errors += st.Errors
			s.P50, s.P99, s.Max = max(s.P50, st.P50), max(s.P99, st.P99), max(s.Max, st.Max)
			select {
			case <-loadDone:
				load <- sum
				return
			default:
			}
		}
	}()
	time.Sleep(2 * time.Second)
	t0 := time.Now()
	for i, p := range e.procs {
		r0 := time.Now()
		if err := p.c.stop(60 * time.Second); err != nil {
			stopPoll()
			return nil, fmt.Errorf("failover: rolling restart: %w", err)
		}
		np, err := e.startProc(ctx, i)
		if err != nil {
			stopPoll()
			return nil, err
		}
		e.procs[i] = np
		if err := e.waitBalanced(ctx, 3*time.Minute); err != nil {
			stopPoll()
			return nil, err
		}
		rl.RestartSeconds = append(rl.RestartSeconds, time.Since(r0).Seconds())
	}
	rl.Seconds = time.Since(t0).Seconds()
	time.Sleep(time.Second) // a late move shows in the group and the logs
	stopPoll()
	rl.PartitionMovesGroup = <-groupMoves
	rl.PartitionMovesLogged, rl.PartitionStarts = e.own.count(false)
	rl.PartitionMoves = max(rl.PartitionMovesGroup, rl.PartitionMovesLogged)
	close(loadDone)
	lo := <-load
	if lo.err != nil {
		return nil, fmt.Errorf("failover: load during the rolling restart: %w", lo.err)
	}
	rl.Step = lo.res.Step
	return rl, nil
}

// stopAll stops every running processor (SIGTERM) and forgets them.
func (e *foEnv) stopAll() error {
	var errs []error
	for i, p := range e.procs {
		if p == nil {
			continue
		}
		if !p.c.exited() || !p.killed() {
			if err := p.c.stop(60 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		e.procs[i] = nil
	}
	return errors.Join(errs...)
}

func (e *foEnv) close() {
	if err := e.stopAll(); err != nil {
		e.logf("failover: %v", err)
	}
	e.binaryEnv.close()
}

// finishFailover puts the failover measurement's figures into the headline:
// failover_seconds_{without,with}_standby (kill until every partition of the
// killed process decided again), its split into detection (the group's
// reassignment) and takeover (reassignment to first decision), the survivors'
// readiness, rolling_restart_partition_moves and the rolling restart's p99.
// A kill that was not measured (a binary without --standby-replicas) leaves
// its keys out and says so in Notes.
func (rep *Report) finishFailover() {
	fo := rep.Failover
	if fo == nil {
		return
	}
	h := rep.Headline
	fo.Notes = nil
	h["failover_holds"] = float64(fo.Holds)
	st := fo.SessionTimeout
	if st == 0 {
		st = 30 * time.Second // the binary's static-member default
	}
	h["failover_session_timeout_s"] = st.Seconds()
	for _, k := range fo.Kills {
		suffix := "without_standby"
		if k.StandbyReplicas > 0 {
			suffix = "with_standby"
		}
		if k.NotMeasured != "" {
			fo.Notes = append(fo.Notes, fmt.Sprintf("failover_seconds_%s not measured: %s", suffix, k.NotMeasured))
			continue
		}
		h["failover_seconds_"+suffix] = k.FailoverSeconds
		h["failover_detection_seconds_"+suffix] = k.DetectionSeconds
		h["failover_takeover_seconds_"+suffix] = k.TakeoverSeconds
		h["failover_ready_seconds_"+suffix] = k.ReadySeconds
		h["failover_load_p99_ms_"+suffix] = k.LoadP99Ms
	}
	if rl := fo.Rolling; rl != nil {
		h["rolling_restart_partition_moves"] = float64(rl.PartitionMoves)
		h["rolling_restart_p99_ms"] = rl.Step.P99
		h["rolling_restart_seconds"] = rl.Seconds
		h["rolling_restart_commands"] = float64(rl.Step.Completed)
		h["rolling_restart_errors"] = float64(rl.Step.Errors)
	}
	h["failover_violations"] = float64(fo.Check.Violations())
	h["failover_check_failed"] = b2f(fo.Check.verdict() != nil && fo.Check.Violations() == 0)
}
