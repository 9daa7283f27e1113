package processor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/schemas"
	"github.com/reservations/reservations/topics"
)

// Membership tests: what an operator does to a group (scale out in a quiet
// period, two changes in a row, a frozen pod) must never let a partition run
// on two instances, nor let a zombie commit.

// teeHandler sends every log record to two handlers.
type teeHandler struct{ a, b slog.Handler }

func (t teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return t.a.Enabled(ctx, l) || t.b.Enabled(ctx, l)
}

func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	if t.a.Enabled(ctx, r.Level) {
		_ = t.a.Handle(ctx, r.Clone())
	}
	if t.b.Enabled(ctx, r.Level) {
		return t.b.Handle(ctx, r)
	}
	return nil
}

func (t teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{t.a.WithAttrs(as), t.b.WithAttrs(as)}
}

func (t teeHandler) WithGroup(n string) slog.Handler {
	return teeHandler{t.a.WithGroup(n), t.b.WithGroup(n)}
}

// skuPerPartition returns one SKU for each partition of the commands topic.
func (h *harness) skuPerPartition(prefix string) []string {
	out := make([]string, h.parts)
	found := 0
	for i := 0; found < int(h.parts); i++ {
		sku := fmt.Sprintf("%s-%d", prefix, i)
		p := topics.Partition([]byte(sku), h.parts)
		if out[p] == "" {
			out[p] = sku
			found++
		}
	}
	return out
}

func reserveTTL(id, sku, res string, qty, ttl int64) schemas.Command {
	c := reserve(id, sku, res, qty)
	c.TTLSeconds = &ttl
	return c
}

// expiredNotices counts the expired notices read per reservation id (mu held
// or quiescent).
func (h *harness) expiredNotices() map[string]int {
	out := map[string]int{}
	for _, r := range h.results {
		if r.Type == schemas.TypeExpired && r.Reservation != nil {
			out[r.Reservation.ReservationID]++
		}
	}
	return out
}

// startLogged starts a child whose log is kept as JSON lines (for the
// ownership check).
func (h *harness) startLogged(dir, logFile string) *child {
	h.t.Helper()
	return h.startChildConf(childConfig{StateDir: dir, LogFile: logFile})
}

// Scale out twice in a row during a quiet period (no command traffic, holds
// due later): every revoked partition stops on its old owner, so every hold
// expires exactly once and the changelog keeps reserved == sum(active).
//
// Failed on the old code: timer-only transactions ended on the raw client, so
// the GroupTransactSession never reset its revoked flag and swallowed the
// second revoke; the partition kept running on the first instance, and two
// instances expired the same hold ("expired" twice).
func TestQuietScaleOutTwiceStopsRevokedPartitions(t *testing.T) {
	h := newHarness(t, 6)
	logs := t.TempDir()
	skus := h.skuPerPartition("Q")
	a := h.startLogged(t.TempDir(), filepath.Join(logs, "a.log"))
	var sets, holds []schemas.Command
	for i, sku := range skus {
		sets = append(sets, stockSet(fmt.Sprintf("set-%d", i), sku, 10))
		holds = append(holds, reserveTTL(fmt.Sprintf("hold-%d", i), sku, fmt.Sprintf("h-%d", i), 2, 25))
	}
	h.send(sets...)
	h.send(holds...)
	h.waitDecided(60*time.Second, append(idsOf(sets), idsOf(holds)...)...)
	for _, c := range holds {
		require.Equal(t, schemas.OutcomeAccepted, h.decisive(c.CommandID).Outcome)
	}
	decidedAt := time.Now()

	// Quiet from here on: B joins, then C.
	b := h.startLogged(t.TempDir(), filepath.Join(logs, "b.log"))
	require.True(t, b.waitAssigned(30*time.Second), "B got partitions")
	c := h.startLogged(t.TempDir(), filepath.Join(logs, "c.log"))
	require.True(t, c.waitAssigned(30*time.Second), "C got partitions")
	require.Less(t, time.Since(decidedAt), 20*time.Second, "both joins happened before the holds were due")

	h.read(60*time.Second, func() bool { return len(h.expiredNotices()) == len(holds) })
	time.Sleep(3 * time.Second) // a second owner would expire them again now
	a.stop(t)
	b.stop(t)
	c.stop(t)
	h.drain()
	for id, n := range h.expiredNotices() {
		assert.Equal(t, 1, n, "expired notices of hold %s", id)
	}
	assertInvariants(t, h.changelogState())
	checkOwnership(t, filepath.Join(logs, "a.log"), filepath.Join(logs, "b.log"), filepath.Join(logs, "c.log"))
}

