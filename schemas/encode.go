package schemas

import (
	"encoding/json"
	"strconv"
	"time"
)

// Appenders encode results and changelog entities without reflection: they
// are on the hot path of every decision (one result and two or three
// changelog records per command). The output is the same JSON document as
// encoding/json produces for these types (field order and names included);
// TestAppendersMatchEncodingJSON holds them to that.

// AppendResult appends r as JSON.
func AppendResult(b []byte, r *Result) []byte {
	b = append(b, `{"command_id":`...)
	b = appendString(b, r.CommandID)
	b = append(b, `,"type":`...)
	b = appendString(b, r.Type)
	b = append(b, `,"sku":`...)
	b = appendString(b, r.SKU)
	b = append(b, `,"reservation_id":`...)
	b = appendString(b, r.ReservationID)
	b = append(b, `,"outcome":`...)
	b = appendString(b, r.Outcome)
	b = append(b, `,"duplicate":`...)
	b = strconv.AppendBool(b, r.Duplicate)
	b = append(b, `,"reason":`...)
	b = appendString(b, r.Reason)
	b = append(b, `,"message":`...)
	b = appendString(b, r.Message)
	b = append(b, `,"stock":`...)
	if r.Stock == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"on_hand":`...)
		b = strconv.AppendInt(b, r.Stock.OnHand, 10)
		b = append(b, `,"reserved":`...)
		b = strconv.AppendInt(b, r.Stock.Reserved, 10)
		b = append(b, `,"available":`...)
		b = strconv.AppendInt(b, r.Stock.Available, 10)
		b = append(b, '}')
	}
	b = append(b, `,"reservation":`...)
	if r.Reservation == nil {
		b = append(b, "null"...)
	} else {
		b = appendReservation(b, r.Reservation)
	}
	b = append(b, `,"partition":`...)
	b = strconv.AppendInt(b, int64(r.Partition), 10)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, r.Offset, 10)
	b = append(b, `,"decided_at":`...)
	b = r.DecidedAt.AppendJSON(b)
	return append(b, '}')
}

func appendReservation(b []byte, r *Reservation) []byte {
	b = append(b, `{"reservation_id":`...)
	b = appendString(b, r.ReservationID)
	b = append(b, `,"sku":`...)
	b = appendString(b, r.SKU)
	b = append(b, `,"quantity":`...)
	b = strconv.AppendInt(b, r.Quantity, 10)
	b = append(b, `,"status":`...)
	b = appendString(b, r.Status)
	b = append(b, `,"expires_at":`...)
	b = r.ExpiresAt.AppendJSON(b)
	b = append(b, `,"extensions":`...)
	b = strconv.AppendInt(b, r.Extensions, 10)
	b = append(b, `,"cart_id":`...)
	b = appendString(b, r.CartID)
	b = append(b, `,"order_id":`...)
	b = appendString(b, r.OrderID)
	if r.StoreID != "" {
		b = append(b, `,"store_id":`...)
		b = appendString(b, r.StoreID)
	}
	if r.Prepared {
		b = append(b, `,"prepared":true`...)
	}
	return append(b, '}')
}

// AppendStockEntity appends s as JSON.
func AppendStockEntity(b []byte, s *StockEntity) []byte {
	b = append(b, `{"sku":`...)
	b = appendString(b, s.SKU)
	b = append(b, `,"on_hand":`...)
	b = strconv.AppendInt(b, s.OnHand, 10)
	b = append(b, `,"reserved":`...)
	b = strconv.AppendInt(b, s.Reserved, 10)
	b = append(b, `,"available":`...)
	b = strconv.AppendInt(b, s.Available, 10)
	b = append(b, `,"low_stock_threshold":`...)
	if s.LowStockThreshold == nil {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, *s.LowStockThreshold, 10)
	}
	return appendTail(b, s.Version, s.Event, s.CommandID, s.UpdatedAt)
}

// AppendReservationEntity appends r as JSON.
func AppendReservationEntity(b []byte, r *ReservationEntity) []byte {
	b = append(b, `{"reservation":`...)
	b = appendReservation(b, &r.Reservation)
	return appendTail(b, r.Version, r.Event, r.CommandID, r.UpdatedAt)
}

// AppendCommandEntity appends c as JSON.
func AppendCommandEntity(b []byte, c *CommandEntity) []byte {
	b = append(b, `{"command_id":`...)
	b = appendString(b, c.CommandID)
	b = append(b, `,"result":`...)
	b = AppendResult(b, &c.Result)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, c.Version, 10)
	b = append(b, `,"event":`...)
	b = appendString(b, c.Event)
	return appendUpdatedAt(b, c.UpdatedAt)
}

// appendTail appends the version/event/command_id/updated_at fields shared by
// stock and reservation entities, and closes the object.
func appendTail(b []byte, version int64, event, commandID string, at Millis) []byte {
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, version, 10)
	b = append(b, `,"event":`...)
	b = appendString(b, event)
	b = append(b, `,"command_id":`...)
	b = appendString(b, commandID)
	return appendUpdatedAt(b, at)
}

// updatedAtTail is how every changelog entity value ends before its time:
// each entity appender (AppendStockEntity, AppendReservationEntity,
// AppendCommandEntity, AppendCartEntity, AppendCartDecided) writes updated_at
// last, through appendUpdatedAt. UpdatedAt relies on it;
// TestUpdatedAtAgreesWithDecode holds every appender to it.
const updatedAtTail = `,"updated_at":`

// appendUpdatedAt appends the last field of a changelog entity, updated_at,
// and closes the object.
func appendUpdatedAt(b []byte, at Millis) []byte {
	b = append(b, updatedAtTail...)
	b = at.AppendJSON(b)
	return append(b, '}')
}

// UpdatedAt reads the updated_at of a changelog entity value from its end,
// without decoding the rest: the sweep reads it from every stored entity, and
// most are within the window and need nothing else. It reports false when the
// value does not end the way the appenders end every entity (then decode the
// value: DecodeChange and Change.UpdatedAt). A value it accepts need not be
// valid JSON: it only looks at the tail.
func UpdatedAt(value []byte) (Millis, bool) {
	const empty = updatedAtTail + `""}`
	if string(value[max(len(value)-len(empty), 0):]) == empty {
		return 0, true // the zero time encodes as ""
	}
	n := len(updatedAtTail) + len(`"`) + len(TimeLayout) + len(`"}`)
	if len(value) < n {
		return 0, false
	}
	tail := value[len(value)-n:]
	if string(tail[:len(updatedAtTail)+1]) != updatedAtTail+`"` || string(tail[n-2:]) != `"}` {
		return 0, false
	}
	t, err := time.Parse(TimeLayout, string(tail[len(updatedAtTail)+1:n-2]))
	if err != nil {
		return 0, false
	}
	return MillisOf(t), true
}

// ReservationTimer reads what an expiry schedule needs of a reservation
// entity as AppendReservationEntity writes it (SKU, reservation id, status,
// expires_at) without decoding the whole entity, and declines (ok false)
// anything else: another layout, escaped ids, an unknown status. A JSON string
// cannot hold an unescaped quote, so the field names matched here cannot occur
// inside a value. TestReservationTimerAgreesWithDecode holds it to
// DecodeChange.
func ReservationTimer(value []byte) (sku, id, status string, expiresAt Millis, ok bool) {
	rest, ok := cutPrefix(value, `{"reservation":{"reservation_id":"`)
	if !ok {
		return
	}
	var idb, skub, stb []byte
	if idb, rest, ok = plainString(rest); !ok {
		return
	}
	if rest, ok = cutPrefix(rest, `,"sku":"`); !ok {
		return
	}
	if skub, rest, ok = plainString(rest); !ok {
		return
	}
	if rest, ok = cutPrefix(rest, `,"quantity":`); !ok {
		return
	}
	i := 0
	for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '-') {
		i++
	}
	if rest, ok = cutPrefix(rest[i:], `,"status":"`); !ok {
		return
	}
	if stb, rest, ok = plainString(rest); !ok {
		return
	}
	switch string(stb) { // the constants: no allocation
	case StatusActive:
		status = StatusActive
	case StatusReleased:
		status = StatusReleased
	case StatusExpired:
		status = StatusExpired
	case StatusConsumed:
		status = StatusConsumed
	default:
		return "", "", "", 0, false
	}
	if rest, ok = cutPrefix(rest, `,"expires_at":"`); !ok || len(rest) <= len(TimeLayout) || rest[len(TimeLayout)] != '"' {
		return "", "", "", 0, false
	}
	t, err := time.Parse(TimeLayout, string(rest[:len(TimeLayout)]))
	if err != nil {
		return "", "", "", 0, false
	}
	return string(skub), string(idb), status, MillisOf(t), true
}

// cutPrefix returns b after prefix, if b starts with it.
func cutPrefix(b []byte, prefix string) ([]byte, bool) {
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return b, false
	}
	return b[len(prefix):], true
}

// plainString returns the characters of a JSON string up to its closing
// quote (the opening one already read) and what follows; false when it has
// an escape.
func plainString(b []byte) (s, rest []byte, ok bool) {
	for i, c := range b {
		switch c {
		case '"':
			return b[:i], b[i+1:], true
		case '\\':
			return nil, b, false
		}
	}
	return nil, b, false
}

// appendString appends s as a JSON string: printable ASCII without escapes is
// copied as is; anything else goes through encoding/json (HTML-safe escaping
// and invalid UTF-8 replaced, exactly as json.Marshal does).
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// AppendCommand appends c as JSON (the per-SKU commands of the cart
// coordinator's sagas, one per line and phase).
func AppendCommand(b []byte, c *Command) []byte {
	b = append(b, `{"command_id":`...)
	b = appendString(b, c.CommandID)
	b = append(b, `,"type":`...)
	b = appendString(b, c.Type)
	b = append(b, `,"sku":`...)
	b = appendString(b, c.SKU)
	b = appendOptString(b, `,"reason":`, c.Reason)
	b = appendOptString(b, `,"issued_at":`, c.IssuedAt)
	b = appendOptInt(b, `,"on_hand":`, c.OnHand)
	b = appendOptInt(b, `,"expected_on_hand":`, c.ExpectedOnHand)
	b = appendOptInt(b, `,"low_stock_threshold":`, c.LowStockThreshold)
	b = appendOptInt(b, `,"delta":`, c.Delta)
	b = appendOptString(b, `,"reservation_id":`, c.ReservationID)
	b = appendOptInt(b, `,"quantity":`, c.Quantity)
	b = appendOptInt(b, `,"ttl_seconds":`, c.TTLSeconds)
	b = appendOptString(b, `,"cart_id":`, c.CartID)
	b = appendOptString(b, `,"store_id":`, c.StoreID)
	b = appendOptString(b, `,"order_id":`, c.OrderID)
	b = appendOptString(b, `,"reply_to":`, c.ReplyTo)
	b = appendOptInt(b, `,"reply_partition":`, c.ReplyPartition)
	return append(b, '}')
}

// AppendCartCommand appends c as JSON.
func AppendCartCommand(b []byte, c *CartCommand) []byte {
	b = append(b, `{"command_id":`...)
	b = appendString(b, c.CommandID)
	b = append(b, `,"type":`...)
	b = appendString(b, c.Type)
	b = append(b, `,"cart_id":`...)
	b = appendString(b, c.CartID)
	b = appendOptString(b, `,"reason":`, c.Reason)
	b = appendOptString(b, `,"issued_at":`, c.IssuedAt)
	b = appendOptInt(b, `,"ttl_seconds":`, c.TTLSeconds)
	if len(c.Items) > 0 {
		b = append(b, `,"items":[`...)
		for i := range c.Items {
			if i > 0 {
				b = append(b, ',')
			}
			it := &c.Items[i]
			b = append(b, `{"sku":`...)
			b = appendString(b, it.SKU)
			b = appendOptInt(b, `,"quantity":`, it.Quantity)
			b = appendOptString(b, `,"reservation_id":`, it.ReservationID)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = appendOptString(b, `,"order_id":`, c.OrderID)
	b = appendOptString(b, `,"reply_to":`, c.ReplyTo)
	b = appendOptInt(b, `,"reply_partition":`, c.ReplyPartition)
	return append(b, '}')
}

// AppendCartResult appends r as JSON.
func AppendCartResult(b []byte, r *CartResult) []byte {
	b = append(b, `{"command_id":`...)
	b = appendString(b, r.CommandID)
	b = append(b, `,"type":`...)
	b = appendString(b, r.Type)
	b = append(b, `,"cart_id":`...)
	b = appendString(b, r.CartID)
	b = append(b, `,"order_id":`...)
	b = appendString(b, r.OrderID)
	b = append(b, `,"outcome":`...)
	b = appendString(b, r.Outcome)
	b = append(b, `,"duplicate":`...)
	b = strconv.AppendBool(b, r.Duplicate)
	b = append(b, `,"reason":`...)
	b = appendString(b, r.Reason)
	b = append(b, `,"message":`...)
	b = appendString(b, r.Message)
	b = append(b, `,"lines":`...)
	if r.Lines == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range r.Lines {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendCartLineFields(append(b, '{'), &r.Lines[i])
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, `,"partition":`...)
	b = strconv.AppendInt(b, int64(r.Partition), 10)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, r.Offset, 10)
	b = append(b, `,"decided_at":`...)
	b = r.DecidedAt.AppendJSON(b)
	return append(b, '}')
}

// AppendCartLineFields appends the fields of l, without the braces (so that
// a struct embedding a CartLine can append its own fields after them).
func AppendCartLineFields(b []byte, l *CartLine) []byte {
	b = append(b, `"sku":`...)
	b = appendString(b, l.SKU)
	b = append(b, `,"reservation_id":`...)
	b = appendString(b, l.ReservationID)
	b = append(b, `,"quantity":`...)
	b = strconv.AppendInt(b, l.Quantity, 10)
	b = append(b, `,"outcome":`...)
	b = appendString(b, l.Outcome)
	b = append(b, `,"reason":`...)
	b = appendString(b, l.Reason)
	b = append(b, `,"message":`...)
	b = appendString(b, l.Message)
	b = append(b, `,"status":`...)
	b = appendString(b, l.Status)
	b = append(b, `,"expires_at":`...)
	return l.ExpiresAt.AppendJSON(b)
}

// AppendJSONString appends s as a JSON string, as encoding/json does.
func AppendJSONString(b []byte, s string) []byte { return appendString(b, s) }

func appendOptString(b []byte, name, s string) []byte {
	if s == "" {
		return b
	}
	b = append(b, name...)
	return appendString(b, s)
}

func appendOptInt(b []byte, name string, v *int64) []byte {
	if v == nil {
		return b
	}
	b = append(b, name...)
	return strconv.AppendInt(b, *v, 10)
}

// The cart coordinator writes a cart entity on every input of a saga and a
// decided cart command at its end.

// AppendCartEntity appends e as JSON.
func AppendCartEntity(b []byte, e *CartEntity) []byte {
	b = append(b, `{"cart_id":`...)
	b = appendString(b, e.CartID)
	b = append(b, `,"holds":`...)
	if e.Holds == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range e.Holds {
			if i > 0 {
				b = append(b, ',')
			}
			h := &e.Holds[i]
			b = append(b, `{"sku":`...)
			b = appendString(b, h.SKU)
			b = append(b, `,"reservation_id":`...)
			b = appendString(b, h.ReservationID)
			b = append(b, `,"quantity":`...)
			b = strconv.AppendInt(b, h.Quantity, 10)
			b = append(b, `,"expires_at":`...)
			b = h.ExpiresAt.AppendJSON(b)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, `,"saga":`...)
	if s := e.Saga; s == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"command":`...)
		b = AppendCartCommand(b, &s.Command)
		b = append(b, `,"partition":`...)
		b = strconv.AppendInt(b, int64(s.Partition), 10)
		b = append(b, `,"offset":`...)
		b = strconv.AppendInt(b, s.Offset, 10)
		b = append(b, `,"phase":`...)
		b = appendString(b, s.Phase)
		b = append(b, `,"lines":`...)
		if s.Lines == nil {
			b = append(b, "null"...)
		} else {
			b = append(b, '[')
			for i := range s.Lines {
				if i > 0 {
					b = append(b, ',')
				}
				l := &s.Lines[i]
				b = AppendCartLineFields(append(b, '{'), &l.CartLine)
				b = append(b, `,"pending":`...)
				b = strconv.AppendBool(b, l.Pending)
				b = append(b, `,"held":`...)
				b = strconv.AppendBool(b, l.Held)
				b = append(b, `,"prepared":`...)
				b = strconv.AppendBool(b, l.Prepared)
				b = append(b, '}')
			}
			b = append(b, ']')
		}
		b = append(b, `,"started_at":`...)
		b = s.StartedAt.AppendJSON(b)
		b = append(b, '}')
	}
	b = append(b, `,"queue":`...)
	if e.Queue == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range e.Queue {
			if i > 0 {
				b = append(b, ',')
			}
			q := &e.Queue[i]
			b = append(b, `{"command":`...)
			b = AppendCartCommand(b, &q.Command)
			b = append(b, `,"partition":`...)
			b = strconv.AppendInt(b, int64(q.Partition), 10)
			b = append(b, `,"offset":`...)
			b = strconv.AppendInt(b, q.Offset, 10)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, e.Version, 10)
	b = append(b, `,"event":`...)
	b = appendString(b, e.Event)
	b = append(b, `,"command_id":`...)
	b = appendString(b, e.CommandID)
	return appendUpdatedAt(b, e.UpdatedAt)
}

// AppendCartDecided appends d as JSON.
func AppendCartDecided(b []byte, d *CartDecided) []byte {
	b = append(b, `{"command_id":`...)
	b = appendString(b, d.CommandID)
	b = append(b, `,"result":`...)
	b = AppendCartResult(b, &d.Result)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, d.Version, 10)
	b = append(b, `,"event":`...)
	b = appendString(b, d.Event)
	return appendUpdatedAt(b, d.UpdatedAt)
}
