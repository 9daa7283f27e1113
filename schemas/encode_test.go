package schemas

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func randString(rng *rand.Rand) string {
	alphabet := []string{"a", "Z", "0", "-", "/", ":", "é", "漢", "\"", "\\", "\n", "\x00", "<", ">", "&", "\u2028", "\xff", " "}
	n := rng.IntN(12)
	s := ""
	for range n {
		s += alphabet[rng.IntN(len(alphabet))]
	}
	return s
}

func randResult(rng *rand.Rand) Result {
	r := Result{
		CommandID: randString(rng), Type: randString(rng), SKU: randString(rng), ReservationID: randString(rng),
		Outcome: randString(rng), Duplicate: rng.IntN(2) == 0, Reason: randString(rng), Message: randString(rng),
		Partition: rng.Int32(), Offset: rng.Int64() - rng.Int64(), DecidedAt: Millis(rng.Int64N(1 << 42)),
	}
	if rng.IntN(2) == 0 {
		r.Stock = &StockView{OnHand: rng.Int64(), Reserved: -rng.Int64(), Available: rng.Int64N(10)}
	}
	if rng.IntN(2) == 0 {
		r.Reservation = &Reservation{ReservationID: randString(rng), SKU: randString(rng), Quantity: rng.Int64(),
			Status: randString(rng), ExpiresAt: Millis(rng.Int64N(1 << 42)), Extensions: rng.Int64N(3),
			CartID: randString(rng), OrderID: randString(rng), StoreID: randString(rng)}
	}
	return r
}

// The appenders must produce exactly what encoding/json produces.
func TestAppendersMatchEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	same := func(v any, got []byte) {
		t.Helper()
		want, err := json.Marshal(v)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	}
	for range 2000 {
		r := randResult(rng)
		same(&r, AppendResult(nil, &r))
		thr := rng.Int64N(5)
		s := StockEntity{SKU: randString(rng), OnHand: rng.Int64(), Reserved: rng.Int64(), Available: -rng.Int64(),
			Version: rng.Int64(), Event: randString(rng), CommandID: randString(rng), UpdatedAt: Millis(rng.Int64N(1 << 42))}
		if rng.IntN(2) == 0 {
			s.LowStockThreshold = &thr
		}
		same(&s, AppendStockEntity(nil, &s))
		res := ReservationEntity{Version: rng.Int64N(9), Event: randString(rng), CommandID: randString(rng), UpdatedAt: Millis(rng.Int64N(1 << 42))}
		if r.Reservation != nil {
			res.Reservation = *r.Reservation
		}
		same(&res, AppendReservationEntity(nil, &res))
		c := CommandEntity{CommandID: randString(rng), Result: r, Version: 1, Event: EventDecided, UpdatedAt: r.DecidedAt}
		same(&c, AppendCommandEntity(nil, &c))
	}
}
