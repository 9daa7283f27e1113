package processor_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
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

func TestQueryHandler(t *testing.T) {
	h := newHarness(t, 4)
	a := h.start("", func(c *processor.Config) { c.AdvertisedAddr = "a.example:8080" })
	b := h.start("", func(c *processor.Config) { c.AdvertisedAddr = "b.example:8080" })
	h.waitReady(a, b)
	sku := "cat/SKU-9" // a SKU with a slash travels percent-encoded
	h.send(stockSet("s", sku, 4), reserve("r", sku, "h-1", 1))
	h.waitDecided(20*time.Second, "s", "r")
	get := func(p *processor.Processor, path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		p.QueryHandler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec
	}
	path := "/v1/stock/" + url.PathEscape(sku)
	var owner, other *processor.Processor
	require.Eventually(t, func() bool {
		ra, rb := get(a.p, path), get(b.p, path)
		switch {
		case ra.Code == 200:
			owner, other = a.p, b.p
		case rb.Code == 200:
			owner, other = b.p, a.p
		default:
			return false
		}
		return true
	}, 10*time.Second, 10*time.Millisecond)
	rec := get(owner, path)
	var st schemas.StockEntity
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &st))
	assert.Equal(t, sku, st.SKU)
	assert.Equal(t, int64(3), st.Available)

	rec = get(owner, path+"/reservations/h-1")
	require.Equal(t, 200, rec.Code, rec.Body.String())
	var res schemas.ReservationEntity
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &res))
	assert.Equal(t, schemas.StatusActive, res.Reservation.Status)

	assert.Equal(t, 404, get(owner, path+"/reservations/nope").Code)
	rec = get(other, path)
	require.Equal(t, 307, rec.Code, rec.Body.String())
	assert.Contains(t, rec.Header().Get("Location"), "/v1/stock/cat%2FSKU-9")
	assert.Contains(t, []string{"http://a.example:8080/v1/stock/cat%2FSKU-9", "http://b.example:8080/v1/stock/cat%2FSKU-9"}, rec.Header().Get("Location"))
}
