package cart

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/schemas"
)

// Field values as long as the contract allows and the encoder can make them
// (limits.go): ids of 128 characters that each encode to 6 bytes, SKUs of 128
// ASCII characters, int64 maxima, times of 24 characters.
var (
	worstID     = strings.Repeat("<", schemas.MaxIDLen)
	worstReason = strings.Repeat("<", schemas.MaxReasonLen)
	worstTime   = t0 + 15*60*1000
	worstIssued = "2026-01-01T00:00:00.000Z"
	// worstReply is the longest reply_partition (extension (l)).
	worstReply = int64(schemas.MaxReplyPartition)
)

// worstSKU is the i-th distinct SKU of MaxIDLen characters.
func worstSKU(i int) string {
	n := fmt.Sprint(i)
	return strings.Repeat("S", schemas.MaxIDLen-len(n)) + n
}

func worstHold(i int) Hold {
	return Hold{SKU: worstSKU(i), ReservationID: worstID, Quantity: math.MaxInt64, ExpiresAt: worstTime}
}

// worstLine is a saga line with the longest message the SKU processor writes
// on a per-SKU decision of a cart line (processor/core.go: "no reservation
// <id> for sku <sku>"; the others are shorter).
func worstLine(i int) Line {
	return Line{CartLine: schemas.CartLine{
		SKU: worstSKU(i), ReservationID: worstID, Quantity: math.MaxInt64,
		Outcome: schemas.OutcomeRejected, Reason: schemas.ReasonReservationNotActive,
		Message: "no reservation " + worstID + " for sku " + worstSKU(i),
		Status:  schemas.StatusReleased, ExpiresAt: worstTime,
	}}
}

func worstReserve(items int) schemas.CartCommand {
	c := schemas.CartCommand{CommandID: worstID, Type: schemas.TypeCartReserve, CartID: worstID, Reason: worstReason,
		IssuedAt: worstIssued, TTLSeconds: i64(schemas.MaxTTLSeconds), ReplyTo: schemas.ReplyToReplies, ReplyPartition: i64(worstReply)}
	for i := range items {
		c.Items = append(c.Items, schemas.CartItem{SKU: worstSKU(i), Quantity: i64(math.MaxInt64), ReservationID: worstID})
	}
	return c
}

func worstCommit() schemas.CartCommand {
	return schemas.CartCommand{CommandID: worstID, Type: schemas.TypeCartCommit, CartID: worstID, Reason: worstReason,
		IssuedAt: worstIssued, OrderID: worstID, ReplyTo: schemas.ReplyToReplies, ReplyPartition: i64(worstReply)}
}

// worstQueue is the largest queue the rules admit: MaxQueue commands whose
// cart.reserve lines total MaxQueuedLines (a cart.reserve of one line encodes
// longer than a cart.commit, which is longer than a cart.release).
func worstQueue(c *Core) []Queued {
	n, lines := c.maxQueue(), c.maxQueuedLines()
	var q []Queued
	for i := range n {
		k := lines / n // the lines spread over the commands
		if i < lines%n {
			k++
		}
		cmd := worstCommit()
		if k > 0 {
			cmd = worstReserve(k)
		}
		q = append(q, Queued{Command: cmd, Partition: math.MaxInt32, Offset: math.MaxInt64})
	}
	return q
}

// maximalCarts are the largest cart entities the rules admit, one per kind of
// saga: a cart.commit over MaxHolds holds, a cart.reserve of as many lines as
// fit, and an idle cart. Every count is at its limit and every field at its
// longest.
func maximalCarts(r Rules) map[string]Entity {
	c := &Core{Rules: r}
	holds := func(n int) []Hold {
		h := make([]Hold, n)
		for i := range h {
			h[i] = worstHold(i)
		}
		return h
	}
	lines := func(n int) []Line {
		l := make([]Line, n)
		for i := range l {
			l[i] = worstLine(i)
		}
		return l
	}
	base := Entity{CartID: worstID, Version: math.MaxInt64, Event: EventFinished, CommandID: worstID, UpdatedAt: worstTime}
	idle := base
	idle.Holds = holds(c.maxHolds())

	commit := base
	commit.Holds = holds(c.maxHolds())
	commit.Saga = &Saga{Command: worstCommit(), Partition: math.MaxInt32, Offset: math.MaxInt64, Phase: PhaseUnprepare,
		Lines: lines(c.maxHolds()), StartedAt: worstTime}
	commit.Queue = worstQueue(c)

	reserve := base
	n := min(schemas.MaxCartItems, c.maxHolds())
	reserve.Holds = holds(c.maxHolds() - n)
	reserve.Saga = &Saga{Command: worstReserve(n), Partition: math.MaxInt32, Offset: math.MaxInt64, Phase: PhaseCompensate,
		Lines: lines(n), StartedAt: worstTime}
	reserve.Queue = worstQueue(c)
	return map[string]Entity{"idle": idle, "commit saga": commit, "reserve saga": reserve}
}

func encodedLen(t testing.TB, e Entity) int {
	b, err := EncodeChange(&Change{Key: CartKey(e.CartID), Cart: &e})
	require.NoError(t, err)
	return len(b)
}

var boundCache sync.Map // Rules -> int

// cartBound is the encoded size of the largest cart the rules admit.
func cartBound(t testing.TB, r Rules) int {
	if v, ok := boundCache.Load(r); ok {
		return v.(int)
	}
	n := 0
	for _, e := range maximalCarts(r) {
		n = max(n, encodedLen(t, e))
	}
	boundCache.Store(r, n)
	return n
}

