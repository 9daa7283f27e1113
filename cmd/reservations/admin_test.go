package main

import (
	"encoding/json"
	"io"
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
	h := adminHandler(p, newRegistry())

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
