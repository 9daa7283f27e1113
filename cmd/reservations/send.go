package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/reservations/reservations/client"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

type sendConfig struct {
	Brokers     []string
	TopicPrefix string
	Timeout     time.Duration
	Pretty      bool
	JSON        string

	ID, SKU, Reservation, Cart, Store, Order, Reason   string
	Items                                              string
	Qty, OnHand, Delta, ExpectedOnHand, Threshold, TTL *int64

	Log      logFlags
	Security kafkaSecurity
}

// commandFlags are the flags that set fields of the command, in help order,
// with the JSON field each sets.
var commandFlags = []struct{ flag, field string }{
	{"id", "command_id"},
	{"sku", "sku"},
	{"reservation", "reservation_id"},
	{"qty", "quantity"},
	{"on-hand", "on_hand"},
	{"delta", "delta"},
	{"expected-on-hand", "expected_on_hand"},
	{"threshold", "low_stock_threshold"},
	{"ttl", "ttl_seconds"},
	{"cart", "cart_id"},
	{"items", "items"},
	{"store", "store_id"},
	{"order", "order_id"},
	{"reason", "reason"},
}

// flagOf returns the flag that sets the JSON field, or "".
func flagOf(field string) string {
	for _, cf := range commandFlags {
		if cf.field == field {
			return cf.flag
		}
	}
	return ""
}

// typeFlags lists the flags that apply to each command type besides --id,
// --sku and --reason.
var typeFlags = map[string][]string{
	schemas.TypeStockSet:    {"on-hand", "expected-on-hand", "threshold"},
	schemas.TypeStockAdjust: {"delta", "expected-on-hand"},
	schemas.TypeReserve:     {"reservation", "qty", "ttl", "cart", "store"},
	schemas.TypeAdjust:      {"reservation", "qty"},
	schemas.TypeRelease:     {"reservation"},
	schemas.TypeExtend:      {"reservation", "ttl"},
	schemas.TypeCommit:      {"reservation", "order"},
	schemas.TypePrepare:     {"reservation", "order"},
	schemas.TypeUnprepare:   {"reservation"},
	schemas.TypeCartReserve: {"cart", "items", "ttl"},
	schemas.TypeCartRelease: {"cart"},
	schemas.TypeCartCommit:  {"cart", "order"},
}

// allTypes are the command types send knows, SKU commands first.
var allTypes = append(append([]string(nil), schemas.CommandTypes...), schemas.CartCommandTypes...)

func isCartType(typ string) bool { return slices.Contains(schemas.CartCommandTypes, typ) }

