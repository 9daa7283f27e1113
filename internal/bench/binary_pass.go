package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// The same-layout pass-through: the floor of what the processor's Kafka I/O
// costs on this machine. A process of its own (loadgen passthrough) does what
// the processor does around its decisions and nothing else: a
// GroupTransactSession reads the commands topic read_committed and, per
// command, produces one result record (a copy of the command, with the
// command_id header the load generator matches results by) and
// ChangelogPerCommand changelog records to the same partitions, committing the
// consumed offsets in the same transaction, with the processor's batching
// rule (MaxBatch records or CommitInterval, flush before the end). The load
// generator drives it exactly as it drives the binary. Its throughput and CPU
// per command bound the processor's from above and below: the processor can
// only add to them.

// passPrefix and passSizedPrefix are the topic prefixes of the pass-through
// with copies of the command and of the one sized like the processor's records.
const (
	passPrefix      = "bench-pt"
	passSizedPrefix = "bench-pts"
)

// PassConfig configures one pass-through process.
type PassConfig struct {
	Brokers     []string
	TopicPrefix string
	// ChangelogPerCommand is how many changelog records a command causes (a
	// new reserve writes its reservation, its idempotency entry and its SKU's
	// stock entity: 3).
	ChangelogPerCommand int
	// ResultBytes and ChangelogBytes, when set, size the records it writes
	// like the processor's (a copy of the command padded with spaces to that
	// many bytes, never cut): one result of ResultBytes and one changelog
	// record per ChangelogBytes entry, instead of ChangelogPerCommand copies
	// of the command.
	ResultBytes    int
	ChangelogBytes []int
	CommitInterval time.Duration
	MaxBatch       int
}

// RunPassthrough runs the pass-through until ctx ends; it prints "ready
// <host:port>" once the group assigned it the commands topic's partitions,
// where host:port serves its transaction metrics (/metrics, under the
// processor's names).
func RunPassthrough(ctx context.Context, pc PassConfig, out io.Writer) error {
	names := topics.NewNames(pc.TopicPrefix)
	reg := prometheus.NewRegistry()
	ph := newTxnPhases(reg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("pass-through metrics listener: %w", err)
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	assigned := make(chan struct{}, 1)
	sess, err := kgo.NewGroupTransactSession(append(clientOpts(pc.Brokers),
		kgo.ConsumerGroup(pc.TopicPrefix+"-group"),
		kgo.ConsumeTopics(names.Commands),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.TransactionalID(pc.TopicPrefix+"-txn"),
		kgo.TransactionTimeout(10*time.Second),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
			select {
			case assigned <- struct{}{}:
			default:
			}
		}),
	)...)
	if err != nil {
		return fmt.Errorf("pass-through session: %w", err)
	}
	defer sess.Close()
	loopErr := make(chan error, 1)
	go func() { loopErr <- passLayoutLoop(ctx, sess, names, pc, ph) }()
	select {
	case <-assigned:
	case err := <-loopErr:
		return err
	case <-time.After(60 * time.Second):
		return errors.New("pass-through: not assigned within 60s")
	}
	if _, err := fmt.Fprintln(out, "ready", ln.Addr().String()); err != nil {
		return err
	}
	return <-loopErr
}

// passLayoutLoop is the same-layout pass-through's transaction loop: per
// command a result (a copy with its command_id header) and
// ChangelogPerCommand changelog records, to the command's partition.
func passLayoutLoop(ctx context.Context, sess *kgo.GroupTransactSession, names topics.Names, pc PassConfig, ph *txnPhases) error {
	return passLoopWith(ctx, sess, pc.CommitInterval, pc.MaxBatch, ph, func(rec *kgo.Record, produce func(*kgo.Record)) {
		res := &kgo.Record{Topic: names.Results, Partition: rec.Partition, Key: rec.Key, Value: padded(rec.Value, pc.ResultBytes)}
		if id := commandID(rec.Value); id != nil {
			res.Headers = []kgo.RecordHeader{{Key: processor.HeaderCommandID, Value: id}}
		}
		produce(res)
		sizes := pc.ChangelogBytes
		if len(sizes) == 0 {
			sizes = make([]int, pc.ChangelogPerCommand) // copies of the command
		}
		for i, n := range sizes {
			key := append(append(bytes.Clone(rec.Key), '/'), strconv.Itoa(i)...)
			produce(&kgo.Record{Topic: names.Changelog, Partition: rec.Partition, Key: key, Value: padded(rec.Value, n)})
		}
	})
}

// padded is a copy of v padded with spaces to n bytes (JSON stays valid);
// v itself when it is n bytes or longer.
func padded(v []byte, n int) []byte {
	out := make([]byte, max(len(v), n))
	copy(out, v)
	for i := len(v); i < len(out); i++ {
		out[i] = ' '
	}
	return out
}

