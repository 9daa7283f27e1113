package sku

// Model-based property tests: random command sequences (seeded, reproducible)
// through the pure core (Entities state) and through the reference model of
// refmodel_test.go, comparing every result, the state after every step, and the
// contract's invariants. A failure prints the seed and the commands up to the
// failing one in the syntax of testdata/scenarios, ready to become a scenario.
//
//	go test -run TestProperty ./processor/                          the default seeds
//	go test -run TestProperty ./processor/ -property.seed=1234      one seed
//	go test -run TestProperty ./processor/ -property.seeds=5000 -property.random

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reservations/reservations/schemas"
)

var (
	propSeed   = flag.Uint64("property.seed", 0, "run the property tests with this seed only")
	propSeeds  = flag.Int("property.seeds", 250, "seeds per property test")
	propSteps  = flag.Int("property.steps", 250, "commands per seed")
	propRandom = flag.Bool("property.random", false, "start the property seeds at a time-based seed instead of 1")
	propStats  = flag.Bool("property.stats", false, "log how often each kind of result occurred")
)

// propMaxBytes is the processor's default record size limit.
const propMaxBytes = 64 << 10

// propT0 is the clock at the start of every sequence (as in the scenarios).
var propT0 = schemas.MillisOf(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))

// TestPropertyCoreMatchesModel runs random sequences exactly as the partition
// loop decides them: before each command, every active reservation with
// expires_at <= now is expired through Core.Expire, earliest first, then the
// sweep forgets what is past the dedupe window, then the command is decided.
func TestPropertyCoreMatchesModel(t *testing.T) {
	runProperty(t, propOptions{timers: 1})
}

// TestPropertyLazyExpiry lets timers fall behind (they fire before only half of
// the commands), so that holds past expires_at meet commands at decision time.
// The contract: "A reservation past its expires_at never counts against
// availability (expired lazily at decision time)": Core.Apply expires every
// due hold of the SKU (State.DueReservations) before deciding.
func TestPropertyLazyExpiry(t *testing.T) {
	runProperty(t, propOptions{timers: 0.5})
}

// TestPropertyLazyExpiryOfOtherHolds is the smallest case: one unit, held with
// a 1 s TTL; one second later (its timer has not fired) a reserve of that unit
// must be accepted, the hold past expires_at not counting.
func TestPropertyLazyExpiryOfOtherHolds(t *testing.T) {
	p := &propRun{core: Core{Rules: DefaultRules()}, st: make(Entities), m: newRefModel(refRules{window: 24 * time.Hour, maxExt: 1}),
		now: propT0, stats: map[string]int{}}
	for _, s := range []propStep{
		{key: "A", raw: []byte(`{"command_id":"s","type":"stock.set","sku":"A","on_hand":1}`)},
		{key: "A", raw: []byte(`{"command_id":"h1","type":"reserve","sku":"A","reservation_id":"h1","quantity":1,"ttl_seconds":1}`)},
		{advance: 1000, key: "A", raw: []byte(`{"command_id":"h2","type":"reserve","sku":"A","reservation_id":"h2","quantity":1}`)},
	} {
		if err := p.step(s, false); err != nil {
			t.Fatalf("%v\n%s", err, strings.Join(p.log, "\n"))
		}
	}
}

type propOptions struct {
	timers float64 // probability that due timers fire before a command (1: always, as the partition loop)
}

func runProperty(t *testing.T, opt propOptions) {
	base, n := uint64(1), *propSeeds
	if *propRandom {
		base = uint64(time.Now().UnixNano())
	}
	if *propSeed != 0 {
		base, n = *propSeed, 1
	}
	if testing.Short() {
		n = min(n, 25)
	}
	failures := 0
	stats := map[string]int{}
	for i := range n {
		seed := base + uint64(i)
		if err := propRunSeed(seed, *propSteps, opt, stats); err != nil {
			t.Errorf("seed %d: %v\n(reproduce: go test -run '^%s$' ./processor/ -property.seed=%d)", seed, err, t.Name(), seed)
			if failures++; failures == 3 {
				t.Fatal("stopping after 3 failing seeds")
			}
		}
	}
	if *propStats {
		keys := slices.Sorted(maps.Keys(stats))
		for _, k := range keys {
			t.Logf("%7d %s", stats[k], k)
		}
	}
}

