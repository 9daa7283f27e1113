package bench

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reservations/reservations/schemas"
)

// The Postgres row-lock baselines, each in its own schema of the same server.
//
//   - serializable (the seed's design): BEGIN ISOLATION LEVEL SERIALIZABLE;
//     SELECT ... FOR UPDATE; check in the application; UPDATE stock; INSERT
//     the reservation; COMMIT; the whole transaction retried on 40001
//     (serialization failure) and 40P01 (deadlock), up to maxAttempts times.
//   - best_sql (the best careful SQL): one statement, READ COMMITTED, one round
//     trip: a data-modifying CTE `UPDATE stock SET reserved = reserved + q
//     WHERE sku = $1 AND on_hand - reserved >= q RETURNING` feeding the INSERT
//     of the reservation. The row lock is held only for the statement and the
//     availability check is re-evaluated on the latest row version, so it is
//     correct without retries.
//
// Neither stores an idempotency record per command_id (the pipeline does):
// that favours the baselines.
const maxAttempts = 100

// sqlSchemas are the schema of each baseline.
var sqlSchemas = map[string]string{SystemSerializable: "bench_ser", SystemBestSQL: "bench_sql"}

// createSQLSchema (re)creates a baseline's tables with the uniform SKUs.
func (r *run) createSQLSchema(ctx context.Context, schema string) error {
	rows := make([][]any, r.cfg.SKUs)
	for i := range rows {
		rows[i] = []any{uniformSKU(i), int64(uniformOnHand), int64(0)}
	}
	return r.createStockSchema(ctx, schema, rows, `
			extensions     int         NOT NULL DEFAULT 0,
			cart_id        text        NOT NULL DEFAULT '',
			order_id       text        NOT NULL DEFAULT ''`)
}

