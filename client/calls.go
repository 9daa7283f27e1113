package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/reservations/reservations/schemas"
)

// The requests of the typed calls. Fields are the contract's (docs/CONTRACT.md);
// a zero optional field is left out of the command. Every request has:
//
//   - CommandID: the idempotency key. Empty: the client generates one (the
//     result and a *CallError carry it). Pass the same id again to retry.
//   - Reason: optional audit text (up to 256 characters).

// ReserveRequest holds Quantity of SKU for a cart (command reserve).
type ReserveRequest struct {
	CommandID, Reason  string
	SKU, ReservationID string
	Quantity           int64
	// TTLSeconds is the hold's lifetime (1..86400); 0: the processor's
	// default (900).
	TTLSeconds      int64
	CartID, StoreID string
}

// AdjustRequest sets an active reservation's quantity (command adjust).
type AdjustRequest struct {
	CommandID, Reason  string
	SKU, ReservationID string
	// Quantity is the new absolute quantity (>= 1).
	Quantity int64
}

// ReleaseRequest gives a reservation's stock back (command release).
type ReleaseRequest struct {
	CommandID, Reason  string
	SKU, ReservationID string
}

// ExtendRequest pushes a reservation's expiry to now + TTLSeconds (command
// extend; 0: the default 900).
type ExtendRequest struct {
	CommandID, Reason  string
	SKU, ReservationID string
	TTLSeconds         int64
}

// CommitRequest consumes a reservation for an order (command commit).
type CommitRequest struct {
	CommandID, Reason           string
	SKU, ReservationID, OrderID string
}

// SetStockRequest sets a SKU's physical stock (command stock.set).
type SetStockRequest struct {
	CommandID, Reason string
	SKU               string
	OnHand            int64
	// ExpectedOnHand, when set, makes the command a compare-and-set.
	ExpectedOnHand    *int64
	LowStockThreshold *int64
}

// AdjustStockRequest adds Delta (!= 0) to a SKU's stock (command stock.adjust).
type AdjustStockRequest struct {
	CommandID, Reason string
	SKU               string
	Delta             int64
	ExpectedOnHand    *int64
}

// CartReserveRequest holds every line or none (cart command cart.reserve).
type CartReserveRequest struct {
	CommandID, Reason string
	CartID            string
	Items             []schemas.CartItem
	TTLSeconds        int64
}

// CartReleaseRequest releases every hold of a cart (cart.release).
type CartReleaseRequest struct {
	CommandID, Reason string
	CartID            string
}

// CartCommitRequest commits every hold of a cart, or none (cart.commit).
type CartCommitRequest struct {
	CommandID, Reason string
	CartID, OrderID   string
}

func optional(v int64) *int64 {
	if v == 0 {
		return nil
	}
	return &v
}

// Reserve sends a reserve command and returns its result.
func (c *Client) Reserve(ctx context.Context, r ReserveRequest) (schemas.Result, error) {
	return c.Do(ctx, schemas.Command{CommandID: r.CommandID, Type: schemas.TypeReserve, SKU: r.SKU, Reason: r.Reason,
		ReservationID: r.ReservationID, Quantity: &r.Quantity, TTLSeconds: optional(r.TTLSeconds), CartID: r.CartID,
		StoreID: r.StoreID})
}

// Adjust sends an adjust command and returns its result.
func (c *Client) Adjust(ctx context.Context, r AdjustRequest) (schemas.Result, error) {
	return c.Do(ctx, schemas.Command{CommandID: r.CommandID, Type: schemas.TypeAdjust, SKU: r.SKU, Reason: r.Reason,
		ReservationID: r.ReservationID, Quantity: &r.Quantity})
}

// Release sends a release command and returns its result.
func (c *Client) Release(ctx context.Context, r ReleaseRequest) (schemas.Result, error) {
	return c.Do(ctx, schemas.Command{CommandID: r.CommandID, Type: schemas.TypeRelease, SKU: r.SKU, Reason: r.Reason,
		ReservationID: r.ReservationID})
}

// Extend sends an extend command and returns its result.
func (c *Client) Extend(ctx context.Context, r ExtendRequest) (schemas.Result, error) {
	return c.Do(ctx, schemas.Command{CommandID: r.CommandID, Type: schemas.TypeExtend, SKU: r.SKU, Reason: r.Reason,
		ReservationID: r.ReservationID, TTLSeconds: optional(r.TTLSeconds)})
}

// Commit sends a commit command and returns its result.
func (c *Client) Commit(ctx context.Context, r CommitRequest) (schemas.Result, error) {
	return c.Do(ctx, schemas.Command{CommandID: r.CommandID, Type: schemas.TypeCommit, SKU: r.SKU, Reason: r.Reason,
		ReservationID: r.ReservationID, OrderID: r.OrderID})
}

// SetStock sends a stock.set command and returns its result.
func (c *Client) SetStock(ctx context.Context, r SetStockRequest) (schemas.Result, error) {
	return c.Do(ctx, schemas.Command{CommandID: r.CommandID, Type: schemas.TypeStockSet, SKU: r.SKU, Reason: r.Reason,
		OnHand: &r.OnHand, ExpectedOnHand: r.ExpectedOnHand, LowStockThreshold: r.LowStockThreshold})
}

