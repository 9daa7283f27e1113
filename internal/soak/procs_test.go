package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/internal/kafkatest"
	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/topics"
)

// envChild makes the test binary run a child (see TestMain) instead of the
// tests: the broker or one processor instance, configured by the JSON value.
const envChild = "RESERVATIONS_SOAK_CHILD"

// childConfig configures a child process.
type childConfig struct {
	Role   string // "broker" or "processor"
	Prefix string // topic prefix
	Seed   uint64 // of the broker's fault injector

	// Broker.
	Port    int
	DataDir string

	// Processor.
	Brokers   []string
	Group     string
	CartGroup string // when set, the process also runs the cart coordinator in this group
	StateDir  string
	Name      string // advertised as the group member's client id, and the instance id
}

// Timeouts of the processors: short, so that a killed instance's partitions
// move on quickly (the broker allows sessions down to 1 s).
const (
	sessionTimeout     = 4 * time.Second
	heartbeatInterval  = 400 * time.Millisecond
	transactionTimeout = 5 * time.Second
)

// dedupeWindow of the processors and coordinators: the minimum (1 min), so
// that their sweeps tombstone decided commands and ended reservations (and
// emptied carts' decisions) during the soak, and compaction has tombstones to
// remove (see chaos.staleLeave).
const dedupeWindow = time.Minute

// cartComponent is the logger component of the cart coordinator in a
// processor process (as `reservations serve --carts` names it).
const cartComponent = "cart-coordinator"

func TestMain(m *testing.M) {
	if js := os.Getenv(envChild); js != "" {
		os.Exit(runChild(js))
	}
	os.Exit(m.Run())
}

func runChild(js string) int {
	var c childConfig
	if err := json.Unmarshal([]byte(js), &c); err != nil {
		fmt.Fprintln(os.Stderr, "child config:", err)
		return 2
	}
	switch c.Role {
	case "broker":
		return runBroker(c)
	case "processor":
		return runProcessor(c)
	}
	fmt.Fprintln(os.Stderr, "unknown child role", c.Role)
	return 2
}

// runProcessor is the processor child: processor.Run until SIGTERM, and with
// CartGroup the cart coordinator beside it (RoleCart, its own group, the same
// state root and instance id), as `reservations serve --carts` runs them.
func runProcessor(c childConfig) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("instance", c.Name)
	rules := sku.DefaultRules()
	rules.DedupeWindow = dedupeWindow
	cfg := processor.Config{
		Brokers:  c.Brokers,
		Topics:   topics.NewNames(c.Prefix),
		Group:    c.Group,
		StateDir: c.StateDir,
		// The instance name, like a pod name: stable across restarts on the
		// folder, and one id for both roles (each reading or creating
		// StateDir/instance-id at the same time could disagree).
		InstanceID:         c.Name,
		AdvertisedAddr:     c.Name + ":1",
		TransactionTimeout: transactionTimeout,
		SessionTimeout:     sessionTimeout,
		Rules:              rules,
		KafkaOpts:          append(kafkatest.ClientOpts(), kgo.HeartbeatInterval(heartbeatInterval)),
	}
	procs := map[string]*processor.Processor{}
	p, err := processor.New(cfg, processor.WithLogger(log))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	procs["processor"] = p
	if c.CartGroup != "" {
		cc := cfg
		cc.Role, cc.Group = processor.RoleCart, c.CartGroup
		coord, err := processor.New(cc, processor.WithLogger(log.With("component", cartComponent)))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		procs[cartComponent] = coord
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	type done struct {
		name string
		err  error
	}
	dones := make(chan done, len(procs))
	for name, p := range procs {
		go func() { dones <- done{name, p.Run(ctx)} }()
	}
	rc := 0
	for range procs {
		d := <-dones
		if d.err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", d.name, d.err)
			rc = 1
		} else if ctx.Err() == nil {
			fmt.Fprintf(os.Stderr, "%s stopped without being asked to\n", d.name)
			rc = 1
		}
		stop() // one ended: end the other too
	}
	return rc
}

