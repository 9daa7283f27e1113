package statestore

import (
	"fmt"
	"testing"
)

func value(i int) []byte {
	return fmt.Appendf(nil, `{"sku":"SKU-%d","on_hand":100,"reserved":%d,"available":%d,"low_stock_threshold":null,"version":%d,"event":"reserved","command_id":"c-%d","updated_at":"2026-01-01T00:00:00.000Z"}`, i%5000, i%97, 100-i%97, i, i)
}

// BenchmarkWrite compares how a committed batch of 1000 changed keys reaches
// Badger: one transaction with the offset (what the processor does) against
// one transaction per key (the naive per-record write it replaces).
func BenchmarkWrite(b *testing.B) {
	b.Run("batch-1000-keys-one-txn", func(b *testing.B) {
		s, err := Open(b.TempDir(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		batch := make(map[string][]byte, 1000)
		n := 0
		b.ReportAllocs()
		for b.Loop() {
			clear(batch)
			for range 1000 {
				batch[fmt.Sprintf("stock/SKU-%d", n%50000)] = value(n)
				n++
			}
			if err := s.Commit(batch, int64(n)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "keys/s")
	})
	b.Run("per-key-txn", func(b *testing.B) {
		s, err := Open(b.TempDir(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		n := 0
		b.ReportAllocs()
		for b.Loop() {
			for range 1000 {
				if err := s.Commit(map[string][]byte{fmt.Sprintf("stock/SKU-%d", n%50000): value(n)}, int64(n)); err != nil {
					b.Fatal(err)
				}
				n++
			}
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "keys/s")
	})
}

// BenchmarkRestore compares a full restore of 100k entities through the
// StreamWriter bulk load (what restore does for an empty or wiped store)
// against coalesced chunks of 10k keys per transaction (what a tail restore
// does).
func BenchmarkRestore(b *testing.B) {
	const keys = 100_000
	state := make(map[string][]byte, keys)
	for i := range keys {
		state[fmt.Sprintf("reservation/SKU-%d/r-%d", i%5000, i)] = value(i)
	}
	b.Run("streamwriter-load", func(b *testing.B) {
		for b.Loop() {
			s, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Load(state, keys, nil); err != nil {
				b.Fatal(err)
			}
			_ = s.Close()
		}
		b.ReportMetric(float64(keys*b.N)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("chunked-txns", func(b *testing.B) {
		for b.Loop() {
			s, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			chunk := make(map[string][]byte, 10_000)
			i := 0
			for k, v := range state {
				chunk[k] = v
				i++
				if len(chunk) == 10_000 {
					if err := s.Commit(chunk, int64(i)); err != nil {
						b.Fatal(err)
					}
					clear(chunk)
				}
			}
			_ = s.Close()
		}
		b.ReportMetric(float64(keys*b.N)/b.Elapsed().Seconds(), "records/s")
	})
}
