package schemas

// The command decoder's fast path. Commands as producers write them (flat
// objects of the contract's lowercase field names, ASCII strings without
// escapes, integers) are read here without reflection, at a fraction of
// encoding/json's cost (it was ~9% of the processor's CPU). Anything else
// (an escape, a non-ASCII byte, another spelling of a field name, a float, a
// nested value, a syntax error) declines, and encoding/json decodes the record
// as before: so the fast path never changes what a record means, only how fast
// it is read. FuzzFastCommand checks exactly that against encoding/json.

// fastCommand decodes b into c when b is in the fast path's subset of JSON;
// ok is false when it declines (c is then undefined).
func fastCommand(b []byte, c *Command) (ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipSpace(b, i+1) == len(b)
	}
	for {
		key, j, ok := fastString(b, i)
		if !ok {
			return false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return false
		}
		if i, ok = fastField(b, i, key, c); !ok {
			return false
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return skipSpace(b, i+1) == len(b)
		default:
			return false
		}
	}
}

// fastField reads the value at b[i:] into the field named key; it returns the
// index after the value.
func fastField(b []byte, i int, key []byte, c *Command) (int, bool) {
	var s *string
	var n **int64
	switch string(key) { // no allocation: the compiler compares in place
	case "command_id":
		s = &c.CommandID
	case "type":
		s = &c.Type
	case "sku":
		s = &c.SKU
	case "reason":
		s = &c.Reason
	case "issued_at":
		s = &c.IssuedAt
	case "reservation_id":
		s = &c.ReservationID
	case "cart_id":
		s = &c.CartID
	case "store_id":
		s = &c.StoreID
	case "order_id":
		s = &c.OrderID
	case "reply_to":
		s = &c.ReplyTo
	case "on_hand":
		n = &c.OnHand
	case "expected_on_hand":
		n = &c.ExpectedOnHand
	case "low_stock_threshold":
		n = &c.LowStockThreshold
	case "delta":
		n = &c.Delta
	case "quantity":
		n = &c.Quantity
	case "ttl_seconds":
		n = &c.TTLSeconds
	case "reply_partition":
		n = &c.ReplyPartition
	default:
		// An unknown field (ignored by encoding/json, but it may match a field
		// in another case): decline.
		return 0, false
	}
	if isNull(b, i) {
		// encoding/json: null leaves a string as it was and sets a pointer to nil.
		if n != nil {
			*n = nil
		}
		return i + 4, true
	}
	if s != nil {
		v, j, ok := fastString(b, i)
		if !ok {
			return 0, false
		}
		*s = string(v)
		return j, true
	}
	v, j, ok := fastInt(b, i)
	if !ok {
		return 0, false
	}
	*n = &v
	return j, true
}

// fastString reads a string of printable ASCII without escapes at b[i:]; it
// returns its bytes and the index after its closing quote.
func fastString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch ch := b[j]; {
		case ch == '"':
			return b[i+1 : j], j + 1, true
		case ch == '\\' || ch < 0x20 || ch > 0x7e:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// fastInt reads a JSON integer of at most 18 digits (it cannot overflow) at
// b[i:], which must end at a delimiter.
func fastInt(b []byte, i int) (int64, int, bool) {
	neg := false
	if i < len(b) && b[i] == '-' {
		neg = true
		i++
	}
	start := i
	var v int64
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		v = v*10 + int64(b[i]-'0')
		i++
	}
	digits := i - start
	if digits == 0 || digits > 18 || (digits > 1 && b[start] == '0') {
		return 0, 0, false
	}
	if i < len(b) {
		switch b[i] {
		case ',', '}', ' ', '\t', '\n', '\r':
		default:
			return 0, 0, false // a fraction, an exponent, or garbage
		}
	}
	if neg {
		v = -v
	}
	return v, i, true
}

func isNull(b []byte, i int) bool {
	return len(b)-i >= 4 && b[i] == 'n' && b[i+1] == 'u' && b[i+2] == 'l' && b[i+3] == 'l'
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}
