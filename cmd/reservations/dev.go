package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/client"
	"github.com/reservations/reservations/client/httpapi"
	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/sink"
	"github.com/reservations/reservations/topics"
)

type devConfig struct {
	pipelineConfig
	KafkaPort  int
	DataDir    string
	Partitions int
	PGDSN      string
	PGSchema   string
}

func devCommand() *command {
	return &command{
		name:    "dev",
		summary: "run everything on this machine: embedded Kafka broker, processor, admin HTTP",
		help: `
Runs the whole pipeline in one process, with nothing to install:

  - an embedded Kafka broker (franz-go's kfake, a real Kafka wire-protocol
    broker) on 127.0.0.1:<kafka-port>, keeping its log in <data-dir>/kafka,
  - the pipeline topics (<topic-prefix>.commands, .results, .changelog, .dlq,
    <partitions> partitions each), created when missing,
  - the processor, with its state in <data-dir>/state,
  - the Postgres snapshot sink (tables stock and reservations), when
    --pg-dsn is set, or else when a local server answers at
    host=/var/run/postgresql user=postgres or postgres@127.0.0.1:5432
    (--pg-dsn off: never); the processor keeps running when Postgres goes
    away, the sink catches up when it is back,
  - the admin HTTP listener: /healthz, /readyz (processor and sink),
    /metrics, the interactive queries GET /v1/stock/{sku} and
    /v1/stock/{sku}/reservations/{id} (the processor's committed state),
    and the HTTP API of the commands (POST /v1/reservations, /v1/stock/{sku},
    /v1/carts/{cart_id}/...; docs/HTTP_API.md, GET /v1/openapi.yaml).

Stop it with Ctrl-C (or SIGTERM): the processor stops first at a transaction
boundary, then the broker writes its log. Started again on the same
--data-dir, it continues where it stopped. Any Kafka client can talk to the
broker; send commands with 'reservations send' or kcat (see the startup
output). To start from scratch, stop it and delete the data folder ('make
reset' deletes ./data).

The first log line says where the tables go: the Postgres server dev found
(or was given), or that the sink is off.`,
		setup: func() (*settings, func(context.Context, *cli, []string) int) {
			var cfg devConfig
			s := newSettings("dev")
			cfg.register(s)
			return s, func(ctx context.Context, c *cli, args []string) int {
				if len(args) > 0 {
					return c.usageFailure("dev", fmt.Errorf("unexpected argument %q", args[0]))
				}
				if err := cfg.validate(s); err != nil {
					return c.usageFailure("dev", err)
				}
				return runDev(ctx, c, s, cfg)
			}
		},
	}
}

func (cfg *devConfig) register(s *settings) {
	s.Int(&cfg.KafkaPort, "kafka-port", 9092, "port of the embedded Kafka broker on 127.0.0.1 (0: any free port)")
	s.String(&cfg.DataDir, "data-dir", "./data", "folder of the broker log (<data-dir>/kafka) and the processor state (<data-dir>/state)")
	s.Int(&cfg.Partitions, "partitions", topics.DefaultPartitions, "partitions of each topic when the topics are created")
	s.String(&cfg.PGDSN, "pg-dsn", "", pgDSNUsage+
		"; empty: a local server if one answers (host=/var/run/postgresql user=postgres, or postgres@127.0.0.1:5432), off: no sink")
	s.ShowDefault("pg-dsn", "a local server if one answers")
	s.Secret("pg-dsn")
	registerPGSchema(s, &cfg.PGSchema, "")
	cfg.pipelineConfig.register(s)
}

func (cfg *devConfig) validate(s *settings) error {
	var errs []error
	if cfg.KafkaPort < 0 || cfg.KafkaPort > 65535 {
		errs = append(errs, s.Invalid("kafka-port", "%d: want 0..65535", cfg.KafkaPort))
	}
	if cfg.DataDir == "" {
		errs = append(errs, s.Invalid("data-dir", "must not be empty"))
	}
	if cfg.Partitions < 1 || cfg.Partitions > 10000 {
		errs = append(errs, s.Invalid("partitions", "%d: want 1..10000", cfg.Partitions))
	}
	if cfg.PGDSN != "" && cfg.PGDSN != dsnOff {
		errs = append(errs, checkDSN(s, "pg-dsn", cfg.PGDSN))
	}
	errs = append(errs, checkSchema(s, "pg-schema", cfg.PGSchema))
	errs = append(errs, cfg.pipelineConfig.validate(s))
	return errors.Join(errs...)
}

