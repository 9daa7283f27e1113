package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/internal/kafkatest"
	"github.com/reservations/reservations/topics"
)

// commitAs commits offset 1 of every partition of topic for group (a group
// with committed offsets and no members: a stopped deployment, an archiver).
func commitAs(t *testing.T, adm *kadm.Client, group, topic string, partitions int32) {
	t.Helper()
	offs := kadm.Offsets{}
	for p := range partitions {
		offs.Add(kadm.Offset{Topic: topic, Partition: p, At: 1, LeaderEpoch: -1})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := adm.CommitOffsets(ctx, group, offs)
	require.NoError(t, err)
	require.NoError(t, resp.Error())
}

// consumeAs runs a member of group consuming topic until the test ends, and
// waits until the group has assigned it the topic's partitions.
func consumeAs(t *testing.T, c *kafkatest.Cluster, adm *kadm.Client, group, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...), kgo.MetadataMinAge(100*time.Millisecond),
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			cl.PollFetches(ctx)
		}
	}()
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
	eventually(t, 30*time.Second, group+" has a member assigned "+topic, func() bool {
		d, err := adm.DescribeGroups(context.Background(), group)
		if err != nil {
			return false
		}
		g := d[group]
		return g.State == "Stable" && len(g.AssignedPartitions()[topic]) > 0
	})
}

