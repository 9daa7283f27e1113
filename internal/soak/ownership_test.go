package soak

import (
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The processors log with slog's text handler (procs_test.go). This file
// reads those logs: the runs of every partition on every process, checked
// for overlaps (MEMBERSHIP.md rule 1, as checkOwnership in
// processor/membership_test.go does on JSON logs), and the restores of a
// process started on a stale folder (rule 3).

// logLine is one line a child wrote with slog's text handler.
type logLine struct {
	time  time.Time
	msg   string
	attrs map[string]string // the last value of each key (the soak's "instance" comes first, the processor's last)
}

// parseLogLine reads a line `time=... level=... msg=... k=v k="quoted v"`; ok
// is false for anything else (kfake's logger, a race report, a panic).
func parseLogLine(s string) (logLine, bool) {
	if !strings.HasPrefix(s, "time=") {
		return logLine{}, false
	}
	l := logLine{attrs: map[string]string{}}
	for {
		s = strings.TrimLeft(s, " ")
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			break
		}
		key, rest := s[:eq], s[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return logLine{}, false
			}
			val, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			sp := strings.IndexByte(rest, ' ')
			if sp < 0 {
				sp = len(rest)
			}
			val, rest = rest[:sp], rest[sp:]
		}
		l.attrs[key] = val
		s = rest
	}
	t, err := time.Parse(time.RFC3339Nano, l.attrs["time"])
	if err != nil {
		return logLine{}, false
	}
	l.time, l.msg = t, l.attrs["msg"]
	return l, true
}

// role of a processor log line: its role attribute, else the cart
// coordinator's logger component, else the SKU processor.
func (l logLine) role() string {
	if r := l.attrs["role"]; r != "" {
		return r
	}
	if l.attrs["component"] == cartComponent {
		return "cart"
	}
	return "sku"
}

// partition of the line, -1 when it names none.
func (l logLine) partition() int32 {
	n, err := strconv.ParseInt(l.attrs["partition"], 10, 32)
	if err != nil {
		return -1
	}
	return int32(n)
}

// incarnation is one process that ran on an instance's folder: its part of the
// instance's log, and when it was SIGKILLed (zero if it stopped otherwise).
type incarnation struct {
	inst     string
	log      string
	from, to int64 // byte range of the log; to -1: to the end
	killedAt time.Time
}

// incarnations lists the processes that ran on the instance, in order.
func (in *instance) incarnations() []incarnation {
	var out []incarnation
	for i, c := range in.procs {
		inc := incarnation{inst: in.name, log: in.log, from: c.logFrom, to: -1, killedAt: c.killedAt}
		if i+1 < len(in.procs) {
			inc.to = in.procs[i+1].logFrom
		}
		out = append(out, inc)
	}
	return out
}

// lines returns the parsed lines of the incarnation's log.
func (inc incarnation) lines() []logLine {
	b, err := os.ReadFile(inc.log)
	if err != nil || inc.from > int64(len(b)) {
		return nil
	}
	if inc.to >= 0 && inc.to <= int64(len(b)) {
		b = b[:inc.to]
	}
	var out []logLine
	for _, raw := range bytes.Split(b[inc.from:], []byte("\n")) {
		if l, ok := parseLogLine(string(raw)); ok {
			out = append(out, l)
		}
	}
	return out
}

// run is one partition's run on one process: from "partition running" (ready
// to decide) to the start of its last committed transaction ("partition
// stopped" last_commit), or to the kill of the process (or its last line, if
// it died otherwise).
type run struct {
	inst, role string
	part       int32
	generation string
	from, to   time.Time
}

// runsOf reads the runs of one incarnation from its lines.
func runsOf(inc incarnation, lines []logLine) []run {
	var out []run
	type key struct {
		role string
		part int32
	}
	open := map[key]int{}
	var last time.Time
	for _, l := range lines {
		last = l.time
		p := l.partition()
		if p < 0 {
			continue
		}
		k := key{l.role(), p}
		switch l.msg {
		case "partition running":
			if i, ok := open[k]; ok { // never seen: running twice without a stop
				out[i].to = l.time
			}
			open[k] = len(out)
			out = append(out, run{inst: inc.inst, role: k.role, part: p, generation: l.attrs["generation"], from: l.time})
		case "partition stopped":
			i, ok := open[k]
			if !ok {
				continue
			}
			to, err := time.Parse(time.RFC3339Nano, l.attrs["last_commit"])
			if err != nil || to.Before(out[i].from) {
				to = out[i].from
			}
			out[i].to = to
			delete(open, k)
		}
	}
	end := last
	if !inc.killedAt.IsZero() {
		end = inc.killedAt
	}
	for _, i := range open {
		out[i].to = end
	}
	return out
}

