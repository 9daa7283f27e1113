package processor

import (
	"github.com/reservations/reservations/processor/cart"
	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/schemas"
)

// Change is one changelog entity of either role, as the loop keeps it in a
// partition's cache and pending writes: the SKU core's change (embedded), or
// the cart coordinator's (Cart set instead), or a tombstone of Key.
type Change struct {
	sku.Change
	// Cart is set instead of the SKU entities for the cart coordinator's: a
	// cart, a decided cart command, or a tombstone of either.
	Cart *cart.Change
}

// Tombstone reports whether c deletes its key.
func (c *Change) Tombstone() bool {
	if c.Cart != nil {
		return c.Cart.Tombstone()
	}
	return c.Change.Tombstone()
}

// tombstone is the absence of key.
func tombstone(key string) Change { return Change{Change: sku.Change{Key: key}} }

// cartChange wraps a change of the cart core.
func cartChange(c *cart.Change) Change { return Change{Change: sku.Change{Key: c.Key}, Cart: c} }

// Entities is a set of entities keyed by changelog key: the pending writes of
// a transaction, or a whole changelog partition in tests and tools.
type Entities map[string]Change

// Stock returns the stock entity of sku, if any.
func (e Entities) Stock(sku string) (schemas.StockEntity, bool) {
	if c, ok := e[schemas.StockKey(sku)]; ok && c.Stock != nil {
		return *c.Stock, true
	}
	return schemas.StockEntity{}, false
}

// Reservation returns the reservation entity, if any.
func (e Entities) Reservation(sku, id string) (schemas.ReservationEntity, bool) {
	if c, ok := e[schemas.ReservationKey(sku, id)]; ok && c.Reservation != nil {
		return *c.Reservation, true
	}
	return schemas.ReservationEntity{}, false
}

// EncodeChange returns the changelog value of c (nil for a tombstone).
func EncodeChange(c *Change) ([]byte, error) {
	if c.Cart != nil {
		return cart.EncodeChange(c.Cart)
	}
	return sku.EncodeChange(&c.Change)
}

// DecodeChange reads changelog record (key, value) of either role with the
// changelog decoder, schemas.DecodeChange, and wraps what it read in the
// loop's Change; a nil value is a tombstone. A value that cannot be what the
// processor wrote is an error (see schemas.DecodeChange), with the tombstone of
// key.
func DecodeChange(key string, val []byte) (Change, error) {
	d, err := schemas.DecodeChange(key, val)
	if err != nil {
		return tombstone(key), err
	}
	if d.Cart != nil || d.CartCommand != nil {
		return cartChange(&cart.Change{Key: key, Cart: d.Cart, Decided: d.CartCommand}), nil
	}
	return Change{Change: sku.Change{Key: key, Stock: d.Stock, Reservation: d.Reservation, Command: d.Command}}, nil
}
