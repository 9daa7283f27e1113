package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Cart command types (extension: see schemas/README.md, "Carts").
const (
	TypeCartReserve = "cart.reserve"
	TypeCartRelease = "cart.release"
	TypeCartCommit  = "cart.commit"
)

// CartCommandTypes lists every cart command type.
var CartCommandTypes = []string{TypeCartReserve, TypeCartRelease, TypeCartCommit}

// MaxCartItems bounds the lines of one cart.reserve.
const MaxCartItems = 100

// Cart reason codes (extension), in addition to the per-SKU ones a line can
// carry: a rejected cart.reserve or cart.commit has the reason of its first
// failing line.
const (
	// ReasonCartEmpty: cart.commit of a cart that holds nothing.
	ReasonCartEmpty = "cart_empty"
	// ReasonCartBusy: too many cart commands of the cart (or lines of its
	// waiting cart.reserve commands) are already waiting.
	ReasonCartBusy = "cart_busy"
	// ReasonCartFull: a cart.reserve whose lines, added to the holds the cart
	// keeps, would exceed the coordinator's limit of holds per cart.
	ReasonCartFull = "cart_full"
)

// CartReasons lists the reason codes of the cart extension (a rejected cart
// result may also carry any of Reasons, from its first failing line).
var CartReasons = []string{ReasonCartEmpty, ReasonCartBusy, ReasonCartFull}

// Header names of the cart extension.
const (
	// HeaderKind marks records of the cart-commands topic that are not cart
	// commands: HeaderKindLineResult for a per-SKU decision routed to the cart
	// coordinator (value: the result JSON, as on the results topic).
	HeaderKind           = "reservations-kind"
	HeaderKindLineResult = "line-result"
)

// CartItem is one line of a cart.reserve.
type CartItem struct {
	SKU      string `json:"sku"`
	Quantity *int64 `json:"quantity,omitempty"`
	// ReservationID is optional; the coordinator derives one from the cart
	// command when it is absent.
	ReservationID string `json:"reservation_id,omitempty"`
}

// CartCommand is one record of the cart-commands topic, keyed by cart_id.
type CartCommand struct {
	CommandID  string     `json:"command_id"`
	Type       string     `json:"type"`
	CartID     string     `json:"cart_id"`
	Reason     string     `json:"reason,omitempty"`
	IssuedAt   string     `json:"issued_at,omitempty"`
	TTLSeconds *int64     `json:"ttl_seconds,omitempty"`
	Items      []CartItem `json:"items,omitempty"`
	OrderID    string     `json:"order_id,omitempty"`
	// ReplyTo (extension (l)) routes a copy of the cart result: "replies" (to
	// partition ReplyPartition of the replies topic; ReplyPartition is then
	// required) or empty. The coordinator keeps the route with the cart
	// command until its cart result is written.
	ReplyTo string `json:"reply_to,omitempty"`
	// ReplyPartition (extension (l)) is the replies partition of reply_to
	// "replies": 0..MaxReplyPartition, only with that reply_to.
	ReplyPartition *int64 `json:"reply_partition,omitempty"`
}

// DecodeCartCommand reads one cart command record value, like DecodeCommand:
// *UndecodableError for the DLQ, *FieldError for a field of the wrong JSON type.
func DecodeCartCommand(b []byte, maxBytes int) (CartCommand, error) {
	var c CartCommand
	if maxBytes > 0 && len(b) > maxBytes {
		return c, &UndecodableError{Msg: fmt.Sprintf("record of %d bytes exceeds the limit of %d bytes", len(b), maxBytes)}
	}
	err := json.Unmarshal(b, &c)
	var te *json.UnmarshalTypeError
	if err != nil && (!errors.As(err, &te) || te.Field == "") {
		return c, &UndecodableError{Msg: "not a JSON object: " + err.Error()}
	}
	if te != nil && te.Field == "command_id" {
		return c, &UndecodableError{Msg: "command_id is not a string"}
	}
	if c.CommandID == "" {
		return c, &UndecodableError{Msg: "missing command_id"}
	}
	if runeLen(c.CommandID) > MaxIDLen {
		return c, &UndecodableError{CommandID: c.CommandID, Msg: fmt.Sprintf("command_id longer than %d characters", MaxIDLen)}
	}
	if te != nil {
		dropBadReplyPartition(b, &c.ReplyPartition)
		field := te.Field
		if field == "items" || strings.HasPrefix(field, "items.") {
			field = itemField(b)
		}
		return c, &FieldError{Field: field, Msg: fmt.Sprintf("want %s, got JSON %s", jsonKind(te.Type.Kind().String()), te.Value)}
	}
	return c, nil
}

// itemField names the line of a type error that encoding/json reports
// without its index ("items.quantity"): it decodes the lines one by one and
// returns the first failing one as "items[2].quantity" ("items[2]" for a line
// that is not an object). It returns "items" when items is not an array, or
// when no line fails on its own (a duplicated "items" key).
func itemField(b []byte) string {
	var raw struct {
		Items []json.RawMessage `json:"items"`
	}
	if json.Unmarshal(b, &raw) != nil {
		return "items"
	}
	for i, line := range raw.Items {
		var it CartItem
		err := json.Unmarshal(line, &it)
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			if te.Field == "" {
				return fmt.Sprintf("items[%d]", i)
			}
			return fmt.Sprintf("items[%d].%s", i, te.Field)
		}
	}
	return "items"
}

