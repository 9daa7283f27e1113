package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeProcessor is a hand-written readiness.
type fakeProcessor struct {
	mu     sync.Mutex
	ready  bool
	status map[int32]string
}

func (f *fakeProcessor) Ready() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

func (f *fakeProcessor) Status() map[int32]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[int32]string, len(f.status))
	for k, v := range f.status {
		out[k] = v
	}
	return out
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, err := io.ReadAll(rec.Result().Body)
	require.NoError(t, err)
	return rec.Code, string(b)
}

func TestAdminEndpoints(t *testing.T) {
	p := &fakeProcessor{status: map[int32]string{10: "running", 2: "restoring", 1: "running"}}
	queries := http.NewServeMux()
	queries.HandleFunc("GET /v1/stock/{sku}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("stock " + r.PathValue("sku")))
	})
	h := adminHandler(p, newRegistry(), queries)

	code, body := get(t, h, "/healthz")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok\n", body)

	code, body = get(t, h, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	var rb readyBody
	require.NoError(t, json.Unmarshal([]byte(body), &rb))
	assert.Equal(t, readyBody{Ready: false, Partitions: []partitionStatus{{1, "running"}, {2, "restoring"}, {10, "running"}}}, rb)

	p.mu.Lock()
	p.ready, p.status[2] = true, "running"
	p.mu.Unlock()
	code, body = get(t, h, "/readyz")
	assert.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"ready":true,"partitions":[{"partition":1,"status":"running"},{"partition":2,"status":"running"},{"partition":10,"status":"running"}]}`, body)

	code, body = get(t, h, "/metrics")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "reservations_build_info{")
	assert.Contains(t, body, "go_goroutines")
	if runtime.GOOS == "linux" {
		assert.Contains(t, body, "process_cpu_seconds_total")
	}

	// The queries are mounted under /v1/ with their full path.
	code, body = get(t, h, "/v1/stock/SKU-1")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "stock SKU-1", body)
	code, _ = get(t, h, "/v1/nothing")
	assert.Equal(t, http.StatusNotFound, code)
	code, _ = get(t, adminHandler(p, newRegistry(), nil), "/v1/stock/SKU-1")
	assert.Equal(t, http.StatusNotFound, code, "no queries without a processor (the sink)")
}

func TestAdvertisedAddr(t *testing.T) {
	listening := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 41234}
	for _, tc := range []struct {
		httpAddr, advertised, want string
	}{
		{"127.0.0.1:8080", "", "127.0.0.1:41234"},            // the port the listener got
		{"localhost:0", "", "localhost:41234"},               // the host as configured
		{"10.1.2.3:8080", "", "10.1.2.3:41234"},              //
		{"0.0.0.0:8080", "", ""},                             // no address others can reach
		{"[::]:8080", "", ""},                                //
		{":8080", "", ""},                                    //
		{"0.0.0.0:8080", "pod-1.svc:8080", "pod-1.svc:8080"}, // the flag wins
		{"127.0.0.1:8080", "host-a:9090", "host-a:9090"},
	} {
		p := pipelineConfig{HTTPAddr: tc.httpAddr, AdvertisedAddr: tc.advertised}
		assert.Equal(t, tc.want, p.advertisedAddr(listening), "%+v", tc)
	}
	assert.Equal(t, "127.0.0.1:8080", (&pipelineConfig{HTTPAddr: "127.0.0.1:8080"}).advertisedAddr(nil))
}

func TestAllPartitionsReadiness(t *testing.T) {
	p := &fakeProcessor{ready: true, status: map[int32]string{}}
	a := allPartitions{p, 2}
	assert.False(t, a.Ready(), "no partition assigned yet")
	p.status = map[int32]string{0: "running", 1: "running"}
	assert.True(t, a.Ready())
	p.ready = false
	assert.False(t, a.Ready())
}
