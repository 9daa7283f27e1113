package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// buildSend parses send's arguments as the subcommand does and builds the record.
func buildSend(t *testing.T, env func(string) (string, bool), args ...string) (outgoing, error) {
	t.Helper()
	var cfg sendConfig
	s := newSettings("send")
	cfg.register(s)
	pos, err := s.Parse(args, env)
	require.NoError(t, err)
	require.NoError(t, cfg.validate(s))
	typ := ""
	if len(pos) > 0 {
		typ = pos[0]
	}
	if cfg.ID == "" {
		cfg.ID = randomID()
	}
	return cfg.build(s, typ, time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC))
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

func TestSendBuildsContractCommands(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want map[string]any
	}{
		{[]string{"stock.set", "--sku", "SKU-1", "--on-hand", "10", "--id", "c-1", "--threshold", "2", "--expected-on-hand", "0"},
			map[string]any{"command_id": "c-1", "type": "stock.set", "sku": "SKU-1", "on_hand": 10.0, "low_stock_threshold": 2.0, "expected_on_hand": 0.0}},
		{[]string{"stock.adjust", "--sku", "SKU-1", "--delta", "-3", "--id", "c-2"},
			map[string]any{"command_id": "c-2", "type": "stock.adjust", "sku": "SKU-1", "delta": -3.0}},
		{[]string{"reserve", "--sku", "SKU-1", "--reservation", "r-1", "--qty", "3", "--ttl", "60", "--cart", "cart-9", "--store", "s-1", "--id", "c-3", "--reason", "web"},
			map[string]any{"command_id": "c-3", "type": "reserve", "sku": "SKU-1", "reservation_id": "r-1", "quantity": 3.0,
				"ttl_seconds": 60.0, "cart_id": "cart-9", "store_id": "s-1", "reason": "web"}},
		{[]string{"adjust", "--sku", "SKU-1", "--reservation", "r-1", "--qty", "1", "--id", "c-4"},
			map[string]any{"command_id": "c-4", "type": "adjust", "sku": "SKU-1", "reservation_id": "r-1", "quantity": 1.0}},
		{[]string{"release", "--sku", "SKU-1", "--reservation", "r-1", "--id", "c-5"},
			map[string]any{"command_id": "c-5", "type": "release", "sku": "SKU-1", "reservation_id": "r-1"}},
		{[]string{"extend", "--sku", "SKU-1", "--reservation", "r-1", "--id", "c-6"},
			map[string]any{"command_id": "c-6", "type": "extend", "sku": "SKU-1", "reservation_id": "r-1"}},
		{[]string{"commit", "--sku", "SKU-1", "--reservation", "r-1", "--order", "o-1", "--id", "c-7"},
			map[string]any{"command_id": "c-7", "type": "commit", "sku": "SKU-1", "reservation_id": "r-1", "order_id": "o-1"}},
	} {
		t.Run(tc.args[0], func(t *testing.T) {
			out, err := buildSend(t, envMap(), tc.args...)
			require.NoError(t, err)
			assert.Equal(t, "SKU-1", out.Key)
			assert.Equal(t, tc.want["command_id"], out.CommandID)
			got := decode(t, out.Value)
			assert.Equal(t, "2026-01-02T03:04:05.006Z", got["issued_at"])
			delete(got, "issued_at")
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestSendDefaultIDIsRandom(t *testing.T) {
	a, err := buildSend(t, envMap(), "release", "--sku", "S", "--reservation", "r")
	require.NoError(t, err)
	b, err := buildSend(t, envMap(), "release", "--sku", "S", "--reservation", "r")
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(a.CommandID, "cli-"))
	assert.NotEqual(t, a.CommandID, b.CommandID)
	assert.Equal(t, a.CommandID, decode(t, a.Value)["command_id"])
}

func TestSendRejectsBadCommandsBeforeSending(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--sku", "S"}, "missing command type"},
		{[]string{"restock", "--sku", "S"}, `unknown command type "restock"`},
		{[]string{"stock.set", "--sku", "S"}, "on_hand: required (--on-hand (RESERVATIONS_ON_HAND))"},
		{[]string{"reserve", "--sku", "S", "--reservation", "r"}, "quantity: required (--qty"},
		{[]string{"reserve", "--sku", "S", "--reservation", "r", "--qty", "0"}, "quantity: must be >= 1 (--qty"},
		{[]string{"reserve", "--sku", "bad sku", "--reservation", "r", "--qty", "1"}, "sku: want 1..128 characters"},
		{[]string{"reserve", "--sku", "S", "--reservation", "r", "--qty", "1", "--ttl", "0"}, "ttl_seconds: want 1..86400 (--ttl"},
		{[]string{"stock.set", "--sku", "S", "--on-hand", "1", "--qty", "2"}, "--qty does not apply to stock.set (it takes --on-hand, --expected-on-hand, --threshold)"},
		{[]string{"commit", "--sku", "S", "--reservation", "r"}, "order_id: want 1..128 characters (--order"},
		{[]string{"stock.adjust", "--sku", "S", "--delta", "0"}, "delta: required and != 0 (--delta"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := buildSend(t, envMap(), tc.args...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	// Through the CLI: exit 2, nothing sent (no broker is needed to fail).
	code, stdout, stderr := runCLI(envMap(), "send", "reserve", "--sku", "S", "--brokers", "127.0.0.1:1")
	assert.Equal(t, exitUsage, code)
	assert.Empty(t, stdout)
	assert.Contains(t, stderr, "reservation_id")
}

func TestSendIgnoresInapplicableEnvironment(t *testing.T) {
	env := envMap("RESERVATIONS_SKU", "SKU-9", "RESERVATIONS_QTY", "4", "RESERVATIONS_RESERVATION", "r-9")
	out, err := buildSend(t, env, "stock.set", "--on-hand", "5", "--id", "c")
	require.NoError(t, err)
	assert.Equal(t, "SKU-9", out.Key)
	got := decode(t, out.Value)
	assert.NotContains(t, got, "quantity")
	assert.NotContains(t, got, "reservation_id")
	assert.Equal(t, 5.0, got["on_hand"])
}

func TestSendJSON(t *testing.T) {
	raw := `{"command_id":"j-1","type":"release","sku":"SKU-1","reservation_id":"r-1"}`
	out, err := buildSend(t, envMap(), "--json", raw)
	require.NoError(t, err)
	assert.Equal(t, outgoing{Key: "SKU-1", Value: []byte(raw), CommandID: "j-1"}, out, "sent verbatim")

	// The type argument may repeat the JSON's type.
	_, err = buildSend(t, envMap(), "release", "--json", raw)
	require.NoError(t, err)
	_, err = buildSend(t, envMap(), "reserve", "--json", raw)
	assert.ErrorContains(t, err, `differs from the type "release"`)

	// --sku overrides the key only (to provoke sku_mismatch).
	out, err = buildSend(t, envMap(), "--json", raw, "--sku", "OTHER")
	require.NoError(t, err)
	assert.Equal(t, "OTHER", out.Key)
	assert.Equal(t, raw, string(out.Value))

	// Missing command_id and type are filled in.
	out, err = buildSend(t, envMap(), "release", "--id", "j-2", "--json", `{"sku":"SKU-1","reservation_id":"r-1"}`)
	require.NoError(t, err)
	assert.Equal(t, "j-2", out.CommandID)
	assert.Equal(t, map[string]any{"command_id": "j-2", "type": "release", "sku": "SKU-1", "reservation_id": "r-1"}, decode(t, out.Value))

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--json", "[1]"}, "invalid --json (RESERVATIONS_JSON): want a JSON object"},
		{[]string{"--json", "{"}, "want a JSON object"},
		{[]string{"--json", `{"command_id":"x","type":"release"}`}, `no "sku"`},
		{[]string{"--json", `{"command_id":7,"sku":"S"}`}, `"command_id" is not a string`},
		{[]string{"--json", raw, "--qty", "1"}, "--qty cannot be combined with --json"},
		{[]string{"--json", raw, "--id", "other"}, `--id "other" differs from the command_id "j-1"`},
	} {
		_, err := buildSend(t, envMap(), tc.args...)
		require.Error(t, err, tc.args)
		assert.Contains(t, err.Error(), tc.want)
	}
}

func TestSendBuildsCartCommands(t *testing.T) {
	out, err := buildSend(t, envMap(), "cart.reserve", "--cart", "cart-7", "--items", "SKU-1:2, SKU-2:1:r-9", "--ttl", "60", "--id", "k-1")
	require.NoError(t, err)
	assert.True(t, out.Cart)
	assert.Equal(t, "cart-7", out.Key, "cart commands are keyed by cart_id")
	m := decode(t, out.Value)
	delete(m, "issued_at")
	assert.Equal(t, map[string]any{"command_id": "k-1", "type": "cart.reserve", "cart_id": "cart-7", "ttl_seconds": 60.0,
		"items": []any{map[string]any{"sku": "SKU-1", "quantity": 2.0}, map[string]any{"sku": "SKU-2", "quantity": 1.0, "reservation_id": "r-9"}}}, m)

	out, err = buildSend(t, envMap(), "cart.commit", "--cart", "cart-7", "--order", "o-1", "--id", "k-2")
	require.NoError(t, err)
	m = decode(t, out.Value)
	assert.Equal(t, "o-1", m["order_id"])
	out, err = buildSend(t, envMap(), "--json", `{"type":"cart.release","cart_id":"cart-8"}`, "--id", "k-3")
	require.NoError(t, err)
	assert.True(t, out.Cart)
	assert.Equal(t, "cart-8", out.Key)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cart.reserve", "--cart", "c", "--items", "SKU-1"}, "--items"},
		{[]string{"cart.reserve", "--cart", "c", "--items", "SKU-1:x"}, `quantity "x" is not an integer`},
		{[]string{"cart.reserve", "--cart", "c", "--items", "SKU-1:1,SKU-1:2"}, "appears in more than one line"},
		{[]string{"cart.reserve", "--cart", "c"}, "--items"},
		{[]string{"cart.reserve", "--items", "SKU-1:1"}, "cart_id"},
		{[]string{"cart.commit", "--cart", "c"}, "order_id"},
		{[]string{"cart.release", "--cart", "c", "--sku", "SKU-1"}, "--sku does not apply to cart.release"},
		{[]string{"--json", `{"type":"cart.release"}`}, `no "cart_id"`},
	} {
		_, err := buildSend(t, envMap(), tc.args...)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, err.Error(), tc.want, "%v", tc.args)
	}
}
