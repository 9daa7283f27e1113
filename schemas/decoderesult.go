package schemas

import (
	"encoding/json"
	"strconv"
)

// DecodeResult reads a record of the results topic, of the replies topic, or a
// line result routed to the cart coordinator (extension (i)): the JSON of a
// Result, exactly as json.Unmarshal reads it into a zero Result (same value,
// same error). The SKU processor writes every result with AppendResult: a
// document of that exact shape (fields in its order, no whitespace, strings of
// printable ASCII without escapes) is read by a resultScanner without
// reflection, at a fraction of encoding/json's cost; anything else goes to
// encoding/json.
func DecodeResult(b []byte) (Result, error) {
	if r, ok := scanResult(b); ok {
		return r, nil
	}
	var r Result
	err := json.Unmarshal(b, &r)
	return r, err
}

// resultScanner reads the canonical encoding of AppendResult; any mismatch sets
// bad, and the caller falls back to encoding/json.
type resultScanner struct {
	b   []byte
	bad bool
}

func (s *resultScanner) lit(l string) {
	if s.bad || len(s.b) < len(l) || string(s.b[:len(l)]) != l {
		s.bad = true
		return
	}
	s.b = s.b[len(l):]
}

// str reads a string of printable ASCII without escapes (what needs no
// decoding beyond the quotes).
func (s *resultScanner) str() string {
	if s.bad || len(s.b) < 2 || s.b[0] != '"' {
		s.bad = true
		return ""
	}
	for i := 1; i < len(s.b); i++ {
		switch c := s.b[i]; {
		case c == '"':
			v := string(s.b[1:i])
			s.b = s.b[i+1:]
			return v
		case c < 0x20 || c >= 0x80 || c == '\\':
			s.bad = true
			return ""
		}
	}
	s.bad = true
	return ""
}

func (s *resultScanner) int() int64 {
	if s.bad {
		return 0
	}
	i := 0
	if i < len(s.b) && s.b[i] == '-' {
		i++
	}
	start := i
	for i < len(s.b) && s.b[i] >= '0' && s.b[i] <= '9' {
		i++
	}
	// No leading zeros (invalid JSON), no fraction or exponent (encoding/json
	// rejects them for an integer field).
	if i == start || (s.b[start] == '0' && i > start+1) || (i < len(s.b) && (s.b[i] == '.' || s.b[i] == 'e' || s.b[i] == 'E')) {
		s.bad = true
		return 0
	}
	v, err := strconv.ParseInt(string(s.b[:i]), 10, 64)
	if err != nil {
		s.bad = true
		return 0
	}
	s.b = s.b[i:]
	return v
}

func (s *resultScanner) bool() bool {
	switch {
	case s.bad:
	case len(s.b) >= 4 && string(s.b[:4]) == "true":
		s.b = s.b[4:]
		return true
	case len(s.b) >= 5 && string(s.b[:5]) == "false":
		s.b = s.b[5:]
		return false
	default:
		s.bad = true
	}
	return false
}

func (s *resultScanner) millis() Millis {
	if s.bad || len(s.b) < 2 || s.b[0] != '"' {
		s.bad = true
		return 0
	}
	i := 1
	for i < len(s.b) && s.b[i] != '"' && s.b[i] != '\\' {
		i++
	}
	if i == len(s.b) || s.b[i] != '"' {
		s.bad = true
		return 0
	}
	var m Millis
	if err := m.UnmarshalJSON(s.b[:i+1]); err != nil {
		s.bad = true
		return 0
	}
	s.b = s.b[i+1:]
	return m
}

func (s *resultScanner) null() bool {
	if !s.bad && len(s.b) >= 4 && string(s.b[:4]) == "null" {
		s.b = s.b[4:]
		return true
	}
	return false
}

func scanResult(b []byte) (Result, bool) {
	var r Result
	s := &resultScanner{b: b}
	s.lit(`{"command_id":`)
	r.CommandID = s.str()
	s.lit(`,"type":`)
	r.Type = s.str()
	s.lit(`,"sku":`)
	r.SKU = s.str()
	s.lit(`,"reservation_id":`)
	r.ReservationID = s.str()
	s.lit(`,"outcome":`)
	r.Outcome = s.str()
	s.lit(`,"duplicate":`)
	r.Duplicate = s.bool()
	s.lit(`,"reason":`)
	r.Reason = s.str()
	s.lit(`,"message":`)
	r.Message = s.str()
	s.lit(`,"stock":`)
	if !s.null() {
		st := new(StockView)
		s.lit(`{"on_hand":`)
		st.OnHand = s.int()
		s.lit(`,"reserved":`)
		st.Reserved = s.int()
		s.lit(`,"available":`)
		st.Available = s.int()
		s.lit(`}`)
		r.Stock = st
	}
	s.lit(`,"reservation":`)
	if !s.null() {
		v := new(Reservation)
		s.lit(`{"reservation_id":`)
		v.ReservationID = s.str()
		s.lit(`,"sku":`)
		v.SKU = s.str()
		s.lit(`,"quantity":`)
		v.Quantity = s.int()
		s.lit(`,"status":`)
		v.Status = s.str()
		s.lit(`,"expires_at":`)
		v.ExpiresAt = s.millis()
		s.lit(`,"extensions":`)
		v.Extensions = s.int()
		s.lit(`,"cart_id":`)
		v.CartID = s.str()
		s.lit(`,"order_id":`)
		v.OrderID = s.str()
		if !s.bad && len(s.b) > 0 && s.b[0] == ',' && len(s.b) > 2 && s.b[2] == 's' {
			s.lit(`,"store_id":`)
			v.StoreID = s.str()
		}
		if !s.bad && len(s.b) > 0 && s.b[0] == ',' && len(s.b) > 2 && s.b[2] == 'p' {
			s.lit(`,"prepared":`)
			v.Prepared = s.bool()
		}
		s.lit(`}`)
		r.Reservation = v
	}
	s.lit(`,"partition":`)
	p := s.int()
	if p != int64(int32(p)) {
		s.bad = true
	}
	r.Partition = int32(p)
	s.lit(`,"offset":`)
	r.Offset = s.int()
	s.lit(`,"decided_at":`)
	r.DecidedAt = s.millis()
	s.lit(`}`)
	if s.bad || len(s.b) != 0 {
		return Result{}, false
	}
	return r, true
}
