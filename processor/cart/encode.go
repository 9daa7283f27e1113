package cart

import (
	"strconv"

	"github.com/reservations/reservations/schemas"
)

// The coordinator writes a cart entity on every input of a saga and a decided
// command at its end: these appenders encode them without reflection. The
// output is the document encoding/json produces for the same value (field
// order and names included); TestAppendersMatchEncodingJSON holds them to it.

// AppendEntity appends e as JSON.
func AppendEntity(b []byte, e *Entity) []byte {
	b = append(b, `{"cart_id":`...)
	b = schemas.AppendJSONString(b, e.CartID)
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
			b = schemas.AppendJSONString(b, h.SKU)
			b = append(b, `,"reservation_id":`...)
			b = schemas.AppendJSONString(b, h.ReservationID)
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
		b = schemas.AppendCartCommand(b, &s.Command)
		b = append(b, `,"partition":`...)
		b = strconv.AppendInt(b, int64(s.Partition), 10)
		b = append(b, `,"offset":`...)
		b = strconv.AppendInt(b, s.Offset, 10)
		b = append(b, `,"phase":`...)
		b = schemas.AppendJSONString(b, s.Phase)
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
				b = schemas.AppendCartLineFields(append(b, '{'), &l.CartLine)
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
			b = schemas.AppendCartCommand(b, &q.Command)
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
	b = schemas.AppendJSONString(b, e.Event)
	b = append(b, `,"command_id":`...)
	b = schemas.AppendJSONString(b, e.CommandID)
	b = append(b, `,"updated_at":`...)
	b = e.UpdatedAt.AppendJSON(b)
	return append(b, '}')
}

// AppendDecided appends d as JSON.
func AppendDecided(b []byte, d *Decided) []byte {
	b = append(b, `{"command_id":`...)
	b = schemas.AppendJSONString(b, d.CommandID)
	b = append(b, `,"result":`...)
	b = schemas.AppendCartResult(b, &d.Result)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, d.Version, 10)
	b = append(b, `,"event":`...)
	b = schemas.AppendJSONString(b, d.Event)
	b = append(b, `,"updated_at":`...)
	b = d.UpdatedAt.AppendJSON(b)
	return append(b, '}')
}
