package processor

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor/cart"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// This file is the cart coordinator role (Config.Role = RoleCart): it consumes
// cart-commands (cart commands, and the SKU processor's line results routed to
// it), runs each cart command as a saga of per-SKU commands with the pure
// cart.Core, and writes cart results and its own changelog. It has no timers:
// a saga advances only on line results, which the SKU processors always send
// (exactly once) for every per-SKU command. A cart result whose cart command
// asked for it (reply_to "replies") is copied to the replies topic in the same
// transaction (replies.go).

type cartRole struct {
	core cart.Core
	cfg  *Config
	// Saga duration (cart command decided to cart result), and per partition
	// the sagas in flight and the start of the oldest one (set by register).
	sagaSeconds   prometheus.Histogram
	sagasInFlight *prometheus.GaugeVec
	oldestSaga    *prometheus.GaugeVec
	// replies routes cart results of cart commands sent with reply_to
	// "replies" (replies.go).
	replies replyRoute
}

func newCartRole(cfg *Config) *cartRole {
	return &cartRole{core: cart.Core{Rules: cfg.CartRules}, cfg: cfg}
}

func (*cartRole) name() string                           { return "cart" }
func (*cartRole) io(all topics.Names) topics.Names       { return all.Cart() }
func (*cartRole) peer(all topics.Names) (string, bool)   { return all.Commands, true }
func (*cartRole) defaultGroup() string                   { return "reservations-cart-coordinator" }
func (r *cartRole) sweepWindow() time.Duration           { return r.core.Rules.DedupeWindow }
func (r *cartRole) partition(w *partition) partitionRole { return &cartPartition{w: w, role: r} }

func (r *cartRole) register(reg prometheus.Registerer) []*prometheus.GaugeVec {
	const ns = "reservations_cart" // the cart role's own metrics
	r.sagaSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "saga_seconds",
		Help: "Time from a cart command's start to its cart result (queueing behind another saga of the cart included).", Buckets: latencyBuckets})
	r.sagasInFlight = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "sagas_in_flight",
		Help: "Carts with a saga in progress in committed state, per partition."}, []string{"partition"})
	r.oldestSaga = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "oldest_saga_start_timestamp_seconds",
		Help: "When the oldest saga in flight started (Unix seconds; 0 when none): time() minus it is how long a saga has waited for its line results."},
		[]string{"partition"})
	reg.MustRegister(r.sagaSeconds, r.sagasInFlight, r.oldestSaga)
	r.replies.register(reg, r.name())
	return []*prometheus.GaugeVec{r.sagasInFlight, r.oldestSaga}
}

// routes serves GET /v1/carts/{cart}: the cart entity (holds, the saga in
// flight, the queue).
func (r *cartRole) routes(p *Processor, mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/carts/{cart}", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), 5*time.Second)
		defer cancel()
		c, err := p.Cart(ctx, req.PathValue("cart"))
		p.answer(w, req, c, err)
	})
}

// cartPartition is the cart role's half of a partition: the cart.State the
// core reads, and when each cart with a saga in flight started it (committed
// state) with the pending updates of the open transaction (0: no saga).
type cartPartition struct {
	w           *partition
	role        *cartRole
	sagas       map[string]schemas.Millis
	sagaPending map[string]schemas.Millis
	sagaRoom    int // the largest length of sagaPending (scratch.go)
}

// Cart implements cart.State. It returns the cached entity itself, sharing its
// slices: the core never writes what it reads (it copies before changing a
// cart; TestApply in processor/cart checks that Apply leaves its state as it
// was), so committed state cannot change before a transaction commits.
func (c *cartPartition) Cart(id string) (cart.Entity, bool) {
	ch, ok := c.w.get(cart.CartKey(id), true)
	if !ok || ch.Cart == nil || ch.Cart.Cart == nil {
		return cart.Entity{}, false
	}
	return *ch.Cart.Cart, true
}

// Decision implements cart.State.
func (c *cartPartition) Decision(id string) (cart.Decided, bool) {
	ch, ok := c.w.get(cart.DecidedKey(id), false)
	if !ok || ch.Cart == nil || ch.Cart.Decided == nil {
		return cart.Decided{}, false
	}
	return *ch.Cart.Decided, true
}

func (*cartPartition) fireDue(schemas.Millis)  {}
func (*cartPartition) nextDue() schemas.Millis { return 0 }

