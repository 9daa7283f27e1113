package cart

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/schemas"
)

// TestScenarios runs the data-driven scenarios of testdata/scenarios through
// the simulator (sim_test.go), in the format of github.com/cockroachdb/datadriven:
// each block is a directive (and its input lines), "----", and the expected
// output, ended by a blank line. The clock starts at 2026-01-01T00:00:00Z.
// `go test -run TestScenarios ./processor/cart -rewrite` writes the actual
// outputs back into the files (review the diff).
//
//	rules [max_queue=N] [max_holds=N] [max_queued_lines=N] [window=D]
//	                                the coordinator's rules (default DefaultRules)
//	stock SKU=N ...                 set on_hand of SKUs (a stock.set to the SKU core)
//	send [key=K]                    the JSON cart commands that follow, to the coordinator (key: cart_id, or K)
//	deliver [SEL ...]               decide in-flight per-SKU commands: all, oldest first, or the oldest
//	                                of each selector in the order given (SEL: SKU or SKU@CART)
//	reply [SEL ...]                 hand in-flight line results to the coordinator, like deliver
//	run                             deliver and reply until nothing is in flight
//	redeliver SKU                   hand the last line result of SKU to the coordinator again
//	advance D                       move the clock; the SKU core's timers expire due holds
//	cart CART                       the coordinator's cart entity
//	stocks                          every SKU of the SKU core and its active holds
//	inflight                        per-SKU commands and line results in flight
//	check                           the simulator's invariants (sim.violations)
func TestScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata/scenarios", func(t *testing.T, path string) {
		s := newSim(t, DefaultRules(), scenarioStart)
		datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string {
			return strings.Join(runDirective(s, td), "\n")
		})
	})
}

var scenarioStart = schemas.MillisOf(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))

// words returns the directive's bare arguments (words without =).
func words(t testing.TB, td *datadriven.TestData) []string {
	var w []string
	for _, a := range td.CmdArgs {
		require.Empty(t, a.Vals, "%s: %s: unexpected %s", td.Pos, td.Cmd, a)
		w = append(w, a.Key)
	}
	return w
}

func runDirective(s *sim, td *datadriven.TestData) []string {
	t := s.t
	var got []string
	switch td.Cmd {
	case "rules":
		r := &s.core.Rules
		for _, a := range td.CmdArgs {
			switch a.Key {
			case "max_queue":
				a.Scan(t, 0, &r.MaxQueue)
			case "max_holds":
				a.Scan(t, 0, &r.MaxHolds)
			case "max_queued_lines":
				a.Scan(t, 0, &r.MaxQueuedLines)
			case "window":
				a.Scan(t, 0, &r.DedupeWindow)
			default:
				t.Fatalf("%s: rules: unknown %q", td.Pos, a)
			}
		}
	case "stock":
		for _, a := range td.CmdArgs {
			var n int64
			a.Scan(t, 0, &n)
			s.sku.setStock(a.Key, n, s.now)
		}
	case "send":
		var key string
		td.MaybeScanArgs(t, "key", &key)
		for _, l := range strings.FieldsFunc(td.Input, func(r rune) bool { return r == '\n' }) {
			cmd, err := schemas.DecodeCartCommand([]byte(l), 0)
			var fe *schemas.FieldError
			if err != nil {
				require.ErrorAs(t, err, &fe, "input %s", l)
			}
			k := key
			if k == "" {
				k = cmd.CartID
			}
			o := s.send(k, cmd, fe)
			if len(o.Results)+len(o.Commands) == 0 {
				got = append(got, "(nothing: "+cmd.CommandID+" is running or queued)")
				if len(o.Changes) > 0 {
					got[len(got)-1] = "queued " + cmd.CommandID
					if c := o.Changes[0].Cart; c != nil && c.Event == EventRerouted {
						got[len(got)-1] = fmt.Sprintf("rerouted %s: reply=%d", cmd.CommandID, *cmd.ReplyPartition)
					}
				}
			}
			got = append(got, formatOutputs(&o)...)
		}
	case "deliver":
		for _, i := range pick(t, words(t, td), len(s.cmds), func(i int) (string, string) { return s.cmds[i].SKU, s.cmds[i].CartID }) {
			cmd, res := s.deliver(i)
			got = append(got, formatDecision(&cmd, &res))
		}
	case "reply":
		for _, i := range pick(t, words(t, td), len(s.replies), func(i int) (string, string) { return s.replies[i].res.SKU, s.replies[i].key }) {
			rp, o := s.reply(i)
			got = append(got, formatReply(&rp, &o)...)
		}
	case "run":
		for len(s.cmds)+len(s.replies) > 0 {
			for len(s.cmds) > 0 {
				cmd, res := s.deliver(0)
				got = append(got, formatDecision(&cmd, &res))
			}
			for len(s.replies) > 0 {
				rp, o := s.reply(0)
				got = append(got, formatReply(&rp, &o)...)
			}
		}
	case "redeliver":
		name := arg(t, td)
		rp, ok := s.last[name]
		require.True(t, ok, "no line result of %s", name)
		s.replies = append(s.replies, rp)
		rp, o := s.reply(len(s.replies) - 1)
		got = append(got, formatReply(&rp, &o)...)
	case "advance":
		d, err := time.ParseDuration(arg(t, td))
		require.NoError(t, err)
		for _, r := range s.advance(schemas.Millis(d.Milliseconds())) {
			got = append(got, fmt.Sprintf("expired %s/%s", r.SKU, r.ReservationID))
		}
		got = append(got, "now "+clock(s.now))
	case "cart":
		got = formatCart(s, arg(t, td))
	case "stocks":
		got = formatStocks(s)
	case "inflight":
		for _, c := range s.cmds {
			got = append(got, "command "+formatCommand(&c))
		}
		for _, rp := range s.replies {
			got = append(got, fmt.Sprintf("line-result %s@%s %s %s%s", rp.res.SKU, rp.key, rp.res.Type, rp.res.Outcome, prefixed(" ", rp.res.Reason)))
		}
		if len(got) == 0 {
			got = []string{"nothing"}
		}
	case "check":
		got = s.violations()
		if len(got) == 0 {
			got = []string{"ok"}
		}
	default:
		t.Fatalf("%s: unknown directive %q", td.Pos, td.Cmd)
	}
	return got
}