// propRunSeed runs one random sequence and returns the first disagreement, with
// the commands that led to it.
func propRunSeed(seed uint64, steps int, opt propOptions, stats map[string]int) error {
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	rules := refRules{window: []time.Duration{time.Hour, 24 * time.Hour}[r.IntN(2)], maxExt: int64(r.IntN(3))}
	p := &propRun{
		core:  Core{Rules: Rules{DedupeWindow: rules.window, MaxExtensions: rules.maxExt}},
		st:    make(Entities),
		m:     newRefModel(rules),
		now:   propT0,
		stats: stats,
	}
	g := &propGen{r: r, model: p.m, now: &p.now}
	fire := func() bool { return opt.timers >= 1 || r.Float64() < opt.timers }
	for i := range steps {
		s := g.step()
		if err := p.step(s, fire()); err != nil {
			return fmt.Errorf("rules: dedupe window %s, max extensions %d\nstep %d: %v\n"+
				"# the commands up to the failing one (scenario syntax; clock starts at %s):\n%s",
				rules.window, rules.maxExt, i+1, err, propT0, strings.Join(p.log, "\n"))
		}
	}
	p.sweep()
	if err := p.compareState(true); err != nil {
		return fmt.Errorf("final state: %v\n%s", err, strings.Join(p.log, "\n"))
	}
	return nil
}

// propStep is one step of a sequence: move the clock (advance > 0), then decide
// one command record.
type propStep struct {
	advance schemas.Millis
	key     string
	raw     []byte
}

type propRun struct {
	core   Core
	st     Entities
	m      *refModel
	now    schemas.Millis
	offset int64
	log    []string
	stats  map[string]int
}

func (p *propRun) step(s propStep, fireTimers bool) error {
	if s.advance > 0 {
		p.now += s.advance
		p.log = append(p.log, "advance "+(time.Duration(s.advance)*time.Millisecond).String())
	}
	if fireTimers {
		if err := p.fireTimers(); err != nil {
			return err
		}
	}
	p.sweep()
	p.log = append(p.log, fmt.Sprintf("send key=%s\n%s", s.key, s.raw))
	p.offset++
	before := clone(p.st)
	want, decided := p.m.decide(s.key, s.raw, propMaxBytes, p.now)
	cmd, err := schemas.DecodeCommand(s.raw, propMaxBytes)
	var ue *schemas.UndecodableError
	var fe *schemas.FieldError
	switch {
	case errors.As(err, &ue):
		if decided {
			return fmt.Errorf("the decoder sends the record to the DLQ (%v); the model decides it", err)
		}
		return nil
	case !decided:
		return fmt.Errorf("the model sends the record to the DLQ; the decoder reads it (err %v)", err)
	case err != nil && !errors.As(err, &fe):
		return fmt.Errorf("decoder error of neither class: %T %v", err, err)
	}
	o := p.core.Apply(p.st, Input{Key: s.key, Command: cmd, FieldErr: fe, Offset: p.offset}, p.now)
	if err := checkChanges(p.st, o.Changes); err != nil {
		return err
	}
	p.st.Apply(o.Changes)
	if err := compareResults(o.Results, want); err != nil {
		return err
	}
	p.count(o.Results)
	stockCmd := (cmd.Type == schemas.TypeStockSet || cmd.Type == schemas.TypeStockAdjust) && !want[len(want)-1].Duplicate
	if err := checkInvariants(before, p.st, stockCmd); err != nil {
		return err
	}
	return p.compareState(false)
}

