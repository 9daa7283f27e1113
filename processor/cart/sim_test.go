package cart

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/schemas"
)

// This file is a simulator of the cart saga end to end, for the scenario and
// property tests: the coordinator (Core over Entities, every change taken
// through the changelog codec) and a tiny in-memory model of the SKU
// processor that decides per-SKU commands per the contract and routes the
// decisions of reply_to=cart commands back to the coordinator. Nothing moves
// by itself: the test chooses which per-SKU command or line result is
// delivered next, and when the clock moves.

// simRes is one reservation of the SKU model.
type simRes struct {
	schemas.Reservation
	createdBy string // reason of the reserve that created it
	endedBy   string // reason of the command that released or committed it
}

type simStock struct{ onHand, reserved int64 }

// skuModel decides per-SKU commands like the SKU processor (contract v1 plus
// the prepare/unprepare extension), without partitions or a changelog.
type skuModel struct {
	stock   map[string]*simStock
	res     map[string]*simRes // key sku + "\x00" + reservation_id
	decided map[string]schemas.Result
	invalid []string // per-SKU commands that broke the contract (the coordinator's fault)
}

func newSKUModel() *skuModel {
	return &skuModel{stock: map[string]*simStock{}, res: map[string]*simRes{}, decided: map[string]schemas.Result{}}
}

// skuDedupeWindow is the SKU processor's dedupe window (the contract's default).
const skuDedupeWindow = schemas.Millis(24 * 60 * 60 * 1000)

func resKey(sku, id string) string { return sku + "\x00" + id }

// expireDue expires the active, unprepared holds due at now, as the SKU
// processor's timers (and its lazy expiry at decision time) do.
func (m *skuModel) expireDue(now schemas.Millis) []*simRes {
	var due []*simRes
	for _, r := range m.res {
		if r.Status == schemas.StatusActive && !r.Prepared && r.ExpiresAt <= now {
			due = append(due, r)
		}
	}
	slices.SortFunc(due, func(a, b *simRes) int {
		if a.ExpiresAt != b.ExpiresAt {
			return int(a.ExpiresAt - b.ExpiresAt)
		}
		return strings.Compare(resKey(a.SKU, a.ReservationID), resKey(b.SKU, b.ReservationID))
	})
	for _, r := range due {
		r.Status = schemas.StatusExpired
		m.stock[r.SKU].reserved -= r.Quantity
	}
	return due
}

func (m *skuModel) decide(cmd schemas.Command, now schemas.Millis) schemas.Result {
	if r, ok := m.decided[cmd.CommandID]; ok && now-r.DecidedAt < skuDedupeWindow {
		r.Duplicate = true
		return r
	}
	m.expireDue(now)
	out := schemas.Result{CommandID: cmd.CommandID, Type: cmd.Type, SKU: cmd.SKU, ReservationID: cmd.ReservationID, DecidedAt: now}
	st := m.stock[cmd.SKU]
	var res *simRes
	reject := func(reason, msg string) {
		out.Outcome, out.Reason, out.Message = schemas.OutcomeRejected, reason, msg
	}
	switch fe := cmd.Validate(); {
	case fe != nil:
		m.invalid = append(m.invalid, fmt.Sprintf("%s %s: %v", cmd.Type, cmd.CommandID, fe))
		reject(schemas.ReasonInvalidCommand, fe.Error())
	case st == nil:
		reject(schemas.ReasonUnknownSKU, "unknown sku "+cmd.SKU)
	case cmd.Type == schemas.TypeReserve:
		if old, ok := m.res[resKey(cmd.SKU, cmd.ReservationID)]; ok {
			res = old
			reject(schemas.ReasonReservationExists, "reservation "+cmd.ReservationID+" exists")
			break
		}
		q := *cmd.Quantity
		if avail := st.onHand - st.reserved; avail <= 0 || q > avail {
			reject(schemas.ReasonInsufficientStock, fmt.Sprintf("quantity %d exceeds available %d", q, avail))
			break
		}
		res = &simRes{Reservation: schemas.Reservation{ReservationID: cmd.ReservationID, SKU: cmd.SKU, Quantity: q,
			Status: schemas.StatusActive, ExpiresAt: now + schemas.Millis(cmd.TTL()*1000), CartID: cmd.CartID}, createdBy: cmd.Reason}
		m.res[resKey(cmd.SKU, cmd.ReservationID)] = res
		st.reserved += q
		out.Outcome = schemas.OutcomeAccepted
	default:
		res = m.res[resKey(cmd.SKU, cmd.ReservationID)]
		switch {
		case res == nil:
			reject(schemas.ReasonUnknownReservation, "no reservation "+cmd.ReservationID+" for sku "+cmd.SKU)
		case res.Status != schemas.StatusActive:
			reject(schemas.ReasonReservationNotActive, "reservation is "+res.Status)
		case res.Prepared && (cmd.Type == schemas.TypeRelease || cmd.Type == schemas.TypePrepare):
			reject(schemas.ReasonReservationPrepared, "reservation is prepared")
		default:
			out.Outcome = schemas.OutcomeAccepted
			switch cmd.Type {
			case schemas.TypeRelease:
				res.Status, res.endedBy = schemas.StatusReleased, cmd.Reason
				st.reserved -= res.Quantity
			case schemas.TypePrepare:
				res.Prepared, res.OrderID = true, cmd.OrderID
			case schemas.TypeUnprepare:
				res.Prepared = false
			case schemas.TypeCommit:
				res.Status, res.Prepared, res.OrderID, res.endedBy = schemas.StatusConsumed, false, cmd.OrderID, cmd.Reason
				st.reserved -= res.Quantity
				st.onHand -= res.Quantity
			default:
				panic("sku model: command type " + cmd.Type)
			}
		}
	}
	if st != nil {
		out.Stock = &schemas.StockView{OnHand: st.onHand, Reserved: st.reserved, Available: st.onHand - st.reserved}
	}
	if res != nil {
		cp := res.Reservation
		out.Reservation = &cp
	}
	m.decided[cmd.CommandID] = out
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
	sku     *skuModel
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
	return &sim{t: t, core: Core{Rules: rules}, state: Entities{}, sku: newSKUModel(), now: now, last: map[string]reply{}}
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
	if cmd.ReplyTo == schemas.ReplyToCart {
		rp := reply{key: cmd.CartID, res: res}
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

func (s *sim) advance(ms schemas.Millis) []*simRes {
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
	for _, r := range s.sku.res {
		if r.Status == schemas.StatusActive {
			sum[r.SKU] += r.Quantity
		}
	}
	for _, sku := range slices.Sorted(maps.Keys(s.sku.stock)) {
		st := s.sku.stock[sku]
		if st.reserved != sum[sku] || st.onHand-st.reserved < 0 || st.onHand < 0 {
			out = append(out, fmt.Sprintf("VIOLATION %s: on_hand=%d reserved=%d sum(active)=%d", sku, st.onHand, st.reserved, sum[sku]))
		}
	}
	for _, inv := range s.sku.invalid {
		out = append(out, "VIOLATION invalid per-SKU command "+inv)
	}
	for _, k := range slices.Sorted(maps.Keys(s.sku.res)) {
		r := s.sku.res[k]
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
			r := s.sku.res[resKey(h.SKU, h.ReservationID)]
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
