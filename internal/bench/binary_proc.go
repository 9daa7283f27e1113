package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/reservations/reservations/topics"
)

// binaryEnv is the processes of the binary measurement: the broker and the
// processor run for the whole phase, a load generator per step.
type binaryEnv struct {
	cfg          *Config
	logf         func(string, ...any)
	dir          string // binaries and the processor's state folder
	reservations string // the built binaries
	loadgen      string
	buildSeconds float64
	command      string
	broker, proc *child
	brokerStdin  io.WriteCloser // closed: the broker exits
	brokers      []string
	names        topics.Names
	tags         []string // every tag a load generator used (and its hot stock tag)
	// profile is where the processor writes its CPU profile ("": none).
	profile string
	// admin is the processor's admin listener (host:port), for /metrics.
	admin string
}

// child is one process and the tail of its output.
type child struct {
	name string
	cmd  *exec.Cmd
	tail *tailBuffer
	done chan struct{}
	err  error
}

func (c *child) start() error {
	c.done = make(chan struct{})
	if err := c.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", c.name, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	return nil
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to timeout, then kills; it returns the
// process's exit error (nil: exit 0 after the signal).
func (c *child) stop(timeout time.Duration) error {
	if c == nil || c.cmd.Process == nil {
		return nil
	}
	if !c.exited() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-c.done:
		if c.err != nil {
			return fmt.Errorf("%s exited: %w; last output: %s", c.name, c.err, c.tail)
		}
		return nil
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("%s did not stop within %s of SIGTERM; last output: %s", c.name, timeout, c.tail)
	}
}

// tailBuffer keeps the last lines written to it.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (t *tailBuffer) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 12 {
		t.lines = t.lines[1:]
	}
	t.lines = append(t.lines, line)
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return "(none)"
	}
	return strings.Join(t.lines, " | ")
}

// childEnv is the harness's environment without RESERVATIONS_* variables, so
// that the processor runs with the flags given and its defaults only.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RESERVATIONS_") {
			env = append(env, kv)
		}
	}
	return env
}

// startBinaryEnv builds the binaries and starts the broker and the processor.
func startBinaryEnv(ctx context.Context, cfg *Config, logf func(string, ...any)) (_ *binaryEnv, err error) {
	e := &binaryEnv{cfg: cfg, logf: logf, names: binaryNames()}
	e.dir, err = os.MkdirTemp("", "reservations-bench-binary-")
	if err != nil {
		return nil, fmt.Errorf("binary: temp folder: %w", err)
	}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	t0 := time.Now()
	if e.reservations, e.loadgen, err = buildBinaries(ctx, e.dir); err != nil {
		return nil, err
	}
	e.buildSeconds = time.Since(t0).Seconds()
	logf("binary: built reservations and loadgen in %.1fs", e.buildSeconds)
	if err := e.startBroker(ctx); err != nil {
		return nil, err
	}
	if err := e.startProcessor(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// buildBinaries builds ./cmd/reservations as the Makefile does and the load
// generator into dir, from the module's root.
func buildBinaries(ctx context.Context, dir string) (reservations, loadgen string, err error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", "", fmt.Errorf("binary: the go command is needed to build the binaries: %w", err)
	}
	out, err := exec.CommandContext(ctx, gobin, "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		return "", "", fmt.Errorf("binary: run the harness inside the module (go env GOMOD: %q, %v)", mod, err)
	}
	root := filepath.Dir(mod)
	for _, b := range []struct{ out, pkg string }{
		{"reservations", "./cmd/reservations"},
		{"loadgen", "./internal/bench/cmd/loadgen"},
	} {
		cmd := exec.CommandContext(ctx, gobin, "build", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("binary: go build %s: %w: %s", b.pkg, err, bytes.TrimSpace(out))
		}
	}
	return filepath.Join(dir, "reservations"), filepath.Join(dir, "loadgen"), nil
}

// startBroker starts `loadgen broker` and reads its address.
func (e *binaryEnv) startBroker(ctx context.Context) error {
	c, stdin, a, err := startBrokerChild(ctx, e.loadgen, "broker")
	e.broker, e.brokerStdin = c, stdin
	if err != nil {
		return fmt.Errorf("binary: %w", err)
	}
	e.brokers = []string{a}
	e.logf("binary: broker (kfake, its own process, log in memory) on %s, pid %d", a, c.cmd.Process.Pid)
	return nil
}

// startBrokerChild starts exe args (a process that calls RunBroker: `loadgen
// broker`, `httpload -serve-broker`) and waits for its address. It runs in a
// process group of its own, so that Ctrl-C in a terminal stops the parent,
// which stops the broker last. Closing stdin makes it exit; c and stdin are
// set when err is not nil too, once the process started (the caller stops it).
func startBrokerChild(ctx context.Context, exe string, args ...string) (c *child, stdin io.WriteCloser, addr string, err error) {
	c = &child{name: "broker", cmd: exec.Command(exe, args...), tail: &tailBuffer{}}
	c.cmd.Env, c.cmd.SysProcAttr = childEnv(), ownGroup(childAttr())
	if stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, nil, "", err
	}
	ready := make(chan string, 1)
	c.cmd.Stdout = lines(func(line string) {
		if a, ok := strings.CutPrefix(line, "ready "); ok {
			select {
			case ready <- a:
			default:
			}
		}
		c.tail.add(line)
	})
	c.cmd.Stderr = lines(c.tail.add)
	if err := c.start(); err != nil {
		return nil, nil, "", err
	}
	select {
	case a := <-ready:
		return c, stdin, a, nil
	case <-c.done:
		return c, stdin, "", fmt.Errorf("broker exited at start: %v; output: %s", c.err, c.tail)
	case <-ctx.Done():
		return c, stdin, "", ctx.Err()
	case <-time.After(30 * time.Second):
		return c, stdin, "", fmt.Errorf("broker did not report its address within 30s; output: %s", c.tail)
	}
}

