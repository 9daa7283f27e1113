package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/topics"
)

// The load generator of the binary measurement (cmd/loadgen): one process per
// step, talking to the broker and the `reservations serve` process over
// loopback like any request/reply client would.

// KindSetup is the LoadConfig.Kind that sets the stock of the uniform SKUs
// (ample) before the measured steps.
const KindSetup = "setup"

// loadFetchMaxWait is the results consumer's fetch max wait: short, as a
// request/reply client wants (franz-go's default is 5s, which only matters when
// the broker does not answer a fetch as soon as data is there).
const loadFetchMaxWait = 100 * time.Millisecond

// LoadConfig configures one step of the load generator.
type LoadConfig struct {
	// Brokers are the seed brokers; TopicPrefix names the pipeline's topics.
	Brokers     []string
	TopicPrefix string
	// Kind is KindClosed, KindOpen, KindPaced or KindSetup.
	Kind string
	// Workload (uniform, hot, mixed) and the plan: about Ops commands over
	// SKUs uniform SKUs, generated from Seed with command ids Tag.N (the same
	// generator as the in-process pipeline measurement).
	Workload string
	Ops      int
	SKUs     int
	Seed     uint64
	Tag      string
	// Clients is the closed-loop concurrency; Rate the paced rate (commands/s).
	Clients int
	Rate    float64
	// Timeout: closed loop, clients stop taking new sessions after it; open
	// loop and paced, how long to wait for the results after the last send.
	Timeout time.Duration
	// CPUPIDs names processes whose CPU time (user + system) over the measured
	// window the result reports, e.g. processor=1234.
	CPUPIDs map[string]int
}

// LoadResult is what one load-generator step prints (one JSON line).
type LoadResult struct {
	Step Step `json:"step"`
	// CPUSeconds is the CPU time of each CPUPIDs process over the measured
	// window, and of the load generator itself ("loadgen"); a process whose
	// CPU time could not be read is missing.
	CPUSeconds map[string]float64 `json:"cpu_seconds"`
}

func (lc *LoadConfig) validate() error {
	var errs []error
	if len(lc.Brokers) == 0 {
		errs = append(errs, errors.New("brokers: at least one required"))
	}
	if lc.TopicPrefix == "" || lc.Tag == "" {
		errs = append(errs, errors.New("topic prefix and tag must not be empty"))
	}
	if lc.SKUs < 1 || lc.Ops < 1 {
		errs = append(errs, fmt.Errorf("skus (%d) and ops (%d) must be >= 1", lc.SKUs, lc.Ops))
	}
	if lc.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("timeout %s must be > 0", lc.Timeout))
	}
	switch lc.Kind {
	case KindClosed:
		if lc.Clients < 1 {
			errs = append(errs, fmt.Errorf("clients: %d must be >= 1", lc.Clients))
		}
	case KindPaced:
		if lc.Rate <= 0 {
			errs = append(errs, fmt.Errorf("rate: %g must be > 0", lc.Rate))
		}
	case KindOpen, KindSetup:
	default:
		errs = append(errs, fmt.Errorf("kind %q: want closed, open, paced or setup", lc.Kind))
	}
	if lc.Kind != KindSetup && !slices.Contains(Workloads, lc.Workload) {
		errs = append(errs, fmt.Errorf("workload %q: want one of %v", lc.Workload, Workloads))
	}
	return errors.Join(errs...)
}

// loadClientOpts are the client settings of a request/reply user: no linger
// (franz-go's default lingers 10ms per partition), a short fetch max wait,
// results read read_committed.
func loadClientOpts(brokers []string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ProducerLinger(0),
		kgo.FetchMaxWait(loadFetchMaxWait),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}
}