// A frozen pod (SIGSTOP past its session timeout) with a hold due: the new
// owner expires the hold and accepts a new one; when the zombie wakes up its
// timer fires too, and that transaction must not commit.
//
// Failed on the old code: timer-only transactions sent no TxnOffsetCommit, so
// the broker never checked the zombie's generation; its second "expired" for
// h1 and its stock record (reserved 0) committed after the new owner's h2, so
// the changelog ended with reserved != sum(active): an oversell.
func TestQuietZombieTimerIsFenced(t *testing.T) {
	h := newHarness(t, 4)
	logs := t.TempDir()
	a := h.startLogged(t.TempDir(), filepath.Join(logs, "a.log"))
	h.send(stockSet("set", "Z", 4), reserveTTL("r1", "Z", "h1", 3, 15))
	h.waitDecided(60*time.Second, "set", "r1")
	require.Equal(t, schemas.OutcomeAccepted, h.decisive("r1").Outcome)

	require.NoError(t, a.cmd.Process.Signal(syscall.SIGSTOP))
	b := h.startLogged(t.TempDir(), filepath.Join(logs, "b.log"))
	h.read(90*time.Second, func() bool { return h.expiredNotices()["h1"] > 0 })
	h.send(reserveTTL("r2", "Z", "h2", 2, 600))
	h.waitDecided(30*time.Second, "r2")
	require.Equal(t, schemas.OutcomeAccepted, h.decisive("r2").Outcome)

	require.NoError(t, a.cmd.Process.Signal(syscall.SIGCONT))
	time.Sleep(5 * time.Second) // the zombie's due timer fires at once
	a.stop(t)
	b.stop(t)
	h.drain()
	assert.Equal(t, 1, h.expiredNotices()["h1"], "expired notices of h1")
	state := h.changelogState()
	assertInvariants(t, state)
	st := state[schemas.StockKey("Z")].Stock
	require.NotNil(t, st)
	assert.Equal(t, int64(2), st.Reserved, "Z: only h2 holds stock")
	checkOwnership(t, filepath.Join(logs, "a.log"), filepath.Join(logs, "b.log"))
}

// ownership is one partition's run on one instance, from the processor's
// "partition running" and "partition stopped" log lines: from the moment it
// was ready to decide to its last committed transaction.
type ownership struct {
	file       string
	instance   string
	partition  int32
	generation int32
	from, to   time.Time
}

// ownerships reads the runs of every partition from child logs (JSON lines).
// A run without a stop line (a killed process) lasts to the file's last line.
func ownerships(t testing.TB, files ...string) []ownership {
	t.Helper()
	var out []ownership
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		open := map[int32]int{} // partition -> index in out
		var last time.Time
		for _, line := range bytes.Split(b, []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			var e struct {
				Time       time.Time `json:"time"`
				Msg        string    `json:"msg"`
				Partition  *int32    `json:"partition"`
				Instance   string    `json:"instance"`
				Generation int32     `json:"generation"`
				LastCommit time.Time `json:"last_commit"`
			}
			require.NoError(t, json.Unmarshal(line, &e), "log line %s", line)
			last = e.Time
			if e.Partition == nil {
				continue
			}
			switch e.Msg {
			case "partition running":
				open[*e.Partition] = len(out)
				out = append(out, ownership{file: filepath.Base(f), instance: e.Instance, partition: *e.Partition,
					generation: e.Generation, from: e.Time})
			case "partition stopped":
				if i, ok := open[*e.Partition]; ok {
					out[i].to = e.LastCommit
					if out[i].to.Before(out[i].from) {
						out[i].to = out[i].from
					}
					delete(open, *e.Partition)
				}
			}
		}
		for _, i := range open {
			out[i].to = last
		}
	}
	return out
}

// checkOwnership asserts that no partition ran on two instances at once: the
// runs of one partition (ready to decide .. last committed transaction) never
// overlap. Every partition must have run somewhere (so the check can fail).
func checkOwnership(t testing.TB, files ...string) {
	t.Helper()
	runs := ownerships(t, files...)
	byPart := map[int32][]ownership{}
	for _, r := range runs {
		byPart[r.partition] = append(byPart[r.partition], r)
	}
	require.NotEmpty(t, byPart, "no partition start in the logs %v", files)
	for p, rs := range byPart {
		sort.Slice(rs, func(i, j int) bool { return rs[i].from.Before(rs[j].from) })
		for i := 1; i < len(rs); i++ {
			prev, cur := rs[i-1], rs[i]
			assert.False(t, cur.from.Before(prev.to),
				"partition %d ran on two instances at once: %s (%s gen %d) %s..%s and %s (%s gen %d) from %s",
				p, prev.file, prev.instance, prev.generation, prev.from.Format(time.StampMilli), prev.to.Format(time.StampMilli),
				cur.file, cur.instance, cur.generation, cur.from.Format(time.StampMilli))
		}
	}
}
