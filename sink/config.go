package sink

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/topics"
)

// Config configures a Writer. Zero fields take the defaults documented on them.
type Config struct {
	// Brokers are the Kafka seed brokers, host:port. Required.
	Brokers []string
	// Topic is the changelog topic. Default: the changelog of the default
	// prefix, topics.NewNames("").Changelog (reservations.changelog).
	Topic string

	// DSN is the PostgreSQL connection string. Exactly one of DSN and Pool.
	DSN string
	// Pool is an existing pool to write through; the Writer does not close it.
	// Exactly one of DSN and Pool.
	Pool *pgxpool.Pool

	// Schema is the PostgreSQL schema that holds the sink's tables (stock,
	// reservations, sink_offsets, sink_errors, replay_runs) and its migration
	// bookkeeping table (MigrationsTable), so that they never meet an
	// application's tables of the same names. The sink creates the schema
	// when it is missing and, with DSN, sets search_path to it on every
	// connection it opens. A Pool must already have it as its search_path
	// (pgxpool.Config.ConnConfig.RuntimeParams["search_path"]); the sink
	// checks that when it migrates. A lower-case SQL identifier: [a-z_][a-z0-9_]*,
	// at most 63 bytes, not starting with pg_.
	//
	// `reservations sink --pg-schema` defaults to DefaultSchema. Empty: no
	// schema of its own; the tables live where the connection's search_path
	// puts them (normally public), as before this setting existed.
	//
	// An install made before this setting, with its tables and its
	// schema_migrations table in public, is moved into Schema at the first
	// start (store.adoptLegacy): see docs/SINK_SCHEMA.md.
	Schema string

	// BatchSize is the most changelog records applied in one Postgres
	// transaction. Default 5000.
	BatchSize int
	// BatchWait is the longest a record waits for its batch to fill before the
	// batch is written. Default 100ms.
	BatchWait time.Duration

	// MetadataInterval is how often the topic's partitions are listed to pick up
	// partitions added to it. Default 30s.
	MetadataInterval time.Duration
	// PingInterval is how often an idle Writer checks that Postgres answers, so
	// that Ready turns false during an outage without traffic. Default 5s.
	PingInterval time.Duration

	// Audit configures the audit trail: table audit_events, one row per
	// record of the results topics (audit.go, docs/AUDIT.md). Zero: off.
	Audit AuditConfig

	// RetryMin and RetryMax bound the exponential backoff between attempts
	// while Postgres fails. Defaults 100ms and 5s.
	RetryMin, RetryMax time.Duration
}

// DefaultSchema is the default of `--pg-schema`: the schema of the sink's
// tables (Config.Schema).
const DefaultSchema = "reservations"

// MigrationsTable records the sink's applied migrations, in Config.Schema. It
// was schema_migrations before, a name that golang-migrate, Rails and others
// use for their own bookkeeping in the same database.
const MigrationsTable = "reservations_schema_migrations"

// legacyMigrationsTable is the bookkeeping table of installs made before
// MigrationsTable, in public.
const legacyMigrationsTable = "schema_migrations"

// schemaName is what Config.Schema accepts: identifiers that need no quoting,
// so that the name an operator types in psql is the schema's name.
var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// validSchema reports why name cannot be a Config.Schema ("" is valid).
func validSchema(name string) error {
	switch {
	case name == "":
		return nil
	case !schemaName.MatchString(name):
		return fmt.Errorf("schema %q: want a lower-case identifier [a-z_][a-z0-9_]* of at most 63 bytes", name)
	case strings.HasPrefix(name, "pg_"):
		return fmt.Errorf("schema %q: names starting with pg_ are reserved by PostgreSQL", name)
	}
	return nil
}

// Defaults of Config.
const (
	DefaultBatchSize        = 5000
	DefaultBatchWait        = 100 * time.Millisecond
	DefaultMetadataInterval = 30 * time.Second
	DefaultPingInterval     = 5 * time.Second
	DefaultRetryMin         = 100 * time.Millisecond
	DefaultRetryMax         = 5 * time.Second
)

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Topic == "" {
		c.Topic = topics.NewNames("").Changelog
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.BatchWait == 0 {
		c.BatchWait = DefaultBatchWait
	}
	if c.MetadataInterval == 0 {
		c.MetadataInterval = DefaultMetadataInterval
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.RetryMin == 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax == 0 {
		c.RetryMax = DefaultRetryMax
	}
	return c
}

// Validate reports the first field of c (after defaults) that cannot work.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case len(c.Brokers) == 0:
		return errors.New("config: Brokers: at least one broker required")
	case (c.DSN == "") == (c.Pool == nil):
		return errors.New("config: exactly one of DSN and Pool required")
	case c.BatchSize < 1:
		return fmt.Errorf("config: BatchSize %d: must be >= 1", c.BatchSize)
	case c.BatchWait < 0:
		return fmt.Errorf("config: BatchWait %s: must be >= 0", c.BatchWait)
	case c.MetadataInterval < 0, c.PingInterval < 0:
		return errors.New("config: MetadataInterval and PingInterval must be >= 0")
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return fmt.Errorf("config: retry backoff %s..%s: want 0 < RetryMin <= RetryMax", c.RetryMin, c.RetryMax)
	}
	if err := validSchema(c.Schema); err != nil {
		return fmt.Errorf("config: Schema: %w", err)
	}
	switch {
	case c.Audit.Retention < 0:
		return fmt.Errorf("config: Audit.Retention %s: must be >= 0", c.Audit.Retention)
	case c.Audit.Enabled() && slices.Contains(c.Audit.topics(), c.Topic):
		return fmt.Errorf("config: Audit: the changelog %s is not a results topic", c.Topic)
	case c.Audit.Results != "" && c.Audit.Results == c.Audit.CartResults:
		return fmt.Errorf("config: Audit: Results and CartResults are both %s", c.Audit.Results)
	}
	return nil
}

// Option sets a seam of the Writer.
type Option func(*options)

type options struct {
	logger   *slog.Logger
	reg      prometheus.Registerer
	kafkaOpt []kgo.Opt
}

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithRegisterer sets where the metrics are registered. Default: a private
// registry (metrics are kept but not exported).
func WithRegisterer(r prometheus.Registerer) Option { return func(o *options) { o.reg = r } }

// WithKafkaOpts appends options to those of the Kafka client the Writer
// builds (after its own, so they win), e.g. kgo.MetadataMinAge in tests.
func WithKafkaOpts(opts ...kgo.Opt) Option {
	return func(o *options) { o.kafkaOpt = append(o.kafkaOpt, opts...) }
}
