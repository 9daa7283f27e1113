// Package kafkatest gives tests a Kafka wire-protocol broker, in this order:
//
//  1. the brokers named by RESERVATIONS_TEST_BROKERS when set (a real Kafka or
//     Redpanda);
//  2. with RESERVATIONS_TEST_CONTAINERS=1, a Redpanda container run with
//     testcontainers-go, started once per test process and shared by its
//     tests (transactions are on by default in Redpanda); when no Docker engine
//     answers, the tests are skipped with a message saying so (this mode is
//     explicit, `make test-containers`; the default never skips);
//  3. otherwise an in-process kfake cluster on loopback, one per test.
//
// The code under test is the same either way: it only sees broker addresses.
// Tests that need kfake itself (fault injection, cluster control) get it from
// RequireFake, which skips them against other brokers.
//
// Invariant: a container this package starts is removed when the test process
// ends: by StopShared when a TestMain calls it, otherwise by testcontainers'
// reaper (Ryuk), which also covers a killed process.
package kafkatest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/modules/redpanda"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/internal/dockerprobe"
	"github.com/reservations/reservations/topics"
)

// EnvBrokers names an external cluster to test against.
const EnvBrokers = "RESERVATIONS_TEST_BROKERS"

// EnvContainers set to 1 runs the tests against a Redpanda container.
const EnvContainers = "RESERVATIONS_TEST_CONTAINERS"

// redpandaImage is the broker image of the container mode.
const redpandaImage = "docker.redpanda.com/redpandadata/redpanda:v25.2.4"

// containerStartTimeout bounds the first start, including the image pull.
const containerStartTimeout = 5 * time.Minute

// Cluster is a broker for one test.
type Cluster struct {
	Brokers []string
	// Fake is the kfake cluster, nil when testing against external brokers.
	Fake *kfake.Cluster
	// source says where the brokers come from, for skip messages.
	source string
}

var seq atomic.Int64

// container is the Redpanda container shared by the tests of the process.
var container struct {
	once    sync.Once
	ctr     *redpanda.Container
	brokers []string
	err     error
}

// New returns the broker for t (see the package comment for the order). A
// kfake cluster is closed when t ends; opts apply to kfake only.
func New(t testing.TB, opts ...kfake.Opt) *Cluster {
	t.Helper()
	if env := os.Getenv(EnvBrokers); env != "" {
		return &Cluster{Brokers: strings.Split(env, ","), source: EnvBrokers + "=" + env}
	}
	if os.Getenv(EnvContainers) == "1" {
		return &Cluster{Brokers: shared(t), source: "Redpanda container " + redpandaImage}
	}
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return &Cluster{Brokers: c.ListenAddrs(), Fake: c, source: "kfake"}
}

// RequireFake returns the in-process kfake cluster, for tests that inject
// faults or control the cluster; it skips t when c is an external broker.
func (c *Cluster) RequireFake(t testing.TB) *kfake.Cluster {
	t.Helper()
	if c.Fake == nil {
		t.Skipf("needs the in-process kfake broker (fault injection / cluster control); "+
			"running against external brokers (%s)", c.source)
	}
	return c.Fake
}

// shared returns the brokers of the process's Redpanda container, starting it
// on first use; it skips t when no Docker engine answers.
func shared(t testing.TB) []string {
	t.Helper()
	if err := dockerprobe.Engine(); err != nil {
		t.Skipf("%s=1 but no Docker engine: %v", EnvContainers, err)
	}
	container.once.Do(func() {
		container.ctr, container.brokers, container.err = startRedpanda()
	})
	if container.err != nil {
		t.Fatalf("kafkatest: %s=1: start %s: %v", EnvContainers, redpandaImage, container.err)
	}
	return container.brokers
}

// startRedpanda runs a single-node Redpanda and returns its seed broker.
func startRedpanda() (*redpanda.Container, []string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), containerStartTimeout)
	defer cancel()
	ctr, err := redpanda.Run(ctx, redpandaImage)
	if err != nil {
		_ = testcontainers.TerminateContainer(ctr) // nil-safe; removes a half-started container
		return nil, nil, err
	}
	seed, err := ctr.KafkaSeedBroker(ctx)
	if err != nil {
		_ = testcontainers.TerminateContainer(ctr)
		return nil, nil, fmt.Errorf("seed broker: %w", err)
	}
	return ctr, []string{seed}, nil
}

// StopShared removes the Redpanda container if this process started one. It
// is for TestMain functions, after m.Run; without it the container is removed
// by testcontainers' reaper when the process ends.
func StopShared() {
	if container.ctr == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = container.ctr.Terminate(ctx)
	container.ctr = nil
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

// External reports whether tests run against brokers outside this process
// (RESERVATIONS_TEST_BROKERS or containers), where kfake-only controls such
// as stopping the broker are not available.
func External() bool {
	return os.Getenv(EnvBrokers) != "" || os.Getenv(EnvContainers) == "1"
}
