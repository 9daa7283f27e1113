package cart

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/schemas"
)

// This file is a simulator of the cart saga end to end, for the scenario and
// property tests: the coordinator (Core over Entities, every change taken
// through the changelog codec) and the SKU processor's pure core (sku.Core over
// one partition's sku.Entities), which decides the per-SKU commands and whose
// decisions of reply_to=cart commands are routed back to the coordinator. Both
// sides see the records the processor would produce: per-SKU commands go
// through schemas.AppendCommand and schemas.DecodeCommand, line results
// through schemas.AppendResult and DecodeResult, SKU changes through the
// SKU changelog codec. Nothing moves by itself: the test chooses which per-SKU
// command or line result is delivered next, and when the clock moves.

// simRes is one reservation of the SKU processor's state, with the reasons
// ("cart <command_id>") of the commands that created and ended it.
type simRes struct {
	schemas.Reservation
	createdBy string // reason of the reserve that created it
	endedBy   string // reason of the command that released or committed it
}

// skuSim is the SKU processor as the simulator runs it: one partition of the
// real pure core, its timers fired by the clock.
type skuSim struct {
	t       testing.TB
	core    sku.Core
	state   sku.Entities
	offset  int64             // next offset of the SKU commands partition
	sets    int               // stock.set commands the test sent
	created map[string]string // reservation key -> reason of the reserve that created it
	ended   map[string]string // reservation key -> reason of the release or commit that ended it
	invalid []string          // per-SKU commands that broke the contract (the coordinator's fault)
}

func newSKUSim(t testing.TB) *skuSim {
	return &skuSim{t: t, core: sku.Core{Rules: sku.DefaultRules()}, state: sku.Entities{},
		created: map[string]string{}, ended: map[string]string{}}
}

// put applies the changes of a decision through the SKU changelog codec, as a
// restore would read them, and notes which command created or ended each
// reservation.
func (m *skuSim) put(changes []sku.Change, reason string) {
	for i := range changes {
		c := &changes[i]
		b, err := sku.EncodeChange(c)
		require.NoError(m.t, err)
		back, err := schemas.DecodeChange(c.Key, b)
		require.NoError(m.t, err)
		d := sku.Change{Key: back.Key, Stock: back.Stock, Reservation: back.Reservation, Command: back.Command}
		m.state.Apply([]sku.Change{d})
		if r := d.Reservation; r != nil {
			switch r.Event {
			case schemas.EventReserved:
				m.created[d.Key] = reason
			case schemas.EventReleased, schemas.EventCommitted:
				m.ended[d.Key] = reason
			}
		}
	}
}

// setStock sets on_hand of sku with a stock.set command, as an operator would.
func (m *skuSim) setStock(name string, onHand int64, now schemas.Millis) {
	m.sets++
	cmd := schemas.Command{CommandID: fmt.Sprintf("sim-stock-%d", m.sets), Type: schemas.TypeStockSet, SKU: name, OnHand: &onHand}
	res := m.decide(cmd, now)
	require.Equal(m.t, schemas.OutcomeAccepted, res.Outcome, "stock.set %s=%d: %+v", name, onHand, res)
}

// decide decides a per-SKU command as the SKU processor's partition does: the
// record decoded from its wire encoding, the timers due now fired first, then
// the core's decision. It returns the result the processor routes to the cart
// (the first result carrying the command id).
func (m *skuSim) decide(cmd schemas.Command, now schemas.Millis) schemas.Result {
	v := schemas.AppendCommand(nil, &cmd)
	dec, err := schemas.DecodeCommand(v, 0)
	var fe *schemas.FieldError
	if err != nil && !errors.As(err, &fe) {
		m.t.Fatalf("per-SKU command %s is undecodable: %v (%s)", cmd.CommandID, err, v)
	}
	m.expireDue(now)
	in := sku.Input{Key: cmd.SKU, Command: dec, FieldErr: fe, Offset: m.offset}
	m.offset++
	o := m.core.Apply(m.state, in, now)
	m.put(o.Changes, dec.Reason)
	i := slices.IndexFunc(o.Results, func(r schemas.Result) bool { return r.CommandID == cmd.CommandID })
	require.GreaterOrEqual(m.t, i, 0, "no result for %s: %+v", cmd.CommandID, o.Results)
	res := o.Results[i]
	if res.Reason == schemas.ReasonInvalidCommand || res.Reason == schemas.ReasonSKUMismatch {
		m.invalid = append(m.invalid, fmt.Sprintf("%s %s: %s %s", cmd.Type, cmd.CommandID, res.Reason, res.Message))
	}
	return res
}

// skus lists the SKUs the processor knows, sorted.
func (m *skuSim) skus() []string {
	var out []string
	for _, c := range m.state {
		if c.Stock != nil {
			out = append(out, c.Stock.SKU)
		}
	}
	slices.Sort(out)
	return out
}

