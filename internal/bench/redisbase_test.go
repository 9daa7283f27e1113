package bench

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/internal/redisserver"
	"github.com/reservations/reservations/schemas"
)

// newRedisBase starts a throwaway redis-server (appendfsync everysec) and
// loads the scripts; both go away with the test.
func newRedisBase(ctx context.Context, t *testing.T) *redisBase {
	t.Helper()
	srv, err := redisserver.Start(ctx, redisserver.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })
	b, err := openRedisBase(ctx, srv.Addr())
	require.NoError(t, err)
	t.Cleanup(b.close)
	return b
}

func hgetInt(ctx context.Context, t *testing.T, b *redisBase, key, field string) int64 {
	t.Helper()
	v, err := b.rdb.HGet(ctx, key, field).Int64()
	require.NoError(t, err, "%s %s", key, field)
	return v
}

// TestRedisScriptSemantics drives the command script through the SKU core's
// rules one command at a time: idempotency, no oversell, the reservation's
// lifecycle, lazy expiry and the sweeper.
func TestRedisScriptSemantics(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := newRedisBase(ctx, t)
	require.NoError(t, b.setStock(ctx, 5, "A"))
	require.NoError(t, b.setStock(ctx, 10, "B"))
	t0 := time.UnixMilli(1_800_000_000_000)

	reserve := func(id, sku, res string, qty, ttl int64) op {
		return op{typ: schemas.TypeReserve, id: id, sku: sku, res: res, qty: qty, ttl: ttl}
	}
	on := func(typ, id, sku, res string) op {
		o := op{typ: typ, id: id, sku: sku, res: res}
		if typ == schemas.TypeExtend {
			o.ttl = 86400
		}
		return o
	}
	adjust := func(id, res string, qty int64) op {
		return op{typ: schemas.TypeAdjust, id: id, sku: "A", res: res, qty: qty}
	}
	dup := func(o op) op { o.dup = true; return o }
	const day = 86400
	acc, rej := schemas.OutcomeAccepted, schemas.OutcomeRejected
	for i, tc := range []struct {
		o        op
		at       time.Duration // after t0
		outcome  string
		reason   string
		reserved int64 // A's reserved afterwards
	}{
		{reserve("c1", "A", "r1", 3, day), 0, acc, "", 3},
		{dup(reserve("c1", "A", "r1", 3, day)), 0, acc, "", 3},                   // a retry gets the stored answer
		{reserve("c2", "A", "r2", 3, day), 0, rej, "insufficient_stock", 3},      // available 2: no oversell
		{reserve("c3", "A", "r1", 1, day), 0, rej, "reservation_exists", 3},      // the id is taken
		{reserve("c4", "NOPE", "r9", 1, day), 0, rej, "unknown_sku", 3},          // no stock hash
		{adjust("c5", "r1", 5), 0, acc, "", 5},                                   // +2 of 2 available
		{adjust("c6", "r1", 6), 0, rej, "insufficient_stock", 5},                 // +1 of 0
		{reserve("c7", "A", "r2", 1, day), 0, rej, "insufficient_stock", 5},      // available 0
		{adjust("c8", "r1", 2), 0, acc, "", 2},                                   // a decrease always fits
		{on(schemas.TypeExtend, "c9", "A", "r1"), 0, acc, "", 2},                 // first extension
		{on(schemas.TypeExtend, "c10", "A", "r1"), 0, rej, "extension_limit", 2}, // MaxExtensions 1
		{reserve("c11", "A", "r2", 3, day), 0, acc, "", 5},
		{on(schemas.TypeRelease, "c12", "A", "r2"), 0, acc, "", 2},
		{on(schemas.TypeRelease, "c13", "A", "r2"), 0, rej, "reservation_not_active", 2},
		{on(schemas.TypeCommit, "c14", "A", "r1"), 0, acc, "", 0}, // on_hand 5 - 2
		{on(schemas.TypeCommit, "c15", "A", "r1"), 0, rej, "reservation_not_active", 0},
		{on(schemas.TypeRelease, "c16", "A", "nope"), 0, rej, "unknown_reservation", 0},
		{dup(reserve("c3", "A", "r1", 1, day)), 0, rej, "reservation_exists", 0}, // a rejection is stored too
		// Lazy expiry: r4 (2 of on_hand 3) is past expires_at at t0+11s and no
		// longer counts: the reserve of 3 fits.
		{reserve("c17", "A", "r4", 2, 10), 0, acc, "", 2},
		{reserve("c18", "A", "r5", 3, 10), 5 * time.Second, rej, "insufficient_stock", 2},
		{reserve("c19", "A", "r5", 3, day), 11 * time.Second, acc, "", 3},
		{on(schemas.TypeRelease, "c20", "A", "r4"), 11 * time.Second, rej, "reservation_not_active", 3},
		{dup(on(schemas.TypeRelease, "c20", "A", "r4")), 11 * time.Second, rej, "reservation_not_active", 3},
	} {
		o := tc.o
		a, err := b.eval(ctx, b.rdb, &o, t0.Add(tc.at))
		require.NoError(t, err, "step %d %s %s", i, o.typ, o.id)
		b.tally.record(&o, a, false)
		assert.Equal(t, redisAnswer{outcome: tc.outcome, reason: tc.reason, duplicate: o.dup}, a, "step %d %s %s", i, o.typ, o.id)
		assert.Equal(t, tc.reserved, hgetInt(ctx, t, b, redisStockKey("A"), "reserved"), "step %d: reserved", i)
	}
	assert.Equal(t, int64(3), hgetInt(ctx, t, b, redisStockKey("A"), "on_hand"), "commit took r1's 2 off on_hand")
	for res, want := range map[string]string{"r1": "consumed", "r2": "released", "r4": "expired", "r5": "active"} {
		assert.Equal(t, want, b.rdb.HGet(ctx, redisResPrefix("A")+res, "status").Val(), res)
	}
	assert.Equal(t, "o-1", func() string {
		o := on(schemas.TypeCommit, "c21", "A", "r5")
		o.order = "o-1"
		a, err := b.eval(ctx, b.rdb, &o, t0.Add(11*time.Second))
		require.NoError(t, err)
		b.tally.record(&o, a, false)
		return b.rdb.HGet(ctx, redisResPrefix("A")+"r5", "order_id").Val()
	}(), "commit records the order")
	for _, id := range []string{"c1", "c3", "c20"} {
		assert.Equal(t, int64(1), hgetInt(ctx, t, b, redisCmdKey("A", id), "n"), "%s: a re-sent id is never decided again", id)
	}
	ttl, err := b.rdb.PTTL(ctx, redisCmdKey("A", "c1")).Result()
	require.NoError(t, err)
	assert.InDelta(t, b.rules.DedupeWindow.Seconds(), ttl.Seconds(), 60, "a decision is kept for the dedupe window")
	assert.Zero(t, b.rdb.ZCard(ctx, redisExpKey("A")).Val(), "no active hold of A left in its expiry set")

	// The sweeper expires due holds of a SKU, at most limit at a time.
	for i, res := range []string{"r6", "r7", "r8"} {
		o := reserve("s"+res, "B", res, 2, []int64{5, 8, 9}[i])
		a, err := b.eval(ctx, b.rdb, &o, t0)
		require.NoError(t, err)
		b.tally.record(&o, a, false)
		require.Equal(t, acc, a.outcome)
	}
	for _, tc := range []struct {
		at       time.Duration
		limit    int
		expired  int64
		reserved int64
	}{
		{4 * time.Second, 10, 0, 6},
		{6 * time.Second, 10, 1, 4}, // r6 (ttl 5)
		{10 * time.Second, 1, 1, 2}, // r7, limited to one
		{10 * time.Second, 10, 1, 0},
		{10 * time.Second, 10, 0, 0},
	} {
		n, err := b.sweepDue(ctx, "B", t0.Add(tc.at), tc.limit)
		require.NoError(t, err)
		assert.Equal(t, tc.expired, n, "sweep at +%s", tc.at)
		assert.Equal(t, tc.reserved, hgetInt(ctx, t, b, redisStockKey("B"), "reserved"), "sweep at +%s", tc.at)
	}
	assert.Equal(t, "expired", b.rdb.HGet(ctx, redisResPrefix("B")+"r8", "status").Val())

	// An unknown command type is an error, not a decision.
	o := on("stock.set", "x1", "A", "")
	_, err = b.eval(ctx, b.rdb, &o, t0)
	assert.ErrorContains(t, err, "not in the Redis baseline")
	assert.Zero(t, b.rdb.Exists(ctx, redisCmdKey("A", "x1")).Val())

	c := b.check(ctx, SystemRedis, redisserver.FsyncEverysec)
	assert.True(t, c.OK(), c.summary())
	assert.Equal(t, 2, c.SKUs)
	assert.Equal(t, 7, c.Reservations)
	assert.Zero(t, c.Active)
	assert.Equal(t, c.Decided, c.Decisions)
	assert.Equal(t, 3, c.Duplicates)
}