// checkOwnership reports every pair of runs of one partition (of one role)
// that overlap, and every partition of roles that never ran (so that the
// check cannot pass on logs it failed to read). It returns how many runs and
// partitions it checked.
func checkOwnership(rep *report, runs []run, roles []string) (nRuns, nParts int) {
	type key struct {
		role string
		part int32
	}
	by := map[key][]run{}
	for _, r := range runs {
		k := key{r.role, r.part}
		by[k] = append(by[k], r)
	}
	for _, role := range roles {
		for p := range int32(partitions) {
			if len(by[key{role, p}]) == 0 {
				rep.violate(invOwnership, "%s partition %d never ran (no \"partition running\" in the logs)", role, p)
			}
		}
	}
	stamp := func(t time.Time) string { return t.Format("15:04:05.000") }
	for k, rs := range by {
		nParts++
		nRuns += len(rs)
		sort.Slice(rs, func(i, j int) bool { return rs[i].from.Before(rs[j].from) })
		until := rs[0] // the run that ends last among those before the current one
		for _, cur := range rs[1:] {
			if cur.from.Before(until.to) {
				rep.violate(invOwnership, "%s partition %d ran on two instances at once: %s (generation %s) %s..%s and %s (generation %s) from %s",
					k.role, k.part, until.inst, until.generation, stamp(until.from), stamp(until.to), cur.inst, cur.generation, stamp(cur.from))
			}
			if cur.to.After(until.to) {
				until = cur
			}
		}
	}
	return nRuns, nParts
}

// staleFigures count the first restore of each partition by a process started
// on a stale folder, by what it did.
type staleFigures struct {
	byOwnedAt  int // wiped: the store was away longer than half delete.retention.ms (rule 3)
	byLogStart int // wiped: the store was behind the log start (kfake moved it; Kafka never does)
	otherWipe  int // wiped for another reason (corruption, ...)
	fresh      int // no store for the partition (or an empty one): restored from the log start
	tail       int // tail replay of an old store: a violation
}

func (f staleFigures) add(g staleFigures) staleFigures {
	return staleFigures{f.byOwnedAt + g.byOwnedAt, f.byLogStart + g.byLogStart, f.otherWipe + g.otherWipe, f.fresh + g.fresh, f.tail + g.tail}
}

func (f staleFigures) stale() int { return f.byOwnedAt + f.byLogStart + f.otherWipe + f.tail }

// checkStaleRestores checks the restores of a process started on a folder
// that was away longer than half the changelogs' delete.retention.ms: the
// first restore of every partition that had a store there must rebuild it in
// full. A tail replay ("restoring changelog tail" from an offset > 0) is a
// violation: compaction may have removed tombstones written meanwhile.
func checkStaleRestores(rep *report, name string, lines []logLine) staleFigures {
	var f staleFigures
	seen := map[string]bool{}
	for _, l := range lines {
		var wipe bool
		switch {
		case l.msg == "wiping state and restoring in full", strings.HasPrefix(l.msg, "state store unreadable"),
			strings.HasPrefix(l.msg, "state store marked unreadable"):
			wipe = true
		case l.msg == "restoring changelog tail":
		default:
			continue
		}
		k := fmt.Sprintf("%s/%d", l.role(), l.partition())
		if seen[k] {
			continue
		}
		seen[k] = true
		reason := l.attrs["reason"]
		switch {
		case wipe && strings.Contains(reason, "(offset 0)"): // an empty store: nothing to keep
			f.fresh++
		case wipe && strings.Contains(reason, "last owned"):
			f.byOwnedAt++
		case wipe && strings.Contains(reason, "behind the changelog start"):
			f.byLogStart++
		case wipe:
			f.otherWipe++
		case l.attrs["from"] == "0":
			f.fresh++
		default:
			f.tail++
			rep.violate(invStale, "%s restarted on a stale folder replayed only the tail of %s partition %d (from offset %s): tombstones compacted away meanwhile are missed",
				name, l.role(), l.partition(), l.attrs["from"])
		}
	}
	return f
}