func runDev(ctx context.Context, c *cli, s *settings, cfg devConfig) int {
	log := c.logger(cfg.Log)
	fail := func(err error) int { return c.fail("dev", exitFailure, err) }
	// First, so that the first log line says where the tables go (or that
	// they go nowhere, and how to change that).
	dsn, required := devSinkDSN(ctx, log, s, cfg.PGDSN)

	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return fail(fmt.Errorf("data folder %s: %w", cfg.DataDir, err))
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fail(fmt.Errorf("create data folder: %w", err))
	}
	unlock, err := lockDir(dataDir)
	if err != nil {
		return fail(err)
	}
	defer unlock()
	kafkaDir := filepath.Join(dataDir, "kafka")
	stateDir := filepath.Join(dataDir, "state")

	pcfg := cfg.processorConfig(nil, stateDir)
	ln, err := listenHTTP(s, cfg.HTTPAddr)
	if err != nil {
		return fail(err)
	}
	defer ln.Close()
	pcfg.AdvertisedAddr = cfg.advertisedAddr(ln.Addr())

	cluster, err := startBroker(cfg.KafkaPort, kafkaDir, log.With("component", "kafka"))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fail(fmt.Errorf("kafka port %d on 127.0.0.1 is already in use (another 'reservations dev' or a Kafka broker?): "+
				"stop it or choose another port with %s", cfg.KafkaPort, s.Name("kafka-port")))
		}
		return fail(fmt.Errorf("start embedded kafka broker: %w", err))
	}
	defer func() {
		log.Info("stopping embedded kafka broker")
		cluster.Close()
	}()
	pcfg.Brokers = cluster.ListenAddrs()
	broker := pcfg.Brokers[0]
	log.Info("embedded kafka broker listening", "addr", broker, "log_dir", kafkaDir)

	n, err := createTopics(ctx, pcfg.Brokers, pcfg.Topics, int32(cfg.Partitions), 1)
	if err != nil {
		return fail(err)
	}
	if int(n) != cfg.Partitions {
		log.Warn("topics already exist with another partition count: --partitions ignored",
			"partitions", n, "requested", cfg.Partitions)
	}
	if err := checkOtherGroups(ctx, log, s, pcfg.Brokers, nil, cfg.inputGroups(), cfg.AllowOtherGroups); err != nil {
		return fail(err)
	}

	reg := newRegistry()
	proc, err := processor.New(pcfg, processor.WithLogger(log.With("component", "processor")), processor.WithRegisterer(reg))
	if err != nil {
		return fail(err)
	}
	var ready readiness = allPartitions{proc, int(n)}
	coord, err := cfg.newCoordinator(pcfg, log, reg)
	if err != nil {
		return fail(err)
	}
	if coord != nil {
		ready = withCarts{ready, coord}
	}
	var snk *sinkRunner
	if dsn != "" {
		w, err := sink.New(sink.Config{Brokers: pcfg.Brokers, Topic: pcfg.Topics.Changelog, DSN: dsn, Schema: cfg.PGSchema,
			// The audit trail of every decision, as the sink subcommand keeps it.
			Audit: sink.AuditConfig{Results: pcfg.Topics.Results, CartResults: pcfg.Topics.CartResults}},
			sink.WithLogger(log), sink.WithRegisterer(reg))
		if err != nil {
			return fail(fmt.Errorf("postgres sink: %w", err))
		}
		defer w.Close()
		snk = &sinkRunner{w: w, required: required}
		ready = withSink{ready, snk}
	}
	// The HTTP API of the commands on the admin listener, through the
	// request/reply client.
	api, err := client.New(ctx, pcfg.Brokers, client.WithTopicPrefix(cfg.TopicPrefix),
		client.WithLogger(log.With("component", "http-api")))
	if err != nil {
		return fail(fmt.Errorf("http api: %w", err))
	}
	defer api.Close()
	ready = withAPI{ready, httpapi.New(api, httpapi.Config{Logger: log.With("component", "http-api")})}
	httpAddr := ln.Addr().String()
	log.Info("reservations dev running", append([]any{"kafka", broker, "data_dir", dataDir, "state_dir", stateDir,
		"http", "http://" + httpAddr, "topics", pcfg.Topics.Commands + " .results .changelog .dlq", "partitions", n},
		buildInfo().LogAttrs()...)...)
	printDevExample(c.stdout, broker, httpAddr, cfg.TopicPrefix, dsn, cfg.PGSchema, cfg.Carts)

	if err := runPipeline(ctx, log, proc, coord, ready, ln, reg, snk); err != nil {
		return fail(err)
	}
	log.Info("processor stopped")
	return exitOK
}

// startBroker starts the embedded kfake broker on 127.0.0.1:port persisting
// into dir. Its compaction cleaner stays off (kfake's default).
func startBroker(port int, dir string, log *slog.Logger) (*kfake.Cluster, error) {
	return kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.DataDir(dir),
		kfake.WithLogger(kfakeLogger{log}),
	)
}