func sendCommand() *command {
	return &command{
		name:    "send",
		args:    "<type>",
		summary: "send one command and wait for its result",
		help: `
Builds one command of the contract from flags (or takes it whole with --json),
produces it to <topic-prefix>.commands keyed by its SKU (franz-go's default
partitioner: murmur2, as the contract requires), then waits for the result
with its command_id on <topic-prefix>.results (read_committed, on the
partition the key maps to, from its end before the command was sent) and
prints the result JSON.

Types and their flags (besides --sku, --id and --reason):
  stock.set     --on-hand N [--expected-on-hand N] [--threshold N]
  stock.adjust  --delta N [--expected-on-hand N]
  reserve       --reservation ID --qty N [--ttl SECONDS] [--cart ID] [--store ID]
  adjust        --reservation ID --qty N (the new absolute quantity)
  release       --reservation ID
  extend        --reservation ID [--ttl SECONDS]
  commit        --reservation ID --order ID
  prepare       --reservation ID --order ID (first phase of a cart commit)
  unprepare     --reservation ID

Cart commands (extension: all-or-nothing over several SKUs) go to
<topic-prefix>.cart-commands keyed by --cart, and their one result is read
from <topic-prefix>.cart-results (the cart coordinator must run: dev and
serve run it unless --carts=false):
  cart.reserve  --cart ID --items SKU:QTY[:RESERVATION],... [--ttl SECONDS]
  cart.release  --cart ID
  cart.commit   --cart ID --order ID

With --json '{...}' the JSON is sent as given (<type> is then optional and
must match its "type"); the record key is its "sku" unless --sku is given
(to try sku_mismatch), and a missing command_id is filled from --id or a
random id.

Kafka TLS and SASL: the --kafka-* flags, as for serve; send first checks that
it can connect and authenticate.

Exit status: 0 accepted, 1 rejected, 2 invalid usage, 3 no result within
--timeout or another error (the message says which).

Examples:
  reservations send stock.set --sku SKU-1 --on-hand 10
  reservations send reserve --sku SKU-1 --reservation r-1 --qty 2 --pretty
  reservations send --json '{"command_id":"c-9","type":"release","sku":"SKU-1","reservation_id":"r-1"}'
  reservations send cart.reserve --cart cart-7 --items SKU-1:2,SKU-2:1 --pretty`,
		setup: func() (*settings, func(context.Context, *cli, []string) int) {
			var cfg sendConfig
			s := newSettings("send")
			cfg.register(s)
			return s, func(ctx context.Context, c *cli, args []string) int {
				if err := cfg.validate(s); err != nil {
					return c.usageFailure("send", err)
				}
				var typ string
				switch len(args) {
				case 0:
				case 1:
					typ = args[0]
				default:
					return c.usageFailure("send", fmt.Errorf("want one command type, got %q", args))
				}
				if cfg.ID == "" {
					cfg.ID = randomID()
				}
				out, err := cfg.build(s, typ, time.Now())
				if err != nil {
					return c.usageFailure("send", err)
				}
				return runSend(ctx, c, cfg, out)
			}
		},
	}
}

func (cfg *sendConfig) register(s *settings) {
	cfg.Brokers = []string{"127.0.0.1:9092"}
	s.Var(list{&cfg.Brokers}, "brokers", "Kafka seed brokers, comma-separated host:port")
	s.String(&cfg.TopicPrefix, "topic-prefix", topics.DefaultPrefix, "topic name prefix")
	s.Duration(&cfg.Timeout, "timeout", 10*time.Second, "how long to wait for the result (including connecting and sending)")
	s.Bool(&cfg.Pretty, "pretty", false, "print the result JSON indented")
	s.String(&cfg.JSON, "json", "", "the whole command as JSON, instead of the field flags")
	s.String(&cfg.ID, "id", "", "command_id, the idempotency key (default: a random id)")
	s.ShowDefault("id", "random")
	s.String(&cfg.SKU, "sku", "", "sku, also the record key")
	s.String(&cfg.Reservation, "reservation", "", "reservation_id")
	s.Var(optInt64{&cfg.Qty}, "qty", "quantity (reserve, adjust)")
	s.Var(optInt64{&cfg.OnHand}, "on-hand", "on_hand (stock.set)")
	s.Var(optInt64{&cfg.Delta}, "delta", "delta (stock.adjust)")
	s.Var(optInt64{&cfg.ExpectedOnHand}, "expected-on-hand", "expected_on_hand: compare-and-set (stock.set, stock.adjust)")
	s.Var(optInt64{&cfg.Threshold}, "threshold", "low_stock_threshold (stock.set)")
	s.Var(optInt64{&cfg.TTL}, "ttl", "ttl_seconds (reserve, extend; the processor's default is 900)")
	s.String(&cfg.Cart, "cart", "", "cart_id (reserve, cart.*: also the record key of cart commands)")
	s.String(&cfg.Items, "items", "", "cart lines SKU:QTY[:RESERVATION],... (cart.reserve)")
	s.String(&cfg.Store, "store", "", "store_id (reserve)")
	s.String(&cfg.Order, "order", "", "order_id (commit)")
	s.String(&cfg.Reason, "reason", "", "reason: audit text")
	cfg.Log.registerFormat(s)
	cfg.Security.register(s)
}

func (cfg *sendConfig) validate(s *settings) error {
	var errs []error
	if len(cfg.Brokers) == 0 {
		errs = append(errs, s.Invalid("brokers", "want at least one host:port"))
	}
	if cfg.Timeout <= 0 {
		errs = append(errs, s.Invalid("timeout", "%s: must be > 0", cfg.Timeout))
	}
	if cfg.TopicPrefix == "" {
		errs = append(errs, s.Invalid("topic-prefix", "must not be empty"))
	}
	errs = append(errs, cfg.Security.validate(s))
	return errors.Join(errs...)
}

