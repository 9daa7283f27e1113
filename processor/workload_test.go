package processor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
)

// workload is a generated command stream over a few SKUs with long TTLs (no
// expiry), so that a reference model can predict every decision.
type workload struct {
	skus  []string
	sets  []schemas.Command // one stock.set per SKU, sent first
	cmds  []schemas.Command // the rest, in generation order
	byID  map[string]schemas.Command
	dupes []schemas.Command // re-sent commands (same id, same content)
}

func genWorkload(seed uint64, nSKU, nCmd int) *workload {
	rng := rand.New(rand.NewPCG(seed, 7))
	w := &workload{byID: map[string]schemas.Command{}}
	type hold struct{ sku, id string }
	var holds []hold
	for i := range nSKU {
		sku := fmt.Sprintf("SKU-%d", i)
		w.skus = append(w.skus, sku)
		c := schemas.Command{CommandID: "set-" + sku, Type: schemas.TypeStockSet, SKU: sku, OnHand: i64(int64(5 + rng.IntN(40)))}
		w.sets = append(w.sets, c)
		w.byID[c.CommandID] = c
	}
	ttl := int64(schemas.MaxTTLSeconds)
	for i := range nCmd {
		id := fmt.Sprintf("c%d", i)
		var c schemas.Command
		switch n := rng.IntN(100); {
		case n < 50 || len(holds) == 0:
			sku := w.skus[rng.IntN(len(w.skus))]
			h := hold{sku, fmt.Sprintf("r%d", i)}
			holds = append(holds, h)
			c = schemas.Command{Type: schemas.TypeReserve, SKU: sku, ReservationID: h.id, Quantity: i64(int64(1 + rng.IntN(4))), TTLSeconds: &ttl}
		case n < 62:
			h := holds[rng.IntN(len(holds))]
			c = schemas.Command{Type: schemas.TypeAdjust, SKU: h.sku, ReservationID: h.id, Quantity: i64(int64(1 + rng.IntN(6)))}
		case n < 75:
			h := holds[rng.IntN(len(holds))]
			c = schemas.Command{Type: schemas.TypeRelease, SKU: h.sku, ReservationID: h.id}
		case n < 85:
			h := holds[rng.IntN(len(holds))]
			c = schemas.Command{Type: schemas.TypeCommit, SKU: h.sku, ReservationID: h.id, OrderID: "o" + id}
		case n < 90:
			h := holds[rng.IntN(len(holds))]
			c = schemas.Command{Type: schemas.TypeExtend, SKU: h.sku, ReservationID: h.id, TTLSeconds: &ttl}
		case n < 95:
			c = schemas.Command{Type: schemas.TypeStockAdjust, SKU: w.skus[rng.IntN(len(w.skus))], Delta: i64(int64(rng.IntN(11) - 3))}
			if *c.Delta == 0 {
				*c.Delta = 2
			}
		default:
			c = schemas.Command{Type: schemas.TypeReserve, SKU: fmt.Sprintf("UNKNOWN-%d", rng.IntN(3)), ReservationID: "x" + id, Quantity: i64(1)}
		}
		c.CommandID = id
		w.cmds = append(w.cmds, c)
		w.byID[id] = c
		if rng.IntN(100) < 5 {
			w.dupes = append(w.dupes, c)
		}
	}
	return w
}

func (w *workload) ids() []string {
	out := make([]string, 0, len(w.byID))
	for id := range w.byID {
		out = append(out, id)
	}
	return out
}