// arg returns the directive's one bare argument.
func arg(t testing.TB, td *datadriven.TestData) string {
	w := words(t, td)
	require.Len(t, w, 1, "%s: %s wants one argument", td.Pos, td.Cmd)
	return w[0]
}

// pick returns the indexes of the in-flight items sels select, one at a time
// (an index is valid when it is used: the item before it has been removed),
// or every item oldest first when sels is empty.
func pick(t testing.TB, sels []string, n int, at func(int) (sku, cart string)) []int {
	if len(sels) == 0 {
		return make([]int, n) // index 0, n times
	}
	var idx []int
	taken := map[int]bool{}
	for _, sel := range sels {
		sku, cart, _ := strings.Cut(sel, "@")
		found := -1
		for i := 0; i < n; i++ {
			if s, c := at(i); !taken[i] && s == sku && (cart == "" || c == cart) {
				found = i
				break
			}
		}
		require.GreaterOrEqual(t, found, 0, "nothing in flight for %s", sel)
		taken[found] = true
		// Items before found that were taken earlier are removed by then.
		shift := 0
		for j := range taken {
			if j < found {
				shift++
			}
		}
		idx = append(idx, found-shift)
	}
	return idx
}

// clock renders an instant of the scenario: the time of day, and the date
// when it is not the first day.
func clock(m schemas.Millis) string {
	if m.Time().YearDay() == scenarioStart.Time().YearDay() {
		return m.Time().Format("15:04:05")
	}
	return m.Time().Format("Jan 2 15:04:05")
}

func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}

// formatCommand renders a per-SKU command: type sku@cart res=id [qty=q ttl=t] [order=o].
func formatCommand(c *schemas.Command) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s@%s res=%s", c.Type, c.SKU, c.CartID, c.ReservationID)
	if c.Quantity != nil {
		fmt.Fprintf(&b, " qty=%d", *c.Quantity)
	}
	if c.TTLSeconds != nil {
		fmt.Fprintf(&b, " ttl=%d", *c.TTLSeconds)
	}
	if c.OrderID != "" {
		b.WriteString(" order=" + c.OrderID)
	}
	return b.String()
}

// formatOutputs renders cart results (each followed by "  reply partition=N"
// when it is routed to the replies topic too) and per-SKU commands.
func formatOutputs(o *Outputs) []string {
	var got []string
	for i := range o.Results {
		got = append(got, formatCartResult(&o.Results[i])...)
		for _, rp := range o.Replies {
			if rp.Result == i {
				got = append(got, fmt.Sprintf("  reply partition=%d", rp.Partition))
			}
		}
	}
	for _, rp := range o.Replies {
		if rp.Result < 0 || rp.Result >= len(o.Results) {
			got = append(got, fmt.Sprintf("  REPLY OF NO RESULT %d", rp.Result))
		}
	}
	for i := range o.Commands {
		got = append(got, "-> "+formatCommand(&o.Commands[i]))
	}
	return got
}

