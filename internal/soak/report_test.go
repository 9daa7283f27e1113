package soak

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// The invariants the checker holds the pipeline to, in report order.
const (
	invOnce       = "exactly one decision per command id, duplicates repeat it"
	invInvalid    = "invalid commands rejected"
	invOversell   = "available < 0 only through stock.set/stock.adjust"
	invContinuity = "every stock change in the results explained by its decision"
	invStock      = "per SKU reserved == sum(active), available == on_hand - reserved"
	invAgree      = "results and changelog agree on every SKU's stock and every active hold"
	invTerminal   = "no reservation changed after a terminal state, versions increase"
	invExpired    = "every hold past expires_at expired"
	invEnded      = "every hold ended at most once (expired, released or committed)"
	invTombstone  = "tombstones only past the dedupe window, each entity deleted once (none revived)"
	invStale      = "a store away longer than half delete.retention.ms is rebuilt in full, never tail-replayed"
	invOwnership  = "a partition runs on one instance at a time (partition running .. last_commit, from the logs)"
	invCarts      = "cart commands: one result each, all or nothing, no saga left"
	invPostgres   = "Postgres equals the changelog"
	invDLQ        = "DLQ holds every malformed record, once"
	invForward    = "misrouted commands forwarded once, every decision made by the owner partition"
	invProcesses  = "processes: no panic, race or unexpected exit; corrupted store wiped"
	// invRetomb: a store kept a terminal entry the changelog had deleted, and
	// its sweep tombstoned it again (the stale-store class of bug).
	invRetomb   = "no terminal entry tombstoned twice (a store kept what the changelog deleted)"
	invLiveness = "liveness: partitions decide again within 60 s of a kill or freeze, a frozen member is expelled, commands within the drain limit"
)

// maxRecovery bounds the time from a kill until every partition the killed
// instance owned decided again (typically the 4 s session timeout plus a
// restore: 4-10 s).
const maxRecovery = time.Minute

var invariants = []string{invOnce, invInvalid, invOversell, invContinuity, invStock, invAgree, invTerminal,
	invExpired, invEnded, invTombstone, invRetomb, invStale, invOwnership, invCarts, invPostgres, invDLQ, invForward,
	invProcesses, invLiveness}

// report collects violations per invariant (safe for concurrent use) and
// what was checked.
type report struct {
	mu       sync.Mutex
	found    map[string]int
	examples map[string][]string
	checked  map[string]string
}

func newReport() *report {
	return &report{found: map[string]int{}, examples: map[string][]string{}, checked: map[string]string{}}
}

const maxExamples = 5

func (r *report) violate(inv, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.found[inv]++
	if len(r.examples[inv]) < maxExamples {
		r.examples[inv] = append(r.examples[inv], fmt.Sprintf(format, args...))
	}
}

// check notes what an invariant was checked on, e.g. "28000 command ids".
func (r *report) check(inv, what string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checked[inv] = fmt.Sprintf(what, args...)
}

func (r *report) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.found {
		n += v
	}
	return n
}

// lines are the invariant results, one line each plus examples of violations.
func (r *report) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, inv := range invariants {
		what := ""
		if c := r.checked[inv]; c != "" {
			what = " (" + c + ")"
		}
		if r.found[inv] == 0 {
			out = append(out, "  ok    "+inv+what)
			continue
		}
		out = append(out, fmt.Sprintf("  FAIL  %s%s: %d violations", inv, what, r.found[inv]))
		for _, e := range r.examples[inv] {
			out = append(out, "        - "+e)
		}
	}
	return out
}

// percentiles returns p50 and max of ds ("n/a" when empty).
func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n/a"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("p50 %s, max %s", s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}

func joinInts(ps []int32) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, p)
	}
	return b.String()
}
