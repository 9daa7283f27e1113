package schemas

import (
	"errors"
	"strconv"
	"time"
)

// TimeLayout is the contract's time format: RFC 3339, UTC, millisecond precision.
const TimeLayout = "2006-01-02T15:04:05.000Z"

// Millis is an instant as Unix milliseconds. It encodes as the contract's RFC 3339
// string with millisecond precision in UTC; the zero value encodes as "".
type Millis int64

// MillisOf converts t to Millis, truncating to the millisecond.
func MillisOf(t time.Time) Millis { return Millis(t.UnixMilli()) }

// Time returns m as a UTC time.Time.
func (m Millis) Time() time.Time { return time.UnixMilli(int64(m)).UTC() }

// String formats m in the contract's layout.
func (m Millis) String() string {
	if m == 0 {
		return ""
	}
	return m.Time().Format(TimeLayout)
}

// MarshalJSON implements json.Marshaler.
func (m Millis) MarshalJSON() ([]byte, error) {
	return m.AppendJSON(make([]byte, 0, 26)), nil
}

// AppendJSON appends m as a quoted JSON string.
func (m Millis) AppendJSON(b []byte) []byte {
	b = append(b, '"')
	if m != 0 {
		b = m.Time().AppendFormat(b, TimeLayout)
	}
	return append(b, '"')
}

var errBadTime = errors.New("want an RFC 3339 time string")

// UnmarshalJSON implements json.Unmarshaler. It accepts "" and null as zero.
func (m *Millis) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*m = 0
		return nil
	}
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return errBadTime
	}
	if s == "" {
		*m = 0
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return errBadTime
	}
	*m = MillisOf(t)
	return nil
}
