package sku

// A reference model of wire contract v1 (docs/CONTRACT.md, plus the
// extensions in schemas/README.md), written from the contract and not from
// core.go: plain maps, one obvious step per rule. property_test.go runs random
// command sequences through it and through Core and compares them.
//
// The model reads raw command records itself (encoding/json into a map of raw
// values), so it also checks the decoder's split between records that cannot be
// read at all (DLQ) and records that are rejected with invalid_command.
//
// Where the contract leaves a choice open and the core documents one, the model
// takes the core's documented choice (named "choice:" below) and compares only
// what the contract fixes: message texts, offsets, partitions, decided_at and
// entity versions are not modelled.
//
// The extension commands prepare and unprepare (the first phase of the cart
// coordinator's all-or-nothing commit) are modelled as the brief states them: a
// prepared hold never expires, only commit and unprepare act on it, and it
// still counts in reserved.

import (
	"cmp"
	"encoding/json"
	"maps"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/reservations/reservations/schemas"
)

// refRules are the contract's configurable rules.
type refRules struct {
	window time.Duration // dedupe window (default 24 h)
	maxExt int64         // extensions allowed per reservation (default 1)
}

// refSKU is one SKU's stock. reserved is not stored: it is always the sum of
// the active holds (see refModel.reserved).
type refSKU struct {
	onHand    int64
	threshold *int64 // nil: no low-stock threshold
}

// refHold is one reservation.
type refHold struct {
	sku, id    string
	qty        int64
	status     string
	expiresAt  schemas.Millis
	extensions int64
	cart       string
	store      string
	order      string
	prepared   bool           // prepared for a cart commit: never expires
	changedAt  schemas.Millis // last change; a terminal hold is forgotten one dedupe window later
}

func (h *refHold) view() *schemas.Reservation {
	return &schemas.Reservation{
		ReservationID: h.id, SKU: h.sku, Quantity: h.qty, Status: h.status, ExpiresAt: h.expiresAt,
		Extensions: h.extensions, CartID: h.cart, OrderID: h.order, StoreID: h.store, Prepared: h.prepared,
	}
}

// refResult is what the model expects of one result record.
type refResult struct {
	CommandID     string
	Type          string
	SKU           string
	ReservationID string
	Outcome       string
	Reason        string
	Duplicate     bool
	// Fields are the fields an invalid_command message may name (any one of them).
	Fields []string
	Stock  *schemas.StockView
	Hold   *schemas.Reservation
}

type refDecided struct {
	result refResult
	at     schemas.Millis
}

type refKey struct{ sku, id string }

// refModel is the whole state of one partition.
type refModel struct {
	rules   refRules
	skus    map[string]*refSKU
	holds   map[refKey]*refHold
	decided map[string]refDecided
}

func newRefModel(r refRules) *refModel {
	return &refModel{rules: r, skus: map[string]*refSKU{}, holds: map[refKey]*refHold{}, decided: map[string]refDecided{}}
}

// clone returns a deep copy of m.
func (m *refModel) clone() *refModel {
	c := newRefModel(m.rules)
	for k, s := range m.skus {
		cp := *s
		if s.threshold != nil {
			t := *s.threshold
			cp.threshold = &t
		}
		c.skus[k] = &cp
	}
	for k, h := range m.holds {
		cp := *h
		c.holds[k] = &cp
	}
	maps.Copy(c.decided, m.decided)
	return c
}

// reserved is the sum of the quantities of the SKU's active holds.
func (m *refModel) reserved(sku string) int64 {
	var n int64
	for _, h := range m.holds {
		if h.sku == sku && h.status == schemas.StatusActive {
			n += h.qty
		}
	}
	return n
}

// view returns the SKU's stock figures, or nil for an unknown SKU.
func (m *refModel) view(sku string) *schemas.StockView {
	s, ok := m.skus[sku]
	if !ok {
		return nil
	}
	r := m.reserved(sku)
	return &schemas.StockView{OnHand: s.onHand, Reserved: r, Available: s.onHand - r}
}

// low reports whether the SKU's available is below its threshold.
func (m *refModel) low(sku string) bool {
	s, ok := m.skus[sku]
	if !ok || s.threshold == nil {
		return false
	}
	v := m.view(sku)
	return v.Available < *s.threshold
}

// change runs one stock-changing step of sku and returns the low_stock notice it
// causes: when available drops below the threshold (crossing, not staying below).
func (m *refModel) change(sku string, step func()) []refResult {
	before := m.low(sku)
	step()
	if !before && m.low(sku) {
		return []refResult{{Type: schemas.TypeLowStock, SKU: sku, Outcome: schemas.OutcomeAccepted, Stock: m.view(sku)}}
	}
	return nil
}