// TestFindOtherGroups runs the check's detection against a broker holding
// groups of every kind that matters.
func TestFindOtherGroups(t *testing.T) {
	c := kafkatest.New(t)
	names := c.Topics(t, 2)
	adm := kadm.NewClient(c.Client(t))
	commitAs(t, adm, "own", names.Commands, 2)           // this deployment's own group
	commitAs(t, adm, "archiver", names.Commands, 2)      // a stopped reader of the commands
	commitAs(t, adm, "results-reader", names.Results, 2) // reads another topic of the prefix
	consumeAs(t, c, adm, "second-deployment", names.Commands)

	for _, tc := range []struct {
		name, topic, own string
		want             []string // "group:members:committed"
	}{
		{"others on the commands topic", names.Commands, "own",
			[]string{"archiver:0:0,1", "second-deployment:1:"}},
		{"own group is never reported", names.Commands, "archiver",
			[]string{"own:0:0,1", "second-deployment:1:"}},
		{"a topic nobody consumes", names.DLQ, "own", nil},
		{"results topic", names.Results, "own", []string{"results-reader:0:0,1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			uses, notes, err := findOtherGroups(ctx, adm, tc.topic, tc.own)
			require.NoError(t, err)
			assert.Empty(t, notes)
			var got []string
			for _, u := range uses {
				assert.Equal(t, tc.topic, u.Topic)
				got = append(got, fmt.Sprintf("%s:%d:%s", u.Group, u.Members, partitionList(u.Committed)))
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestServeRefusesSecondDeployment: serve refuses to start on a topic prefix
// another consumer group consumes (members or committed offsets), naming the
// group and the override; --allow-other-groups lets a named group (or every
// group, with *) through; the same --group is no conflict.
func TestServeRefusesSecondDeployment(t *testing.T) {
	c := kafkatest.New(t)
	const parts = 2
	names := c.Topics(t, parts)
	prefix := strings.TrimSuffix(names.Commands, ".commands")
	adm := kadm.NewClient(c.Client(t))
	commitAs(t, adm, "blue-processor", names.Commands, parts)

	serve := func(args ...string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var stdout, stderr syncBuffer
		code := (&cli{stdout: &stdout, stderr: &stderr, lookupEnv: envMap()}).run(ctx, append([]string{"serve",
			"--brokers", strings.Join(c.Brokers, ","), "--topic-prefix", prefix, "--carts=false",
			"--state-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--log-level", "warn"}, args...))
		return code, stderr.String()
	}

	code, stderr := serve("--group", "green-processor")
	assert.Equal(t, exitFailure, code, stderr)
	assert.Contains(t, stderr, `reservations serve: refusing to start: group "blue-processor" (committed offsets on partition(s) 0,1`)
	assert.Contains(t, stderr, `consumes `+names.Commands+`, the input of this deployment's --group "green-processor"`)
	assert.Contains(t, stderr, "would both decide every command")
	assert.Contains(t, stderr, "--allow-other-groups (RESERVATIONS_ALLOW_OTHER_GROUPS)")

	// Allowed by name or by *, or the same group: serve starts (and stops
	// cleanly once ready).
	for _, args := range [][]string{
		{"--group", "green-processor", "--allow-other-groups", "archiver,blue-processor"},
		{"--group", "green-processor", "--allow-other-groups", "*"},
		{"--group", "blue-processor"},
	} {
		httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		d := startServe(t, append([]string{"--brokers", strings.Join(c.Brokers, ","), "--topic-prefix", prefix, "--carts=false",
			"--state-dir", t.TempDir(), "--http-addr", httpAddr, "--log-level", "info"}, args...)...)
		eventually(t, 60*time.Second, fmt.Sprintf("serve %v running", args), func() bool {
			select {
			case code := <-d.done:
				d.done <- code
				t.Fatalf("serve %v exited with %d; stderr:\n%s", args, code, d.stderr)
			default:
			}
			return strings.Contains(d.stderr.String(), "reservations serve running")
		})
		assert.Equal(t, exitOK, d.stop(t), d.stderr.String())
		if args[len(args)-1] == "archiver,blue-processor" {
			assert.Contains(t, d.stderr.String(), "another consumer group consumes "+names.Commands+", allowed by --allow-other-groups")
		}
	}
}

// TestSecondGroupOnDevTopicsRefused: with dev running (group
// reservations-processor, members consuming), a serve with another --group
// on dev's broker and prefix refuses to start; so does the cart coordinator
// check on the cart-commands topic. dev itself, restarted on its data folder
// with another --group, refuses too: the first group's committed offsets are
// in the broker's log.
func TestSecondGroupOnDevTopicsRefused(t *testing.T) {
	kafkaPort := freePort(t)
	broker := fmt.Sprintf("127.0.0.1:%d", kafkaPort)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dataDir := t.TempDir()
	devArgs := []string{"--kafka-port", fmt.Sprint(kafkaPort), "--data-dir", dataDir, "--http-addr", httpAddr,
		"--partitions", "2", "--log-level", "warn", "--pg-dsn", "off"}
	dev := startDev(t, devArgs...)
	waitReady(t, dev, httpAddr, 2)
	for i := range 4 { // commands on both partitions: the group commits offsets
		code, _, stderr := send(t, broker, "stock.set", "--sku", fmt.Sprintf("SKU-%d", i), "--on-hand", "1")
		require.Equal(t, exitOK, code, stderr)
	}

	code, _, stderr := tool(t, "serve", "--brokers", broker, "--group", "other-processor", "--cart-group", "other-carts",
		"--state-dir", t.TempDir(), "--http-addr", "127.0.0.1:0")
	assert.Equal(t, exitFailure, code)
	names := topics.NewNames("")
	assert.Contains(t, stderr, `group "reservations-processor" (1 member(s) consuming it`)
	assert.Contains(t, stderr, `consumes `+names.Commands+`, the input of this deployment's --group "other-processor"`)
	assert.Contains(t, stderr, `group "reservations-cart-coordinator" (1 member(s) consuming it`)
	assert.Contains(t, stderr, `consumes `+names.CartCommands+`, the input of this deployment's --cart-group "other-carts"`)
	require.Equal(t, exitOK, dev.stop(t), dev.stderr.String())

	code, _, stderr = tool(t, append([]string{"dev", "--group", "other-processor", "--carts=false"}, devArgs...)...)
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, stderr, `reservations dev: refusing to start: group "reservations-processor" (committed offsets on partition(s) 0,1`)
	assert.NotContains(t, stderr, "reservations dev running")
}
