package processor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/processor/cart"
	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/schemas"
)

// The sweep's shortcut (schemas.UpdatedAt) reads updated_at from the end of
// every kind of entity the processor writes (EncodeChange), and declines
// anything else (which is then decoded). schemas.TestUpdatedAtAgreesWithDecode
// holds the appenders to it.
func TestSweepReadsUpdatedAt(t *testing.T) {
	at := schemas.MillisOf(time.Date(2026, 3, 4, 5, 6, 7, 890e6, time.UTC))
	changes := []Change{
		{Change: sku.Change{Key: schemas.StockKey("A"), Stock: &schemas.StockEntity{SKU: "A", UpdatedAt: at}}},
		{Change: sku.Change{Key: schemas.ReservationKey("A", "r"), Reservation: &schemas.ReservationEntity{
			Reservation: schemas.Reservation{ReservationID: "r", SKU: "A", Status: schemas.StatusReleased}, UpdatedAt: at}}},
		{Change: sku.Change{Key: schemas.CommandKey("c"), Command: &schemas.CommandEntity{CommandID: "c", UpdatedAt: at}}},
		cartChange(&cart.Change{Key: cart.CartKey("k"), Cart: &cart.Entity{CartID: "k", UpdatedAt: at}}),
		cartChange(&cart.Change{Key: cart.DecidedKey("c"), Decided: &cart.Decided{CommandID: "c", UpdatedAt: at}}),
	}
	for _, c := range changes {
		v, err := EncodeChange(&c)
		require.NoError(t, err)
		got, ok := schemas.UpdatedAt(v)
		assert.True(t, ok, "%s: %s", c.Key, v)
		assert.Equal(t, at, got, c.Key)
	}
	for _, v := range []string{
		``, `{}`, `{"updated_at":"2026-03-04T05:06:07.890Z" }`, `{"updated_at":"2026-13-04T05:06:07.890Z"}`,
		`{"x":"updated_at","updated_at":"2026-03-04 05:06:07.890Z"}`, `{"updated_at":""}`,
	} {
		_, ok := schemas.UpdatedAt([]byte(v))
		assert.False(t, ok, v)
	}
}