// fireTimers expires every active reservation due at now, earliest first, as
// the partition loop's timers do.
func (p *propRun) fireTimers() error {
	due := p.m.due(p.now)
	if got := coreDue(p.st, p.now); !slices.Equal(got, due) {
		return fmt.Errorf("due reservations at %s: core %v, model %v", p.now, got, due)
	}
	for _, k := range due {
		before := clone(p.st)
		o := p.core.Expire(p.st, 0, k.sku, k.id, p.now)
		if err := checkChanges(p.st, o.Changes); err != nil {
			return fmt.Errorf("expire %v: %w", k, err)
		}
		p.st.Apply(o.Changes)
		if err := compareResults(o.Results, p.m.expire(k, p.now)); err != nil {
			return fmt.Errorf("expire %v: %w", k, err)
		}
		p.count(o.Results)
		if err := checkInvariants(before, p.st, false); err != nil {
			return fmt.Errorf("expire %v: %w", k, err)
		}
	}
	if left := coreDue(p.st, p.now); len(left) > 0 {
		return fmt.Errorf("holds past expires_at still active after the timers fired: %v", left)
	}
	return nil
}

// coreDue lists the core's active, not prepared reservations with expires_at
// <= now, in the model's order.
func coreDue(st Entities, now schemas.Millis) []refKey {
	m := newRefModel(refRules{})
	for _, c := range st {
		if r := c.Reservation; r != nil {
			v := r.Reservation
			m.holds[refKey{v.SKU, v.ReservationID}] = &refHold{sku: v.SKU, id: v.ReservationID, status: v.Status, expiresAt: v.ExpiresAt,
				prepared: v.Prepared}
		}
	}
	return m.due(now)
}

func (p *propRun) count(rs []schemas.Result) {
	for _, r := range rs {
		k := r.Type + " " + r.Outcome + " " + r.Reason
		if r.Duplicate {
			k += " dup"
		}
		if r.CommandID != "" && len(rs) > 1 {
			k += fmt.Sprintf(" (+%d notices)", len(rs)-1)
		}
		p.stats[k]++
	}
}

// sweep forgets decided commands and terminal reservations past the dedupe
// window, in the core (ForgetCommand, ForgetReservation) and in the model.
func (p *propRun) sweep() {
	var tombs []Change
	for _, c := range p.st {
		if c.Command != nil {
			if tomb, ok := p.core.ForgetCommand(p.st, c.Command.CommandID, p.now); ok {
				tombs = append(tombs, tomb)
			}
		}
		if r := c.Reservation; r != nil {
			if tomb, ok := p.core.ForgetReservation(p.st, r.Reservation.SKU, r.Reservation.ReservationID, p.now); ok {
				tombs = append(tombs, tomb)
			}
		}
	}
	p.st.Apply(tombs)
	p.m.sweep(p.now)
}

// compareState compares the core's entities with the model: every SKU's stock
// and threshold, every reservation, and (when decided) the remembered command ids.
func (p *propRun) compareState(decided bool) error {
	skus, holds, cmds := 0, 0, 0
	for key, c := range p.st {
		switch {
		case c.Stock != nil:
			skus++
			s, ok := p.m.skus[c.Stock.SKU]
			if !ok {
				return fmt.Errorf("%s: the core has the SKU, the model does not", key)
			}
			want := p.m.view(c.Stock.SKU)
			got := c.Stock.View()
			if *got != *want || c.Stock.Available != want.Available {
				return fmt.Errorf("%s: core %+v (available field %d), model %+v", key, *got, c.Stock.Available, *want)
			}
			if !reflect.DeepEqual(c.Stock.LowStockThreshold, s.threshold) {
				return fmt.Errorf("%s: threshold core %v, model %v", key, ptrString(c.Stock.LowStockThreshold), ptrString(s.threshold))
			}
		case c.Reservation != nil:
			holds++
			v := c.Reservation.Reservation
			h, ok := p.m.holds[refKey{v.SKU, v.ReservationID}]
			if !ok {
				return fmt.Errorf("%s: the core has the reservation (%s), the model does not", key, v.Status)
			}
			if want := h.view(); v != *want {
				return fmt.Errorf("%s: core %+v, model %+v", key, v, *want)
			}
		case c.Command != nil:
			cmds++
			if _, ok := p.m.decided[c.Command.CommandID]; decided && !ok {
				return fmt.Errorf("%s: remembered by the core, not by the model", key)
			}
		}
	}
	if skus != len(p.m.skus) || holds != len(p.m.holds) {
		return fmt.Errorf("core has %d SKUs and %d reservations, the model %d and %d", skus, holds, len(p.m.skus), len(p.m.holds))
	}
	if decided && cmds != len(p.m.decided) {
		return fmt.Errorf("core remembers %d command ids, the model %d", cmds, len(p.m.decided))
	}
	return nil
}

