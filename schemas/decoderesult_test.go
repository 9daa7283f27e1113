package schemas

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// randText is a random string; ascii: only characters the scanner reads
// without escapes (then the canonical encoding takes its fast path).
func randText(rng *rand.Rand, ascii bool) string {
	if !ascii {
		return randString(rng)
	}
	const alphabet = "aZ0-/: "
	b := make([]byte, rng.IntN(12))
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(b)
}

// randTime is a random time, the zero time one time in five.
func randTime(rng *rand.Rand) Millis {
	if rng.IntN(5) == 0 {
		return 0
	}
	return Millis(rng.Int64N(1 << 42))
}

// randLineResult is a random result as line results are: any field set.
func randLineResult(rng *rand.Rand, ascii bool) Result {
	r := Result{CommandID: randText(rng, ascii), Type: randText(rng, ascii), SKU: randText(rng, ascii),
		ReservationID: randText(rng, ascii), Outcome: randText(rng, ascii), Duplicate: rng.IntN(2) == 0, Reason: randText(rng, ascii),
		Message: randText(rng, ascii), Partition: rng.Int32() - rng.Int32(), Offset: rng.Int64() - rng.Int64(), DecidedAt: randTime(rng)}
	if rng.IntN(2) == 0 {
		r.Stock = &StockView{OnHand: rng.Int64(), Reserved: -rng.Int64(), Available: rng.Int64N(10)}
	}
	if rng.IntN(2) == 0 {
		r.Reservation = &Reservation{ReservationID: randText(rng, ascii), SKU: randText(rng, ascii), Quantity: rng.Int64(),
			Status: randText(rng, ascii), ExpiresAt: randTime(rng), Extensions: rng.Int64N(3), CartID: randText(rng, ascii),
			OrderID: randText(rng, ascii), StoreID: randText(rng, ascii), Prepared: rng.IntN(2) == 0}
	}
	return r
}

// checkDecodeResult: DecodeResult reads b exactly as json.Unmarshal does;
// fast reports whether the scanner read it (without encoding/json).
func checkDecodeResult(t *testing.T, b []byte) (fast bool) {
	t.Helper()
	var want Result
	wantErr := json.Unmarshal(b, &want)
	got, err := DecodeResult(b)
	require.Equal(t, wantErr, err, "%s", b)
	require.Equal(t, want, got, "%s", b)
	_, fast = scanResult(b)
	if fast {
		require.NoError(t, wantErr, "the scanner accepted what encoding/json rejects: %s", b)
	}
	return fast
}

// lineResultOf is the canonical line result with the given reservation and
// tail fields (from "partition" on), for the table below.
func lineResultOf(reservation, tail string) string {
	return `{"command_id":"c1","type":"reserve","sku":"SKU-A","reservation_id":"r1","outcome":"accepted","duplicate":false,` +
		`"reason":"","message":"","stock":{"on_hand":5,"reserved":2,"available":3},"reservation":` + reservation + `,` + tail
}

const (
	canonicalReservation = `{"reservation_id":"r1","sku":"SKU-A","quantity":2,"status":"active","expires_at":"2026-01-01T00:15:00.000Z","extensions":0,"cart_id":"cart-1","order_id":""}`
	canonicalTail        = `"partition":3,"offset":42,"decided_at":"2026-01-01T00:00:00.000Z"}`
)