// TestMaxCartEncodedSize: the largest cart the default rules admit encodes
// well under the producer's 1 MB record limit.
func TestMaxCartEncodedSize(t *testing.T) {
	r := DefaultRules()
	assert.Equal(t, 100, r.MaxHolds)
	assert.Equal(t, 100, r.MaxQueuedLines)
	assert.Equal(t, 16, r.MaxQueue)
	assert.Equal(t, 100, schemas.MaxCartItems)
	for name, e := range maximalCarts(r) {
		n := encodedLen(t, e)
		t.Logf("%s: %d bytes", name, n)
		assert.Less(t, n, 512<<10, name)
	}
	// Zero rules mean the defaults.
	assert.Equal(t, cartBound(t, r), cartBound(t, Rules{}))
}

// TestWorstCaseBytes checks the arithmetic of limits.go against the encoder:
// what one more element of each kind adds to an encoded cart.
func TestWorstCaseBytes(t *testing.T) {
	// No character of an id encodes to more than 6 bytes.
	worst := 0
	runes := []rune{0x2028, 0x2029, utf8.RuneError, 0xffff, utf8.MaxRune}
	for r := rune(0); r < 0x800; r++ {
		runes = append(runes, r)
	}
	for _, r := range runes {
		worst = max(worst, len(schemas.AppendJSONString(nil, string(r)))-2)
	}
	for b := 0x80; b <= 0xff; b++ {
		worst = max(worst, len(schemas.AppendJSONString(nil, string([]byte{byte(b)})))-2)
	}
	assert.Equal(t, 6, worst)
	assert.Len(t, schemas.AppendJSONString(nil, worstID), 770)

	grow := func(f func(e *Entity)) int {
		e := Entity{CartID: "c", Saga: &Saga{}}
		f(&e)
		m := encodedLen(t, e)
		f(&e)
		return encodedLen(t, e) - m // the second element: with its comma
	}
	assert.Equal(t, 998, grow(func(e *Entity) { e.Holds = append(e.Holds, worstHold(len(e.Holds))) }), "hold")
	assert.Equal(t, 2052, grow(func(e *Entity) { e.Saga.Lines = append(e.Saga.Lines, worstLine(len(e.Saga.Lines))) }), "saga line")
	assert.Equal(t, 958, grow(func(e *Entity) {
		if len(e.Saga.Command.Items) == 0 {
			e.Saga.Command = worstReserve(0)
		}
		e.Saga.Command.Items = append(e.Saga.Command.Items, worstReserve(1).Items[0])
	}), "cart.reserve item")
	queued := grow(func(e *Entity) {
		e.Queue = append(e.Queue, Queued{Command: worstReserve(0), Partition: math.MaxInt32, Offset: math.MaxInt64})
	})
	assert.Equal(t, 3310, queued, "queued cart command")
	sagaFields := encodedLen(t, Entity{CartID: "c", Saga: &Saga{Command: worstCommit(), Partition: math.MaxInt32, Offset: math.MaxInt64,
		Phase: PhaseUnprepare, StartedAt: worstTime}}) - encodedLen(t, Entity{CartID: "c"})
	assert.Equal(t, 4139, sagaFields, "the saga's fields")
	base := Entity{CartID: worstID, Version: math.MaxInt64, Event: EventFinished, CommandID: worstID, UpdatedAt: worstTime}
	assert.Equal(t, 1693, encodedLen(t, base), "the entity's fields")
}

// TestCartSizeIncident replays the incident: 79 cart.reserve of 100 lines,
// one a minute, on one cart. Without a limit the cart grew to 7,900 holds and
// a record over 1 MB; now the cart keeps 100 and the rest are rejected with
// cart_full, nothing reserved.
func TestCartSizeIncident(t *testing.T) {
	s := newSim(t, DefaultRules(), t0)
	for i := range 100 {
		s.sku.setStock(fmt.Sprintf("SKU-%06d", i), 1_000_000, t0)
	}
	reasons := map[string]int{}
	s.onResult = func(r *schemas.CartResult) { reasons[r.Outcome+" "+r.Reason]++ }
	for i := range 79 {
		cmd := schemas.CartCommand{CommandID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), Type: schemas.TypeCartReserve, CartID: "cart-1"}
		for j := range 100 {
			cmd.Items = append(cmd.Items, item(fmt.Sprintf("SKU-%06d", j), 1))
		}
		s.send("cart-1", cmd, nil)
		for len(s.cmds)+len(s.replies) > 0 {
			for len(s.cmds) > 0 {
				s.deliver(0)
			}
			for len(s.replies) > 0 {
				s.reply(0)
			}
		}
		s.advance(60_000)
	}
	t.Logf("largest cart entity: %d bytes; results %v", s.maxCartBytes, reasons)
	assert.Less(t, s.maxCartBytes, 512<<10, "largest cart entity")
	assert.Equal(t, map[string]int{"accepted ": 1, "rejected " + schemas.ReasonCartFull: 78}, reasons)
	e, found := s.state.Cart("cart-1")
	require.True(t, found)
	assert.Len(t, e.Holds, 100)
	assert.Len(t, s.sku.reservations(), 100, "reservations: only the first cart.reserve sent per-SKU commands")
	assert.Empty(t, s.violations())
}
