package processor

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// This file is the SKU role: it decides the commands of the contract with the
// pure Core, keeps the expiry timers and the gauges of a partition, and routes
// decisions of reply_to=cart commands to the cart coordinator (and of
// reply_to=replies commands to the replies topic: replies.go).

// minExpiriesPerTransaction is how many due timers a partition fires in a
// transaction even past its timer deadline, so that expiry always progresses.
const minExpiriesPerTransaction = 100

type skuRole struct {
	core sku.Core
	cfg  *Config
	// replies routes decisions of reply_to "replies" commands (replies.go).
	replies replyRoute
}

func newSKURole(cfg *Config) *skuRole { return &skuRole{core: sku.Core{Rules: cfg.Rules}, cfg: cfg} }

func (*skuRole) name() string                         { return "sku" }
func (*skuRole) io(all topics.Names) topics.Names     { return all }
func (*skuRole) peer(all topics.Names) (string, bool) { return all.CartCommands, false }
func (*skuRole) defaultGroup() string                 { return "reservations-processor" }
func (r *skuRole) register(reg prometheus.Registerer) []*prometheus.GaugeVec {
	r.replies.register(reg, r.name())
	return nil
}
func (r *skuRole) sweepWindow() time.Duration              { return r.core.Rules.DedupeWindow }
func (r *skuRole) partition(w *partition) partitionRole    { return newSKUPartition(r, w) }
func (r *skuRole) routes(p *Processor, mux *http.ServeMux) { skuRoutes(p, mux) }

// skuRoutes serves GET /v1/stock/{sku} and GET /v1/stock/{sku}/reservations/{id}.
func skuRoutes(p *Processor, mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/stock/{sku}", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		st, err := p.Stock(ctx, r.PathValue("sku"))
		p.answer(w, r, st, err)
	})
	mux.HandleFunc("GET /v1/stock/{sku}/reservations/{id}", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		res, err := p.Reservation(ctx, r.PathValue("sku"), r.PathValue("id"))
		p.answer(w, r, res, err)
	})
}

// skuPartition is the SKU role's half of a partition: the State the core reads
// (through the partition's pending writes, cache and store), the expiry
// timers, and the gauges of committed state with their pending deltas.
type skuPartition struct {
	w    *partition
	role *skuRole
	core *sku.Core
	// timers is the expiry schedule, derived from state (restored() scans it).
	timers timers
	// expired counts the timers fired in the open transaction (capped by
	// MaxExpiriesPerTransaction and the transaction's deadline; the rest fire
	// in the next ones).
	expired     int
	active      int64
	activeDelta int64
	oversold    map[string]bool
	overPending map[string]bool
	overRoom    int // the largest length of overPending (scratch.go)
}

func newSKUPartition(r *skuRole, w *partition) *skuPartition {
	return &skuPartition{w: w, role: r, core: &r.core, oversold: make(map[string]bool), overPending: make(map[string]bool)}
}

// Stock implements State.
func (s *skuPartition) Stock(sku string) (schemas.StockEntity, bool) {
	c, ok := s.w.get(schemas.StockKey(sku), true)
	if !ok || c.Stock == nil {
		return schemas.StockEntity{}, false
	}
	return *c.Stock, true
}

// Reservation implements State.
func (s *skuPartition) Reservation(sku, id string) (schemas.ReservationEntity, bool) {
	c, ok := s.w.get(schemas.ReservationKey(sku, id), true)
	if !ok || c.Reservation == nil {
		return schemas.ReservationEntity{}, false
	}
	return *c.Reservation, true
}

// Decision implements State.
func (s *skuPartition) Decision(id string) (schemas.CommandEntity, bool) {
	c, ok := s.w.get(schemas.CommandKey(id), false)
	if !ok || c.Command == nil {
		return schemas.CommandEntity{}, false
	}
	return *c.Command, true
}

// DueReservations implements State. The partition fires every timer due at now
// before it decides the records of a dispatch (fireDue), so no hold is ever
// due at decision time here.
func (*skuPartition) DueReservations(string, schemas.Millis) []string { return nil }

func (s *skuPartition) fireDue(now schemas.Millis) {
	w := s.w
	backlog := 0
	for s.expired < w.env.cfg.MaxExpiriesPerTransaction &&
		(s.expired < minExpiriesPerTransaction || time.Now().Before(w.deadline)) {
		t, ok := s.timers.due(now)
		if !ok {
			break
		}
		s.expired++
		out := s.core.Expire(s, w.p, t.sku, t.id, now)
		if len(out.Results) > 0 && t.at < now-1000 {
			backlog++ // a hold that stayed active more than 1 s past expires_at
		}
		s.emit(out, nil)
		w.env.metrics.expired.Inc()
	}
	w.env.metrics.backlog.WithLabelValues(partLabel(w.p)).Set(float64(backlog))
}

func (s *skuPartition) nextDue() schemas.Millis { return s.timers.next() }

