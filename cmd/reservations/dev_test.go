package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a running
// subcommand and the reads of the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// eventually polls cond every 50ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("%s: not within %s", what, timeout)
		case <-tick.C:
		}
	}
}

// devProcess is `reservations dev` running in-process.
type devProcess struct {
	cancel         context.CancelFunc
	done           chan int
	stdout, stderr *syncBuffer
}

func startDev(t *testing.T, args ...string) *devProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &devProcess{cancel: cancel, done: make(chan int, 1), stdout: new(syncBuffer), stderr: new(syncBuffer)}
	go func() { d.done <- run(ctx, append([]string{"dev"}, args...), d.stdout, d.stderr) }()
	t.Cleanup(func() { d.stop(t) })
	return d
}

// stop ends dev as Ctrl-C does and returns its exit code (idempotent).
func (d *devProcess) stop(t *testing.T) int {
	t.Helper()
	d.cancel()
	select {
	case code, ok := <-d.done:
		if ok {
			close(d.done)
			return code
		}
		return exitOK
	case <-time.After(90 * time.Second):
		t.Fatalf("dev did not stop; stderr:\n%s", d.stderr)
		return -1
	}
}

func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitReady polls /readyz until it answers 200 with every partition running.
func waitReady(t *testing.T, d *devProcess, httpAddr string, partitions int) {
	t.Helper()
	eventually(t, 90*time.Second, "dev ready", func() bool {
		select {
		case code := <-d.done:
			d.done <- code
			t.Fatalf("dev exited with %d; stderr:\n%s", code, d.stderr)
		default:
		}
		code, body, err := httpGet("http://" + httpAddr + "/readyz")
		if err != nil || code != http.StatusOK {
			return false
		}
		var rb readyBody
		require.NoError(t, json.Unmarshal([]byte(body), &rb))
		return rb.Ready && len(rb.Partitions) == partitions
	})
}

// send runs `reservations send` and returns its exit code, the decoded
// result (if one was printed) and stderr.
func send(t *testing.T, broker string, args ...string) (int, *schemas.Result, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append([]string{"send", "--brokers", broker, "--timeout", "30s"}, args...), &stdout, &stderr)
	if stdout.Len() == 0 {
		return code, nil, stderr.String()
	}
	var res schemas.Result
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &res), "stdout: %s", stdout.String())
	return code, &res, stderr.String()
}

