package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reservations/reservations/schemas"
)

// The cart workload: all-or-nothing holds of 3-line carts (the cart extension,
// processor.RoleCart). Every system gets the same carts and the same client
// concurrencies. A closed-loop client sends a cart.reserve, waits for its
// answer and, when the cart was accepted, sends the cart's release and waits
// for that too (so the stock never runs out), except for the carts left held
// on purpose (abandoned carts, so that the invariant check after the runs sees
// active holds as well as released ones). Only the cart.reserve is a hold: its
// latency is the figure; the release's time is in the step's wall time.
const (
	cartLines        = 3    // lines per cart, on distinct SKUs
	cartSoldOutSKUs  = 8    // SKUs with no stock: a cart with one of them is rejected in every system
	cartSoldOutShare = 0.05 // of carts with one sold-out line (the saga then compensates its other lines)
	cartKeepShare    = 0.10 // of accepted carts left held (no release)
	cartOnHand       = uniformOnHand
)

// System of the SQL cart baseline: one transaction per cart command, row locks.
const SystemSQLCart = "sql_cart"

// cartSKU names the i-th SKU of the cart workload; soldOutSKU a sold-out one.
func cartSKU(i int) string    { return fmt.Sprintf("C-%05d", i) }
func soldOutSKU(i int) string { return fmt.Sprintf("C-OUT-%d", i) }

// cartStock is the cart workload's initial stock: the SKUs with ample stock,
// then the sold-out ones.
func cartStock(skus int) []stockLine {
	out := make([]stockLine, 0, skus+cartSoldOutSKUs)
	for i := range skus {
		out = append(out, stockLine{cartSKU(i), cartOnHand})
	}
	for i := range cartSoldOutSKUs {
		out = append(out, stockLine{soldOutSKU(i), 0})
	}
	return out
}

// Final states of a cart after its session (set by the one client that ran it).
const (
	cartUntried      = iota
	cartRejected     // the cart.reserve was rejected: it must hold nothing
	cartKept         // accepted and left held: 3 active lines
	cartReleased     // accepted, then released: 3 released lines
	cartReserveError // no answer to the cart.reserve (unknown: not checked)
	cartReleaseError // accepted, no answer to the release (unknown: not checked)
)

// cartOp is one cart's session.
type cartOp struct {
	cart      string   // cart_id
	id        string   // cart.reserve command_id (tag.2i); also the pipeline's reservation id of every line
	slot      int      // 2i; the release is slot 2i+1
	relID     string   // cart.release command_id (tag.2i+1)
	skus      []string // lines in cart order
	qtys      []int64
	sorted    []string // skus sorted (the SQL lock order), with sortedQty
	sortedQty []int64
	soldOut   bool // one line is on a sold-out SKU
	keep      bool // leave the cart held when accepted
	reserve   []byte
	release   []byte
	state     int // cart* final state
}

// cartPlan is the carts of one step.
type cartPlan struct {
	tag   string
	carts []cartOp
}

// genCartPlan generates n carts over skus SKUs. The seed makes every system
// see the same carts.
func genCartPlan(tag string, n, skus int, seed uint64) *cartPlan {
	rng := rand.New(rand.NewPCG(seed, 0xca57))
	p := &cartPlan{tag: tag, carts: make([]cartOp, n)}
	for i := range p.carts {
		c := &p.carts[i]
		c.cart = fmt.Sprintf("%s-k%d", tag, i)
		c.slot = 2 * i
		c.id, c.relID = fmt.Sprintf("%s.%d", tag, 2*i), fmt.Sprintf("%s.%d", tag, 2*i+1)
		for len(c.skus) < cartLines {
			s := cartSKU(rng.IntN(skus))
			if !slices.Contains(c.skus, s) {
				c.skus = append(c.skus, s)
				c.qtys = append(c.qtys, int64(1+rng.IntN(3)))
			}
		}
		if rng.Float64() < cartSoldOutShare {
			c.soldOut = true
			c.skus[rng.IntN(cartLines)] = soldOutSKU(rng.IntN(cartSoldOutSKUs))
		}
		c.keep = rng.Float64() < cartKeepShare
		idx := []int{0, 1, 2}
		slices.SortFunc(idx, func(a, b int) int {
			switch {
			case c.skus[a] < c.skus[b]:
				return -1
			case c.skus[a] > c.skus[b]:
				return 1
			}
			return 0
		})
		for _, k := range idx {
			c.sorted = append(c.sorted, c.skus[k])
			c.sortedQty = append(c.sortedQty, c.qtys[k])
		}
	}
	return p
}