func (s *skuPartition) handle(r *kgo.Record, now schemas.Millis) {
	w, env := s.w, s.w.env
	if len(r.Key) == 0 {
		s.deadLetter(r, "empty record key", nil, now)
		return
	}
	cmd, err := schemas.DecodeCommand(r.Value, env.cfg.MaxCommandBytes)
	var ue *schemas.UndecodableError
	if errors.As(err, &ue) {
		s.deadLetter(r, ue.Msg, ue, now)
		return
	}
	if owner := topics.Partition(r.Key, env.layout.partitions); owner != w.p {
		w.forward(r, owner)
		return
	}
	var fe *schemas.FieldError
	errors.As(err, &fe)
	if !r.Timestamp.IsZero() {
		env.metrics.processLatency.Observe(max(0, now.Time().Sub(r.Timestamp).Seconds()))
	}
	out := s.core.Apply(s, sku.Input{Key: string(r.Key), Command: cmd, FieldErr: fe, Partition: w.p, Offset: r.Offset, Produced: schemas.MillisOf(r.Timestamp)}, now)
	s.emit(out, r)
	if cmd.ReplyTo == schemas.ReplyToCart && cmd.CartID != "" {
		s.replyToCart(cmd.CommandID, cmd.CartID, out.Results, r)
	}
	s.role.replies.replyTo(w, &cmd, out.Results, r)
}

// emit records the changes as pending and produces results and changelog
// records; src is the command record (nil for timers).
func (s *skuPartition) emit(out sku.Outputs, src *kgo.Record) {
	w, env := s.w, s.w.env
	for i := range out.Results {
		res := &out.Results[i]
		v := schemas.AppendResult(make([]byte, 0, 512), res)
		rec := &kgo.Record{Topic: env.io.Results, Partition: w.p, Key: []byte(res.SKU), Value: v}
		if res.CommandID != "" {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: HeaderCommandID, Value: []byte(res.CommandID)})
		}
		if res.CommandID != "" {
			rec.Headers = append(rec.Headers, traceHeaders(src)...)
		}
		w.produce(rec, w.promise)
		env.metrics.result(res)
		if res.Type == schemas.TypeExpired && res.Reservation != nil {
			env.metrics.expiryLag.Observe(max(0, res.DecidedAt.Time().Sub(res.Reservation.ExpiresAt.Time()).Seconds()))
		}
	}
	for i := range out.Changes {
		c := &out.Changes[i]
		w.putChange(&Change{Change: *c})
		if r := c.Reservation; r != nil {
			switch {
			case r.Reservation.Status == schemas.StatusActive:
				s.timers.add(r.Reservation.ExpiresAt, r.Reservation.SKU, r.Reservation.ReservationID)
				if r.Event == schemas.EventReserved {
					s.activeDelta++
				}
			case r.Event == schemas.EventReleased || r.Event == schemas.EventExpired || r.Event == schemas.EventCommitted:
				s.activeDelta--
			}
		}
		if st := c.Stock; st != nil {
			s.overPending[st.SKU] = st.Available < 0
		}
	}
}

// deadLetter copies r unchanged to the DLQ with error headers and, when its key
// is a usable SKU, emits a rejected invalid_command result (ue's command id
// when it has one).
func (s *skuPartition) deadLetter(r *kgo.Record, msg string, ue *schemas.UndecodableError, now schemas.Millis) {
	s.w.toDLQ(r, msg)
	if !schemas.ValidSKU(string(r.Key)) {
		return
	}
	res := schemas.Result{SKU: string(r.Key), Outcome: schemas.OutcomeRejected, Reason: schemas.ReasonInvalidCommand,
		Message: msg, Partition: s.w.p, Offset: r.Offset, DecidedAt: now}
	if ue != nil {
		res.CommandID = ue.CommandID
	}
	s.emit(sku.Outputs{Results: []schemas.Result{res}}, r)
}

// refuse answers r without deciding it: a DLQ copy and, when it has a command
// id and a usable key, a rejected invalid_command result (see poison.go).
func (s *skuPartition) refuse(r *kgo.Record, msg string, now schemas.Millis) {
	s.w.toDLQ(r, msg)
	cmd, _ := schemas.DecodeCommand(r.Value, s.w.env.cfg.MaxCommandBytes)
	if cmd.CommandID == "" || !schemas.ValidSKU(string(r.Key)) {
		return
	}
	res := schemas.Result{CommandID: cmd.CommandID, Type: cmd.Type, SKU: string(r.Key), Outcome: schemas.OutcomeRejected,
		Reason: schemas.ReasonInvalidCommand, Message: msg, Partition: s.w.p, Offset: r.Offset, DecidedAt: now}
	results := []schemas.Result{res}
	s.emit(sku.Outputs{Results: results}, r)
	if cmd.ReplyTo == schemas.ReplyToCart && cmd.CartID != "" {
		// The cart saga waiting for this line gets its (rejected) decision.
		s.replyToCart(cmd.CommandID, cmd.CartID, results, r)
	}
	s.role.replies.replyTo(s.w, &cmd, results, r)
}

