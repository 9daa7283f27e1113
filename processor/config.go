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
	//
	// When set (not read from StateDir), it is also the group.instance.id:
	// the instance is a static member of the group (KIP-345), unless
	// DynamicMembership is set. A static member that stops (SIGTERM or a
	// crash) keeps its partitions until SessionTimeout passes; restarted with
	// the same InstanceID before that, it gets them back and no other instance
	// sees a rebalance. See docs/MEMBERSHIP.md.
	InstanceID string
	// DynamicMembership turns static membership off: the instance joins the
	// group without a group.instance.id even when InstanceID is set, and leaves
	// the group on every clean stop (its partitions move at once).
	DynamicMembership bool
	// LeaveGroupOnShutdown makes a static member leave the group on a clean
	// stop (LeaveGroup with its instance id), so its partitions move at once
	// instead of after SessionTimeout: for a stop that is meant to last (a
	// scale-in), not for a restart. Without static membership the instance
	// always leaves.
	LeaveGroupOnShutdown bool
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
	// buffered, before it commits (default 0: commit at once; under load the
	// records that pile up during one transaction make the next one larger).
	Linger time.Duration
	// MaxBatch bounds the records per transaction (default 5000).
	MaxBatch int
	// StateCacheBytes bounds the estimated heap of the caches of decoded
	// committed entities (stock, reservations, carts) of all the processor's
	// partitions together (default 128 MiB, at least 1 MiB): each partition
	// gets StateCacheBytes divided by the input topic's partitions, so an
	// instance that runs a third of them holds at most a third (a partition's
	// cache never holds less than 128 KiB). A reservation takes about 400
	// bytes. A read the cache misses goes to the partition's Badger store.
	StateCacheBytes int64
	// MaxCommandBytes is the largest command record accepted; larger ones go to
	// the DLQ (default 64 KiB).
	MaxCommandBytes int
	// TransactionTimeout is the broker-side timeout of an open transaction, i.e.
	// how long a crashed instance's open transaction can block readers of its
	// partitions (default 10 s).
	TransactionTimeout time.Duration
	// SessionTimeout is the group session timeout: how long the group waits for
	// a member that stopped heartbeating (crashed, frozen, cut off, or a static
	// member restarting) before it hands that member's partitions to others.
	// Default: DefaultStaticSessionTimeout (30 s) with static membership, so
	// that a restart fits in it; DefaultSessionTimeout (10 s) without.
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
	// SweepInterval is how often each partition sweeps the next SweepBatch keys
	// of its store for decided commands and terminal reservations past the
	// dedupe window to tombstone (default 1 s). A pass over the whole store
	// starts at most every 24th of the dedupe window (an hour by default).
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
	if c.StateCacheBytes <= 0 {
		c.StateCacheBytes = DefaultStateCacheBytes
	}
	if c.TransactionTimeout <= 0 {
		c.TransactionTimeout = 10 * time.Second
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = DefaultSessionTimeoutFor(c.StaticMembership())
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

// DefaultStateCacheBytes is the default Config.StateCacheBytes.
const DefaultStateCacheBytes = 128 << 20

// Session timeouts (Config.SessionTimeout).
const (
	// DefaultSessionTimeout is the session timeout of a dynamic member: only a
	// crash or a freeze waits for it (a clean stop leaves the group at once).
	DefaultSessionTimeout = 10 * time.Second
	// DefaultStaticSessionTimeout is the session timeout of a static member: a
	// restart (stop, start, restore of the store's tail, join) must fit in it
	// for no partition to move; a crash is detected only after it.
	DefaultStaticSessionTimeout = 30 * time.Second
)

// DefaultSessionTimeoutFor is the default session timeout with or without
// static membership.
func DefaultSessionTimeoutFor(static bool) time.Duration {
	if static {
		return DefaultStaticSessionTimeout
	}
	return DefaultSessionTimeout
}

// StaticMembership reports whether the instance joins its group as a static
// member: InstanceID is configured and DynamicMembership is not set. (An id
// read from StateDir/instance-id is stable too, but is not used as the
// group.instance.id: only an operator who names instances, like a
// StatefulSet's pod names, opts in.)
func (c *Config) StaticMembership() bool { return c.InstanceID != "" && !c.DynamicMembership }

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

// validInstanceID reports whether id is a valid group.instance.id.
func validInstanceID(id string) bool {
	if len(id) == 0 || len(id) > 249 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
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
	if c.InstanceID != "" && !c.DynamicMembership && !validInstanceID(c.InstanceID) {
		// Kafka's rule for group.instance.id; a broker refuses another at
		// JoinGroup, and the session would retry for ever.
		bad("instance-id", "%q: a static member's id (group.instance.id) is 1..249 characters of [A-Za-z0-9._-]", c.InstanceID)
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
	if c.StateCacheBytes < 1<<20 {
		bad("state-cache-mb", "%d MiB: must be >= 1", c.StateCacheBytes>>20)
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