// createStockSchema (re)creates schema with a stock table loaded with rows
// (sku, on_hand, reserved) and a reservations table whose columns after
// expires_at are moreColumns; then runs extra statements and ANALYZE.
func (r *run) createStockSchema(ctx context.Context, schema string, rows [][]any, moreColumns string, extra ...string) error {
	stmts := append([]string{
		`DROP SCHEMA IF EXISTS ` + schema + ` CASCADE`,
		`CREATE SCHEMA ` + schema,
		`CREATE TABLE ` + schema + `.stock (
			sku      text   PRIMARY KEY,
			on_hand  bigint NOT NULL,
			reserved bigint NOT NULL DEFAULT 0)`,
		`CREATE TABLE ` + schema + `.reservations (
			reservation_id text        PRIMARY KEY,
			sku            text        NOT NULL,
			quantity       bigint      NOT NULL,
			status         text        NOT NULL,
			expires_at     timestamptz NOT NULL,` + moreColumns + `)`,
	}, extra...)
	if err := r.pg.exec(ctx, stmts...); err != nil {
		return err
	}
	pool, err := r.pg.pool(ctx, schema, 1)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"stock"}, []string{"sku", "on_hand", "reserved"}, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("load stock of %s: %w", schema, err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE stock`); err != nil {
		return fmt.Errorf("analyze %s: %w", schema, err)
	}
	return nil
}

// sqlExec executes commands against one baseline.
type sqlExec struct {
	pool   *pgxpool.Pool
	system string
}

func (x sqlExec) exec(ctx context.Context, o *op) (outcome, error) {
	if x.system == SystemBestSQL {
		return bestSQL(ctx, x.pool, o)
	}
	retries := 0
	for attempt := 1; ; attempt++ {
		oc, err := serializable(ctx, x.pool, o)
		if retryable(err) && attempt < maxAttempts && ctx.Err() == nil {
			retries++
			continue
		}
		oc.retries = retries
		if err != nil {
			return oc, fmt.Errorf("%s %s (attempt %d): %w", o.typ, o.id, attempt, err)
		}
		return oc, nil
	}
}

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func retryable(err error) bool {
	c := pgCode(err)
	return c == "40001" || c == "40P01"
}

// uniqueViolation: the reservation id exists (a rejection, not an error).
func uniqueViolation(err error) bool { return pgCode(err) == "23505" }

// serializable runs one attempt of the seed's transaction for o.
func serializable(ctx context.Context, pool *pgxpool.Pool, o *op) (oc outcome, err error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		return oc, err
	}
	defer func() {
		if err != nil || !oc.accepted {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	lockStock := func(sku string) (onHand, reserved int64, ok bool, err error) {
		err = tx.QueryRow(ctx, `SELECT on_hand, reserved FROM stock WHERE sku = $1 FOR UPDATE`, sku).Scan(&onHand, &reserved)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, 0, false, nil
		}
		return onHand, reserved, err == nil, err
	}
	lockReservation := func(id string) (sku string, qty, ext int64, ok bool, err error) {
		var status string
		err = tx.QueryRow(ctx, `SELECT sku, quantity, extensions, status FROM reservations WHERE reservation_id = $1 FOR UPDATE`, id).
			Scan(&sku, &qty, &ext, &status)
		if errors.Is(err, pgx.ErrNoRows) {
			return "", 0, 0, false, nil
		}
		return sku, qty, ext, err == nil && status == schemas.StatusActive, err
	}
	switch o.typ {
	case schemas.TypeReserve:
		onHand, reserved, ok, err := lockStock(o.sku)
		if err != nil || !ok || onHand-reserved < o.qty {
			return oc, err
		}
		if _, err := tx.Exec(ctx, `UPDATE stock SET reserved = reserved + $2 WHERE sku = $1`, o.sku, o.qty); err != nil {
			return oc, err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO reservations (reservation_id, sku, quantity, status, expires_at, cart_id)
			VALUES ($1, $2, $3, 'active', now() + $4::int * interval '1 second', $5)`, o.res, o.sku, o.qty, o.ttl, "cart-"+o.res); err != nil {
			if uniqueViolation(err) {
				return oc, nil
			}
			return oc, err
		}
	case schemas.TypeAdjust:
		sku, qty, _, ok, err := lockReservation(o.res)
		if err != nil || !ok {
			return oc, err
		}
		onHand, reserved, ok, err := lockStock(sku)
		if err != nil || !ok {
			return oc, err
		}
		delta := o.qty - qty
		if delta > 0 && onHand-reserved < delta {
			return oc, nil
		}
		if _, err := tx.Exec(ctx, `UPDATE stock SET reserved = reserved + $2 WHERE sku = $1`, sku, delta); err != nil {
			return oc, err
		}
		if _, err := tx.Exec(ctx, `UPDATE reservations SET quantity = $2 WHERE reservation_id = $1`, o.res, o.qty); err != nil {
			return oc, err
		}
	case schemas.TypeExtend:
		_, _, ext, ok, err := lockReservation(o.res)
		if err != nil || !ok || ext >= 1 {
			return oc, err
		}
		if _, err := tx.Exec(ctx, `UPDATE reservations SET expires_at = now() + $2::int * interval '1 second',
			extensions = extensions + 1 WHERE reservation_id = $1`, o.res, o.ttl); err != nil {
			return oc, err
		}
	case schemas.TypeRelease, schemas.TypeCommit:
		sku, qty, _, ok, err := lockReservation(o.res)
		if err != nil || !ok {
			return oc, err
		}
		if _, _, ok, err = lockStock(sku); err != nil || !ok {
			return oc, err
		}
		if o.typ == schemas.TypeRelease {
			_, err = tx.Exec(ctx, `UPDATE reservations SET status = 'released' WHERE reservation_id = $1`, o.res)
			if err == nil {
				_, err = tx.Exec(ctx, `UPDATE stock SET reserved = reserved - $2 WHERE sku = $1`, sku, qty)
			}
		} else {
			_, err = tx.Exec(ctx, `UPDATE reservations SET status = 'consumed', order_id = $2 WHERE reservation_id = $1`, o.res, o.order)
			if err == nil {
				_, err = tx.Exec(ctx, `UPDATE stock SET on_hand = on_hand - $2, reserved = reserved - $2 WHERE sku = $1`, sku, qty)
			}
		}
		if err != nil {
			return oc, err
		}
	default:
		return oc, fmt.Errorf("command type %s: not in the SQL baseline", o.typ)
	}
	if err := tx.Commit(ctx); err != nil {
		return oc, err
	}
	oc.accepted = true
	return oc, nil
}