// contractSizes are the sizes of a generated uniform reserve and of what the
// processor writes for it, encoded by the processor's own core and codecs: its
// result and its changelog entities (reservation, idempotency entry, stock).
func contractSizes() (command, result int, changelog []int) {
	c := &sku.Core{Rules: sku.DefaultRules()}
	st := partitionState{make(sku.Entities)}
	now := schemas.MillisOf(time.Now())
	name := uniformSKU(4321)
	on := int64(1000)
	set := c.Apply(st, sku.Input{Key: name, Command: schemas.Command{CommandID: "setup.4321", Type: schemas.TypeStockSet, SKU: name, OnHand: &on}}, now)
	st.Apply(set.Changes)
	o := op{typ: schemas.TypeReserve, sku: name, res: "s1.123456", qty: 1, ttl: 900, id: "s1.123456"}
	raw := encodeCommand(&o)
	command = len(raw)
	cmd, err := schemas.DecodeCommand(raw, 64<<10)
	if err != nil {
		panic(fmt.Sprintf("decode generated command: %v", err))
	}
	out := c.Apply(st, sku.Input{Key: name, Command: cmd}, now)
	for i := range out.Results {
		result += len(schemas.AppendResult(nil, &out.Results[i]))
	}
	for i := range out.Changes {
		v, err := sku.EncodeChange(&out.Changes[i])
		if err != nil {
			panic(fmt.Sprintf("encode change: %v", err))
		}
		changelog = append(changelog, len(v))
	}
	return command, result, changelog
}

// commandID returns the command_id field of a command's JSON without decoding
// it (the generated commands put it first; nil when absent).
func commandID(v []byte) []byte {
	const field = `"command_id":"`
	i := bytes.Index(v, []byte(field))
	if i < 0 {
		return nil
	}
	rest := v[i+len(field):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil
	}
	return rest[:j]
}

// passthroughStep runs the same-layout pass-through as its own process on
// topics of pc.TopicPrefix and drives it with the loads lcs, like the binary.
func (e *binaryEnv) passthroughStep(ctx context.Context, pc PassConfig, lcs ...LoadConfig) ([]LoadResult, error) {
	names := topics.NewNames(pc.TopicPrefix)
	admCl, err := kgo.NewClient(clientOpts(e.brokers)...)
	if err != nil {
		return nil, fmt.Errorf("pass-through: admin client: %w", err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	for _, t := range []string{names.Commands, names.Results, names.Changelog} {
		resp, err := adm.CreateTopic(ctx, e.cfg.Partitions, 1, nil, t)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			return nil, fmt.Errorf("pass-through: create topic %s: %w", t, err)
		}
	}
	args := []string{"passthrough", "-brokers", e.brokers[0], "-topic-prefix", pc.TopicPrefix,
		"-changelog-per-command", strconv.Itoa(pc.ChangelogPerCommand),
		"-commit-interval", processor.DefaultConfig().CommitInterval.String(),
		"-max-batch", strconv.Itoa(processor.DefaultConfig().MaxBatch)}
	if pc.ResultBytes > 0 {
		sizes := make([]string, len(pc.ChangelogBytes))
		for i, n := range pc.ChangelogBytes {
			sizes[i] = strconv.Itoa(n)
		}
		args = append(args, "-result-bytes", strconv.Itoa(pc.ResultBytes), "-changelog-bytes", strings.Join(sizes, ","))
	}
	c := &child{name: "passthrough", cmd: exec.Command(e.loadgen, args...), tail: &tailBuffer{}}
	c.cmd.Env, c.cmd.SysProcAttr = childEnv(), childAttr()
	c.cmd.Stderr = lines(c.tail.add)
	ready := make(chan string, 1)
	c.cmd.Stdout = lines(func(line string) {
		if addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ready "); ok {
			select {
			case ready <- addr:
			default:
			}
		}
		c.tail.add(line)
	})
	if err := c.start(); err != nil {
		return nil, fmt.Errorf("pass-through: %w", err)
	}
	defer func() { _ = c.stop(10 * time.Second) }()
	var admin string
	select {
	case admin = <-ready:
	case <-c.done:
		return nil, fmt.Errorf("pass-through exited: %v; output: %s", c.err, c.tail)
	case <-time.After(90 * time.Second):
		return nil, fmt.Errorf("pass-through not ready within 90s; output: %s", c.tail)
	}
	var out []LoadResult
	for _, lc := range lcs {
		t0, err := scrapeTxnStats(ctx, admin)
		if err != nil {
			return out, fmt.Errorf("pass-through: %w", err)
		}
		res, err := e.loadOn(ctx, lc, pc.TopicPrefix, c)
		if err != nil {
			return out, err
		}
		t1, err := scrapeTxnStats(ctx, admin)
		if err != nil {
			return out, fmt.Errorf("pass-through: %w", err)
		}
		t1.since(t0, &res.Step)
		out = append(out, res)
	}
	return out, nil
}
