package kafkatest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/internal/dockerprobe"
)

// helperEnv makes a test below run as a subprocess helper.
const helperEnv = "KAFKATEST_HELPER"

// TestNew commits and aborts a transaction on the broker New gives: kfake by
// default, the Redpanda container with RESERVATIONS_TEST_CONTAINERS=1 (`make
// test-containers` runs this test first, verbosely, so that its skip message
// shows when no Docker engine answers), external brokers with
// RESERVATIONS_TEST_BROKERS.
func TestNew(t *testing.T) {
	c := New(t)
	t.Logf("brokers %v (%s)", c.Brokers, c.source)
	require.NotEmpty(t, c.Brokers)
	if os.Getenv(EnvBrokers) == "" && os.Getenv(EnvContainers) != "1" {
		require.NotNil(t, c.Fake, "default broker is not kfake")
	}
	names := c.Topics(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	prod := c.Client(t, kgo.TransactionalID(names.Commands+"-txn"), kgo.DefaultProduceTopic(names.Commands))
	for _, commit := range []kgo.TransactionEndTry{kgo.TryAbort, kgo.TryCommit} {
		require.NoError(t, prod.BeginTransaction())
		require.NoError(t, prod.ProduceSync(ctx, kgo.StringRecord(fmt.Sprintf("commit=%v", bool(commit)))).FirstErr())
		require.NoError(t, prod.EndTransaction(ctx, commit))
	}

	cons := c.Client(t, kgo.ConsumeTopics(names.Commands), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var got []string
	for len(got) == 0 {
		fs := cons.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "no committed record read")
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	assert.Equal(t, []string{"commit=true"}, got, "read_committed saw the aborted record or missed the committed one")
}

// TestContainersWithoutDocker: in container mode with no Docker engine, New
// skips the test and says why.
func TestContainersWithoutDocker(t *testing.T) {
	t.Parallel()
	out := runHelper(t, "^TestHelperNew$", EnvContainers+"=1", EnvBrokers+"=", dockerprobe.EnvDocker+"=0")
	assert.Contains(t, out, "--- SKIP: TestHelperNew")
	assert.Contains(t, out, EnvContainers+"=1 but no Docker engine: ")
	assert.NotContains(t, out, "--- FAIL")
}

// TestDefaultNeverSkips: without container mode, New gives kfake whatever the
// Docker state.
func TestDefaultNeverSkips(t *testing.T) {
	t.Parallel()
	out := runHelper(t, "^TestHelperNew$", EnvContainers+"=", EnvBrokers+"=", dockerprobe.EnvDocker+"=0")
	assert.Contains(t, out, "--- PASS: TestHelperNew")
	assert.Contains(t, out, "FAKE true")
}

func TestHelperNew(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return // subprocess helper
	}
	c := New(t)
	fmt.Printf("FAKE %v\n", c.Fake != nil)
}

// TestBrokersWin: RESERVATIONS_TEST_BROKERS is used as given, before the
// container mode, and RequireFake skips against it.
func TestBrokersWin(t *testing.T) {
	t.Setenv(EnvBrokers, "127.0.0.1:1,127.0.0.1:2")
	t.Setenv(EnvContainers, "1")
	c := New(t)
	assert.Equal(t, []string{"127.0.0.1:1", "127.0.0.1:2"}, c.Brokers)
	assert.Nil(t, c.Fake)
}

func TestRequireFake(t *testing.T) {
	t.Parallel()
	fake, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(fake.Close)
	c := &Cluster{Brokers: fake.ListenAddrs(), Fake: fake, source: "kfake"}
	assert.Same(t, fake, c.RequireFake(t))

	out := runHelper(t, "^TestHelperRequireFake$")
	assert.Contains(t, out, "--- SKIP: TestHelperRequireFake")
	assert.Contains(t, out, "needs the in-process kfake broker (fault injection / cluster control); running against external brokers")
	assert.Contains(t, out, EnvBrokers+"=127.0.0.1:9")
	assert.NotContains(t, out, "after RequireFake")
}

func TestHelperRequireFake(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return // subprocess helper of TestRequireFake
	}
	c := &Cluster{Brokers: []string{"127.0.0.1:9"}, source: EnvBrokers + "=127.0.0.1:9"}
	c.RequireFake(t)
	fmt.Println("after RequireFake")
}

// runHelper runs the tests matching run in a subprocess with env added and
// returns their verbose output.
func runHelper(t *testing.T, run string, env ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run="+run, "-test.v")
	cmd.Env = append(append(os.Environ(), helperEnv+"=1"), env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "helper:\n%s", out)
	t.Logf("helper output:\n%s", strings.TrimSpace(string(out)))
	return string(out)
}
