// Package kafkatest gives tests a Kafka wire-protocol broker: the brokers named
// by RESERVATIONS_TEST_BROKERS when set (a real Kafka or Redpanda), otherwise an
// in-process kfake cluster on loopback. The code under test is the same either
// way: it only sees broker addresses.
package kafkatest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/topics"
)

// EnvBrokers names an external cluster to test against.
const EnvBrokers = "RESERVATIONS_TEST_BROKERS"

// Cluster is a broker for one test.
type Cluster struct {
	Brokers []string
	// Fake is the kfake cluster, nil when testing against external brokers.
	Fake *kfake.Cluster
}

var seq atomic.Int64

// New starts a kfake cluster (or uses EnvBrokers) that is closed when t ends.
func New(t testing.TB, opts ...kfake.Opt) *Cluster {
	t.Helper()
	if env := os.Getenv(EnvBrokers); env != "" {
		return &Cluster{Brokers: strings.Split(env, ",")}
	}
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return &Cluster{Brokers: c.ListenAddrs(), Fake: c}
}

// ClientOpts are the options every test client needs (fast metadata refresh:
// after NOT_LEADER a client otherwise waits for the default 5 s minimum age).
func ClientOpts() []kgo.Opt {
	return []kgo.Opt{kgo.MetadataMinAge(100 * time.Millisecond)}
}

// Client returns a plain client for c, closed when t ends.
func (c *Cluster) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append(append([]kgo.Opt{kgo.SeedBrokers(c.Brokers...)}, ClientOpts()...), opts...)...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// Topics creates a fresh set of pipeline topics with a unique prefix.
func (c *Cluster) Topics(t testing.TB, partitions int32) topics.Names {
	t.Helper()
	n := topics.NewNames(fmt.Sprintf("t%d-%d", time.Now().UnixNano()%1e6, seq.Add(1)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := topics.Ensure(ctx, kadm.NewClient(c.Client(t)), n, partitions, 1)
	require.NoError(t, err)
	return n
}
