package processor

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/schemas"
)

// testMetrics are the metrics of an SKU processor on a registry of their own.
func testMetrics() *metrics {
	cfg := DefaultConfig()
	return newMetrics(prometheus.NewRegistry(), newRole(RoleSKU, &cfg))
}

func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	var m dto.Metric
	require.NoError(t, g.Write(&m))
	return m.GetGauge().GetValue()
}

func stockChange(sku string, n int64) Change {
	return Change{Change: skuStock(sku, n)}
}

func skuStock(s string, n int64) sku.Change {
	return sku.Change{Key: schemas.StockKey(s), Stock: &schemas.StockEntity{SKU: s, OnHand: n, Available: n, Version: 1}}
}

// TestStateCacheGenerations: a generation that outgrows half the share becomes
// the old one; what is read from the old one survives the next switch, the
// rest is dropped; the cache never holds much more than its share.
func TestStateCacheGenerations(t *testing.T) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	const size = 100
	c := newStateCache(2*minCacheGeneration, g) // generations of minCacheGeneration
	perGen := minCacheGeneration / size
	put := func(k string) { c.put(stockChange(k, 1), size) }

	for i := range perGen {
		put(fmt.Sprintf("a%d", i))
	}
	assert.Len(t, c.cur, perGen, "a generation takes up to its limit")
	assert.Empty(t, c.old)
	put("b0") // one too many: cur becomes old
	assert.Empty(t, c.cur)
	assert.Len(t, c.old, perGen+1)

	// A hot key read from the old generation moves back into cur.
	got, ok := c.get("stock/a0")
	require.True(t, ok)
	assert.Equal(t, int64(1), got.Stock.OnHand)
	assert.Len(t, c.cur, 1)
	for i := range perGen + 1 {
		put(fmt.Sprintf("c%d", i)) // fills cur: the a* generation is dropped
	}
	_, ok = c.get("stock/a1")
	assert.False(t, ok, "an entry nobody used since the switch is gone after the next one")
	_, ok = c.get("stock/a0")
	assert.True(t, ok, "the entry read since the switch survived it")
	assert.LessOrEqual(t, c.held(), int64(2*minCacheGeneration+2*size), "both generations together stay within the share")

	// Overwriting a key replaces its size; drop forgets it in both generations.
	put("d0")
	before := c.held()
	c.put(stockChange("d0", 2), size)
	assert.Equal(t, before, c.held(), "an overwrite does not count twice")
	got, _ = c.get("stock/d0")
	assert.Equal(t, int64(2), got.Stock.OnHand)
	c.drop("stock/d0")
	c.drop("stock/c0") // in the old generation
	for _, k := range []string{"stock/d0", "stock/c0"} {
		_, ok = c.get(k)
		assert.False(t, ok, k)
	}
	assert.Equal(t, before-2*size, c.held(), "drop subtracts what it forgets, in either generation")

	c.report()
	assert.Equal(t, float64(c.held()), gaugeValue(t, g))
	c.release()
	assert.Zero(t, gaugeValue(t, g), "a stopped partition's cache leaves the gauge")
}

// TestStateCacheNewestWins: a key written again, or whose tombstone is
// replaced, reads as its newest value in either generation and after the next
// switch; drop forgets it.
func TestStateCacheNewestWins(t *testing.T) {
	c := newStateCache(2*minCacheGeneration, nil)
	c.put(stockChange("k", 1), 100)
	c.put(tombstone("stock/t"), 100)
	for i := 0; c.old == nil; i++ {
		c.put(stockChange(fmt.Sprint("f", i), 1), 100)
	}
	require.Contains(t, c.old, "stock/k")
	c.put(stockChange("k", 2), 100)
	c.put(stockChange("t", 3), 100) // replaces a cached tombstone
	assert.NotContains(t, c.old, "stock/k", "a key written again leaves the old generation")
	for k, n := range map[string]int64{"stock/k": 2, "stock/t": 3} {
		got, ok := c.get(k)
		require.True(t, ok)
		require.False(t, got.Tombstone())
		assert.Equal(t, n, got.Stock.OnHand, k)
	}
	for i := 0; len(c.cur) > 0; i++ { // the next switch
		c.put(stockChange(fmt.Sprint("g", i), 1), 100)
	}
	got, _ := c.get("stock/k")
	assert.Equal(t, int64(2), got.Stock.OnHand)
	c.drop("stock/k")
	_, ok := c.get("stock/k")
	assert.False(t, ok)
}

