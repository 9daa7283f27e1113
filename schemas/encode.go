package schemas

import (
	"encoding/json"
	"strconv"
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
	b = append(b, `,"updated_at":`...)
	b = c.UpdatedAt.AppendJSON(b)
	return append(b, '}')
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
	b = append(b, `,"updated_at":`...)
	b = at.AppendJSON(b)
	return append(b, '}')
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
