// Package pipelinetest runs the processors of the pipeline in the test
// process (a SKU processor and a cart coordinator on topics of their own
// prefix), for the tests and examples of the client and its HTTP API.
package pipelinetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/client"
	"github.com/reservations/reservations/internal/kafkatest"
	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/topics"
)

// Pipeline is a SKU processor and a cart coordinator running in this process
// against brokers, on topics of their own prefix.
type Pipeline struct {
	Brokers []string
	Prefix  string
	Names   topics.Names
	Parts   int32
	dir     string
	log     *slog.Logger

	mu    sync.Mutex
	procs map[processor.Role]*running
}

type running struct {
	p      *processor.Processor
	cancel context.CancelFunc
	done   chan error
}

var prefixSeq atomic.Int64

// New creates the topics (parts partitions each) under a fresh
// prefix; start runs the processors.
func New(ctx context.Context, brokers []string, parts int32, dir string, log *slog.Logger) (*Pipeline, error) {
	prefix := fmt.Sprintf("c%d-%d", time.Now().UnixNano()%1e6, prefixSeq.Add(1))
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, kafkatest.ClientOpts()...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	names := topics.NewNames(prefix)
	if _, err := topics.Ensure(ctx, kadm.NewClient(cl), names, parts, 1); err != nil {
		return nil, err
	}
	return &Pipeline{Brokers: brokers, Prefix: prefix, Names: names, Parts: parts, dir: dir, log: log,
		procs: map[processor.Role]*running{}}, nil
}

// Start runs the processor of role (state in a folder of the pipeline's
// that survives restarts) and waits until it owns every partition.
func (pl *Pipeline) Start(role processor.Role) error {
	cfg := processor.Config{
		Brokers:            pl.Brokers,
		Topics:             pl.Names,
		Group:              pl.Prefix + "-group",
		StateDir:           pl.dir + "/sku",
		CommitInterval:     20 * time.Millisecond,
		TransactionTimeout: 5 * time.Second,
		SessionTimeout:     6 * time.Second,
		KafkaOpts:          kafkatest.ClientOpts(),
		Role:               role,
	}
	if role == processor.RoleCart {
		cfg.Group += "-cart"
		cfg.StateDir = pl.dir + "/cart"
	}
	p, err := processor.New(cfg, processor.WithLogger(pl.log))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{p: p, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	pl.mu.Lock()
	pl.procs[role] = r
	pl.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if p.Ready() && len(p.Status()) == int(pl.Parts) {
			return nil
		}
		select {
		case err := <-r.done:
			return fmt.Errorf("processor stopped: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return errors.New("processor not ready within 60 s")
}

// Stop stops the processor of role at a transaction boundary.
func (pl *Pipeline) Stop(role processor.Role) error {
	pl.mu.Lock()
	r := pl.procs[role]
	delete(pl.procs, role)
	pl.mu.Unlock()
	if r == nil {
		return nil
	}
	r.cancel()
	select {
	case err := <-r.done:
		return err
	case <-time.After(60 * time.Second):
		return errors.New("processor did not stop")
	}
}

func (pl *Pipeline) Close() {
	_ = pl.Stop(processor.RoleCart)
	_ = pl.Stop(processor.RoleSKU)
}

// Client returns a client of the pipeline's topics.
func (pl *Pipeline) Client(ctx context.Context, opts ...client.Option) (*client.Client, error) {
	return client.New(ctx, pl.Brokers, append([]client.Option{client.WithTopicPrefix(pl.Prefix),
		client.WithKafkaOpts(kafkatest.ClientOpts()...), client.WithLogger(pl.log)}, opts...)...)
}

// ForTest is New on the test broker (internal/kafkatest), closed when t
// ends, with roles started.
func ForTest(t testing.TB, parts int32, roles ...processor.Role) *Pipeline {
	t.Helper()
	c := kafkatest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pl, err := New(ctx, c.Brokers, parts, t.TempDir(), TestLogger(t))
	require.NoError(t, err)
	t.Cleanup(pl.Close)
	for _, r := range roles {
		require.NoError(t, pl.Start(r))
	}
	return pl
}

// TestClient is a client of pl, closed when t ends.
func (pl *Pipeline) TestClient(t testing.TB, opts ...client.Option) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pl.Client(ctx, opts...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// TestLogger logs warnings (everything with TEST_LOG set) to stderr.
func TestLogger(t testing.TB) *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("TEST_LOG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With("test", t.Name())
}

// Example runs a kfake broker and both processors for runnable examples
// (which have no testing.T); stop stops everything.
func Example() (brokers []string, prefix string, stop func()) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		panic(err)
	}
	dir, err := os.MkdirTemp("", "client-example-")
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pl, err := New(ctx, cluster.ListenAddrs(), 3, dir, log)
	if err != nil {
		panic(err)
	}
	for _, r := range []processor.Role{processor.RoleSKU, processor.RoleCart} {
		if err := pl.Start(r); err != nil {
			panic(err)
		}
	}
	return cluster.ListenAddrs(), pl.Prefix, func() {
		pl.Close()
		cluster.Close()
		_ = os.RemoveAll(dir)
	}
}
