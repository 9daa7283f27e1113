package bench

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/reservations/reservations/internal/redisserver"
	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/schemas"
)

// The Redis baseline: what many shops run for flash-sale stock. One Lua
// script per reservation command, called with EVALSHA (the script is loaded
// once per server); Redis runs a script alone on its command thread, so each
// command is atomic without locks or retries. The script follows the SKU
// core's rules (processor/sku) for the commands the workloads send:
//
//   - idempotency by command_id: the first decision is stored (outcome and
//     reason, kept for the core's dedupe window) and a re-sent id gets it back
//     as a duplicate, undecided again;
//   - reserve: unknown_sku, reservation_exists, insufficient_stock when
//     available (on_hand - reserved) <= 0 or below the quantity (no oversell),
//     else HINCRBY reserved, the reservation hash and its expires_at in the
//     SKU's expiry sorted set;
//   - adjust (an increase needs available stock), extend (at most
//     MaxExtensions), release and commit (commit also takes the quantity off
//     on_hand) of an active reservation, else unknown_reservation or
//     reservation_not_active;
//   - expiry: an active hold past expires_at never counts against
//     availability: every command on a SKU first expires its due holds (the
//     core's lazy expiry), and a sweeper script expires due holds of a SKU.
//
// Keys carry the SKU as hash tag ({sku}), so that one command's keys share a
// cluster slot (the script also reaches the SKU's due reservations by the same
// tag): stock:{sku} (on_hand, reserved), res:{sku}:<reservation_id> (sku, qty,
// status, expires_at, ext, cart_id, order_id), cmd:{sku}:<command_id> (o,
// reason, n: how often it was decided) and exp:{sku} (reservation ids scored
// by expires_at in ms).
//
// Two durability classes run: appendfsync everysec (SystemRedis, the row
// comparable with the pipeline, whose embedded broker does not fsync per
// write) and appendfsync always (SystemRedisAlways), both with the
// append-only file on and RDB snapshots off.
const (
	SystemRedis       = "redis"        // appendonly yes, appendfsync everysec
	SystemRedisAlways = "redis_always" // appendonly yes, appendfsync always
)

// redisSystems are the Redis baselines and their fsync policy, in report order.
var redisSystems = []struct{ system, fsync string }{
	{SystemRedis, redisserver.FsyncEverysec},
	{SystemRedisAlways, redisserver.FsyncAlways},
}

func redisStockKey(sku string) string          { return "stock:{" + sku + "}" }
func redisResPrefix(sku string) string         { return "res:{" + sku + "}:" }
func redisCmdKey(sku, commandID string) string { return "cmd:{" + sku + "}:" + commandID }
func redisExpKey(sku string) string            { return "exp:{" + sku + "}" }

// redisExpireDueLua defines expireDue, shared by both scripts: it expires the
// SKU's active holds whose expires_at <= now (at most limit; limit < 0: all),
// gives their quantity back and returns how many it expired.
const redisExpireDueLua = `
local function expireDue(stock, expk, prefix, now, limit)
  local ids
  if limit < 0 then
    ids = redis.call('ZRANGE', expk, '-inf', now, 'BYSCORE')
  else
    ids = redis.call('ZRANGE', expk, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  end
  local n = 0
  for _, id in ipairs(ids) do
    local k = prefix .. id
    local r = redis.call('HMGET', k, 'status', 'qty')
    redis.call('ZREM', expk, id)
    if r[1] == 'active' then
      redis.call('HSET', k, 'status', 'expired')
      redis.call('HINCRBY', stock, 'reserved', -tonumber(r[2]))
      n = n + 1
    end
  end
  return n
end
`

