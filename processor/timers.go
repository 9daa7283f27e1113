package processor

import (
	"container/heap"

	"github.com/reservations/reservations/schemas"
)

// timer is a reservation's expiry: derived from persisted state (restore scans
// the active reservations), never the source of truth. A stale entry (the
// reservation was extended, released, or its transaction aborted) is harmless:
// Core.Expire checks the state when it fires.
type timer struct {
	at  schemas.Millis
	sku string
	id  string
}

type timerHeap []timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

// timers is one partition's expiry schedule.
type timers struct {
	h      timerHeap
	popped []timer // popped in the open transaction: put back if it aborts
}

func (t *timers) add(at schemas.Millis, sku, id string) { heap.Push(&t.h, timer{at, sku, id}) }

// next returns the earliest expiry, or 0 when there is none.
func (t *timers) next() schemas.Millis {
	if len(t.h) == 0 {
		return 0
	}
	return t.h[0].at
}

// due pops the next timer due at now.
func (t *timers) due(now schemas.Millis) (timer, bool) {
	if len(t.h) == 0 || t.h[0].at > now {
		return timer{}, false
	}
	x := heap.Pop(&t.h).(timer)
	t.popped = append(t.popped, x)
	return x, true
}

// commit forgets the timers popped by a committed transaction.
func (t *timers) commit() { t.popped = t.popped[:0] }

// abort puts back the timers popped by an aborted transaction.
func (t *timers) abort() {
	for _, x := range t.popped {
		heap.Push(&t.h, x)
	}
	t.popped = t.popped[:0]
}
