package soak

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/reservations/reservations/internal/pgtest"
	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/topics"
)

// corruptMarker is what a processor logs when it finds a store unreadable.
const corruptMarker = `msg="state store unreadable`

// chaos runs the fault schedule of the soak in the test goroutine: SIGKILLs of
// random processor instances spread over the traffic phases, each restarted
// after 0.5-3 s (the middle one on a corrupted Badger directory); one Postgres
// restart; SIGSTOP freezes past the session timeout (zombies), half of them in
// quiet periods; a compaction of the changelogs in every quiet period; and
// stale-folder rejoins: an instance stopped, the changelogs compacted once the
// tombstones written meanwhile are older than delete.retention.ms, and the
// instance restarted on its old folder.
type chaos struct {
	t      *testing.T
	p      *pipeline
	sz     size
	ph     phases
	rng    *mrand.Rand
	insts  []*instance
	adm    *kadm.Client
	group  string
	names  topics.Names
	pg     *pgtest.Server
	events []event

	// What happened, for the report.
	kills       []kill
	pgDown      time.Duration
	corrupted   corruption
	freezes     []*freeze
	stales      []*staleRejoin
	compactions []compaction
	skipped     []string // compactions given up, with why the last attempt failed
	compactFail string   // why the last compaction attempt failed
	log         *os.File // chaos.log in the run's folder: every event with its time
	// ends are the changelog's end offsets, sampled every second (see compact).
	ends struct {
		sync.Mutex
		samples []endsAt
	}
}

// endsAt is a sample of the changelog's end offsets.
type endsAt struct {
	at   time.Time
	ends map[int32]int64
}

