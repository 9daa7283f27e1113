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

func randOptInt(rng *rand.Rand) *int64 {
	if rng.IntN(2) == 0 {
		return nil
	}
	v := rng.Int64() - rng.Int64()
	if rng.IntN(3) == 0 {
		v = 0 // a present zero is not omitted
	}
	return &v
}

func randCommand(rng *rand.Rand) Command {
	opt := func() string {
		if rng.IntN(2) == 0 {
			return ""
		}
		return randString(rng)
	}
	return Command{CommandID: randString(rng), Type: randString(rng), SKU: randString(rng), Reason: opt(), IssuedAt: opt(),
		OnHand: randOptInt(rng), ExpectedOnHand: randOptInt(rng), LowStockThreshold: randOptInt(rng), Delta: randOptInt(rng),
		ReservationID: opt(), Quantity: randOptInt(rng), TTLSeconds: randOptInt(rng), CartID: opt(), StoreID: opt(),
		OrderID: opt(), ReplyTo: opt(), ReplyPartition: randOptInt(rng)}
}

// randCartCommand is a random cart command for encoder tests (any strings,
// optional fields present or not, nil, empty or filled items).
func randCartCommand(rng *rand.Rand) CartCommand {
	opt := func() string {
		if rng.IntN(2) == 0 {
			return ""
		}
		return randString(rng)
	}
	c := CartCommand{CommandID: randString(rng), Type: randString(rng), CartID: randString(rng), Reason: opt(),
		IssuedAt: opt(), TTLSeconds: randOptInt(rng), OrderID: opt(), ReplyTo: opt(), ReplyPartition: randOptInt(rng)}
	switch rng.IntN(3) {
	case 0:
	case 1:
		c.Items = []CartItem{}
	default:
		for range 1 + rng.IntN(4) {
			c.Items = append(c.Items, CartItem{SKU: randString(rng), Quantity: randOptInt(rng), ReservationID: opt()})
		}
	}
	return c
}

func randCartLine(rng *rand.Rand) CartLine {
	return CartLine{SKU: randString(rng), ReservationID: randString(rng), Quantity: rng.Int64() - rng.Int64(),
		Outcome: randString(rng), Reason: randString(rng), Message: randString(rng), Status: randString(rng),
		ExpiresAt: Millis(rng.Int64N(1 << 42))}
}

func randCartResult(rng *rand.Rand) CartResult {
	r := CartResult{CommandID: randString(rng), Type: randString(rng), CartID: randString(rng), OrderID: randString(rng),
		Outcome: randString(rng), Duplicate: rng.IntN(2) == 0, Reason: randString(rng), Message: randString(rng),
		Partition: rng.Int32() - rng.Int32(), Offset: rng.Int64() - rng.Int64(), DecidedAt: Millis(rng.Int64N(1 << 42))}
	switch rng.IntN(3) {
	case 0:
	case 1:
		r.Lines = []CartLine{}
	default:
		for range 1 + rng.IntN(4) {
			r.Lines = append(r.Lines, randCartLine(rng))
		}
	}
	if rng.IntN(4) == 0 {
		r.DecidedAt = 0
	}
	return r
}

// The cart appenders must produce exactly what encoding/json produces.
func TestCartAppendersMatchEncodingJSON(t *testing.T) {
	same := func(v any, got []byte) {
		t.Helper()
		want, err := json.Marshal(v)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	}
	ttl, zero := int64(900), int64(0)
	table := []any{
		&Command{},
		&Command{CommandID: "c1", Type: TypeReserve, SKU: "SKU-1", ReservationID: "r1", Quantity: &ttl, TTLSeconds: &zero, CartID: "cart-1", ReplyTo: "cart"},
		&Command{CommandID: "c2", Type: TypeRelease, SKU: "SKU-1", ReservationID: "r1", ReplyTo: "replies", ReplyPartition: &zero},
		&Command{CommandID: "<&>", Type: "stock.set", SKU: "é\u2028", OnHand: &ttl, ExpectedOnHand: &zero, LowStockThreshold: &ttl, Delta: &zero, Reason: "r", IssuedAt: "2026-01-01T00:00:00Z", StoreID: "s", OrderID: "o"},
		&CartCommand{},
		&CartCommand{CommandID: "c1", Type: TypeCartReserve, CartID: "cart-1", TTLSeconds: &ttl, Items: []CartItem{{SKU: "A", Quantity: &ttl}, {SKU: "B", ReservationID: "r"}, {}}},
		&CartCommand{Items: []CartItem{}, OrderID: "o", Reason: "\x00", IssuedAt: "x"},
		&CartResult{},
		&CartResult{Lines: []CartLine{}},
		&CartResult{CommandID: "c1", Type: TypeCartReserve, CartID: "cart-1", Outcome: OutcomeAccepted, Duplicate: true,
			Lines:     []CartLine{{SKU: "A", ReservationID: "r", Quantity: 2, Outcome: OutcomeAccepted, Status: StatusActive, ExpiresAt: 1 << 40}, {}},
			Partition: 3, Offset: 1 << 50, DecidedAt: 1 << 40},
	}
	for _, v := range table {
		switch v := v.(type) {
		case *Command:
			same(v, AppendCommand(nil, v))
		case *CartCommand:
			same(v, AppendCartCommand(nil, v))
		case *CartResult:
			same(v, AppendCartResult(nil, v))
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 3000 {
		c := randCommand(rng)
		same(&c, AppendCommand(nil, &c))
		cc := randCartCommand(rng)
		same(&cc, AppendCartCommand(nil, &cc))
		r := randCartResult(rng)
		same(&r, AppendCartResult(nil, &r))
		s := randString(rng)
		same(s, AppendJSONString(nil, s))
	}
}

func FuzzAppendCartResult(f *testing.F) {
	f.Add("c1", "cart.reserve", "cart-1", "accepted", "msg", "SKU-A", int64(2), int64(1<<40), true)
	f.Add("\xff<", "", "\u2028", "", "\x00\"", "é", int64(-1), int64(0), false)
	f.Fuzz(func(t *testing.T, id, typ, cartID, outcome, msg, sku string, q, at int64, dup bool) {
		if at < 0 || at > 1<<46 {
			at = 1 << 40
		}
		r := CartResult{CommandID: id, Type: typ, CartID: cartID, OrderID: msg, Outcome: outcome, Duplicate: dup, Reason: sku,
			Message: msg, Lines: []CartLine{{SKU: sku, ReservationID: id, Quantity: q, Outcome: outcome, Message: msg, ExpiresAt: Millis(at)}},
			Partition: int32(q), Offset: q, DecidedAt: Millis(at)}
		want, err := json.Marshal(&r)
		require.NoError(t, err)
		require.Equal(t, string(want), string(AppendCartResult(nil, &r)))
		c := Command{CommandID: id, Type: typ, SKU: sku, Reason: msg, Quantity: &q, CartID: cartID, ReplyTo: outcome}
		want, err = json.Marshal(&c)
		require.NoError(t, err)
		require.Equal(t, string(want), string(AppendCommand(nil, &c)))
	})
}
