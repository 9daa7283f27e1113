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

func randResult(rng *rand.Rand, ascii bool) schemas.Result {
	r := schemas.Result{CommandID: randStr(rng, ascii), Type: randStr(rng, ascii), SKU: randStr(rng, ascii),
		ReservationID: randStr(rng, ascii), Outcome: randStr(rng, ascii), Duplicate: rng.IntN(2) == 0, Reason: randStr(rng, ascii),
		Message: randStr(rng, ascii), Partition: rng.Int32() - rng.Int32(), Offset: rng.Int64() - rng.Int64(), DecidedAt: randMillis(rng)}
	if rng.IntN(2) == 0 {
		r.Stock = &schemas.StockView{OnHand: rng.Int64(), Reserved: -rng.Int64(), Available: rng.Int64N(10)}
	}
	if rng.IntN(2) == 0 {
		r.Reservation = &schemas.Reservation{ReservationID: randStr(rng, ascii), SKU: randStr(rng, ascii), Quantity: rng.Int64(),
			Status: randStr(rng, ascii), ExpiresAt: randMillis(rng), Extensions: rng.Int64N(3), CartID: randStr(rng, ascii),
			OrderID: randStr(rng, ascii), StoreID: randStr(rng, ascii), Prepared: rng.IntN(2) == 0}
	}
	return r
}

// checkLineResult: DecodeLineResult reads b exactly as json.Unmarshal does.
func checkLineResult(t *testing.T, b []byte) (fast bool) {
	t.Helper()
	var want schemas.Result
	wantErr := json.Unmarshal(b, &want)
	got, err := DecodeLineResult(b)
	require.Equal(t, wantErr, err, "%s", b)
	require.Equal(t, want, got, "%s", b)
	_, fast = scanResult(b)
	if fast {
		require.NoError(t, wantErr, "the scanner accepted what encoding/json rejects: %s", b)
	}
	return fast
}

func TestDecodeLineResultMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range 4000 {
		r := randResult(rng, i%2 == 0)
		b := schemas.AppendResult(nil, &r)
		fast := checkLineResult(t, b)
		if i%2 == 0 {
			require.True(t, fast, "the canonical ASCII encoding takes the fast path: %s", b)
		}
		// Damaged and altered documents: same value and error as encoding/json.
		for range 4 {
			c := append([]byte(nil), b...)
			switch j := rng.IntN(len(c)); rng.IntN(4) {
			case 0:
				c = c[:j]
			case 1:
				c[j] = " 0\"-:,{}n9e.\\"[rng.IntN(13)]
			case 2:
				c = append(c[:j:j], append([]byte(" "), c[j:]...)...)
			default:
				c = append(c, " "[:rng.IntN(2)]...)
			}
			checkLineResult(t, c)
		}
	}
	for _, s := range []string{``, `null`, `{}`, `[]`, `{"command_id":"a"}`, `{"command_id":1}`,
		`{"command_id":"a","type":"","sku":"","reservation_id":"","outcome":"","duplicate":false,"reason":"","message":"","stock":null,"reservation":null,"partition":2147483648,"offset":0,"decided_at":""}`,
		`{"command_id":"a","type":"","sku":"","reservation_id":"","outcome":"","duplicate":false,"reason":"","message":"","stock":null,"reservation":null,"partition":01,"offset":0,"decided_at":""}`,
		`{"command_id":"a","type":"","sku":"","reservation_id":"","outcome":"","duplicate":false,"reason":"","message":"","stock":null,"reservation":null,"partition":-0,"offset":1e3,"decided_at":""}`,
		`{"command_id":"a","type":"","sku":"","reservation_id":"","outcome":"","duplicate":false,"reason":"","message":"","stock":null,"reservation":null,"partition":1,"offset":9223372036854775808,"decided_at":""}`,
		`{"command_id":"a","type":"","sku":"","reservation_id":"","outcome":"","duplicate":false,"reason":"","message":"","stock":null,"reservation":null,"partition":1,"offset":2,"decided_at":"2026-13-01T00:00:00.000Z"}`,
		`{"command_id":"a","type":"","sku":"","reservation_id":"","outcome":"","duplicate":false,"reason":"","message":"","stock":null,"reservation":null,"partition":1,"offset":2,"decided_at":"2026-01-01T00:00:00.000Z"}x`,
	} {
		checkLineResult(t, []byte(s))
	}
}

func FuzzDecodeLineResult(f *testing.F) {
	rng := rand.New(rand.NewPCG(9, 10))
	for range 20 {
		r := randResult(rng, true)
		f.Add(schemas.AppendResult(nil, &r))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkLineResult(t, b) })
}