// Validate checks the value rules of c's type (not cart_id against the record
// key: that is decided by the coordinator).
func (c *CartCommand) Validate() *FieldError {
	if len(c.CommandID) == 0 || runeLen(c.CommandID) > MaxIDLen {
		return &FieldError{"command_id", fmt.Sprintf("want 1..%d characters", MaxIDLen)}
	}
	if len(c.CartID) == 0 || runeLen(c.CartID) > MaxIDLen {
		return &FieldError{"cart_id", fmt.Sprintf("want 1..%d characters", MaxIDLen)}
	}
	if runeLen(c.Reason) > MaxReasonLen {
		return &FieldError{"reason", fmt.Sprintf("longer than %d characters", MaxReasonLen)}
	}
	switch c.ReplyTo {
	case "":
	case ReplyToReplies:
		if c.ReplyPartition == nil {
			return &FieldError{"reply_partition", `required with reply_to "replies"`}
		}
	default:
		return &FieldError{"reply_to", `want "replies" or absent`}
	}
	if c.ReplyPartition != nil {
		if c.ReplyTo != ReplyToReplies {
			return &FieldError{"reply_partition", `only with reply_to "replies"`}
		}
		if *c.ReplyPartition < 0 || *c.ReplyPartition > MaxReplyPartition {
			return &FieldError{"reply_partition", fmt.Sprintf("want 0..%d", MaxReplyPartition)}
		}
	}
	switch c.Type {
	case TypeCartReserve:
		if c.TTLSeconds != nil && (*c.TTLSeconds < 1 || *c.TTLSeconds > MaxTTLSeconds) {
			return &FieldError{"ttl_seconds", fmt.Sprintf("want 1..%d", MaxTTLSeconds)}
		}
		if len(c.Items) == 0 || len(c.Items) > MaxCartItems {
			return &FieldError{"items", fmt.Sprintf("want 1..%d lines", MaxCartItems)}
		}
		skus := make(map[string]bool, len(c.Items))
		ids := make(map[string]bool, len(c.Items))
		for i, it := range c.Items {
			f := func(name string) string { return fmt.Sprintf("items[%d].%s", i, name) }
			if !ValidSKU(it.SKU) {
				return &FieldError{f("sku"), fmt.Sprintf("want 1..%d characters of [A-Za-z0-9._:/-]", MaxIDLen)}
			}
			if skus[it.SKU] {
				return &FieldError{f("sku"), fmt.Sprintf("SKU %s appears in more than one line", it.SKU)}
			}
			skus[it.SKU] = true
			if e := positive(f("quantity"), it.Quantity); e != nil {
				return e
			}
			if runeLen(it.ReservationID) > MaxIDLen {
				return &FieldError{f("reservation_id"), fmt.Sprintf("longer than %d characters", MaxIDLen)}
			}
			if it.ReservationID != "" {
				if ids[it.ReservationID] {
					return &FieldError{f("reservation_id"), "appears in more than one line"}
				}
				ids[it.ReservationID] = true
			}
		}
		return nil
	case TypeCartRelease:
		return nil
	case TypeCartCommit:
		if len(c.OrderID) == 0 || runeLen(c.OrderID) > MaxIDLen {
			return &FieldError{"order_id", fmt.Sprintf("want 1..%d characters", MaxIDLen)}
		}
		return nil
	case "":
		return &FieldError{"type", "required"}
	default:
		return &FieldError{"type", fmt.Sprintf("unknown cart command type %q", c.Type)}
	}
}

// Reply returns the replies partition c asks its cart result to be copied to
// (reply_to "replies" with a reply_partition in range), or false.
func (c *CartCommand) Reply() (int32, bool) {
	if c.ReplyTo != ReplyToReplies || c.ReplyPartition == nil || *c.ReplyPartition < 0 || *c.ReplyPartition > MaxReplyPartition {
		return 0, false
	}
	return int32(*c.ReplyPartition), true
}

// TTL returns the cart command's ttl_seconds or the contract default.
func (c *CartCommand) TTL() int64 {
	if c.TTLSeconds == nil {
		return DefaultTTLSecs
	}
	return *c.TTLSeconds
}

// CartLine is one line's outcome in a cart result.
type CartLine struct {
	SKU           string `json:"sku"`
	ReservationID string `json:"reservation_id"`
	Quantity      int64  `json:"quantity"`
	// Outcome and Reason are the per-SKU decision of this line's step
	// (reserve, prepare or commit, release); Outcome is empty for a line that
	// was not tried.
	Outcome string `json:"outcome"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
	// Status is the reservation's status once the cart command is done:
	// active, released, consumed, expired, or empty when nothing was held.
	Status    string `json:"status"`
	ExpiresAt Millis `json:"expires_at"`
}

// CartResult is one record of the cart-results topic, keyed by cart_id: the
// one decision on a cart command (plus duplicate: true repeats).
type CartResult struct {
	CommandID string     `json:"command_id"`
	Type      string     `json:"type"`
	CartID    string     `json:"cart_id"`
	OrderID   string     `json:"order_id"`
	Outcome   string     `json:"outcome"`
	Duplicate bool       `json:"duplicate"`
	Reason    string     `json:"reason"`
	Message   string     `json:"message"`
	Lines     []CartLine `json:"lines"`
	Partition int32      `json:"partition"`
	Offset    int64      `json:"offset"`
	DecidedAt Millis     `json:"decided_at"`
}
