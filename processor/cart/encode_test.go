package cart

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/schemas"
)

func randStr(rng *rand.Rand, ascii bool) string {
	alphabet := []string{"a", "Z", "0", "-", "/", ":", " ", "é", "漢", "\"", "\\", "\n", "\x00", "<", ">", "&", "\u2028", "\xff"}
	if ascii {
		alphabet = alphabet[:7]
	}
	s := ""
	for range rng.IntN(12) {
		s += alphabet[rng.IntN(len(alphabet))]
	}
	return s
}

func randMillis(rng *rand.Rand) schemas.Millis {
	if rng.IntN(5) == 0 {
		return 0
	}
	return schemas.Millis(rng.Int64N(1 << 42))
}

func randOpt(rng *rand.Rand) *int64 {
	if rng.IntN(2) == 0 {
		return nil
	}
	v := rng.Int64() - rng.Int64()
	return &v
}

func randCartCommand(rng *rand.Rand) schemas.CartCommand {
	c := schemas.CartCommand{CommandID: randStr(rng, false), Type: randStr(rng, false), CartID: randStr(rng, false),
		Reason: randStr(rng, false), IssuedAt: randStr(rng, false), TTLSeconds: randOpt(rng), OrderID: randStr(rng, false)}
	switch rng.IntN(3) {
	case 1:
		c.Items = []schemas.CartItem{}
	case 2:
		for range 1 + rng.IntN(4) {
			c.Items = append(c.Items, schemas.CartItem{SKU: randStr(rng, false), Quantity: randOpt(rng), ReservationID: randStr(rng, false)})
		}
	}
	return c
}

func randLine(rng *rand.Rand) schemas.CartLine {
	return schemas.CartLine{SKU: randStr(rng, false), ReservationID: randStr(rng, false), Quantity: rng.Int64() - rng.Int64(),
		Outcome: randStr(rng, false), Reason: randStr(rng, false), Message: randStr(rng, false), Status: randStr(rng, false),
		ExpiresAt: randMillis(rng)}
}

func randEntity(rng *rand.Rand) Entity {
	e := Entity{CartID: randStr(rng, false), Version: rng.Int64(), Event: randStr(rng, false), CommandID: randStr(rng, false),
		UpdatedAt: randMillis(rng)}
	switch rng.IntN(3) {
	case 1:
		e.Holds = []Hold{}
	case 2:
		for range 1 + rng.IntN(4) {
			e.Holds = append(e.Holds, Hold{SKU: randStr(rng, false), ReservationID: randStr(rng, false), Quantity: rng.Int64N(9), ExpiresAt: randMillis(rng)})
		}
	}
	if rng.IntN(3) > 0 {
		s := &Saga{Command: randCartCommand(rng), Partition: rng.Int32() - rng.Int32(), Offset: rng.Int64() - rng.Int64(),
			Phase: randStr(rng, false), StartedAt: randMillis(rng)}
		switch rng.IntN(3) {
		case 1:
			s.Lines = []Line{}
		case 2:
			for range 1 + rng.IntN(4) {
				s.Lines = append(s.Lines, Line{CartLine: randLine(rng), Pending: rng.IntN(2) == 0, Held: rng.IntN(2) == 0, Prepared: rng.IntN(2) == 0})
			}
		}
		e.Saga = s
	}
	switch rng.IntN(3) {
	case 1:
		e.Queue = []Queued{}
	case 2:
		for range 1 + rng.IntN(3) {
			e.Queue = append(e.Queue, Queued{Command: randCartCommand(rng), Partition: rng.Int32(), Offset: rng.Int64()})
		}
	}
	return e
}

func randDecided(rng *rand.Rand) Decided {
	d := Decided{CommandID: randStr(rng, false), Version: rng.Int64(), Event: randStr(rng, false), UpdatedAt: randMillis(rng),
		Result: schemas.CartResult{CommandID: randStr(rng, false), Type: randStr(rng, false), CartID: randStr(rng, false),
			OrderID: randStr(rng, false), Outcome: randStr(rng, false), Duplicate: rng.IntN(2) == 0, Reason: randStr(rng, false),
			Message: randStr(rng, false), Partition: rng.Int32(), Offset: rng.Int64(), DecidedAt: randMillis(rng)}}
	switch rng.IntN(3) {
	case 1:
		d.Result.Lines = []schemas.CartLine{}
	case 2:
		for range 1 + rng.IntN(4) {
			d.Result.Lines = append(d.Result.Lines, randLine(rng))
		}
	}
	return d
}

// The appenders must produce exactly what encoding/json produces.
func TestAppendersMatchEncodingJSON(t *testing.T) {
	same := func(v any, got []byte) {
		t.Helper()
		want, err := json.Marshal(v)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	}
	for _, e := range []Entity{{}, {Holds: []Hold{}, Queue: []Queued{}, Saga: &Saga{}}, {Saga: &Saga{Lines: []Line{{}}, Command: schemas.CartCommand{Items: []schemas.CartItem{{}}}}}} {
		same(&e, AppendEntity(nil, &e))
	}
	same(&Decided{}, AppendDecided(nil, &Decided{}))
	rng := rand.New(rand.NewPCG(5, 6))
	for range 3000 {
		e := randEntity(rng)
		same(&e, AppendEntity(nil, &e))
		d := randDecided(rng)
		same(&d, AppendDecided(nil, &d))
	}
}
