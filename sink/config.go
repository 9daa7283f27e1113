package sink

import (
	"errors"
	"fmt"
	"log/slog"
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

	// RetryMin and RetryMax bound the exponential backoff between attempts
	// while Postgres fails. Defaults 100ms and 5s.
	RetryMin, RetryMax time.Duration
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
