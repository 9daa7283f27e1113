package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/internal/kafkatest"
	"github.com/reservations/reservations/topics"
)

// startServe runs `reservations serve` in-process until the test ends.
func startServe(t *testing.T, args ...string) *devProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &devProcess{cancel: cancel, done: make(chan int, 1), stdout: new(syncBuffer), stderr: new(syncBuffer)}
	go func() { d.done <- run(ctx, append([]string{"serve"}, args...), d.stdout, d.stderr) }()
	t.Cleanup(func() { d.stop(t) })
	return d
}

// runningPartitions returns the partitions /readyz lists as running.
func runningPartitions(httpAddr string) []int32 {
	code, body, err := httpGet("http://" + httpAddr + "/readyz")
	if err != nil || code != http.StatusOK {
		return nil
	}
	var rb readyBody
	if json.Unmarshal([]byte(body), &rb) != nil {
		return nil
	}
	var out []int32
	for _, p := range rb.Partitions {
		if p.Status == "running" {
			out = append(out, p.Partition)
		}
	}
	return out
}

// TestServeQueriesRedirectToOwner runs two serve instances in one group:
// each answers queries for the SKUs of its partition and redirects (307) the
// others to the owner's advertised address, --http-addr by default or
// --advertised-addr.
func TestServeQueriesRedirectToOwner(t *testing.T) {
	c := kafkatest.New(t)
	const parts = 2
	names := c.Topics(t, parts)
	prefix := strings.TrimSuffix(names.Commands, ".commands")
	brokers := strings.Join(c.Brokers, ",")
	common := []string{"--brokers", brokers, "--topic-prefix", prefix, "--group", prefix + "-group",
		"--commit-interval", "20ms", "--log-level", "warn"}

	addrA := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	portB := freePort(t)
	listenB, advertisedB := fmt.Sprintf("localhost:%d", portB), fmt.Sprintf("127.0.0.1:%d", portB)
	a := startServe(t, append([]string{"--http-addr", addrA, "--state-dir", t.TempDir(), "--instance-id", "a"}, common...)...)
	b := startServe(t, append([]string{"--http-addr", listenB, "--advertised-addr", advertisedB,
		"--state-dir", t.TempDir(), "--instance-id", "b"}, common...)...)
	owner := map[int32]string{}
	eventually(t, 90*time.Second, "each instance runs one partition", func() bool {
		for _, d := range []*devProcess{a, b} {
			select {
			case code := <-d.done:
				d.done <- code
				t.Fatalf("serve exited with %d; stderr:\n%s", code, d.stderr)
			default:
			}
		}
		pa, pb := runningPartitions(addrA), runningPartitions(advertisedB)
		if len(pa) != 1 || len(pb) != 1 || pa[0] == pb[0] {
			return false
		}
		owner[pa[0]], owner[pb[0]] = addrA, advertisedB
		return true
	})

	// One SKU per partition, each with stock.
	sku := map[int32]string{}
	for i := 0; len(sku) < parts; i++ {
		s := fmt.Sprintf("SKU-%d", i)
		if p := topics.Partition([]byte(s), parts); sku[p] == "" {
			sku[p] = s
			code, _, stderr := send(t, brokers, "stock.set", "--topic-prefix", prefix, "--sku", s, "--on-hand", "5")
			require.Equal(t, exitOK, code, stderr)
		}
	}

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for p, s := range sku {
		for _, at := range []string{addrA, advertisedB} {
			url := "http://" + at + "/v1/stock/" + s
			if at == owner[p] {
				eventually(t, 10*time.Second, s+" queryable on its owner", func() bool {
					code, _, err := httpGet(url)
					return err == nil && code == http.StatusOK
				})
				continue
			}
			// The other instance learns the owner from the group: poll.
			var resp *http.Response
			eventually(t, 30*time.Second, s+" redirected by "+at, func() bool {
				r, err := noFollow.Get(url)
				if err != nil {
					return false
				}
				r.Body.Close()
				resp = r
				return r.StatusCode == http.StatusTemporaryRedirect
			})
			assert.Equal(t, "http://"+owner[p]+"/v1/stock/"+s, resp.Header.Get("Location"))
			// A client following redirects gets the entity.
			code, body, err := httpGet(url)
			require.NoError(t, err)
			assert.Equal(t, http.StatusOK, code, body)
			assert.Contains(t, body, `"sku":"`+s+`"`)
		}
	}
	for _, d := range []*devProcess{a, b} {
		assert.Equal(t, exitOK, d.stop(t), d.stderr.String())
	}
}