// replyToCart routes the decision on command id (the first result carrying it;
// notices are never routed) to the cart-commands topic, keyed by cart_id, in
// the open transaction. Murmur2 over the cart-commands partitions sends it to
// the partition the cart service's cart commands of that cart go to; the line
// command src's trace context goes with it.
func (s *skuPartition) replyToCart(id, cartID string, results []schemas.Result, src *kgo.Record) {
	w, env := s.w, s.w.env
	i := slices.IndexFunc(results, func(r schemas.Result) bool { return r.CommandID == id })
	if i < 0 {
		return
	}
	if env.layout.peerPartitions < 1 {
		w.log.Warn("reply_to cart: no cart-commands topic; the decision is not routed", "command_id", id, "cart_id", cartID)
		return
	}
	v := schemas.AppendResult(make([]byte, 0, 512), &results[i])
	key := []byte(cartID)
	w.produce(&kgo.Record{
		Topic: env.all.CartCommands, Partition: topics.Partition(key, env.layout.peerPartitions), Key: key, Value: v,
		Headers: append([]kgo.RecordHeader{
			{Key: schemas.HeaderKind, Value: []byte(schemas.HeaderKindLineResult)},
			{Key: HeaderCommandID, Value: []byte(id)},
		}, traceHeaders(src)...),
	}, w.promise)
}

// forget tombstones decided commands and terminal reservations past the
// dedupe window.
func (s *skuPartition) forget(key string, val []byte, now schemas.Millis) (Change, bool) {
	kind := schemas.KeyKind(key)
	if kind != schemas.CommandPrefix && kind != schemas.ReservationPrefix {
		return Change{}, false
	}
	// The sweep reads committed state (the store, once it has everything):
	// unless the open transaction changed the key, val is the entity. Read what
	// the decision needs from it without decoding, and decode what the
	// shortcuts decline. (A command entry whose body is corrupt but whose tail
	// reads is forgotten like any other past the window, without the warning
	// a decode would log.)
	if _, changed := s.w.pending[key]; !changed {
		switch kind {
		case schemas.CommandPrefix:
			// A decided command: its id is the key's rest, its decision time
			// the value's updated_at (as the sweep measured it).
			if at, ok := schemas.UpdatedAt(val); ok {
				t, ok := s.core.ForgetDecided(key[len(schemas.CommandPrefix):], at, now)
				return Change{Change: t}, ok
			}
		case schemas.ReservationPrefix:
			// An active hold is never forgotten (with a dedupe window shorter
			// than the holds' age, every pass meets the same ones).
			if _, _, status, _, ok := schemas.ReservationTimer(val); ok && status == schemas.StatusActive {
				return Change{}, false
			}
		}
	}
	e, err := schemas.DecodeChange(key, val)
	if err != nil {
		s.w.log.Warn("sweep: undecodable state entry", "key", key, "err", err)
		return Change{}, false
	}
	var t sku.Change
	var ok bool
	if c := e.Command; c != nil {
		t, ok = s.core.ForgetCommand(s, c.CommandID, now)
	} else if r := e.Reservation; r != nil && r.Reservation.Status != schemas.StatusActive {
		t, ok = s.core.ForgetReservation(s, r.Reservation.SKU, r.Reservation.ReservationID, now)
	}
	return Change{Change: t}, ok
}

// restored schedules the expiry of every active reservation in the store and
// counts the gauges of the restored state.
func (s *skuPartition) restored() error {
	w := s.w
	s.role.replies.warm(w.ctx, w.env)
	s.timers = timers{}
	s.active = 0
	clear(s.oversold)
	err := w.store.Scan(schemas.StockPrefix, func(key string, val []byte) error {
		c, err := DecodeChange(key, val)
		if err == nil && c.Stock.Available < 0 {
			s.oversold[c.Stock.SKU] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = w.store.Scan(schemas.ReservationPrefix, func(key string, val []byte) error {
		// The expiry schedule needs four fields: read them without decoding
		// the entity (a promoted standby or a restart reads every active
		// hold here), and decode what the shortcut declines.
		if sku, id, status, exp, ok := schemas.ReservationTimer(val); ok {
			if status == schemas.StatusActive {
				s.timers.add(exp, sku, id)
				s.active++
			}
			return nil
		}
		c, err := DecodeChange(key, val)
		if err != nil {
			w.log.Warn("undecodable reservation in state", "key", key, "err", err)
			return nil
		}
		if r := c.Reservation.Reservation; r.Status == schemas.StatusActive {
			s.timers.add(r.ExpiresAt, r.SKU, r.ReservationID)
			s.active++
		}
		return nil
	})
	s.publish()
	return err
}

func (s *skuPartition) commit() {
	s.timers.commit()
	s.active += s.activeDelta
	for sku, over := range s.overPending {
		if over {
			s.oversold[sku] = true
		} else {
			delete(s.oversold, sku)
		}
	}
	s.publish()
	s.reset()
}

func (s *skuPartition) abort() {
	s.timers.abort()
	s.reset()
}

func (s *skuPartition) reset() {
	s.expired = 0
	s.activeDelta = 0
	s.overPending = emptied(s.overPending, &s.overRoom)
}

func (s *skuPartition) publish() {
	m, l := s.w.env.metrics, partLabel(s.w.p)
	m.active.WithLabelValues(l).Set(float64(s.active))
	m.oversold.WithLabelValues(l).Set(float64(len(s.oversold)))
}
