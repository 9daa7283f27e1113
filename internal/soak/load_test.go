package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// pos is a record's place in a topic: partition and offset.
type pos struct {
	p int32
	o int64
}

// sentCmd is a decodable command (valid or invalid) the load generator sent.
type sentCmd struct {
	typ string
	// reason is the expected reason of an invalid command (invalid_command,
	// sku_mismatch); "" for a valid command, whatever its outcome.
	reason string
	// value is the on_hand of a stock.set or the delta of a stock.adjust, for
	// the stock continuity check.
	value    int64
	attempts int // produce calls with this command id
	acked    int // of which acknowledged by the broker
}

// deadLetter is a malformed record the load generator sent: it belongs in the DLQ.
type deadLetter struct {
	at    pos
	hash  uint64 // of the value
	keyed bool   // its key is a valid SKU: a rejected invalid_command result is due too
}

// ledger is everything the load generator sent, for the checker.
type ledger struct {
	mu        sync.Mutex
	cmds      map[string]*sentCmd
	dead      []deadLetter
	misrouted map[pos]bool // decodable commands sent to a partition their key does not hash to
	records   int          // records produced (acknowledged)
	resent    int          // of which re-sent command ids
	invalid   int          // of which invalid commands
	failed    int          // produce attempts that failed (and were retried)
}

func newLedger() *ledger {
	return &ledger{cmds: map[string]*sentCmd{}, misrouted: map[pos]bool{}}
}

func (l *ledger) cmd(id string) (sentCmd, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.cmds[id]
	if !ok {
		return sentCmd{}, false
	}
	return *c, true
}

// rec is one record to produce and what it is.
type rec struct {
	key, value []byte
	id         string // command_id of a decodable command, "" for a malformed record
	partition  int32  // -1: by key (murmur2)
	resend     bool
	made       time.Time // when the generator made it (re-sends stay well within the dedupe window)
}

// resendWithin bounds the age of a command the generator re-sends: the
// processors' dedupe window is 1 minute, and a command re-sent after it would
// rightly be decided again.
const resendWithin = 20 * time.Second

// load generates the command stream: one stock.set per SKU first, then
// Producers concurrent producers, paced to spread their commands over Load.
type load struct {
	sz     size
	names  topics.Names
	parts  int32
	prod   *kgo.Client // murmur2 (the default partitioner)
	manual *kgo.Client // records carry their partition: a non-murmur2 producer
	skus   []string
	hot    []string
	led    *ledger
	carts  *cartLedger
}

func newLoad(sz size, names topics.Names, parts int32, prod, manual *kgo.Client) *load {
	l := &load{sz: sz, names: names, parts: parts, prod: prod, manual: manual, led: newLedger(), carts: newCartLedger()}
	for i := range sz.SKUs {
		l.skus = append(l.skus, fmt.Sprintf("SKU-%05d", i))
	}
	l.hot = l.skus[:sz.Hot]
	return l
}

// stock sends a stock.set for every SKU (hot ones well stocked).
func (l *load) stock(ctx context.Context) error {
	rng := rand.New(rand.NewPCG(l.sz.Seed, 1))
	var recs []rec
	for i, sku := range l.skus {
		onHand := int64(5 + rng.IntN(50))
		if i < len(l.hot) {
			onHand = 300
		}
		c := schemas.Command{CommandID: "set-" + sku, Type: schemas.TypeStockSet, SKU: sku, OnHand: &onHand}
		if rng.IntN(4) == 0 {
			th := int64(rng.IntN(8))
			c.LowStockThreshold = &th
		}
		recs = append(recs, l.command(c, -1, false))
	}
	for i := 0; i < len(recs); i += 500 {
		if err := l.send(ctx, recs[i:min(i+500, len(recs))]); err != nil {
			return err
		}
	}
	return nil
}

