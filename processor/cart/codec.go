package cart

import (
	"encoding/json"
	"fmt"
	"strings"
)

// KeyKind returns the prefix of a coordinator changelog key (CartPrefix or
// DecidedPrefix), or "" for a key the coordinator never writes.
func KeyKind(key string) string {
	switch {
	case strings.HasPrefix(key, CartPrefix):
		return CartPrefix
	case strings.HasPrefix(key, DecidedPrefix):
		return DecidedPrefix
	}
	return ""
}

// EncodeChange returns the changelog value of c (nil for a tombstone).
func EncodeChange(c *Change) ([]byte, error) {
	switch {
	case c.Cart != nil && c.Decided != nil:
		return nil, fmt.Errorf("encode changelog key %q: both a cart and a decided command", c.Key)
	case c.Cart != nil:
		return AppendEntity(make([]byte, 0, 1024), c.Cart), nil
	case c.Decided != nil:
		return AppendDecided(make([]byte, 0, 1024), c.Decided), nil
	}
	return nil, nil
}

// DecodeChange reads coordinator changelog record (key, value); a nil value is
// a tombstone. A value that cannot be what the coordinator wrote is an error:
// keys of unknown kinds, invalid JSON, anything but an object (JSON null is not
// a tombstone), and an entity whose own identity disagrees with its key.
func DecodeChange(key string, val []byte) (Change, error) {
	c := Change{Key: key}
	if val == nil {
		return c, nil
	}
	var (
		err error
		id  string // the key the entity says it has
	)
	switch KeyKind(key) {
	case CartPrefix:
		var e *Entity
		if err = json.Unmarshal(val, &e); err == nil && e != nil {
			c.Cart, id = e, CartKey(e.CartID)
		}
	case DecidedPrefix:
		var d *Decided
		if err = json.Unmarshal(val, &d); err == nil && d != nil {
			c.Decided, id = d, DecidedKey(d.CommandID)
		}
	default:
		return c, fmt.Errorf("decode changelog key %q: unknown key kind", key)
	}
	switch {
	case err != nil:
		return Change{Key: key}, fmt.Errorf("decode changelog key %q: %w", key, err)
	case c.Tombstone():
		return c, fmt.Errorf("decode changelog key %q: JSON null is not an entity", key)
	case id != key:
		return Change{Key: key}, fmt.Errorf("decode changelog key %q: the value is the entity of %q", key, id)
	}
	return c, nil
}
