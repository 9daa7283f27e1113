package processor_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/processor"
)

// Interactive queries are answered from the local state of the owner; another
// instance names the owner's advertised address.
func TestInteractiveQueries(t *testing.T) {
	h := newHarness(t, 4)
	a := h.start("", func(c *processor.Config) { c.AdvertisedAddr = "a.example:8080" })
	b := h.start("", func(c *processor.Config) { c.AdvertisedAddr = "b.example:8080" })
	h.waitReady(a, b)
	var cmds []string
	for _, sku := range []string{"Q-1", "Q-2", "Q-3", "Q-4", "Q-5", "Q-6"} {
		h.send(stockSet("set-"+sku, sku, 7), reserve("res-"+sku, sku, "h", 2))
		cmds = append(cmds, "set-"+sku, "res-"+sku)
	}
	h.waitDecided(20*time.Second, cmds...)
	ctx := context.Background()
	addr := map[*processor.Processor]string{a.p: "a.example:8080", b.p: "b.example:8080"}
	for _, sku := range []string{"Q-1", "Q-2", "Q-3", "Q-4", "Q-5", "Q-6"} {
		var owner, other *processor.Processor
		require.Eventually(t, func() bool {
			// Committed state reaches the store right after the commit.
			_, errA := a.p.Stock(ctx, sku)
			_, errB := b.p.Stock(ctx, sku)
			switch {
			case errA == nil:
				owner, other = a.p, b.p
			case errB == nil:
				owner, other = b.p, a.p
			default:
				return false
			}
			return true
		}, 10*time.Second, 10*time.Millisecond, "some instance answers for %s", sku)
		st, err := owner.Stock(ctx, sku)
		require.NoError(t, err)
		assert.Equal(t, int64(7), st.OnHand)
		assert.Equal(t, int64(2), st.Reserved)
		res, err := owner.Reservation(ctx, sku, "h")
		require.NoError(t, err)
		assert.Equal(t, int64(2), res.Reservation.Quantity)
		_, err = owner.Reservation(ctx, sku, "nope")
		assert.ErrorIs(t, err, processor.ErrNotFound)

		_, err = other.Stock(ctx, sku)
		var no *processor.NotOwnerError
		require.True(t, errors.As(err, &no), "got %v", err)
		assert.Equal(t, addr[owner], no.Owner)
	}
	_, err := a.p.Stock(ctx, "UNKNOWN-SKU-1")
	var no *processor.NotOwnerError
	if !errors.As(err, &no) {
		assert.ErrorIs(t, err, processor.ErrNotFound)
	}
}
