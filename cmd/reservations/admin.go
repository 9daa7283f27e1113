package main

import (
	"encoding/json"
	"net/http"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/reservations/reservations/client/httpapi"
)

// readiness is what the admin endpoints read from the processor.
type readiness interface {
	Ready() bool
	Status() map[int32]string
}

// allPartitions is ready only while the processor runs every partition of
// the topics: the readiness of the single instance of dev. (Processor.Ready
// also holds before the first assignment, with no partition at all.)
type allPartitions struct {
	readiness
	n int
}

func (a allPartitions) Ready() bool { return a.readiness.Ready() && len(a.Status()) == a.n }

// withSink is ready while both the processor and the sink are (see
// sinkRunner.ok), and reports the sink's status in /readyz.
type withSink struct {
	readiness
	sink *sinkRunner
}

func (w withSink) Ready() bool        { return w.readiness.Ready() && w.sink.ok() }
func (w withSink) SinkStatus() string { return w.sink.status() }

// sinkOnly is the readiness of `reservations sink`: no processor partitions.
type sinkOnly struct{ sink *sinkRunner }

func (s sinkOnly) Ready() bool              { return s.sink.w.Ready() }
func (s sinkOnly) Status() map[int32]string { return map[int32]string{} }
func (s sinkOnly) SinkStatus() string       { return s.sink.status() }

// sinkStatus is implemented by readiness values that include a sink.
type sinkStatus interface{ SinkStatus() string }

// readyBody is the JSON body of /readyz.
type readyBody struct {
	Ready      bool              `json:"ready"`
	Partitions []partitionStatus `json:"partitions"`
	// Sink is the Postgres sink's status (ready, not_ready, failed); absent
	// when the process runs no sink.
	Sink string `json:"sink,omitempty"`
	// CartPartitions are the cart coordinator's partitions; absent when the
	// process runs no coordinator.
	CartPartitions []partitionStatus `json:"cart_partitions,omitempty"`
}

// cartStatus is implemented by readiness values that include a cart coordinator.
type cartStatus interface{ CartStatus() map[int32]string }

type partitionStatus struct {
	Partition int32  `json:"partition"`
	Status    string `json:"status"` // restoring | running
}

// withAPI also serves the HTTP API of the commands (client/httpapi) on the
// admin listener (dev). It passes the sink's and the coordinator's status of
// the readiness it wraps through to /readyz.
type withAPI struct {
	readiness
	api *httpapi.Handler
}

func (w withAPI) SinkStatus() string {
	if s, ok := w.readiness.(sinkStatus); ok {
		return s.SinkStatus()
	}
	return ""
}

func (w withAPI) CartStatus() map[int32]string {
	if c, ok := w.readiness.(cartStatus); ok {
		return c.CartStatus()
	}
	return nil
}

// commandAPI is implemented by readiness values that carry the HTTP API.
type commandAPI interface{ commandAPI() *httpapi.Handler }

func (w withAPI) commandAPI() *httpapi.Handler { return w.api }

// adminHandler serves:
//
//	/healthz  200 while the process runs
//	/readyz   200 when the processor (and the sink, when one runs) is ready,
//	          else 503; JSON body with the status of every assigned partition
//	          and of the sink either way
//	/metrics  Prometheus exposition of reg
//	/v1/...   queries, when not nil: the processor's interactive queries
//	          (processor.QueryHandler, which answers 404 for other paths)
//	POST /v1/...  the HTTP API of the commands, when proc carries it (withAPI)
func adminHandler(proc readiness, reg *prometheus.Registry, queries http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		body := readyBody{Ready: proc.Ready(), Partitions: []partitionStatus{}}
		for p, s := range proc.Status() {
			body.Partitions = append(body.Partitions, partitionStatus{p, s})
		}
		if s, ok := proc.(sinkStatus); ok {
			body.Sink = s.SinkStatus()
		}
		if c, ok := proc.(cartStatus); ok {
			body.CartPartitions = []partitionStatus{}
			for p, s := range c.CartStatus() {
				body.CartPartitions = append(body.CartPartitions, partitionStatus{p, s})
			}
			sort.Slice(body.CartPartitions, func(i, j int) bool { return body.CartPartitions[i].Partition < body.CartPartitions[j].Partition })
		}
		sort.Slice(body.Partitions, func(i, j int) bool { return body.Partitions[i].Partition < body.Partitions[j].Partition })
		w.Header().Set("Content-Type", "application/json")
		if !body.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if queries != nil {
		mux.Handle("/v1/", queries)
	}
	if a, ok := proc.(commandAPI); ok {
		a.commandAPI().Register(mux)
	}
	return mux
}