// Statements of the best careful SQL: one round trip each, atomic.
const (
	bestReserve = `WITH s AS (
		UPDATE stock SET reserved = reserved + $3 WHERE sku = $2 AND on_hand - reserved >= $3 RETURNING sku)
	INSERT INTO reservations (reservation_id, sku, quantity, status, expires_at, cart_id)
	SELECT $1, s.sku, $3, 'active', now() + $4::int * interval '1 second', $5 FROM s`
	bestAdjust = `WITH r AS (
		SELECT sku, quantity FROM reservations WHERE reservation_id = $1 AND status = 'active' FOR UPDATE),
	s AS (
		UPDATE stock SET reserved = stock.reserved + ($2 - r.quantity) FROM r
		WHERE stock.sku = r.sku AND ($2 <= r.quantity OR stock.on_hand - stock.reserved >= $2 - r.quantity)
		RETURNING stock.sku)
	UPDATE reservations SET quantity = $2 FROM s WHERE reservations.reservation_id = $1`
	bestExtend = `UPDATE reservations SET expires_at = now() + $2::int * interval '1 second', extensions = extensions + 1
	WHERE reservation_id = $1 AND status = 'active' AND extensions < 1`
	bestRelease = `WITH r AS (
		UPDATE reservations SET status = 'released' WHERE reservation_id = $1 AND status = 'active' RETURNING sku, quantity)
	UPDATE stock SET reserved = stock.reserved - r.quantity FROM r WHERE stock.sku = r.sku`
	bestCommit = `WITH r AS (
		UPDATE reservations SET status = 'consumed', order_id = $2 WHERE reservation_id = $1 AND status = 'active'
		RETURNING sku, quantity)
	UPDATE stock SET on_hand = stock.on_hand - r.quantity, reserved = stock.reserved - r.quantity FROM r
	WHERE stock.sku = r.sku`
)

func bestSQL(ctx context.Context, pool *pgxpool.Pool, o *op) (outcome, error) {
	var tag pgconn.CommandTag
	var err error
	switch o.typ {
	case schemas.TypeReserve:
		tag, err = pool.Exec(ctx, bestReserve, o.res, o.sku, o.qty, o.ttl, "cart-"+o.res)
		if uniqueViolation(err) {
			return outcome{}, nil
		}
	case schemas.TypeAdjust:
		tag, err = pool.Exec(ctx, bestAdjust, o.res, o.qty)
	case schemas.TypeExtend:
		tag, err = pool.Exec(ctx, bestExtend, o.res, o.ttl)
	case schemas.TypeRelease:
		tag, err = pool.Exec(ctx, bestRelease, o.res)
	case schemas.TypeCommit:
		tag, err = pool.Exec(ctx, bestCommit, o.res, o.order)
	default:
		return outcome{}, fmt.Errorf("command type %s: not in the SQL baseline", o.typ)
	}
	if err != nil {
		return outcome{}, fmt.Errorf("%s %s: %w", o.typ, o.id, err)
	}
	return outcome{accepted: tag.RowsAffected() == 1}, nil
}

// OversellCheck is the verdict of one invariant check after the runs.
type OversellCheck struct {
	System string `json:"system"`
	Scope  string `json:"scope"`
	// SKUsChecked, OversoldSKUs (reserved > on_hand) and MismatchedSKUs
	// (reserved != sum of active reservations).
	SKUsChecked    int    `json:"skus_checked"`
	OversoldSKUs   int    `json:"oversold_skus"`
	MismatchedSKUs int    `json:"mismatched_skus"`
	Detail         string `json:"detail,omitempty"`
	Error          string `json:"error,omitempty"`
}

// OK reports whether the check ran and found nothing wrong.
func (c *OversellCheck) OK() bool {
	return c.Error == "" && c.SKUsChecked > 0 && c.OversoldSKUs == 0 && c.MismatchedSKUs == 0
}

// checkSQL verifies a baseline's tables: no SKU has more reserved than on hand,
// and every SKU's reserved equals the sum of its active reservations.
func checkSQL(ctx context.Context, pool *pgxpool.Pool, system string) OversellCheck {
	c := OversellCheck{System: system, Scope: "all steps, all SKUs (SQL)"}
	err := pool.QueryRow(ctx, `WITH act AS (
			SELECT sku, sum(quantity) AS q FROM reservations WHERE status = 'active' GROUP BY sku)
		SELECT count(*),
		       count(*) FILTER (WHERE s.reserved > s.on_hand),
		       count(*) FILTER (WHERE s.reserved <> coalesce(a.q, 0))
		FROM stock s LEFT JOIN act a ON a.sku = s.sku`).Scan(&c.SKUsChecked, &c.OversoldSKUs, &c.MismatchedSKUs)
	if err != nil {
		c.Error = err.Error()
	}
	return c
}
