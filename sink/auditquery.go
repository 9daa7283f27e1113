package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// AuditFilter selects rows of audit_events: those matching every field set
// (at least one of SKU, ReservationID, CartID, OrderID), decided in [Since,
// Until) (zero: unbounded).
type AuditFilter struct {
	SKU, ReservationID, CartID, OrderID string
	Since, Until                        time.Time
	// Limit is the most rows returned (the earliest). 0: no limit.
	Limit int
}

// AuditEvent is one row of audit_events: one record of a results topic.
type AuditEvent struct {
	DecidedAt     time.Time `json:"decided_at"`
	Kind          string    `json:"kind"` // AuditKindDecision, AuditKindNotice or AuditKindCart
	Type          string    `json:"type"`
	CommandID     string    `json:"command_id"`
	SKU           string    `json:"sku"`
	ReservationID string    `json:"reservation_id"`
	CartID        string    `json:"cart_id"`
	OrderID       string    `json:"order_id"`
	Quantity      *int64    `json:"quantity"`
	Outcome       string    `json:"outcome"`
	Reason        string    `json:"reason"`
	Message       string    `json:"message"`
	Duplicate     bool      `json:"duplicate"`
	Topic         string    `json:"topic"`
	Partition     int32     `json:"partition"`
	Offset        int64     `json:"offset"`
}

// ErrNoAudit means the database has no audit_events table in the schema.
var ErrNoAudit = errors.New("no audit trail (table audit_events) in the schema: the sink never ran on this database " +
	"with this --pg-schema, or is older than the audit")

// OpenPool connects to the sink's database dsn with search_path schema (as
// Config.Schema) and checks that it answers. The caller closes the pool.
func OpenPool(ctx context.Context, dsn, schema string) (*pgxpool.Pool, error) {
	if err := validSchema(schema); err != nil {
		return nil, err
	}
	return openPool(ctx, dsn, schema)
}

// QueryAudit returns the rows of audit_events that f selects, in the order
// they were decided (ties by topic, partition, offset).
func QueryAudit(ctx context.Context, pool *pgxpool.Pool, f AuditFilter) ([]AuditEvent, error) {
	var where []string
	var args []any
	arg := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	for _, c := range []struct{ col, v string }{{"sku", f.SKU}, {"reservation_id", f.ReservationID},
		{"cart_id", f.CartID}, {"order_id", f.OrderID}} {
		if c.v != "" {
			arg(c.col+" = $%d", c.v)
		}
	}
	if len(where) == 0 {
		return nil, errors.New("audit query: want at least one of SKU, ReservationID, CartID, OrderID")
	}
	if !f.Since.IsZero() {
		arg("decided_at >= $%d", f.Since)
	}
	if !f.Until.IsZero() {
		arg("decided_at < $%d", f.Until)
	}
	q := `SELECT decided_at, kind, type, command_id, sku, reservation_id, cart_id, order_id, quantity, outcome,
		reason, message, duplicate, topic, partition, "offset" FROM audit_events WHERE ` + strings.Join(where, " AND ") +
		` ORDER BY decided_at, topic, partition, "offset"`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, _ := pool.Query(ctx, q, args...)
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditEvent, error) {
		var e AuditEvent
		err := r.Scan(&e.DecidedAt, &e.Kind, &e.Type, &e.CommandID, &e.SKU, &e.ReservationID, &e.CartID, &e.OrderID,
			&e.Quantity, &e.Outcome, &e.Reason, &e.Message, &e.Duplicate, &e.Topic, &e.Partition, &e.Offset)
		e.DecidedAt = e.DecidedAt.UTC()
		return e, err
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return nil, ErrNoAudit
	}
	if err != nil {
		return nil, fmt.Errorf("query audit_events: %w", err)
	}
	return evs, nil
}