// StartBrokerProcess runs exe args as a kfake broker process (see
// startBrokerChild) and returns its address and its stop: close its stdin,
// wait for it (SIGTERM, then a kill, after 10 s).
func StartBrokerProcess(ctx context.Context, exe string, args ...string) (addr string, stop func() error, err error) {
	c, stdin, addr, err := startBrokerChild(ctx, exe, args...)
	stop = func() error {
		if stdin != nil {
			_ = stdin.Close()
		}
		if c == nil {
			return nil
		}
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
		}
		return c.stop(10 * time.Second)
	}
	if err != nil {
		_ = stop()
		return "", nil, err
	}
	return addr, stop, nil
}

// startProcessor starts `reservations serve` on the broker and waits until
// its /readyz answers 200.
func (e *binaryEnv) startProcessor(ctx context.Context) error {
	args := []string{"serve", "--brokers", e.brokers[0], "--create-topics", "--partitions", strconv.Itoa(int(e.cfg.Partitions)),
		"--state-dir", filepath.Join(e.dir, "state"), "--http-addr", "127.0.0.1:0", "--topic-prefix", binaryPrefix,
		"--carts=false", "--log-format", "json", "--log-level", "info"}
	e.command = "reservations " + strings.Join(args, " ")
	e.command = strings.Replace(e.command, e.brokers[0], "<broker>", 1)
	e.command = strings.Replace(e.command, filepath.Join(e.dir, "state"), "<tmp>/state", 1)
	c := &child{name: "processor", cmd: exec.Command(e.reservations, args...), tail: &tailBuffer{}}
	c.cmd.Env, c.cmd.SysProcAttr = childEnv(), childAttr()
	if path := e.cfg.CPUProfile; path != "" {
		ext := filepath.Ext(path)
		e.profile = strings.TrimSuffix(path, ext) + "-binary" + ext
		c.cmd.Env = append(c.cmd.Env, "RESERVATIONS_CPU_PROFILE="+e.profile)
	}
	c.cmd.Stdout = io.Discard
	addrc := make(chan string, 1)
	c.cmd.Stderr = lines(func(line string) {
		var rec struct {
			Msg  string `json:"msg"`
			HTTP string `json:"http"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "reservations serve running" && rec.HTTP != "" {
			select {
			case addrc <- strings.TrimPrefix(rec.HTTP, "http://"):
			default:
			}
		}
		c.tail.add(line)
	})
	if err := c.start(); err != nil {
		return err
	}
	e.proc = c
	var addr string
	select {
	case addr = <-addrc:
	case <-c.done:
		return fmt.Errorf("binary: processor exited at start: %v; output: %s", c.err, c.tail)
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(60 * time.Second):
		return fmt.Errorf("binary: processor did not start within 60s; output: %s", c.tail)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if readyz(ctx, addr) {
			break
		}
		if c.exited() {
			return fmt.Errorf("binary: processor exited before it was ready: %v; output: %s", c.err, c.tail)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("binary: processor not ready within 60s; output: %s", c.tail)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	e.admin = addr
	e.logf("binary: processor (reservations serve, its own process) ready, pid %d, admin http://%s", c.cmd.Process.Pid, addr)
	return nil
}

func readyz(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// load runs one load-generator process for lc (brokers, topics, SKUs and the
// CPU pids filled in) and returns its result.
// The step's transaction figures come from the processor's /metrics, read
// just before and after it (when one processor runs: the failover
// measurement's several have no admin address here).
func (e *binaryEnv) load(ctx context.Context, lc LoadConfig) (LoadResult, error) {
	e.tags = append(e.tags, lc.Tag, lc.Tag+"s")
	if e.admin == "" {
		return e.loadOn(ctx, lc, strings.TrimSuffix(e.names.Commands, ".commands"), e.proc)
	}
	t0, err := scrapeTxnStats(ctx, e.admin)
	if err != nil {
		return LoadResult{}, fmt.Errorf("processor: %w", err)
	}
	res, err := e.loadOn(ctx, lc, strings.TrimSuffix(e.names.Commands, ".commands"), e.proc)
	if err != nil {
		return res, err
	}
	t1, err := scrapeTxnStats(ctx, e.admin)
	if err != nil {
		return res, fmt.Errorf("processor: %w", err)
	}
	t1.since(t0, &res.Step)
	return res, nil
}

// scrapeTxnStats reads the transaction counters from the /metrics of a
// processor or a pass-through at addr (host:port).
func scrapeTxnStats(ctx context.Context, addr string) (txnStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return txnStats{}, fmt.Errorf("metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return txnStats{}, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return txnStats{}, fmt.Errorf("metrics of %s: %s", addr, resp.Status)
	}
	mfs, err := parseMetrics(resp.Body)
	if err != nil {
		return txnStats{}, fmt.Errorf("metrics of %s: %w", addr, err)
	}
	return txnStatsOf(mfs, "reservations"), nil
}

// parseMetrics reads metrics in the Prometheus text format.
func parseMetrics(r io.Reader) ([]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	byName, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	mfs := make([]*dto.MetricFamily, 0, len(byName))
	for _, mf := range byName {
		mfs = append(mfs, mf)
	}
	return mfs, nil
}

// loadOn runs one load-generator process for lc against the topics of prefix,
// with proc (the processor, or the pass-through) as the "processor" whose CPU
// time the step reports; nil when several processors run (the failover
// measurement reads no CPU time).
func (e *binaryEnv) loadOn(ctx context.Context, lc LoadConfig, prefix string, proc *child) (LoadResult, error) {
	lc.Brokers, lc.TopicPrefix, lc.SKUs = e.brokers, prefix, e.cfg.SKUs
	if proc != nil {
		lc.CPUPIDs = map[string]int{"processor": proc.cmd.Process.Pid, "broker": e.broker.cmd.Process.Pid}
	}
	ctx, cancel := context.WithTimeout(ctx, lc.Timeout+3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.loadgen, append([]string{"load"}, lc.Args()...)...)
	cmd.Env, cmd.SysProcAttr = childEnv(), childAttr()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return LoadResult{}, fmt.Errorf("loadgen %s: %w: %s", lc.Kind, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if proc != nil && proc.exited() {
		return LoadResult{}, fmt.Errorf("%s exited during the step: %v; output: %s", proc.name, proc.err, proc.tail)
	}
	var res LoadResult
	lines := bytes.Split(bytes.TrimSpace(stdout.Bytes()), []byte("\n"))
	if err := json.Unmarshal(lines[len(lines)-1], &res); err != nil {
		return res, fmt.Errorf("loadgen %s: result: %w (output %q)", lc.Kind, err, stdout.String())
	}
	return res, nil
}

// stopProcessor stops the processor with SIGTERM (it ends its transaction and
// leaves the group).
func (e *binaryEnv) stopProcessor() error {
	err := e.proc.stop(60 * time.Second)
	if err != nil {
		return fmt.Errorf("stop processor: %w", err)
	}
	return nil
}

func (e *binaryEnv) processorMaxRSSMB() float64 {
	if e.proc == nil || !e.proc.exited() || e.proc.cmd.ProcessState == nil {
		return 0
	}
	return maxRSSMB(e.proc.cmd.ProcessState)
}

// close stops every process and removes the folder.
func (e *binaryEnv) close() {
	if e.proc != nil {
		if err := e.proc.stop(60 * time.Second); err != nil && !errors.Is(err, os.ErrProcessDone) {
			e.logf("binary: %v", err)
		}
	}
	if e.brokerStdin != nil {
		_ = e.brokerStdin.Close()
	}
	if e.broker != nil {
		_ = e.broker.stop(30 * time.Second)
	}
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
}

// lineWriter calls fn with every complete line written to it (exec copies a
// child's output from one goroutine; a line may come in several writes).
type lineWriter struct {
	fn  func(string)
	buf []byte
}

func lines(fn func(string)) *lineWriter { return &lineWriter{fn: fn} }

func (w *lineWriter) Write(b []byte) (int, error) {
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		if line := string(w.buf[:i]); line != "" {
			w.fn(line)
		}
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 1<<20 { // a line without end: keep its start only
		w.fn(string(w.buf[:4096]))
		w.buf = nil
	}
	return len(b), nil
}

// Args returns the load generator's command-line flags for lc (see
// RegisterFlags).
func (lc *LoadConfig) Args() []string {
	a := []string{"-brokers", strings.Join(lc.Brokers, ","), "-topic-prefix", lc.TopicPrefix, "-kind", lc.Kind,
		"-workload", lc.Workload, "-ops", strconv.Itoa(lc.Ops), "-skus", strconv.Itoa(lc.SKUs),
		"-seed", strconv.FormatUint(lc.Seed, 10), "-tag", lc.Tag, "-clients", strconv.Itoa(lc.Clients),
		"-rate", strconv.FormatFloat(lc.Rate, 'f', -1, 64), "-timeout", lc.Timeout.String()}
	for name, pid := range lc.CPUPIDs {
		a = append(a, "-cpu-pid", name+"="+strconv.Itoa(pid))
	}
	return a
}

// RegisterFlags binds lc to the load generator's flags on fs.
func (lc *LoadConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.Func("brokers", "seed brokers, comma-separated host:port", func(v string) error {
		lc.Brokers = strings.Split(v, ",")
		return nil
	})
	fs.StringVar(&lc.TopicPrefix, "topic-prefix", topics.DefaultPrefix, "topic name prefix of the pipeline")
	fs.StringVar(&lc.Kind, "kind", KindClosed, "closed, open, paced or setup (stock.set of every uniform SKU)")
	fs.StringVar(&lc.Workload, "workload", WorkloadUniform, "uniform, hot or mixed")
	fs.IntVar(&lc.Ops, "ops", 10_000, "commands of the step (about: whole sessions)")
	fs.IntVar(&lc.SKUs, "skus", 10_000, "SKUs of the uniform part (setup: SKUs to stock)")
	fs.Uint64Var(&lc.Seed, "seed", 1, "seed of the generated commands")
	fs.StringVar(&lc.Tag, "tag", "", "command ids are <tag>.N (unique per step)")
	fs.IntVar(&lc.Clients, "clients", 16, "closed loop: concurrent clients")
	fs.Float64Var(&lc.Rate, "rate", 0, "paced: commands per second")
	fs.DurationVar(&lc.Timeout, "timeout", 10*time.Second,
		"closed: stop taking new sessions after it; open, paced, setup: wait this long for results after the last send")
	fs.Func("cpu-pid", "name=pid of a process whose CPU time over the step to report (repeatable)", func(v string) error {
		name, pid, ok := strings.Cut(v, "=")
		n, err := strconv.Atoi(pid)
		if !ok || name == "" || err != nil || n <= 0 {
			return fmt.Errorf("want name=pid, got %q", v)
		}
		if lc.CPUPIDs == nil {
			lc.CPUPIDs = map[string]int{}
		}
		lc.CPUPIDs[name] = n
		return nil
	})
}