func (c *cartPartition) handle(r *kgo.Record, now schemas.Millis) {
	w, env := c.w, c.w.env
	if len(r.Key) == 0 {
		w.toDLQ(r, "empty record key")
		return
	}
	in := cart.Input{Key: string(r.Key), Partition: w.p, Offset: r.Offset, Produced: schemas.MillisOf(r.Timestamp)}
	if lineResult(r) {
		res, err := schemas.DecodeResult(r.Value)
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
		cmd, err := schemas.DecodeCartCommand(r.Value, env.cfg.MaxCommandBytes)
		var ue *schemas.UndecodableError
		if errors.As(err, &ue) {
			c.deadLetter(r, ue.CommandID, ue.Msg, now)
			return
		}
		var fe *schemas.FieldError
		errors.As(err, &fe)
		in.Command, in.FieldErr = &cmd, fe
		if !r.Timestamp.IsZero() {
			env.metrics.processLatency.Observe(max(0, now.Time().Sub(r.Timestamp).Seconds()))
		}
	}
	if owner := topics.Partition(r.Key, env.layout.partitions); owner != w.p {
		w.forward(r, owner)
		return
	}
	out := c.role.core.Apply(c, in, now)
	if len(out.Results) > 0 {
		// Apply wrote nothing yet: the cart still shows the saga this input ended.
		if e, ok := c.Cart(in.Key); ok && e.Saga != nil {
			for i := range out.Results {
				if res := &out.Results[i]; res.CommandID == e.Saga.Command.CommandID && !res.Duplicate {
					c.role.sagaSeconds.Observe(max(0, now.Time().Sub(e.Saga.StartedAt.Time()).Seconds()))
				}
			}
		}
	}
	c.emit(out, r)
}

func lineResult(r *kgo.Record) bool {
	for _, h := range r.Headers {
		if h.Key == schemas.HeaderKind {
			return string(h.Value) == schemas.HeaderKindLineResult
		}
	}
	return false
}

// deadLetter copies r to the DLQ and, when it has a command id, answers it
// with a rejected invalid_command cart result.
func (c *cartPartition) deadLetter(r *kgo.Record, commandID, msg string, now schemas.Millis) {
	c.w.toDLQ(r, msg)
	if commandID == "" {
		return
	}
	c.emit(cart.Outputs{Results: []schemas.CartResult{c.rejected(r, commandID, msg, now)}}, r)
}

// refuse answers r without deciding it (poison.go). A line result gets only a
// DLQ copy; a cart command's rejection is routed like a decision.
func (c *cartPartition) refuse(r *kgo.Record, msg string, now schemas.Millis) {
	if lineResult(r) {
		c.w.toDLQ(r, msg)
		return
	}
	cmd, _ := schemas.DecodeCartCommand(r.Value, c.w.env.cfg.MaxCommandBytes)
	c.w.toDLQ(r, msg)
	if cmd.CommandID == "" {
		return
	}
	out := cart.Outputs{Results: []schemas.CartResult{c.rejected(r, cmd.CommandID, msg, now)}}
	if p, ok := cmd.Reply(); ok {
		out.Replies = []cart.Reply{{Result: 0, Partition: p}}
	}
	c.emit(out, r)
}

// rejected is the invalid_command cart result of record r that is not decided.
func (c *cartPartition) rejected(r *kgo.Record, commandID, msg string, now schemas.Millis) schemas.CartResult {
	return schemas.CartResult{CommandID: commandID, CartID: string(r.Key), Outcome: schemas.OutcomeRejected,
		Reason: schemas.ReasonInvalidCommand, Message: msg, Lines: []schemas.CartLine{}, Partition: c.w.p, Offset: r.Offset, DecidedAt: now}
}

