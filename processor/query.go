package processor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/reservations/reservations/processor/cart"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// Errors of interactive queries.
var (
	// ErrNotFound: the owner has no such entity.
	ErrNotFound = errors.New("not found")
	// ErrRestoring: this instance owns the partition but is still restoring it.
	ErrRestoring = errors.New("partition is restoring")
	// ErrNotRunning: the processor is not in its group (starting or stopped).
	ErrNotRunning = errors.New("processor not running")
)

// NotOwnerError says which instance owns the partition of a queried SKU, like
// Kafka Streams' application.server metadata. Owner is that instance's
// advertised address, "" when no member owns it (a rebalance is under way) or
// the owner advertises none.
type NotOwnerError struct {
	Partition int32
	Owner     string
}

func (e *NotOwnerError) Error() string {
	if e.Owner == "" {
		return fmt.Sprintf("partition %d is not owned by this instance and its owner is unknown", e.Partition)
	}
	return fmt.Sprintf("partition %d is owned by %s", e.Partition, e.Owner)
}

// clientIDPrefix marks the advertised address in a member's client id, which
// DescribeGroups shows to every instance.
const clientIDPrefix = "reservations@"

func (p *Processor) clientID() string {
	if p.cfg.AdvertisedAddr == "" {
		return "reservations"
	}
	return clientIDPrefix + p.cfg.AdvertisedAddr
}

// Stock returns the committed stock entity of sku from this instance's local
// state, or an error: *NotOwnerError, ErrRestoring, ErrNotFound, ErrNotRunning.
func (p *Processor) Stock(ctx context.Context, sku string) (schemas.StockEntity, error) {
	c, err := p.query(ctx, sku, schemas.StockKey(sku))
	if err != nil {
		return schemas.StockEntity{}, err
	}
	return *c.Stock, nil
}

// Reservation returns the committed reservation entity, like Stock.
func (p *Processor) Reservation(ctx context.Context, sku, id string) (schemas.ReservationEntity, error) {
	c, err := p.query(ctx, sku, schemas.ReservationKey(sku, id))
	if err != nil {
		return schemas.ReservationEntity{}, err
	}
	return *c.Reservation, nil
}

// Cart returns the committed cart entity of cartID from this instance's
// local state (the cart role): its holds, the saga in flight and the queue; errors
// as for Stock.
func (p *Processor) Cart(ctx context.Context, cartID string) (cart.Entity, error) {
	if _, ok := p.role.(*cartRole); !ok {
		return cart.Entity{}, ErrNotFound
	}
	c, err := p.query(ctx, cartID, cart.CartKey(cartID))
	if err != nil {
		return cart.Entity{}, err
	}
	if c.Cart == nil || c.Cart.Cart == nil {
		return cart.Entity{}, ErrNotFound
	}
	return *c.Cart.Cart, nil
}

// query reads key of the partition that routing key hashes to (a SKU, or a
// cart id for the cart role).
func (p *Processor) query(ctx context.Context, sku, key string) (Change, error) {
	p.mu.Lock()
	running := p.sess != nil
	n := p.lay.partitions
	status, owned := p.status[topics.Partition([]byte(sku), max(n, 1))]
	p.mu.Unlock()
	if !running || n == 0 {
		return Change{}, ErrNotRunning
	}
	part := topics.Partition([]byte(sku), n)
	if !owned {
		return Change{}, &NotOwnerError{Partition: part, Owner: p.owner(ctx, part)}
	}
	if status != "running" {
		return Change{}, ErrRestoring
	}
	type answer struct {
		c   Change
		ok  bool
		err error
	}
	ch := make(chan answer, 1)
	// The partition goroutine answers between transactions from committed
	// state only (the cache and the store, never pending writes).
	if !p.ask(part, func(w *partition) {
		c, ok, err := w.committed(key)
		ch <- answer{c, ok, err}
	}) {
		return Change{}, ErrRestoring
	}
	select {
	case a := <-ch:
		if a.err != nil {
			return Change{}, a.err
		}
		if !a.ok {
			return Change{}, ErrNotFound
		}
		return a.c, nil
	case <-ctx.Done():
		return Change{}, ctx.Err()
	}
}

// ask queues fn on the goroutine of partition n; false when it is not running.
func (p *Processor) ask(n int32, fn func(*partition)) bool {
	p.mu.Lock()
	w := p.queryable[n]
	p.mu.Unlock()
	if w == nil {
		return false
	}
	select {
	case w.queries <- fn:
		return true
	case <-w.exit:
		return false
	}
}

// committed reads key from committed state only.
func (w *partition) committed(key string) (Change, bool, error) {
	if c, ok := w.cache.get(key); ok {
		return c, !c.Tombstone(), nil
	}
	v, staged := w.sw.lookup(key)
	if !staged {
		var err error
		if v, err = w.store.Get(key); err != nil {
			return Change{}, false, err
		}
	}
	if v == nil {
		return Change{}, false, nil
	}
	c, err := DecodeChange(key, v)
	return c, err == nil, err
}

// owner finds the advertised address of the member that owns partition part
// of the commands topic, from the group description (cached for a second).
func (p *Processor) owner(ctx context.Context, part int32) string {
	p.mu.Lock()
	if time.Since(p.ownersAt) < time.Second {
		o := p.owners[part]
		p.mu.Unlock()
		return o
	}
	adm := p.adm
	p.mu.Unlock()
	owners := map[int32]string{}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	groups, err := adm.DescribeGroups(ctx, p.cfg.Group)
	if err != nil {
		p.log.Debug("describe group for an interactive query", "err", err)
		return ""
	}
	for _, m := range groups[p.cfg.Group].Members {
		a, ok := m.Assigned.AsConsumer()
		if !ok || !strings.HasPrefix(m.ClientID, clientIDPrefix) {
			continue
		}
		for _, t := range a.Topics {
			if t.Topic == p.io.Commands {
				for _, n := range t.Partitions {
					owners[n] = strings.TrimPrefix(m.ClientID, clientIDPrefix)
				}
			}
		}
	}
	p.mu.Lock()
	p.owners, p.ownersAt = owners, time.Now()
	p.mu.Unlock()
	return owners[part]
}
