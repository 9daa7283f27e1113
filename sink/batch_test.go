package sink

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/schemas"
)

func stockJSON(t testing.TB, sku string, version, onHand int64) []byte {
	t.Helper()
	b, err := json.Marshal(schemas.StockEntity{SKU: sku, OnHand: onHand, Available: onHand,
		Version: version, Event: schemas.EventStockSet, CommandID: "c", UpdatedAt: 1_700_000_000_000})
	require.NoError(t, err)
	return b
}

func reservationJSON(t testing.TB, sku, id string, version, qty int64) []byte {
	t.Helper()
	b, err := json.Marshal(schemas.ReservationEntity{
		Reservation: schemas.Reservation{ReservationID: id, SKU: sku, Quantity: qty,
			Status: schemas.StatusActive, ExpiresAt: 1_700_000_900_000},
		Version: version, Event: schemas.EventReserved, CommandID: "c", UpdatedAt: 1_700_000_000_000})
	require.NoError(t, err)
	return b
}

// TestBatchFold checks the fold against the record-by-record semantics: the
// highest version since the last tombstone, and a delete first if a tombstone
// was seen.
func TestBatchFold(t *testing.T) {
	type rec struct {
		key   string
		value []byte
	}
	sk := schemas.StockKey("a/b")
	rk := schemas.ReservationKey("a/b", "r-1")
	for _, tc := range []struct {
		name      string
		recs      []rec
		wantDel   bool
		wantPut   int64 // version of the put, 0 for none
		wantStock bool  // whether the op is on the stock (else reservation) key
	}{
		{"latest version wins", []rec{{sk, stockJSON(t, "a/b", 1, 5)}, {sk, stockJSON(t, "a/b", 3, 7)}, {sk, stockJSON(t, "a/b", 2, 6)}}, false, 3, true},
		{"re-delivered old version loses", []rec{{sk, stockJSON(t, "a/b", 4, 5)}, {sk, stockJSON(t, "a/b", 1, 1)}}, false, 4, true},
		{"tombstone after put wins", []rec{{rk, reservationJSON(t, "a/b", "r-1", 1, 2)}, {rk, nil}}, true, 0, false},
		{"put after tombstone wins", []rec{{rk, reservationJSON(t, "a/b", "r-1", 5, 2)}, {rk, nil}, {rk, reservationJSON(t, "a/b", "r-1", 1, 3)}}, true, 1, false},
		{"stock tombstone", []rec{{sk, stockJSON(t, "a/b", 2, 5)}, {sk, nil}}, true, 0, true},
		{"undecodable put is skipped", []rec{{sk, stockJSON(t, "a/b", 2, 5)}, {sk, []byte("{")}}, false, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBatch()
			for i, r := range tc.recs {
				b.add(3, int64(10+i), []byte(r.key), r.value)
			}
			assert.Equal(t, map[int32]int64{3: int64(10 + len(tc.recs))}, b.next)
			assert.Equal(t, len(tc.recs), b.records)
			var del bool
			var put int64
			if tc.wantStock {
				require.Contains(t, b.stock, "a/b")
				op := b.stock["a/b"]
				del = op.del
				if op.put != nil {
					put = op.put.version
				}
			} else {
				require.Contains(t, b.reservations, rk)
				op := b.reservations[rk]
				del = op.del
				if op.put != nil {
					put = op.put.version
				}
			}
			assert.Equal(t, tc.wantDel, del, "delete")
			assert.Equal(t, tc.wantPut, put, "put version")
		})
	}
}

func TestBatchSkipsAndRejects(t *testing.T) {
	b := newBatch()
	add := func(key string, value []byte) { b.add(0, int64(b.records), []byte(key), value) }

	add(schemas.CommandKey("c-1"), []byte(`{"command_id":"c-1"}`))
	add(schemas.CommandKey("c-2"), nil)
	add("future/thing", []byte(`{}`))
	add("", []byte(`x`))
	assert.Empty(t, b.stock)
	assert.Empty(t, b.reservations)
	assert.Empty(t, b.bad)
	assert.Equal(t, int64(4), b.kinds[kindIgnored])

	add(schemas.StockKey("S1"), []byte(`not json`))
	add(schemas.StockKey("S2"), stockJSON(t, "OTHER", 1, 1))                    // sku does not match key
	add(schemas.ReservationKey("S1", "r"), reservationJSON(t, "S1", "q", 1, 1)) // id does not match key
	add(schemas.StockKey("S\x003"), stockJSON(t, "S\x003", 1, 1))               // NUL in key
	add(schemas.StockKey("S\xff"), stockJSON(t, "S\xff", 1, 1))                 // not UTF-8
	add(schemas.StockKey("S4"), []byte(`{"sku":"S4","event":"a\u0000b","version":1}`))
	add(schemas.StockKey("S5"), []byte{}) // empty, not null: not a tombstone
	require.Len(t, b.bad, 7)
	assert.Empty(t, b.stock)
	assert.Empty(t, b.reservations)
	for _, r := range b.bad {
		assert.NotContains(t, r.key, "\x00")
		assert.Error(t, r.err)
	}
	assert.Equal(t, int64(11), b.next[0])

	b.reset()
	assert.Zero(t, b.records)
	assert.Empty(t, b.next)
	assert.Empty(t, b.bad)
}
