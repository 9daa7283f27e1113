package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/processor/sku"
	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/statestore"
)

// Core holds the pure-core figures: the project's Go benchmarks (parsed), a
// Badger commit measurement and the memory per active reservation.
type Core struct {
	// GoBench are the results of `go test -bench 'Apply|Codec'` (CoreBenchFile).
	GoBench     []GoBench `json:"go_bench"`
	GoBenchFile string    `json:"go_bench_file"`
	// CommandsPerS is Core.Apply of a reserve on one goroutine, measured in
	// process against a state that answers like the partition goroutine's
	// (entities by key; DueReservations answered as the partition does).
	CommandsPerS float64 `json:"commands_per_s"`
	// WithCodecCommandsPerS adds decoding the command and encoding its result and
	// changelog records to the same command: the per-record CPU of a partition
	// goroutine.
	WithCodecCommandsPerS float64 `json:"with_codec_commands_per_s"`
	// GoBenchCommandsPerS is BenchmarkApply/reserve from the go test output (its
	// state is sku.Entities, the tests' map) and GoBenchWithCodecCommandsPerS
	// adds BenchmarkCodec's decode and encode.
	GoBenchCommandsPerS          float64 `json:"go_bench_commands_per_s"`
	GoBenchWithCodecCommandsPerS float64 `json:"go_bench_with_codec_commands_per_s"`
	Badger                       Badger  `json:"badger"`
	Memory                       Memory  `json:"memory"`
}

// GoBench is one line of `go test -bench` output.
type GoBench struct {
	Name        string             `json:"name"`
	N           int64              `json:"n"`
	NsPerOp     float64            `json:"ns_per_op"`
	BytesPerOp  float64            `json:"bytes_per_op"`
	AllocsPerOp float64            `json:"allocs_per_op"`
	Metrics     map[string]float64 `json:"metrics,omitempty"`
}

// Badger is statestore.Store.Commit of batches of KeysPerBatch changed keys
// (state and offset in one Badger transaction, as a committed Kafka
// transaction is written).
type Badger struct {
	Batches      int     `json:"batches"`
	KeysPerBatch int     `json:"keys_per_batch"`
	MsPerBatch   float64 `json:"ms_per_batch"` // mean
	P99Ms        float64 `json:"p99_ms"`
	KeysPerS     float64 `json:"keys_per_s"`
	// OpenCloseMs is opening and closing an empty store (the fixed cost of a
	// partition's restore), mean of 3.
	OpenCloseMs float64 `json:"open_close_ms"`
}

