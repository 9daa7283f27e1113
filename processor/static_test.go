package processor_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
)

// Static membership (group.instance.id): a processor restarted with the same
// InstanceID within its session timeout gets its partitions back and no other
// instance sees a partition move; one away longer loses them and gets some
// back when it returns; one replaced by another process with its id is fenced
// and exits instead of taking the group slot back.

// moveLog counts, per instance, the partition moves its log reports:
// partitions assigned to it, revoked from it, or stopped by the group.
type moveLog struct {
	mu     sync.Mutex
	events []moveEvent
}

type moveEvent struct {
	at        time.Time
	msg       string
	partition int64
}

// moveMsgs are the log messages of a partition coming or going.
var moveMsgs = []string{"partition assigned: restoring", "partition revoked", "partition stopped by the group"}

// handler returns a slog handler recording the moves (and nothing else).
func (m *moveLog) handler() slog.Handler { return &moveHandler{m: m} }

// since returns the moves recorded at or after t.
func (m *moveLog) since(t time.Time) []moveEvent {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []moveEvent
	for _, e := range m.events {
		if !e.at.Before(t) {
			out = append(out, e)
		}
	}
	return out
}

type moveHandler struct {
	m     *moveLog
	attrs []slog.Attr
}

func (h *moveHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *moveHandler) Handle(_ context.Context, r slog.Record) error {
	if !slices.Contains(moveMsgs, r.Message) {
		return nil
	}
	e := moveEvent{at: r.Time, msg: r.Message, partition: -1}
	look := func(a slog.Attr) bool {
		if a.Key == "partition" {
			e.partition = a.Value.Int64()
		}
		return true
	}
	for _, a := range h.attrs {
		look(a)
	}
	r.Attrs(look)
	h.m.mu.Lock()
	h.m.events = append(h.m.events, e)
	h.m.mu.Unlock()
	return nil
}

