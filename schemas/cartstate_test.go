package schemas

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// randCartEntity is a random cart entity for encoder tests: nil, empty or
// filled holds, lines and queue, with or without a saga.
func randCartEntity(rng *rand.Rand) CartEntity {
	e := CartEntity{CartID: randString(rng), Version: rng.Int64(), Event: randString(rng), CommandID: randString(rng),
		UpdatedAt: randTime(rng)}
	switch rng.IntN(3) {
	case 1:
		e.Holds = []CartHold{}
	case 2:
		for range 1 + rng.IntN(4) {
			e.Holds = append(e.Holds, CartHold{SKU: randString(rng), ReservationID: randString(rng), Quantity: rng.Int64N(9), ExpiresAt: randTime(rng)})
		}
	}
	if rng.IntN(3) > 0 {
		s := &CartSaga{Command: randCartCommand(rng), Partition: rng.Int32() - rng.Int32(), Offset: rng.Int64() - rng.Int64(),
			Phase: randString(rng), StartedAt: randTime(rng)}
		switch rng.IntN(3) {
		case 1:
			s.Lines = []CartSagaLine{}
		case 2:
			for range 1 + rng.IntN(4) {
				l := randCartLine(rng)
				l.ExpiresAt = randTime(rng)
				s.Lines = append(s.Lines, CartSagaLine{CartLine: l, Pending: rng.IntN(2) == 0, Held: rng.IntN(2) == 0, Prepared: rng.IntN(2) == 0})
			}
		}
		e.Saga = s
	}
	switch rng.IntN(3) {
	case 1:
		e.Queue = []CartQueued{}
	case 2:
		for range 1 + rng.IntN(3) {
			e.Queue = append(e.Queue, CartQueued{Command: randCartCommand(rng), Partition: rng.Int32(), Offset: rng.Int64()})
		}
	}
	return e
}

// randCartDecided is a random decided cart command for encoder tests.
func randCartDecided(rng *rand.Rand) CartDecided {
	r := randCartResult(rng)
	r.DecidedAt = randTime(rng)
	return CartDecided{CommandID: randString(rng), Version: rng.Int64(), Event: randString(rng), UpdatedAt: randTime(rng), Result: r}
}

// The cart state appenders must produce exactly what encoding/json produces.
func TestCartStateAppendersMatchEncodingJSON(t *testing.T) {
	same := func(v any, got []byte) {
		t.Helper()
		want, err := json.Marshal(v)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	}
	for _, e := range []CartEntity{
		{},
		{Holds: []CartHold{}, Queue: []CartQueued{}, Saga: &CartSaga{}},
		{Saga: &CartSaga{Lines: []CartSagaLine{{}}, Command: CartCommand{Items: []CartItem{{}}}}},
	} {
		same(&e, AppendCartEntity(nil, &e))
	}
	same(&CartDecided{}, AppendCartDecided(nil, &CartDecided{}))
	rng := rand.New(rand.NewPCG(5, 6))
	for range 3000 {
		e := randCartEntity(rng)
		same(&e, AppendCartEntity(nil, &e))
		d := randCartDecided(rng)
		same(&d, AppendCartDecided(nil, &d))
	}
}