// encode fills the cart command record values (for the pipeline).
func (p *cartPlan) encode() {
	ttl := int64(workloadTTL)
	for i := range p.carts {
		c := &p.carts[i]
		items := make([]schemas.CartItem, len(c.skus))
		for k := range c.skus {
			q := c.qtys[k]
			items[k] = schemas.CartItem{SKU: c.skus[k], Quantity: &q}
		}
		c.reserve = mustJSON(schemas.CartCommand{CommandID: c.id, Type: schemas.TypeCartReserve, CartID: c.cart, TTLSeconds: &ttl, Items: items})
		c.release = mustJSON(schemas.CartCommand{CommandID: c.relID, Type: schemas.TypeCartRelease, CartID: c.cart})
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode %T: %v", v, err)) // plain structs: cannot fail
	}
	return b
}

// cartAnswer is a system's answer to one cart command.
type cartAnswer struct {
	accepted bool
	retries  int
	// problem: the answer itself shows a partial cart (pipeline: the lines of
	// an accepted cart result are not all held, or a rejected one holds one).
	problem string
	// visible: the pipeline's cart result was read this long after its
	// decided_at (-1: not known).
	visible time.Duration
}

// cartExecutor runs cart commands against one system and waits for the answer.
type cartExecutor interface {
	reserve(ctx context.Context, c *cartOp) (cartAnswer, error)
	release(ctx context.Context, c *cartOp) (cartAnswer, error)
}