// The scanner reads what AppendResult writes and hands everything else to
// encoding/json; either way the value and the error are encoding/json's.
func TestDecodeResult(t *testing.T) {
	want := Result{CommandID: "c1", Type: TypeReserve, SKU: "SKU-A", ReservationID: "r1", Outcome: OutcomeAccepted,
		Stock: &StockView{OnHand: 5, Reserved: 2, Available: 3},
		Reservation: &Reservation{ReservationID: "r1", SKU: "SKU-A", Quantity: 2, Status: StatusActive,
			ExpiresAt: 1767226500000, CartID: "cart-1"},
		Partition: 3, Offset: 42, DecidedAt: 1767225600000}
	withRes := func(f func(*Reservation)) Result {
		r := want
		v := *want.Reservation
		f(&v)
		r.Reservation = &v
		return r
	}
	for _, tc := range []struct {
		name string
		in   string
		fast bool    // the scanner reads it
		want *Result // nil: only compared with encoding/json
		err  bool
	}{
		{name: "canonical", in: lineResultOf(canonicalReservation, canonicalTail), fast: true, want: &want},
		{name: "canonical with store_id and prepared", fast: true,
			in:   lineResultOf(canonicalReservation[:len(canonicalReservation)-1]+`,"store_id":"s1","prepared":true}`, canonicalTail),
			want: ptr(withRes(func(r *Reservation) { r.StoreID, r.Prepared = "s1", true }))},
		{name: "canonical with prepared only", fast: true,
			in:   lineResultOf(canonicalReservation[:len(canonicalReservation)-1]+`,"prepared":true}`, canonicalTail),
			want: ptr(withRes(func(r *Reservation) { r.Prepared = true }))},
		{name: "canonical without stock and reservation", fast: true,
			in:   `{"command_id":"c","type":"","sku":"","reservation_id":"","outcome":"","duplicate":true,"reason":"","message":"","stock":null,"reservation":null,"partition":-1,"offset":-2,"decided_at":""}`,
			want: &Result{CommandID: "c", Duplicate: true, Partition: -1, Offset: -2}},
		{name: "whitespace", in: lineResultOf(canonicalReservation, `"partition": 3,"offset":42,"decided_at":"2026-01-01T00:00:00.000Z"}`), want: &want},
		{name: "fields in another order", in: `{"type":"reserve","command_id":"c1"}`, want: &Result{CommandID: "c1", Type: TypeReserve}},
		{name: "unknown field", in: lineResultOf(canonicalReservation, `"partition":3,"offset":42,"decided_at":"2026-01-01T00:00:00.000Z","x":1}`), want: &want},
		{name: "escaped string", in: `{"command_id":"\u0063\"1"}`, want: &Result{CommandID: `c"1`}},
		{name: "non-ASCII string", in: `{"command_id":"é"}`, want: &Result{CommandID: "é"}},
		{name: "time in another zone (the scanner reads any RFC 3339 time)", fast: true, in: lineResultOf(canonicalReservation, `"partition":3,"offset":42,"decided_at":"2026-01-01T01:00:00.000+01:00"}`), want: &want},
		{name: "JSON null", in: `null`, want: &Result{}},
		{name: "empty object", in: `{}`, want: &Result{}},
		{name: "empty", in: ``, err: true},
		{name: "array", in: `[]`, err: true},
		{name: "command_id a number", in: `{"command_id":1}`, err: true},
		{name: "partition beyond int32", in: lineResultOf(canonicalReservation, `"partition":2147483648,"offset":42,"decided_at":""}`), err: true},
		{name: "leading zero", in: lineResultOf(canonicalReservation, `"partition":01,"offset":42,"decided_at":""}`), err: true},
		{name: "exponent", in: lineResultOf(canonicalReservation, `"partition":1,"offset":1e3,"decided_at":""}`), err: true},
		{name: "offset beyond int64", in: lineResultOf(canonicalReservation, `"partition":1,"offset":9223372036854775808,"decided_at":""}`), err: true},
		{name: "bad time", in: lineResultOf(canonicalReservation, `"partition":1,"offset":2,"decided_at":"2026-13-01T00:00:00.000Z"}`), err: true},
		{name: "trailing bytes", in: lineResultOf(canonicalReservation, canonicalTail) + `x`, err: true},
		{name: "truncated", in: lineResultOf(canonicalReservation, canonicalTail[:20]), err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.fast, checkDecodeResult(t, []byte(tc.in)), "read by the scanner")
			got, err := DecodeResult([]byte(tc.in))
			if tc.err {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			if tc.want != nil {
				assert.Equal(t, *tc.want, got)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestDecodeResultMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range 4000 {
		r := randLineResult(rng, i%2 == 0)
		b := AppendResult(nil, &r)
		fast := checkDecodeResult(t, b)
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
			checkDecodeResult(t, c)
		}
	}
}

func FuzzDecodeResult(f *testing.F) {
	rng := rand.New(rand.NewPCG(9, 10))
	for range 20 {
		r := randLineResult(rng, true)
		f.Add(AppendResult(nil, &r))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkDecodeResult(t, b) })
}