// run sends the rest of the commands from the producers, and the cart
// commands, paced by the phases, and returns when all are sent (or ctx ended).
func (l *load) run(ctx context.Context, ph phases) error {
	total := max(0, l.sz.Commands-len(l.skus))
	errs := make(chan error, l.sz.Producers+1)
	var wg sync.WaitGroup
	for i := range l.sz.Producers {
		n := total / l.sz.Producers
		if i < total%l.sz.Producers {
			n++
		}
		g := &gen{l: l, p: i, rng: rand.New(rand.NewPCG(l.sz.Seed, uint64(i)+100)), manual: i == l.sz.Producers-1}
		wg.Go(func() { errs <- g.run(ctx, n, ph) })
	}
	wg.Go(func() { errs <- l.runCarts(ctx, ph) })
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// command registers a decodable command in the ledger and returns its record.
func (l *load) command(c schemas.Command, partition int32, resend bool) rec {
	v, _ := json.Marshal(c)
	sc := &sentCmd{typ: c.Type}
	switch {
	case c.Type == schemas.TypeStockSet && c.OnHand != nil:
		sc.value = *c.OnHand
	case c.Type == schemas.TypeStockAdjust && c.Delta != nil:
		sc.value = *c.Delta
	}
	l.led.mu.Lock()
	if _, ok := l.led.cmds[c.CommandID]; !ok {
		l.led.cmds[c.CommandID] = sc
	}
	l.led.mu.Unlock()
	return rec{key: []byte(c.SKU), value: v, id: c.CommandID, partition: partition, resend: resend}
}

// send produces recs (retrying failed ones) and records them in the ledger.
func (l *load) send(ctx context.Context, recs []rec) error {
	pending := recs
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt == 20 {
			return fmt.Errorf("produce: %d records still failing after %d attempts", len(pending), attempt)
		}
		if attempt > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		var byKey, manual []*kgo.Record
		of := make(map[*kgo.Record]rec, len(pending)) // ProduceSync returns results in completion order
		for _, r := range pending {
			kr := &kgo.Record{Topic: l.names.Commands, Key: r.key, Value: r.value}
			of[kr] = r
			if r.partition >= 0 {
				kr.Partition = r.partition
				manual = append(manual, kr)
			} else {
				byKey = append(byKey, kr)
			}
			if r.id != "" {
				l.led.mu.Lock()
				l.led.cmds[r.id].attempts++
				l.led.mu.Unlock()
			}
		}
		var retry []rec
		for _, b := range []struct {
			cl  *kgo.Client
			krs []*kgo.Record
		}{{l.prod, byKey}, {l.manual, manual}} {
			if len(b.krs) == 0 {
				continue
			}
			res := b.cl.ProduceSync(ctx, b.krs...)
			if err := ctx.Err(); err != nil {
				return err
			}
			for _, pr := range res {
				if pr.Err != nil {
					retry = append(retry, of[pr.Record])
					continue
				}
				l.acked(of[pr.Record], pos{pr.Record.Partition, pr.Record.Offset})
			}
		}
		l.led.mu.Lock()
		l.led.failed += len(retry)
		l.led.mu.Unlock()
		pending = retry
	}
	return nil
}

// acked records a record the broker acknowledged at p.
func (l *load) acked(r rec, at pos) {
	led := l.led
	led.mu.Lock()
	defer led.mu.Unlock()
	led.records++
	if r.resend {
		led.resent++
	}
	if r.id == "" {
		led.dead = append(led.dead, deadLetter{at: at, hash: hash(r.value), keyed: schemas.ValidSKU(string(r.key))})
		return
	}
	c := led.cmds[r.id]
	c.acked++
	if c.reason != "" && !r.resend {
		led.invalid++
	}
	if len(r.key) > 0 && topics.Partition(r.key, l.parts) != at.p {
		led.misrouted[at] = true
	}
}

func hash(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

// gen is one producer of the load.
type gen struct {
	l      *load
	p      int
	rng    *rand.Rand
	manual bool // partitions chosen at random (a non-murmur2 producer)
	n      int
	holds  []hold
	recent []rec // recently sent decodable commands, re-sent now and then
}

type hold struct {
	sku, id string
	short   bool
}

// run sends n records in batches, paced over the traffic phases.
func (g *gen) run(ctx context.Context, n int, ph phases) error {
	const batch = 20
	rate := float64(n) / g.l.sz.Load.Seconds()
	for sent := 0; sent < n; {
		recs := make([]rec, 0, batch)
		for len(recs) < batch && sent < n {
			recs = append(recs, g.next())
			sent++
		}
		if err := g.l.send(ctx, recs); err != nil {
			return err
		}
		due := ph.wall(time.Duration(float64(sent) / rate * float64(time.Second)))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(due)):
		}
	}
	return nil
}

// partition is -1 (by key) or, for the manual producer, a random partition.
func (g *gen) partition() int32 {
	if g.manual {
		return g.rng.Int32N(g.l.parts)
	}
	return -1
}