// stock returns the stock entity of name.
func (m *skuSim) stock(name string) (schemas.StockEntity, bool) { return m.state.Stock(name) }

// res returns reservation (sku, id), or nil.
func (m *skuSim) res(name, id string) *simRes {
	e, ok := m.state.Reservation(name, id)
	if !ok {
		return nil
	}
	k := schemas.ReservationKey(name, id)
	return &simRes{Reservation: e.Reservation, createdBy: m.created[k], endedBy: m.ended[k]}
}

// reservations lists every reservation, by SKU then id.
func (m *skuSim) reservations() []*simRes {
	var out []*simRes
	for _, c := range m.state {
		if r := c.Reservation; r != nil {
			out = append(out, m.res(r.Reservation.SKU, r.Reservation.ReservationID))
		}
	}
	slices.SortFunc(out, func(a, b *simRes) int {
		return cmp.Or(strings.Compare(a.SKU, b.SKU), strings.Compare(a.ReservationID, b.ReservationID))
	})
	return out
}

// expireDue fires the expiry timers due at now, as the SKU processor's
// partition does before deciding: every active, unprepared hold whose
// expires_at is <= now expires (sku.Core.Expire), earliest first. It returns
// the expired reservations.
func (m *skuSim) expireDue(now schemas.Millis) []schemas.Reservation {
	type timer struct {
		at      schemas.Millis
		sku, id string
	}
	var due []timer
	for _, name := range m.skus() {
		for _, id := range m.state.DueReservations(name, now) {
			r, _ := m.state.Reservation(name, id)
			due = append(due, timer{r.Reservation.ExpiresAt, name, id})
		}
	}
	slices.SortFunc(due, func(a, b timer) int {
		return cmp.Or(cmp.Compare(a.at, b.at), strings.Compare(a.sku, b.sku), strings.Compare(a.id, b.id))
	})
	var out []schemas.Reservation
	for _, d := range due {
		o := m.core.Expire(m.state, 0, d.sku, d.id, now)
		m.put(o.Changes, "")
		for _, r := range o.Results {
			if r.Type == schemas.TypeExpired && r.Reservation != nil {
				out = append(out, *r.Reservation)
			}
		}
	}
	return out
}

// reply is a per-SKU decision routed to the cart-commands topic.
type reply struct {
	key string
	res schemas.Result
}

type sim struct {
	t       testing.TB
	core    Core
	state   Entities
	sku     *skuSim
	now     schemas.Millis
	offset  int64             // next offset of the cart-commands partition
	cmds    []schemas.Command // per-SKU commands in flight
	replies []reply           // line results in flight
	last    map[string]reply  // last line result routed per SKU (redeliver)
	results []schemas.CartResult
	// onResult, if set, sees every cart result when it is emitted.
	onResult func(*schemas.CartResult)
	// maxCartBytes is the size of the largest cart entity written, of key
	// maxCartKey.
	maxCartBytes int
	maxCartKey   string
}

func newSim(t testing.TB, rules Rules, now schemas.Millis) *sim {
	return &sim{t: t, core: Core{Rules: rules}, state: Entities{}, sku: newSKUSim(t), now: now, last: map[string]reply{}}
}

// apply runs one record of the cart-commands topic through the coordinator,
// taking its changes through the changelog codec as a restore would.
func (s *sim) apply(in Input) Outputs {
	in.Offset = s.offset
	s.offset++
	o := s.core.Apply(s.state, in, s.now)
	for _, c := range o.Changes {
		b, err := EncodeChange(&c)
		require.NoError(s.t, err)
		if c.Cart != nil && len(b) > s.maxCartBytes {
			s.maxCartBytes, s.maxCartKey = len(b), c.Key
		}
		s.state.Apply([]Change{decodeChange(s.t, c.Key, b)})
	}
	for i := range o.Results {
		s.results = append(s.results, o.Results[i])
		if s.onResult != nil {
			s.onResult(&o.Results[i])
		}
	}
	s.cmds = append(s.cmds, o.Commands...)
	return o
}

func (s *sim) send(key string, cmd schemas.CartCommand, fe *schemas.FieldError) Outputs {
	return s.apply(Input{Key: key, Command: &cmd, FieldErr: fe})
}

// deliver decides in-flight per-SKU command i and routes its decision.
func (s *sim) deliver(i int) (schemas.Command, schemas.Result) {
	cmd := s.cmds[i]
	s.cmds = slices.Delete(s.cmds, i, i+1)
	res := s.sku.decide(cmd, s.now)
	if cmd.ReplyTo == schemas.ReplyToCart && cmd.CartID != "" {
		// Routed as the processor routes it: its wire encoding, keyed by cart.
		routed, err := schemas.DecodeResult(schemas.AppendResult(nil, &res))
		require.NoError(s.t, err)
		rp := reply{key: cmd.CartID, res: routed}
		s.replies = append(s.replies, rp)
		s.last[cmd.SKU] = rp
	}
	return cmd, res
}