// outgoing is one command record ready to produce.
type outgoing struct {
	Key       string
	Value     []byte
	CommandID string
	// Cart: a cart command (cart-commands topic, result on cart-results).
	Cart bool
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "cli-" + hex.EncodeToString(b[:])
}

// build makes the record to send for type typ.
func (cfg *sendConfig) build(s *settings, typ string, now time.Time) (outgoing, error) {
	if cfg.JSON != "" {
		return cfg.buildJSON(s, typ)
	}
	if typ == "" {
		return outgoing{}, fmt.Errorf("missing command type: want one of %s (or --json)", strings.Join(allTypes, ", "))
	}
	allowed, ok := typeFlags[typ]
	if !ok {
		return outgoing{}, fmt.Errorf("unknown command type %q: want one of %s", typ, strings.Join(allTypes, ", "))
	}
	for _, cf := range commandFlags {
		f := cf.flag
		if f == "id" || f == "sku" || f == "reason" || slices.Contains(allowed, f) {
			continue
		}
		// A value from the environment that does not apply is ignored, so that
		// e.g. RESERVATIONS_SKU and RESERVATIONS_QTY can stay exported.
		if s.Source(f) == fromFlag {
			return outgoing{}, fmt.Errorf("--%s does not apply to %s (it takes %s)", f, typ, flagList(allowed))
		}
	}
	if isCartType(typ) {
		if s.Source("sku") == fromFlag {
			return outgoing{}, fmt.Errorf("--sku does not apply to %s (it takes %s)", typ, flagList(allowed))
		}
		return cfg.buildCart(s, typ, now)
	}
	has := func(f string) bool { return slices.Contains(allowed, f) }
	cmd := schemas.Command{
		CommandID: cfg.ID,
		Type:      typ,
		SKU:       cfg.SKU,
		Reason:    cfg.Reason,
		IssuedAt:  now.UTC().Format(schemas.TimeLayout),
	}
	if has("on-hand") {
		cmd.OnHand = cfg.OnHand
	}
	if has("expected-on-hand") {
		cmd.ExpectedOnHand = cfg.ExpectedOnHand
	}
	if has("threshold") {
		cmd.LowStockThreshold = cfg.Threshold
	}
	if has("delta") {
		cmd.Delta = cfg.Delta
	}
	if has("reservation") {
		cmd.ReservationID = cfg.Reservation
	}
	if has("qty") {
		cmd.Quantity = cfg.Qty
	}
	if has("ttl") {
		cmd.TTLSeconds = cfg.TTL
	}
	if has("cart") {
		cmd.CartID = cfg.Cart
	}
	if has("store") {
		cmd.StoreID = cfg.Store
	}
	if has("order") {
		cmd.OrderID = cfg.Order
	}
	if ferr := cmd.Validate(); ferr != nil {
		if f := flagOf(ferr.Field); f != "" {
			return outgoing{}, fmt.Errorf("invalid command: %s (%s)", ferr, s.Name(f))
		}
		return outgoing{}, fmt.Errorf("invalid command: %s", ferr)
	}
	v, err := json.Marshal(cmd)
	if err != nil {
		return outgoing{}, fmt.Errorf("encode command: %w", err)
	}
	return outgoing{Key: cmd.SKU, Value: v, CommandID: cmd.CommandID}, nil
}