// redisCommandLua decides one command.
//
// KEYS: 1 stock:{sku}, 2 res:{sku}:<reservation_id>, 3 cmd:{sku}:<command_id>,
// 4 exp:{sku}. ARGV: 1 type, 2 sku, 3 reservation_id, 4 quantity, 5 ttl
// seconds, 6 now (unix ms), 7 order_id, 8 cart_id, 9 max extensions, 10 dedupe
// window (ms), 11 the key prefix of the SKU's reservations (res:{sku}:).
// Reply: {outcome, reason, duplicate (0 or 1)}.
const redisCommandLua = redisExpireDueLua + `
local stock, resk, cmdk, expk = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local typ, sku, rid = ARGV[1], ARGV[2], ARGV[3]
local qty, ttl, now = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local types = {reserve = true, adjust = true, extend = true, release = true, commit = true}
if not types[typ] then
  return redis.error_reply('command type ' .. typ .. ': not in the Redis baseline')
end

local prev = redis.call('HMGET', cmdk, 'o', 'reason')
if prev[1] then
  return {prev[1], prev[2] or '', 1}
end
local function decide(o, reason)
  redis.call('HSET', cmdk, 'o', o, 'reason', reason)
  redis.call('HINCRBY', cmdk, 'n', 1)
  redis.call('PEXPIRE', cmdk, ARGV[10])
  return {o, reason, 0}
end
local function available()
  local s = redis.call('HMGET', stock, 'on_hand', 'reserved')
  return tonumber(s[1]) - tonumber(s[2])
end

local known = redis.call('EXISTS', stock) == 1
if known then
  expireDue(stock, expk, ARGV[11], now, -1)
end

if typ == 'reserve' then
  if not known then return decide('rejected', 'unknown_sku') end
  if redis.call('EXISTS', resk) == 1 then return decide('rejected', 'reservation_exists') end
  local avail = available()
  if avail <= 0 or qty > avail then return decide('rejected', 'insufficient_stock') end
  local exp = now + ttl * 1000
  redis.call('HINCRBY', stock, 'reserved', qty)
  redis.call('HSET', resk, 'sku', sku, 'qty', qty, 'status', 'active', 'expires_at', exp, 'ext', 0, 'cart_id', ARGV[8])
  redis.call('ZADD', expk, exp, rid)
  return decide('accepted', '')
end

-- Commands on an existing reservation.
local r = redis.call('HMGET', resk, 'status', 'qty', 'ext')
if not r[1] then return decide('rejected', 'unknown_reservation') end
if r[1] ~= 'active' then return decide('rejected', 'reservation_not_active') end
if not known then return decide('rejected', 'unknown_sku') end
local cur = tonumber(r[2])
if typ == 'adjust' then
  local delta = qty - cur
  if delta > 0 and delta > available() then return decide('rejected', 'insufficient_stock') end
  if delta ~= 0 then redis.call('HINCRBY', stock, 'reserved', delta) end
  redis.call('HSET', resk, 'qty', qty)
  return decide('accepted', '')
elseif typ == 'extend' then
  if tonumber(r[3]) >= tonumber(ARGV[9]) then return decide('rejected', 'extension_limit') end
  local exp = now + ttl * 1000
  redis.call('HSET', resk, 'expires_at', exp)
  redis.call('HINCRBY', resk, 'ext', 1)
  redis.call('ZADD', expk, exp, rid)
  return decide('accepted', '')
else -- release or commit
  redis.call('ZREM', expk, rid)
  redis.call('HINCRBY', stock, 'reserved', -cur)
  if typ == 'release' then
    redis.call('HSET', resk, 'status', 'released')
  else
    redis.call('HSET', resk, 'status', 'consumed', 'order_id', ARGV[7])
    if redis.call('HINCRBY', stock, 'on_hand', -cur) < 0 then
      redis.call('HSET', stock, 'on_hand', 0)
    end
  end
end
return decide('accepted', '')
`

// redisSweepLua is the expiry sweeper of one SKU. KEYS: 1 stock:{sku}, 2
// exp:{sku}. ARGV: 1 now (unix ms), 2 at most this many holds, 3 res:{sku}:.
// Reply: the holds it expired.
const redisSweepLua = redisExpireDueLua + `
return expireDue(KEYS[1], KEYS[2], ARGV[3], tonumber(ARGV[1]), tonumber(ARGV[2]))
`