// reply hands in-flight line result i to the coordinator.
func (s *sim) reply(i int) (reply, Outputs) {
	rp := s.replies[i]
	s.replies = slices.Delete(s.replies, i, i+1)
	res := rp.res
	return rp, s.apply(Input{Key: rp.key, LineResult: &res})
}

func (s *sim) advance(ms schemas.Millis) []schemas.Reservation {
	s.now += ms
	return s.sku.expireDue(s.now)
}

// violations checks the invariants that hold at any moment: per SKU,
// reserved == sum of active holds and available >= 0; no per-SKU command broke
// the contract; every active reservation of a cart is a hold of the cart (or a
// line its running saga holds); a hold of an idle cart is active or expired,
// never released or consumed; nothing is prepared outside a commit saga; a
// cart keeps at most MaxHolds holds (with the lines of its cart.reserve saga),
// its queue at most MaxQueue commands of MaxQueuedLines lines; and no cart
// entity written so far encodes longer than the largest the rules admit.
func (s *sim) violations() []string {
	var out []string
	if bound := cartBound(s.t, s.core.Rules); s.maxCartBytes > bound {
		out = append(out, fmt.Sprintf("VIOLATION %s encoded to %d bytes, more than the %d of the largest cart the rules admit",
			s.maxCartKey, s.maxCartBytes, bound))
	}
	for _, k := range slices.Sorted(maps.Keys(s.state)) {
		e := s.state[k].Cart
		if e == nil {
			continue
		}
		held := len(e.Holds)
		if e.Saga != nil && e.Saga.Command.Type == schemas.TypeCartReserve {
			held += len(e.Saga.Lines)
		}
		if held > s.core.maxHolds() {
			out = append(out, fmt.Sprintf("VIOLATION %s keeps %d holds and reserve lines, over the limit of %d", k, held, s.core.maxHolds()))
		}
		if len(e.Queue) > s.core.maxQueue() || queuedLines(e) > s.core.maxQueuedLines() {
			out = append(out, fmt.Sprintf("VIOLATION %s queues %d commands of %d lines, over the limits of %d and %d",
				k, len(e.Queue), queuedLines(e), s.core.maxQueue(), s.core.maxQueuedLines()))
		}
	}
	sum := map[string]int64{}
	all := s.sku.reservations()
	for _, r := range all {
		if r.Status == schemas.StatusActive {
			sum[r.SKU] += r.Quantity
		}
	}
	for _, name := range s.sku.skus() {
		st, _ := s.sku.stock(name)
		if st.Reserved != sum[name] || st.Available != st.OnHand-st.Reserved || st.Available < 0 || st.OnHand < 0 {
			out = append(out, fmt.Sprintf("VIOLATION %s: on_hand=%d reserved=%d available=%d sum(active)=%d",
				name, st.OnHand, st.Reserved, st.Available, sum[name]))
		}
	}
	for _, inv := range s.sku.invalid {
		out = append(out, "VIOLATION invalid per-SKU command "+inv)
	}
	for _, r := range all {
		if r.CartID == "" {
			continue
		}
		ent, ok := s.state.Cart(r.CartID)
		if r.Status == schemas.StatusActive && !(ok && owns(&ent, r.SKU, r.ReservationID)) {
			out = append(out, fmt.Sprintf("VIOLATION %s/%s of %s is active but no hold of the cart", r.SKU, r.ReservationID, r.CartID))
		}
		if r.Prepared && !(ok && ent.Saga != nil && ent.Saga.Command.Type == schemas.TypeCartCommit) {
			out = append(out, fmt.Sprintf("VIOLATION %s/%s is prepared outside a cart.commit", r.SKU, r.ReservationID))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.state)) {
		c := s.state[k]
		if c.Cart == nil || c.Cart.Saga != nil {
			continue
		}
		for _, h := range c.Cart.Holds {
			r := s.sku.res(h.SKU, h.ReservationID)
			if r == nil || (r.Status != schemas.StatusActive && r.Status != schemas.StatusExpired) {
				st := "unknown"
				if r != nil {
					st = r.Status
				}
				out = append(out, fmt.Sprintf("VIOLATION hold %s/%s of idle %s is %s", h.SKU, h.ReservationID, c.Cart.CartID, st))
			}
		}
	}
	return out
}

// owns reports whether sku/id is a hold of the cart or a held line of its saga.
func owns(e *Entity, sku, id string) bool {
	for _, h := range e.Holds {
		if h.SKU == sku && h.ReservationID == id {
			return true
		}
	}
	if e.Saga != nil {
		for _, l := range e.Saga.Lines {
			if l.SKU == sku && l.ReservationID == id && (l.Held || l.Pending) {
				return true
			}
		}
	}
	return false
}
