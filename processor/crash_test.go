package processor_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/internal/kafkatest"
	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/statestore"
	"github.com/reservations/reservations/topics"
)

// envChild makes the test binary run one processor (see TestMain): the crash
// tests kill such child processes with SIGKILL, mid-transaction.
const envChild = "RESERVATIONS_TEST_CHILD"

type childConfig struct {
	Brokers  []string
	Prefix   string
	Group    string
	StateDir string
	Role     processor.Role
	// LogFile, when set, receives the child's log as JSON lines at level Info
	// (the membership tests read partition starts and stops from it).
	LogFile string
	// InstanceID, when set, makes the child a static member of the group
	// (static membership tests).
	InstanceID string
	// StandbyReplicas is the processor's Config.StandbyReplicas.
	StandbyReplicas int
}

func TestMain(m *testing.M) {
	if cfg := os.Getenv(envChild); cfg != "" {
		os.Exit(runChild(cfg))
	}
	os.Exit(m.Run())
}

func runChild(js string) int {
	var c childConfig
	if err := json.Unmarshal([]byte(js), &c); err != nil {
		fmt.Fprintln(os.Stderr, "child config:", err)
		return 2
	}
	lvl := slog.LevelWarn
	if os.Getenv("TEST_LOG") != "" {
		lvl = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With("child", c.StateDir)
	if c.LogFile != "" {
		f, err := os.OpenFile(c.LogFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "child log:", err)
			return 2
		}
		defer f.Close()
		log = slog.New(teeHandler{log.Handler(), slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo})})
	}
	p, err := processor.New(processor.Config{
		Role:               c.Role,
		Brokers:            c.Brokers,
		Topics:             topics.NewNames(c.Prefix),
		Group:              c.Group,
		StateDir:           c.StateDir,
		InstanceID:         c.InstanceID,
		CommitInterval:     20 * time.Millisecond,
		TransactionTimeout: 5 * time.Second,
		SessionTimeout:     6 * time.Second,
		StandbyReplicas:    c.StandbyReplicas,
		KafkaOpts:          kafkatest.ClientOpts(),
	}, processor.WithLogger(log))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go markAssigned(ctx, p, c.StateDir)
	if err := p.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "processor:", err)
		if errors.Is(err, processor.ErrInstanceFenced) {
			return exitInstanceFenced
		}
		return 1
	}
	return 0
}

// exitInstanceFenced is a child's exit code when Run ended with
// processor.ErrInstanceFenced.
const exitInstanceFenced = 3

// assignedMarker is the file a child creates in its state folder once the
// group assigned it partitions (see markAssigned).
func assignedMarker(dir string, pid int) string {
	return filepath.Join(dir, fmt.Sprintf("assigned-%d", pid))
}