// CartStep is one closed-loop step of the cart workload on one system.
type CartStep struct {
	System         string        `json:"system"`
	CommitInterval time.Duration `json:"commit_interval"`
	Clients        int           `json:"clients"`
	Pool           int           `json:"pool"`
	// Planned carts; Carts answered (cart.reserve); Accepted and Rejected of them;
	// Errors: cart.reserve without an answer within the command timeout.
	Planned  int `json:"planned"`
	Carts    int `json:"carts"`
	Accepted int `json:"accepted"`
	Rejected int `json:"rejected"`
	Errors   int `json:"errors"`
	Retries  int `json:"retries"`
	// Releases answered (accepted carts not kept), ReleaseErrors without an
	// answer, Kept: accepted carts left held.
	Releases      int `json:"releases"`
	ReleaseErrors int `json:"release_errors"`
	Kept          int `json:"kept"`
	// Seconds of wall time (reserves and releases); HoldsPerS = Accepted /
	// Seconds; CartsPerS = Carts / Seconds.
	Seconds   float64 `json:"seconds"`
	HoldsPerS float64 `json:"holds_per_s"`
	CartsPerS float64 `json:"carts_per_s"`
	// Latency of the cart.reserve (send -> answer), milliseconds.
	P50  float64 `json:"p50_ms"`
	P95  float64 `json:"p95_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
	// Latency of the cart.release, milliseconds.
	ReleaseP50 float64 `json:"release_p50_ms"`
	ReleaseP99 float64 `json:"release_p99_ms"`
	// TimeBoxed: the step hit the cart step timeout before every planned cart ran.
	TimeBoxed bool `json:"time_boxed"`
	// Problems: answers that showed a partial cart.
	Problems int `json:"problems"`
	// Pipeline: where the time of a cart command goes (means over the step's
	// cart commands, reserves and releases; milliseconds): produce -> the
	// coordinator decodes it (PickupMs), the saga in the coordinator (SagaMs:
	// first per-SKU commands emitted -> last line result decided), cart result
	// decided -> visible to the client (VisibleMs), and inside the saga the SKU
	// processor's line command produce -> decision (LineMs).
	PickupMs  float64 `json:"pickup_ms"`
	SagaMs    float64 `json:"saga_ms"`
	LineMs    float64 `json:"line_ms"`
	VisibleMs float64 `json:"visible_ms"`
	// Pipeline: transactions of the SKU processor and of the coordinator.
	SKUTxns         int     `json:"sku_txns"`
	SKURecordsTxn   float64 `json:"sku_records_per_txn"`
	SKUCommitMs     float64 `json:"sku_commit_ms"`
	CoordTxns       int     `json:"coord_txns"`
	CoordRecordsTxn float64 `json:"coord_records_per_txn"`
	CoordCommitMs   float64 `json:"coord_commit_ms"`
	Aborts          int     `json:"aborts"`
	Restarts        int     `json:"restarts"`
}

// Series names the curve of a cart step (system, and commit interval).
func (s *CartStep) Series() string { return seriesName(s.System, s.CommitInterval) }

// cartLoop runs p's carts on `clients` closed-loop clients until every cart
// ran or timeout passed (clients then take no new cart).
func cartLoop(ctx context.Context, ex cartExecutor, p *cartPlan, clients int, timeout time.Duration, st *CartStep) {
	st.Clients, st.Planned = clients, len(p.carts)
	deadline := time.Now().Add(timeout)
	var next atomic.Int64
	var lat, rlat samples
	var visSum atomic.Int64
	var visN atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Go(func() {
			var c CartStep
			local := make([]time.Duration, 0, 64)
			rlocal := make([]time.Duration, 0, 64)
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i := int(next.Add(1)) - 1
				if i >= len(p.carts) {
					break
				}
				o := &p.carts[i]
				octx, cancel := context.WithTimeout(ctx, opTimeout)
				t0 := time.Now()
				a, err := ex.reserve(octx, o)
				d := time.Since(t0)
				cancel()
				if err != nil {
					c.Errors++
					o.state = cartReserveError
					continue
				}
				local = append(local, d)
				c.Carts++
				c.Retries += a.retries
				if a.problem != "" {
					c.Problems++
				}
				if a.visible >= 0 {
					visSum.Add(int64(a.visible))
					visN.Add(1)
				}
				if !a.accepted {
					c.Rejected++
					o.state = cartRejected
					continue
				}
				c.Accepted++
				if o.keep {
					c.Kept++
					o.state = cartKept
					continue
				}
				octx, cancel = context.WithTimeout(ctx, opTimeout)
				t0 = time.Now()
				a, err = ex.release(octx, o)
				d = time.Since(t0)
				cancel()
				switch {
				case err != nil:
					c.ReleaseErrors++
					o.state = cartReleaseError
				case !a.accepted:
					// A release of an accepted cart is never rejected: count it as
					// a problem and leave the cart unchecked.
					c.Problems++
					c.ReleaseErrors++
					o.state = cartReleaseError
				default:
					c.Releases++
					c.Retries += a.retries
					rlocal = append(rlocal, d)
					o.state = cartReleased
				}
			}
			lat.addAll(local)
			rlat.addAll(rlocal)
			mu.Lock()
			st.Carts += c.Carts
			st.Accepted += c.Accepted
			st.Rejected += c.Rejected
			st.Errors += c.Errors
			st.Retries += c.Retries
			st.Releases += c.Releases
			st.ReleaseErrors += c.ReleaseErrors
			st.Kept += c.Kept
			st.Problems += c.Problems
			mu.Unlock()
		})
	}
	wg.Wait()
	st.Seconds = time.Since(start).Seconds()
	if st.Seconds > 0 {
		st.HoldsPerS = float64(st.Accepted) / st.Seconds
		st.CartsPerS = float64(st.Carts) / st.Seconds
	}
	st.TimeBoxed = next.Load() < int64(len(p.carts))
	var tmp Step
	lat.fill(&tmp)
	st.P50, st.P95, st.P99, st.P999, st.Max = tmp.P50, tmp.P95, tmp.P99, tmp.P999, tmp.Max
	var sum time.Duration
	for _, d := range lat.d {
		sum += d
	}
	if n := len(lat.d); n > 0 {
		st.Mean = ms(sum / time.Duration(n))
	}
	rlat.fill(&tmp)
	st.ReleaseP50, st.ReleaseP99 = tmp.P50, tmp.P99
	if n := visN.Load(); n > 0 {
		st.VisibleMs = ms(time.Duration(visSum.Load() / n))
	}
}