func (g *gen) sku() string {
	if g.rng.IntN(100) < 30 {
		return g.l.hot[g.rng.IntN(len(g.l.hot))]
	}
	return g.l.skus[g.rng.IntN(len(g.l.skus))]
}

// next returns the next record: mostly valid commands, plus re-sent command
// ids (3%), invalid commands (2%) and malformed records (0.7%).
func (g *gen) next() rec {
	n := g.rng.IntN(1000)
	if n < 30 && len(g.recent) > 0 {
		r := g.recent[g.rng.IntN(len(g.recent))]
		if time.Since(r.made) < resendWithin {
			r.partition = g.partition()
			r.resend = true
			return r
		}
		n = 1000 // too old to re-send: a new command instead
	}
	switch {
	case n < 50:
		return g.invalid()
	case n < 57:
		return g.malformed()
	}
	r := g.l.command(g.valid(), g.partition(), false)
	r.made = time.Now()
	if len(g.recent) < 100 {
		g.recent = append(g.recent, r)
	} else {
		g.recent[g.rng.IntN(len(g.recent))] = r
	}
	return r
}

func (g *gen) nextID() string {
	g.n++
	return fmt.Sprintf("c%d-%d", g.p, g.n)
}

func i64(v int64) *int64 { return &v }

// valid returns a valid command; its outcome depends on the state.
func (g *gen) valid() schemas.Command {
	id := g.nextID()
	rng := g.rng
	recentHold := func() hold { return g.holds[len(g.holds)-1-rng.IntN(min(len(g.holds), 200))] }
	switch n := rng.IntN(100); {
	case n < 45 || len(g.holds) == 0:
		h := hold{sku: g.sku(), id: fmt.Sprintf("r%d-%d", g.p, g.n)}
		c := schemas.Command{CommandID: id, Type: schemas.TypeReserve, SKU: h.sku, ReservationID: h.id,
			Quantity: i64(int64(1 + rng.IntN(3))), CartID: fmt.Sprintf("cart-%d", rng.IntN(500))}
		switch rng.IntN(4) {
		case 0: // an expiring hold: its timer fires during the run
			h.short = true
			c.TTLSeconds = i64(int64(1 + rng.IntN(5)))
		case 1:
			c.TTLSeconds = i64(600)
		} // else the default TTL (900 s)
		if rng.IntN(10) == 0 {
			c.StoreID = fmt.Sprintf("store-%d", rng.IntN(20))
		}
		g.holds = append(g.holds, h)
		return c
	case n < 55:
		h := recentHold()
		return schemas.Command{CommandID: id, Type: schemas.TypeAdjust, SKU: h.sku, ReservationID: h.id, Quantity: i64(int64(1 + rng.IntN(5)))}
	case n < 67:
		h := recentHold()
		return schemas.Command{CommandID: id, Type: schemas.TypeRelease, SKU: h.sku, ReservationID: h.id}
	case n < 77:
		h := recentHold()
		return schemas.Command{CommandID: id, Type: schemas.TypeCommit, SKU: h.sku, ReservationID: h.id, OrderID: "o-" + id}
	case n < 82:
		h := recentHold()
		ttl := int64(600)
		if h.short {
			ttl = int64(1 + rng.IntN(5))
		}
		return schemas.Command{CommandID: id, Type: schemas.TypeExtend, SKU: h.sku, ReservationID: h.id, TTLSeconds: &ttl}
	case n < 90:
		d := int64(rng.IntN(12) - 3)
		if d == 0 {
			d = 5
		}
		c := schemas.Command{CommandID: id, Type: schemas.TypeStockAdjust, SKU: g.sku(), Delta: &d, Reason: "receiving"}
		if rng.IntN(10) == 0 {
			c.ExpectedOnHand = i64(int64(rng.IntN(20)))
		}
		return c
	case n < 93: // may set on_hand below reserved: the SKU is oversold until fixed
		c := schemas.Command{CommandID: id, Type: schemas.TypeStockSet, SKU: g.sku(), OnHand: i64(int64(rng.IntN(40)))}
		if rng.IntN(3) == 0 {
			c.LowStockThreshold = i64(int64(rng.IntN(10)))
		}
		if rng.IntN(5) == 0 {
			c.ExpectedOnHand = i64(int64(rng.IntN(40)))
		}
		return c
	case n < 96:
		return schemas.Command{CommandID: id, Type: schemas.TypeReserve, SKU: fmt.Sprintf("NOSKU-%d", rng.IntN(50)),
			ReservationID: "x" + id, Quantity: i64(1)}
	default:
		return schemas.Command{CommandID: id, Type: schemas.TypeRelease, SKU: g.sku(), ReservationID: "nope-" + id}
	}
}