// redisBase is one Redis baseline's server connection and scripts.
type redisBase struct {
	addr  string
	rdb   *redis.Client // setup, sweeps and the check (steps get their own pool)
	cmd   string        // SHA1 of redisCommandLua
	sweep string        // SHA1 of redisSweepLua
	rules sku.Rules
	tally redisTally
}

// redisOptions are the client options of the baseline: a pool of size
// connections, no retries (a command is sent once, like the SQL baselines'),
// the context's deadline honoured, and none of the handshakes Redis 7.0 does
// not know (client identity, maintenance notifications).
func redisOptions(addr string, size int) *redis.Options {
	return &redis.Options{
		Addr: addr, Protocol: 2, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		PoolSize:                 size, MinIdleConns: size, MaxActiveConns: size, MaxRetries: -1,
		ContextTimeoutEnabled: true, ReadTimeout: opTimeout, WriteTimeout: opTimeout, PoolTimeout: opTimeout,
	}
}

// openRedisBase connects to addr and loads the scripts.
func openRedisBase(ctx context.Context, addr string) (*redisBase, error) {
	b := &redisBase{addr: addr, rdb: redis.NewClient(redisOptions(addr, 4)), rules: sku.DefaultRules()}
	var err error
	if b.cmd, err = b.rdb.ScriptLoad(ctx, redisCommandLua).Result(); err != nil {
		b.close()
		return nil, fmt.Errorf("load the command script: %w", err)
	}
	if b.sweep, err = b.rdb.ScriptLoad(ctx, redisSweepLua).Result(); err != nil {
		b.close()
		return nil, fmt.Errorf("load the sweep script: %w", err)
	}
	return b, nil
}

func (b *redisBase) close() { _ = b.rdb.Close() }