func (h *moveHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &moveHandler{m: h.m, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h *moveHandler) WithGroup(string) slog.Handler { return h }

// member is one static member of the static tests: an instance id, a state
// folder kept across restarts (a pod with its volume), the running instance
// and the moves its processes logged.
type member struct {
	id, dir string
	leave   bool // LeaveGroupOnShutdown
	in      *instance
	moves   *moveLog
}

// startStatic starts (or restarts) m as a static member.
// stockEverywhere sets onHand of one SKU per partition (named after prefix)
// and waits until every set is decided; it returns the SKUs and the command
// ids.
func (h *harness) stockEverywhere(prefix string, onHand int64) (skus, ids []string) {
	h.t.Helper()
	skus = h.skuPerPartition(prefix)
	var sets []schemas.Command
	for i, sku := range skus {
		sets = append(sets, stockSet(fmt.Sprintf("set-%d", i), sku, onHand))
	}
	h.send(sets...)
	ids = idsOf(sets)
	h.waitDecided(60*time.Second, ids...)
	return skus, ids
}

func (h *harness) startStatic(m *member) {
	h.t.Helper()
	if m.dir == "" {
		m.dir = h.t.TempDir()
	}
	if m.moves == nil {
		m.moves = &moveLog{}
	}
	log := slog.New(teeHandler{testLogger(h.t).Handler(), m.moves.handler()}).With("member", m.id)
	m.in = h.startOpts(m.dir, []processor.Option{processor.WithLogger(log)}, func(c *processor.Config) {
		c.InstanceID, c.LeaveGroupOnShutdown = m.id, m.leave
	})
}

// restart stops m cleanly (SIGTERM in a pod) and starts it again on its folder.
func (h *harness) restart(m *member) {
	h.t.Helper()
	m.in.stop(h.t)
	h.startStatic(m)
}

// owned is the sorted partitions m's instance runs.
func (m *member) owned() []int32 {
	return slices.Sorted(maps.Keys(m.in.p.Status()))
}

// trafficRound sends a stock.set and a reserve to every partition and waits
// until each is decided.
func (h *harness) trafficRound(skus []string, round int) []string {
	h.t.Helper()
	var cmds []schemas.Command
	for i, sku := range skus {
		cmds = append(cmds, reserve(fmt.Sprintf("r%d-%d", round, i), sku, fmt.Sprintf("h%d-%d", round, i), 1))
	}
	h.send(cmds...)
	ids := idsOf(cmds)
	h.waitDecided(90*time.Second, ids...)
	return ids
}

// exactlyOnce asserts one decisive result for every id and the changelog's
// invariants.
func (h *harness) exactlyOnce(ids []string) {
	h.t.Helper()
	h.drain()
	h.mu.Lock()
	for _, id := range ids {
		n := 0
		for _, r := range h.byCmd[id] {
			if !r.Duplicate {
				n++
			}
		}
		assert.Equal(h.t, 1, n, "decisive results of %s", id)
	}
	h.mu.Unlock()
	assertInvariants(h.t, h.changelogState())
}

// Restarts of static members within the session timeout move no partition:
// one restart, then two members restarted at once. The instances not restarted
// log no assignment, revoke or stop; the restarted ones come back with the same
// partitions; every command is decided once.
func TestStaticRestartWithinSessionTimeoutMovesNothing(t *testing.T) {
	h := newHarness(t, 6)
	h.cfg.SessionTimeout = 15 * time.Second // a restart here takes about a second; -race and a busy machine need room
	ms := []*member{{id: "a"}, {id: "b"}, {id: "c"}}
	for _, m := range ms {
		h.startStatic(m)
	}
	a, b, c := ms[0], ms[1], ms[2]
	h.waitReady(a.in, b.in, c.in)
	skus, ids := h.stockEverywhere("S", 1000)
	ids = append(ids, h.trafficRound(skus, 0)...)
	// The group is stable: every member had its final assignment.
	time.Sleep(2 * time.Second)
	before := map[string][]int32{}
	for _, m := range ms {
		before[m.id] = m.owned()
		require.NotEmpty(t, before[m.id], "member %s has partitions", m.id)
	}

	// One restart.
	mark := time.Now()
	h.restart(b)
	h.waitReady(a.in, b.in, c.in)
	require.Less(t, time.Since(mark), h.cfg.SessionTimeout, "the restart fit in the session timeout")
	assert.Empty(t, a.moves.since(mark), "a: no partition moved")
	assert.Empty(t, c.moves.since(mark), "c: no partition moved")
	assert.Equal(t, before["b"], b.owned(), "b got its partitions back")
	ids = append(ids, h.trafficRound(skus, 1)...)

	// Two restarts in a row: c is stopped while b is still starting.
	mark = time.Now()
	b.in.stop(t)
	h.startStatic(b)
	h.restart(c)
	h.waitReady(a.in, b.in, c.in)
	require.Less(t, time.Since(mark), h.cfg.SessionTimeout, "both restarts fit in the session timeout")
	assert.Empty(t, a.moves.since(mark), "a: no partition moved")
	for _, m := range ms {
		assert.Equal(t, before[m.id], m.owned(), "member %s kept its partitions", m.id)
	}
	ids = append(ids, h.trafficRound(skus, 2)...)
	h.exactlyOnce(ids)
}

// A static member away longer than its session timeout loses its partitions
// to the others (only after the timeout: a static member does not leave the
// group on a clean stop), and gets some back when it returns.
func TestStaticRestartAfterSessionTimeoutMovesAndReturns(t *testing.T) {
	h := newHarness(t, 6)
	h.cfg.SessionTimeout = 6 * time.Second
	ms := []*member{{id: "a"}, {id: "b"}, {id: "c"}}
	for _, m := range ms {
		h.startStatic(m)
	}
	a, b, c := ms[0], ms[1], ms[2]
	h.waitReady(a.in, b.in, c.in)
	skus, ids := h.stockEverywhere("T", 1000)
	time.Sleep(2 * time.Second)
	gone := b.owned()
	require.NotEmpty(t, gone)

	stopped := time.Now()
	b.in.stop(t)
	// Commands for b's partitions wait for the session timeout.
	h.send(reserve("during", skus[gone[0]], "h-during", 1))
	h.waitDecided(60*time.Second, "during")
	took := time.Since(stopped)
	assert.GreaterOrEqual(t, took, h.cfg.SessionTimeout-time.Second,
		"b's partitions moved before its session timeout: a static member must not leave on a clean stop")
	h.waitReady(a.in, c.in)
	assert.NotEmpty(t, a.moves.since(stopped), "a took some of b's partitions")
	assert.NotEmpty(t, c.moves.since(stopped), "c took some of b's partitions")
	ids = append(ids, "during")
	ids = append(ids, h.trafficRound(skus, 0)...)

	back := time.Now()
	h.startStatic(b)
	h.waitReady(a.in, b.in, c.in)
	assert.NotEmpty(t, b.owned(), "b has partitions again")
	assert.NotEmpty(t, slices.Concat(a.moves.since(back), c.moves.since(back)), "partitions moved back to b")
	ids = append(ids, h.trafficRound(skus, 1)...)
	h.exactlyOnce(ids)
}

// LeaveGroupOnShutdown: a static member stopping for good (scale-in) leaves
// the group by its instance id, so its partitions move at once, not after the
// session timeout.
func TestStaticLeaveGroupOnShutdownMovesAtOnce(t *testing.T) {
	h := newHarness(t, 4)
	h.cfg.SessionTimeout = 30 * time.Second
	a, b := &member{id: "a"}, &member{id: "b", leave: true}
	h.startStatic(a)
	h.startStatic(b)
	h.waitReady(a.in, b.in)
	skus, ids := h.stockEverywhere("L", 1000)
	time.Sleep(2 * time.Second)
	require.NotEmpty(t, b.owned())
	stopped := time.Now()
	b.in.stop(t)
	h.waitReady(a.in)
	assert.Less(t, time.Since(stopped), 10*time.Second, "the partitions moved at once, not after the 30 s session timeout")
	assert.Len(t, a.owned(), int(h.parts))
	// The group has no member b any more.
	adm := kadm.NewClient(h.c.Client(t))
	groups, err := adm.DescribeGroups(context.Background(), h.cfg.Group)
	require.NoError(t, err)
	for _, m := range groups[h.cfg.Group].Members {
		assert.False(t, m.InstanceID != nil && *m.InstanceID == "b", "b left the group")
	}
	h.send(reserve("after", skus[0], "h-after", 1))
	h.waitDecided(30*time.Second, "after")
	h.exactlyOnce(append(ids, "after"))
}

// A static member frozen past its session timeout (SIGSTOP) loses its
// partitions; when it wakes, nothing it decided meanwhile commits (its
// transactions are fenced by the generation), it rejoins under its instance
// id (nobody took it) and decides again.
func TestStaticFrozenPastSessionTimeout(t *testing.T) {
	h := newHarness(t, 4)
	logs := t.TempDir()
	a := h.startChildConf(childConfig{StateDir: t.TempDir(), LogFile: filepath.Join(logs, "a.log"), InstanceID: "a"})
	b := h.startChildConf(childConfig{StateDir: t.TempDir(), LogFile: filepath.Join(logs, "b.log"), InstanceID: "b"})
	require.True(t, a.waitAssigned(30*time.Second))
	require.True(t, b.waitAssigned(30*time.Second))
	skus := h.skuPerPartition("F")
	var cmds []schemas.Command
	for i, sku := range skus {
		cmds = append(cmds, stockSet(fmt.Sprintf("set-%d", i), sku, 10), reserveTTL(fmt.Sprintf("r-%d", i), sku, fmt.Sprintf("h-%d", i), 2, 8))
	}
	h.send(cmds...)
	h.waitDecided(60*time.Second, idsOf(cmds)...)

	require.NoError(t, a.cmd.Process.Signal(syscall.SIGSTOP))
	frozen := time.Now()
	// B takes every partition after the 6 s session timeout: a command on each
	// is decided.
	ids := idsOf(cmds)
	ids = append(ids, h.trafficRound(skus, 0)...)
	// The holds are due (8 s) while A is frozen: B expires them, and A's
	// timers fire as soon as it wakes.
	time.Sleep(max(0, 10*time.Second-time.Since(frozen)))
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGCONT))
	h.read(60*time.Second, func() bool { return len(h.expiredNotices()) == len(skus) })
	// A rejoins and gets partitions again; commands on all partitions decide.
	time.Sleep(8 * time.Second)
	ids = append(ids, h.trafficRound(skus, 1)...)
	require.NoError(t, a.cmd.Process.Signal(syscall.Signal(0)), "A is still running (nobody took its instance id)")
	a.stop(t)
	b.stop(t)
	h.exactlyOnce(ids)
	for id, n := range h.expiredNotices() {
		assert.Equal(t, 1, n, "expired notices of hold %s", id)
	}
	checkOwnership(t, filepath.Join(logs, "a.log"), filepath.Join(logs, "b.log"))
}