// formatCartResult renders a cart result and its lines:
//
//	result <command_id> <type> <cart> <outcome> [reason] [dup] [order=o] [msg="..."]
//	  line <sku> res=<id> qty=<q> <outcome> [reason] status=<status> [exp=hh:mm:ss]
func formatCartResult(r *schemas.CartResult) []string {
	var b strings.Builder
	cartID := r.CartID
	if cartID == "" {
		cartID = "-"
	}
	fmt.Fprintf(&b, "result %s %s %s %s%s", r.CommandID, r.Type, cartID, r.Outcome, prefixed(" ", r.Reason))
	if r.Duplicate {
		b.WriteString(" dup")
	}
	if r.OrderID != "" {
		b.WriteString(" order=" + r.OrderID)
	}
	fmt.Fprintf(&b, " offset=%d at=%s", r.Offset, clock(r.DecidedAt))
	if r.Message != "" {
		fmt.Fprintf(&b, " msg=%q", r.Message)
	}
	got := []string{b.String()}
	if r.Lines == nil {
		got = append(got, "  LINES NIL")
	}
	for _, l := range r.Lines {
		outcome := l.Outcome
		if outcome == "" {
			outcome = "untried"
		}
		st := l.Status
		if st == "" {
			st = "none"
		}
		line := fmt.Sprintf("  line %s res=%s qty=%d %s%s status=%s", l.SKU, l.ReservationID, l.Quantity, outcome, prefixed(" ", l.Reason), st)
		if l.Status == schemas.StatusActive {
			line += " exp=" + clock(l.ExpiresAt)
		}
		got = append(got, line)
	}
	return got
}

// formatDecision renders a per-SKU decision of the SKU core.
func formatDecision(c *schemas.Command, r *schemas.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s@%s res=%s %s%s", r.Type, r.SKU, c.CartID, r.ReservationID, r.Outcome, prefixed(" ", r.Reason))
	if r.Duplicate {
		b.WriteString(" dup")
	}
	if r.Stock != nil {
		fmt.Fprintf(&b, " stock=%d/%d/%d", r.Stock.OnHand, r.Stock.Reserved, r.Stock.Available)
	}
	if r.Reservation != nil {
		fmt.Fprintf(&b, " status=%s", r.Reservation.Status)
	}
	return b.String()
}

func formatReply(rp *reply, o *Outputs) []string {
	head := fmt.Sprintf("line-result %s@%s %s %s%s", rp.res.SKU, rp.key, rp.res.Type, rp.res.Outcome, prefixed(" ", rp.res.Reason))
	switch {
	case len(o.Changes) == 0 && len(o.Results) == 0 && len(o.Commands) == 0:
		return []string{head + ": ignored"}
	case len(o.Results) == 0 && len(o.Commands) == 0:
		return []string{head + ": recorded"}
	}
	return append([]string{head + ":"}, formatOutputs(o)...)
}

func formatCart(s *sim, cartID string) []string {
	e, ok := s.state.Cart(cartID)
	if !ok {
		return []string{"no entity"}
	}
	var got []string
	hs := []string{}
	for _, h := range e.Holds {
		hs = append(hs, fmt.Sprintf("%s/%s:%d@%s", h.SKU, h.ReservationID, h.Quantity, clock(h.ExpiresAt)))
	}
	got = append(got, "holds: "+strings.Join(hs, " "))
	if sg := e.Saga; sg != nil {
		ls := []string{}
		for _, l := range sg.Lines {
			st := l.Outcome
			if l.Pending {
				st = "pending"
			}
			if st == "" {
				st = "untried"
			}
			flags := ""
			if l.Held {
				flags += "+held"
			}
			if l.Prepared {
				flags += "+prepared"
			}
			ls = append(ls, fmt.Sprintf("%s/%s:%s%s", l.SKU, l.ReservationID, st, flags))
		}
		got = append(got, fmt.Sprintf("saga: %s %s%s phase=%s lines: %s", sg.Command.CommandID, sg.Command.Type,
			formatRoute(&sg.Command, " reply="), sg.Phase, strings.Join(ls, " ")))
	}
	if len(e.Queue) > 0 {
		qs := []string{}
		for _, q := range e.Queue {
			qs = append(qs, q.Command.CommandID+":"+q.Command.Type+formatRoute(&q.Command, ":reply="))
		}
		got = append(got, "queue: "+strings.Join(qs, " "))
	}
	got = append(got, fmt.Sprintf("version=%d event=%s command=%s", e.Version, e.Event, e.CommandID))
	return got
}

// formatRoute renders the reply route a cart command keeps: prefix and its
// partition, or nothing.
func formatRoute(c *schemas.CartCommand, prefix string) string {
	if p, ok := c.Reply(); ok {
		return fmt.Sprintf("%s%d", prefix, p)
	}
	return ""
}

func formatStocks(s *sim) []string {
	var got []string
	all := s.sku.reservations()
	for _, name := range s.sku.skus() {
		st, _ := s.sku.stock(name)
		var active []string
		for _, r := range all {
			if r.SKU == name && r.Status == schemas.StatusActive {
				a := fmt.Sprintf("%s:%d", r.ReservationID, r.Quantity)
				if r.Prepared {
					a += ":prepared"
				}
				active = append(active, a)
			}
		}
		got = append(got, fmt.Sprintf("%s on_hand=%d reserved=%d available=%d active=[%s]",
			name, st.OnHand, st.Reserved, st.Available, strings.Join(active, " ")))
	}
	return got
}