// RunLoad runs one load-generator step against a running pipeline and writes
// its LoadResult as one JSON line to w.
func RunLoad(ctx context.Context, lc LoadConfig, w io.Writer) error {
	if err := lc.validate(); err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	e := &pipeEnv{
		r:       &run{cfg: Config{StepTimeout: lc.Timeout}},
		brokers: lc.Brokers,
		names:   topics.NewNames(lc.TopicPrefix),
		rt:      &router{},
		reg:     prometheus.NewRegistry(), // the processor is another process: no transaction counters here
	}
	var err error
	e.prod, err = kgo.NewClient(append(loadClientOpts(lc.Brokers), kgo.MaxBufferedRecords(100_000))...)
	if err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	defer e.prod.Close()
	e.reader, err = startReaderAtEnd(ctx, lc.Brokers, e.names.Results, e.rt.handle)
	if err != nil {
		return fmt.Errorf("results reader: %w", err)
	}
	defer e.reader.close()

	var p *plan
	if lc.Kind == KindSetup {
		p = stockPlan(lc.Tag, lc.SKUs)
	} else {
		p = genPlan(lc.Workload, lc.Tag, lc.Ops, lc.SKUs, lc.Seed)
		p.encode()
		if p.hotSKU != "" {
			if err := e.setStock(ctx, p.tag+"s", p.hotSKU, p.hotStock); err != nil {
				return fmt.Errorf("hot SKU stock: %w", err)
			}
		}
	}
	cpu0 := readCPUs(lc.CPUPIDs)
	var st Step
	switch lc.Kind {
	case KindClosed:
		ro := newRoute(p.tag, p.slots, -1, true)
		e.rt.add(ro.tag, ro)
		closedLoop(ctx, pipeExec{e, ro}, p, lc.Clients, lc.Timeout, &st)
		e.rt.remove(ro.tag)
	case KindPaced:
		st = e.produceAll(ctx, p, lc.Rate, lc.Timeout)
	default:
		st = e.openLoop(ctx, p, lc.Timeout)
	}
	cpu1 := readCPUs(lc.CPUPIDs)
	st.System, st.Workload, st.CommitInterval = SystemBinary, lc.Workload, 0
	res := LoadResult{Step: st, CPUSeconds: map[string]float64{}}
	for name, c1 := range cpu1 {
		if c0, ok := cpu0[name]; ok {
			res.CPUSeconds[name] = c1 - c0
		}
	}
	if self, err := procCPUSeconds("self"); err == nil {
		res.CPUSeconds["loadgen"] = self
	}
	if lc.Kind == KindSetup && st.Completed != p.ops {
		return fmt.Errorf("set stock of %d SKUs: %d results within %s", p.ops, st.Completed, lc.Timeout)
	}
	js, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", js)
	return err
}

// stockPlan is one session of stock.set commands giving the n uniform SKUs
// ample stock.
func stockPlan(tag string, n int) *plan {
	p := &plan{tag: tag}
	ss := make(session, n)
	for i := range ss {
		id := tag + "." + strconv.Itoa(i)
		sku := uniformSKU(i)
		ss[i] = op{id: id, slot: i, sku: sku, value: stockSetValue(id, sku, uniformOnHand)}
	}
	p.sessions, p.ops, p.slots = []session{ss}, n, n
	return p
}

// readCPUs returns the CPU seconds of each named process so far; unreadable
// ones are left out.
func readCPUs(pids map[string]int) map[string]float64 {
	out := map[string]float64{}
	for name, pid := range pids {
		if s, err := procCPUSeconds(strconv.Itoa(pid)); err == nil {
			out[name] = s
		}
	}
	return out
}

// startReaderAtEnd reads topic read_committed from its current end offsets
// (listed before anything of the step is produced, so no result of the step
// is missed and none of earlier steps is read).
func startReaderAtEnd(ctx context.Context, brokers []string, topic string, handle func(*kgo.Record, time.Time)) (*topicReader, error) {
	adm, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	ends, err := kadm.NewClient(adm).ListEndOffsets(lctx, topic)
	cancel()
	adm.Close()
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	at := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) { at[o.Partition] = kgo.NewOffset().At(o.Offset) })
	if len(at) == 0 {
		return nil, fmt.Errorf("topic %s has no partitions", topic)
	}
	cl, err := kgo.NewClient(append(loadClientOpts(brokers), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: at}))...)
	if err != nil {
		return nil, err
	}
	rctx, rcancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &topicReader{cl: cl, cancel: rcancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			fs := cl.PollFetches(rctx)
			if rctx.Err() != nil {
				return
			}
			now := time.Now()
			fs.EachRecord(func(rec *kgo.Record) { handle(rec, now) })
		}
	}()
	return r, nil
}

// RunBroker runs a single-node kfake broker on 127.0.0.1:port (0: any free
// port), its log in memory, prints "ready <host:port>" on out, and runs until
// ctx ends, SIGTERM or SIGINT arrives, or stdin reaches its end (the parent
// closed the pipe or died).
func RunBroker(ctx context.Context, port int, out io.Writer, stdin io.Reader) error {
	cl, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port))
	if err != nil {
		return fmt.Errorf("start kfake: %w", err)
	}
	defer cl.Close()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	if _, err := fmt.Fprintf(out, "ready %s\n", cl.ListenAddrs()[0]); err != nil {
		return err
	}
	eof := make(chan struct{})
	if stdin != nil {
		go func() {
			_, _ = io.Copy(io.Discard, stdin)
			close(eof)
		}()
	}
	select {
	case <-ctx.Done():
	case <-eof:
	}
	return nil
}