// A static member replaced by a new process with the same instance id (a pod
// rescheduled while the old one is frozen or cut off): the newcomer fences the
// old one's producer and takes its group slot at once (no session timeout);
// when the old one wakes, nothing of it commits (its due timers included) and
// it exits with ErrInstanceFenced instead of taking the slot back.
func TestStaticMemberReplacedIsFenced(t *testing.T) {
	h := newHarness(t, 4)
	logs := t.TempDir()
	old := h.startChildConf(childConfig{StateDir: t.TempDir(), LogFile: filepath.Join(logs, "old.log"), InstanceID: "x"})
	require.True(t, old.waitAssigned(30*time.Second))
	skus := h.skuPerPartition("R")
	var cmds []schemas.Command
	for i, sku := range skus {
		cmds = append(cmds, stockSet(fmt.Sprintf("set-%d", i), sku, 10), reserveTTL(fmt.Sprintf("r-%d", i), sku, fmt.Sprintf("h-%d", i), 3, 10))
	}
	h.send(cmds...)
	h.waitDecided(60*time.Second, idsOf(cmds)...)

	require.NoError(t, old.cmd.Process.Signal(syscall.SIGSTOP))
	replaced := time.Now()
	repl := h.startChildConf(childConfig{StateDir: t.TempDir(), LogFile: filepath.Join(logs, "new.log"), InstanceID: "x"})
	require.True(t, repl.waitAssigned(30*time.Second))
	assert.Less(t, time.Since(replaced), 6*time.Second, "the newcomer took the slot without waiting for the session timeout")
	ids := idsOf(cmds)
	ids = append(ids, h.trafficRound(skus, 0)...)
	// The newcomer expires the holds (10 s) and accepts new ones with the
	// stock they freed.
	h.read(60*time.Second, func() bool { return len(h.expiredNotices()) == len(skus) })
	var again []schemas.Command
	for i, sku := range skus {
		again = append(again, reserveTTL(fmt.Sprintf("again-%d", i), sku, fmt.Sprintf("g-%d", i), 3, 600))
	}
	h.send(again...)
	h.waitDecided(30*time.Second, idsOf(again)...)
	for _, c := range again {
		require.Equal(t, schemas.OutcomeAccepted, h.decisive(c.CommandID).Outcome)
	}
	ids = append(ids, idsOf(again)...)

	// The old process wakes with its holds due and its transaction open.
	require.NoError(t, old.cmd.Process.Signal(syscall.SIGCONT))
	exited := make(chan error, 1)
	go func() { exited <- old.cmd.Wait() }()
	select {
	case err := <-exited:
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "the replaced process exits with an error")
		require.Equal(t, exitInstanceFenced, ee.ExitCode(), "the replaced process exits with ErrInstanceFenced")
	case <-time.After(60 * time.Second):
		t.Fatal("the replaced process did not exit within 60 s of waking")
	}
	// The newcomer still owns everything and decides.
	ids = append(ids, h.trafficRound(skus, 1)...)
	repl.stop(t)
	h.exactlyOnce(ids)
	for id, n := range h.expiredNotices() {
		assert.Equal(t, 1, n, "expired notices of hold %s", id)
	}
	state := h.changelogState()
	for _, sku := range skus {
		st := state[schemas.StockKey(sku)].Stock
		require.NotNil(t, st, sku)
		assert.Equal(t, int64(3+2), st.Reserved, "%s: the again hold and the two rounds' holds", sku)
	}
	checkOwnership(t, filepath.Join(logs, "old.log"), filepath.Join(logs, "new.log"))
}