func ptrString(v *int64) string {
	if v == nil {
		return "none"
	}
	return strconv.FormatInt(*v, 10)
}

// compareResults compares the core's results with the model's: what the
// contract fixes (not messages, offsets, partitions, decided_at).
func compareResults(got []schemas.Result, want []refResult) error {
	if len(got) != len(want) {
		return fmt.Errorf("results differ\n--- core\n%s\n--- model\n%s", formatGot(got), formatWant(want))
	}
	for i := range got {
		if err := compareResult(&got[i], &want[i]); err != nil {
			return fmt.Errorf("result %d: %v\n--- core\n%s\n--- model\n%s", i, err, formatGot(got), formatWant(want))
		}
	}
	return nil
}

func compareResult(g *schemas.Result, w *refResult) error {
	type fields struct {
		CommandID, Type, SKU, ReservationID, Outcome, Reason string
		Duplicate                                            bool
	}
	gf := fields{g.CommandID, g.Type, g.SKU, g.ReservationID, g.Outcome, g.Reason, g.Duplicate}
	wf := fields{w.CommandID, w.Type, w.SKU, w.ReservationID, w.Outcome, w.Reason, w.Duplicate}
	if gf != wf {
		return fmt.Errorf("core %+v, model %+v", gf, wf)
	}
	if w.Reason == schemas.ReasonInvalidCommand {
		field, _, ok := strings.Cut(g.Message, ": ")
		if !ok || !slices.Contains(w.Fields, field) {
			return fmt.Errorf("invalid_command message %q names none of the invalid fields %v", g.Message, w.Fields)
		}
	}
	if !reflect.DeepEqual(g.Stock, w.Stock) {
		return fmt.Errorf("stock: core %s, model %s", stockString(g.Stock), stockString(w.Stock))
	}
	if !reflect.DeepEqual(g.Reservation, w.Hold) {
		return fmt.Errorf("reservation: core %s, model %s", holdString(g.Reservation), holdString(w.Hold))
	}
	return nil
}

func formatGot(rs []schemas.Result) string {
	var lines []string
	for _, r := range rs {
		lines = append(lines, resultLine(r.CommandID, r.Type, r.SKU, r.Outcome, r.Reason, r.Duplicate, r.Stock, r.Reservation)+
			fmt.Sprintf(" msg=%q", r.Message))
	}
	return strings.Join(lines, "\n")
}

func formatWant(rs []refResult) string {
	var lines []string
	for _, r := range rs {
		l := resultLine(r.CommandID, r.Type, r.SKU, r.Outcome, r.Reason, r.Duplicate, r.Stock, r.Hold)
		if len(r.Fields) > 0 {
			l += fmt.Sprintf(" fields=%v", r.Fields)
		}
		lines = append(lines, l)
	}
	return strings.Join(lines, "\n")
}

func resultLine(id, typ, sku, outcome, reason string, dup bool, st *schemas.StockView, res *schemas.Reservation) string {
	if id == "" {
		id = "-"
	}
	s := fmt.Sprintf("%s %s %s %s", id, typ, sku, outcome)
	if reason != "" {
		s += " " + reason
	}
	if dup {
		s += " dup"
	}
	return s + " stock=" + stockString(st) + " res=" + holdString(res)
}

