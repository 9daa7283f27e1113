package schemas

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// appendTime writes exactly what time.Time.AppendFormat(TimeLayout) writes:
// edge dates (epoch, leap days, century rules, before 1970, the first and
// last years of the fast path and beyond it) and a million random instants.
func TestAppendTimeMatchesAppendFormat(t *testing.T) {
	ref := func(m Millis) string { return m.Time().Format(TimeLayout) }
	edges := []time.Time{
		time.Unix(0, 0), time.Unix(0, 0).Add(-time.Millisecond),
		time.Date(2000, 2, 29, 23, 59, 59, 999e6, time.UTC), time.Date(1900, 3, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2100, 2, 28, 12, 0, 0, 1e6, time.UTC), time.Date(2024, 12, 31, 23, 59, 59, 999e6, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 6, 1, 0, 0, 0, 0, time.UTC), time.Date(1969, 12, 31, 0, 0, 0, 1e6, time.UTC),
	}
	for _, e := range edges {
		m := MillisOf(e)
		assert.Equal(t, ref(m), string(m.appendTime(nil)), "%v", e)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	span := MillisOf(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)) - MillisOf(time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC))
	lo := MillisOf(time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC))
	for range 1_000_000 {
		m := lo + Millis(rng.Int64N(int64(span)))
		if got, want := string(m.appendTime(nil)), ref(m); got != want {
			t.Fatalf("%d: got %s, want %s", m, got, want)
		}
	}
}