func TestDevEndToEnd(t *testing.T) {
	dir := t.TempDir()
	const partitions = 3
	kafkaPort := freePort(t)
	broker := "127.0.0.1:" + strconv.Itoa(kafkaPort)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := []string{"--kafka-port", strconv.Itoa(kafkaPort), "--data-dir", dir, "--http-addr", httpAddr,
		"--partitions", strconv.Itoa(partitions), "--log-level", "warn", "--commit-interval", "20ms",
		"--pg-dsn", "off"} // hermetic: no sink even if a local Postgres answers

	dev := startDev(t, args...)
	waitReady(t, dev, httpAddr, partitions)
	assert.Contains(t, dev.stdout.String(), "kcat -P -b "+broker+" -t reservations.commands -k SKU-1 -X partitioner=murmur2_random")

	// A second dev on the same Kafka port fails clearly.
	var out2, err2 bytes.Buffer
	code := run(context.Background(), []string{"dev", "--kafka-port", strconv.Itoa(kafkaPort), "--data-dir", t.TempDir(),
		"--http-addr", "127.0.0.1:0"}, &out2, &err2)
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, err2.String(), fmt.Sprintf("kafka port %d on 127.0.0.1 is already in use", kafkaPort))

	// A fatal processor error (here: serve on topics that do not exist) exits
	// non-zero with the error.
	var out3, err3 bytes.Buffer
	code = run(context.Background(), []string{"serve", "--brokers", broker, "--topic-prefix", "missing",
		"--http-addr", "127.0.0.1:0", "--state-dir", t.TempDir(), "--log-level", "warn"}, &out3, &err3)
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, err3.String(), "reservations serve: topic layout breaks the contract: topic is missing: missing.commands")
	assert.Contains(t, err3.String(), "--create-topics")

	// stock.set, then a reserve that holds 6 of the 10.
	code, res, stderr := send(t, broker, "stock.set", "--sku", "SKU-1", "--on-hand", "10", "--id", "e2e-set-1")
	require.Equal(t, exitOK, code, stderr)
	require.NotNil(t, res)
	assert.Equal(t, "e2e-set-1", res.CommandID)
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome)
	assert.Equal(t, &schemas.StockView{OnHand: 10, Reserved: 0, Available: 10}, res.Stock)

	// Interactive queries on the admin listener: the stock entity as the
	// changelog has it (the store is written right after the commit that
	// made the result visible, so poll), 404 for an unknown SKU.
	var stock schemas.StockEntity
	eventually(t, 10*time.Second, "stock SKU-1 queryable", func() bool {
		code, body, err := httpGet("http://" + httpAddr + "/v1/stock/SKU-1")
		if err != nil || code != http.StatusOK {
			return false
		}
		require.NoError(t, json.Unmarshal([]byte(body), &stock), body)
		return true
	})
	assert.Equal(t, "SKU-1", stock.SKU)
	assert.Equal(t, int64(10), stock.OnHand)
	assert.Equal(t, int64(0), stock.Reserved)
	assert.Equal(t, int64(10), stock.Available)
	assert.Equal(t, "e2e-set-1", stock.CommandID)
	code, body, err := httpGet("http://" + httpAddr + "/v1/stock/SKU-404")
	require.NoError(t, err)
	assert.Equal(t, http.StatusNotFound, code)
	assert.JSONEq(t, `{"error":"not found"}`, body)

	code, res, stderr = send(t, broker, "reserve", "--sku", "SKU-1", "--reservation", "r-1", "--qty", "6",
		"--cart", "cart-9", "--id", "e2e-reserve-1", "--pretty")
	require.Equal(t, exitOK, code, stderr)
	require.NotNil(t, res)
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome)
	assert.False(t, res.Duplicate)
	assert.Equal(t, &schemas.StockView{OnHand: 10, Reserved: 6, Available: 4}, res.Stock)
	require.NotNil(t, res.Reservation)
	assert.Equal(t, schemas.StatusActive, res.Reservation.Status)
	assert.Equal(t, "cart-9", res.Reservation.CartID)
	var held schemas.ReservationEntity
	eventually(t, 10*time.Second, "reservation r-1 queryable", func() bool {
		code, body, err := httpGet("http://" + httpAddr + "/v1/stock/SKU-1/reservations/r-1")
		if err != nil || code != http.StatusOK {
			return false
		}
		require.NoError(t, json.Unmarshal([]byte(body), &held), body)
		return true
	})
	assert.Equal(t, schemas.StatusActive, held.Reservation.Status)
	assert.Equal(t, int64(6), held.Reservation.Quantity)
	code, _, err = httpGet("http://" + httpAddr + "/v1/stock/SKU-1/reservations/r-404")
	require.NoError(t, err)
	assert.Equal(t, http.StatusNotFound, code)

	// A rejection exits 1 with the result.
	code, res, stderr = send(t, broker, "release", "--sku", "SKU-1", "--reservation", "r-unknown")
	assert.Equal(t, exitFailure, code, stderr)
	require.NotNil(t, res)
	assert.Equal(t, schemas.OutcomeRejected, res.Outcome)
	assert.Equal(t, schemas.ReasonUnknownReservation, res.Reason)

	// No such topics: exit 3 with a message.
	code, res, stderr = send(t, broker, "release", "--sku", "SKU-1", "--reservation", "r-1", "--topic-prefix", "nothing-here")
	assert.Equal(t, exitNoResult, code)
	assert.Nil(t, res)
	assert.Contains(t, stderr, "topic nothing-here.commands does not exist")

	// Topics without a processor: exit 3 after --timeout.
	_, err = createTopics(context.Background(), []string{broker}, topics.NewNames("idle"), 1, 1)
	require.NoError(t, err)
	var out4, err4 bytes.Buffer
	code = run(context.Background(), []string{"send", "stock.set", "--brokers", broker, "--topic-prefix", "idle",
		"--sku", "S", "--on-hand", "1", "--id", "idle-1", "--timeout", "1s"}, &out4, &err4)
	assert.Equal(t, exitNoResult, code)
	assert.Empty(t, out4.String())
	assert.Contains(t, err4.String(), `no result for command_id "idle-1" within 1s: wait for the result on idle.results partition 0`)

	// Admin endpoints.
	code, body, err = httpGet("http://" + httpAddr + "/healthz")
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok\n", body)
	code, body, err = httpGet("http://" + httpAddr + "/readyz")
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"ready":true,"partitions":[{"partition":0,"status":"running"},{"partition":1,"status":"running"},{"partition":2,"status":"running"}],`+
		`"cart_partitions":[{"partition":0,"status":"running"},{"partition":1,"status":"running"},{"partition":2,"status":"running"}]}`, body)
	code, body, err = httpGet("http://" + httpAddr + "/metrics")
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, `reservations_commands_processed_total{outcome="accepted",reason="",role="sku",type="reserve"} 1`)
	assert.Contains(t, body, "reservations_build_info{")
	assert.Contains(t, body, "go_goroutines")

	// Stop as Ctrl-C does: a clean exit, and the listeners are gone.
	require.Equal(t, exitOK, dev.stop(t), dev.stderr.String())
	_, _, err = httpGet("http://" + httpAddr + "/healthz")
	assert.Error(t, err)

	// Start again on the same data folder: the state survived.
	dev = startDev(t, args...)
	waitReady(t, dev, httpAddr, partitions)

	// 5 fits only if the reservation of 6 is no longer held.
	code, res, stderr = send(t, broker, "reserve", "--sku", "SKU-1", "--reservation", "r-2", "--qty", "5", "--id", "e2e-reserve-2")
	assert.Equal(t, exitFailure, code, stderr)
	require.NotNil(t, res)
	assert.Equal(t, schemas.OutcomeRejected, res.Outcome)
	assert.Equal(t, schemas.ReasonInsufficientStock, res.Reason)
	assert.Equal(t, &schemas.StockView{OnHand: 10, Reserved: 6, Available: 4}, res.Stock)

	// The first reserve, sent again, is answered with its original result.
	code, res, stderr = send(t, broker, "reserve", "--sku", "SKU-1", "--reservation", "r-1", "--qty", "6",
		"--cart", "cart-9", "--id", "e2e-reserve-1")
	assert.Equal(t, exitOK, code, stderr)
	require.NotNil(t, res)
	assert.True(t, res.Duplicate)
	assert.Equal(t, schemas.OutcomeAccepted, res.Outcome)
	assert.Equal(t, "e2e-reserve-1", res.CommandID)
	assert.Equal(t, &schemas.StockView{OnHand: 10, Reserved: 6, Available: 4}, res.Stock)

	// Raw JSON goes the same way.
	code, res, stderr = send(t, broker, "--json", `{"command_id":"e2e-release-1","type":"release","sku":"SKU-1","reservation_id":"r-1"}`)
	assert.Equal(t, exitOK, code, stderr)
	require.NotNil(t, res)
	assert.Equal(t, &schemas.StockView{OnHand: 10, Reserved: 0, Available: 10}, res.Stock)

	// Carts through the coordinator dev runs: all or nothing.
	code, _, stderr = send(t, broker, "stock.set", "--sku", "SKU-2", "--on-hand", "1", "--id", "e2e-set-2")
	require.Equal(t, exitOK, code, stderr)
	var stdout bytes.Buffer
	var cr schemas.CartResult
	code = run(context.Background(), []string{"send", "cart.reserve", "--brokers", broker, "--timeout", "30s",
		"--cart", "cart-7", "--items", "SKU-1:3,SKU-2:2", "--id", "e2e-cart-1"}, &stdout, &bytes.Buffer{})
	assert.Equal(t, exitFailure, code)
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &cr), stdout.String())
	assert.Equal(t, schemas.OutcomeRejected, cr.Outcome)
	assert.Equal(t, schemas.ReasonInsufficientStock, cr.Reason)
	require.Len(t, cr.Lines, 2)
	code, res, stderr = send(t, broker, "stock.adjust", "--sku", "SKU-1", "--delta", "1", "--id", "e2e-adjust-1")
	require.Equal(t, exitOK, code, stderr)
	assert.Equal(t, &schemas.StockView{OnHand: 11, Reserved: 0, Available: 11}, res.Stock, "the rejected cart holds nothing")
	stdout.Reset()
	code = run(context.Background(), []string{"send", "cart.reserve", "--brokers", broker, "--timeout", "30s",
		"--cart", "cart-7", "--items", "SKU-1:3,SKU-2:1", "--id", "e2e-cart-2"}, &stdout, &bytes.Buffer{})
	assert.Equal(t, exitOK, code, stdout.String())
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &cr), stdout.String())
	assert.Equal(t, schemas.OutcomeAccepted, cr.Outcome)
	eventually(t, 10*time.Second, "cart-7 queryable", func() bool {
		code, body, err := httpGet("http://" + httpAddr + "/v1/carts/cart-7")
		return err == nil && code == http.StatusOK && strings.Contains(body, `"reservation_id":"e2e-cart-2"`)
	})

	require.Equal(t, exitOK, dev.stop(t), dev.stderr.String())
}
