// Package topics owns the topic layout of the reservation pipeline: the names
// (derived from one prefix), their partition counts and cleanup policies, the
// key -> partition rule (Kafka's murmur2, as franz-go and the Java client use
// by default), and creation/verification with kadm. Topic strings live only here.
//
// Invariant: commands, results and changelog have the same partition count, so
// a record derived from a command on partition p goes to partition p of results
// and changelog.
package topics

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Defaults of the contract.
const (
	DefaultPrefix     = "reservations"
	DefaultPartitions = 12
)

// Names are the topic names of one pipeline.
type Names struct {
	Commands  string
	Results   string
	Changelog string
	DLQ       string
	// The cart extension (schemas/README.md): cart commands and routed line
	// results (key cart_id), cart results, and the cart coordinator's changelog.
	// Empty in a view returned by Cart.
	CartCommands  string
	CartResults   string
	CartChangelog string
	// Replies (schemas/README.md, extension (l)): copies of the decisions of
	// commands sent with reply_to "replies", on the partition the command
	// names; each request/reply client instance reads its own partitions.
	// Empty in a view returned by Cart.
	Replies string
}

// NewNames derives the topic names from prefix (DefaultPrefix when empty).
func NewNames(prefix string) Names {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Names{
		Commands:  prefix + ".commands",
		Results:   prefix + ".results",
		Changelog: prefix + ".changelog",
		DLQ:       prefix + ".dlq",

		CartCommands:  prefix + ".cart-commands",
		CartResults:   prefix + ".cart-results",
		CartChangelog: prefix + ".cart-changelog",

		Replies: prefix + ".replies",
	}
}

// RepliesRetention is the retention.ms the replies topic is created with: a
// reply is read within a call's timeout (seconds), so an hour is plenty.
const RepliesRetention = time.Hour

// Cart returns the names as the cart coordinator sees them: its input, results
// and changelog in place of the SKU processor's (and the same DLQ), so that
// the one processor implementation runs either role.
func (n Names) Cart() Names {
	return Names{Commands: n.CartCommands, Results: n.CartResults, Changelog: n.CartChangelog, DLQ: n.DLQ}
}

// All returns the names in creation order (the cart topics and replies when
// set).
func (n Names) All() []string {
	all := n.core()
	for _, t := range []string{n.CartCommands, n.CartResults, n.CartChangelog, n.Replies} {
		if t != "" {
			all = append(all, t)
		}
	}
	return all
}

func (n Names) core() []string { return []string{n.Commands, n.Results, n.Changelog, n.DLQ} }

// Configs returns the topic configs each topic is created with: the
// changelogs compacted, the others deleted by time; replies keep
// RepliesRetention.
func (n Names) Configs(topic string) map[string]*string {
	policy := "delete"
	if topic == n.Changelog || (topic != "" && topic == n.CartChangelog) {
		policy = "compact"
	}
	c := map[string]*string{"cleanup.policy": &policy}
	if topic != "" && topic == n.Replies {
		ms := strconv.FormatInt(RepliesRetention.Milliseconds(), 10)
		c["retention.ms"] = &ms
	}
	return c
}

var murmur2 = kgo.StickyKeyPartitioner(nil).ForTopic("")

// Partition returns the partition Kafka's default partitioner (murmur2, as
// franz-go and the Java client) assigns to key among n partitions.
func Partition(key []byte, n int32) int32 {
	return int32(murmur2.Partition(&kgo.Record{Key: key}, int(n)))
}

// ErrLayout reports topics whose partition counts or cleanup policies break the
// contract; the pipeline refuses to start on them.
var ErrLayout = errors.New("topic layout breaks the contract")

// ErrMissing reports a topic that does not exist (it also matches ErrLayout).
var ErrMissing = errors.New("topic is missing")