// setStock sets the on_hand of SKUs (reserved 0), pipelined in batches.
func (b *redisBase) setStock(ctx context.Context, onHand int64, skus ...string) error {
	for start := 0; start < len(skus); start += 1000 {
		pipe := b.rdb.Pipeline()
		for _, s := range skus[start:min(start+1000, len(skus))] {
			pipe.HSet(ctx, redisStockKey(s), "on_hand", onHand, "reserved", 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("set redis stock: %w", err)
		}
	}
	return nil
}

// sweepDue runs the expiry sweeper on sku at now: at most limit holds.
func (b *redisBase) sweepDue(ctx context.Context, sku string, now time.Time, limit int) (int64, error) {
	n, err := b.rdb.EvalSha(ctx, b.sweep, []string{redisStockKey(sku), redisExpKey(sku)},
		now.UnixMilli(), limit, redisResPrefix(sku)).Int64()
	if err != nil {
		return 0, fmt.Errorf("sweep %s: %w", sku, err)
	}
	return n, nil
}

// redisAnswer is the script's reply to one command.
type redisAnswer struct {
	outcome, reason string
	duplicate       bool
}

func (a redisAnswer) String() string {
	if a.reason == "" {
		return a.outcome
	}
	return a.outcome + "/" + a.reason
}

// eval sends o to the command script on rdb at now.
func (b *redisBase) eval(ctx context.Context, rdb *redis.Client, o *op, now time.Time) (redisAnswer, error) {
	keys := []string{redisStockKey(o.sku), redisResPrefix(o.sku) + o.res, redisCmdKey(o.sku, o.id), redisExpKey(o.sku)}
	cart := ""
	if o.typ == schemas.TypeReserve {
		cart = "cart-" + o.res
	}
	v, err := rdb.EvalSha(ctx, b.cmd, keys, o.typ, o.sku, o.res, o.qty, o.ttl, now.UnixMilli(), o.order, cart,
		b.rules.MaxExtensions, b.rules.DedupeWindow.Milliseconds(), redisResPrefix(o.sku)).Slice()
	if err != nil {
		return redisAnswer{}, err
	}
	if len(v) != 3 {
		return redisAnswer{}, fmt.Errorf("script replied %v: want {outcome, reason, duplicate}", v)
	}
	a := redisAnswer{}
	var ok1, ok2 bool
	a.outcome, ok1 = v[0].(string)
	a.reason, ok2 = v[1].(string)
	d, ok3 := v[2].(int64)
	if !ok1 || !ok2 || !ok3 {
		return redisAnswer{}, fmt.Errorf("script replied %#v: want {string, string, integer}", v)
	}
	a.duplicate = d == 1
	return a, nil
}

// redisTally is what the clients saw of one baseline, across its steps: the
// command ids decided (answered, not as duplicates), and every answer that
// breaks "one decision per command id".
type redisTally struct {
	decided atomic.Int64
	errors  atomic.Int64
	dups    atomic.Int64 // re-sent ids answered with the stored result
	first   sync.Map     // command id of a re-sent command -> its first answer (string)

	mu       sync.Mutex
	mismatch int
	samples  []string
}

func (t *redisTally) violation(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.mismatch++
	if len(t.samples) < 5 {
		t.samples = append(t.samples, fmt.Sprintf(format, args...))
	}
}

// record checks an answer: a fresh command is decided (never answered as a
// duplicate), a re-sent one is answered as a duplicate with its first answer.
func (t *redisTally) record(o *op, a redisAnswer, resent bool) {
	switch {
	case a.duplicate && !o.dup:
		t.violation("command %s was answered as a duplicate on its first send", o.id)
	case !a.duplicate && o.dup:
		t.decided.Add(1)
		t.violation("re-sent command %s was decided again (%s)", o.id, a)
	case !a.duplicate:
		t.decided.Add(1)
	default:
		t.dups.Add(1)
	}
	if !resent {
		return
	}
	if !o.dup {
		t.first.Store(o.id, a.String())
		return
	}
	if prev, ok := t.first.Load(o.id); !ok {
		t.violation("re-sent command %s: its first answer is unknown", o.id)
	} else if prev != a.String() {
		t.violation("re-sent command %s answered %s, first answered %s", o.id, a, prev)
	}
}

// redisExec executes commands of one step against one baseline.
type redisExec struct {
	base   *redisBase
	rdb    *redis.Client
	resent map[string]struct{} // command ids the step sends twice
}

func (x *redisExec) exec(ctx context.Context, o *op) (outcome, error) {
	a, err := x.base.eval(ctx, x.rdb, o, time.Now())
	if err != nil {
		x.base.tally.errors.Add(1)
		return outcome{}, fmt.Errorf("%s %s: %w", o.typ, o.id, err)
	}
	_, resent := x.resent[o.id]
	x.base.tally.record(o, a, resent)
	return outcome{accepted: a.outcome == schemas.OutcomeAccepted && !a.duplicate, duplicate: a.duplicate}, nil
}

// resentIDs are the command ids p sends twice.
func resentIDs(p *plan) map[string]struct{} {
	ids := map[string]struct{}{}
	for _, ss := range p.sessions {
		for i := range ss {
			if ss[i].dup {
				ids[ss[i].id] = struct{}{}
			}
		}
	}
	return ids
}

// redisPhase runs both Redis baselines over the same workloads and
// concurrencies as the SQL baselines, each on its own throwaway server, and
// checks each server's state afterwards: a violation fails the run.
func (r *run) redisPhase(ctx context.Context) error {
	for _, rs := range redisSystems {
		if err := r.redisSystem(ctx, rs.system, rs.fsync); err != nil {
			return fmt.Errorf("%s: %w", rs.system, err)
		}
	}
	return nil
}

func (r *run) redisSystem(ctx context.Context, system, fsync string) error {
	cfg := &r.cfg
	srv, err := redisserver.Start(ctx, redisserver.Options{AppendFsync: fsync})
	if err != nil {
		return fmt.Errorf("start a throwaway redis-server: %w", err)
	}
	defer func() { _ = srv.Stop() }() // nothing left to measure; a leftover directory is swept by the next start
	r.logf("redis: %s (%s)", srv.Source(), srv.Settings())
	r.rep.Redis.Version = srv.Version()
	r.rep.Redis.Servers = append(r.rep.Redis.Servers, RedisServer{System: system, AppendFsync: fsync, Settings: srv.Settings()})
	b, err := openRedisBase(ctx, srv.Addr())
	if err != nil {
		return err
	}
	defer b.close()
	skus := make([]string, cfg.SKUs)
	for i := range skus {
		skus[i] = uniformSKU(i)
	}
	if err := b.setStock(ctx, uniformOnHand, skus...); err != nil {
		return err
	}
	for _, w := range Workloads {
		warm := genPlan(w, r.tag("w"), min(200, cfg.MinOps), cfg.SKUs, seedOf(w, -1))
		if _, err := r.redisStep(ctx, b, system, warm, min(16, slices.Max(cfg.Concurrencies))); err != nil {
			return fmt.Errorf("warm-up %s: %w", w, err)
		}
		for _, c := range cfg.Concurrencies {
			p := genPlan(w, r.tag("k"), cfg.stepOps(c), cfg.SKUs, seedOf(w, c))
			st, err := r.redisStep(ctx, b, system, p, c)
			if err != nil {
				return fmt.Errorf("%s clients=%d: %w", w, c, err)
			}
			st.Workload = w
			r.addStep(st)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	c := b.check(ctx, system, fsync)
	r.rep.Redis.Checks = append(r.rep.Redis.Checks, c)
	r.rep.Oversell = append(r.rep.Oversell, c.oversell())
	r.logf("%s invariant check: %s", system, c.summary())
	if !c.OK() {
		return fmt.Errorf("invariant check failed: %s", c.summary())
	}
	return nil
}

// redisStep runs one closed-loop step of a Redis baseline on a fresh pool of
// min(clients, PoolCap) connections, opened before the step.
func (r *run) redisStep(ctx context.Context, b *redisBase, system string, p *plan, clients int) (Step, error) {
	size := min(clients, r.cfg.PoolCap)
	st := Step{System: system, Pool: size}
	if p.hotSKU != "" {
		if err := b.setStock(ctx, p.hotStock, p.hotSKU); err != nil {
			return st, err
		}
	}
	rdb := redis.NewClient(redisOptions(b.addr, size))
	defer rdb.Close()
	conns := make([]*redis.Conn, 0, size)
	for range size {
		c := rdb.Conn()
		conns = append(conns, c)
		if err := c.Ping(ctx).Err(); err != nil {
			for _, c := range conns {
				_ = c.Close()
			}
			return st, fmt.Errorf("open redis connections: %w", err)
		}
	}
	for _, c := range conns {
		_ = c.Close() // back to the pool
	}
	closedLoop(ctx, &redisExec{base: b, rdb: rdb, resent: resentIDs(p)}, p, clients, r.cfg.StepTimeout, &st)
	if st.Completed == 0 && st.Errors > 0 {
		return st, fmt.Errorf("every command failed (%d errors)", st.Errors)
	}
	return st, nil
}

// RedisInfo is what the report says about the Redis baselines.
type RedisInfo struct {
	Version string        `json:"version,omitempty"`
	Servers []RedisServer `json:"servers,omitempty"`
	Checks  []RedisCheck  `json:"checks,omitempty"`
}

// RedisServer is the server of one Redis baseline.
type RedisServer struct {
	System      string `json:"system"`
	AppendFsync string `json:"appendfsync"`
	Settings    string `json:"settings"`
}

// RedisCheck is the invariant check of one Redis baseline after its steps,
// read from the server's state (and the clients' tally of answers).
type RedisCheck struct {
	System      string `json:"system"`
	AppendFsync string `json:"appendfsync"`
	// SKUs checked; Oversold: reserved > on_hand (or below 0); Mismatched:
	// reserved != the sum of its active reservations (or active reservations
	// of a SKU without stock); ExpiryMismatched: the SKU's expiry set is not
	// exactly its active reservations scored by their expires_at.
	SKUs             int `json:"skus"`
	Oversold         int `json:"oversold_skus"`
	Mismatched       int `json:"mismatched_skus"`
	ExpiryMismatched int `json:"expiry_mismatched_skus"`
	Reservations     int `json:"reservations"`
	Active           int `json:"active"`
	// Decisions stored (command ids); Decided: ids the clients saw decided;
	// Errors: commands that failed at the client (decided or not); Duplicates:
	// re-sent ids answered with the stored result.
	Decisions  int `json:"decisions"`
	Decided    int `json:"decided"`
	Errors     int `json:"errors"`
	Duplicates int `json:"duplicates"`
	// Redecided: stored ids decided more than once (n != 1); Unaccounted:
	// stored decisions outside [Decided, Decided+Errors]; AnswerMismatches:
	// a re-sent id decided again or answered differently, a fresh id answered
	// as a duplicate.
	Redecided        int      `json:"redecided"`
	Unaccounted      int      `json:"unaccounted"`
	AnswerMismatches int      `json:"answer_mismatches"`
	Samples          []string `json:"samples,omitempty"`
	Error            string   `json:"error,omitempty"`
}

// Violations counts every broken invariant.
func (c *RedisCheck) Violations() int {
	return c.Oversold + c.Mismatched + c.ExpiryMismatched + c.Redecided + c.Unaccounted + c.AnswerMismatches
}

// OK reports whether the check ran and found nothing wrong.
func (c *RedisCheck) OK() bool { return c.Error == "" && c.SKUs > 0 && c.Violations() == 0 }

func (c *RedisCheck) summary() string {
	s := fmt.Sprintf("%d SKUs, %d oversold, %d with reserved != sum(active), %d with expiry set != active holds; "+
		"%d reservations (%d active); %d decisions stored for %d decided ids (%d client errors), %d decided more than once, "+
		"%d unaccounted, %d answers breaking one decision per id, %d duplicates answered as stored",
		c.SKUs, c.Oversold, c.Mismatched, c.ExpiryMismatched, c.Reservations, c.Active, c.Decisions, c.Decided, c.Errors,
		c.Redecided, c.Unaccounted, c.AnswerMismatches, c.Duplicates)
	if len(c.Samples) > 0 {
		s += " (" + strings.Join(c.Samples, "; ") + ")"
	}
	if c.Error != "" {
		s += ": check failed: " + c.Error
	}
	return s
}

// oversell is the check as a row of the report's oversell table; a broken
// decision invariant is an error of the row.
func (c *RedisCheck) oversell() OversellCheck {
	o := OversellCheck{System: c.System, Scope: "all steps, all SKUs and command ids (Redis)", SKUsChecked: c.SKUs,
		OversoldSKUs: c.Oversold, MismatchedSKUs: c.Mismatched + c.ExpiryMismatched, Error: c.Error,
		Detail: fmt.Sprintf("%d command ids each decided once, %d re-sent ids answered with the stored result",
			c.Decisions, c.Duplicates)}
	if d := c.Redecided + c.Unaccounted + c.AnswerMismatches; d > 0 && o.Error == "" {
		o.Error = fmt.Sprintf("%d violations of one decision per command id", d)
	}
	return o
}

// redisHold is a reservation as the check reads it.
type redisHold struct {
	sku, status string
	qty         int64
	expiresAt   float64
}

// check reads the server's whole state (no traffic may run) and verifies it
// against itself and the clients' tally.
func (b *redisBase) check(ctx context.Context, system, fsync string) RedisCheck {
	t := &b.tally
	c := RedisCheck{System: system, AppendFsync: fsync, Decided: int(t.decided.Load()), Errors: int(t.errors.Load()),
		Duplicates: int(t.dups.Load())}
	t.mu.Lock()
	c.AnswerMismatches, c.Samples = t.mismatch, append([]string(nil), t.samples...)
	t.mu.Unlock()
	if err := b.checkState(ctx, &c); err != nil {
		c.Error = err.Error()
	}
	return c
}

func (b *redisBase) checkState(ctx context.Context, c *RedisCheck) error {
	keys := map[string][]string{}
	iter := b.rdb.Scan(ctx, 0, "*", 2000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		kind, _, _ := strings.Cut(k, ":")
		keys[kind] = append(keys[kind], k)
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("scan keys: %w", err)
	}
	type stockRow struct{ onHand, reserved int64 }
	stock := map[string]stockRow{}
	err := b.read(ctx, keys["stock"], func(p redis.Pipeliner, k string) redis.Cmder {
		return p.HMGet(ctx, k, "on_hand", "reserved")
	}, func(k string, cmd redis.Cmder) error {
		v := cmd.(*redis.SliceCmd).Val()
		onHand, err1 := toInt(v[0])
		reserved, err2 := toInt(v[1])
		if err1 != nil || err2 != nil {
			return fmt.Errorf("%s: on_hand %v, reserved %v", k, v[0], v[1])
		}
		stock[tagOf(k)] = stockRow{onHand, reserved}
		return nil
	})
	if err != nil {
		return err
	}
	holds := map[string]map[string]redisHold{} // sku -> reservation id -> hold
	err = b.read(ctx, keys["res"], func(p redis.Pipeliner, k string) redis.Cmder {
		return p.HMGet(ctx, k, "sku", "status", "qty", "expires_at")
	}, func(k string, cmd redis.Cmder) error {
		v := cmd.(*redis.SliceCmd).Val()
		h := redisHold{}
		h.sku, _ = v[0].(string)
		h.status, _ = v[1].(string)
		qty, err1 := toInt(v[2])
		exp, err2 := toInt(v[3])
		if err1 != nil || err2 != nil || h.sku != tagOf(k) {
			return fmt.Errorf("%s: malformed reservation %v", k, v)
		}
		h.qty, h.expiresAt = qty, float64(exp)
		if holds[h.sku] == nil {
			holds[h.sku] = map[string]redisHold{}
		}
		holds[h.sku][strings.TrimPrefix(k, redisResPrefix(h.sku))] = h
		c.Reservations++
		if h.status == schemas.StatusActive {
			c.Active++
		}
		return nil
	})
	if err != nil {
		return err
	}
	expiry := map[string][]redis.Z{}
	err = b.read(ctx, keys["exp"], func(p redis.Pipeliner, k string) redis.Cmder {
		return p.ZRangeWithScores(ctx, k, 0, -1)
	}, func(k string, cmd redis.Cmder) error {
		expiry[tagOf(k)] = cmd.(*redis.ZSliceCmd).Val()
		return nil
	})
	if err != nil {
		return err
	}
	err = b.read(ctx, keys["cmd"], func(p redis.Pipeliner, k string) redis.Cmder {
		return p.HGet(ctx, k, "n")
	}, func(k string, cmd redis.Cmder) error {
		c.Decisions++
		if n, err := cmd.(*redis.StringCmd).Int(); err != nil || n != 1 {
			c.Redecided++
		}
		return nil
	})
	if err != nil {
		return err
	}

	for s, row := range stock {
		c.SKUs++
		if row.reserved > row.onHand || row.reserved < 0 {
			c.Oversold++
		}
		var sum int64
		active := map[string]float64{}
		for id, h := range holds[s] {
			if h.status == schemas.StatusActive {
				sum += h.qty
				active[id] = h.expiresAt
			}
		}
		if sum != row.reserved {
			c.Mismatched++
		}
		zs := expiry[s]
		same := len(zs) == len(active)
		for _, z := range zs {
			id, _ := z.Member.(string)
			if exp, ok := active[id]; !ok || exp != z.Score {
				same = false
			}
		}
		if !same {
			c.ExpiryMismatched++
		}
	}
	for s, hs := range holds {
		if _, ok := stock[s]; ok {
			continue
		}
		for _, h := range hs {
			if h.status == schemas.StatusActive {
				c.Mismatched++ // an active hold of a SKU without stock
				break
			}
		}
	}
	for s := range expiry {
		if _, ok := stock[s]; !ok {
			c.ExpiryMismatched++
		}
	}
	switch {
	case c.Decisions < c.Decided:
		c.Unaccounted = c.Decided - c.Decisions
	case c.Decisions > c.Decided+c.Errors:
		c.Unaccounted = c.Decisions - c.Decided - c.Errors
	}
	return nil
}

// read queues one command per key on a pipeline (batches of 1000) and hands
// each reply to use.
func (b *redisBase) read(ctx context.Context, keys []string, queue func(redis.Pipeliner, string) redis.Cmder,
	use func(string, redis.Cmder) error) error {
	for start := 0; start < len(keys); start += 1000 {
		batch := keys[start:min(start+1000, len(keys))]
		pipe := b.rdb.Pipeline()
		cmds := make([]redis.Cmder, len(batch))
		for i, k := range batch {
			cmds[i] = queue(pipe, k)
		}
		if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
			return fmt.Errorf("read %s...: %w", batch[0], err)
		}
		for i, k := range batch {
			if err := use(k, cmds[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// tagOf returns the hash tag of a key (the SKU in "kind:{sku}...").
func tagOf(key string) string {
	_, rest, _ := strings.Cut(key, "{")
	tag, _, _ := strings.Cut(rest, "}")
	return tag
}

func toInt(v any) (int64, error) {
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("not a string: %v", v)
	}
	return strconv.ParseInt(s, 10, 64)
}

// finishRedis adds the Redis baselines' broken invariants to the headline (a
// check that failed to run is in oversell_checks_failed, through its
// oversell row).
func (rep *Report) finishRedis() {
	if len(rep.Redis.Checks) == 0 {
		return
	}
	v := 0
	for i := range rep.Redis.Checks {
		c := &rep.Redis.Checks[i]
		v += c.Violations()
	}
	rep.Headline["redis_violations"] = float64(v)
}

// RedisRow is one workload of the report's Redis table.
type RedisRow struct {
	Workload                    string
	BestSQL, Redis, RedisAlways *Best // nil: not measured
	// VsRedis is the pipeline's best throughput over Redis everysec's.
	VsRedis float64
}

// RedisRows are the rows of the report's Redis table (none when Redis was not
// measured).
func (rep *Report) RedisRows() []RedisRow {
	var rows []RedisRow
	for _, w := range Workloads {
		row := RedisRow{Workload: w}
		for sys, dst := range map[string]**Best{SystemBestSQL: &row.BestSQL, SystemRedis: &row.Redis, SystemRedisAlways: &row.RedisAlways} {
			if b, ok := rep.bestOfSystem(sys, w); ok {
				*dst = &b
			}
		}
		if row.Redis == nil && row.RedisAlways == nil {
			continue
		}
		p, _ := rep.bestOfSystem(SystemPipeline, w)
		row.VsRedis = ratio(p.Throughput, throughput(row.Redis))
		rows = append(rows, row)
	}
	return rows
}

// RedisSettings describes the Redis baselines' servers for the report.
func (rep *Report) RedisSettings() string {
	var out []string
	for _, s := range rep.Redis.Servers {
		out = append(out, s.System+": "+s.Settings)
	}
	return strings.Join(out, "; ")
}
