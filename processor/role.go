package processor

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// A role is what the partitions of a Processor decide. The loop (processor.go:
// poll, dispatch, barrier, transaction; partition.go: the partition goroutine,
// its store, cache and pending writes; restore.go; sweep.go; poison.go) knows
// nothing of either domain. skurole.go is the SKU processor of the contract,
// cartrole.go the cart coordinator. A third role is one more file and a case
// in newRole.
type role interface {
	// name is the role's label in logs and metrics ("sku", "cart").
	name() string
	// io returns the role's input, results, changelog and DLQ topics.
	io(all topics.Names) topics.Names
	// peer returns the input topic of the other role, which this role writes
	// to, and whether it must exist.
	peer(all topics.Names) (topic string, required bool)
	// defaultGroup is the consumer group when Config.Group is empty.
	defaultGroup() string
	// register registers the role's own metrics on reg and returns those
	// labelled by partition (deleted when a partition stops).
	register(reg prometheus.Registerer) []*prometheus.GaugeVec
	// sweepWindow is how long decided entries stay before the sweep may
	// tombstone them.
	sweepWindow() time.Duration
	// partition returns the role's half of partition w.
	partition(w *partition) partitionRole
	// routes registers the role's interactive queries on mux.
	routes(p *Processor, mux *http.ServeMux)
}

// partitionRole is a role's half of one partition: how it decides, and the
// in-memory indexes it derives from the store (timers, gauges). Its methods
// run on the partition goroutine.
type partitionRole interface {
	// fireDue decides what is due at now (expiry timers) before the records
	// of a dispatch, within the partition's per-transaction budget.
	fireDue(now schemas.Millis)
	// nextDue is the earliest timer, 0 for none.
	nextDue() schemas.Millis
	// handle decides one input record of the partition.
	handle(r *kgo.Record, now schemas.Millis)
	// refuse answers an input record without deciding it (a DLQ copy and a
	// rejected result when it has a command id): its decision cannot be
	// written (poison.go).
	refuse(r *kgo.Record, msg string, now schemas.Millis)
	// forget returns the tombstone for a store entry the sweep found past the
	// window, or false to keep it (its kind is not swept, or the core keeps it).
	// val is the committed value of key: the sweep scans the store only once
	// it has everything committed (syncStore); the open transaction's pending
	// writes may still differ.
	forget(key string, val []byte, now schemas.Millis) (Change, bool)
	// restored rebuilds the indexes from the store after a restore.
	restored() error
	// commit makes the open transaction's index updates committed and
	// publishes the role's gauges; abort drops them.
	commit()
	abort()
}

// newRole builds the role r: the only place that tells the roles apart.
func newRole(r Role, cfg *Config) role {
	if r == RoleCart {
		return newCartRole(cfg)
	}
	return newSKURole(cfg)
}

// String returns the role's name ("sku" or "cart").
func (r Role) String() string { return newRole(r, &Config{}).name() }
