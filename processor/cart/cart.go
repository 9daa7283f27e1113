// Package cart is the pure core of the cart coordinator: all-or-nothing holds
// of several SKUs (which live on different partitions of the commands topic)
// as a saga, without a distributed lock.
//
// The coordinator is a partition-serial processor keyed by cart_id (the
// processor package runs it exactly like the SKU processor: Badger state,
// a compacted changelog, one Kafka transaction per batch). This package only
// decides: Core.Apply(state, input, now) -> Outputs, no I/O, no clock.
//
// A cart command starts a saga: the core emits per-SKU commands (reserve,
// release, prepare, unprepare, commit) with deterministic command ids
// (LineCommandID) and reply_to "cart"; the SKU processor decides them and
// routes each decision back to the coordinator partition that owns the cart
// (the cart-commands topic, key cart_id, header reservations-kind: line-result).
// Each line result advances the saga; the cart result is emitted only when the
// saga is done, after any compensation. One saga runs per cart at a time;
// later cart commands of the same cart wait in the cart's queue.
package cart

import (
	"time"

	"github.com/reservations/reservations/schemas"
)

// Changelog key prefixes of the coordinator's state (cart-changelog topic).
const (
	CartPrefix    = schemas.CartPrefix
	DecidedPrefix = schemas.CartCommandPrefix
)

// CartKey is the changelog key of a cart's entity.
func CartKey(cartID string) string { return schemas.CartKey(cartID) }

// DecidedKey is the changelog key of a decided cart command (idempotency).
func DecidedKey(commandID string) string { return schemas.CartCommandKey(commandID) }

// Saga phases.
const (
	PhaseReserve    = "reserve"    // cart.reserve: one reserve per line
	PhaseCompensate = "compensate" // cart.reserve rejected: release the lines that were held
	PhasePrepare    = "prepare"    // cart.commit: prepare every hold
	PhaseUnprepare  = "unprepare"  // cart.commit rejected: unprepare the prepared holds
	PhaseCommit     = "commit"     // cart.commit: commit every (prepared) hold
	PhaseRelease    = "release"    // cart.release: release every hold
)

// The coordinator's changelog values are defined in package schemas, with
// their codec (schemas.AppendCartEntity, schemas.AppendCartDecided,
// schemas.DecodeChange); the core names them as follows.
type (
	// Hold is an active reservation of the cart, as the coordinator knows it.
	Hold = schemas.CartHold
	// Line is one line of the saga in progress.
	Line = schemas.CartSagaLine
	// Saga is the cart command in progress.
	Saga = schemas.CartSaga
	// Queued is a cart command waiting for the saga of its cart to end.
	Queued = schemas.CartQueued
	// Entity is the changelog value under cart/<cart_id>.
	Entity = schemas.CartEntity
	// Decided is the changelog value under cart-command/<command_id>: the
	// original result of a decided cart command, kept for the dedupe window.
	Decided = schemas.CartDecided
)

// Change is the new value of one coordinator entity: exactly one of Cart and
// Decided, or neither for a tombstone of Key.
type Change struct {
	Key     string
	Cart    *Entity
	Decided *Decided
}

// Tombstone reports whether c deletes its key.
func (c *Change) Tombstone() bool { return c.Cart == nil && c.Decided == nil }

// State is what the core reads: the coordinator entities of one partition.
// The core never writes what State returns (values may share slices with the
// caller's committed state): it copies a cart before changing it.
type State interface {
	Cart(cartID string) (Entity, bool)
	Decision(commandID string) (Decided, bool)
}

// Input is one record of the cart-commands topic as the core sees it: a cart
// command (Command, with FieldErr for a field of the wrong JSON type) or a
// per-SKU decision routed back to the cart (LineResult).
type Input struct {
	Key        string // the record key: cart_id
	Command    *schemas.CartCommand
	FieldErr   *schemas.FieldError
	LineResult *schemas.Result
	Partition  int32
	Offset     int64
	// Produced is the record's timestamp (the producer's clock), 0 if unknown:
	// a cart command retried within the dedupe window of its decision is a
	// duplicate however late it is processed (see Core.Apply).
	Produced schemas.Millis
}

// Outputs are what one input produces, in the order they must be written:
// cart results (cart-results topic, key cart_id) and their copies for the
// replies topic, entity changes (cart-changelog) and per-SKU commands
// (commands topic, key sku).
type Outputs struct {
	Results []schemas.CartResult
	// Replies route cart results to the replies topic as well (extension
	// (l)): the cart commands asked for it with reply_to "replies".
	Replies  []Reply
	Changes  []Change
	Commands []schemas.Command
}

// Reply is the route of one cart result to the replies topic: Results[Result]
// goes also to partition Partition. The core only names the partition; the
// role checks it against the topic (a partition the topic does not have gets
// no copy, and the result still goes to cart-results).
type Reply struct {
	Result    int
	Partition int32
}

// Rules are the coordinator's configurable rules.
type Rules struct {
	// DedupeWindow is how long a decided cart command id is remembered (24 h).
	DedupeWindow time.Duration
	// MaxQueue bounds the cart commands waiting per cart (default 16); more are
	// rejected with cart_busy.
	MaxQueue int
	// MaxHolds bounds the holds a cart keeps (default 100): active ones and
	// ended ones not yet pruned (see Prune). A cart.reserve whose lines, added
	// to the cart's holds, would exceed it is rejected with cart_full when its
	// saga would start, before any per-SKU command. 0 means the default.
	MaxHolds int
	// MaxQueuedLines bounds the lines of the cart.reserve commands waiting per
	// cart (default 100); a cart.reserve that would exceed it is rejected with
	// cart_busy. 0 means the default.
	MaxQueuedLines int
}

// DefaultRules are the defaults. With them a cart entity encodes to at most
// about 460 KB, whatever its ids (see limits.go).
func DefaultRules() Rules {
	return Rules{DedupeWindow: 24 * time.Hour, MaxQueue: defaultMaxQueue, MaxHolds: defaultMaxHolds, MaxQueuedLines: defaultMaxQueuedLines}
}

// Core decides cart inputs. It is pure.
type Core struct {
	Rules Rules
}
