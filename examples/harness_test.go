package examples_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/internal/kafkatest"
	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// parts is the partition count of the test topics: enough that a wrong
// partitioner is caught (see skuForTest).
const parts = 12

// pipeline is a broker and a processor on loopback.
type pipeline struct {
	brokers []string
	names   topics.Names
}

// startPipeline runs a processor in-process on a fresh test broker and waits
// until it owns every partition.
func startPipeline(t *testing.T) pipeline {
	t.Helper()
	c := kafkatest.New(t)
	names := c.Topics(t, parts)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("test", t.Name())
	p, err := processor.New(processor.Config{
		Brokers: c.Brokers, Topics: names, Group: names.Commands + "-group", StateDir: t.TempDir(),
		CommitInterval: 20 * time.Millisecond, TransactionTimeout: 5 * time.Second, SessionTimeout: 6 * time.Second,
		KafkaOpts: kafkatest.ClientOpts(),
	}, processor.WithLogger(log))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "processor")
		case <-time.After(60 * time.Second):
			t.Error("processor did not stop")
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !p.Ready() || len(p.Status()) != parts {
		if time.Now().After(deadline) {
			t.Fatalf("processor not ready with %d partitions: %v", parts, p.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return pipeline{brokers: c.Brokers, names: names}
}

// skuForTest returns a SKU that Kafka's murmur2 partitioner and librdkafka's
// default (consistent_random: CRC32 of the key) put on different partitions,
// so that an example without the murmur2 setting reads the wrong results
// partition and fails.
func skuForTest(t *testing.T, prefix string) string {
	t.Helper()
	for i := range 100 {
		sku := fmt.Sprintf("%s-%d", prefix, i)
		if int32(crc32.ChecksumIEEE([]byte(sku))%parts) != topics.Partition([]byte(sku), parts) {
			return sku
		}
	}
	t.Fatal("no SKU whose murmur2 and CRC32 partitions differ")
	return ""
}

// exchange is one output line of an example: a command, where it was
// produced, and the result awaited for it.
type exchange struct {
	Command   map[string]any  `json:"command"`
	Partition int32           `json:"partition"`
	Offset    int64           `json:"offset"`
	Result    *schemas.Result `json:"result"`
}

// runExample runs an example program and returns its exchanges; it fails t
// unless the program exits 0.
func runExample(t *testing.T, dir string, name string, args ...string) []exchange {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("%s %s\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), stdout.String(), stderr.String())
	require.NoError(t, err, "%s %s", name, strings.Join(args, " "))
	var out []exchange
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var e exchange
		require.NoError(t, json.Unmarshal(sc.Bytes(), &e), "output line %q", sc.Text())
		out = append(out, e)
	}
	return out
}

// checkExchanges checks what an example printed for `stock.set on_hand` then
// `reserve quantity` of sku: each command on the SKU's murmur2 partition (not
// forwarded), each result the accepted decision of that very record.
func checkExchanges(t *testing.T, out []exchange, sku string, onHand, quantity int64) {
	t.Helper()
	require.Len(t, out, 2, "want the exchanges of stock.set and reserve")
	want := topics.Partition([]byte(sku), parts)
	for i, typ := range []string{schemas.TypeStockSet, schemas.TypeReserve} {
		e := out[i]
		require.NotNil(t, e.Result, "no result for %v", e.Command)
		assert.Equal(t, typ, e.Command["type"])
		assert.Equal(t, want, e.Partition, "%s produced to partition %d, murmur2 says %d", typ, e.Partition, want)
		r := e.Result
		assert.Equal(t, e.Command["command_id"], r.CommandID)
		assert.Equal(t, typ, r.Type)
		assert.Equal(t, sku, r.SKU)
		assert.Equal(t, schemas.OutcomeAccepted, r.Outcome, "%s: %s %s", typ, r.Reason, r.Message)
		assert.False(t, r.Duplicate)
		// The result names the record it decided: the one the example
		// produced, not a forwarded copy.
		assert.Equal(t, e.Partition, r.Partition)
		assert.Equal(t, e.Offset, r.Offset, "%s was decided at another offset than produced: forwarded?", typ)
	}
	stock := out[1].Result.Stock
	require.NotNil(t, stock)
	assert.Equal(t, schemas.StockView{OnHand: onHand, Reserved: quantity, Available: onHand - quantity}, *stock)
	require.NotNil(t, out[1].Result.Reservation)
	assert.Equal(t, schemas.StatusActive, out[1].Result.Reservation.Status)
	assert.Equal(t, quantity, out[1].Result.Reservation.Quantity)
}
