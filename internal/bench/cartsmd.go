package bench

import (
	"fmt"
	"strings"
)

// cartSummary is the one-line cart figure under the targets ("" without carts).
func (rep *Report) cartSummary() string {
	h := rep.Headline
	if _, ok := h["cart_holds_per_s"]; !ok {
		return ""
	}
	v := h["cart_violations"]
	inv := "0 invariant violations"
	if v != 0 || h["cart_checks_failed"] != 0 {
		inv = fmt.Sprintf("**%.0f invariant violations, %.0f checks failed**", v, h["cart_checks_failed"])
	}
	return fmt.Sprintf("Carts (3-line all-or-nothing holds, [below](#carts-all-or-nothing-3-line-holds)): pipeline %s holds/s at p99 %s ms, "+
		"SQL %s holds/s at p99 %s ms: **%s**; %s.", f0(h["cart_holds_per_s"]), f1(h["cart_p99_ms"]),
		f0(h["sql_cart_holds_per_s"]), f1(h["sql_cart_p99_ms"]), fx(h["cart_vs_sql_ratio"]), inv)
}

func (rep *Report) cartsSection(m *md) {
	cr := &rep.Carts
	m.p("## Carts: all-or-nothing 3-line holds")
	m.p("")
	if len(cr.Steps) == 0 {
		m.p("Not measured this run.")
		m.p("")
		return
	}
	h := rep.Headline
	cmd := map[string]string{ModeShort: "make bench-short", ModeFull: "make bench", ModeTiny: "the package's test"}[rep.Mode]
	m.p("Produced by `%s` (`%s`), %s mode, in the same run as everything above. The cart service sends a", cmd, orDash(rep.Command), rep.Mode)
	m.p("`cart.reserve` of %d lines on distinct SKUs (quantities 1-3) drawn from %s SKUs with ample stock, keyed by", cr.Lines, commas(int64(cr.SKUs)))
	m.p("`cart_id`, and waits for its one cart result; when the cart was accepted it sends the cart's `cart.release` and waits")
	m.p("for that too (so stock never runs out), except for %.0f%% of accepted carts, left held so that the check below sees", 100*cr.KeepShare)
	m.p("active holds as well as released ones. %.0f%% of the carts have one line on one of %d sold-out SKUs: they are", 100*cr.SoldOutShare, cr.SoldOutSKUs)
	m.p("rejected in every system (the pipeline's saga then releases the lines it held). Every system gets the same carts")
	m.p("(seeded) at the same closed-loop client concurrencies.")
	m.p("")
	m.p("- **pipeline**: the SKU processor and the cart coordinator (`processor.Config{Role: processor.RoleCart}`), both")
	m.p("  in process on the harness's kfake broker, at each commit interval. A hold is a saga: cart command -> coordinator")
	m.p("  transaction (3 per-SKU reserve commands) -> SKU processor transaction (3 line results, routed back to the cart's")
	m.p("  partition) -> coordinator transaction (the cart result) -> the client's read_committed consumer.")
	m.p("- **sql_cart**: one READ COMMITTED Postgres transaction per cart command: `SELECT ... FOR UPDATE` of the 3 stock")
	m.p("  rows in SKU order (no deadlocks), the availability check in the application, one statement updating the 3 stock")
	m.p("  rows and inserting the 3 reservation rows, COMMIT (4 round trips); the release likewise (lock the cart's rows and")
	m.p("  their stock rows in SKU order, one statement, COMMIT). Pool min(clients, %d), as for the other baselines.", rep.Settings.PoolCap)
	m.p("")
	m.p("Holds/s = accepted `cart.reserve`s per second of the step's wall time (the clients' releases run inside that")
	m.p("time, identically in both systems). Latency = the `cart.reserve` alone: sent -> cart result read (pipeline) or")
	m.p("COMMIT returned (SQL), in milliseconds.")
	m.p("")
	var p, q CartBest
	for _, b := range cr.Best {
		if b.System == SystemPipeline {
			p = b
		} else {
			q = b
		}
	}
	cell := func(b CartBest, rate, p99 float64, clients int, series string) string {
		if b.System == "" {
			return "-"
		}
		s := fmt.Sprintf("%s holds/s (p99 %s ms, %d clients", f0(rate), f1(p99), clients)
		if strings.HasPrefix(series, SystemPipeline+" ") {
			s += ", commit " + strings.TrimPrefix(series, SystemPipeline+" ")
		}
		return s + ")"
	}
	m.p("| | pipeline (SKU processor + cart coordinator) | SQL (one transaction, row locks) | pipeline / SQL |")
	m.p("|---|---|---|---|")
	pb, qb := cell(p, p.HoldsPerS, p.P99, p.Clients, p.Series), cell(q, q.HoldsPerS, q.P99, q.Clients, q.Series)
	if p.System != "" && !p.WithinBudget {
		pb += " **p99 budget never met: lowest-p99 step**"
	}
	if q.System != "" && !q.WithinBudget {
		qb += " **p99 budget never met: lowest-p99 step**"
	}
	m.p("| accepted holds/s with p99 <= 150 ms (`cart_holds_per_s`, `cart_p99_ms`; `sql_cart_*`) | %s | %s | **%s** (`cart_vs_sql_ratio`) |",
		pb, qb, fx(h["cart_vs_sql_ratio"]))
	m.p("| highest accepted holds/s at any p99 (`cart_max_holds_per_s`) | %s | %s | %s (`cart_vs_sql_max_ratio`) |",
		cell(p, p.MaxHoldsPerS, p.P99AtMax, p.ClientsAtMax, p.SeriesAtMax), cell(q, q.MaxHoldsPerS, q.P99AtMax, q.ClientsAtMax, q.SeriesAtMax),
		fx(h["cart_vs_sql_max_ratio"]))
	m.p("")
	viol, failed := h["cart_violations"], h["cart_checks_failed"]
	if viol == 0 && failed == 0 {
		m.p("Invariants after the runs (`cart_violations`): **0** violations in %d checks: no oversell, reserved == sum of the", len(cr.Checks))
		m.p("active holds on every cart SKU, and no partial cart (every accepted cart holds its 3 lines, or has released all")
		m.p("3; every rejected cart holds none).")
	} else {
		m.p("Invariants after the runs (`cart_violations`): **%.0f violations, %.0f of %d checks failed**: see the table below.",
			viol, failed, len(cr.Checks))
	}
	m.p("")
	rep.cartExplain(m, p, q)

	m.p("### Cart steps")
	m.p("")
	m.p("| system | clients | carts | acc/rej | holds/s | p50 | p95 | p99 | p99.9 | max | release p50 / p99 | notes |")
	m.p("|---|---|---|---|---|---|---|---|---|---|---|---|")
	for i := range cr.Steps {
		s := &cr.Steps[i]
		m.p("| %s | %d | %s | %d/%d | %s | %s | %s | %s | %s | %s | %s / %s | %s |", s.Series(), s.Clients, commas(int64(s.Carts)),
			s.Accepted, s.Rejected, f0(s.HoldsPerS), f1(s.P50), f1(s.P95), f1(s.P99), f1(s.P999), f1(s.Max),
			f1(s.ReleaseP50), f1(s.ReleaseP99), cartNotes(s))
	}
	m.p("")
	m.p("Where a pipeline cart command's time goes (means over the step's cart commands, reserves and releases, in ms,")
	m.p("from the processors' own histograms and the cart results' `decided_at`): *pickup* = produced -> decoded by the")
	m.p("coordinator; *saga* = the coordinator's first per-SKU commands -> its cart result (the rest of the coordinator's")
	m.p("batch and its transaction's end, the SKU processor's fetch, batch and transaction, the line results' fetch); *line* (inside")
	m.p("the saga) = a per-SKU command produced by the coordinator -> decided by the SKU processor; *visible* = cart result")
	m.p("decided -> read by the client (the rest of the coordinator's batch, its transaction's end, the client's fetch).")
	m.p("")
	m.p("| series | clients | reserve mean | pickup | saga | (line) | visible | SKU processor txns | coordinator txns |")
	m.p("|---|---|---|---|---|---|---|---|---|")
	for i := range cr.Steps {
		s := &cr.Steps[i]
		if s.System != SystemPipeline {
			continue
		}
		m.p("| %s | %d | %s | %s | %s | %s | %s | %d (%.0f records/txn, end %.1f ms) | %d (%.0f records/txn, end %.1f ms) |",
			s.Series(), s.Clients, f1(s.Mean), f1(s.PickupMs), f1(s.SagaMs), f1(s.LineMs), f1(s.VisibleMs),
			s.SKUTxns, s.SKURecordsTxn, s.SKUCommitMs, s.CoordTxns, s.CoordRecordsTxn, s.CoordCommitMs)
	}
	m.p("")
	m.p("### Cart invariant checks")
	m.p("")
	m.p("Pipeline: the SKU processor's and the coordinator's changelogs replayed to their last stable offsets after the")
	m.p("steps of each commit interval. SQL: the tables after all steps. Every cart whose client saw the final answer is")
	m.p("checked against it: kept -> its 3 lines active, released -> its 3 lines released, rejected -> no line held.")
	m.p("")
	m.p("| system | scope | carts (kept / released / rejected) | partial carts | SKUs | oversold | mismatched | other | detail |")
	m.p("|---|---|---|---|---|---|---|---|---|")
	for _, c := range cr.Checks {
		d := c.Detail
		if c.Error != "" {
			d = "check failed: " + c.Error
		}
		m.p("| %s | %s | %s (%s / %s / %s) | %d | %d | %d | %d | %d | %s |", c.System, c.Scope, commas(int64(c.Carts)),
			commas(int64(c.Kept)), commas(int64(c.Released)), commas(int64(c.Rejected)), c.PartialCarts, c.SKUs,
			c.OversoldSKUs, c.MismatchedSKUs, c.Other, d)
	}
	m.p("")
}

