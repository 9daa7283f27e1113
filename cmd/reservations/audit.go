package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/sink"
)

// retention is a --audit-retention value: a Go duration or a number of days
// (90d) or weeks (12w); 0 keeps forever.
type retention struct{ p *time.Duration }

func (v retention) String() string {
	if v.p == nil || *v.p == 0 {
		return "0"
	}
	if *v.p%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(*v.p/(24*time.Hour)), 10) + "d"
	}
	return shortDuration(*v.p)
}

func (v retention) Set(s string) error {
	d, err := parseRetention(s)
	if err != nil {
		return err
	}
	*v.p = d
	return nil
}

func parseRetention(s string) (time.Duration, error) {
	const want = "want 0 (keep forever), days (90d), weeks (12w) or a duration (2160h)"
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			k, err := strconv.ParseInt(n, 10, 64)
			if err != nil || k < 0 || k > 100*366 {
				return 0, errors.New(want)
			}
			return time.Duration(k) * unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, errors.New(want)
	}
	return d, nil
}

// pointInTime is a --since / --until value: an RFC 3339 time, a date
// (YYYY-MM-DD, UTC midnight), or a duration before now (24h, 7d).
type pointInTime struct {
	p   *time.Time
	now func() time.Time
}

func (v pointInTime) String() string {
	if v.p == nil || v.p.IsZero() {
		return ""
	}
	return v.p.UTC().Format(time.RFC3339)
}

func (v pointInTime) Set(s string) error {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		*v.p = t
		return nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		*v.p = t
		return nil
	}
	if d, err := parseRetention(s); err == nil && d > 0 {
		*v.p = v.now().Add(-d)
		return nil
	}
	return errors.New("want an RFC 3339 time (2026-01-31T12:00:00Z), a date (2026-01-31) or a time ago (24h, 7d)")
}

type auditFlags struct {
	SKU, Reservation, Cart, Order string
	Since, Until                  time.Time
	Limit                         int
	JSON                          bool
	PGDSN                         string
	PGSchema                      string
}

func auditCommand() *command {
	return &command{
		name:    "audit",
		summary: "print what happened to a SKU, a reservation, a cart or an order (the sink's audit trail)",
		help: `
Prints the history the sink's audit trail (table audit_events, see
docs/AUDIT.md) holds for one SKU, reservation, cart or order: every decision
and notice of the results topic and every cart result, in the order they were
decided, one line per event. Give exactly one of --sku, --reservation, --cart
and --order (--reservation may be narrowed with --sku: a reservation id is
unique per SKU only), and optionally a time range [--since, --until).

  reservations audit --reservation r-1 --sku SKU-1
  reservations audit --cart cart-9 --since 7d
  reservations audit --order o-1 --json

Columns: when it was decided (UTC), kind (decision, notice, cart), type,
outcome (with the reason of a rejection), SKU, reservation, quantity, cart,
order, command id; a duplicate (a re-sent command id answered again) is marked
"dup". --json prints one JSON object per line instead.

Exit codes: 0 printed (also when nothing matched: "no events"); 1 Postgres
unreachable or without an audit trail; 2 usage error.`,
		setup: func() (*settings, func(context.Context, *cli, []string) int) {
			var cfg auditFlags
			s := newSettings("audit")
			s.String(&cfg.SKU, "sku", "", "the SKU whose events to print")
			s.String(&cfg.Reservation, "reservation", "", "the reservation id whose events to print (with --sku: of that SKU only)")
			s.String(&cfg.Cart, "cart", "", "the cart id whose events to print (its cart results and the decisions on its holds)")
			s.String(&cfg.Order, "order", "", "the order id whose events to print (prepare, commit and cart.commit results)")
			s.Var(pointInTime{p: &cfg.Since, now: time.Now}, "since", "print events decided at or after this time: RFC 3339, a date (UTC) or a time ago (24h, 7d)")
			s.Var(pointInTime{p: &cfg.Until, now: time.Now}, "until", "print events decided before this time (same forms as --since)")
			s.Int(&cfg.Limit, "limit", 10000, "print at most this many events, the earliest (0: all)")
			s.Bool(&cfg.JSON, "json", false, "print one JSON object per event and line instead of a table")
			s.String(&cfg.PGDSN, "pg-dsn", "", "PostgreSQL connection string (URL or key=value) of the sink's database")
			s.ShowDefault("pg-dsn", "required")
			s.Secret("pg-dsn")
			registerPGSchema(s, &cfg.PGSchema, "")
			// The query's own settings read RESERVATIONS_AUDIT_<NAME>, not the
			// variables of send's --sku, --cart, ... : an environment set up
			// for send must not filter the audit silently.
			for _, name := range []string{"sku", "reservation", "cart", "order", "since", "until", "limit", "json"} {
				s.Env(name, envPrefix+"AUDIT_"+strings.ToUpper(name), "")
			}
			return s, func(ctx context.Context, c *cli, args []string) int {
				if len(args) > 0 {
					return c.usageFailure("audit", fmt.Errorf("unexpected argument %q", args[0]))
				}
				if err := cfg.validate(s); err != nil {
					return c.usageFailure("audit", err)
				}
				return runAudit(ctx, c, cfg)
			}
		},
	}
}