// overdue reports whether a hold expires at now: active, not prepared (a
// prepared hold never expires), expires_at <= now.
func (h *refHold) overdue(now schemas.Millis) bool {
	return h.status == schemas.StatusActive && !h.prepared && h.expiresAt <= now
}

// due lists the holds that expire at now, earliest first (ties by SKU, then
// id, so that the caller's timer order is reproducible).
func (m *refModel) due(now schemas.Millis) []refKey {
	var out []*refHold
	for _, h := range m.holds {
		if h.overdue(now) {
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b *refHold) int {
		if c := cmp.Compare(a.expiresAt, b.expiresAt); c != 0 {
			return c
		}
		if c := strings.Compare(a.sku, b.sku); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	keys := make([]refKey, len(out))
	for i, h := range out {
		keys[i] = refKey{h.sku, h.id}
	}
	return keys
}

// expire expires one hold if it is active, not prepared and due: status
// expired, its stock back to available, one expired notice.
func (m *refModel) expire(k refKey, now schemas.Millis) []refResult {
	h, ok := m.holds[k]
	if !ok || !h.overdue(now) {
		return nil
	}
	low := m.change(h.sku, func() {
		h.status = schemas.StatusExpired
		h.changedAt = now
	})
	n := refResult{Type: schemas.TypeExpired, SKU: h.sku, ReservationID: h.id, Outcome: schemas.OutcomeAccepted,
		Stock: m.view(h.sku), Hold: h.view()}
	return append([]refResult{n}, low...)
}

// sweep forgets what the contract lets the processor forget after the dedupe
// window: decided command ids and terminal reservations.
func (m *refModel) sweep(now schemas.Millis) {
	w := schemas.Millis(m.rules.window.Milliseconds())
	for id, d := range m.decided {
		if now-d.at >= w {
			delete(m.decided, id)
		}
	}
	for k, h := range m.holds {
		if h.status != schemas.StatusActive && now-h.changedAt >= w {
			delete(m.holds, k)
		}
	}
}

// refCmd is a command record as the model reads it.
type refCmd struct {
	str map[string]string // string fields present (not null)
	num map[string]int64  // integer fields present (not null)
	bad []string          // fields present with the wrong JSON type
}

var (
	refStringFields = []string{"command_id", "type", "sku", "reason", "issued_at", "reservation_id", "cart_id", "store_id", "order_id",
		"reply_to"}
	refIntFields   = []string{"on_hand", "expected_on_hand", "low_stock_threshold", "delta", "quantity", "ttl_seconds"}
	refSKUPattern  = regexp.MustCompile(`^[A-Za-z0-9._:/-]{1,128}$`)
	refJSONInteger = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)
)

// refParse reads a command record. ok is false for a record that cannot be read
// as a command at all (oversized, not a JSON object, no usable command_id):
// those go to the DLQ and are never decided.
func refParse(raw []byte, maxBytes int) (c refCmd, ok bool) {
	if maxBytes > 0 && len(raw) > maxBytes {
		return c, false
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return c, false
	}
	c.str, c.num = map[string]string{}, map[string]int64{}
	for _, f := range refStringFields {
		v, has := obj[f]
		if !has || string(v) == "null" { // null counts as absent
			continue
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			c.bad = append(c.bad, f)
			continue
		}
		c.str[f] = s
	}
	for _, f := range refIntFields {
		v, has := obj[f]
		if !has || string(v) == "null" {
			continue
		}
		n, err := strconv.ParseInt(string(v), 10, 64)
		if !refJSONInteger.Match(v) || err != nil { // 1.0, 1e2, "1", true, 2^63: not an int64 integer literal
			c.bad = append(c.bad, f)
			continue
		}
		c.num[f] = n
	}
	id := c.str["command_id"]
	if slices.Contains(c.bad, "command_id") || id == "" || utf8.RuneCountInString(id) > 128 {
		return c, false
	}
	return c, true
}

func (c *refCmd) int(f string) (int64, bool) { v, ok := c.num[f]; return v, ok }

// invalid lists every field of c that breaks the contract's value rules (empty:
// the command is valid).
func (c *refCmd) invalid() []string {
	bad := slices.Clone(c.bad)
	add := func(f string, broken bool) {
		if broken && !slices.Contains(bad, f) {
			bad = append(bad, f)
		}
	}
	runes := func(f string) int { return utf8.RuneCountInString(c.str[f]) }
	has := func(f string) bool { _, ok := c.num[f]; return ok }
	atLeast := func(f string, min int64) bool { v, ok := c.num[f]; return ok && v < min }
	add("sku", !refSKUPattern.MatchString(c.str["sku"]))
	add("reason", runes("reason") > 256)
	// Extension: reply_to is "cart" (which needs a cart_id) or absent, on any
	// type; cart_id is at most 128 characters on any type.
	switch c.str["reply_to"] {
	case "":
	case "cart":
		add("cart_id", c.str["cart_id"] == "")
	default:
		add("reply_to", true)
	}
	add("cart_id", runes("cart_id") > 128)
	ttl := func() {
		v, ok := c.num["ttl_seconds"]
		add("ttl_seconds", ok && (v < 1 || v > 86400))
	}
	resID := func() { add("reservation_id", runes("reservation_id") < 1 || runes("reservation_id") > 128) }
	switch c.str["type"] {
	case schemas.TypeStockSet:
		add("on_hand", !has("on_hand") || atLeast("on_hand", 0))
		add("expected_on_hand", atLeast("expected_on_hand", 0)) // choice: the schema's minimum 0
		add("low_stock_threshold", atLeast("low_stock_threshold", 0))
	case schemas.TypeStockAdjust:
		d, ok := c.num["delta"]
		add("delta", !ok || d == 0)
		add("expected_on_hand", atLeast("expected_on_hand", 0))
	case schemas.TypeReserve:
		resID()
		add("quantity", !has("quantity") || atLeast("quantity", 1))
		ttl()
		add("store_id", runes("store_id") > 128) // extension (d)
	case schemas.TypeAdjust:
		resID()
		add("quantity", !has("quantity") || atLeast("quantity", 1))
	case schemas.TypeRelease:
		resID()
	case schemas.TypeExtend:
		resID()
		ttl()
	case schemas.TypeCommit, schemas.TypePrepare:
		resID()
		add("order_id", runes("order_id") < 1 || runes("order_id") > 128)
	case schemas.TypeUnprepare:
		resID()
	default:
		add("type", true)
	}
	return bad
}

// decide decides one command record (key, raw) at now, as the contract says:
// results in order (notices of holds expired at decision time, the decision,
// then a low_stock notice), and ok false for a record that goes to the DLQ.
func (m *refModel) decide(key string, raw []byte, maxBytes int, now schemas.Millis) (out []refResult, ok bool) {
	c, ok := refParse(raw, maxBytes)
	if !ok {
		return nil, false
	}
	id := c.str["command_id"]
	// Idempotency: a command_id decided within the window is answered with its
	// original result, marked duplicate, and changes nothing.
	if d, seen := m.decided[id]; seen && now-d.at < schemas.Millis(m.rules.window.Milliseconds()) {
		r := d.result
		r.Duplicate = true
		return []refResult{r}, true
	}
	sku := c.str["sku"]
	r := refResult{CommandID: id, Type: c.str["type"], SKU: sku, ReservationID: c.str["reservation_id"]}
	var pre, post []refResult // notices before the decision (lazy expiry) and after it
	reject := func(reason string, h *refHold) {
		r.Outcome, r.Reason = schemas.OutcomeRejected, reason
		if h != nil {
			r.Hold = h.view()
		}
	}
	accept := func(h *refHold) {
		r.Outcome = schemas.OutcomeAccepted
		if h != nil {
			r.Hold = h.view()
		}
	}
	if bad := c.invalid(); len(bad) > 0 {
		reject(schemas.ReasonInvalidCommand, nil)
		r.Fields = bad
	} else if sku != key {
		reject(schemas.ReasonSKUMismatch, nil)
	} else {
		// Lazy expiry at decision time: a hold past expires_at never counts.
		for _, k := range m.due(now) {
			if k.sku == sku {
				pre = append(pre, m.expire(k, now)...)
			}
		}
		post = m.apply(&c, now, &r, reject, accept)
	}
	// The stock figures of a result are those of the record key's SKU after the
	// decision (choice: none when the command names another SKU).
	if sku == key {
		r.Stock = m.view(sku)
	}
	m.decided[id] = refDecided{result: r, at: now}
	// Lazy expiry notices come before the decision; the notices it causes
	// (low_stock, the expiry of an unprepared overdue hold) after it.
	out = append(pre, r)
	return append(out, post...), true
}

// apply decides a valid command whose SKU is the record key and returns the
// notices the decision caused (they follow its result).
func (m *refModel) apply(c *refCmd, now schemas.Millis, r *refResult, reject func(string, *refHold), accept func(*refHold)) []refResult {
	sku, typ := c.str["sku"], c.str["type"]
	s, known := m.skus[sku]
	ttl := func() schemas.Millis {
		if v, ok := c.int("ttl_seconds"); ok {
			return schemas.Millis(v * 1000)
		}
		return 900_000
	}
	switch typ {
	case schemas.TypeStockSet:
		cur := int64(0) // choice: a new SKU compares expected_on_hand with 0
		if known {
			cur = s.onHand
		}
		if e, ok := c.int("expected_on_hand"); ok && e != cur {
			reject(schemas.ReasonStaleExpectedOnHand, nil)
			return nil
		}
		accept(nil)
		return m.change(sku, func() {
			if !known {
				s = &refSKU{}
				m.skus[sku] = s
			}
			s.onHand = c.num["on_hand"] // below reserved is accepted: oversold
			if t, ok := c.int("low_stock_threshold"); ok {
				s.threshold = &t
			}
		})
	case schemas.TypeStockAdjust:
		if !known {
			reject(schemas.ReasonUnknownSKU, nil)
			return nil
		}
		if e, ok := c.int("expected_on_hand"); ok && e != s.onHand {
			reject(schemas.ReasonStaleExpectedOnHand, nil)
			return nil
		}
		next := new(big.Int).Add(big.NewInt(s.onHand), big.NewInt(c.num["delta"]))
		if !next.IsInt64() { // on_hand is an int64: invalid_command naming delta
			reject(schemas.ReasonInvalidCommand, nil)
			r.Fields = []string{"delta"}
			return nil
		}
		if next.Sign() < 0 {
			reject(schemas.ReasonNegativeStock, nil)
			return nil
		}
		accept(nil)
		return m.change(sku, func() { s.onHand = next.Int64() })
	case schemas.TypeReserve:
		if !known {
			reject(schemas.ReasonUnknownSKU, nil)
			return nil
		}
		k := refKey{sku, c.str["reservation_id"]}
		if h, exists := m.holds[k]; exists {
			reject(schemas.ReasonReservationExists, h)
			return nil
		}
		q := c.num["quantity"]
		avail := m.view(sku).Available
		if avail <= 0 || q > avail {
			reject(schemas.ReasonInsufficientStock, nil)
			return nil
		}
		h := &refHold{sku: sku, id: k.id, qty: q, status: schemas.StatusActive, expiresAt: now + ttl(),
			cart: c.str["cart_id"], store: c.str["store_id"], changedAt: now}
		low := m.change(sku, func() { m.holds[k] = h })
		accept(h)
		return low
	}
	h, exists := m.holds[refKey{sku, c.str["reservation_id"]}]
	if !exists {
		reject(schemas.ReasonUnknownReservation, nil)
		return nil
	}
	if h.status != schemas.StatusActive { // terminal states never change again
		reject(schemas.ReasonReservationNotActive, h)
		return nil
	}
	if h.prepared && typ != schemas.TypeCommit && typ != schemas.TypeUnprepare {
		// Prepared for a cart commit: only commit and unprepare act on it.
		reject(schemas.ReasonReservationPrepared, h)
		return nil
	}
	var low []refResult
	switch typ {
	case schemas.TypeAdjust:
		q := c.num["quantity"]
		if inc := q - h.qty; inc > 0 && inc > m.view(sku).Available {
			reject(schemas.ReasonInsufficientStock, h)
			return nil
		}
		low = m.change(sku, func() { h.qty = q })
	case schemas.TypeRelease:
		low = m.change(sku, func() { h.status = schemas.StatusReleased })
	case schemas.TypeExtend:
		if h.extensions >= m.rules.maxExt {
			reject(schemas.ReasonExtensionLimit, h)
			return nil
		}
		h.expiresAt = now + ttl()
		h.extensions++
	case schemas.TypeCommit:
		low = m.change(sku, func() {
			h.status = schemas.StatusConsumed
			h.order = c.str["order_id"]
			// on_hand and reserved both drop by the quantity; choice (core.go,
			// finish): on_hand is clamped at 0 when the SKU was oversold.
			s.onHand = max(0, s.onHand-h.qty)
			h.prepared = false // a commit may carry any order_id: its own wins
		})
	case schemas.TypePrepare:
		h.prepared = true
		h.order = c.str["order_id"]
	case schemas.TypeUnprepare:
		if !h.prepared { // nothing to undo: accepted, no change
			accept(h)
			return nil
		}
		h.prepared = false
		h.order = ""
		h.changedAt = now
		// choice (core.go, unprepare): a hold whose expires_at passed while it
		// was prepared expires right after, in the same decision; the result
		// shows the final (expired) hold and stock, the expired notice follows.
		expired := m.expire(refKey{sku, h.id}, now)
		accept(h)
		return expired
	}
	h.changedAt = now
	accept(h)
	return low
}
