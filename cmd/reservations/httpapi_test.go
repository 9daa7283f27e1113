package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/internal/kafkatest"
	"github.com/reservations/reservations/schemas"
)

func httpPost(t *testing.T, url, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, string(b)
}

// dev serves the HTTP API of the commands on its admin listener, next to the
// GET queries, /readyz and /metrics, which keep working.
func TestDevServesHTTPAPI(t *testing.T) {
	kafkaPort := freePort(t)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dev := startDev(t, "--kafka-port", strconv.Itoa(kafkaPort), "--data-dir", t.TempDir(), "--http-addr", httpAddr,
		"--partitions", "2", "--log-level", "warn", "--commit-interval", "20ms", "--pg-dsn", "off")
	waitReady(t, dev, httpAddr, 2)
	base := "http://" + httpAddr
	assert.Contains(t, dev.stdout.String(), "curl -s -XPOST "+base+"/v1/stock/SKU-1")

	code, _, body := httpPost(t, base+"/v1/stock/SKU-1", `{"on_hand":10}`)
	require.Equal(t, http.StatusOK, code, body)
	code, hdr, body := httpPost(t, base+"/v1/reservations", `{"sku":"SKU-1","reservation_id":"r-1","quantity":4,"cart_id":"cart-9"}`,
		"Idempotency-Key", "http-1")
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, "http-1", hdr.Get("Idempotency-Key"))
	var res schemas.Result
	require.NoError(t, json.Unmarshal([]byte(body), &res))
	assert.Equal(t, &schemas.StockView{OnHand: 10, Reserved: 4, Available: 6}, res.Stock)

	// The GET routes of the admin listener are still there.
	eventually(t, 10*time.Second, "reservation queryable", func() bool {
		code, body, err := httpGet(base + "/v1/stock/SKU-1/reservations/r-1")
		return err == nil && code == http.StatusOK && strings.Contains(body, `"quantity":4`)
	})
	code, body, err := httpGet(base + "/v1/stock/SKU-1")
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, code, body)
	code, body, err = httpGet(base + "/readyz")
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, `"cart_partitions"`, "the coordinator's status passes through")
	code, body, err = httpGet(base + "/v1/openapi.yaml")
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "openapi: 3.1.0")

	code, _, body = httpPost(t, base+"/v1/carts/cart-3/reserve", `{"items":[{"sku":"SKU-1","quantity":7}]}`)
	assert.Equal(t, http.StatusConflict, code, body)
	assert.Contains(t, body, `"reason":"insufficient_stock"`)
	require.Equal(t, exitOK, dev.stop(t), dev.stderr.String())
}

// serve runs the HTTP API on --api-addr; it is off without it.
func TestServeHTTPAPI(t *testing.T) {
	c := kafkatest.New(t)
	names := c.Topics(t, 2)
	prefix := strings.TrimSuffix(names.Commands, ".commands")
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	apiAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s := startServe(t, "--brokers", strings.Join(c.Brokers, ","), "--topic-prefix", prefix, "--group", prefix+"-group",
		"--commit-interval", "20ms", "--log-level", "warn", "--http-addr", httpAddr, "--api-addr", apiAddr,
		"--state-dir", t.TempDir())
	eventually(t, 90*time.Second, "serve runs both partitions", func() bool { return len(runningPartitions(httpAddr)) == 2 })
	code, _, body := httpPost(t, "http://"+apiAddr+"/v1/stock/SKU-1", `{"on_hand":3}`)
	require.Equal(t, http.StatusOK, code, body)
	code, _, body = httpPost(t, "http://"+apiAddr+"/v1/stock/SKU-1", `{"delta":-4}`)
	assert.Equal(t, http.StatusConflict, code, body)
	assert.Contains(t, body, `"reason":"negative_stock"`)
	// The admin listener does not serve it.
	code, _, _ = httpPost(t, "http://"+httpAddr+"/v1/stock/SKU-1", `{"on_hand":3}`)
	assert.NotEqual(t, http.StatusOK, code)
	require.Equal(t, exitOK, s.stop(t), s.stderr.String())
}
