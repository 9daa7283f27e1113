package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/reservations/reservations/sink"
	"github.com/reservations/reservations/topics"
)

// defaultBrokers is where the tools look for Kafka by default: the broker of
// `reservations dev`.
const defaultBrokers = "127.0.0.1:9092"

// kafkaFlags are the Kafka settings of the tools (sink, verify, replay).
// register adds brokers and topic prefix; each tool adds Security last (its
// flags are the same everywhere and rarely set, so they close the help).
type kafkaFlags struct {
	Brokers     []string
	TopicPrefix string
	Security    kafkaSecurity
}

func (k *kafkaFlags) register(s *settings) {
	k.Brokers = []string{defaultBrokers}
	s.Var(list{&k.Brokers}, "brokers", "Kafka seed brokers, comma-separated host:port (default: the broker of reservations dev)")
	s.String(&k.TopicPrefix, "topic-prefix", topics.DefaultPrefix,
		"topic name prefix: the changelog is <prefix>.changelog")
}

func (k *kafkaFlags) validate(s *settings) error {
	var errs []error
	if len(k.Brokers) == 0 {
		errs = append(errs, fmt.Errorf("%s is required", s.Name("brokers")))
	}
	if k.TopicPrefix == "" {
		errs = append(errs, s.Invalid("topic-prefix", "must not be empty"))
	}
	errs = append(errs, k.Security.validate(s))
	return errors.Join(errs...)
}

func (k *kafkaFlags) changelog() string { return topics.NewNames(k.TopicPrefix).Changelog }

// connect logs the Kafka settings and checks that the brokers accept them.
func (k *kafkaFlags) connect(ctx context.Context, log *slog.Logger, s *settings) error {
	k.Security.log(log, s, k.Brokers)
	return k.Security.check(ctx, k.Brokers)
}

// sinkHTTPAddrEnv is the sink's own variable for --http-addr.
const sinkHTTPAddrEnv = envPrefix + "SINK_HTTP_ADDR"

type sinkFlags struct {
	kafkaFlags
	PGDSN     string
	PGSchema  string
	HTTPAddr  string
	Log       logFlags
	BatchSize int
	BatchWait time.Duration
	// Audit keeps the audit trail (table audit_events) of the results
	// topics; AuditRetention drops its months older than that (0: never).
	Audit          bool
	AuditRetention time.Duration
}

func sinkCommand() *command {
	return &command{
		name:    "sink",
		summary: "keep the Postgres snapshot (tables stock, reservations) equal to the changelog",
		help: `
Runs the Postgres snapshot sink alone: it reads <topic-prefix>.changelog
(read_committed) and keeps the tables stock (one row per SKU) and
reservations (one row per reservation) equal to the latest changelog entity,
exactly once: the offsets it applied are stored in table sink_offsets in the
same transaction as the rows, and it resumes from them, not from a consumer
group. Rows never move back to an older version; tombstones delete rows. The
tables live in the PostgreSQL schema --pg-schema (default reservations:
query reservations.stock, or SET search_path = reservations), created and
migrated at start; an older install's tables in public are moved there.

When Postgres is down the sink pauses, retries with backoff (logs, metric
reservations_sink_postgres_errors_total, /readyz 503) and catches up when it
is back.

A stored offset is resumed only while the changelog still holds every record
after it. A partition whose stored offset is below the log start (records
deleted), beyond the log end (topic recreated), or was last current longer
ago than half the changelog's delete.retention.ms while records wait after it
(compaction may have removed tombstones meanwhile) is re-snapshotted from its
log start in one transaction: the rows of its SKUs are deleted and reloaded
with the new offset (warning log, metric
reservations_sink_stale_partitions_total). If such a partition holds a record
of a SKU of another partition, its rows cannot be told apart: the sink exits
1 and says to run 'reservations replay --to postgres'. The changelog must be
cleanup.policy=compact, as for the processor.

With --audit (the default) the sink also keeps an audit trail: table
audit_events gets one row per record of <topic-prefix>.results (every
decision and expired / low_stock notice) and <topic-prefix>.cart-results
(every cart result), exactly once (the rows and those topics' offsets in
sink_offsets in one transaction), partitioned by month of decided_at;
--audit-retention drops whole months older than it. It reads the results
topics with a second Kafka client and writes in its own transactions, so it
neither slows nor stops the snapshot. 'reservations audit' prints it;
docs/AUDIT.md describes the table and what it costs. 'reservations dev' runs the same sink in-process; run this one next
to 'reservations serve' instances (one is enough; a second on the same
database is harmless). Admin HTTP: /healthz, /readyz (the sink reaches
Postgres), /metrics, on --http-addr: RESERVATIONS_SINK_HTTP_ADDR, or
RESERVATIONS_HTTP_ADDR when that is not set (the processor's variable: in an
environment shared with serve, set RESERVATIONS_SINK_HTTP_ADDR). It checks at startup that it can connect and
authenticate to Kafka (--kafka-* settings for TLS and SASL), and exits 1
saying why when it cannot.`,
		setup: func() (*settings, func(context.Context, *cli, []string) int) {
			var cfg sinkFlags
			s := newSettings("sink")
			cfg.register(s)
			return s, func(ctx context.Context, c *cli, args []string) int {
				if len(args) > 0 {
					return c.usageFailure("sink", fmt.Errorf("unexpected argument %q", args[0]))
				}
				if err := cfg.validate(s); err != nil {
					return c.usageFailure("sink", err)
				}
				return runSink(ctx, c, s, cfg)
			}
		},
	}
}

