package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Command types of the contract.
const (
	TypeStockSet    = "stock.set"
	TypeStockAdjust = "stock.adjust"
	TypeReserve     = "reserve"
	TypeAdjust      = "adjust"
	TypeRelease     = "release"
	TypeExtend      = "extend"
	TypeCommit      = "commit"
	// TypePrepare and TypeUnprepare are extensions (see schemas/README.md): the
	// first phase of the cart coordinator's all-or-nothing cart.commit.
	TypePrepare   = "prepare"
	TypeUnprepare = "unprepare"
)

// ReplyToCart is the only value of Command.ReplyTo (extension): the decision on
// the command is also written to the cart-commands topic, keyed by cart_id, so
// that the cart coordinator partition that owns the cart receives it.
const ReplyToCart = "cart"

// ReplyToReplies is the other value of Command.ReplyTo (extension (l)): the
// decision on the command is also written to partition reply_partition of the
// replies topic, which the request/reply client instance that sent it reads.
const ReplyToReplies = "replies"

// MaxReplyPartition is the largest reply_partition (Kafka partitions are int32).
const MaxReplyPartition = 1<<31 - 1

// Notice types: results the processor emits on its own, with an empty command_id.
const (
	TypeExpired  = "expired"
	TypeLowStock = "low_stock"
)

// CommandTypes lists every command type in the contract's order.
var CommandTypes = []string{TypeStockSet, TypeStockAdjust, TypeReserve, TypeAdjust, TypeRelease, TypeExtend, TypeCommit,
	TypePrepare, TypeUnprepare}

// Limits of the contract.
const (
	MaxIDLen       = 128
	MaxReasonLen   = 256
	MaxTTLSeconds  = 86400
	DefaultTTLSecs = 900
)

// Command is one record of the commands topic. Optional integers are pointers so
// that "absent" and "zero" stay distinct, as validation needs.
type Command struct {
	CommandID string `json:"command_id"`
	Type      string `json:"type"`
	SKU       string `json:"sku"`
	Reason    string `json:"reason,omitempty"`
	IssuedAt  string `json:"issued_at,omitempty"`

	// stock.set / stock.adjust
	OnHand            *int64 `json:"on_hand,omitempty"`
	ExpectedOnHand    *int64 `json:"expected_on_hand,omitempty"`
	LowStockThreshold *int64 `json:"low_stock_threshold,omitempty"`
	Delta             *int64 `json:"delta,omitempty"`

	// reservation commands
	ReservationID string `json:"reservation_id,omitempty"`
	Quantity      *int64 `json:"quantity,omitempty"`
	TTLSeconds    *int64 `json:"ttl_seconds,omitempty"`
	CartID        string `json:"cart_id,omitempty"`
	StoreID       string `json:"store_id,omitempty"`
	OrderID       string `json:"order_id,omitempty"`

	// ReplyTo (extension) routes a copy of the decision: "cart" (to the cart
	// coordinator; cart_id is then required), "replies" (to partition
	// ReplyPartition of the replies topic; ReplyPartition is then required) or
	// empty. Any command type.
	ReplyTo string `json:"reply_to,omitempty"`
	// ReplyPartition (extension (l)) is the replies partition of reply_to
	// "replies": 0..MaxReplyPartition, only with that reply_to.
	ReplyPartition *int64 `json:"reply_partition,omitempty"`
}

// UndecodableError means a record cannot be read as a command at all (not a JSON
// object, no usable command_id, oversized). Such records go to the DLQ.
type UndecodableError struct {
	// CommandID is the command_id if one could be read (it may be invalid).
	CommandID string
	Msg       string
}

func (e *UndecodableError) Error() string { return "undecodable command: " + e.Msg }