// invalid returns a decodable command that must be rejected: wrong JSON types,
// bad quantities and TTLs, unknown types, missing fields, sku != key.
func (g *gen) invalid() rec {
	id := g.nextID()
	sku := g.sku()
	reason := schemas.ReasonInvalidCommand
	key := sku
	var v string
	switch g.rng.IntN(9) {
	case 0:
		v = fmt.Sprintf(`{"command_id":%q,"type":"reserve","sku":%q,"reservation_id":"x","quantity":"3"}`, id, sku)
	case 1:
		v = fmt.Sprintf(`{"command_id":%q,"type":"reserve","sku":%q,"reservation_id":"x","quantity":0}`, id, sku)
	case 2:
		v = fmt.Sprintf(`{"command_id":%q,"type":"adjust","sku":%q,"reservation_id":"x","quantity":-4}`, id, sku)
	case 3:
		v = fmt.Sprintf(`{"command_id":%q,"type":"reserve","sku":%q,"reservation_id":"x","quantity":9223372036854775808}`, id, sku)
	case 4:
		v = fmt.Sprintf(`{"command_id":%q,"type":"reserve","sku":%q,"reservation_id":"x","quantity":1,"ttl_seconds":86401}`, id, sku)
	case 5:
		v = fmt.Sprintf(`{"command_id":%q,"type":"reserve.all","sku":%q}`, id, sku)
	case 6:
		v = fmt.Sprintf(`{"command_id":%q,"type":"release","sku":%q}`, id, sku)
	case 7:
		key = "bad sku!"
		v = fmt.Sprintf(`{"command_id":%q,"type":"stock.set","sku":"bad sku!","on_hand":3}`, id)
	default: // a valid command whose sku is not the record key
		other := g.l.skus[g.rng.IntN(len(g.l.skus))]
		if other == sku {
			other = "SKU-OTHER"
		}
		v = fmt.Sprintf(`{"command_id":%q,"type":"reserve","sku":%q,"reservation_id":"x","quantity":1}`, id, other)
		reason = schemas.ReasonSKUMismatch
	}
	var c schemas.Command
	_ = json.Unmarshal([]byte(v), &c)
	g.l.led.mu.Lock()
	g.l.led.cmds[id] = &sentCmd{typ: c.Type, reason: reason}
	g.l.led.mu.Unlock()
	r := rec{key: []byte(key), value: []byte(v), id: id, partition: g.partition(), made: time.Now()}
	if len(g.recent) < 100 {
		g.recent = append(g.recent, r)
	}
	return r
}

// malformed returns a record that cannot be decoded as a command: it goes to
// the DLQ (with an invalid_command result when its key is a SKU).
func (g *gen) malformed() rec {
	g.n++
	sku := g.sku()
	mark := fmt.Sprintf("m%d-%d", g.p, g.n) // makes every value unique
	key := []byte(sku)
	var v string
	switch g.rng.IntN(7) {
	case 0:
		v = `{"command_id": "` + mark + `", "type": "reserve", oops`
	case 1:
		v = `{"type":"reserve","sku":"` + sku + `","reservation_id":"` + mark + `","quantity":1}`
	case 2:
		v = `{"command_id":"` + mark + `","type":"reserve","sku":"` + sku + `","reason":"` + strings.Repeat("x", 70<<10) + `"}`
	case 3:
		v = `{"command_id":42,"type":"reserve","sku":"` + sku + `","reservation_id":"` + mark + `"}`
	case 4:
		v = `{"command_id":"` + strings.Repeat("z", 200) + mark + `","type":"reserve","sku":"` + sku + `"}`
	case 5:
		key = nil
		v = `{"command_id":"` + mark + `","type":"reserve","sku":"` + sku + `","reservation_id":"x","quantity":1}`
	default:
		key = []byte("not a sku " + mark)
		v = "\x00\x01binary " + mark
	}
	return rec{key: key, value: []byte(v), partition: g.partition()}
}
