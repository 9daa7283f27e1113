package soak

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/internal/kafkatest"
)

// mirror reads the changelog (read_committed) from its start while the soak
// runs and feeds every record to a changelogWalk as it arrives. The soak
// compacts the changelog, which removes superseded records and old tombstones:
// a read of the whole topic at the end could no longer check that versions go
// up by one or that a tombstone only deletes a live entity. The chaos compacts
// only once the mirror has read everything committed (see chaos.compact), so
// the mirror sees every record ever committed.
type mirror struct {
	cl *kgo.Client

	mu    sync.Mutex
	walk  *changelogWalk
	last  map[int32]int64 // last offset read (control records included), per partition
	tombs []int64         // timestamps (ms) of the tombstones read, in read order
}

func newMirror(brokers []string, topic string, rep *report) (*mirror, error) {
	// The fetch sizes of readTopic, for the same reason (kfake and aborted
	// transactions cut by MaxBytes).
	const perPartition = 2 << 20
	cl, err := kgo.NewClient(append(kafkatest.ClientOpts(), kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), kgo.FetchMaxPartitionBytes(perPartition), kgo.FetchMaxBytes(partitions*(perPartition+1<<20)))...)
	if err != nil {
		return nil, err
	}
	return &mirror{cl: cl, walk: newChangelogWalk(rep), last: map[int32]int64{}}, nil
}

// run reads until ctx ends, then closes the client.
func (m *mirror) run(ctx context.Context) {
	defer m.cl.Close()
	for ctx.Err() == nil {
		fs := m.cl.PollFetches(ctx)
		m.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			m.last[r.Partition] = r.Offset
			if r.Attrs.IsControl() {
				return
			}
			if r.Value == nil {
				m.tombs = append(m.tombs, r.Timestamp.UnixMilli())
			}
			m.walk.add(r)
		})
		m.mu.Unlock()
	}
}

// caughtUp reports whether every partition was read up to ends (exclusive).
func (m *mirror) caughtUp(ends map[int32]int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return reached(m.last, ends)
}

// tombstonesBetween counts the tombstones read whose timestamps fall in [from, to).
func (m *mirror) tombstonesBetween(from, to time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	ts := append([]int64(nil), m.tombs...)
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	lo := sort.Search(len(ts), func(i int) bool { return ts[i] >= from.UnixMilli() })
	hi := sort.Search(len(ts), func(i int) bool { return ts[i] >= to.UnixMilli() })
	return hi - lo
}