func (cfg *auditFlags) validate(s *settings) error {
	var errs []error
	var set []string
	for _, f := range []struct{ name, v string }{{"reservation", cfg.Reservation}, {"cart", cfg.Cart}, {"order", cfg.Order}} {
		if f.v != "" {
			set = append(set, s.Name(f.name))
		}
	}
	switch {
	case len(set) > 1:
		errs = append(errs, fmt.Errorf("%s: give only one of them", strings.Join(set, " and ")))
	case len(set) == 1 && cfg.SKU != "" && cfg.Reservation == "":
		errs = append(errs, fmt.Errorf("%s and %s: give only one of them (--sku only narrows --reservation)", s.Name("sku"), set[0]))
	case len(set) == 0 && cfg.SKU == "":
		errs = append(errs, fmt.Errorf("one of %s, %s, %s or %s is required", s.Name("sku"), s.Name("reservation"),
			s.Name("cart"), s.Name("order")))
	}
	if !cfg.Since.IsZero() && !cfg.Until.IsZero() && !cfg.Since.Before(cfg.Until) {
		errs = append(errs, s.Invalid("until", "%s is not after --since %s", cfg.Until.UTC().Format(time.RFC3339),
			cfg.Since.UTC().Format(time.RFC3339)))
	}
	if cfg.Limit < 0 {
		errs = append(errs, s.Invalid("limit", "%d: must be >= 0", cfg.Limit))
	}
	if cfg.PGDSN == "" {
		errs = append(errs, fmt.Errorf("%s is required", s.Name("pg-dsn")))
	} else {
		errs = append(errs, checkDSN(s, "pg-dsn", cfg.PGDSN))
	}
	errs = append(errs, checkSchema(s, "pg-schema", cfg.PGSchema))
	return errors.Join(errs...)
}

func runAudit(ctx context.Context, c *cli, cfg auditFlags) int {
	pool, err := sink.OpenPool(ctx, cfg.PGDSN, cfg.PGSchema)
	if err != nil {
		return c.fail("audit", exitFailure, fmt.Errorf("%s: %w", redactDSN(cfg.PGDSN), err))
	}
	defer pool.Close()
	evs, err := sink.QueryAudit(ctx, pool, sink.AuditFilter{SKU: cfg.SKU, ReservationID: cfg.Reservation,
		CartID: cfg.Cart, OrderID: cfg.Order, Since: cfg.Since, Until: cfg.Until, Limit: cfg.Limit})
	if errors.Is(err, sink.ErrNoAudit) {
		return c.fail("audit", exitFailure, fmt.Errorf("schema %s: %w", schemaText(cfg.PGSchema), err))
	}
	if err != nil {
		return c.fail("audit", exitFailure, err)
	}
	if cfg.JSON {
		err = writeAuditJSON(c.stdout, evs)
	} else {
		err = writeAuditTable(c.stdout, evs)
	}
	if err != nil {
		return c.fail("audit", exitFailure, err)
	}
	if cfg.Limit > 0 && len(evs) == cfg.Limit {
		fmt.Fprintf(c.stderr, "reservations audit: printed the first %d events; later ones may exist (--limit, --since)\n", cfg.Limit)
	}
	return exitOK
}

// writeAuditTable prints events as an aligned table, one line per event.
func writeAuditTable(w io.Writer, evs []sink.AuditEvent) error {
	if len(evs) == 0 {
		_, err := fmt.Fprintln(w, "no events")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DECIDED_AT\tKIND\tTYPE\tOUTCOME\tSKU\tRESERVATION\tQTY\tCART\tORDER\tCOMMAND_ID")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, e := range evs {
		outcome := e.Outcome
		if e.Reason != "" {
			outcome += " (" + e.Reason + ")"
		}
		if e.Duplicate {
			outcome += " dup"
		}
		qty := "-"
		if e.Quantity != nil {
			qty = strconv.FormatInt(*e.Quantity, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.DecidedAt.UTC().Format("2006-01-02T15:04:05.000Z"),
			e.Kind, dash(e.Type), outcome, dash(e.SKU), dash(e.ReservationID), qty, dash(e.CartID), dash(e.OrderID),
			dash(e.CommandID))
	}
	return tw.Flush()
}

// writeAuditJSON prints one JSON object per event and line.
func writeAuditJSON(w io.Writer, evs []sink.AuditEvent) error {
	enc := json.NewEncoder(w)
	type event struct {
		DecidedAt schemas.Millis `json:"decided_at"` // the contract's format, to the millisecond
		sink.AuditEvent
	}
	for _, e := range evs {
		if err := enc.Encode(event{schemas.MillisOf(e.DecidedAt), e}); err != nil {
			return err
		}
	}
	return nil
}
