package sink

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kafkaTimeout bounds one metadata or offset listing, so that unreachable
// brokers end a tool instead of hanging it.
const kafkaTimeout = 15 * time.Second

// ErrNoTopic means the changelog topic does not exist.
var ErrNoTopic = errors.New("changelog topic does not exist")

// logBounds are the offsets of every partition of the changelog at one moment.
type logBounds struct {
	partitions []int32         // in order
	start      map[int32]int64 // log start offset
	stable     map[int32]int64 // last stable offset: the end for read_committed readers
	end        map[int32]int64 // high watermark
}

// records is the number of offsets between start and the stable end, over
// every partition: what a reader of the whole log goes through.
func (b logBounds) records() int64 {
	var n int64
	for _, p := range b.partitions {
		n += max(b.stable[p]-b.start[p], 0)
	}
	return n
}

// listBounds lists the partitions of topic with their start, stable and end
// offsets.
func listBounds(ctx context.Context, adm *kadm.Client, topic string) (logBounds, error) {
	ctx, cancel := context.WithTimeout(ctx, kafkaTimeout)
	defer cancel()
	b := logBounds{start: map[int32]int64{}, stable: map[int32]int64{}, end: map[int32]int64{}}
	tds, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return b, fmt.Errorf("list partitions of %s: %w", topic, err)
	}
	td, ok := tds[topic]
	if !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition) {
		return b, fmt.Errorf("%s: %w", topic, ErrNoTopic)
	}
	if td.Err != nil {
		return b, fmt.Errorf("list partitions of %s: %w", topic, td.Err)
	}
	for p := range td.Partitions {
		b.partitions = append(b.partitions, p)
	}
	slices.Sort(b.partitions)
	for _, l := range []struct {
		name string
		list func(context.Context, ...string) (kadm.ListedOffsets, error)
		into map[int32]int64
	}{
		{"start", adm.ListStartOffsets, b.start},
		{"stable", adm.ListCommittedOffsets, b.stable},
		{"end", adm.ListEndOffsets, b.end},
	} {
		offs, err := l.list(ctx, topic)
		if err == nil {
			err = offs.Error()
		}
		if err != nil {
			return b, fmt.Errorf("list %s offsets of %s: %w", l.name, topic, err)
		}
		offs.Each(func(o kadm.ListedOffset) { l.into[o.Partition] = o.Offset })
	}
	return b, nil
}

// readLog reads topic with isolation read_committed from the start of each
// partition up to to[p] (exclusive) and calls fn, in offset order per
// partition, for every committed data record below it. Partitions missing
// from to are not read.
//
// Transaction markers are fetched too (KeepControlRecords) but not passed to
// fn: they show where a partition's committed log ends, so that a partition
// whose last record below to[p] is a marker is known to be done. A partition
// is done once a record or marker at to[p]-1 or beyond was fetched. to[p] must
// therefore be a position a read_committed reader reaches: the last stable
// offset, or the next offset a read_committed reader stored (sink_offsets).
//
// progress, if not nil, is called after every fetch with the offsets covered
// so far, summed over the partitions.
func readLog(ctx context.Context, opts []kgo.Opt, topic string, start, to map[int32]int64,
	fn func(*kgo.Record) error, progress func(covered int64)) error {
	parts := make(map[int32]kgo.Offset)
	pos := make(map[int32]int64) // next offset per partition still being read
	var covered int64
	for p, end := range to {
		if end > start[p] {
			parts[p] = kgo.NewOffset().AtStart()
			pos[p] = start[p]
		}
	}
	if len(parts) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		// The whole response must fit its overall limit: a broker that cuts a
		// partition off at that limit may omit the partition's aborted
		// transactions (seen with kfake by the soak), and the client would then
		// take aborted records for committed ones.
		kgo.FetchMaxPartitionBytes(1 << 20),
		kgo.FetchMaxBytes(int32(min(len(parts)+1, 1024)) << 20),
	}, opts...)...)
	if err != nil {
		return fmt.Errorf("create kafka client: %w", err)
	}
	defer cl.Close()
	for len(pos) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = fmt.Errorf("read %s partition %d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		var done []int32
		var cerr error
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			next, reading := pos[fp.Partition]
			if fp.Topic != topic || !reading || cerr != nil {
				return
			}
			end := to[fp.Partition]
			for _, r := range fp.Records {
				if r.Offset >= end {
					next = end
					break
				}
				if !r.Attrs.IsControl() {
					if cerr = fn(r); cerr != nil {
						return
					}
				}
				next = r.Offset + 1
				if next >= end {
					break
				}
			}
			covered += next - pos[fp.Partition]
			pos[fp.Partition] = next
			if next >= end {
				done = append(done, fp.Partition)
				delete(pos, fp.Partition)
			}
		})
		if cerr != nil {
			return cerr
		}
		if len(done) > 0 {
			cl.RemoveConsumePartitions(map[string][]int32{topic: done})
		}
		if progress != nil {
			progress(covered)
		}
	}
	return nil
}
