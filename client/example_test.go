package client_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/reservations/reservations/client"
	"github.com/reservations/reservations/schemas"
)

// A service reserves stock and commits it for an order. The example runs
// against an in-process kfake broker with the processors running (as
// `reservations dev` does); a service passes its brokers and options.
func Example() {
	brokers, prefix, stop := examplePipeline()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c, err := client.New(ctx, brokers, client.WithTopicPrefix(prefix))
	if err != nil {
		fmt.Println("connect:", err)
		return
	}
	defer c.Close()

	if _, err := c.SetStock(ctx, client.SetStockRequest{SKU: "SKU-1", OnHand: 10}); err != nil {
		fmt.Println(err)
		return
	}
	res, err := c.Reserve(ctx, client.ReserveRequest{SKU: "SKU-1", ReservationID: "r-1", Quantity: 3, CartID: "cart-9"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Outcome, "available:", res.Stock.Available)

	res, _ = c.Reserve(ctx, client.ReserveRequest{SKU: "SKU-1", ReservationID: "r-2", Quantity: 8})
	fmt.Println(res.Outcome, res.Reason) // a rejection is a result, not an error

	res, _ = c.Commit(ctx, client.CommitRequest{SKU: "SKU-1", ReservationID: "r-1", OrderID: "o-1"})
	fmt.Println(res.Outcome, res.Reservation.Status, "on_hand:", res.Stock.OnHand)

	// Invalid input is caught before sending, naming the field.
	_, err = c.Reserve(ctx, client.ReserveRequest{SKU: "SKU-1", ReservationID: "r-3"})
	var fe *schemas.FieldError
	fmt.Println(errors.Is(err, client.ErrInvalid), errors.As(err, &fe), fe.Field)
	// Output:
	// accepted available: 7
	// rejected insufficient_stock
	// accepted consumed on_hand: 7
	// true true quantity
}

// Retrying after a timeout: the error names the command id, and a call with
// the same id is answered with the first decision (duplicate: true if the
// first was decided), never decided twice.
func ExampleCallError() {
	brokers, prefix, stop := examplePipeline()
	defer stop()
	ctx := context.Background()
	c, err := client.New(ctx, brokers, client.WithTopicPrefix(prefix))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	_, _ = c.SetStock(ctx, client.SetStockRequest{SKU: "SKU-1", OnHand: 5})

	req := client.ReserveRequest{CommandID: "order-7-line-1", SKU: "SKU-1", ReservationID: "r-7", Quantity: 2}
	var res schemas.Result
	for attempt := 1; attempt <= 5; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		res, err = c.Reserve(actx, req)
		cancel()
		var ce *client.CallError
		if errors.As(err, &ce) {
			req.CommandID = ce.CommandID // the same id again (here it was set already)
			continue
		}
		break
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Outcome, res.CommandID)
	again, _ := c.Reserve(ctx, req)
	fmt.Println("duplicate:", again.Duplicate, "available:", again.Stock.Available)
	// Output:
	// accepted order-7-line-1
	// duplicate: true available: 3
}

// An all-or-nothing cart: every line is held, or none.
func ExampleClient_CartReserve() {
	brokers, prefix, stop := examplePipeline()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(ctx, brokers, client.WithTopicPrefix(prefix))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	_, _ = c.SetStock(ctx, client.SetStockRequest{SKU: "SKU-1", OnHand: 5})
	_, _ = c.SetStock(ctx, client.SetStockRequest{SKU: "SKU-2", OnHand: 1})
	qty := func(n int64) *int64 { return &n }

	res, err := c.CartReserve(ctx, client.CartReserveRequest{CartID: "cart-7", Items: []schemas.CartItem{
		{SKU: "SKU-1", Quantity: qty(2)}, {SKU: "SKU-2", Quantity: qty(2)}}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Outcome, res.Reason, res.Message)
	for _, l := range res.Lines {
		fmt.Println(l.SKU, l.Outcome, l.Status)
	}
	// Output:
	// rejected insufficient_stock 1 of 2 lines rejected
	// SKU-1 accepted released
	// SKU-2 rejected
}