// createTopics creates the missing pipeline topics and verifies the layout.
// opts are extra client options (TLS, SASL).
func createTopics(ctx context.Context, brokers []string, names topics.Names, partitions int32, replication int16,
	opts ...kgo.Opt) (int32, error) {
	// topics.Ensure reads the metadata of the topics it just created; kadm
	// serves metadata from the client's cache for MetadataMinAge (default 5s,
	// longer than Ensure waits), so keep that cache short.
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.MetadataMinAge(250 * time.Millisecond)}, opts...)...)
	if err != nil {
		return 0, fmt.Errorf("kafka admin client: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	n, err := topics.Ensure(ctx, kadm.NewClient(cl), names, partitions, replication)
	if err != nil {
		return 0, fmt.Errorf("create topics: %w", err)
	}
	return n, nil
}

// printDevExample prints how to reach the running pipeline (dsn: the sink's
// database, empty when the sink is off; schema: the schema of its tables).
func printDevExample(w io.Writer, broker, httpAddr, prefix, dsn, schema string, carts bool) {
	names := topics.NewNames(prefix)
	var extra []string
	if broker != "127.0.0.1:9092" {
		extra = append(extra, "--brokers "+broker)
	}
	if prefix != topics.DefaultPrefix {
		extra = append(extra, "--topic-prefix "+prefix)
	}
	flags := strings.Join(append(extra, ""), " ")
	fmt.Fprintf(w, `
reservations dev: Kafka broker on %[1]s, admin on http://%[2]s (/healthz /readyz /metrics /v1/stock/{sku} /v1/carts/{cart})

Send a command and wait for its result (from a checkout: go run ./cmd/reservations send ...):
  reservations send stock.set %[3]s--sku SKU-1 --on-hand 10
  reservations send reserve %[3]s--sku SKU-1 --reservation r-1 --qty 2 --cart cart-9 --pretty

With kcat (the record key is the SKU; murmur2 is the partitioner of the contract):
  echo '{"command_id":"c-1","type":"stock.set","sku":"SKU-1","on_hand":10}' | \
    kcat -P -b %[1]s -t %[4]s -k SKU-1 -X partitioner=murmur2_random
  kcat -C -b %[1]s -t %[5]s -X isolation.level=read_committed -o beginning -e

Or over HTTP (the Idempotency-Key header is the command_id; docs/HTTP_API.md):
  curl -s -XPOST http://%[2]s/v1/stock/SKU-1 -d '{"on_hand":10}'
  curl -s -XPOST http://%[2]s/v1/reservations -H 'Idempotency-Key: k-1' \
    -d '{"sku":"SKU-1","reservation_id":"r-1","quantity":2,"cart_id":"cart-9"}'

Query the processor's state:
  curl -s http://%[2]s/v1/stock/SKU-1
  curl -s http://%[2]s/v1/stock/SKU-1/reservations/r-1

`, broker, httpAddr, flags, names.Commands, names.Results)
	if carts {
		fmt.Fprintf(w, `All-or-nothing carts (the cart coordinator; one result per cart command on %[3]s):
  reservations send cart.reserve %[1]s--cart cart-7 --items SKU-1:1,SKU-2:2 --pretty
  curl -s http://%[2]s/v1/carts/cart-7

`, flags, httpAddr, names.CartResults)
	}
	if dsn == "" {
		fmt.Fprint(w, `Postgres sink: off. Start dev with --pg-dsn (RESERVATIONS_PG_DSN) to keep the tables stock and
reservations in PostgreSQL; 'reservations verify' checks the changelog either way.

`)
		return
	}
	if schema != sink.DefaultSchema {
		flags += "--pg-schema '" + schema + "' "
	}
	fmt.Fprintf(w, `Postgres sink: tables stock and reservations in %[1]s, schema %[3]s
Check them against the changelog, and rebuild them from it:
  reservations verify %[2]s--pg-dsn '%[1]s'
  reservations replay --to postgres %[2]s--pg-dsn '%[1]s'

`, redactDSN(dsn), flags, schemaText(schema))
}

// kfakeLogger sends kfake's log to slog. kfake's info level logs every
// request, so it maps to debug.
type kfakeLogger struct{ log *slog.Logger }

func (l kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	var lvl slog.Level
	switch level {
	case kfake.LogLevelError:
		lvl = slog.LevelError
	case kfake.LogLevelWarn:
		lvl = slog.LevelWarn
	case kfake.LogLevelInfo:
		lvl = slog.LevelDebug
	default:
		lvl = slog.LevelDebug - 4
	}
	if l.log.Enabled(context.Background(), lvl) {
		l.log.Log(context.Background(), lvl, fmt.Sprintf(format, args...))
	}
}