// Ensure creates missing topics with partitions partitions (replication
// replicas, -1 for the broker default) and verifies that commands, results and
// changelog share one partition count, and so do the cart topics when named.
// The replies topic (when named) is created with the same count, but its count
// is free: it bounds the request/reply client instances that have partitions of
// their own (docs/CLIENT.md). It returns the commands partition count.
func Ensure(ctx context.Context, adm *kadm.Client, n Names, partitions int32, replication int16) (int32, error) {
	details, err := adm.ListTopics(ctx, n.All()...)
	if err != nil {
		return 0, fmt.Errorf("list topics: %w", err)
	}
	for _, t := range n.All() {
		if d, ok := details[t]; ok && d.Err == nil {
			continue
		}
		resp, err := adm.CreateTopic(ctx, partitions, replication, n.Configs(t), t)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return 0, fmt.Errorf("create topic %s: %w", t, err)
		}
	}
	// Metadata of just-created topics can lag (the client caches metadata for
	// its MetadataMinAge, 5 s by default), so wait for them to show up.
	deadline := time.Now().Add(15 * time.Second)
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		got, err := Verify(ctx, adm, n)
		if err == nil && n.CartCommands != "" {
			_, err = Verify(ctx, adm, n.Cart())
		}
		if !errors.Is(err, ErrMissing) || time.Now().After(deadline) {
			return got, err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// Verify checks that commands, results, changelog and DLQ exist, that the first
// three have one partition count, and that the changelog is compacted. For the
// cart topics, verify n.Cart().
func Verify(ctx context.Context, adm *kadm.Client, n Names) (int32, error) {
	details, err := adm.ListTopics(ctx, n.core()...)
	if err != nil {
		return 0, fmt.Errorf("list topics: %w", err)
	}
	counts := make(map[string]int32, 4)
	for _, t := range n.core() {
		d, ok := details[t]
		if !ok || d.Err != nil {
			return 0, fmt.Errorf("%w: %w: %s", ErrLayout, ErrMissing, t)
		}
		counts[t] = int32(len(d.Partitions))
	}
	want := counts[n.Commands]
	for _, t := range []string{n.Results, n.Changelog} {
		if counts[t] != want {
			return 0, fmt.Errorf("%w: %s has %d partitions, %s has %d", ErrLayout, t, counts[t], n.Commands, want)
		}
	}
	if _, err := ChangelogDeleteRetention(ctx, adm, n.Changelog); err != nil {
		return 0, err
	}
	return want, nil
}

// DefaultDeleteRetention is Kafka's default delete.retention.ms (1 day): how
// long a tombstone stays readable in a compacted topic after compaction.
const DefaultDeleteRetention = 24 * time.Hour

// ChangelogDeleteRetention checks that changelog is compacted and never
// deleted by time or size (cleanup.policy exactly compact: with
// compact,delete the entities of idle SKUs would disappear from the log and be
// lost on a full restore), and returns its delete.retention.ms: a store or
// sink away longer than that may have missed tombstones.
func ChangelogDeleteRetention(ctx context.Context, adm *kadm.Client, changelog string) (time.Duration, error) {
	rc, err := adm.DescribeTopicConfigs(ctx, changelog)
	if err != nil {
		return 0, fmt.Errorf("describe topic %s: %w", changelog, err)
	}
	c, err := rc.On(changelog, nil)
	if err == nil {
		err = c.Err
	}
	if err != nil {
		return 0, fmt.Errorf("describe topic %s: %w", changelog, err)
	}
	retention := DefaultDeleteRetention
	for _, kv := range c.Configs {
		if kv.Value == nil {
			continue
		}
		switch kv.Key {
		case "cleanup.policy":
			if strings.ReplaceAll(*kv.Value, " ", "") != "compact" {
				return 0, fmt.Errorf("%w: %s has cleanup.policy=%s, want compact (a delete policy would drop the entities of idle SKUs)",
					ErrLayout, changelog, *kv.Value)
			}
		case "delete.retention.ms":
			ms, err := strconv.ParseInt(*kv.Value, 10, 64)
			if err != nil || ms < 0 {
				return 0, fmt.Errorf("%w: %s has delete.retention.ms=%q", ErrLayout, changelog, *kv.Value)
			}
			retention = time.Duration(ms) * time.Millisecond
		}
	}
	return retention, nil
}

// PartitionString formats p for logs and metric labels.
func PartitionString(p int32) string { return strconv.Itoa(int(p)) }