func stockString(v *schemas.StockView) string {
	if v == nil {
		return "none"
	}
	return fmt.Sprintf("%d/%d/%d", v.OnHand, v.Reserved, v.Available)
}

func holdString(r *schemas.Reservation) string {
	if r == nil {
		return "none"
	}
	return fmt.Sprintf("%s:%d:%s:ext%d:exp=%s:cart=%s:order=%s:store=%s:prepared=%t",
		r.ReservationID, r.Quantity, r.Status, r.Extensions, r.ExpiresAt, r.CartID, r.OrderID, r.StoreID, r.Prepared)
}

// checkChanges checks the entity changes of one output against the state they
// apply to: the key matches the value, version goes up by exactly one per
// change, available == on_hand - reserved, and a terminal reservation is never
// changed again. Apply and Expire never write tombstones.
func checkChanges(st Entities, changes []Change) error {
	seen := map[string]Change{}
	for _, c := range changes {
		prev, had := seen[c.Key]
		if !had {
			prev, had = st[c.Key]
		}
		var prevVersion, version int64
		var key string
		switch {
		case c.Stock != nil:
			version, key = c.Stock.Version, schemas.StockKey(c.Stock.SKU)
			if c.Stock.Available != c.Stock.OnHand-c.Stock.Reserved {
				return fmt.Errorf("%s: available %d != on_hand %d - reserved %d", c.Key, c.Stock.Available, c.Stock.OnHand, c.Stock.Reserved)
			}
			if had && prev.Stock != nil {
				prevVersion = prev.Stock.Version
			}
		case c.Reservation != nil:
			v := c.Reservation.Reservation
			version, key = c.Reservation.Version, schemas.ReservationKey(v.SKU, v.ReservationID)
			if had && prev.Reservation != nil {
				prevVersion = prev.Reservation.Version
				if s := prev.Reservation.Reservation.Status; s != schemas.StatusActive {
					return fmt.Errorf("%s: a %s reservation changed again (event %s, now %s)", c.Key, s, c.Reservation.Event, v.Status)
				}
			}
		case c.Command != nil:
			version, key = c.Command.Version, schemas.CommandKey(c.Command.CommandID)
			if had && prev.Command != nil {
				prevVersion = prev.Command.Version
			}
		default:
			return fmt.Errorf("%s: unexpected tombstone", c.Key)
		}
		if key != c.Key {
			return fmt.Errorf("change under key %q holds the entity of key %q", c.Key, key)
		}
		if version != prevVersion+1 {
			return fmt.Errorf("%s: version %d after version %d", c.Key, version, prevVersion)
		}
		seen[c.Key] = c
	}
	return nil
}

// checkInvariants checks every SKU of after: reserved == sum(active),
// available == on_hand - reserved, on_hand >= 0, and available >= 0 unless the
// SKU went negative through stock.set / stock.adjust (stockCmd: the step was
// such a command): any other step may leave it negative only if it was already
// negative before, and never lower.
func checkInvariants(before, after Entities, stockCmd bool) error {
	active := map[string]int64{}
	for _, c := range after {
		if r := c.Reservation; r != nil && r.Reservation.Status == schemas.StatusActive {
			active[r.Reservation.SKU] += r.Reservation.Quantity
		}
	}
	for key, c := range after {
		s := c.Stock
		if s == nil {
			continue
		}
		switch {
		case s.Reserved != active[s.SKU]:
			return fmt.Errorf("%s: reserved %d != sum(active) %d", key, s.Reserved, active[s.SKU])
		case s.Available != s.OnHand-s.Reserved:
			return fmt.Errorf("%s: available %d != on_hand %d - reserved %d", key, s.Available, s.OnHand, s.Reserved)
		case s.OnHand < 0:
			return fmt.Errorf("%s: on_hand %d < 0", key, s.OnHand)
		case s.Available < 0 && !stockCmd:
			b, ok := before.Stock(s.SKU)
			if !ok || b.Available >= 0 || s.Available < b.Available {
				return fmt.Errorf("%s: available went to %d (before %d) without a stock command", key, s.Available, b.Available)
			}
		}
	}
	for key, c := range before {
		if c.Stock != nil {
			if _, ok := after.Stock(c.Stock.SKU); !ok {
				return fmt.Errorf("%s: the SKU disappeared", key)
			}
		}
	}
	return nil
}