// emit produces the cart core's outputs into the open transaction: cart
// results (and their copies on the replies topic), changelog records (pending
// until commit) and per-SKU commands.
func (c *cartPartition) emit(out cart.Outputs, src *kgo.Record) {
	w, env := c.w, c.w.env
	trace := traceHeaders(src)
	for i := range out.Results {
		res := &out.Results[i]
		v := schemas.AppendCartResult(make([]byte, 0, 1024), res)
		hs := append([]kgo.RecordHeader{{Key: HeaderCommandID, Value: []byte(res.CommandID)}}, trace...)
		w.produce(&kgo.Record{Topic: env.io.Results, Partition: w.p, Key: []byte(res.CartID), Value: v, Headers: hs}, w.promise)
		env.metrics.cartResult(res)
		for _, rp := range out.Replies {
			// The same bytes as on cart-results; never fails the result.
			if rp.Result == i && c.role.replies.routable(w, rp.Partition, res.CommandID) {
				c.role.replies.write(w, rp.Partition, []byte(res.CartID), v, res.CommandID, src)
			}
		}
	}
	for i := range out.Changes {
		ch := &out.Changes[i]
		cc := cartChange(ch)
		w.putChange(&cc)
		if cart.KeyKind(ch.Key) == cart.CartPrefix {
			var started schemas.Millis // 0: no saga (or a tombstone)
			if ch.Cart != nil && ch.Cart.Saga != nil {
				started = max(ch.Cart.Saga.StartedAt, 1)
			}
			if c.sagaPending == nil {
				c.sagaPending = make(map[string]schemas.Millis)
			}
			c.sagaPending[strings.TrimPrefix(ch.Key, cart.CartPrefix)] = started
		}
	}
	for i := range out.Commands {
		cmd := &out.Commands[i]
		v := schemas.AppendCommand(make([]byte, 0, 256), cmd)
		key := []byte(cmd.SKU)
		hs := append([]kgo.RecordHeader{{Key: HeaderCommandID, Value: []byte(cmd.CommandID)}}, trace...)
		w.produce(&kgo.Record{Topic: env.all.Commands, Partition: topics.Partition(key, env.layout.peerPartitions),
			Key: key, Value: v, Headers: hs}, w.promise)
	}
}

// forget tombstones decided cart commands past the dedupe window and prunes
// idle carts of their long expired holds.
func (c *cartPartition) forget(key string, val []byte, now schemas.Millis) (Change, bool) {
	kind := cart.KeyKind(key)
	if kind != cart.DecidedPrefix && kind != cart.CartPrefix {
		return Change{}, false
	}
	var ct cart.Change
	var ok bool
	if kind == cart.DecidedPrefix {
		e, err := schemas.DecodeChange(key, val)
		if err != nil || e.CartCommand == nil {
			c.w.log.Warn("sweep: undecodable state entry", "key", key, "err", err)
			return Change{}, false
		}
		ct, ok = c.role.core.Forget(c, e.CartCommand.CommandID, now)
	} else {
		// An idle cart untouched for the window: drop its long expired holds.
		ct, ok = c.role.core.Prune(c, strings.TrimPrefix(key, cart.CartPrefix), now)
	}
	if !ok {
		return Change{}, false
	}
	return cartChange(&ct), true
}

// restored counts the sagas in flight of the restored state, and looks the
// replies topic up for the cart results routed there.
func (c *cartPartition) restored() error {
	w := c.w
	c.role.replies.warm(w.ctx, w.env)
	c.sagas = make(map[string]schemas.Millis)
	err := w.store.Scan(cart.CartPrefix, func(key string, val []byte) error {
		ch, err := DecodeChange(key, val)
		if err != nil {
			w.log.Warn("undecodable cart in state", "key", key, "err", err)
			return nil
		}
		if ch.Cart == nil || ch.Cart.Cart == nil {
			return nil
		}
		if e := ch.Cart.Cart; e.Saga != nil {
			c.sagas[e.CartID] = max(e.Saga.StartedAt, 1)
		}
		return nil
	})
	c.publish()
	return err
}

func (c *cartPartition) commit() {
	for id, started := range c.sagaPending {
		if started > 0 {
			c.sagas[id] = started
		} else {
			delete(c.sagas, id)
		}
	}
	c.sagaPending = emptied(c.sagaPending, &c.sagaRoom)
	c.publish()
}

func (c *cartPartition) abort() { c.sagaPending = emptied(c.sagaPending, &c.sagaRoom) }

func (c *cartPartition) publish() {
	l := partLabel(c.w.p)
	c.role.sagasInFlight.WithLabelValues(l).Set(float64(len(c.sagas)))
	var oldest schemas.Millis
	for _, started := range c.sagas {
		if oldest == 0 || started < oldest {
			oldest = started
		}
	}
	c.role.oldestSaga.WithLabelValues(l).Set(float64(oldest) / 1000) // 0: none
}