// buildCart makes a cart command from the flags.
func (cfg *sendConfig) buildCart(s *settings, typ string, now time.Time) (outgoing, error) {
	cmd := schemas.CartCommand{
		CommandID: cfg.ID,
		Type:      typ,
		CartID:    cfg.Cart,
		Reason:    cfg.Reason,
		IssuedAt:  now.UTC().Format(schemas.TimeLayout),
	}
	switch typ {
	case schemas.TypeCartReserve:
		cmd.TTLSeconds = cfg.TTL
		items, err := parseItems(cfg.Items)
		if err != nil {
			return outgoing{}, s.Invalid("items", "%v", err)
		}
		cmd.Items = items
	case schemas.TypeCartCommit:
		cmd.OrderID = cfg.Order
	}
	if ferr := cmd.Validate(); ferr != nil {
		f := map[string]string{"cart_id": "cart", "order_id": "order", "ttl_seconds": "ttl", "items": "items"}[ferr.Field]
		if f == "" && strings.HasPrefix(ferr.Field, "items[") {
			f = "items"
		}
		if f != "" {
			return outgoing{}, fmt.Errorf("invalid command: %s (%s)", ferr, s.Name(f))
		}
		return outgoing{}, fmt.Errorf("invalid command: %s", ferr)
	}
	v, err := json.Marshal(cmd)
	if err != nil {
		return outgoing{}, fmt.Errorf("encode command: %w", err)
	}
	return outgoing{Key: cmd.CartID, Value: v, CommandID: cmd.CommandID, Cart: true}, nil
}

// parseItems reads SKU:QTY[:RESERVATION],... into cart lines.
func parseItems(v string) ([]schemas.CartItem, error) {
	if strings.TrimSpace(v) == "" {
		return nil, errors.New("want SKU:QTY[:RESERVATION],... (at least one line)")
	}
	var items []schemas.CartItem
	for i, part := range strings.Split(v, ",") {
		f := strings.Split(strings.TrimSpace(part), ":")
		if len(f) < 2 || len(f) > 3 {
			return nil, fmt.Errorf("line %d %q: want SKU:QTY or SKU:QTY:RESERVATION (a SKU with ':' needs --json)", i+1, part)
		}
		q, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d %q: quantity %q is not an integer", i+1, part, f[1])
		}
		it := schemas.CartItem{SKU: f[0], Quantity: &q}
		if len(f) == 3 {
			it.ReservationID = f[2]
		}
		items = append(items, it)
	}
	return items, nil
}

func flagList(fs []string) string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = "--" + f
	}
	return strings.Join(out, ", ")
}

// buildJSON takes the command from --json: sent as given, except that a
// missing command_id (or type) is filled in.
func (cfg *sendConfig) buildJSON(s *settings, typ string) (outgoing, error) {
	for _, cf := range commandFlags {
		if f := cf.flag; f != "id" && f != "sku" && s.Source(f) == fromFlag {
			return outgoing{}, fmt.Errorf("--%s cannot be combined with --json: put the field in the JSON", f)
		}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(cfg.JSON), &obj); err != nil || obj == nil {
		return outgoing{}, s.Invalid("json", "want a JSON object")
	}
	str := func(field string) (string, error) {
		raw, ok := obj[field]
		if !ok {
			return "", nil
		}
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return "", s.Invalid("json", "%q is not a string", field)
		}
		return v, nil
	}
	value := []byte(cfg.JSON)
	changed := false
	id, err := str("command_id")
	if err != nil {
		return outgoing{}, err
	}
	switch {
	case id == "":
		id = cfg.ID
		obj["command_id"], _ = json.Marshal(id)
		changed = true
	case s.Source("id") == fromFlag && cfg.ID != id:
		return outgoing{}, fmt.Errorf("--id %q differs from the command_id %q of --json", cfg.ID, id)
	}
	jtyp, err := str("type")
	if err != nil {
		return outgoing{}, err
	}
	switch {
	case jtyp == "" && typ != "":
		obj["type"], _ = json.Marshal(typ)
		changed = true
	case typ != "" && jtyp != typ:
		return outgoing{}, fmt.Errorf("command type %q differs from the type %q of --json", typ, jtyp)
	}
	if t := cmp.Or(typ, jtyp); isCartType(t) {
		key, err := str("cart_id")
		if err != nil {
			return outgoing{}, err
		}
		if key == "" {
			return outgoing{}, s.Invalid("json", `no "cart_id" to key the cart command by`)
		}
		if changed {
			if value, err = json.Marshal(obj); err != nil {
				return outgoing{}, fmt.Errorf("encode command: %w", err)
			}
		}
		return outgoing{Key: key, Value: value, CommandID: id, Cart: true}, nil
	}
	key, err := str("sku")
	if err != nil {
		return outgoing{}, err
	}
	if s.Source("sku") == fromFlag {
		key = cfg.SKU // a record key other than the command's sku: sku_mismatch
	}
	if key == "" {
		return outgoing{}, s.Invalid("json", `no "sku" to key the record by: add it, or --sku`)
	}
	if changed {
		if value, err = json.Marshal(obj); err != nil {
			return outgoing{}, fmt.Errorf("encode command: %w", err)
		}
	}
	return outgoing{Key: key, Value: value, CommandID: id}, nil
}