func cartNotes(s *CartStep) string {
	var n []string
	if s.Pool > 0 {
		n = append(n, fmt.Sprintf("pool %d", s.Pool))
	}
	if s.Kept > 0 {
		n = append(n, fmt.Sprintf("%d kept, %d released", s.Kept, s.Releases))
	}
	if s.Retries > 0 {
		n = append(n, fmt.Sprintf("%d retries", s.Retries))
	}
	if s.Errors+s.ReleaseErrors > 0 {
		n = append(n, fmt.Sprintf("%d reserve and %d release errors", s.Errors, s.ReleaseErrors))
	}
	if s.Problems > 0 {
		n = append(n, fmt.Sprintf("**%d answers showing a partial cart or answered twice**", s.Problems))
	}
	if s.TimeBoxed {
		n = append(n, fmt.Sprintf("time-boxed: %d of %d planned carts in %.1f s", s.Carts+s.Errors, s.Planned, s.Seconds))
	}
	if s.Aborts > 0 {
		n = append(n, fmt.Sprintf("%d aborted txns", s.Aborts))
	}
	if s.Restarts > 0 {
		n = append(n, fmt.Sprintf("%d processor session restarts", s.Restarts))
	}
	return strings.Join(n, "; ")
}

// cartExplain says where the pipeline's cart time goes, from this run's data.
func (rep *Report) cartExplain(m *md, p, q CartBest) {
	if p.System == "" || q.System == "" {
		return
	}
	cr := &rep.Carts
	var at *CartStep // the pipeline's best step
	for i := range cr.Steps {
		s := &cr.Steps[i]
		if s.System == SystemPipeline && s.Series() == p.Series && s.Clients == p.Clients {
			at = s
		}
	}
	var b strings.Builder
	rt := ratio(p.HoldsPerS, q.HoldsPerS)
	lat := fmt.Sprintf("p99 %s vs %s ms", f1(p.P99), f1(q.P99))
	switch {
	case rt < 0.95:
		fmt.Fprintf(&b, "**The pipeline is slower than SQL on cart holds**: %s vs %s holds/s within the budget (%s; %s). ",
			f0(p.HoldsPerS), f0(q.HoldsPerS), fx(rt), lat)
	case rt <= 1.05:
		fmt.Fprintf(&b, "**On cart holds the pipeline only matches SQL within the latency budget**: %s vs %s holds/s (%s; %s); "+
			"past the budget it reaches %s holds/s against SQL's %s (%s), at p99 %s vs %s ms. ",
			f0(p.HoldsPerS), f0(q.HoldsPerS), fx(rt), lat, f0(p.MaxHoldsPerS), f0(q.MaxHoldsPerS),
			fx(ratio(p.MaxHoldsPerS, q.MaxHoldsPerS)), f1(p.P99AtMax), f1(q.P99AtMax))
	default:
		fmt.Fprintf(&b, "The pipeline holds more carts per second than SQL within the budget: %s vs %s holds/s (%s; %s). ",
			f0(p.HoldsPerS), f0(q.HoldsPerS), fx(rt), lat)
	}
	b.WriteString("Where the pipeline's time goes: a cart hold crosses three transactions in sequence (the coordinator's, " +
		"the SKU processor's, the coordinator's again). On each hop a record waits for the transaction in progress to " +
		"end, then for its own batch to close (after at most one commit interval, sooner when nothing more is buffered) " +
		"and its transaction to end (flush, offsets, EndTxn), then for the next reader's read_committed fetch: the " +
		"latency floor is three transaction ends and three fetches in sequence (at least two commit intervals under " +
		"load), where SQL's is four round trips on loopback.")
	if at != nil {
		fmt.Fprintf(&b, " At the best point (%s, %d clients) a cart command's mean of %s ms splits into pickup %s ms, saga %s ms "+
			"(of which a per-SKU command's own hop %s ms) and visible %s ms; transactions took %.1f ms (SKU processor) and "+
			"%.1f ms (coordinator) to end.", at.Series(), at.Clients, f1(at.Mean), f1(at.PickupMs), f1(at.SagaMs), f1(at.LineMs),
			f1(at.VisibleMs), at.SKUCommitMs, at.CoordCommitMs)
	}
	b.WriteString(" Throughput: per accepted and released cart the pipeline decides 2 cart commands, 6 per-SKU commands " +
		"and 6 routed line results and writes 2 cart results, 6 SKU results and their changelog records (a cart " +
		"entity, a decided cart command, reservation, stock and idempotency entities) through the broker; SQL runs " +
		"2 transactions touching 3 stock rows and 3 reservation rows.")
	if ps := cr.Profile; ps != nil && ps.Error == "" && len(ps.Components) > 0 {
		var parts []string
		for _, c := range ps.Components {
			parts = append(parts, fmt.Sprintf("%s %.0f%%", c.Name, c.Percent))
		}
		fmt.Fprintf(&b, " CPU profile of the pipeline's cart runs (`%s`, %.1f s of samples on %d cores): %s.",
			ps.File, ps.TotalSeconds, rep.Machine.CPUs, strings.Join(parts, ", "))
		if len(ps.Hot) > 0 {
			b.WriteString(" The SKU processor's heaviest functions (cumulative): " + strings.Join(ps.Hot, ", ") + ".")
		}
	}
	m.p("%s", b.String())
	m.p("")
}