// sendConcurrently sends cmds from `producers` goroutines; every misrouteEvery-th
// command of a producer goes to a wrong partition (a non-murmur2 producer).
func (h *harness) sendConcurrently(cmds []schemas.Command, producers, misrouteEvery int) {
	h.t.Helper()
	manual := h.c.Client(h.t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []*kgo.Record
			var wrong []*kgo.Record
			for i := p; i < len(cmds); i += producers {
				c := cmds[i]
				v, _ := json.Marshal(c)
				r := &kgo.Record{Topic: h.names.Commands, Key: []byte(c.SKU), Value: v}
				if misrouteEvery > 0 && (i/producers)%misrouteEvery == 0 {
					r.Partition = int32(i) % h.parts
					wrong = append(wrong, r)
					continue
				}
				mine = append(mine, r)
			}
			ctx := context.Background()
			for len(mine) > 0 || len(wrong) > 0 {
				// Interleave small chunks of both producers.
				n := min(len(mine), 50)
				if err := h.prod.ProduceSync(ctx, mine[:n]...).FirstErr(); err != nil {
					errs <- err
					return
				}
				mine = mine[n:]
				n = min(len(wrong), 5)
				if err := manual.ProduceSync(ctx, wrong[:n]...).FirstErr(); err != nil {
					errs <- err
					return
				}
				wrong = wrong[n:]
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(h.t, err)
	}
}

// checkAgainstModel asserts: exactly one decisive result per command id; every
// duplicate repeats its decisive result; replaying the commands in decision
// order through the reference model gives the same outcome, reason and stock
// for every result; the changelog's final stock equals the model's.
func (h *harness) checkAgainstModel(w *workload) *model {
	t := h.t
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	var decisive []schemas.Result
	for id, rs := range h.byCmd {
		_, known := w.byID[id]
		require.True(t, known, "result for unknown command id %s", id)
		var d []schemas.Result
		for _, r := range rs {
			if !r.Duplicate {
				d = append(d, r.Result)
			}
		}
		require.Len(t, d, 1, "command %s: want exactly one decisive result, got %d", id, len(d))
		for _, r := range rs {
			if r.Duplicate {
				want := d[0]
				want.Duplicate = true
				assert.Equal(t, want, r.Result, "duplicate of %s repeats the original", id)
			}
		}
		decisive = append(decisive, d[0])
	}
	require.Len(t, decisive, len(w.byID), "every command decided")
	sort.Slice(decisive, func(i, j int) bool {
		if decisive[i].Partition != decisive[j].Partition {
			return decisive[i].Partition < decisive[j].Partition
		}
		return decisive[i].Offset < decisive[j].Offset
	})
	m := newModel()
	for _, r := range decisive {
		c := w.byID[r.CommandID]
		outcome, reason := m.apply(c)
		require.Equal(t, outcome+"/"+reason, r.Outcome+"/"+r.Reason, "command %s %+v at %d/%d", c.CommandID, c, r.Partition, r.Offset)
		if r.Stock != nil {
			require.Equal(t, m.stock(c.SKU), *r.Stock, "stock after %s", c.CommandID)
		}
	}
	// The changelog's latest state equals the model.
	state := h.changelogState()
	for _, sku := range w.skus {
		c, ok := state[schemas.StockKey(sku)]
		require.True(t, ok, "stock of %s in the changelog", sku)
		assert.Equal(t, m.stock(sku), *c.Stock.View(), "changelog stock of %s", sku)
	}
	assertInvariants(t, state)
	return m
}

// changelogState reads the whole changelog (read_committed) into entities.
func (h *harness) changelogState() processor.Entities {
	h.t.Helper()
	return h.changelogStateOf(h.names.Changelog)
}

// changelogStateOf replays a changelog topic (the SKU processor's or the cart
// coordinator's) into the entities it holds at its end.
func (h *harness) changelogStateOf(topic string) processor.Entities {
	t := h.t
	t.Helper()
	cl := h.c.Client(t, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends := h.endOffsets(topic)
	state := make(processor.Entities)
	seen := map[int32]int64{}
	done := func() bool {
		for p, e := range ends {
			if e > 0 && seen[p] < e-1 {
				return false
			}
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "changelog read stalled at %v of %v", seen, ends)
		fs.EachRecord(func(r *kgo.Record) {
			seen[r.Partition] = r.Offset
			if r.Attrs.IsControl() {
				return
			}
			c, err := processor.DecodeChange(string(r.Key), r.Value)
			require.NoError(t, err)
			if c.Tombstone() {
				delete(state, c.Key)
			} else {
				state[c.Key] = c
			}
		})
	}
	return state
}

func (h *harness) endOffsets(topic string) map[int32]int64 {
	h.t.Helper()
	ends, err := kadm.NewClient(h.c.Client(h.t)).ListEndOffsets(context.Background(), topic)
	require.NoError(h.t, err)
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// assertInvariants checks per SKU: reserved == sum(active), available ==
// on_hand - reserved, on_hand >= 0; per reservation: versions positive.
func assertInvariants(t testing.TB, state processor.Entities) bool {
	t.Helper()
	ok := true
	active := map[string]int64{}
	for _, c := range state {
		if r := c.Reservation; r != nil && r.Reservation.Status == schemas.StatusActive {
			active[r.Reservation.SKU] += r.Reservation.Quantity
		}
	}
	for _, c := range state {
		if s := c.Stock; s != nil {
			ok = assert.Equal(t, active[s.SKU], s.Reserved, "reserved == sum(active) for %s", s.SKU) && ok
			ok = assert.Equal(t, s.OnHand-s.Reserved, s.Available, "available of %s", s.SKU) && ok
			ok = assert.GreaterOrEqual(t, s.OnHand, int64(0), "on_hand of %s", s.SKU) && ok
		}
	}
	return ok
}