func (cfg *sinkFlags) register(s *settings) {
	cfg.kafkaFlags.register(s)
	s.String(&cfg.PGDSN, "pg-dsn", "", pgDSNUsage)
	s.ShowDefault("pg-dsn", "required")
	registerPGSchema(s, &cfg.PGSchema, "")
	s.String(&cfg.HTTPAddr, "http-addr", "127.0.0.1:8081", "admin HTTP listener (host:port) of the sink serving /healthz, /readyz and /metrics")
	// RESERVATIONS_HTTP_ADDR is the processor's admin address (8080): the
	// sink's has its own variable, so that one environment configures both;
	// the shared name still works where it is the only one set.
	s.Env("http-addr", sinkHTTPAddrEnv, "the processor's admin address in an environment shared with serve and dev, "+
		"so set "+sinkHTTPAddrEnv+" there", envName("http-addr"))
	s.Secret("pg-dsn")
	cfg.Log.register(s, slog.LevelInfo)
	s.Int(&cfg.BatchSize, "batch-size", sink.DefaultBatchSize, "most changelog records written to Postgres in one transaction")
	s.Duration(&cfg.BatchWait, "batch-wait", sink.DefaultBatchWait, "longest a record waits for its batch to fill before the batch is written")
	s.Bool(&cfg.Audit, "audit", true, "also keep the audit trail: table audit_events, one row per record of "+
		"<topic-prefix>.results and <topic-prefix>.cart-results (docs/AUDIT.md); false: the snapshot only")
	s.Var(retention{&cfg.AuditRetention}, "audit-retention", "drop the monthly partitions of audit_events whose month ended "+
		"longer ago than this: 90d, 12w, 2160h; 0: keep forever")
	cfg.Security.register(s)
}

// auditConfig is the sink's audit configuration of the flags.
func (cfg *sinkFlags) auditConfig() sink.AuditConfig {
	if !cfg.Audit {
		return sink.AuditConfig{}
	}
	names := topics.NewNames(cfg.TopicPrefix)
	return sink.AuditConfig{Results: names.Results, CartResults: names.CartResults, Retention: cfg.AuditRetention}
}

func (cfg *sinkFlags) validate(s *settings) error {
	errs := []error{cfg.kafkaFlags.validate(s)}
	if cfg.PGDSN == "" {
		errs = append(errs, fmt.Errorf("%s is required", s.Name("pg-dsn")))
	} else {
		errs = append(errs, checkDSN(s, "pg-dsn", cfg.PGDSN))
	}
	errs = append(errs, checkSchema(s, "pg-schema", cfg.PGSchema))
	if _, _, err := net.SplitHostPort(cfg.HTTPAddr); err != nil {
		errs = append(errs, s.Invalid("http-addr", "%q is not host:port", cfg.HTTPAddr))
	}
	if cfg.BatchSize < 1 {
		errs = append(errs, s.Invalid("batch-size", "%d: must be >= 1", cfg.BatchSize))
	}
	if cfg.BatchWait < 0 {
		errs = append(errs, s.Invalid("batch-wait", "%s: must be >= 0", cfg.BatchWait))
	}
	return errors.Join(errs...)
}

func runSink(ctx context.Context, c *cli, s *settings, cfg sinkFlags) int {
	log := c.logger(cfg.Log)
	fail := func(err error) int { return c.fail("sink", exitFailure, err) }
	ln, err := listenHTTP(s, cfg.HTTPAddr)
	if err != nil {
		return fail(err)
	}
	defer ln.Close()
	if err := cfg.connect(ctx, log, s); err != nil {
		return fail(err)
	}
	reg := newRegistry()
	w, err := sink.New(sink.Config{Brokers: cfg.Brokers, Topic: cfg.changelog(), DSN: cfg.PGDSN, Schema: cfg.PGSchema,
		BatchSize: cfg.BatchSize, BatchWait: cfg.BatchWait, Audit: cfg.auditConfig()}, sink.WithLogger(log), sink.WithRegisterer(reg),
		sink.WithKafkaOpts(cfg.Security.Opts()...))
	if err != nil {
		return fail(err)
	}
	defer w.Close()
	snk := &sinkRunner{w: w, required: true}
	log.Info("reservations sink running", append([]any{"brokers", cfg.Brokers, "topic", cfg.changelog(),
		"dsn", redactDSN(cfg.PGDSN), "schema", cfg.PGSchema, "audit", cfg.Audit, "audit_retention", retention{&cfg.AuditRetention}.String(), "http", "http://" + ln.Addr().String()}, buildInfo().LogAttrs()...)...)
	if from := s.EnvFrom("http-addr"); from == envName("http-addr") {
		log.Info("the sink's admin address comes from " + from + ", the variable of the processor's (serve, dev); " +
			"set " + sinkHTTPAddrEnv + " to give the sink its own, so that one environment configures both")
	}
	err = runComponents(ctx, log, adminHandler(sinkOnly{snk}, reg, nil), ln, "shutting down the sink",
		component{"sink", func(gctx context.Context) error { return snk.run(gctx, log) }})
	if err != nil {
		return fail(err)
	}
	return exitOK
}