// child is a child process of the test, with its output in a log file.
type child struct {
	name string
	cmd  *exec.Cmd
	log  string        // file holding the child's stderr (and stdout, unless piped)
	done chan struct{} // closed when the process exited
	err  error         // Wait's result, set before done is closed
	// expected is set before we end the process, so that an exit is not
	// reported as unexpected.
	expected atomic.Bool
	// logFrom is the size of log when the child started; started, when.
	logFrom int64
	started time.Time
	carts   bool // a processor child that also runs the cart coordinator
	// killedAt is when kill saw the process dead (zero unless killed).
	killedAt time.Time
}

// joined reports whether the processor child has been assigned partitions
// since it started (its log says so), or has run long enough that it must
// have completed its group join. The chaos kills only joined children: the
// pinned kfake never expires a member that dies between JoinGroup and
// SyncGroup (its failed JoinGroup reply arms no session timer, the leader's
// SyncGroup cancels the pending-sync timer), so the dead member would keep
// its partitions until the next rebalance removes it after the rebalance
// timeout (60 s): the soak's occasional 60-80 s recoveries.
//
// A child with the cart coordinator is in two groups and has joined when both
// assigned it partitions.
func (c *child) joined() bool {
	if time.Since(c.started) > 30*time.Second {
		return true
	}
	b, err := os.ReadFile(c.log)
	if err != nil || c.logFrom > int64(len(b)) {
		return false
	}
	var sku, cart bool
	for _, l := range bytes.Split(b[c.logFrom:], []byte("\n")) {
		if bytes.Contains(l, []byte("partition assigned")) {
			if bytes.Contains(l, []byte("component="+cartComponent)) {
				cart = true
			} else {
				sku = true
			}
		}
	}
	return sku && (cart || !c.carts)
}

// runs reports whether the processor child runs partitions of the SKU role,
// and with carts also of the cart role (its log says "partition running").
func (c *child) runs(carts bool) bool {
	b, err := os.ReadFile(c.log)
	if err != nil || c.logFrom > int64(len(b)) {
		return false
	}
	var sku, cart bool
	for _, raw := range bytes.Split(b[c.logFrom:], []byte("\n")) {
		if l, ok := parseLogLine(string(raw)); ok && l.msg == "partition running" {
			sku = sku || l.role() == "sku"
			cart = cart || l.role() == "cart"
		}
	}
	return sku && (cart || !carts)
}

// freeze stops the process with SIGSTOP, thaw continues it (SIGCONT).
func (c *child) freeze() error { return c.cmd.Process.Signal(syscall.SIGSTOP) }
func (c *child) thaw() error   { return c.cmd.Process.Signal(syscall.SIGCONT) }

// startChild runs the test binary as a child with cfg. Its stderr (and stdout
// when stdout is nil) is appended to logFile. onExit is called when the
// process exits without expected set.
func startChild(t *testing.T, cfg childConfig, logFile string, stdout io.Writer, onExit func(*child)) *child {
	t.Helper()
	js, err := json.Marshal(cfg)
	require.NoError(t, err)
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(t, err)
	defer f.Close() // the child has its own descriptor
	var logFrom int64
	if fi, err := f.Stat(); err == nil {
		logFrom = fi.Size()
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+string(js))
	cmd.Stderr = f
	cmd.Stdout = f
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.SysProcAttr = sysProcAttr()
	require.NoError(t, cmd.Start())
	c := &child{name: cfg.Name, cmd: cmd, log: logFile, done: make(chan struct{}), logFrom: logFrom, started: time.Now(),
		carts: cfg.CartGroup != ""}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
		if !c.expected.Load() && onExit != nil {
			onExit(c)
		}
	}()
	t.Cleanup(c.kill)
	return c
}

// kill ends the child with SIGKILL (no clean close: an open transaction stays
// open, the Badger store is not closed) and waits for it.
func (c *child) kill() {
	c.expected.Store(true)
	_ = c.cmd.Process.Kill() // also ends a process stopped with SIGSTOP
	<-c.done
	if c.killedAt.IsZero() {
		c.killedAt = time.Now()
	}
}

