package processor

import (
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor/cart"
	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/topics"
)

// Role selects what a Processor decides.
type Role int

const (
	// RoleSKU decides the reservation commands of the contract (the default).
	RoleSKU Role = iota
	// RoleCart is the cart coordinator (extension): it consumes the
	// cart-commands topic, runs each cart command as a saga of per-SKU
	// commands, and writes cart results and its own changelog (cart-changelog).
	RoleCart
)

// Config configures a Processor. Zero fields take the documented defaults.
type Config struct {
	// Role is what this processor decides (default RoleSKU).
	Role Role
	// Brokers are the seed brokers (host:port). Required.
	Brokers []string
	// Topics are the topic names (default topics.NewNames("")).
	Topics topics.Names
	// Group is the consumer group and the prefix of the transactional id
	// (default "reservations-processor"; "reservations-cart-coordinator" for
	// RoleCart).
	Group string
	// InstanceID makes this instance's transactional id stable across restarts,
	// so a restarted instance fences its predecessor and aborts its open
	// transaction at once. Default: read from (or created in) StateDir/instance-id.
	InstanceID string
	// AdvertisedAddr is this instance's HTTP address as other instances and
	// clients reach it (host:port). It is published in the group (as the client
	// id) so that an instance asked about a SKU it does not own can name the
	// owner, like Kafka Streams' application.server. Optional.
	AdvertisedAddr string
	// StateDir holds one Badger folder per partition. Required.
	StateDir string
	// CommitInterval bounds how long one transaction collects records
	// (default 50 ms). A transaction also ends as soon as nothing more is buffered.
	CommitInterval time.Duration
	// Linger is how long a transaction waits for more records when none are
	// buffered, before it commits (default 0: commit at once; under load
	// records are buffered anyway and transactions grow by themselves).
	Linger time.Duration
	// MaxBatch bounds the records per transaction (default 5000).
	MaxBatch int
	// MaxCommandBytes is the largest command record accepted; larger ones go to
	// the DLQ (default 64 KiB).
	MaxCommandBytes int
	// TransactionTimeout is the broker-side timeout of an open transaction, i.e.
	// how long a crashed instance's open transaction can block readers of its
	// partitions (default 10 s).
	TransactionTimeout time.Duration
	// SessionTimeout is the group session timeout (default 10 s).
	SessionTimeout time.Duration
	// TimerTick is the longest an idle processor waits before checking its
	// expiry timers (default 100 ms): expiries are emitted within TimerTick plus
	// one transaction of expires_at.
	TimerTick time.Duration
	// MaxExpiriesPerTransaction bounds the expiry timers one partition fires
	// in one transaction (default 1000; about three records each); besides,
	// a partition stops firing timers (after 100) once the transaction has been
	// open a tenth of TransactionTimeout. After an outage with many holds due,
	// they drain over consecutive transactions instead of one transaction too
	// large to commit in time.
	MaxExpiriesPerTransaction int
	// SweepInterval is how often each partition sweeps for decided commands and
	// terminal reservations past the dedupe window to tombstone (default 1 s).
	SweepInterval time.Duration
	// StateCleanupDelay is how long the store folder of a partition this
	// instance no longer owns is kept before it is deleted (default 10 min, as
	// Kafka Streams' state.cleanup.delay.ms). A partition back within the delay
	// replays only its changelog tail (unless away longer than half the
	// changelog's delete.retention.ms, see StaleStoreFraction).
	StateCleanupDelay time.Duration
	// SweepBatch is how many keys one sweep step reads (default 2000).
	SweepBatch int
	// Rules are the contract's configurable rules (default sku.DefaultRules(); a zero
	// DedupeWindow means the default; MaxExtensions 0 means no extension, unless
	// the whole Rules is zero).
	Rules sku.Rules
	// CartRules are the cart coordinator's rules (RoleCart; default
	// cart.DefaultRules(), with the dedupe window of Rules).
	CartRules cart.Rules
	// KafkaOpts are extra client options (TLS, SASL, test tuning), applied to
	// every client the processor creates.
	KafkaOpts []kgo.Opt
}

func (c *Config) setDefaults() {
	if c.Topics == (topics.Names{}) {
		c.Topics = topics.NewNames("")
	}
	if c.Group == "" {
		c.Group = newRole(c.Role, c).defaultGroup()
	}
	if c.CommitInterval <= 0 {
		c.CommitInterval = 50 * time.Millisecond
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 5000
	}
	if c.MaxCommandBytes <= 0 {
		c.MaxCommandBytes = 64 << 10
	}
	if c.TransactionTimeout <= 0 {
		c.TransactionTimeout = 10 * time.Second
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.TimerTick <= 0 {
		c.TimerTick = 100 * time.Millisecond
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = time.Second
	}
	if c.MaxExpiriesPerTransaction <= 0 {
		c.MaxExpiriesPerTransaction = 1000
	}
	if c.StateCleanupDelay <= 0 {
		c.StateCleanupDelay = 10 * time.Minute
	}
	if c.SweepBatch <= 0 {
		c.SweepBatch = 2000
	}
	if c.Rules == (sku.Rules{}) {
		c.Rules = sku.DefaultRules()
	}
	if c.Rules.DedupeWindow == 0 {
		c.Rules.DedupeWindow = sku.DefaultRules().DedupeWindow
	}
	if c.CartRules.DedupeWindow == 0 {
		c.CartRules.DedupeWindow = c.Rules.DedupeWindow
	}
	if c.CartRules.MaxQueue <= 0 {
		c.CartRules.MaxQueue = cart.DefaultRules().MaxQueue
	}
}

// DefaultConfig returns a Config with every default filled in (Brokers and
// StateDir are left empty: they are required).
func DefaultConfig() Config {
	var c Config
	c.setDefaults()
	return c
}

// Validate reports every invalid setting, each naming the setting.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("brokers: at least one broker address is required"))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("state-dir: required"))
	}
	if c.Rules.DedupeWindow < time.Minute && c.Rules.DedupeWindow != 0 {
		errs = append(errs, fmt.Errorf("dedupe-window: %s is below the minimum of 1m", c.Rules.DedupeWindow))
	}
	if c.Rules.MaxExtensions < 0 {
		errs = append(errs, fmt.Errorf("max-extensions: %d is negative", c.Rules.MaxExtensions))
	}
	if c.MaxBatch < 0 {
		errs = append(errs, fmt.Errorf("max-batch: %d is negative", c.MaxBatch))
	}
	if c.CommitInterval < 0 {
		errs = append(errs, fmt.Errorf("commit-interval: %s is negative", c.CommitInterval))
	}
	return errors.Join(errs...)
}
