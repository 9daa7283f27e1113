package processor_test

import (
	"github.com/reservations/reservations/schemas"
)

// model is a reference implementation of the contract's stock arithmetic with
// plain maps, written independently of the core, for long-TTL workloads (no
// expiry, no low-stock thresholds). It answers outcome and reason per command,
// the extension commands prepare and unprepare included.
type model struct {
	onHand   map[string]int64
	res      map[[2]string]*modelRes // (sku, reservation id)
	decided  map[string]bool
	extended map[[2]string]int64
}

type modelRes struct {
	qty      int64
	status   string
	prepared bool // prepared for a cart commit: only commit and unprepare act on it
}

func newModel() *model {
	return &model{onHand: map[string]int64{}, res: map[[2]string]*modelRes{}, decided: map[string]bool{}, extended: map[[2]string]int64{}}
}

func (m *model) reserved(sku string) int64 {
	var n int64
	for k, r := range m.res {
		if k[0] == sku && r.status == schemas.StatusActive {
			n += r.qty
		}
	}
	return n
}

// apply returns (outcome, reason) for a valid command decided for the first time.
func (m *model) apply(c schemas.Command) (string, string) {
	ok := func() (string, string) { return schemas.OutcomeAccepted, "" }
	no := func(r string) (string, string) { return schemas.OutcomeRejected, r }
	m.decided[c.CommandID] = true
	_, known := m.onHand[c.SKU]
	key := [2]string{c.SKU, c.ReservationID}
	switch c.Type {
	case schemas.TypeStockSet:
		if c.ExpectedOnHand != nil && *c.ExpectedOnHand != m.onHand[c.SKU] {
			return no(schemas.ReasonStaleExpectedOnHand)
		}
		m.onHand[c.SKU] = *c.OnHand
		return ok()
	case schemas.TypeStockAdjust:
		if !known {
			return no(schemas.ReasonUnknownSKU)
		}
		if m.onHand[c.SKU]+*c.Delta < 0 {
			return no(schemas.ReasonNegativeStock)
		}
		m.onHand[c.SKU] += *c.Delta
		return ok()
	case schemas.TypeReserve:
		if !known {
			return no(schemas.ReasonUnknownSKU)
		}
		if m.res[key] != nil {
			return no(schemas.ReasonReservationExists)
		}
		avail := m.onHand[c.SKU] - m.reserved(c.SKU)
		if avail <= 0 || *c.Quantity > avail {
			return no(schemas.ReasonInsufficientStock)
		}
		m.res[key] = &modelRes{qty: *c.Quantity, status: schemas.StatusActive}
		return ok()
	}
	r := m.res[key]
	if r == nil {
		return no(schemas.ReasonUnknownReservation)
	}
	if r.status != schemas.StatusActive {
		return no(schemas.ReasonReservationNotActive)
	}
	if r.prepared && c.Type != schemas.TypeCommit && c.Type != schemas.TypeUnprepare {
		return no(schemas.ReasonReservationPrepared)
	}
	switch c.Type {
	case schemas.TypeAdjust:
		inc := *c.Quantity - r.qty
		if inc > 0 && inc > m.onHand[c.SKU]-m.reserved(c.SKU) {
			return no(schemas.ReasonInsufficientStock)
		}
		r.qty = *c.Quantity
	case schemas.TypeRelease:
		r.status = schemas.StatusReleased
	case schemas.TypeExtend:
		if m.extended[key] >= 1 {
			return no(schemas.ReasonExtensionLimit)
		}
		m.extended[key]++
	case schemas.TypeCommit:
		r.status = schemas.StatusConsumed
		r.prepared = false
		m.onHand[c.SKU] = max(0, m.onHand[c.SKU]-r.qty)
	case schemas.TypePrepare:
		r.prepared = true
	case schemas.TypeUnprepare:
		r.prepared = false // accepted also when not prepared: nothing to undo
	}
	return ok()
}

func (m *model) stock(sku string) schemas.StockView {
	r := m.reserved(sku)
	return schemas.StockView{OnHand: m.onHand[sku], Reserved: r, Available: m.onHand[sku] - r}
}
