package sku

import (
	"sort"

	"github.com/reservations/reservations/schemas"
)

// Entities is an in-memory set of entities keyed by changelog key: the pending
// writes of a transaction, or a whole partition in tests and tools.
type Entities map[string]Change

// Apply records changes, later ones winning.
func (e Entities) Apply(changes []Change) {
	for _, c := range changes {
		e[c.Key] = c
	}
}

// Stock implements State.
func (e Entities) Stock(sku string) (schemas.StockEntity, bool) {
	if c, ok := e[schemas.StockKey(sku)]; ok && c.Stock != nil {
		return *c.Stock, true
	}
	return schemas.StockEntity{}, false
}

// Reservation implements State.
func (e Entities) Reservation(sku, id string) (schemas.ReservationEntity, bool) {
	if c, ok := e[schemas.ReservationKey(sku, id)]; ok && c.Reservation != nil {
		return *c.Reservation, true
	}
	return schemas.ReservationEntity{}, false
}

// Decision implements State.
func (e Entities) Decision(id string) (schemas.CommandEntity, bool) {
	if c, ok := e[schemas.CommandKey(id)]; ok && c.Command != nil {
		return *c.Command, true
	}
	return schemas.CommandEntity{}, false
}

// DueReservations implements State by scanning (tests and tools). Prepared
// holds never expire: they are not listed.
func (e Entities) DueReservations(sku string, now schemas.Millis) []string {
	var due []schemas.Reservation
	for _, c := range e {
		if r := c.Reservation; r != nil && r.Reservation.SKU == sku && r.Reservation.Status == schemas.StatusActive &&
			!r.Reservation.Prepared && r.Reservation.ExpiresAt <= now {
			due = append(due, r.Reservation)
		}
	}
	sort.Slice(due, func(i, j int) bool {
		if due[i].ExpiresAt != due[j].ExpiresAt {
			return due[i].ExpiresAt < due[j].ExpiresAt
		}
		return due[i].ReservationID < due[j].ReservationID
	})
	ids := make([]string, len(due))
	for i, r := range due {
		ids[i] = r.ReservationID
	}
	return ids
}

// EncodeChange returns the changelog value of c (nil for a tombstone). The
// changelog is read back with schemas.DecodeChange.
func EncodeChange(c *Change) ([]byte, error) {
	switch {
	case c.Stock != nil:
		return schemas.AppendStockEntity(make([]byte, 0, 256), c.Stock), nil
	case c.Reservation != nil:
		return schemas.AppendReservationEntity(make([]byte, 0, 320), c.Reservation), nil
	case c.Command != nil:
		return schemas.AppendCommandEntity(make([]byte, 0, 640), c.Command), nil
	}
	return nil, nil
}