// FieldError names the field of a decoded command that breaks the contract. It
// becomes a rejected result with reason invalid_command and the error as message.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// DecodeCommand reads one command record value. maxBytes <= 0 disables the size
// check. It returns an *UndecodableError for records that belong in the DLQ and a
// *FieldError (with a usable command) for a field of the wrong JSON type; it does
// not check the contract's value rules: see Command.Validate.
func DecodeCommand(b []byte, maxBytes int) (Command, error) {
	var c Command
	if maxBytes > 0 && len(b) > maxBytes {
		return c, &UndecodableError{Msg: fmt.Sprintf("record of %d bytes exceeds the limit of %d bytes", len(b), maxBytes)}
	}
	var err error
	if !fastCommand(b, &c) {
		c = Command{}
		err = json.Unmarshal(b, &c)
	}
	if err == nil {
		if c.CommandID == "" {
			return c, &UndecodableError{Msg: "missing command_id"}
		}
		if runeLen(c.CommandID) > MaxIDLen {
			return c, &UndecodableError{CommandID: c.CommandID, Msg: fmt.Sprintf("command_id longer than %d characters", MaxIDLen)}
		}
		return c, nil
	}
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) || te.Field == "" {
		return c, &UndecodableError{Msg: "not a JSON object: " + err.Error()}
	}
	if te.Field == "command_id" {
		return c, &UndecodableError{Msg: "command_id is not a string"}
	}
	if c.CommandID == "" {
		return c, &UndecodableError{Msg: "missing command_id"}
	}
	if runeLen(c.CommandID) > MaxIDLen {
		return c, &UndecodableError{CommandID: c.CommandID, Msg: fmt.Sprintf("command_id longer than %d characters", MaxIDLen)}
	}
	dropBadReplyPartition(b, &c.ReplyPartition)
	return c, &FieldError{Field: te.Field, Msg: fmt.Sprintf("want %s, got JSON %s", jsonKind(te.Type.Kind().String()), te.Value)}
}

// dropBadReplyPartition clears a reply_partition that is not a JSON integer
// (decoding a record with a field of the wrong type): encoding/json leaves
// such a field pointing at 0, which would route the rejection to partition 0.
// It looks again at the one field, since only the first type error is
// reported.
func dropBadReplyPartition(b []byte, p **int64) {
	if *p == nil {
		return
	}
	var v struct {
		ReplyPartition *int64 `json:"reply_partition"`
	}
	if json.Unmarshal(b, &v) != nil {
		*p = nil
	}
}

func jsonKind(goKind string) string {
	switch {
	case strings.HasPrefix(goKind, "int"), goKind == "ptr":
		return "an integer"
	case goKind == "string":
		return "a string"
	case goKind == "slice":
		return "an array"
	case goKind == "struct":
		return "an object"
	}
	return goKind
}

// ValidSKU reports whether s is 1..128 characters of [A-Za-z0-9._:/-].
func ValidSKU(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == ':', c == '/', c == '-':
		default:
			return false
		}
	}
	return true
}

// runeLen counts characters, as the contract's limits do.
func runeLen(s string) int { return utf8.RuneCountInString(s) }

