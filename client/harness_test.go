package client_test

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

// pipeline is a SKU processor and a cart coordinator running in this process
// against brokers, on topics of their own prefix.
type pipeline struct {
	brokers []string
	prefix  string
	names   topics.Names
	parts   int32
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

// newPipeline creates the topics (parts partitions each) under a fresh
// prefix; start runs the processors.
func newPipeline(ctx context.Context, brokers []string, parts int32, dir string, log *slog.Logger) (*pipeline, error) {
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
	return &pipeline{brokers: brokers, prefix: prefix, names: names, parts: parts, dir: dir, log: log,
		procs: map[processor.Role]*running{}}, nil
}

// start runs the processor of role (state in a folder of the pipeline's
// that survives restarts) and waits until it owns every partition.
func (pl *pipeline) start(role processor.Role) error {
	cfg := processor.Config{
		Brokers:            pl.brokers,
		Topics:             pl.names,
		Group:              pl.prefix + "-group",
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
		if p.Ready() && len(p.Status()) == int(pl.parts) {
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

// stop stops the processor of role at a transaction boundary.
func (pl *pipeline) stop(role processor.Role) error {
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

func (pl *pipeline) close() {
	_ = pl.stop(processor.RoleCart)
	_ = pl.stop(processor.RoleSKU)
}

// client returns a client of the pipeline's topics.
func (pl *pipeline) client(ctx context.Context, opts ...client.Option) (*client.Client, error) {
	return client.New(ctx, pl.brokers, append([]client.Option{client.WithTopicPrefix(pl.prefix),
		client.WithKafkaOpts(kafkatest.ClientOpts()...), client.WithLogger(pl.log)}, opts...)...)
}

func testLogger(t testing.TB) *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("TEST_LOG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With("test", t.Name())
}

// newTestPipeline is newPipeline on the test broker, stopped when t ends;
// roles are started.
func newTestPipeline(t *testing.T, parts int32, roles ...processor.Role) *pipeline {
	t.Helper()
	c := kafkatest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pl, err := newPipeline(ctx, c.Brokers, parts, t.TempDir(), testLogger(t))
	require.NoError(t, err)
	t.Cleanup(pl.close)
	for _, r := range roles {
		require.NoError(t, pl.start(r))
	}
	return pl
}

func newTestClient(t *testing.T, pl *pipeline, opts ...client.Option) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pl.client(ctx, opts...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// examplePipeline runs a kfake broker and both processors for the examples;
// the returned function stops everything.
func examplePipeline() (brokers []string, prefix string, stop func()) {
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
	pl, err := newPipeline(ctx, cluster.ListenAddrs(), 3, dir, log)
	if err != nil {
		panic(err)
	}
	for _, r := range []processor.Role{processor.RoleSKU, processor.RoleCart} {
		if err := pl.start(r); err != nil {
			panic(err)
		}
	}
	return cluster.ListenAddrs(), pl.prefix, func() {
		pl.close()
		cluster.Close()
		_ = os.RemoveAll(dir)
	}
}