// AdjustStock sends a stock.adjust command and returns its result.
func (c *Client) AdjustStock(ctx context.Context, r AdjustStockRequest) (schemas.Result, error) {
	return c.Do(ctx, schemas.Command{CommandID: r.CommandID, Type: schemas.TypeStockAdjust, SKU: r.SKU, Reason: r.Reason,
		Delta: &r.Delta, ExpectedOnHand: r.ExpectedOnHand})
}

// CartReserve sends a cart.reserve command and returns its cart result.
func (c *Client) CartReserve(ctx context.Context, r CartReserveRequest) (schemas.CartResult, error) {
	return c.DoCart(ctx, schemas.CartCommand{CommandID: r.CommandID, Type: schemas.TypeCartReserve, CartID: r.CartID,
		Reason: r.Reason, Items: r.Items, TTLSeconds: optional(r.TTLSeconds)})
}

// CartRelease sends a cart.release command and returns its cart result.
func (c *Client) CartRelease(ctx context.Context, r CartReleaseRequest) (schemas.CartResult, error) {
	return c.DoCart(ctx, schemas.CartCommand{CommandID: r.CommandID, Type: schemas.TypeCartRelease, CartID: r.CartID,
		Reason: r.Reason})
}

// CartCommit sends a cart.commit command and returns its cart result.
func (c *Client) CartCommit(ctx context.Context, r CartCommitRequest) (schemas.CartResult, error) {
	return c.DoCart(ctx, schemas.CartCommand{CommandID: r.CommandID, Type: schemas.TypeCartCommit, CartID: r.CartID,
		Reason: r.Reason, OrderID: r.OrderID})
}

// invalid wraps a field error of the contract's validation.
func invalid(fe *schemas.FieldError) error { return fmt.Errorf("%w: %w", ErrInvalid, fe) }

// Do validates cmd, sends it and returns its result. An empty CommandID is
// generated, an empty IssuedAt set to now. It is the typed calls' common path,
// for any command type of the contract (prepare and unprepare included,
// which are the cart coordinator's and not meant for services). On the reply
// route (the default) it adds reply_to "replies" and a replies partition of
// this instance; a cmd that sets reply_to itself is sent as is and answered
// through the results topic.
func (c *Client) Do(ctx context.Context, cmd schemas.Command) (schemas.Result, error) {
	if cmd.CommandID == "" {
		cmd.CommandID = c.opts.newID()
	}
	if cmd.IssuedAt == "" {
		cmd.IssuedAt = time.Now().UTC().Format(schemas.TimeLayout)
	}
	if fe := cmd.Validate(); fe != nil {
		return schemas.Result{}, invalid(fe)
	}
	var raw []byte
	var err error
	if c.rcl != nil && cmd.ReplyTo == "" && cmd.ReplyPartition == nil {
		raw, err = c.sendReply(ctx, commandCall(cmd))
	} else {
		var v []byte
		if v, err = json.Marshal(cmd); err != nil {
			return schemas.Result{}, fmt.Errorf("client: encode command: %w", err)
		}
		raw, err = c.sendResults(ctx, Record{Key: cmd.SKU, Value: v, CommandID: cmd.CommandID})
	}
	if err != nil {
		return schemas.Result{}, err
	}
	res, err := schemas.DecodeResult(raw)
	if err != nil {
		return schemas.Result{}, fmt.Errorf("client: decode the result of command_id %q: %w", cmd.CommandID, err)
	}
	return res, nil
}

// DoCart is Do for cart commands: on the reply route (the default) it adds
// reply_to "replies" and a replies partition of this instance, and the
// coordinator copies the cart result there when the saga ends; a cmd that
// sets reply_to itself is sent as is and answered through cart-results.
func (c *Client) DoCart(ctx context.Context, cmd schemas.CartCommand) (schemas.CartResult, error) {
	if cmd.CommandID == "" {
		cmd.CommandID = c.opts.newID()
	}
	if cmd.IssuedAt == "" {
		cmd.IssuedAt = time.Now().UTC().Format(schemas.TimeLayout)
	}
	if fe := cmd.Validate(); fe != nil {
		return schemas.CartResult{}, invalid(fe)
	}
	var raw []byte
	var err error
	switch {
	case c.cartParts == 0:
		return schemas.CartResult{}, c.noCartTopics()
	case c.rcl != nil && cmd.ReplyTo == "" && cmd.ReplyPartition == nil:
		raw, err = c.sendReply(ctx, cartCall(cmd))
	default:
		var v []byte
		if v, err = json.Marshal(cmd); err != nil {
			return schemas.CartResult{}, fmt.Errorf("client: encode cart command: %w", err)
		}
		raw, err = c.sendResults(ctx, Record{Key: cmd.CartID, Value: v, CommandID: cmd.CommandID, Cart: true})
	}
	if err != nil {
		return schemas.CartResult{}, err
	}
	var res schemas.CartResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return schemas.CartResult{}, fmt.Errorf("client: decode the cart result of command_id %q: %w", cmd.CommandID, err)
	}
	return res, nil
}
