package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/internal/kafkatest"
	"github.com/reservations/reservations/internal/pgtest"
	"github.com/reservations/reservations/schemas"
)

func TestAuditUsage(t *testing.T) {
	dsn := []string{"--pg-dsn", "postgres://u@127.0.0.1:1/db"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "one of --sku (RESERVATIONS_AUDIT_SKU), --reservation (RESERVATIONS_AUDIT_RESERVATION), --cart (RESERVATIONS_AUDIT_CART) or --order (RESERVATIONS_AUDIT_ORDER) is required"},
		{[]string{"--cart", "c", "--order", "o"}, "--cart (RESERVATIONS_AUDIT_CART) and --order (RESERVATIONS_AUDIT_ORDER): give only one of them"},
		{[]string{"--sku", "S", "--cart", "c"}, "--sku (RESERVATIONS_AUDIT_SKU) and --cart (RESERVATIONS_AUDIT_CART): give only one of them"},
		{[]string{"--sku", "S", "--since", "yesterday"}, `invalid value "yesterday" for --since`},
		{[]string{"--sku", "S", "--since", "2026-02-01", "--until", "2026-01-01"}, "--until"},
		{[]string{"--sku", "S", "--limit", "-1"}, "--limit"},
		{[]string{"--sku", "S", "--pg-schema", "Bad-Name"}, "--pg-schema"},
		{[]string{"--sku", "S", "extra"}, `unexpected argument "extra"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := tool(t, append(append([]string{"audit"}, tc.args...), dsn...)...)
			assert.Equal(t, exitUsage, code)
			assert.Contains(t, stderr, tc.want)
		})
	}
	code, _, stderr := tool(t, "audit", "--sku", "S")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "--pg-dsn (RESERVATIONS_PG_DSN) is required")
}

func TestParseRetention(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "90d": 90 * 24 * time.Hour, "12w": 84 * 24 * time.Hour, "36h": 36 * time.Hour} {
		got, err := parseRetention(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "-1d", "3mo", "d", "-5h"} {
		_, err := parseRetention(in)
		assert.Error(t, err, in)
	}
	code, _, stderr := tool(t, "sink", "--pg-dsn", "postgres://u@h/db", "--audit-retention", "3 months")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, `invalid value "3 months" for --audit-retention`)
}

// TestAuditCommand: the sink command keeps the audit trail of the results
// topics by default; audit prints a reservation's, a cart's and an order's
// history as a table and as JSON; verify compares the trail and names a row
// that was altered.
func TestAuditCommand(t *testing.T) {
	c := kafkatest.New(t)
	names := c.Topics(t, 2)
	prefix := strings.TrimSuffix(names.Commands, ".commands")
	db := pgtest.NewDatabase(t)
	at := func(s string) schemas.Millis {
		tm, err := time.Parse(time.RFC3339, s)
		require.NoError(t, err)
		return schemas.MillisOf(tm)
	}
	res := func(r schemas.Result) *kgo.Record {
		b, err := json.Marshal(r)
		require.NoError(t, err)
		return &kgo.Record{Topic: names.Results, Key: []byte(r.SKU), Value: b}
	}
	hold := func(status, order string) *schemas.Reservation {
		return &schemas.Reservation{ReservationID: "r-1", SKU: "SKU-1", Quantity: 2, Status: status, CartID: "cart-9", OrderID: order}
	}
	cart, err := json.Marshal(schemas.CartResult{CommandID: "cc-1", Type: schemas.TypeCartCommit, CartID: "cart-9", OrderID: "o-1",
		Outcome: schemas.OutcomeAccepted, Lines: []schemas.CartLine{{SKU: "SKU-1", ReservationID: "r-1", Quantity: 2}},
		DecidedAt: at("2026-02-01T00:00:05Z")})
	require.NoError(t, err)
	recs := []*kgo.Record{
		res(schemas.Result{CommandID: "c-1", Type: "reserve", SKU: "SKU-1", ReservationID: "r-1", Outcome: "accepted",
			Reservation: hold("active", ""), DecidedAt: at("2026-01-31T23:59:59Z")}),
		res(schemas.Result{CommandID: "c-2", Type: "reserve", SKU: "SKU-1", ReservationID: "r-1", Outcome: "rejected",
			Reason: "reservation_exists", DecidedAt: at("2026-02-01T00:00:01Z")}),
		res(schemas.Result{CommandID: "c-1", Type: "reserve", SKU: "SKU-1", ReservationID: "r-1", Outcome: "accepted", Duplicate: true,
			Reservation: hold("active", ""), DecidedAt: at("2026-02-01T00:00:02Z")}),
		res(schemas.Result{CommandID: "cart-abc", Type: "commit", SKU: "SKU-1", ReservationID: "r-1", Outcome: "accepted",
			Reservation: hold("consumed", "o-1"), DecidedAt: at("2026-02-01T00:00:04Z")}),
		res(schemas.Result{Type: "low_stock", SKU: "SKU-1", Outcome: "accepted", DecidedAt: at("2026-02-01T00:00:04Z")}),
		{Topic: names.CartResults, Key: []byte("cart-9"), Value: cart},
	}
	cl := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, r := range recs {
		require.NoError(t, cl.ProduceSync(ctx, r).FirstErr()) // one by one: in this order on their partitions
	}

	kafka := []string{"--brokers", strings.Join(c.Brokers, ","), "--topic-prefix", prefix}
	sctx, stop := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- (&cli{stdout: &stdout, stderr: &stderr, lookupEnv: envMap()}).run(sctx, append([]string{"sink",
			"--pg-dsn", db.DSN, "--http-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--batch-wait", "5ms"}, kafka...))
	}()
	eventually(t, 60*time.Second, "audit rows", func() bool {
		var n int
		err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM reservations.audit_events`).Scan(&n)
		return err == nil && n == len(recs)
	})
	stop()
	require.Equal(t, exitOK, <-done, stderr.String())
	assert.Contains(t, stderr.String(), "audit=true")

	pg := []string{"--pg-dsn", db.DSN}
	code, out, _ := tool(t, append([]string{"audit", "--reservation", "r-1", "--sku", "SKU-1"}, pg...)...)
	require.Equal(t, exitOK, code)
	assert.Equal(t, `DECIDED_AT                KIND      TYPE     OUTCOME                        SKU    RESERVATION  QTY  CART    ORDER  COMMAND_ID
2026-01-31T23:59:59.000Z  decision  reserve  accepted                       SKU-1  r-1          2    cart-9  -      c-1
2026-02-01T00:00:01.000Z  decision  reserve  rejected (reservation_exists)  SKU-1  r-1          -    -       -      c-2
2026-02-01T00:00:02.000Z  decision  reserve  accepted dup                   SKU-1  r-1          2    cart-9  -      c-1
2026-02-01T00:00:04.000Z  decision  commit   accepted                       SKU-1  r-1          2    cart-9  o-1    cart-abc
`, out)

	// The cart: its holds' decisions and its cart result, in a time range.
	code, out, _ = tool(t, append([]string{"audit", "--cart", "cart-9", "--since", "2026-02-01T00:00:02Z",
		"--until", "2026-02-02"}, pg...)...)
	require.Equal(t, exitOK, code)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 4, out)
	assert.Contains(t, lines[1], "c-1")
	assert.Contains(t, lines[3], "cart      cart.commit")

	// An order as JSON: one object per line, the contract's time format.
	code, out, _ = tool(t, append([]string{"audit", "--order", "o-1", "--json"}, pg...)...)
	require.Equal(t, exitOK, code)
	lines = strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, out)
	var ev map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &ev))
	assert.Equal(t, "2026-02-01T00:00:05.000Z", ev["decided_at"])
	assert.Equal(t, "cart", ev["kind"])
	assert.Equal(t, "cc-1", ev["command_id"])
	assert.EqualValues(t, 2, ev["quantity"])

	code, out, _ = tool(t, append([]string{"audit", "--sku", "SKU-404"}, pg...)...)
	require.Equal(t, exitOK, code)
	assert.Equal(t, "no events\n", out)
	code, _, errOut := tool(t, append([]string{"audit", "--sku", "SKU-1", "--pg-schema", "elsewhere"}, pg...)...)
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, errOut, "no audit trail")

	// verify: clean, then an altered row is named.
	code, out, _ = tool(t, append(append([]string{"verify", "--check-audit", "on"}, pg...), kafka...)...)
	require.Equal(t, exitOK, code, out)
	assert.Contains(t, out, "audit:        5 rows compared with 5 records of "+names.Results)
	_, err = db.Pool.Exec(context.Background(), `UPDATE reservations.audit_events SET outcome = 'accepted', reason = ''
		WHERE command_id = 'c-2'`)
	require.NoError(t, err)
	code, out, _ = tool(t, append(append([]string{"verify"}, pg...), kafka...)...)
	assert.Equal(t, exitFailure, code, out)
	assert.Contains(t, out, `audit       `+names.Results+` outcome: want "rejected", got "accepted"`)
	assert.Contains(t, out, "2 between the audit trail and the results")
	code, _, _ = tool(t, append(append([]string{"verify", "--check-audit", "off"}, pg...), kafka...)...)
	assert.Equal(t, exitOK, code)
}