// decodedReservation is reservation i as a read from the store or a commit
// leaves it in the cache (decoded from its changelog value), with the size of
// that value.
func decodedReservation(t *testing.T, i int) (Change, int) {
	id, s := fmt.Sprintf("cmd-%d-r", 1_000_000+i), fmt.Sprintf("sku-%05d", i%10_000)
	c := Change{Change: sku.Change{Key: schemas.ReservationKey(s, id), Reservation: &schemas.ReservationEntity{
		Reservation: schemas.Reservation{ReservationID: id, SKU: s, Quantity: 2, Status: "active", ExpiresAt: 1_765_000_000_000,
			CartID: fmt.Sprintf("cart-%d", i)},
		Version: 1, Event: "reserved", CommandID: fmt.Sprintf("cmd-%d", 1_000_000+i), UpdatedAt: 1_765_000_000_000}}}
	return decoded(t, c)
}

// decoded is c as DecodeChange returns it from its encoded value (a tombstone
// stays one, with size 0).
func decoded(t *testing.T, c Change) (Change, int) {
	if c.Tombstone() {
		return c, 0
	}
	raw, err := EncodeChange(&c)
	require.NoError(t, err)
	d, err := DecodeChange(c.Key, raw)
	require.NoError(t, err)
	return d, len(raw)
}

// heapGrowth runs fill and returns how much the live heap grew (after GC).
func heapGrowth(fill func()) int64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fill()
	runtime.GC()
	runtime.ReadMemStats(&after)
	return int64(after.HeapAlloc) - int64(before.HeapAlloc)
}

// TestCacheSizeEstimate: the size estimate of a cached reservation, stock and
// tombstone is not below the heap the cache really holds for it (measured),
// and at most 35% above it, so StateCacheBytes means what it says. A
// measurement is taken again (up to three times) if it misses, in case other
// goroutines of the test binary allocated meanwhile.
func TestCacheSizeEstimate(t *testing.T) {
	cases := []struct {
		name string
		make func(t *testing.T, i int) (Change, int)
	}{
		{"reservation", decodedReservation},
		{"stock", func(t *testing.T, i int) (Change, int) {
			return decoded(t, stockChange(fmt.Sprintf("sku-%07d", i), int64(i)))
		}},
		{"tombstone", func(t *testing.T, i int) (Change, int) {
			return decoded(t, tombstone(schemas.ReservationKey("sku-00001", fmt.Sprintf("cmd-%d-r", i))))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const n = 50_000
			var ratio float64
			for attempt := 1; attempt <= 3; attempt++ {
				c := newStateCache(1<<40, nil)
				heap := heapGrowth(func() {
					for i := range n {
						ch, size := tc.make(t, i)
						c.put(ch, cacheSize(ch.Key, size))
					}
				})
				require.Positive(t, heap)
				ratio = float64(c.held()) / float64(heap)
				t.Logf("%s, attempt %d: estimated %d B, measured %d B per entry", tc.name, attempt, c.held()/n, heap/n)
				runtime.KeepAlive(c)
				if ratio >= 0.95 && ratio <= 1.35 {
					break
				}
			}
			assert.GreaterOrEqual(t, ratio, 0.95, "the estimate must not be below the heap held")
			assert.LessOrEqual(t, ratio, 1.35, "the estimate is too far above the heap held")
		})
	}
}

// TestStateCacheHeapStaysWithinShare: putting far more reservations than fit
// (many switches) leaves the cache's heap within its share.
func TestStateCacheHeapStaysWithinShare(t *testing.T) {
	const share = 8 << 20
	c := newStateCache(share, nil)
	heap := heapGrowth(func() {
		for i := range 200_000 { // about 80 MB of reservations: ten times the share
			ch, size := decodedReservation(t, i)
			c.put(ch, cacheSize(ch.Key, size))
		}
	})
	t.Logf("heap held after 200,000 reservations: %.1f MiB; estimate %.1f MiB; share %d MiB", float64(heap)/(1<<20), float64(c.held())/(1<<20), share>>20)
	assert.LessOrEqual(t, c.held(), int64(share))
	assert.LessOrEqual(t, heap, int64(share*105/100), "the heap the cache holds stays within its share")
	runtime.KeepAlive(c)
}