func runSend(ctx context.Context, c *cli, cfg sendConfig, out outgoing) int {
	log := c.logger(cfg.Log) // send logs nothing but its failure
	raw, err := sendAndWait(ctx, log, cfg.Brokers, &cfg.Security, cfg.TopicPrefix, out, cfg.Timeout)
	if err != nil {
		return c.fail("send", exitNoResult, err)
	}
	var res struct {
		Outcome string `json:"outcome"`
	}
	_ = json.Unmarshal(raw, &res)
	if cfg.Pretty {
		var buf bytes.Buffer
		if json.Indent(&buf, raw, "", "  ") == nil {
			raw = buf.Bytes()
		}
	}
	fmt.Fprintf(c.stdout, "%s\n", raw)
	if res.Outcome == schemas.OutcomeAccepted {
		return exitOK
	}
	return exitFailure
}

// sendAndWait produces out through the request/reply client (package
// client: linger 0, read_committed, a short fetch wait; the result partition
// read from its end before the command is sent) and returns the raw result
// JSON, connecting to brokers as sec says.
func sendAndWait(parent context.Context, log *slog.Logger, brokers []string, sec *kafkaSecurity, prefix string, out outgoing,
	timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	// A wrong password or certificate never heals: fail at once, saying so,
	// rather than retrying until the timeout.
	if err := sec.check(ctx, brokers); err != nil {
		if parent.Err() != nil {
			return nil, fmt.Errorf("no result for command_id %q: interrupted: connect", out.CommandID)
		}
		return nil, err
	}
	cl, err := client.New(ctx, brokers, client.WithTopicPrefix(prefix), client.WithSecurity(sec.Config), client.WithResultsPartitions(),
		client.WithTimeout(timeout), client.WithPartitionLinger(0), client.WithLogger(log))
	switch {
	case errors.Is(err, topics.ErrMissing):
		return nil, fmt.Errorf("%w (is the processor running? 'reservations dev' creates the topics)", err)
	case err != nil && parent.Err() != nil:
		return nil, fmt.Errorf("no result for command_id %q: interrupted: connect", out.CommandID)
	case err != nil:
		return nil, fmt.Errorf("connect: %w (brokers %s)", err, strings.Join(brokers, ","))
	}
	defer cl.Close()
	raw, err := cl.Send(ctx, client.Record{Key: out.Key, Value: out.Value, CommandID: out.CommandID, Cart: out.Cart})
	var ce *client.CallError
	switch {
	case err == nil:
		return raw, nil
	case errors.As(err, &ce) && parent.Err() != nil:
		return nil, fmt.Errorf("no result for command_id %q: interrupted: %s", out.CommandID, ce.Step)
	case errors.As(err, &ce) && ctx.Err() != nil:
		return nil, fmt.Errorf("no result for command_id %q within %s: %s: %w (is a broker at %s and is the processor running?)",
			out.CommandID, timeout, ce.Step, ce.Err, strings.Join(brokers, ","))
	case errors.As(err, &ce):
		return nil, fmt.Errorf("%s: %w (brokers %s)", ce.Step, ce.Err, strings.Join(brokers, ","))
	case errors.Is(err, topics.ErrMissing):
		return nil, fmt.Errorf("%w (is the cart coordinator running? 'reservations dev' creates the topics)", err)
	}
	return nil, err
}