// propGen generates random steps. It peeks at the model only to aim: to make a
// compare-and-set guard match, or to move the clock exactly to an expiry.
type propGen struct {
	r     *rand.Rand
	model *refModel
	now   *schemas.Millis
	sent  []propStep
	n     int
}

// Valid SKUs; "Z" never gets stock (unknown_sku), "sku/2" has a '/'.
var (
	propSKUs   = []string{"A", "B", "sku/2", "Z"}
	propResIDs = []string{"r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "a/b", "ü-1", "%2F"}
	propTTLs   = []int64{1, 2, 30, 60, 300, 900, 3600, 86400}
)

type jfield struct{ k, v string } // v is raw JSON

func jstr(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func jint(n int64) string { return strconv.FormatInt(n, 10) }

func jobj(fs []jfield) []byte {
	var b strings.Builder
	b.WriteByte('{')
	for i, f := range fs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(jstr(f.k) + ":" + f.v)
	}
	b.WriteByte('}')
	return []byte(b.String())
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func (g *propGen) step() propStep {
	var s propStep
	if g.r.IntN(100) < 35 {
		s.advance = g.advance()
	}
	switch n := g.r.IntN(100); {
	case n < 10 && len(g.sent) > 0: // a retry: the same record again
		prev := pick(g.r, g.sent)
		s.key, s.raw = prev.key, prev.raw
		return s
	case n < 13 && len(g.sent) > 0: // a command id reused for another command
		prev := pick(g.r, g.sent)
		key, fs := g.command()
		if id, ok := recordID(prev.raw); ok {
			fs[0].v = jstr(id)
		}
		s.key, s.raw = key, jobj(fs)
	case n < 25:
		s.key, s.raw = g.invalid()
	default:
		key, fs := g.command()
		s.key, s.raw = key, jobj(fs)
	}
	g.sent = append(g.sent, s)
	return s
}

func recordID(raw []byte) (string, bool) {
	var v struct {
		ID string `json:"command_id"`
	}
	if json.Unmarshal(raw, &v) != nil || v.ID == "" {
		return "", false
	}
	return v.ID, true
}

// advance picks a clock step: small, medium, long, past the dedupe window, or
// exactly onto (or next to) the next expiry.
func (g *propGen) advance() schemas.Millis {
	r := g.r
	switch n := r.IntN(100); {
	case n < 15:
		var next schemas.Millis
		for _, h := range g.model.holds {
			if h.status == schemas.StatusActive && !h.prepared && h.expiresAt > *g.now && (next == 0 || h.expiresAt < next) {
				next = h.expiresAt
			}
		}
		if next > 0 {
			return max(1, next-*g.now+schemas.Millis(r.IntN(3)-1))
		}
		return 1
	case n < 45:
		return schemas.Millis(1 + r.IntN(2000))
	case n < 75:
		return schemas.Millis(1000 + r.IntN(120_000))
	case n < 95:
		return schemas.Millis(60_000 + r.IntN(30*60_000))
	default:
		return schemas.Millis(3_600_000 + r.Int64N(30*3_600_000))
	}
}

// command generates a valid command (fields[0] is command_id) and its key.
func (g *propGen) command() (string, []jfield) {
	r := g.r
	g.n++
	sku := propSKUs[0]
	switch n := r.IntN(100); {
	case n < 30:
		sku = propSKUs[1]
	case n < 50:
		sku = propSKUs[2]
	case n < 55:
		sku = propSKUs[3]
	}
	fs := []jfield{{"command_id", jstr(fmt.Sprintf("c%d", g.n))}}
	add := func(k, v string) { fs = append(fs, jfield{k, v}) }
	typ := func(t string) {
		add("type", jstr(t))
		add("sku", jstr(sku))
	}
	// rid names a reservation: mostly one the model knows (and its SKU), so
	// that adjust, release, extend, commit, prepare and unprepare meet active
	// holds; with preferPrepared, mostly a prepared one when there is one.
	rid := func(aim int, preferPrepared bool) {
		id := pick(r, propResIDs)
		if r.IntN(100) < aim {
			var holds, prepared []*refHold
			for _, h := range g.model.holds {
				if h.status == schemas.StatusActive || r.IntN(4) == 0 {
					holds = append(holds, h)
				}
				if h.prepared {
					prepared = append(prepared, h)
				}
			}
			if preferPrepared && len(prepared) > 0 && r.IntN(100) < 70 {
				holds = prepared
			}
			slices.SortFunc(holds, func(a, b *refHold) int {
				return strings.Compare(a.sku+"\x00"+a.id, b.sku+"\x00"+b.id)
			})
			if len(holds) > 0 {
				h := pick(r, holds)
				id = h.id
				fs[2].v = jstr(h.sku)
				sku = h.sku
			}
		}
		add("reservation_id", jstr(id))
	}
	ttl := func() {
		if r.IntN(100) < 60 {
			add("ttl_seconds", jint(pick(r, propTTLs)))
		}
	}
	onHand := func() int64 {
		if s, ok := g.model.skus[sku]; ok {
			return s.onHand
		}
		return 0
	}
	expected := func() {
		switch n := r.IntN(100); {
		case n < 15:
			add("expected_on_hand", jint(onHand()))
		case n < 20:
			add("expected_on_hand", jint(int64(r.IntN(20))))
		}
	}
	switch n := r.IntN(100); {
	case n < 11:
		sku = propSKUs[r.IntN(3)] // never Z
		typ(schemas.TypeStockSet)
		switch m := r.IntN(100); {
		case m < 2:
			add("on_hand", jint(math.MaxInt64))
		case m < 12:
			add("on_hand", jint(int64(r.IntN(4)))) // low: oversells when holds exist
		default:
			add("on_hand", jint(int64(r.IntN(25))))
		}
		if r.IntN(100) < 35 {
			add("low_stock_threshold", jint(int64(r.IntN(7))))
		}
		expected()
	case n < 20:
		typ(schemas.TypeStockAdjust)
		d := int64(r.IntN(8) + 1)
		if r.IntN(2) == 0 {
			d = -d
		}
		switch r.IntN(40) {
		case 0:
			d = math.MaxInt64
		case 1:
			d = math.MinInt64
		case 2:
			d = math.MaxInt64 - onHand() // lands exactly on MaxInt64 (or overflows by one when on_hand is 0)
			if d == 0 {
				d = 1
			}
		}
		add("delta", jint(d))
		expected()
	case n < 46:
		typ(schemas.TypeReserve)
		rid(15, false)
		q := int64(1 + r.IntN(6))
		if r.IntN(50) == 0 {
			q = math.MaxInt64
		}
		add("quantity", jint(q))
		ttl()
		if r.IntN(2) == 0 {
			add("cart_id", jstr(fmt.Sprintf("cart-%d", r.IntN(9))))
		}
		if r.IntN(4) == 0 {
			add("store_id", jstr(pick(r, []string{"berlin", "köln"})))
		}
		if r.IntN(8) == 0 {
			add("reason", jstr("checkout"))
		}
	case n < 56:
		typ(schemas.TypeAdjust)
		rid(75, false)
		add("quantity", jint(int64(1+r.IntN(8))))
	case n < 66:
		typ(schemas.TypeRelease)
		rid(75, false)
	case n < 75:
		typ(schemas.TypeExtend)
		rid(75, false)
		ttl()
	case n < 85:
		typ(schemas.TypeCommit)
		rid(75, r.IntN(2) == 0)
		add("order_id", jstr(fmt.Sprintf("o-%d", g.n)))
	case n < 93: // extension: the first phase of a cart commit
		typ(schemas.TypePrepare)
		rid(80, false)
		add("order_id", jstr(fmt.Sprintf("o-%d", g.n)))
	default:
		typ(schemas.TypeUnprepare)
		rid(80, true)
	}
	return sku, fs
}

// invalid generates a record with one of the bad input classes (some are
// still valid: null optional fields, unicode within the limits).
func (g *propGen) invalid() (string, []byte) {
	r := g.r
	key, fs := g.command()
	set := func(k, v string) {
		for i := range fs {
			if fs[i].k == k {
				fs[i].v = v
				return
			}
		}
		fs = append(fs, jfield{k, v})
	}
	del := func(k string) {
		fs = slices.DeleteFunc(fs, func(f jfield) bool { return f.k == k })
	}
	field := func() string { return pick(r, fs[1:]).k }
	switch r.IntN(21) {
	case 20: // extension: reply_to "cart" needs a cart_id
		set("reply_to", pick(r, []string{`"cart"`, `"cart"`, `"CART"`, `""`, `7`}))
	case 0: // wrong JSON type of some field
		set(field(), pick(r, []string{`"3"`, `true`, `[]`, `{}`, `1.5`, `7`}))
	case 1:
		set(pick(r, []string{"quantity", "on_hand", "delta", "ttl_seconds", "low_stock_threshold", "expected_on_hand"}),
			pick(r, []string{"0", "-1", "-9223372036854775808", "9223372036854775808", "1e2", "2.0", `"5"`}))
	case 2: // a required field missing
		if len(fs) > 1 {
			del(field())
		}
	case 3:
		set("type", jstr(pick(r, []string{"teleport", "", "RESERVE", "expired", "low_stock"})))
	case 4:
		set("ttl_seconds", jint(pick(r, []int64{0, -1, 86401, math.MaxInt64})))
	case 5:
		bad := pick(r, []string{"bad sku", "SKÜ", "", strings.Repeat("s", 129), "a\u0000b"})
		set("sku", jstr(bad))
		if r.IntN(2) == 0 {
			key = bad
		}
	case 6:
		set("reason", jstr(strings.Repeat("é", 257)))
	case 7: // a record key that is not the SKU
		key = pick(r, []string{"", "B", "a", "A "})
	case 8:
		set("reservation_id", jstr(pick(r, []string{"", strings.Repeat("ü", 129), strings.Repeat("ü", 128)})))
	case 9:
		set(pick(r, []string{"cart_id", "store_id", "order_id"}), jstr(strings.Repeat("x", 129)))
	case 10: // null: the same as absent
		set(pick(r, []string{"ttl_seconds", "cart_id", "expected_on_hand", "low_stock_threshold", "quantity", "order_id"}), "null")
	case 11:
		return key, []byte(pick(r, []string{`{"command_id":"x"`, `not json`, ``, `null`, `[]`, `"c"`, `{}`}))
	case 12:
		set("command_id", pick(r, []string{`""`, `7`, `null`, jstr(strings.Repeat("é", 129))}))
	case 13:
		set("command_id", jstr(fmt.Sprintf("ü-%d-%s", g.n, strings.Repeat("é", 100)))) // unicode, within the limit
	case 14: // oversized record
		set("reason", jstr(strings.Repeat("x", propMaxBytes)))
	case 15:
		set("issued_at", pick(r, []string{`"2026-01-01T00:00:00.000Z"`, `"yesterday"`, `12`}))
	case 16:
		set("delta", "0")
	case 17:
		set("quantity", jint(pick(r, []int64{math.MaxInt64, 1 << 40})))
	case 18: // unknown fields are ignored
		set("colour", `"red"`)
	default:
		set("expected_on_hand", pick(r, []string{"-1", jint(math.MaxInt64)}))
	}
	return key, jobj(fs)
}
