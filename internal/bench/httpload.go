package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/client"
	"github.com/reservations/reservations/client/httpapi"
	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// HTTPLoadConfig is the load measurement through the HTTP API: an in-process
// kfake broker and SKU processor, the request/reply client and the HTTP API
// on a loopback listener, and closed-loop HTTP callers (each sends its next
// request when the last is answered) at each concurrency in turn.
type HTTPLoadConfig struct {
	// Concurrency lists the numbers of concurrent callers, one step each
	// (default 16, 64, 256, 1024).
	Concurrency []int
	// Duration of each step (default 10 s), after a warm-up of a tenth of it.
	Duration time.Duration
	// Partitions of the topics (default 12) and SKUs (default 1000, each with
	// ample stock: every reserve fits).
	Partitions int32
	SKUs       int
	// CommitInterval of the processor (default 20 ms).
	CommitInterval time.Duration
	// Clients is the number of request/reply clients the API spreads its
	// calls over (default 1).
	Clients int
	// TargetP95 is the p95 the report compares against (default 150 ms).
	TargetP95 time.Duration
	Logger    *slog.Logger
	// HTTPOnly answers every call at once without a broker or a processor:
	// what the HTTP layer (server, handler, callers) alone costs.
	HTTPOnly bool
	// Brokers, when set, is the broker to use (httpload runs kfake in a
	// process of its own); empty: an in-process kfake broker.
	Brokers []string
	// AfterSteps, when set, runs after the last step while everything still
	// runs (httpload -memprofile takes the heap profile there); its failure is
	// printed, and the report is kept.
	AfterSteps func() error
}

// HTTPStep is one concurrency step of the HTTP load.
type HTTPStep struct {
	Concurrency int     `json:"concurrency"`
	Requests    int     `json:"requests"`
	Errors      int     `json:"errors"`
	Throughput  float64 `json:"throughput_per_s"`
	P50         float64 `json:"p50_ms"`
	P95         float64 `json:"p95_ms"`
	P99         float64 `json:"p99_ms"`
	Max         float64 `json:"max_ms"`
	// ReadAmplification is the clients' result records read per result
	// needed during the step.
	ReadAmplification float64 `json:"read_amplification"`
	MeetsTarget       bool    `json:"meets_target_p95"`
}

// HTTPLoadReport is the result of RunHTTPLoad.
type HTTPLoadReport struct {
	Partitions     int32   `json:"partitions"`
	SKUs           int     `json:"skus"`
	CommitInterval string  `json:"commit_interval"`
	Duration       string  `json:"step_duration"`
	TargetP95Ms    float64 `json:"target_p95_ms"`
	// HTTPOnly: the calls were answered without a broker or a processor.
	HTTPOnly bool       `json:"http_only,omitempty"`
	Steps    []HTTPStep `json:"steps"`
}