// TestRedisCheckDetects breaks each invariant of a consistent state and
// checks that the check counts it and that the report turns it into a
// violation.
func TestRedisCheckDetects(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b := newRedisBase(ctx, t)
	cfg, err := Config{Mode: ModeTiny}.withDefaults()
	require.NoError(t, err)
	r := &run{cfg: cfg, out: logWriter{t}, rep: newReport(cfg)}
	skus := make([]string, cfg.SKUs)
	for i := range skus {
		skus[i] = uniformSKU(i)
	}
	require.NoError(t, b.setStock(ctx, uniformOnHand, skus...))

	// Consistent: a hot step and a mixed step (re-sent ids) through the
	// closed loop on several clients.
	hot := genPlan(WorkloadHot, "h1", 300, cfg.SKUs, 1)
	st, err := r.redisStep(ctx, b, SystemRedis, hot, 8)
	require.NoError(t, err)
	require.Zero(t, st.Errors)
	assert.Positive(t, st.Rejected, "the hot SKU's stock covers 60%% of the asks")
	assert.LessOrEqual(t, st.HotAccepted, hot.hotStock)
	mixed := genPlan(WorkloadMixed, "m1", 600, cfg.SKUs, 2)
	st, err = r.redisStep(ctx, b, SystemRedis, mixed, 8)
	require.NoError(t, err)
	require.Zero(t, st.Errors)
	require.Positive(t, st.Duplicates, "the mixed workload re-sends ids")
	c := b.check(ctx, SystemRedis, redisserver.FsyncEverysec)
	require.True(t, c.OK(), c.summary())
	assert.Equal(t, cfg.SKUs+1, c.SKUs)
	assert.Equal(t, st.Duplicates, c.Duplicates)
	assert.Equal(t, hot.slots+mixed.slots, c.Decisions)

	// Find an active hold of a uniform SKU to break.
	var sku, res string
	for _, ss := range mixed.sessions {
		if len(ss) == 1 && ss[0].typ == schemas.TypeReserve {
			sku, res = ss[0].sku, ss[0].res
			break
		}
	}
	require.NotEmpty(t, sku, "a mixed session left active")
	require.Equal(t, "active", b.rdb.HGet(ctx, redisResPrefix(sku)+res, "status").Val())

	for _, tc := range []struct {
		name    string
		corrupt func()
		field   func(*RedisCheck) int
	}{
		{"reserved != sum(active)", func() { b.rdb.HIncrBy(ctx, redisStockKey(sku), "reserved", 1) },
			func(c *RedisCheck) int { return c.Mismatched }},
		{"oversold", func() {
			b.rdb.HSet(ctx, redisStockKey("OVER"), "on_hand", 1, "reserved", 2)
			for _, id := range []string{"o1", "o2"} {
				b.rdb.HSet(ctx, redisResPrefix("OVER")+id, "sku", "OVER", "qty", 1, "status", "active", "expires_at", 5)
				b.rdb.ZAdd(ctx, redisExpKey("OVER"), redis.Z{Score: 5, Member: id})
			}
		}, func(c *RedisCheck) int { return c.Oversold }},
		{"expiry set", func() { b.rdb.ZRem(ctx, redisExpKey(sku), res) },
			func(c *RedisCheck) int { return c.ExpiryMismatched }},
		{"decided twice", func() { b.rdb.HIncrBy(ctx, redisCmdKey(mixed.sessions[0][0].sku, mixed.sessions[0][0].id), "n", 1) },
			func(c *RedisCheck) int { return c.Redecided }},
		{"decision lost", func() { b.rdb.Del(ctx, redisCmdKey(hot.sessions[0][0].sku, hot.sessions[0][0].id)) },
			func(c *RedisCheck) int { return c.Unaccounted }},
		{"re-sent id decided again", func() {
			o := mixed.sessions[0][0]
			o.dup = true
			b.tally.record(&o, redisAnswer{outcome: schemas.OutcomeAccepted}, false)
		}, func(c *RedisCheck) int { return c.AnswerMismatches }},
	} {
		tc.corrupt()
		c := b.check(ctx, SystemRedis, redisserver.FsyncEverysec)
		assert.False(t, c.OK(), tc.name)
		assert.Positive(t, tc.field(&c), "%s: %s", tc.name, c.summary())
	}

	c = b.check(ctx, SystemRedis, redisserver.FsyncEverysec)
	assert.Equal(t, 1, c.Mismatched)
	assert.Equal(t, 1, c.Oversold)
	assert.Equal(t, 1, c.ExpiryMismatched)
	assert.Equal(t, 1, c.Redecided)
	assert.Equal(t, 1, c.AnswerMismatches)
	// The report: redis_violations counts them, the oversell row carries the
	// decision violations as an error and the oversell target is missed.
	rep := newReport(cfg)
	rep.Redis.Checks = []RedisCheck{c}
	rep.Oversell = []OversellCheck{c.oversell()}
	assert.NotEmpty(t, rep.Oversell[0].Error)
	rep.finish()
	assert.Equal(t, float64(c.Violations()), rep.Headline["redis_violations"])
	assert.GreaterOrEqual(t, rep.Headline["redis_violations"], 6.0)
	last := rep.Targets[len(rep.Targets)-1]
	assert.Equal(t, "invariant_violations", last.Key)
	assert.False(t, last.Met)
}
