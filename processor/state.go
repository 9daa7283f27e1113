package processor

import (
	"encoding/json"
	"fmt"

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

// EncodeChange returns the changelog value of c (nil for a tombstone).
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

// DecodeChange reads changelog record (key, value); a nil value is a tombstone.
// Keys of unknown kinds are an error (the caller decides whether to skip them).
func DecodeChange(key string, val []byte) (Change, error) {
	c := Change{Key: key}
	if val == nil {
		return c, nil
	}
	var err error
	switch schemas.KeyKind(key) {
	case schemas.StockPrefix:
		c.Stock = new(schemas.StockEntity)
		err = json.Unmarshal(val, c.Stock)
	case schemas.ReservationPrefix:
		c.Reservation = new(schemas.ReservationEntity)
		err = json.Unmarshal(val, c.Reservation)
	case schemas.CommandPrefix:
		c.Command = new(schemas.CommandEntity)
		err = json.Unmarshal(val, c.Command)
	default:
		return c, fmt.Errorf("decode changelog key %q: unknown key kind", key)
	}
	if err != nil {
		return c, fmt.Errorf("decode changelog key %q: %w", key, err)
	}
	return c, nil
}