// Memory is the heap per active reservation.
type Memory struct {
	Reservations int `json:"reservations"`
	// TimersBytes: what a restored processor keeps per active reservation in
	// memory: its expiry timer (the reservation's state stays in Badger).
	TimersBytes uint64 `json:"timers_bytes"`
	// CachedBytes: timers plus every reservation decoded in a map of
	// processor.Change (as in a partition cache, after the processor decided
	// them itself): what a reservation costs while cached; the caches
	// together are bounded by --state-cache-mb.
	CachedBytes uint64 `json:"cached_bytes"`
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+(.+)$`)

// parseGoBench reads `go test -bench -benchmem` output.
func parseGoBench(r io.Reader) ([]GoBench, error) {
	var out []GoBench
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		b := GoBench{Name: m[1], Metrics: map[string]float64{}}
		b.N, _ = strconv.ParseInt(m[2], 10, 64)
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				b.NsPerOp = v
			case "B/op":
				b.BytesPerOp = v
			case "allocs/op":
				b.AllocsPerOp = v
			default:
				b.Metrics[f[i+1]] = v
			}
		}
		out = append(out, b)
	}
	return out, sc.Err()
}

func findBench(bs []GoBench, name string) (GoBench, bool) {
	for _, b := range bs {
		if b.Name == name {
			return b, true
		}
	}
	return GoBench{}, false
}

// core runs the pure-core phase.
func (r *run) core(ctx context.Context) error {
	c := &r.rep.Core
	if f := r.cfg.CoreBenchFile; f != "" {
		fh, err := os.Open(f)
		if err != nil {
			return fmt.Errorf("core bench file: %w", err)
		}
		c.GoBench, err = parseGoBench(fh)
		fh.Close()
		if err != nil {
			return fmt.Errorf("parse %s: %w", f, err)
		}
		c.GoBenchFile = f
	}
	apply, ok1 := findBench(c.GoBench, "BenchmarkApply/reserve")
	dec, ok2 := findBench(c.GoBench, "BenchmarkCodec/decode-command")
	enc, ok3 := findBench(c.GoBench, "BenchmarkCodec/encode-outputs")
	if ok1 && apply.NsPerOp > 0 {
		c.GoBenchCommandsPerS = 1e9 / apply.NsPerOp
		if ok2 && ok3 {
			c.GoBenchWithCodecCommandsPerS = 1e9 / (apply.NsPerOp + dec.NsPerOp + enc.NsPerOp)
		}
	}
	c.CommandsPerS, c.WithCodecCommandsPerS = measureApply(r.cfg.CoreDuration)
	r.logf("core: %.0f commands/s (Apply reserve, one goroutine), %.0f with codec; go test BenchmarkApply/reserve: %.0f",
		c.CommandsPerS, c.WithCodecCommandsPerS, c.GoBenchCommandsPerS)

	var err error
	if c.Badger, err = measureBadger(ctx, r.cfg.CoreDuration); err != nil {
		return err
	}
	r.logf("core: Badger commit of %d keys: %.2f ms mean, %.2f ms p99, %.0f keys/s; open+close of an empty store %.0f ms",
		c.Badger.KeysPerBatch, c.Badger.MsPerBatch, c.Badger.P99Ms, c.Badger.KeysPerS, c.Badger.OpenCloseMs)
	c.Memory = measureMemory(r.cfg.MemoryReservations)
	r.logf("core: memory per active reservation: %d B (timers only), %d B (timers + decoded in the cache)",
		c.Memory.TimersBytes, c.Memory.CachedBytes)
	return nil
}

// partitionState is the state Core.Apply reads in the processor: entities by
// key, and DueReservations answered like the partition goroutine answers it
// (processor/skurole.go: nil, the partition's timers expire due holds).
// sku.Entities, the tests' state, answers it by scanning every entity,
// which BenchmarkApply therefore measures too.
type partitionState struct{ sku.Entities }

func (partitionState) DueReservations(string, schemas.Millis) []string { return nil }

// measureApply decides reserves against an in-memory state on one goroutine
// for about d (like BenchmarkApply/reserve: the changes are not applied, so
// every command is decided against the same state), then adds the codec.
func measureApply(d time.Duration) (apply, withCodec float64) {
	const skus = 1000
	c := &sku.Core{Rules: sku.DefaultRules()}
	st := partitionState{make(sku.Entities)}
	t0 := schemas.MillisOf(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	for i := range skus {
		name := fmt.Sprintf("SKU-%d", i)
		on := int64(1 << 40)
		o := c.Apply(st, sku.Input{Key: name, Command: schemas.Command{CommandID: "set-" + name, Type: schemas.TypeStockSet, SKU: name, OnHand: &on}}, t0)
		st.Apply(o.Changes)
	}
	raws := make([][]byte, 4096)
	cmds := make([]schemas.Command, len(raws))
	for i := range cmds {
		o := op{typ: schemas.TypeReserve, sku: fmt.Sprintf("SKU-%d", i%skus), res: fmt.Sprintf("r%d", i), qty: 1, ttl: 900, id: fmt.Sprintf("c%d", i)}
		raws[i] = encodeCommand(&o)
		var err error
		if cmds[i], err = schemas.DecodeCommand(raws[i], 64<<10); err != nil {
			panic(fmt.Sprintf("decode generated command: %v", err))
		}
	}
	loop := func(fn func(i int)) float64 {
		n := 0
		start := time.Now()
		for time.Since(start) < d && n < 50_000_000 {
			for range 1000 {
				fn(n % len(cmds))
				n++
			}
		}
		return float64(n) / time.Since(start).Seconds()
	}
	apply = loop(func(i int) { _ = c.Apply(st, sku.Input{Key: cmds[i].SKU, Command: cmds[i]}, t0) })
	buf := make([]byte, 0, 1024)
	withCodec = loop(func(i int) {
		cmd, _ := schemas.DecodeCommand(raws[i], 64<<10)
		out := c.Apply(st, sku.Input{Key: cmd.SKU, Command: cmd}, t0)
		for k := range out.Results {
			buf = schemas.AppendResult(buf[:0], &out.Results[k])
		}
		for k := range out.Changes {
			_, _ = sku.EncodeChange(&out.Changes[k])
		}
	})
	return apply, withCodec
}

// measureBadger commits batches of 1000 reservation entities (each with the
// next offset, in one Badger transaction) to a fresh store for about d.
func measureBadger(ctx context.Context, d time.Duration) (Badger, error) {
	b := Badger{KeysPerBatch: 1000}
	dir, err := os.MkdirTemp("", "reservations-bench-badger-")
	if err != nil {
		return b, fmt.Errorf("create badger dir: %w", err)
	}
	defer os.RemoveAll(dir)
	t0 := time.Now()
	for i := range 3 {
		s, err := statestore.Open(filepath.Join(dir, fmt.Sprint("empty-", i)), statestore.Options{})
		if err != nil {
			return b, err
		}
		if err := s.Close(); err != nil {
			return b, err
		}
	}
	b.OpenCloseMs = ms(time.Since(t0)) / 3
	s, err := statestore.Open(filepath.Join(dir, "commit"), statestore.Options{})
	if err != nil {
		return b, err
	}
	defer s.Close()
	now := schemas.MillisOf(time.Now())
	batch := make(map[string][]byte, b.KeysPerBatch)
	var lat []time.Duration
	n := 0
	start := time.Now()
	for (time.Since(start) < d || len(lat) < 3) && len(lat) < 10_000 && ctx.Err() == nil {
		clear(batch)
		for range b.KeysPerBatch {
			k, v := reservationRecord(n, now)
			batch[k] = v
			n++
		}
		t := time.Now()
		if err := s.Commit(batch, int64(n)); err != nil {
			return b, err
		}
		lat = append(lat, time.Since(t))
	}
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	b.Batches = len(lat)
	b.MsPerBatch = ms(sum) / float64(len(lat))
	_, _, b.P99Ms, _, _ = percentiles(slices.Clone(lat))
	b.KeysPerS = float64(n) / sum.Seconds()
	return b, nil
}

// reservationRecord is the changelog key and entity JSON of the i-th active
// reservation of the core measurements (SKUs of the uniform set).
func reservationRecord(i int, now schemas.Millis) (string, []byte) {
	sku := uniformSKU(i % 10_000)
	id := fmt.Sprintf("r-%d", i)
	e := schemas.ReservationEntity{Reservation: schemas.Reservation{ReservationID: id, SKU: sku, Quantity: 1,
		Status: schemas.StatusActive, ExpiresAt: now, CartID: "cart-" + id}, Version: 1, Event: schemas.EventReserved,
		CommandID: "c-" + id, UpdatedAt: now}
	return schemas.ReservationKey(sku, id), schemas.AppendReservationEntity(nil, &e)
}

// timerModel mirrors the processor's expiry timer entry (processor/timers.go).
type timerModel struct {
	at  schemas.Millis
	sku string
	id  string
}

// measureMemory measures the Go heap held per active reservation, decoding n
// reservation entities from their changelog JSON the way the processor does
// (processor.DecodeChange): first keeping only the timers (what a restored
// processor holds), then also the decoded entities in a cache map.
func measureMemory(n int) Memory {
	m := Memory{Reservations: n}
	now := schemas.MillisOf(time.Now())
	runtime.GC()
	base := heapInUse()
	timers := make([]timerModel, 0) // grown like the processor's heap slice
	for i := range n {
		k, v := reservationRecord(i, now)
		c, err := processor.DecodeChange(k, v)
		if err != nil {
			panic(fmt.Sprintf("decode generated entity: %v", err))
		}
		r := c.Reservation.Reservation
		timers = append(timers, timerModel{r.ExpiresAt, r.SKU, r.ReservationID})
	}
	runtime.GC()
	m.TimersBytes = (heapInUse() - min(base, heapInUse())) / uint64(n)
	cache := make(map[string]processor.Change)
	for i := range n {
		k, v := reservationRecord(i, now)
		c, _ := processor.DecodeChange(k, v)
		cache[k] = c
	}
	runtime.GC()
	m.CachedBytes = (heapInUse() - min(base, heapInUse())) / uint64(n)
	runtime.KeepAlive(timers)
	runtime.KeepAlive(cache)
	return m
}
