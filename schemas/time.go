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
		b = m.appendTime(b)
	}
	return append(b, '"')
}

// appendTime appends m in TimeLayout. Every result and entity carries two or
// three timestamps, and time.Time.AppendFormat (a general layout
// interpreter) was 3% of the processor's CPU: years 0000-9999 are written
// directly from the civil date (days to year/month/day after Howard
// Hinnant's days_from_civil inverse); other years go through AppendFormat.
func (m Millis) appendTime(b []byte) []byte {
	ms := int64(m)
	days, rem := ms/86_400_000, ms%86_400_000
	if rem < 0 {
		days, rem = days-1, rem+86_400_000
	}
	// civil_from_days: 1970-01-01 is day 0.
	z := days + 719_468
	era := z / 146_097
	if z < 0 && z%146_097 != 0 {
		era--
	}
	doe := z - era*146_097                                   // [0, 146096]
	yoe := (doe - doe/1460 + doe/36_524 - doe/146_096) / 365 // [0, 399]
	y := yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100) // [0, 365]
	mp := (5*doy + 2) / 153                  // [0, 11]
	d := doy - (153*mp+2)/5 + 1              // [1, 31]
	mo := mp + 3
	if mo > 12 {
		mo -= 12
	}
	if mo <= 2 {
		y++
	}
	if y < 0 || y > 9999 {
		return m.Time().AppendFormat(b, TimeLayout)
	}
	hh, mm, ss, fff := rem/3_600_000, rem/60_000%60, rem/1000%60, rem%1000
	b = append4(b, y)
	b = append(b, '-')
	b = append2(b, mo)
	b = append(b, '-')
	b = append2(b, d)
	b = append(b, 'T')
	b = append2(b, hh)
	b = append(b, ':')
	b = append2(b, mm)
	b = append(b, ':')
	b = append2(b, ss)
	b = append(b, '.', byte('0'+fff/100), byte('0'+fff/10%10), byte('0'+fff%10), 'Z')
	return b
}

func append2(b []byte, v int64) []byte { return append(b, byte('0'+v/10), byte('0'+v%10)) }

func append4(b []byte, v int64) []byte {
	return append(b, byte('0'+v/1000), byte('0'+v/100%10), byte('0'+v/10%10), byte('0'+v%10))
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
