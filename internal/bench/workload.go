package bench

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"

	"github.com/reservations/reservations/schemas"
)

// Workloads.
const (
	WorkloadUniform = "uniform" // reserves spread over every SKU, ample stock
	WorkloadHot     = "hot"     // 90% on one SKU whose stock covers 60% of what is asked; 10% uniform
	WorkloadMixed   = "mixed"   // reservation lifecycles: reserve, adjust, extend, release/commit, duplicates
)

// Workloads lists the workloads in report order.
var Workloads = []string{WorkloadUniform, WorkloadHot, WorkloadMixed}

// Shape of the workloads.
const (
	hotShare      = 0.90 // of hot-workload reserves on the hot SKU
	hotCover      = 0.60 // of the hot SKU's asks its stock covers
	dupShare      = 0.03 // of mixed-workload commands re-sent with the same command_id
	adjustShare   = 0.20 // of mixed sessions that adjust their reservation
	extendShare   = 0.15 // ... that extend it
	commitShare   = 0.40 // ... that end in commit (order placed)
	releaseShare  = 0.30 // ... that end in release; the rest stay active (abandoned carts)
	workloadTTL   = 86400
	uniformOnHand = 1 << 40 // ample stock
)

// op is one command of a workload, as every system executes it.
type op struct {
	typ   string // schemas.Type*
	sku   string
	res   string // reservation id
	qty   int64  // reserve and adjust
	id    string // command_id
	slot  int    // index of id in the step's routing table (a duplicate shares its original's)
	order string // commit
	ttl   int64  // reserve and extend: seconds
	hot   bool   // on the hot SKU
	dup   bool   // a re-send of the previous command (same command_id)
	value []byte // the command record's value (pipeline)
}

// session is the commands one client sends one after the other (one
// reservation's lifecycle, or a single reserve).
type session []op

// plan is a generated step: the sessions, the hot SKU and its stock.
type plan struct {
	tag      string // command ids are tag.N, reservation ids tag.rN
	sessions []session
	ops      int // commands, duplicates included
	slots    int // distinct command ids
	hotSKU   string
	hotStock int64 // stock to set on the hot SKU before the step (hot workload)
	hotAsked int64
}

// uniformSKU names the i-th SKU of the uniform part.
func uniformSKU(i int) string { return fmt.Sprintf("U-%05d", i) }

// genPlan generates about n commands of workload w. The seed makes every
// system see the same commands.
func genPlan(w, tag string, n, skus int, seed uint64) *plan {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	p := &plan{tag: tag}
	if w == WorkloadHot {
		p.hotSKU = "HOT-" + tag
	}
	nextID := func() (string, int) {
		s := p.slots
		p.slots++
		return fmt.Sprintf("%s.%d", tag, s), s
	}
	resN := 0
	add := func(ss *session, o op) {
		o.id, o.slot = nextID()
		*ss = append(*ss, o)
		p.ops++
		if w == WorkloadMixed && rng.Float64() < dupShare {
			d := o
			d.dup = true
			*ss = append(*ss, d)
			p.ops++
		}
	}
	for p.ops < n {
		var ss session
		resN++
		res := fmt.Sprintf("%s.r%d", tag, resN)
		sku := uniformSKU(rng.IntN(skus))
		qty := int64(1 + rng.IntN(3))
		switch w {
		case WorkloadUniform:
			add(&ss, op{typ: schemas.TypeReserve, sku: sku, res: res, qty: qty, ttl: workloadTTL})
		case WorkloadHot:
			o := op{typ: schemas.TypeReserve, sku: sku, res: res, qty: qty, ttl: workloadTTL}
			if rng.Float64() < hotShare {
				o.sku, o.hot = p.hotSKU, true
				p.hotAsked += qty
			}
			add(&ss, o)
		case WorkloadMixed:
			add(&ss, op{typ: schemas.TypeReserve, sku: sku, res: res, qty: qty, ttl: workloadTTL})
			if rng.Float64() < adjustShare {
				add(&ss, op{typ: schemas.TypeAdjust, sku: sku, res: res, qty: int64(1 + rng.IntN(4))})
			}
			if rng.Float64() < extendShare {
				add(&ss, op{typ: schemas.TypeExtend, sku: sku, res: res, ttl: workloadTTL})
			}
			switch f := rng.Float64(); {
			case f < commitShare:
				add(&ss, op{typ: schemas.TypeCommit, sku: sku, res: res, order: "o-" + res})
			case f < commitShare+releaseShare:
				add(&ss, op{typ: schemas.TypeRelease, sku: sku, res: res})
			}
		}
		p.sessions = append(p.sessions, ss)
	}
	p.hotStock = int64(float64(p.hotAsked) * hotCover)
	return p
}

// encode fills the command record values (for the pipeline).
func (p *plan) encode() {
	for _, ss := range p.sessions {
		for i := range ss {
			ss[i].value = encodeCommand(&ss[i])
		}
	}
}

func encodeCommand(o *op) []byte {
	c := schemas.Command{CommandID: o.id, Type: o.typ, SKU: o.sku, ReservationID: o.res, OrderID: o.order}
	if o.qty > 0 {
		q := o.qty
		c.Quantity = &q
	}
	if o.ttl > 0 {
		t := o.ttl
		c.TTLSeconds = &t
	}
	if o.typ == schemas.TypeReserve {
		c.CartID = "cart-" + o.res
	}
	v, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("encode command: %v", err)) // a plain struct: cannot fail
	}
	return v
}

// stockSetValue encodes a stock.set command.
func stockSetValue(id, sku string, onHand int64) []byte {
	v, err := json.Marshal(schemas.Command{CommandID: id, Type: schemas.TypeStockSet, SKU: sku, OnHand: &onHand})
	if err != nil {
		panic(fmt.Sprintf("encode stock.set: %v", err))
	}
	return v
}
