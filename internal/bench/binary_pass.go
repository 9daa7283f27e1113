package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
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

// passPrefix is the topic prefix of the pass-through.
const passPrefix = "bench-pt"

// PassConfig configures one pass-through process.
type PassConfig struct {
	Brokers     []string
	TopicPrefix string
	// ChangelogPerCommand is how many changelog records a command causes (a
	// new reserve writes its reservation, its idempotency entry and its SKU's
	// stock entity: 3).
	ChangelogPerCommand int
	CommitInterval      time.Duration
	MaxBatch            int
}

// RunPassthrough runs the pass-through until ctx ends; it prints "ready" once
// the group assigned it the commands topic's partitions.
func RunPassthrough(ctx context.Context, pc PassConfig, out io.Writer) error {
	names := topics.NewNames(pc.TopicPrefix)
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
	go func() { loopErr <- passLayoutLoop(ctx, sess, names, pc) }()
	select {
	case <-assigned:
	case err := <-loopErr:
		return err
	case <-time.After(60 * time.Second):
		return errors.New("pass-through: not assigned within 60s")
	}
	if _, err := fmt.Fprintln(out, "ready"); err != nil {
		return err
	}
	return <-loopErr
}

// passLayoutLoop is the same-layout pass-through's transaction loop: per
// command a result (a copy with its command_id header) and
// ChangelogPerCommand changelog records, to the command's partition.
func passLayoutLoop(ctx context.Context, sess *kgo.GroupTransactSession, names topics.Names, pc PassConfig) error {
	return passLoopWith(ctx, sess, pc.CommitInterval, pc.MaxBatch, func(rec *kgo.Record, produce func(*kgo.Record)) {
		res := &kgo.Record{Topic: names.Results, Partition: rec.Partition, Key: rec.Key, Value: bytes.Clone(rec.Value)}
		if id := commandID(rec.Value); id != nil {
			res.Headers = []kgo.RecordHeader{{Key: processor.HeaderCommandID, Value: id}}
		}
		produce(res)
		for i := range pc.ChangelogPerCommand {
			key := append(append(bytes.Clone(rec.Key), '/'), strconv.Itoa(i)...)
			produce(&kgo.Record{Topic: names.Changelog, Partition: rec.Partition, Key: key, Value: bytes.Clone(rec.Value)})
		}
	})
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

// passthroughStep runs the same-layout pass-through as its own process and
// drives it with an open-loop load of workload, like the binary's open loop.
func (e *binaryEnv) passthroughStep(ctx context.Context, perCommand int, lcs ...LoadConfig) ([]LoadResult, error) {
	names := topics.NewNames(passPrefix)
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
	args := []string{"passthrough", "-brokers", e.brokers[0], "-topic-prefix", passPrefix,
		"-changelog-per-command", strconv.Itoa(perCommand),
		"-commit-interval", processor.DefaultConfig().CommitInterval.String(),
		"-max-batch", strconv.Itoa(processor.DefaultConfig().MaxBatch)}
	c := &child{name: "passthrough", cmd: exec.Command(e.loadgen, args...), tail: &tailBuffer{}}
	c.cmd.Env, c.cmd.SysProcAttr = childEnv(), childAttr()
	c.cmd.Stderr = lines(c.tail.add)
	ready := make(chan struct{}, 1)
	c.cmd.Stdout = lines(func(line string) {
		if strings.TrimSpace(line) == "ready" {
			select {
			case ready <- struct{}{}:
			default:
			}
		}
		c.tail.add(line)
	})
	if err := c.start(); err != nil {
		return nil, fmt.Errorf("pass-through: %w", err)
	}
	defer func() { _ = c.stop(10 * time.Second) }()
	select {
	case <-ready:
	case <-c.done:
		return nil, fmt.Errorf("pass-through exited: %v; output: %s", c.err, c.tail)
	case <-time.After(90 * time.Second):
		return nil, fmt.Errorf("pass-through not ready within 90s; output: %s", c.tail)
	}
	var out []LoadResult
	for _, lc := range lcs {
		res, err := e.loadOn(ctx, lc, passPrefix, c)
		if err != nil {
			return out, err
		}
		out = append(out, res)
	}
	return out, nil
}