// terminate sends SIGTERM without waiting (see running and err).
func (c *child) terminate() {
	c.expected.Store(true)
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
}

// stop ends the child with SIGTERM and returns its exit error (nil: exit 0);
// after timeout it gets SIGQUIT (the Go runtime writes every goroutine's
// stack to its log, which says where the shutdown hung), then is killed.
func (c *child) stop(timeout time.Duration) error {
	c.expected.Store(true)
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return c.err
	case <-time.After(timeout):
		_ = c.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-c.done:
		case <-time.After(3 * time.Second):
		}
		c.kill()
		return fmt.Errorf("%s did not stop within %s after SIGTERM (goroutine stacks from SIGQUIT in its log)", c.name, timeout)
	}
}

func (c *child) running() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// logSize is the current size of the child's log file.
func (c *child) logSize() int64 {
	fi, err := os.Stat(c.log)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// countInLog counts the occurrences of s in a log file from byte offset from on.
func countInLog(file string, from int64, s string) int {
	b, err := os.ReadFile(file)
	if err != nil || from > int64(len(b)) {
		return 0
	}
	return bytes.Count(b[from:], []byte(s))
}

// warnings returns the last n lines of a log file at level WARN or ERROR.
func warnings(file string, n int) string {
	b, _ := os.ReadFile(file)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			out = append(out, l)
		}
	}
	return strings.Join(out[max(0, len(out)-n):], "\n")
}

// tailLog returns the last n lines of a log file.
func tailLog(file string, n int) string {
	b, _ := os.ReadFile(file)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// instance is one processor instance: a state folder and the process
// currently running on it (restarted after every kill).
type instance struct {
	name  string
	dir   string
	log   string
	proc  *child
	procs []*child // every process started on the folder, in order
	start func() *child
	// protectUntil: not chosen for a kill before this time (the restart on a
	// corrupted store must get to restore first).
	protectUntil time.Time
	// settleUntil: a thawed zombie is not killed before this time: it logs
	// the loss of its partitions only once it reaches the broker again, and
	// killed before that, the ownership check (from its log) would have to
	// take it as running them until the kill.
	settleUntil time.Time
	// frozen: its process is stopped with SIGSTOP (a zombie); away: stopped for
	// a stale-folder rejoin. Neither is chosen for another fault.
	frozen, away bool
}

// launch starts a process on the instance's folder.
func (in *instance) launch() {
	in.proc = in.start()
	in.procs = append(in.procs, in.proc)
}

// available reports whether the instance can take a fault now: it runs, has
// joined its groups, and is neither frozen nor away.
func (in *instance) available() bool {
	return in.proc.running() && in.proc.joined() && !in.frozen && !in.away
}

// brokerProc is the broker child with its control channel: it prints
// "ready <addr>" once listening and "faults <json>" when told to stop
// injecting faults (SIGUSR2).
type brokerProc struct {
	*child
	addr  string
	lines chan string
}

func startBrokerProc(t *testing.T, root, prefix string, seed uint64, onExit func(*child)) *brokerProc {
	t.Helper()
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	b := &brokerProc{lines: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			b.lines <- sc.Text()
		}
		close(b.lines)
	}()
	port := freePort(t)
	b.child = startChild(t, childConfig{Role: "broker", Name: "broker", Prefix: prefix, Seed: seed, Port: port,
		DataDir: filepath.Join(root, "broker")}, filepath.Join(root, "broker.log"), pw, onExit)
	line, err := b.expect("ready ", 30*time.Second)
	require.NoError(t, err, "broker start (log: %s)", tailLog(b.log, 20))
	b.addr = line
	return b
}

// expect waits for the next control line starting with prefix.
func (b *brokerProc) expect(prefix string, timeout time.Duration) (string, error) {
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-b.lines:
			if !ok {
				return "", errors.New("broker output closed")
			}
			if rest, found := strings.CutPrefix(l, prefix); found {
				return rest, nil
			}
		case <-deadline:
			return "", fmt.Errorf("no %q line from the broker within %s", prefix, timeout)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
