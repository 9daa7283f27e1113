package cart

import (
	"fmt"
	"strings"

	"github.com/reservations/reservations/schemas"
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

// EncodeChange returns the changelog value of c (nil for a tombstone). The
// changelog is read back with schemas.DecodeChange.
func EncodeChange(c *Change) ([]byte, error) {
	switch {
	case c.Cart != nil && c.Decided != nil:
		return nil, fmt.Errorf("encode changelog key %q: both a cart and a decided command", c.Key)
	case c.Cart != nil:
		return schemas.AppendCartEntity(make([]byte, 0, 1024), c.Cart), nil
	case c.Decided != nil:
		return schemas.AppendCartDecided(make([]byte, 0, 1024), c.Decided), nil
	}
	return nil, nil
}
