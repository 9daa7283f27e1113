package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Change is one changelog record, decoded: the entity of Key (exactly one of
// the entity fields is set), or a tombstone of Key (none is set). The SKU
// processor's changelog holds stock, reservation and command entities, the
// cart coordinator's (cart-changelog) cart entities and decided cart commands.
type Change struct {
	Key         string
	Stock       *StockEntity
	Reservation *ReservationEntity
	Command     *CommandEntity
	Cart        *CartEntity
	CartCommand *CartDecided
}

// Tombstone reports whether c deletes its key.
func (c *Change) Tombstone() bool {
	return c.Stock == nil && c.Reservation == nil && c.Command == nil && c.Cart == nil && c.CartCommand == nil
}

// UpdatedAt returns the updated_at of c's entity (0 for a tombstone).
func (c *Change) UpdatedAt() Millis {
	switch {
	case c.Stock != nil:
		return c.Stock.UpdatedAt
	case c.Reservation != nil:
		return c.Reservation.UpdatedAt
	case c.Command != nil:
		return c.Command.UpdatedAt
	case c.Cart != nil:
		return c.Cart.UpdatedAt
	case c.CartCommand != nil:
		return c.CartCommand.UpdatedAt
	}
	return 0
}

// Errors of DecodeChange, wrapped with the key (errors.Is finds them). A value
// that is not JSON, or JSON of the wrong shape, wraps encoding/json's error
// (or the *Millis error of a bad time) instead.
var (
	// ErrUnknownKeyKind: the key has none of the changelog prefixes.
	ErrUnknownKeyKind = errors.New("unknown key kind")
	// ErrNotEntity: the value is JSON null (a tombstone is a nil value, not a
	// JSON null).
	ErrNotEntity = errors.New("JSON null is not an entity")
	// ErrKeyMismatch: the entity's own identity (its sku and reservation_id,
	// command_id or cart_id) names another key.
	ErrKeyMismatch = errors.New("the value is the entity of another key")
)

// DecodeChange reads changelog record (key, value); a nil value is a
// tombstone of key, whatever its kind. A value that cannot be what the
// processor wrote is an error that names the key and wraps the cause: a key
// of an unknown kind (ErrUnknownKeyKind), invalid JSON or anything but an
// object (encoding/json's error), JSON null (ErrNotEntity), an entity whose own
// identity disagrees with its key (ErrKeyMismatch). With an error the change
// returned is the tombstone of key: no entity.
//
// Consumers that only know some kinds (the sink: stock/ and reservation/)
// check KeyKind first and skip the others.
func DecodeChange(key string, value []byte) (Change, error) {
	c := Change{Key: key}
	if value == nil {
		return c, nil
	}
	var err error
	var id string // the key the entity says it has
	switch KeyKind(key) {
	case StockPrefix:
		if err = json.Unmarshal(value, &c.Stock); err == nil && c.Stock != nil {
			id = StockKey(c.Stock.SKU)
		}
	case ReservationPrefix:
		if err = json.Unmarshal(value, &c.Reservation); err == nil && c.Reservation != nil {
			r := &c.Reservation.Reservation
			id = ReservationKey(r.SKU, r.ReservationID)
		}
	case CommandPrefix:
		if err = json.Unmarshal(value, &c.Command); err == nil && c.Command != nil {
			id = CommandKey(c.Command.CommandID)
		}
	case CartPrefix:
		if err = json.Unmarshal(value, &c.Cart); err == nil && c.Cart != nil {
			id = CartKey(c.Cart.CartID)
		}
	case CartCommandPrefix:
		if err = json.Unmarshal(value, &c.CartCommand); err == nil && c.CartCommand != nil {
			id = CartCommandKey(c.CartCommand.CommandID)
		}
	default:
		err = ErrUnknownKeyKind
	}
	switch {
	case err != nil:
	case c.Tombstone():
		err = ErrNotEntity
	case id != key:
		err = fmt.Errorf("%w: %q", ErrKeyMismatch, id)
	default:
		return c, nil
	}
	return Change{Key: key}, fmt.Errorf("decode changelog key %q: %w", key, err)
}

// EncodeChange returns the changelog value of c (nil for a tombstone), as the
// appenders write it. More than one entity is an error.
func EncodeChange(c *Change) ([]byte, error) {
	n := 0
	for _, set := range [...]bool{c.Stock != nil, c.Reservation != nil, c.Command != nil, c.Cart != nil, c.CartCommand != nil} {
		if set {
			n++
		}
	}
	if n > 1 {
		return nil, fmt.Errorf("encode changelog key %q: %d entities in one change", c.Key, n)
	}
	switch {
	case c.Stock != nil:
		return AppendStockEntity(make([]byte, 0, 256), c.Stock), nil
	case c.Reservation != nil:
		return AppendReservationEntity(make([]byte, 0, 320), c.Reservation), nil
	case c.Command != nil:
		return AppendCommandEntity(make([]byte, 0, 640), c.Command), nil
	case c.Cart != nil:
		return AppendCartEntity(make([]byte, 0, 1024), c.Cart), nil
	case c.CartCommand != nil:
		return AppendCartDecided(make([]byte, 0, 1024), c.CartCommand), nil
	}
	return nil, nil
}
