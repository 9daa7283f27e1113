package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The SQL design of an all-or-nothing cart hold: one READ COMMITTED
// transaction per cart command, row locks taken in SKU order (so two carts
// never deadlock):
//
//	cart.reserve: BEGIN; SELECT sku, on_hand - reserved FROM stock WHERE sku =
//	ANY(the 3 SKUs) ORDER BY sku FOR UPDATE; check every line's availability in
//	the application (ROLLBACK when one is short); one statement that UPDATEs the
//	3 stock rows and INSERTs the 3 reservation rows (a data-modifying CTE);
//	COMMIT. 4 round trips.
//	cart.release: BEGIN; SELECT the cart's active reservation rows joined to
//	their stock rows ORDER BY sku FOR UPDATE (locks both); one statement that
//	marks the reservations released and gives the quantity back; COMMIT.
//
// Retried on 40001/40P01 like the Serializable baseline (they do not happen:
// the lock order is total). No idempotency record per command_id (the pipeline
// stores one per cart command and per line command): that favours SQL.
const (
	sqlCartSchema = "bench_cart"

	sqlCartLock = `SELECT sku, on_hand - reserved FROM stock WHERE sku = ANY($1) ORDER BY sku FOR UPDATE`
	sqlCartHold = `WITH v AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS v(sku, q)),
	s AS (UPDATE stock SET reserved = stock.reserved + v.q FROM v WHERE stock.sku = v.sku)
	INSERT INTO reservations (reservation_id, sku, quantity, status, expires_at, cart_id)
	SELECT $3::text || '/' || v.sku, v.sku, v.q, 'active', now() + $4::int * interval '1 second', $5 FROM v`
	sqlCartLockHolds = `SELECT s.sku FROM reservations r JOIN stock s ON s.sku = r.sku
	WHERE r.cart_id = $1 AND r.status = 'active' ORDER BY s.sku FOR UPDATE`
	sqlCartFree = `WITH r AS (
		UPDATE reservations SET status = 'released' WHERE cart_id = $1 AND status = 'active' RETURNING sku, quantity)
	UPDATE stock SET reserved = stock.reserved - r.quantity FROM r WHERE stock.sku = r.sku`
)

// createCartSchema (re)creates the cart baseline's tables with the cart stock.
func (r *run) createCartSchema(ctx context.Context) error {
	var rows [][]any
	for _, l := range cartStock(r.cfg.CartSKUs) {
		rows = append(rows, []any{l.sku, l.onHand, int64(0)})
	}
	return r.createStockSchema(ctx, sqlCartSchema, rows, `
			cart_id        text        NOT NULL`,
		`CREATE INDEX ON `+sqlCartSchema+`.reservations (cart_id)`)
}

// sqlCartExec runs cart commands as single transactions.
type sqlCartExec struct{ pool *pgxpool.Pool }

func (x sqlCartExec) reserve(ctx context.Context, c *cartOp) (cartAnswer, error) {
	return x.retry(ctx, c.id, func() (bool, error) { return sqlCartReserve(ctx, x.pool, c) })
}

func (x sqlCartExec) release(ctx context.Context, c *cartOp) (cartAnswer, error) {
	return x.retry(ctx, c.relID, func() (bool, error) { return sqlCartRelease(ctx, x.pool, c) })
}

func (x sqlCartExec) retry(ctx context.Context, id string, fn func() (bool, error)) (cartAnswer, error) {
	a := cartAnswer{visible: -1}
	for attempt := 1; ; attempt++ {
		ok, err := fn()
		if retryable(err) && attempt < maxAttempts && ctx.Err() == nil {
			a.retries++
			continue
		}
		if err != nil {
			return a, fmt.Errorf("cart command %s (attempt %d): %w", id, attempt, err)
		}
		a.accepted = ok
		return a, nil
	}
}

