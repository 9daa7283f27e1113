package processor

import (
	"errors"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor/cart"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// This file is the cart coordinator role (RoleCart) of a partition, and the
// SKU role's half of the saga: routing decisions of reply_to=cart commands to
// the coordinator partition that owns the cart. Everything else (the
// transaction loop, the store, restore, rebalances) is shared with RoleSKU.

// replyToCart routes the decision on command id (the first result carrying it;
// notices are never routed) to the cart-commands topic, keyed by cart_id, in
// the open transaction. Murmur2 over the cart-commands partitions sends it to
// the partition the cart service's cart commands of that cart go to.
func (w *partition) replyToCart(id, cartID string, results []schemas.Result) {
	proc := w.proc
	i := slices.IndexFunc(results, func(r schemas.Result) bool { return r.CommandID == id })
	if i < 0 {
		return
	}
	if proc.peerPartitions < 1 {
		w.log.Warn("reply_to cart: no cart-commands topic; the decision is not routed", "command_id", id, "cart_id", cartID)
		return
	}
	v := schemas.AppendResult(make([]byte, 0, 512), &results[i])
	key := []byte(cartID)
	w.produce(&kgo.Record{
		Topic: proc.cfg.Topics.CartCommands, Partition: topics.Partition(key, proc.peerPartitions), Key: key, Value: v,
		Headers: []kgo.RecordHeader{
			{Key: schemas.HeaderKind, Value: []byte(schemas.HeaderKindLineResult)},
			{Key: HeaderCommandID, Value: []byte(id)},
		},
	}, w.promise)
}

// cartState is the partition as the cart core reads it.
type cartState struct{ w *partition }

// Cart implements cart.State. It returns the cached entity itself, sharing its
// slices: the core never writes what it reads (it copies before changing a
// cart; TestApply in processor/cart checks that Apply leaves its state as it
// was), so committed state cannot change before a transaction commits.
func (s cartState) Cart(id string) (cart.Entity, bool) {
	c, ok := s.w.get(cart.CartKey(id), true)
	if !ok || c.Cart == nil || c.Cart.Cart == nil {
		return cart.Entity{}, false
	}
	return *c.Cart.Cart, true
}

// Decision implements cart.State.
func (s cartState) Decision(id string) (cart.Decided, bool) {
	c, ok := s.w.get(cart.DecidedKey(id), false)
	if !ok || c.Cart == nil || c.Cart.Decided == nil {
		return cart.Decided{}, false
	}
	return *c.Cart.Decided, true
}

// applyCart decides the records of a cart coordinator partition and runs its
// sweep. The coordinator has no timers: a saga advances only on line results,
// which the SKU processors always send (exactly once) for every per-SKU command.
func (w *partition) applyCart(records []*kgo.Record, now schemas.Millis) error {
	if now >= w.sweep.next {
		w.sweepStep(now)
	}
	for _, r := range records {
		w.handleGuarded(r, now, w.handleCart)
	}
	w.updateDue()
	return w.err
}

func (w *partition) handleCart(r *kgo.Record, now schemas.Millis) {
	proc := w.proc
	if len(r.Key) == 0 {
		w.toDLQ(r, "empty record key")
		return
	}
	in := cart.Input{Key: string(r.Key), Partition: w.p, Offset: r.Offset}
	if lineResult(r) {
		res, err := cart.DecodeLineResult(r.Value)
		if err != nil || res.CommandID == "" {
			msg := "line result without command_id"
			if err != nil {
				msg = "line result is not a result: " + err.Error()
			}
			w.toDLQ(r, msg)
			return
		}
		in.LineResult = &res
	} else {
		cmd, err := schemas.DecodeCartCommand(r.Value, proc.cfg.MaxCommandBytes)
		var ue *schemas.UndecodableError
		if errors.As(err, &ue) {
			w.deadLetterCart(r, ue, now)
			return
		}
		var fe *schemas.FieldError
		errors.As(err, &fe)
		in.Command, in.FieldErr = &cmd, fe
		if !r.Timestamp.IsZero() {
			proc.metrics.processLatency.Observe(max(0, now.Time().Sub(r.Timestamp).Seconds()))
		}
	}
	if owner := topics.Partition(r.Key, proc.partitions); owner != w.p {
		w.forward(r, owner)
		return
	}
	out := proc.cartCore.Apply(cartState{w}, in, now)
	if len(out.Results) > 0 && proc.metrics.sagaSeconds != nil {
		// Apply wrote nothing yet: the cart still shows the saga this input ended.
		if e, ok := (cartState{w}).Cart(in.Key); ok && e.Saga != nil {
			for i := range out.Results {
				if res := &out.Results[i]; res.CommandID == e.Saga.Command.CommandID && !res.Duplicate {
					proc.metrics.sagaSeconds.Observe(max(0, now.Time().Sub(e.Saga.StartedAt.Time()).Seconds()))
				}
			}
		}
	}
	w.emitCart(out, r)
}

func lineResult(r *kgo.Record) bool {
	for _, h := range r.Headers {
		if h.Key == schemas.HeaderKind {
			return string(h.Value) == schemas.HeaderKindLineResult
		}
	}
	return false
}

// deadLetterCart copies an undecodable cart command to the DLQ and, when it
// has a command id, answers it with a rejected invalid_command cart result.
func (w *partition) deadLetterCart(r *kgo.Record, ue *schemas.UndecodableError, now schemas.Millis) {
	w.toDLQ(r, ue.Msg)
	if ue.CommandID == "" {
		return
	}
	res := schemas.CartResult{CommandID: ue.CommandID, CartID: string(r.Key), Outcome: schemas.OutcomeRejected,
		Reason: schemas.ReasonInvalidCommand, Message: ue.Msg, Lines: []schemas.CartLine{}, Partition: w.p, Offset: r.Offset, DecidedAt: now}
	w.emitCart(cart.Outputs{Results: []schemas.CartResult{res}}, r)
}

// emitCart produces the cart core's outputs into the open transaction: cart
// results, changelog records (pending until commit) and per-SKU commands.
func (w *partition) emitCart(out cart.Outputs, src *kgo.Record) {
	proc := w.proc
	var trace []kgo.RecordHeader
	for _, h := range src.Headers {
		if h.Key == HeaderTraceparent {
			trace = append(trace, h)
		}
	}
	for i := range out.Results {
		res := &out.Results[i]
		v := schemas.AppendCartResult(make([]byte, 0, 1024), res)
		hs := append([]kgo.RecordHeader{{Key: HeaderCommandID, Value: []byte(res.CommandID)}}, trace...)
		w.produce(&kgo.Record{Topic: proc.io.Results, Partition: w.p, Key: []byte(res.CartID), Value: v, Headers: hs}, w.promise)
		proc.metrics.cartResult(res)
	}
	for i := range out.Changes {
		c := &out.Changes[i]
		if !w.putChange(&Change{Key: c.Key, Cart: c}) {
			return
		}
		if cart.KeyKind(c.Key) == cart.CartPrefix {
			var started schemas.Millis // 0: no saga (or a tombstone)
			if c.Cart != nil && c.Cart.Saga != nil {
				started = max(c.Cart.Saga.StartedAt, 1)
			}
			w.sagaPending[strings.TrimPrefix(c.Key, cart.CartPrefix)] = started
		}
	}
	for i := range out.Commands {
		cmd := &out.Commands[i]
		v := schemas.AppendCommand(make([]byte, 0, 256), cmd)
		key := []byte(cmd.SKU)
		hs := append([]kgo.RecordHeader{{Key: HeaderCommandID, Value: []byte(cmd.CommandID)}}, trace...)
		w.produce(&kgo.Record{Topic: proc.cfg.Topics.Commands, Partition: topics.Partition(key, proc.peerPartitions),
			Key: key, Value: v, Headers: hs}, w.promise)
	}
}

// loadSagas counts the sagas in flight of the restored state (RoleCart).
func (w *partition) loadSagas() error {
	clear(w.sagas)
	return w.store.Scan(cart.CartPrefix, func(key string, val []byte) error {
		c, err := DecodeChange(key, val)
		if err != nil {
			w.log.Warn("undecodable cart in state", "key", key, "err", err)
			return nil
		}
		if c.Cart == nil || c.Cart.Cart == nil {
			return nil
		}
		if e := c.Cart.Cart; e.Saga != nil {
			w.sagas[e.CartID] = max(e.Saga.StartedAt, 1)
		}
		return nil
	})
}
