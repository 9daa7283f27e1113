package sku

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/schemas"
)

// TestScenarios runs the data-driven scenarios of testdata/scenarios through the
// pure core, in the format of github.com/cockroachdb/datadriven: each block is a
// directive (and its input lines), "----", and the expected output, ended by a
// blank line. `go test -run TestScenarios ./processor/sku -rewrite` writes the
// actual outputs back into the files (review the diff).
//
//	now 2026-01-01T00:00:00Z       set the clock
//	advance 15m                    move the clock and fire due expiry timers
//	send [key=K]                   decide the JSON commands that follow (key: the sku, or K)
//	stock SKU                      print the stock entity
//	reservation SKU ID             print the reservation entity
//	check                          assert reserved == sum(active quantities) and on_hand >= 0 for every SKU
func TestScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata/scenarios", func(t *testing.T, path string) {
		s := &scenarioState{core: Core{Rules: DefaultRules()}, state: make(Entities)}
		s.now = schemas.MillisOf(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		datadriven.RunTest(t, path, s.run)
	})
}

type scenarioState struct {
	core   Core
	state  Entities
	now    schemas.Millis
	offset int64
}

// arg returns the i-th bare argument of the directive (a word without =).
func arg(t *testing.T, td *datadriven.TestData, i int) string {
	require.Greater(t, len(td.CmdArgs), i, "%s: %s wants %d arguments", td.Pos, td.Cmd, i+1)
	return td.CmdArgs[i].Key
}

func (s *scenarioState) run(t *testing.T, td *datadriven.TestData) string {
	var got []string
	switch td.Cmd {
	case "now":
		tm, err := time.Parse(time.RFC3339, arg(t, td, 0))
		require.NoError(t, err)
		s.now = schemas.MillisOf(tm)
	case "advance":
		d, err := time.ParseDuration(arg(t, td, 0))
		require.NoError(t, err)
		s.now += schemas.Millis(d.Milliseconds())
		got = s.fireTimers()
	case "send":
		var key string
		td.MaybeScanArgs(t, "key", &key)
		for _, l := range strings.FieldsFunc(td.Input, func(r rune) bool { return r == '\n' }) {
			cmd, err := schemas.DecodeCommand([]byte(l), 0)
			var fe *schemas.FieldError
			if err != nil {
				require.ErrorAs(t, err, &fe, "input %s", l)
			}
			k := key
			if k == "" {
				k = cmd.SKU
			}
			s.offset++
			// Timers due now fire before the command, as in the partition loop.
			got = append(got, s.fireTimers()...)
			o := s.core.Apply(s.state, Input{Key: k, Command: cmd, FieldErr: fe, Offset: s.offset}, s.now)
			s.state.Apply(o.Changes)
			for _, r := range o.Results {
				got = append(got, formatResult(&r))
			}
		}
	case "stock":
		st, ok := s.state.Stock(arg(t, td, 0))
		if !ok {
			return "unknown"
		}
		thr := "none"
		if st.LowStockThreshold != nil {
			thr = fmt.Sprint(*st.LowStockThreshold)
		}
		return fmt.Sprintf("on_hand=%d reserved=%d available=%d threshold=%s version=%d event=%s",
			st.OnHand, st.Reserved, st.Available, thr, st.Version, st.Event)
	case "reservation":
		r, ok := s.state.Reservation(arg(t, td, 0), arg(t, td, 1))
		if !ok {
			return "unknown"
		}
		b, err := json.Marshal(r)
		require.NoError(t, err)
		return string(b)
	case "check":
		got = s.check()
	default:
		t.Fatalf("%s: unknown directive %q", td.Pos, td.Cmd)
	}
	return strings.Join(got, "\n")
}

// fireTimers expires every active reservation due at s.now, earliest first.
func (s *scenarioState) fireTimers() []string {
	var due []schemas.ReservationEntity
	for _, c := range s.state {
		if r := c.Reservation; r != nil && r.Reservation.Status == schemas.StatusActive && r.Reservation.ExpiresAt <= s.now {
			due = append(due, *r)
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].Reservation.ExpiresAt < due[j].Reservation.ExpiresAt })
	var got []string
	for _, r := range due {
		o := s.core.Expire(s.state, 0, r.Reservation.SKU, r.Reservation.ReservationID, s.now)
		s.state.Apply(o.Changes)
		for _, res := range o.Results {
			got = append(got, formatResult(&res))
		}
	}
	return got
}

func (s *scenarioState) check() []string {
	reserved := map[string]int64{}
	for _, c := range s.state {
		if r := c.Reservation; r != nil && r.Reservation.Status == schemas.StatusActive {
			reserved[r.Reservation.SKU] += r.Reservation.Quantity
		}
	}
	var out []string
	for _, c := range s.state {
		if st := c.Stock; st != nil {
			if st.Reserved != reserved[st.SKU] || st.OnHand < 0 || st.Available != st.OnHand-st.Reserved {
				out = append(out, fmt.Sprintf("VIOLATION %s: on_hand=%d reserved=%d available=%d sum(active)=%d",
					st.SKU, st.OnHand, st.Reserved, st.Available, reserved[st.SKU]))
			}
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		return []string{"ok"}
	}
	return out
}

// formatResult renders a result on one line:
// <command_id|-> <type> <sku> <outcome> [reason] [dup] [stock=on_hand/reserved/available] [res=id:qty:status:ext] [msg="..."]
func formatResult(r *schemas.Result) string {
	var b strings.Builder
	id := r.CommandID
	if id == "" {
		id = "-"
	}
	typ := r.Type
	if typ == "" {
		typ = "?"
	}
	fmt.Fprintf(&b, "%s %s %s %s", id, typ, r.SKU, r.Outcome)
	if r.Reason != "" {
		b.WriteString(" " + r.Reason)
	}
	if r.Duplicate {
		b.WriteString(" dup")
	}
	if r.Stock != nil {
		fmt.Fprintf(&b, " stock=%d/%d/%d", r.Stock.OnHand, r.Stock.Reserved, r.Stock.Available)
	}
	if res := r.Reservation; res != nil {
		fmt.Fprintf(&b, " res=%s:%d:%s:ext%d", res.ReservationID, res.Quantity, res.Status, res.Extensions)
		if res.Status == schemas.StatusActive {
			fmt.Fprintf(&b, ":exp=%s", res.ExpiresAt.Time().Format("15:04:05"))
		}
		if res.OrderID != "" {
			b.WriteString(":order=" + res.OrderID)
		}
	}
	if r.Message != "" {
		fmt.Fprintf(&b, " msg=%q", r.Message)
	}
	return b.String()
}