// markAssigned creates the child's assignedMarker once it has partitions, so a
// test can wait for a restarted child to have completed its group join (and
// SyncGroup) before killing it again. kfake (the pinned version) never expires
// a member that dies between JoinGroup and SyncGroup: its JoinGroup response
// fails to send, so no session timer is armed, and the leader's SyncGroup
// cancels the pending-sync timer; the dead member then keeps its partitions
// for good. Real brokers arm the session timer when the join completes.
func markAssigned(ctx context.Context, p *processor.Processor, dir string) {
	for ctx.Err() == nil {
		if len(p.Status()) > 0 {
			_ = os.WriteFile(assignedMarker(dir, os.Getpid()), nil, 0o644)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAssigned waits until the child has partitions (or timeout passes).
func (c *child) waitAssigned(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(assignedMarker(c.dir, c.cmd.Process.Pid)); err == nil {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// child is a processor in its own OS process.
type child struct {
	cmd *exec.Cmd
	dir string
}

func (h *harness) startChild(dir string) *child {
	h.t.Helper()
	return h.startChildRole(dir, processor.RoleSKU)
}

// startChildRole starts a child processor of role (the cart coordinator's
// group is the SKU group's name + "-cart").
func (h *harness) startChildRole(dir string, role processor.Role) *child {
	h.t.Helper()
	return h.startChildConf(childConfig{StateDir: dir, Role: role})
}

// startChildConf starts a child processor with c (brokers, prefix and group
// are the harness's).
func (h *harness) startChildConf(c childConfig) *child {
	h.t.Helper()
	dir, role := c.StateDir, c.Role
	prefix := h.names.Commands[:len(h.names.Commands)-len(".commands")]
	group := h.cfg.Group
	if role == processor.RoleCart {
		group += "-cart"
	}
	c.Brokers, c.Prefix, c.Group = h.c.Brokers, prefix, group
	js, err := json.Marshal(c)
	require.NoError(h.t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+string(js))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	require.NoError(h.t, cmd.Start())
	ch := &child{cmd: cmd, dir: dir}
	h.t.Cleanup(func() { ch.kill() })
	return ch
}

// kill ends the child with SIGKILL: no clean close, an open transaction stays
// open, the Badger store is not closed.
func (c *child) kill() {
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
}

// stop ends the child cleanly and asserts it exited 0.
func (c *child) stop(t *testing.T) {
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, c.cmd.Wait())
}

// Crash and restart: processors are killed with SIGKILL in the middle of a
// stream (and so, under load, in the middle of transactions), restarted on the
// same state folder (tail restore) and on an empty one (full restore). No
// decision is lost or applied twice, every decision matches the reference
// model, and the final local state equals a replay of the changelog.
func TestCrashRestartExactlyOnce(t *testing.T) {
	h := newHarness(t, 4)
	w := genWorkload(2, 30, 4000)
	dirA := t.TempDir()
	a := h.startChild(dirA)
	h.sendConcurrently(w.sets, 1, 0)
	h.waitDecided(60*time.Second, idsOf(w.sets)...)

	// Three phases: each processor is killed while its phase is still being
	// sent and decided, so the next one must take over mid-stream.
	third := len(w.cmds) / 3
	phases := [][]schemas.Command{w.cmds[:third], w.cmds[third : 2*third], w.cmds[2*third:]}
	sendPaced := func(cmds []schemas.Command) chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < len(cmds); i += 100 {
				h.sendConcurrently(cmds[i:min(i+100, len(cmds))], 2, 8)
				time.Sleep(10 * time.Millisecond) // pace the stream so the kill lands mid-stream
			}
		}()
		return done
	}
	decidedOf := func(cmds []schemas.Command) int {
		n := 0
		for _, c := range cmds {
			if h.decisive(c.CommandID) != nil {
				n++
			}
		}
		return n
	}
	current := a
	for i, dir := range []string{dirA, t.TempDir()} { // B restores the tail, C restores in full
		done := sendPaced(phases[i])
		h.read(60*time.Second, func() bool { return decidedOf(phases[i]) >= len(phases[i])/3 })
		current.kill()
		t.Logf("killed a processor after %d of %d decisions of phase %d", decidedOf(phases[i]), len(phases[i]), i+1)
		current = h.startChild(dir)
		<-done
		h.waitDecided(120*time.Second, idsOf(phases[i])...)
	}
	c := current
	dirC := c.dir
	<-sendPaced(phases[2])
	h.sendConcurrently(w.dupes, 1, 0)
	h.waitDecided(120*time.Second, w.ids()...)
	h.read(30*time.Second, func() bool { return h.duplicates() >= len(w.dupes) })
	c.stop(t)
	h.checkAgainstModel(w)

	// The local state of C equals a replay of the changelog, byte for byte.
	want := h.changelogRaw()
	got := map[string]string{}
	for p := range h.parts {
		s, err := statestore.Open(processor.StateDir(dirC, h.names.Changelog, p), statestore.Options{})
		require.NoError(t, err)
		d, err := s.Dump()
		require.NoError(t, err)
		for k, v := range d {
			got[k] = string(v)
		}
		require.NoError(t, s.Close())
	}
	assertSameState(t, want, got)
}

// changelogRaw returns the latest value of every live changelog key.
func (h *harness) changelogRaw() map[string]string {
	out := map[string]string{}
	for k, c := range h.changelogState() {
		v, err := processor.EncodeChange(&c)
		require.NoError(h.t, err)
		out[k] = string(v)
	}
	return out
}

// assertSameState compares two key -> value maps, reporting at most a few
// differences (the maps hold thousands of entries).
func assertSameState(t *testing.T, want, got map[string]string) {
	t.Helper()
	assert.Equal(t, len(want), len(got), "number of live keys")
	n := 0
	for k, v := range want {
		if got[k] != v && n < 5 {
			n++
			t.Errorf("key %s: want %s, got %q", k, v, got[k])
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok && n < 10 {
			n++
			t.Errorf("key %s: not in the changelog", k)
		}
	}
}

// A zombie cannot commit: a processor frozen (SIGSTOP) longer than its session
// timeout loses its partitions to a new instance; when it wakes up with a
// transaction in flight, that transaction is fenced (KIP-447: its offset commit
// carries a stale generation) and aborted. Every decision stays exactly once
// and equal to the reference model.
func TestZombieCannotCommit(t *testing.T) {
	h := newHarness(t, 4)
	w := genWorkload(9, 20, 1500)
	a := h.startChild(t.TempDir())
	h.sendConcurrently(w.sets, 1, 0)
	h.waitDecided(60*time.Second, idsOf(w.sets)...)
	half := len(w.cmds) / 2
	h.sendConcurrently(w.cmds[:half], 2, 8)
	h.waitDecided(60*time.Second, idsOf(w.cmds[:half])...)

	// Freeze A in the middle of a stream (so, most likely, with a transaction
	// open), let B take over and decide the rest.
	mid := w.cmds[half : half+half/2]
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := 0; i < len(mid); i += 25 {
			h.sendConcurrently(mid[i:min(i+25, len(mid))], 1, 8)
		}
	}()
	h.read(60*time.Second, func() bool {
		n := 0
		for _, c := range mid {
			if h.decisive(c.CommandID) != nil {
				n++
			}
		}
		return n >= len(mid)/5
	})
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGSTOP))
	<-sent
	b := h.startChild(t.TempDir())
	h.waitDecided(90*time.Second, idsOf(mid)...)
	// Wake the zombie: whatever it was doing must not reach the topics.
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGCONT))
	h.sendConcurrently(w.cmds[half+half/2:], 2, 8)
	h.sendConcurrently(w.dupes, 1, 0)
	h.waitDecided(90*time.Second, w.ids()...)
	h.read(30*time.Second, func() bool { return h.duplicates() >= len(w.dupes) })
	a.stop(t)
	b.stop(t)
	h.checkAgainstModel(w)
}
