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
	// StandbyReplicas is how many other instances keep a warm copy of each
	// partition's store by tailing its changelog (Kafka Streams'
	// num.standby.replicas; default 0, at most MaxStandbyReplicas). When an
	// owner fails, the group gives its partitions to instances with a warm
	// copy, which replay only the changelog tail. Capped by the number of other
	// members. docs/STANDBY.md has the costs.
	StandbyReplicas int
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

// DefaultConfig returns a Config of RoleSKU with every default filled in
// (Brokers and StateDir are left empty: they are required). Command lines take
// their flags' defaults from it.
func DefaultConfig() Config { return DefaultRoleConfig(RoleSKU) }

// DefaultRoleConfig is DefaultConfig for role r (its Group differs).
func DefaultRoleConfig(r Role) Config {
	c := Config{Role: r}
	c.setDefaults()
	return c
}

// Limits of the settings (Validate).
const (
	// MinDedupeWindow is the shortest Rules.DedupeWindow.
	MinDedupeWindow = time.Minute
	// MinTransactionTimeout is the shortest TransactionTimeout.
	MinTransactionTimeout = time.Second
	// MaxStandbyReplicas is the largest StandbyReplicas: each standby costs a
	// copy of the store and a changelog reader per partition.
	MaxStandbyReplicas = 8
)

// SettingError is one invalid setting of a Config. Setting names it as the
// command line does (dedupe-window for Rules.DedupeWindow); Problem says what
// is wrong with its value.
type SettingError struct {
	Setting string
	Problem string
}

func (e *SettingError) Error() string { return e.Setting + ": " + e.Problem }

// Validate reports every invalid setting, each a *SettingError (joined).
// New validates a Config after filling in its defaults; a Config validated
// directly counts its zero fields as zero, not as "the default", so start from
// DefaultConfig() when building one to validate.
func (c *Config) Validate() error {
	var errs []error
	bad := func(setting, format string, args ...any) {
		errs = append(errs, &SettingError{Setting: setting, Problem: fmt.Sprintf(format, args...)})
	}
	if len(c.Brokers) == 0 {
		bad("brokers", "at least one broker address is required")
	}
	if c.StateDir == "" {
		bad("state-dir", "required")
	}
	if c.Group == "" {
		bad("group", "must not be empty")
	}
	if c.CommitInterval <= 0 {
		bad("commit-interval", "%s: must be > 0", c.CommitInterval)
	}
	if c.Linger < 0 {
		bad("linger", "%s: must be >= 0", c.Linger)
	}
	if c.MaxBatch < 1 {
		bad("max-batch", "%d: must be >= 1", c.MaxBatch)
	}
	if c.MaxCommandBytes < 1 {
		bad("max-command-bytes", "%d: must be >= 1", c.MaxCommandBytes)
	}
	if c.TransactionTimeout < MinTransactionTimeout {
		bad("transaction-timeout", "%s: must be >= %s", c.TransactionTimeout, MinTransactionTimeout)
	}
	if c.SessionTimeout <= 0 {
		bad("session-timeout", "%s: must be > 0", c.SessionTimeout)
	}
	if c.Rules.DedupeWindow < MinDedupeWindow {
		bad("dedupe-window", "%s: must be >= 1m", c.Rules.DedupeWindow)
	}
	if c.StandbyReplicas < 0 || c.StandbyReplicas > MaxStandbyReplicas {
		bad("standby-replicas", "%d: must be between 0 and %d", c.StandbyReplicas, MaxStandbyReplicas)
	}
	if c.Rules.MaxExtensions < 0 {
		bad("max-extensions", "%d: must be >= 0", c.Rules.MaxExtensions)
	}
	return errors.Join(errs...)
}