// sqlCartReserve runs one attempt of the cart hold; false: a line is short.
func sqlCartReserve(ctx context.Context, pool *pgxpool.Pool, c *cartOp) (ok bool, err error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer func() {
		if err != nil || !ok {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	rows, err := tx.Query(ctx, sqlCartLock, c.sorted)
	if err != nil {
		return false, err
	}
	n, short := 0, false
	for rows.Next() {
		var sku string
		var avail int64
		if err := rows.Scan(&sku, &avail); err != nil {
			rows.Close()
			return false, err
		}
		if n >= len(c.sorted) || sku != c.sorted[n] || avail < c.sortedQty[n] {
			short = true
		}
		n++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, err
	}
	if short || n != len(c.sorted) {
		return false, nil
	}
	if _, err := tx.Exec(ctx, sqlCartHold, c.sorted, c.sortedQty, c.id, int64(workloadTTL), c.cart); err != nil {
		return false, err
	}
	if err := tx.Commit(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// sqlCartRelease runs one attempt of the cart release (accepted even when the
// cart holds nothing, like the coordinator's cart.release).
func sqlCartRelease(ctx context.Context, pool *pgxpool.Pool, c *cartOp) (ok bool, err error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if _, err := tx.Exec(ctx, sqlCartLockHolds, c.cart); err != nil {
		return false, err
	}
	if _, err := tx.Exec(ctx, sqlCartFree, c.cart); err != nil {
		return false, err
	}
	if err := tx.Commit(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// cartSQLRuns runs the SQL cart steps (the same carts and concurrencies as the
// pipeline's) and checks the tables.
func (r *run) cartSQLRuns(ctx context.Context) error {
	cfg := &r.cfg
	if err := r.createCartSchema(ctx); err != nil {
		return err
	}
	r.logf("carts: SQL, one transaction per cart command, row locks in SKU order (schema %s)", sqlCartSchema)
	warm := genCartPlan(r.tag("cw"), min(100, cfg.CartMinCarts), cfg.CartSKUs, seedOf("cart", -1))
	wst, err := r.sqlCartStep(ctx, warm, min(16, slices.Max(cfg.Concurrencies)))
	if err != nil {
		return fmt.Errorf("SQL cart warm-up: %w", err)
	}
	plans, problems := []*cartPlan{warm}, wst.Problems
	for _, c := range cfg.Concurrencies {
		p := r.cartPlanOf(r.tag("c"), c)
		st, err := r.sqlCartStep(ctx, p, c)
		if err != nil {
			return fmt.Errorf("SQL carts clients=%d: %w", c, err)
		}
		r.rep.Carts.Steps = append(r.rep.Carts.Steps, st)
		r.logCartStep(&st)
		plans, problems = append(plans, p), problems+st.Problems
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	pool, err := r.pg.pool(ctx, sqlCartSchema, 1)
	if err != nil {
		return err
	}
	defer pool.Close()
	chk := checkSQLCarts(ctx, pool, plans)
	chk.Other += problems
	r.rep.Carts.Checks = append(r.rep.Carts.Checks, chk)
	r.rep.Oversell = append(r.rep.Oversell, OversellCheck{System: SystemSQLCart, Scope: chk.Scope,
		SKUsChecked: chk.SKUs, OversoldSKUs: chk.OversoldSKUs, MismatchedSKUs: chk.MismatchedSKUs, Detail: "cart phase", Error: chk.Error})
	r.logCartCheck(&chk)
	return nil
}

// sqlCartStep runs one closed-loop SQL cart step on a fresh pool.
func (r *run) sqlCartStep(ctx context.Context, p *cartPlan, clients int) (CartStep, error) {
	size := min(clients, r.cfg.PoolCap)
	st := CartStep{System: SystemSQLCart, Pool: size}
	pool, err := r.pg.pool(ctx, sqlCartSchema, size)
	if err != nil {
		return st, err
	}
	defer pool.Close()
	cartLoop(ctx, sqlCartExec{pool: pool}, p, clients, r.cfg.CartStepTimeout, &st)
	if st.Carts == 0 && st.Errors > 0 {
		return st, fmt.Errorf("every cart failed (%d errors)", st.Errors)
	}
	return st, nil
}

// checkSQLCarts checks the cart baseline's tables: every SKU (reserved <=
// on_hand, reserved == sum of active reservations), every cart of plans (all
// or nothing, in the state its client saw), and no cart with a line count
// other than 0 or 3.
func checkSQLCarts(ctx context.Context, pool *pgxpool.Pool, plans []*cartPlan) CartCheck {
	c := CartCheck{System: SystemSQLCart, Scope: "sql_cart, all cart steps"}
	o := checkSQL(ctx, pool, SystemSQLCart)
	c.SKUs, c.OversoldSKUs, c.MismatchedSKUs, c.Error = o.SKUsChecked, o.OversoldSKUs, o.MismatchedSKUs, o.Error
	if c.Error != "" {
		return c
	}
	// The lines of every cart whose client knows its final state.
	var ids, states []string
	for _, p := range plans {
		for i := range p.carts {
			ct := &p.carts[i]
			var s string
			switch ct.state {
			case cartKept:
				s, c.Kept = "kept", c.Kept+1
			case cartReleased:
				s, c.Released = "released", c.Released+1
			case cartRejected:
				s, c.Rejected = "rejected", c.Rejected+1
			default:
				continue
			}
			ids, states = append(ids, ct.cart), append(states, s)
		}
	}
	c.Carts = len(ids)
	var bad []string
	rows, err := pool.Query(ctx, `SELECT w.cart_id FROM unnest($1::text[], $2::text[]) AS w(cart_id, want)
		CROSS JOIN LATERAL (SELECT count(*) AS n,
			count(*) FILTER (WHERE status = 'active') AS act,
			count(*) FILTER (WHERE status = 'released') AS rel
			FROM reservations r WHERE r.cart_id = w.cart_id) x
		WHERE NOT ((w.want = 'kept' AND x.n = 3 AND x.act = 3) OR (w.want = 'released' AND x.n = 3 AND x.rel = 3)
			OR (w.want = 'rejected' AND x.n = 0))`, ids, states)
	if err == nil {
		for rows.Next() {
			var id string
			if err = rows.Scan(&id); err != nil {
				break
			}
			c.PartialCarts++
			if len(bad) < 3 {
				bad = append(bad, id)
			}
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		c.Error = "check carts: " + err.Error()
		return c
	}
	// Any cart, known to a client or not: 3 lines or none, all in one state.
	var mixed int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT cart_id, count(*) AS n, count(DISTINCT status) AS s
		FROM reservations GROUP BY cart_id) x WHERE n <> 3 OR s <> 1`).Scan(&mixed); err != nil {
		c.Error = "check carts: " + err.Error()
		return c
	}
	c.Other += mixed
	c.Detail = fmt.Sprintf("%d carts in the table with a line count other than 3 or lines in different states", mixed)
	if len(bad) > 0 {
		c.Detail += "; partial carts: " + strings.Join(bad, ", ")
	}
	return c
}