// Validate checks the contract's value rules for c's type. It does not compare
// the SKU with the record key (that is sku_mismatch, decided by the processor).
// It returns the concrete *FieldError: keep it typed (a nil *FieldError stored
// in an error variable is not a nil error).
func (c *Command) Validate() *FieldError {
	if len(c.CommandID) == 0 || runeLen(c.CommandID) > MaxIDLen {
		return &FieldError{"command_id", fmt.Sprintf("want 1..%d characters", MaxIDLen)}
	}
	if !ValidSKU(c.SKU) {
		return &FieldError{"sku", fmt.Sprintf("want 1..%d characters of [A-Za-z0-9._:/-]", MaxIDLen)}
	}
	if runeLen(c.Reason) > MaxReasonLen {
		return &FieldError{"reason", fmt.Sprintf("longer than %d characters", MaxReasonLen)}
	}
	nonNeg := func(field string, v *int64) *FieldError {
		if v != nil && *v < 0 {
			return &FieldError{field, "must be >= 0"}
		}
		return nil
	}
	switch c.ReplyTo {
	case "":
	case ReplyToCart:
		if len(c.CartID) == 0 {
			return &FieldError{"cart_id", "required with reply_to"}
		}
	case ReplyToReplies:
		if c.ReplyPartition == nil {
			return &FieldError{"reply_partition", `required with reply_to "replies"`}
		}
	default:
		return &FieldError{"reply_to", `want "cart", "replies" or absent`}
	}
	if c.ReplyPartition != nil {
		if c.ReplyTo != ReplyToReplies {
			return &FieldError{"reply_partition", `only with reply_to "replies"`}
		}
		if *c.ReplyPartition < 0 || *c.ReplyPartition > MaxReplyPartition {
			return &FieldError{"reply_partition", fmt.Sprintf("want 0..%d", MaxReplyPartition)}
		}
	}
	if runeLen(c.CartID) > MaxIDLen {
		return &FieldError{"cart_id", fmt.Sprintf("longer than %d characters", MaxIDLen)}
	}
	switch c.Type {
	case TypeStockSet:
		if c.OnHand == nil {
			return &FieldError{"on_hand", "required"}
		}
		if e := nonNeg("on_hand", c.OnHand); e != nil {
			return e
		}
		if e := nonNeg("expected_on_hand", c.ExpectedOnHand); e != nil {
			return e
		}
		return nonNeg("low_stock_threshold", c.LowStockThreshold)
	case TypeStockAdjust:
		if c.Delta == nil || *c.Delta == 0 {
			return &FieldError{"delta", "required and != 0"}
		}
		return nonNeg("expected_on_hand", c.ExpectedOnHand)
	case TypeReserve:
		if e := c.validReservationID(); e != nil {
			return e
		}
		if e := positive("quantity", c.Quantity); e != nil {
			return e
		}
		if e := c.validTTL(); e != nil {
			return e
		}
		if runeLen(c.StoreID) > MaxIDLen {
			return &FieldError{"store_id", fmt.Sprintf("longer than %d characters", MaxIDLen)}
		}
		return nil
	case TypeAdjust:
		if e := c.validReservationID(); e != nil {
			return e
		}
		return positive("quantity", c.Quantity)
	case TypeRelease:
		return c.validReservationID()
	case TypeExtend:
		if e := c.validReservationID(); e != nil {
			return e
		}
		return c.validTTL()
	case TypeCommit, TypePrepare:
		if e := c.validReservationID(); e != nil {
			return e
		}
		if len(c.OrderID) == 0 || runeLen(c.OrderID) > MaxIDLen {
			return &FieldError{"order_id", fmt.Sprintf("want 1..%d characters", MaxIDLen)}
		}
		return nil
	case TypeUnprepare:
		return c.validReservationID()
	case "":
		return &FieldError{"type", "required"}
	default:
		return &FieldError{"type", fmt.Sprintf("unknown command type %q", c.Type)}
	}
}

func positive(field string, v *int64) *FieldError {
	if v == nil {
		return &FieldError{field, "required"}
	}
	if *v < 1 {
		return &FieldError{field, "must be >= 1"}
	}
	return nil
}

func (c *Command) validReservationID() *FieldError {
	if len(c.ReservationID) == 0 || runeLen(c.ReservationID) > MaxIDLen {
		return &FieldError{"reservation_id", fmt.Sprintf("want 1..%d characters", MaxIDLen)}
	}
	return nil
}

func (c *Command) validTTL() *FieldError {
	if c.TTLSeconds != nil && (*c.TTLSeconds < 1 || *c.TTLSeconds > MaxTTLSeconds) {
		return &FieldError{"ttl_seconds", fmt.Sprintf("want 1..%d", MaxTTLSeconds)}
	}
	return nil
}

// TTL returns the command's ttl_seconds or the contract default.
func (c *Command) TTL() int64 {
	if c.TTLSeconds == nil {
		return DefaultTTLSecs
	}
	return *c.TTLSeconds
}