// logf notes an event in chaos.log.
func (c *chaos) logf(format string, args ...any) {
	if c.log != nil {
		fmt.Fprintf(c.log, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
}

type event struct {
	at time.Time
	do func()
}

// kill is one SIGKILL: when, of which instance, and the partitions it owned
// (all of them when unknown: the group was rebalancing).
type kill struct {
	at           time.Time
	inst         string
	parts        []int32
	unknown      bool
	corrupt      bool
	afterTraffic bool // after the last traffic phase: no command to decide, recovery not measured
}

// freeze is one SIGSTOP of a joined instance, continued (SIGCONT) once the
// group expelled it and at least a second past the session timeout: a zombie
// that wakes up believing it still owns its partitions (MEMBERSHIP.md,
// "frozen pod").
type freeze struct {
	inst         string
	parts        []int32 // the SKU partitions it owned (all when unknown)
	unknown      bool
	quiet        bool // frozen in a quiet period (holds of its partitions come due meanwhile)
	afterTraffic bool // after the last traffic phase: recovery not measured
	at           time.Time
	expelled     time.Duration // from SIGSTOP until it was seen gone from its groups (0: never)
	thawed       time.Time
}

// staleRejoin is one instance stopped (SIGTERM) and restarted on its folder
// after the changelogs were compacted.
type staleRejoin struct {
	inst           *instance
	left, rejoined time.Time
	compacted      bool      // the compaction before the rejoin happened
	compactedAt    time.Time // when
	removable      int       // tombstones written while away and older than delete.retention.ms at the compaction
	proc           *child    // the process started on the stale folder
	ready          time.Duration
	logStartsMoved int // changelog partitions whose log start that compaction moved
}

// compaction is one compaction of the changelogs.
type compaction struct {
	at          time.Time
	why         string
	frozeFor    time.Duration // every processor stopped meanwhile
	took        string        // the broker's time for Compact, ms
	attempts    int
	startsMoved int // changelog partitions whose log start moved (kfake only: Kafka never moves it on compaction)
}

// corruption is the restart on a corrupted store: the instance and where its
// log stood at the restart.
type corruption struct {
	name, log string
	from      int64
}

func newChaos(p *pipeline, ph phases) *chaos {
	c := &chaos{t: p.t, p: p, sz: p.sz, ph: ph, rng: mrand.New(mrand.NewPCG(p.sz.Seed, 3)), insts: p.insts,
		adm: p.adm, group: p.group, names: p.names, pg: p.pg}
	if f, err := os.Create(filepath.Join(p.root, "chaos.log")); err == nil {
		c.log = f
		p.t.Cleanup(func() { f.Close() })
	}
	for k := range ph.quiet {
		from, to := ph.window(k)
		c.logf("quiet period %d planned %s..%s", k+1, from.Format("15:04:05.000"), to.Format("15:04:05.000"))
	}
	return c
}

func (c *chaos) after(d time.Duration, do func()) { c.at(time.Now().Add(d), do) }

func (c *chaos) at(t time.Time, do func()) { c.events = append(c.events, event{at: t, do: do}) }

func (c *chaos) jitter(d time.Duration) time.Duration {
	return time.Duration(c.rng.Int64N(int64(d)))
}

// run schedules the faults over the phases and carries them out, returning
// when the last one is done (every instance running, none frozen).
func (c *chaos) run() {
	load := c.sz.Load
	every := load / time.Duration(c.sz.Kills+1)
	for i := range c.sz.Kills {
		tau := every*time.Duration(i+1) - every/4 + c.jitter(every/2)
		c.at(c.ph.wall(tau), func() { c.onStable(func() { c.kill(i == c.sz.Kills/2) }) })
	}
	c.at(c.ph.wall(load*45/100), c.restartPostgres)
	for k := range c.ph.quiet {
		from, to := c.ph.window(k)
		why := fmt.Sprintf("quiet period %d", k+1)
		c.at(from.Add(c.ph.quietFor*3/4), func() { c.compactBy(why, to, nil) })
	}
	for i := range c.sz.Freezes {
		// Odd ones in the first half of a traffic phase (thawed before the
		// next quiet period, whose compaction waits for no zombie), even ones
		// at the start of a quiet period: its holds come due while it is frozen.
		phase := load / time.Duration(c.ph.quiet+1)
		k := (i / 2) % (c.ph.quiet + 1)
		at := c.ph.wall(phase*time.Duration(k) + phase/10 + c.jitter(phase*3/10))
		if i%2 == 0 && c.ph.quiet > 0 {
			from, _ := c.ph.window((i / 2) % c.ph.quiet)
			at = from.Add(500 * time.Millisecond)
		}
		c.at(at, func() { c.onStable(c.freeze) })
	}
	for j := range c.sz.Stale {
		frac := 0.85
		if c.sz.Stale > 1 {
			frac = 0.45 + 0.4*float64(j)/float64(c.sz.Stale-1)
		}
		c.at(c.ph.wall(time.Duration(float64(load)*frac)), func() { c.onStable(c.staleLeave) })
	}
	stopSampling := c.sampleEnds()
	defer stopSampling()
	for len(c.events) > 0 {
		sort.SliceStable(c.events, func(i, j int) bool { return c.events[i].at.Before(c.events[j].at) })
		e := c.events[0]
		c.events = c.events[1:]
		time.Sleep(time.Until(e.at)) // the schedule, not a wait for a condition
		e.do()
	}
}

// onStable runs do once both groups are stable, or after 10 s anyway. A
// member that dies (or freezes past its session timeout) between JoinGroup
// and SyncGroup is never expired by the pinned kfake (see child.joined): it
// would hold up every rebalance of its group until the rebalance timeout
// (60 s), and a stopping member's Close waits for that rebalance. The two
// groups of the processes rebalance often, so the faults wait for a stable
// moment (a rebalance can still begin right after the check).
func (c *chaos) onStable(do func()) {
	deadline := time.Now().Add(10 * time.Second)
	var try func()
	try = func() {
		if c.stable() || time.Now().After(deadline) {
			do()
			return
		}
		c.after(250*time.Millisecond, try)
	}
	try()
}

// describeGroups describes the processors' group (and the cart
// coordinators' when carts run).
func (c *chaos) describeGroups() ([]string, kadm.DescribedGroups, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	groups := []string{c.group}
	if c.sz.Carts > 0 {
		groups = append(groups, cartGroup)
	}
	described, err := c.adm.DescribeGroups(ctx, groups...)
	return groups, described, err
}

// stable reports whether the groups are stable (not rebalancing).
func (c *chaos) stable() bool {
	groups, described, err := c.describeGroups()
	if err != nil {
		return false
	}
	for _, g := range groups {
		if d, ok := described[g]; !ok || d.Err != nil || d.State != "Stable" {
			return false
		}
	}
	return true
}

// candidates are the instances a fault may hit now.
func (c *chaos) candidates() []*instance {
	var cand []*instance
	for _, in := range c.insts {
		if in.available() && !c.protected(in) && time.Now().After(in.settleUntil) {
			cand = append(cand, in)
		}
	}
	return cand
}

// ownedOrAll returns the SKU partitions the instance owns, or all of them
// (unknown: the group is rebalancing).
func (c *chaos) ownedOrAll(name string) ([]int32, bool) {
	parts := c.owned(name)
	if len(parts) > 0 {
		return parts, false
	}
	for p := range int32(partitions) {
		parts = append(parts, p)
	}
	return parts, true
}

// kill SIGKILLs a random running instance and schedules its restart.
func (c *chaos) kill(corrupt bool) {
	cand := c.candidates()
	if len(cand) == 0 {
		c.after(time.Second, func() { c.onStable(func() { c.kill(corrupt) }) })
		return
	}
	in := cand[c.rng.IntN(len(cand))]
	k := kill{inst: in.name, corrupt: corrupt}
	k.parts, k.unknown = c.ownedOrAll(in.name)
	in.proc.kill()
	k.at = time.Now()
	k.afterTraffic = k.at.After(c.ph.end())
	c.kills = append(c.kills, k)
	c.logf("SIGKILL %s (partitions %s)", in.name, joinInts(k.parts))
	c.after(500*time.Millisecond+c.jitter(2500*time.Millisecond), func() {
		if corrupt {
			c.corrupt(in)
		}
		in.launch()
		c.logf("restarted %s (corrupted store: %v)", in.name, corrupt)
	})
}

// freeze stops a random joined instance with SIGSTOP; thawWhenExpelled
// continues it.
func (c *chaos) freeze() {
	cand := c.candidates()
	for _, in := range c.insts {
		if in.frozen {
			cand = nil // one zombie at a time
		}
	}
	if len(cand) == 0 {
		c.after(time.Second, func() { c.onStable(c.freeze) })
		return
	}
	in := cand[c.rng.IntN(len(cand))]
	f := &freeze{inst: in.name}
	f.parts, f.unknown = c.ownedOrAll(in.name)
	if err := in.proc.freeze(); err != nil {
		c.p.rep.violate(invProcesses, "SIGSTOP %s: %v", in.name, err)
		return
	}
	f.at = time.Now()
	f.quiet = c.ph.quietAt(f.at)
	f.afterTraffic = f.at.After(c.ph.end())
	in.frozen = true
	c.logf("SIGSTOP %s (partitions %s, quiet period %v)", in.name, joinInts(f.parts), f.quiet)
	c.freezes = append(c.freezes, f)
	c.after(sessionTimeout*3/4, func() { c.thawWhenExpelled(in, f) })
}

// thawWhenExpelled continues a frozen instance once its groups expelled it and
// at least a second past the session timeout went by (at the latest after
// three session timeouts: not being expelled is a violation).
func (c *chaos) thawWhenExpelled(in *instance, f *freeze) {
	now := time.Now()
	if f.expelled == 0 && !c.member(in.name) {
		f.expelled = now.Sub(f.at)
	}
	if (f.expelled == 0 || now.Sub(f.at) < sessionTimeout+time.Second) && now.Sub(f.at) < 3*sessionTimeout {
		c.after(250*time.Millisecond, func() { c.thawWhenExpelled(in, f) })
		return
	}
	if err := in.proc.thaw(); err != nil && in.proc.running() {
		c.p.rep.violate(invProcesses, "SIGCONT %s: %v", in.name, err)
	}
	in.frozen = false
	f.thawed = time.Now()
	in.settleUntil = f.thawed.Add(5 * time.Second)
	c.logf("SIGCONT %s (expelled after %s)", in.name, f.expelled)
}

// member reports whether the named instance is a member of its groups (true
// when the groups cannot be described).
func (c *chaos) member(name string) bool {
	groups, described, err := c.describeGroups()
	if err != nil {
		return true
	}
	for _, g := range groups {
		d, ok := described[g]
		if !ok || d.Err != nil {
			return true
		}
		for _, m := range d.Members {
			if strings.HasSuffix(m.ClientID, "@"+name+":1") {
				return true
			}
		}
	}
	return false
}

// staleLeave stops a random instance with SIGTERM for a stale-folder rejoin:
// the changelogs are compacted once the tombstones written while it is away
// are older than delete.retention.ms, then it restarts on its old folder.
//
// What this exercises: the processors' dedupe window is 1 minute, so from a
// minute after the first decisions (the stock of every SKU) on, the owners'
// sweeps tombstone decided commands and ended reservations on every
// partition, also on those whose old stores lie in the stopped instance's
// folder; the compaction then removes those tombstones. A store replaying
// only its tail would keep the deleted entries (and its sweep would delete
// them a second time: the changelog check flags that), so every store of the
// folder must be rebuilt in full (MEMBERSHIP.md rule 3; invStale checks the
// restores in the log). Which rule sends a store to a full restore is counted
// in the report: "away longer than half delete.retention.ms" (owned_at) is
// the one that protects on Kafka; kfake moves the log start when compaction
// removes a partition's first records (Kafka never does), and a store behind
// the log start is rebuilt in full by another rule, which would hide a broken
// owned_at rule. In the soak kfake moves the log start of most changelog
// partitions at every compaction (their first records, the stock's command/
// entries, are tombstoned a window after the setup), but records from the
// first seconds of the load (holds with long TTLs never touched again) keep
// it below the offsets of many stale stores: in the short soak a rejoin
// typically rebuilds 3-6 stores because of owned_at and 0-4 because of the
// log start; the report counts both, so a run where owned_at did not decide
// any (only the Kafka-irrelevant rule fired) shows.
func (c *chaos) staleLeave() {
	cand := c.candidates()
	if len(cand) == 0 {
		c.after(time.Second, c.staleLeave)
		return
	}
	in := cand[c.rng.IntN(len(cand))]
	in.away = true
	in.proc.terminate()
	c.logf("SIGTERM %s: away for a stale rejoin", in.name)
	// Waiting for it to exit is an event of its own: the schedule goes on.
	asked := time.Now()
	var exited func()
	exited = func() {
		if in.proc.running() && time.Since(asked) < 30*time.Second {
			c.after(100*time.Millisecond, exited)
			return
		}
		if in.proc.running() {
			in.proc.kill()
			c.p.rep.violate(invProcesses, "%s: clean stop for a stale rejoin: did not exit within 30 s after SIGTERM", in.name)
		} else if err := in.proc.err; err != nil {
			c.p.rep.violate(invProcesses, "%s: clean stop for a stale rejoin: %v", in.name, err)
		}
		c.logf("%s exited after %s", in.name, time.Since(asked).Round(time.Millisecond))
		c.away(in)
	}
	exited()
}

// away schedules the compaction and the rejoin of an instance that left.
func (c *chaos) away(in *instance) {
	sr := &staleRejoin{inst: in, left: time.Now()}
	c.stales = append(c.stales, sr)
	at := sr.left.Add(deleteRetention + 5*time.Second)
	if first := c.p.stocked.Add(dedupeWindow + deleteRetention + 5*time.Second); first.After(at) {
		at = first
	}
	why := "stale rejoin of " + in.name
	c.at(at, func() {
		// Up to two minutes: under the full soak's load the sink can lag the
		// changelog by more than the compaction allows (its rows must have
		// read every tombstone compaction removes) until the traffic ends;
		// the instance then stays away longer, which the scenario allows.
		c.compactBy(why, at.Add(2*time.Minute), func(ok bool) { c.rejoin(sr, ok) })
	})
}

// rejoin restarts a stale instance on its folder and waits (as events) until
// it runs partitions of every role.
func (c *chaos) rejoin(sr *staleRejoin, compacted bool) {
	sr.compacted, sr.compactedAt = compacted, time.Now()
	if compacted {
		sr.logStartsMoved = c.compactions[len(c.compactions)-1].startsMoved
	}
	sr.removable = c.p.mirror.tombstonesBetween(sr.left, sr.compactedAt.Add(-deleteRetention))
	in := sr.inst
	in.launch()
	in.away = false
	sr.proc, sr.rejoined = in.proc, time.Now()
	c.logf("restarted %s on its stale folder (compacted: %v, %d tombstones removable)", in.name, compacted, sr.removable)
	deadline := sr.rejoined.Add(45 * time.Second)
	var await func()
	await = func() {
		if sr.proc.runs(c.sz.Carts > 0) || time.Now().After(deadline) {
			sr.ready = time.Since(sr.rejoined)
			c.logf("%s runs partitions again", in.name)
			return
		}
		c.after(500*time.Millisecond, await)
	}
	await()
}

// sampleEnds samples the changelog's end offsets every second until stopped.
func (c *chaos) sampleEnds() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			lctx, lcancel := context.WithTimeout(ctx, 2*time.Second)
			listed, err := c.adm.ListEndOffsets(lctx, c.names.Changelog)
			lcancel()
			if err == nil && listed.Error() == nil {
				ends := map[int32]int64{}
				listed.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
				c.ends.Lock()
				c.ends.samples = append(c.ends.samples, endsAt{time.Now(), ends})
				c.ends.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// endsBefore returns the latest sample of the changelog's end offsets taken
// before t (false if none).
func (c *chaos) endsBefore(t time.Time) (endsAt, bool) {
	c.ends.Lock()
	defer c.ends.Unlock()
	for i := len(c.ends.samples) - 1; i >= 0; i-- {
		if c.ends.samples[i].at.Before(t) {
			return c.ends.samples[i], true
		}
	}
	return endsAt{}, false
}

// compactBy compacts the changelogs (compact), retrying every second until
// deadline while an instance is frozen or the pipeline is not quiescent; then
// calls then (if set) with whether it compacted.
func (c *chaos) compactBy(why string, deadline time.Time, then func(ok bool)) {
	frozen := false
	for _, in := range c.insts {
		frozen = frozen || in.frozen
	}
	ok := !frozen && c.compact(why)
	if frozen {
		c.compactFail = "an instance was frozen"
	}
	if !ok && time.Now().Before(deadline) {
		c.after(time.Second, func() { c.compactBy(why, deadline, then) })
		return
	}
	if !ok {
		c.skipped = append(c.skipped, why+" ("+c.compactFail+")")
		c.logf("compaction for %s given up: %s", why, c.compactFail)
	}
	if then != nil {
		then(ok)
	}
}

// compact compacts the changelogs (the broker's SIGHUP) when nothing can be
// lost by it:
//   - the sink stored the changelog's end offsets of delete.retention.ms - 4 s
//     ago (sampled every second; checked once, compactBy retries): it has
//     read every tombstone the compaction can remove, those older than
//     delete.retention.ms, as long as Compact runs within the next 4 s;
//   - every running processor is stopped (SIGSTOP, at most about 3 s: below
//     the session timeout) and no transaction is open on either changelog
//     (last stable offset == high watermark): kfake compacts open
//     transactions too (see runBroker), and nothing can commit meanwhile;
//   - the mirror read the changelog to its end, so it misses no record the
//     compaction removes.
//
// It returns false when that did not come together in a few attempts.
func (c *chaos) compact(why string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.compactFail = ""
	fail := func(format string, args ...any) bool {
		c.compactFail = fmt.Sprintf(format, args...)
		c.logf("compaction for %s: %s", why, c.compactFail)
		return false
	}
	sample, ok := c.endsBefore(time.Now().Add(-(deleteRetention - 4*time.Second)))
	if !ok {
		return fail("no sample of the changelog's end offsets %s old yet", deleteRetention-4*time.Second)
	}
	if behind, err := sinkBehind(ctx, c.p.db.Pool, c.names.Changelog, sample.ends); err != nil || behind != "" {
		return fail("the sink is behind the changelog end of %s ago: %s (%v)", time.Since(sample.at).Round(time.Second), behind, err)
	}
	starts, err := c.adm.ListStartOffsets(ctx, c.names.Changelog)
	if err != nil {
		return fail("list start offsets: %v", err)
	}
	// Tombstones written after the sample may be unread by the sink: they
	// must still be younger than delete.retention.ms when compacted.
	for attempt := 1; attempt <= 10; attempt++ {
		if time.Since(sample.at) > deleteRetention-1500*time.Millisecond { // an attempt takes up to ~1.1 s before Compact runs
			return fail("no quiescent moment while the sink's position allowed a compaction")
		}
		var stopped []*instance
		for _, in := range c.insts {
			if in.proc.running() && !in.frozen && in.proc.freeze() == nil {
				stopped = append(stopped, in)
			}
		}
		// Nothing slow while they are stopped: each step has a short timeout
		// (stopped past the session timeout, they would be expelled), and the
		// diagnosis of a failed attempt waits until they run again.
		frozeAt := time.Now()
		c.logf("compaction for %s, attempt %d: stopped %d processes", why, attempt, len(stopped))
		time.Sleep(50 * time.Millisecond) // requests already sent reach the broker
		qctx, qcancel := context.WithTimeout(ctx, time.Second)
		took, ok := "", c.quiescent(qctx)
		qcancel()
		slow, thawedAt := false, time.Time{}
		if ok {
			// Compact runs on the broker's loop, which serves no request
			// meanwhile. Should it take longer than 3 s, the processors are
			// continued anyway (stopped past the session timeout they would
			// be expelled); their requests wait for the compaction.
			err := c.p.broker.cmd.Process.Signal(syscall.SIGHUP)
			if err == nil {
				took, err = c.p.broker.expect("compacted ", 3*time.Second)
				if err != nil {
					slow, thawedAt = true, time.Now()
					for _, in := range stopped {
						_ = in.proc.thaw()
					}
					c.logf("compaction slower than 3 s: processes continued")
					took, err = c.p.broker.expect("compacted ", 30*time.Second)
				}
			}
			if ok = err == nil; !ok {
				c.compactFail = fmt.Sprintf("broker: %v", err)
			} else if why, skipped := strings.CutPrefix(took, "skipped: "); skipped {
				ok, took = false, ""
				c.compactFail = why + " (the broker's own check)"
			}
		}
		if !slow {
			thawedAt = time.Now()
			for _, in := range stopped {
				_ = in.proc.thaw()
			}
		}
		c.logf("continued %d processes after %s (compacted: %v, broker took %s ms)", len(stopped), thawedAt.Sub(frozeAt), ok, took)
		if !ok && strings.HasPrefix(c.compactFail, "a transaction was open") {
			dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
			c.compactFail += " (" + c.openTxns(dctx) + ")"
			dcancel()
		}
		if !ok {
			c.logf("not quiescent: %s", c.compactFail)
		}
		if ok {
			cp := compaction{at: frozeAt, why: why, frozeFor: thawedAt.Sub(frozeAt), took: took, attempts: attempt}
			if after, err := c.adm.ListStartOffsets(ctx, c.names.Changelog); err == nil {
				after.Each(func(o kadm.ListedOffset) {
					if before, ok := starts.Lookup(o.Topic, o.Partition); ok && o.Offset > before.Offset {
						cp.startsMoved++
					}
				})
			}
			c.compactions = append(c.compactions, cp)
			return true
		}
		time.Sleep(150*time.Millisecond + c.jitter(300*time.Millisecond))
	}
	return fail("not quiescent in 10 attempts (last: %s)", c.compactFail)
}

// openTxns describes the transactions the broker has in progress.
func (c *chaos) openTxns(ctx context.Context) string {
	txns, err := c.adm.DescribeTransactions(ctx)
	if err != nil {
		return fmt.Sprintf("describe transactions: %v", err)
	}
	var out []string
	for _, t := range txns.Sorted() {
		switch t.State {
		case "Empty", "CompleteCommit", "CompleteAbort", "Dead":
			continue
		}
		var ps []string
		for topic, parts := range t.Topics {
			for p := range parts {
				ps = append(ps, fmt.Sprintf("%s/%d", topic, p))
			}
		}
		sort.Strings(ps)
		out = append(out, fmt.Sprintf("%s %s for %s on %s", t.TxnID, t.State,
			time.Since(time.UnixMilli(t.StartTimestamp)).Round(time.Millisecond), strings.Join(ps, " ")))
	}
	return strings.Join(out, "; ")
}

// quiescent reports whether no transaction is open on the changelogs and the
// mirror read the changelog to its end (false when ctx ends first).
func (c *chaos) quiescent(ctx context.Context) bool {
	ts := []string{c.names.Changelog, c.names.CartChangelog}
	hw, err := c.adm.ListEndOffsets(ctx, ts...)
	if err == nil {
		err = hw.Error()
	}
	if err != nil {
		c.compactFail = fmt.Sprintf("list end offsets: %v", err)
		return false
	}
	lso, err := c.adm.ListCommittedOffsets(ctx, ts...)
	if err == nil {
		err = lso.Error()
	}
	if err != nil {
		c.compactFail = fmt.Sprintf("list last stable offsets: %v", err)
		return false
	}
	var open []string
	ends := map[int32]int64{}
	hw.Each(func(o kadm.ListedOffset) {
		if l, ok := lso.Lookup(o.Topic, o.Partition); !ok || l.Offset != o.Offset {
			open = append(open, fmt.Sprintf("%s/%d", o.Topic, o.Partition))
		}
		if o.Topic == c.names.Changelog {
			ends[o.Partition] = o.Offset
		}
	})
	if len(open) > 0 {
		sort.Strings(open)
		c.compactFail = fmt.Sprintf("a transaction was open on %s", strings.Join(open, ", "))
		return false
	}
	for !c.p.mirror.caughtUp(ends) {
		if ctx.Err() != nil {
			c.compactFail = "the mirror did not reach the changelog end in time"
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// protected: an instance restarted on a corrupted store is not killed again
// before it reported the corruption (or 30 s passed).
func (c *chaos) protected(in *instance) bool {
	return c.corrupted.name == in.name && time.Since(in.protectUntil) < 0 &&
		countInLog(in.log, c.corrupted.from, corruptMarker) == 0
}

// corrupt overwrites every file of the instance's partition stores with
// random bytes, and puts a garbage MANIFEST in the folder of every partition
// it has no store for, so that whatever it is assigned is unreadable.
func (c *chaos) corrupt(in *instance) {
	for p := range int32(partitions) {
		dir := processor.StateDir(in.dir, c.names.Changelog, p)
		require.NoError(c.t, os.MkdirAll(dir, 0o755))
		entries, err := os.ReadDir(dir)
		require.NoError(c.t, err)
		files := []string{"MANIFEST"}
		for _, e := range entries {
			if !e.IsDir() {
				files = append(files, e.Name())
			}
		}
		for _, f := range files {
			junk := make([]byte, 512)
			_, _ = rand.Read(junk)
			require.NoError(c.t, os.WriteFile(filepath.Join(dir, f), junk, 0o644))
		}
	}
	c.corrupted = corruption{name: in.name, log: in.log, from: in.proc.logSize()}
	in.protectUntil = time.Now().Add(30 * time.Second)
}

// restartPostgres stops the sink's Postgres and starts it again 1.5-3 s later.
func (c *chaos) restartPostgres() {
	c.pg.Stop(c.t)
	down := time.Now()
	c.after(1500*time.Millisecond+c.jitter(1500*time.Millisecond), func() {
		c.pg.Start(c.t)
		c.pgDown = time.Since(down)
	})
}

// owned returns the partitions of the commands topic the group assigned to
// the named instance (its member's client id ends in "@<name>:1").
func (c *chaos) owned(name string) []int32 {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	groups, err := c.adm.DescribeGroups(ctx, c.group)
	if err != nil {
		return nil
	}
	var parts []int32
	for _, m := range groups[c.group].Members {
		if !strings.HasSuffix(m.ClientID, "@"+name+":1") {
			continue
		}
		if a, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range a.Topics {
				if t.Topic == c.names.Commands {
					parts = append(parts, t.Partitions...)
				}
			}
		}
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	return parts
}