func (c *HTTPLoadConfig) defaults() {
	if len(c.Concurrency) == 0 {
		c.Concurrency = []int{16, 64, 256, 1024}
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Partitions <= 0 {
		c.Partitions = 12
	}
	if c.SKUs <= 0 {
		c.SKUs = 1000
	}
	if c.CommitInterval <= 0 {
		c.CommitInterval = 20 * time.Millisecond
	}
	if c.Clients <= 0 {
		c.Clients = 1
	}
	if c.TargetP95 <= 0 {
		c.TargetP95 = 150 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// RunHTTPLoad runs the HTTP load measurement and prints a line per step and
// a Markdown table to out.
func RunHTTPLoad(ctx context.Context, cfg HTTPLoadConfig, out io.Writer) (*HTTPLoadReport, error) {
	cfg.defaults()
	var caller httpapi.Caller = echo{}
	var clients []*client.Client
	if !cfg.HTTPOnly {
		var stop func()
		var err error
		clients, stop, err = startHTTPBackend(ctx, cfg)
		defer stop()
		if err != nil {
			return nil, err
		}
		caller = &spread{clients: clients}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: httpapi.New(caller, httpapi.Config{Timeout: 10 * time.Second}),
		ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	return runHTTPSteps(ctx, cfg, out, "http://"+ln.Addr().String(), clients)
}

// startHTTPBackend starts what the API calls: a broker (unless cfg.Brokers),
// the SKU processor and cfg.Clients request/reply clients; stop stops them all
// (stop is set, and to be called, even when err is not nil).
func startHTTPBackend(ctx context.Context, cfg HTTPLoadConfig) (clients []*client.Client, stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	brokers := cfg.Brokers
	if len(brokers) == 0 {
		cluster, err := startBroker(ctx)
		if err != nil {
			return nil, stop, err
		}
		stops = append(stops, cluster.Close)
		brokers = cluster.ListenAddrs()
	}
	names := topics.NewNames("httpload")
	if err := ensureTopics(ctx, brokers, names, cfg.Partitions); err != nil {
		return nil, stop, err
	}
	dir, err := os.MkdirTemp("", "reservations-httpload-")
	if err != nil {
		return nil, stop, err
	}
	stops = append(stops, func() { _ = os.RemoveAll(dir) })
	proc, err := processor.New(processor.Config{Brokers: brokers, Topics: names, Group: "httpload-group", StateDir: dir,
		CommitInterval: cfg.CommitInterval, KafkaOpts: []kgo.Opt{kgo.MetadataMinAge(100 * time.Millisecond)}},
		processor.WithLogger(cfg.Logger))
	if err != nil {
		return nil, stop, err
	}
	pctx, pcancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- proc.Run(pctx) }()
	stops = append(stops, func() {
		pcancel()
		<-done
	})
	if err := waitReady(ctx, proc, cfg.Partitions, done, 60*time.Second, 10*time.Millisecond, "processor"); err != nil {
		return nil, stop, err
	}
	for range cfg.Clients {
		c, err := client.New(ctx, brokers, client.WithTopicPrefix("httpload"), client.WithLogger(cfg.Logger),
			client.WithKafkaOpts(kgo.MetadataMinAge(100*time.Millisecond)))
		if err != nil {
			return nil, stop, err
		}
		stops = append(stops, c.Close)
		clients = append(clients, c)
	}
	return clients, stop, nil
}

// echo answers every command at once with an accepted result, without a
// broker or a processor: the HTTP layer alone (httpload -http-only).
type echo struct{}

func (echo) Do(_ context.Context, cmd schemas.Command) (schemas.Result, error) {
	// As large as an accepted reserve's result: the stock and the reservation.
	now := schemas.MillisOf(time.Now())
	var q int64 = 1
	if cmd.Quantity != nil {
		q = *cmd.Quantity
	}
	return schemas.Result{CommandID: cmd.CommandID, Type: cmd.Type, SKU: cmd.SKU, ReservationID: cmd.ReservationID,
		Outcome: schemas.OutcomeAccepted, Stock: &schemas.StockView{OnHand: 1_000_000_000, Reserved: q, Available: 1_000_000_000 - q},
		Reservation: &schemas.Reservation{ReservationID: cmd.ReservationID, SKU: cmd.SKU, Quantity: q, Status: schemas.StatusActive,
			ExpiresAt: now + 60_000, CartID: cmd.CartID},
		DecidedAt: now}, nil
}

func (echo) DoCart(_ context.Context, cmd schemas.CartCommand) (schemas.CartResult, error) {
	return schemas.CartResult{CommandID: cmd.CommandID, Type: cmd.Type, CartID: cmd.CartID, Outcome: schemas.OutcomeAccepted}, nil
}

// runHTTPSteps sets the stock of every SKU through the API at base, then runs
// the steps.
func runHTTPSteps(ctx context.Context, cfg HTTPLoadConfig, out io.Writer, base string, clients []*client.Client) (*HTTPLoadReport, error) {
	maxConc := 0
	for _, n := range cfg.Concurrency {
		maxConc = max(maxConc, n)
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConns: maxConc, MaxIdleConnsPerHost: maxConc,
		MaxConnsPerHost: maxConc, IdleConnTimeout: time.Minute}}
	defer hc.CloseIdleConnections()

	// Ample stock for every SKU, so that every reserve is accepted.
	for i := range cfg.SKUs {
		body := `{"on_hand":1000000000}`
		if code, err := postOnce(ctx, hc, base+"/v1/stock/"+httpSKU(i), body); err != nil || code != http.StatusOK {
			return nil, fmt.Errorf("set stock of %s: status %d: %v", httpSKU(i), code, err)
		}
	}

	rep := &HTTPLoadReport{Partitions: cfg.Partitions, SKUs: cfg.SKUs, CommitInterval: cfg.CommitInterval.String(),
		Duration: cfg.Duration.String(), TargetP95Ms: ms(cfg.TargetP95), HTTPOnly: cfg.HTTPOnly}
	for _, n := range cfg.Concurrency {
		st, err := httpStep(ctx, hc, base, cfg, n, clients)
		if err != nil {
			return rep, err
		}
		rep.Steps = append(rep.Steps, st)
		fmt.Fprintf(out, "http-api clients=%-5d %7d requests %8.0f/s p50=%.1fms p95=%.1fms p99=%.1fms max=%.1fms errors=%d read-amplification=%.2f\n",
			st.Concurrency, st.Requests, st.Throughput, st.P50, st.P95, st.P99, st.Max, st.Errors, st.ReadAmplification)
	}
	if cfg.AfterSteps != nil {
		if err := cfg.AfterSteps(); err != nil {
			fmt.Fprintln(out, "after the last step:", err)
		}
	}
	fmt.Fprint(out, rep.Markdown())
	return rep, nil
}

// spread sends each call through the next of its clients.
type spread struct {
	mu      sync.Mutex
	next    int
	clients []*client.Client
}

func (s *spread) pick() *client.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next = (s.next + 1) % len(s.clients)
	return s.clients[s.next]
}

func (s *spread) Do(ctx context.Context, cmd schemas.Command) (schemas.Result, error) {
	return s.pick().Do(ctx, cmd)
}

func (s *spread) DoCart(ctx context.Context, cmd schemas.CartCommand) (schemas.CartResult, error) {
	return s.pick().DoCart(ctx, cmd)
}

func httpSKU(i int) string { return "H-" + strconv.Itoa(i) }

func postOnce(ctx context.Context, hc *http.Client, url, body string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewBufferString(body))
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// httpStep runs n closed-loop callers for the warm-up and then cfg.Duration,
// each reserving 1 unit of a random SKU per request.
func httpStep(ctx context.Context, hc *http.Client, base string, cfg HTTPLoadConfig, n int, clients []*client.Client) (HTTPStep, error) {
	warm := cfg.Duration / 10
	start := time.Now()
	measureFrom, end := start.Add(warm), start.Add(warm+cfg.Duration)
	var stats0 []client.Stats
	var statsMu sync.Mutex
	snap := func() []client.Stats {
		s := make([]client.Stats, len(clients))
		for i, c := range clients {
			s[i] = c.Stats()
		}
		return s
	}
	var (
		mu     sync.Mutex
		lat    []time.Duration
		errs   int
		wg     sync.WaitGroup
		errOne error
	)
	go func() {
		time.Sleep(time.Until(measureFrom))
		statsMu.Lock()
		stats0 = snap()
		statsMu.Unlock()
	}()
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(n), uint64(g)))
			var local []time.Duration
			var body []byte
			url := base + "/v1/reservations"
			bad := 0
			for i := 0; ctx.Err() == nil; i++ {
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				// The body as a caller writes it, built without reflection: the
				// callers share the cores with what they measure.
				body = append(body[:0], `{"sku":"H-`...)
				body = strconv.AppendInt(body, int64(rng.IntN(cfg.SKUs)), 10)
				body = append(body, `","reservation_id":"h`...)
				body = strconv.AppendInt(body, int64(n), 10)
				body = append(body, '-')
				body = strconv.AppendInt(body, int64(g), 10)
				body = append(body, '-')
				body = strconv.AppendInt(body, int64(i), 10)
				body = append(body, `","quantity":1,"ttl_seconds":60}`...)
				code, err := postOnce(ctx, hc, url, string(body))
				d := time.Since(t0)
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil || code != http.StatusOK {
					bad++
					mu.Lock()
					if errOne == nil {
						errOne = fmt.Errorf("status %d: %v", code, err)
					}
					mu.Unlock()
					continue
				}
				local = append(local, d)
			}
			mu.Lock()
			lat = append(lat, local...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return HTTPStep{}, ctx.Err()
	}
	elapsed := time.Since(measureFrom)
	statsMu.Lock()
	s0 := stats0
	statsMu.Unlock()
	var read, matched int64
	for i, s := range snap() {
		if s0 != nil {
			read += s.RecordsRead - s0[i].RecordsRead
			matched += s.ResultsMatched - s0[i].ResultsMatched
		}
	}
	st := HTTPStep{Concurrency: n, Requests: len(lat), Errors: errs, Throughput: float64(len(lat)) / elapsed.Seconds()}
	st.P50, st.P95, st.P99, _, st.Max = percentiles(lat)
	if matched > 0 {
		st.ReadAmplification = float64(read) / float64(matched)
	}
	st.MeetsTarget = st.P95 <= ms(cfg.TargetP95) && errs == 0
	if len(lat) == 0 {
		return st, fmt.Errorf("http load at %d callers: no successful request (%v)", n, errOne)
	}
	return st, nil
}

// Markdown is the report as a Markdown table.
func (rep *HTTPLoadReport) Markdown() string {
	var b bytes.Buffer
	if rep.HTTPOnly {
		b.WriteString("\nThe HTTP layer alone: every call answered at once, without a broker or a processor (partitions and commit interval unused).\n")
	}
	fmt.Fprintf(&b, "\nHTTP API load: closed-loop POST /v1/reservations (reserve 1 of %d SKUs), %d partitions, commit interval %s, %s per step; target p95 <= %.0f ms\n\n",
		rep.SKUs, rep.Partitions, rep.CommitInterval, rep.Duration, rep.TargetP95Ms)
	b.WriteString("| callers | requests | errors | req/s | p50 ms | p95 ms | p99 ms | max ms | read amplification | p95 target |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, s := range rep.Steps {
		ok := "met"
		if !s.MeetsTarget {
			ok = "missed"
		}
		fmt.Fprintf(&b, "| %d | %d | %d | %.0f | %.1f | %.1f | %.1f | %.1f | %.2f | %s |\n",
			s.Concurrency, s.Requests, s.Errors, s.Throughput, s.P50, s.P95, s.P99, s.Max, s.ReadAmplification, ok)
	}
	return b.String()
}
