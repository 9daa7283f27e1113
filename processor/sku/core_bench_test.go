package sku

import (
	"fmt"
	"testing"

	"github.com/reservations/reservations/schemas"
)

// benchState is an in-memory state that, like a partition, has no hold due at
// decision time (the partition fires due timers first); Entities would scan
// every entity for DueReservations.
type benchState struct{ Entities }

func (benchState) DueReservations(string, schemas.Millis) []string { return nil }

// BenchmarkApply measures the pure core per command type against an in-memory
// state (no codec, no I/O): the upper bound of one partition goroutine.
func BenchmarkApply(b *testing.B) {
	const skus = 1000
	ttl := int64(900)
	for _, typ := range []string{schemas.TypeReserve, schemas.TypeAdjust, schemas.TypeRelease, schemas.TypeStockAdjust, "duplicate"} {
		b.Run(typ, func(b *testing.B) {
			c := &Core{Rules: DefaultRules()}
			st := make(Entities)
			for i := range skus {
				sku := fmt.Sprintf("SKU-%d", i)
				o := c.Apply(st, Input{Key: sku, Command: schemas.Command{CommandID: "set-" + sku, Type: schemas.TypeStockSet, SKU: sku, OnHand: i64(1 << 40)}}, t0)
				st.Apply(o.Changes)
			}
			cmds := make([]schemas.Command, 4096)
			for i := range cmds {
				sku := fmt.Sprintf("SKU-%d", i%skus)
				rid := fmt.Sprintf("r%d", i)
				cmds[i] = schemas.Command{CommandID: fmt.Sprintf("c%d", i), Type: schemas.TypeReserve, SKU: sku, ReservationID: rid, Quantity: i64(1), TTLSeconds: &ttl}
				if typ != schemas.TypeReserve {
					o := c.Apply(st, Input{Key: sku, Command: cmds[i]}, t0)
					st.Apply(o.Changes)
				}
				switch typ {
				case schemas.TypeAdjust:
					cmds[i] = schemas.Command{CommandID: fmt.Sprintf("a%d", i), Type: typ, SKU: sku, ReservationID: rid, Quantity: i64(2)}
				case schemas.TypeRelease:
					cmds[i] = schemas.Command{CommandID: fmt.Sprintf("l%d", i), Type: typ, SKU: sku, ReservationID: rid}
				case schemas.TypeStockAdjust:
					cmds[i] = schemas.Command{CommandID: fmt.Sprintf("d%d", i), Type: typ, SKU: sku, Delta: i64(1)}
				}
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				// Apply without committing the changes: every iteration decides
				// the same kind of command against the same state.
				_ = c.Apply(benchState{st}, Input{Key: cmds[i%len(cmds)].SKU, Command: cmds[i%len(cmds)]}, t0)
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
		})
	}
}

// BenchmarkCodec measures decoding a command and encoding its result and
// changelog records, the per-record JSON work of the partition loop.
func BenchmarkCodec(b *testing.B) {
	raw := []byte(`{"command_id":"c-123456","type":"reserve","sku":"SKU-42","reservation_id":"r-99","quantity":2,"ttl_seconds":900,"cart_id":"cart-7"}`)
	c := &Core{Rules: DefaultRules()}
	st := make(Entities)
	st.Apply(c.Apply(st, Input{Key: "SKU-42", Command: schemas.Command{CommandID: "s", Type: schemas.TypeStockSet, SKU: "SKU-42", OnHand: i64(100)}}, t0).Changes)
	cmd, _ := schemas.DecodeCommand(raw, 0)
	out := c.Apply(st, Input{Key: "SKU-42", Command: cmd}, t0)
	b.Run("decode-command", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := schemas.DecodeCommand(raw, 64<<10); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode-outputs", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for i := range out.Results {
				_ = schemas.AppendResult(make([]byte, 0, 512), &out.Results[i])
			}
			for i := range out.Changes {
				if _, err := EncodeChange(&out.Changes[i]); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
