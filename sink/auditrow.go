package sink

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/schemas"
)

// Kinds of audit row (column kind).
const (
	AuditKindDecision = "decision" // the result of a per-SKU command
	AuditKindNotice   = "notice"   // an expired or low_stock notice
	AuditKindCart     = "cart"     // the result of a cart command
)

// auditRow is one row of audit_events: one record of a results topic.
type auditRow struct {
	topic         string
	partition     int32
	offset        int64
	kind          string
	commandID     string
	typ           string
	sku           string
	reservationID string
	cartID        string
	orderID       string
	quantity      *int64
	outcome       string
	reason        string
	message       string
	duplicate     bool
	decidedAt     time.Time // UTC, millisecond precision
	// topicID is the Kafka topic ID of the topic the record was read from
	// (topicIDString; "" unknown): positions restart when a topic is
	// recreated, the ID tells the topics of one name apart.
	topicID string
}

// auditColumns are the columns of audit_events the sink writes (recorded_at
// takes its default).
var auditColumns = []string{"topic", "partition", "offset", "kind", "command_id", "type", "sku", "reservation_id",
	"cart_id", "order_id", "quantity", "outcome", "reason", "message", "duplicate", "decided_at", "topic_id"}

func (r *auditRow) values() []any {
	return []any{r.topic, r.partition, r.offset, r.kind, r.commandID, r.typ, r.sku, r.reservationID,
		r.cartID, r.orderID, r.quantity, r.outcome, r.reason, r.message, r.duplicate, r.decidedAt, r.topicID}
}

// scanTargets are the destinations of auditColumns, for pgx.ForEachRow.
func (r *auditRow) scanTargets() []any {
	return []any{&r.topic, &r.partition, &r.offset, &r.kind, &r.commandID, &r.typ, &r.sku, &r.reservationID,
		&r.cartID, &r.orderID, &r.quantity, &r.outcome, &r.reason, &r.message, &r.duplicate, &r.decidedAt, &r.topicID}
}

// topicIDString is a Kafka topic ID as Kafka prints it (base64url without
// padding, as kafka-topics --describe shows TopicId); "" for the zero ID (a
// broker that did not say).
func topicIDString(id [16]byte) string {
	if id == ([16]byte{}) {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(id[:])
}

// decodeAuditRow reads a record of a results topic into its row: a result
// (schemas.Result) or, with cart, a cart result (schemas.CartResult).
// decided_at is the result's; a result without one (never written by the
// processor) gets the record's timestamp.
func decodeAuditRow(r *kgo.Record, cart bool) (auditRow, error) {
	row := auditRow{topic: r.Topic, partition: r.Partition, offset: r.Offset}
	if r.Value == nil {
		return row, errors.New("a null value, not a result")
	}
	var decided schemas.Millis
	if cart {
		var c schemas.CartResult
		if err := json.Unmarshal(r.Value, &c); err != nil {
			return row, fmt.Errorf("decode cart result: %w", err)
		}
		row.kind, row.commandID, row.typ, row.cartID, row.orderID = AuditKindCart, c.CommandID, c.Type, c.CartID, c.OrderID
		row.outcome, row.reason, row.message, row.duplicate = c.Outcome, c.Reason, c.Message, c.Duplicate
		if len(c.Lines) > 0 {
			var q int64
			for _, l := range c.Lines {
				q += l.Quantity
			}
			row.quantity = &q
		}
		decided = c.DecidedAt
	} else {
		res, err := schemas.DecodeResult(r.Value)
		if err != nil {
			return row, fmt.Errorf("decode result: %w", err)
		}
		row.kind = AuditKindDecision
		if res.Type == schemas.TypeExpired || res.Type == schemas.TypeLowStock {
			row.kind = AuditKindNotice
		}
		row.commandID, row.typ, row.sku, row.reservationID = res.CommandID, res.Type, res.SKU, res.ReservationID
		row.outcome, row.reason, row.message, row.duplicate = res.Outcome, res.Reason, res.Message, res.Duplicate
		if v := res.Reservation; v != nil {
			row.cartID, row.orderID = v.CartID, v.OrderID
			q := v.Quantity
			row.quantity = &q
			if row.reservationID == "" {
				row.reservationID = v.ReservationID
			}
		}
		decided = res.DecidedAt
	}
	if decided == 0 {
		decided = schemas.MillisOf(r.Timestamp)
	}
	row.decidedAt = decided.Time()
	for _, s := range []string{row.commandID, row.typ, row.sku, row.reservationID, row.cartID, row.orderID,
		row.outcome, row.reason, row.message} {
		if !utf8.ValidString(s) {
			return row, errors.New("a text field is not valid UTF-8")
		}
	}
	if hasNUL(row.commandID, row.typ, row.sku, row.reservationID, row.cartID, row.orderID, row.outcome, row.reason, row.message) {
		return row, fmt.Errorf("result: %w", errNUL)
	}
	return row, nil
}

// auditFields lists the columns of two rows of one record, for verify.
func auditFields(want, got *auditRow) []field {
	q := func(p *int64) string { return optInt(p) }
	return []field{
		{"kind", want.kind, got.kind},
		{"command_id", quote(want.commandID), quote(got.commandID)},
		{"type", quote(want.typ), quote(got.typ)},
		{"sku", quote(want.sku), quote(got.sku)},
		{"reservation_id", quote(want.reservationID), quote(got.reservationID)},
		{"cart_id", quote(want.cartID), quote(got.cartID)},
		{"order_id", quote(want.orderID), quote(got.orderID)},
		{"quantity", q(want.quantity), q(got.quantity)},
		{"outcome", quote(want.outcome), quote(got.outcome)},
		{"reason", quote(want.reason), quote(got.reason)},
		{"message", quote(want.message), quote(got.message)},
		{"duplicate", fmt.Sprint(want.duplicate), fmt.Sprint(got.duplicate)},
		{"decided_at", want.decidedAt.UTC().Format(time.RFC3339Nano), got.decidedAt.UTC().Format(time.RFC3339Nano)},
	}
}

func quote(s string) string { return fmt.Sprintf("%q", s) }

// month returns the first instant of t's month, UTC.
func month(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// auditPartition names the partition of audit_events that holds month m
// (as returned by month) and gives its range [from, to).
func auditPartition(m time.Time) (name string, from, to time.Time) {
	return fmt.Sprintf("audit_events_y%04dm%02d", m.Year(), int(m.Month())), m, m.AddDate(0, 1, 0)
}

// parseAuditPartition reads the month of a partition name of auditPartition.
func parseAuditPartition(name string) (time.Time, bool) {
	var y, m int
	if n, err := fmt.Sscanf(name, "audit_events_y%04dm%02d", &y, &m); err != nil || n != 2 || m < 1 || m > 12 {
		return time.Time{}, false
	}
	t := time.Date(y, time.Month(m), 1, 0, 0, 0, 0, time.UTC)
	if got, _, _ := auditPartition(t); got != name {
		return time.Time{}, false
	}
	return t, true
}
