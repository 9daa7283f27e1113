package soak

import (
	"context"
	"crypto/rand"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/reservations/reservations/internal/pgtest"
	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/topics"
)

// corruptMarker is what a processor logs when it finds a store unreadable.
const corruptMarker = `msg="state store unreadable`

// chaos runs the fault schedule of the soak in the test goroutine: SIGKILLs of
// random processor instances spread over the load, each restarted after
// 0.5-3 s (the middle one on a corrupted Badger directory), and one Postgres
// restart.
type chaos struct {
	t      *testing.T
	sz     size
	rng    *mrand.Rand
	insts  []*instance
	adm    *kadm.Client
	group  string
	names  topics.Names
	pg     *pgtest.Server
	events []event

	// What happened, for the report.
	kills     []kill
	pgDown    time.Duration
	corrupted corruption
}

type event struct {
	at time.Time
	do func()
}

// kill is one SIGKILL: when, of which instance, and the partitions it owned
// (all of them when unknown: the group was rebalancing).
type kill struct {
	at      time.Time
	inst    string
	parts   []int32
	unknown bool
	corrupt bool
}

// corruption is the restart on a corrupted store: the instance and where its
// log stood at the restart.
type corruption struct {
	name, log string
	from      int64
}

func newChaos(t *testing.T, sz size, insts []*instance, adm *kadm.Client, group string, names topics.Names, pg *pgtest.Server) *chaos {
	return &chaos{t: t, sz: sz, rng: mrand.New(mrand.NewPCG(sz.Seed, 3)), insts: insts,
		adm: adm, group: group, names: names, pg: pg}
}

func (c *chaos) after(d time.Duration, do func()) {
	c.events = append(c.events, event{at: time.Now().Add(d), do: do})
}

func (c *chaos) jitter(d time.Duration) time.Duration {
	return time.Duration(c.rng.Int64N(int64(d)))
}

// run schedules the faults over the load that began at start and carries
// them out, returning when the last one (a restart) is done.
func (c *chaos) run(start time.Time) {
	every := c.sz.Load / time.Duration(c.sz.Kills+1)
	for i := range c.sz.Kills {
		at := start.Add(every*time.Duration(i+1) - every/4 + c.jitter(every/2))
		c.events = append(c.events, event{at: at, do: func() { c.kill(i == c.sz.Kills/2) }})
	}
	c.events = append(c.events, event{at: start.Add(c.sz.Load * 45 / 100), do: c.restartPostgres})
	for len(c.events) > 0 {
		sort.Slice(c.events, func(i, j int) bool { return c.events[i].at.Before(c.events[j].at) })
		e := c.events[0]
		c.events = c.events[1:]
		time.Sleep(time.Until(e.at)) // the schedule, not a wait for a condition
		e.do()
	}
}

// kill SIGKILLs a random running instance and schedules its restart.
func (c *chaos) kill(corrupt bool) {
	var cand []*instance
	for _, in := range c.insts {
		if in.proc.running() && in.proc.joined() && !c.protected(in) {
			cand = append(cand, in)
		}
	}
	if len(cand) == 0 {
		c.after(time.Second, func() { c.kill(corrupt) })
		return
	}
	in := cand[c.rng.IntN(len(cand))]
	k := kill{inst: in.name, parts: c.owned(in.name), corrupt: corrupt}
	if len(k.parts) == 0 { // mid-rebalance: recovery is measured on every partition
		k.unknown = true
		for p := range int32(partitions) {
			k.parts = append(k.parts, p)
		}
	}
	in.proc.kill()
	k.at = time.Now()
	c.kills = append(c.kills, k)
	c.after(500*time.Millisecond+c.jitter(2500*time.Millisecond), func() {
		if corrupt {
			c.corrupt(in)
		}
		in.proc = in.start()
	})
}

// protected: an instance restarted on a corrupted store is not killed again
// before it reported the corruption (or 30 s passed).
func (c *chaos) protected(in *instance) bool {
	return c.corrupted.name == in.name && time.Since(in.protectUntil) < 0 &&
		countInLog(in.log, c.corrupted.from, corruptMarker) == 0
}

// corrupt overwrites every file of the instance's partition stores with
// random bytes, and puts a garbage MANIFEST in the folder of every partition
// it has no store for, so that whatever it is assigned is unreadable.
func (c *chaos) corrupt(in *instance) {
	for p := range int32(partitions) {
		dir := processor.StateDir(in.dir, c.names.Changelog, p)
		require.NoError(c.t, os.MkdirAll(dir, 0o755))
		entries, err := os.ReadDir(dir)
		require.NoError(c.t, err)
		files := []string{"MANIFEST"}
		for _, e := range entries {
			if !e.IsDir() {
				files = append(files, e.Name())
			}
		}
		for _, f := range files {
			junk := make([]byte, 512)
			_, _ = rand.Read(junk)
			require.NoError(c.t, os.WriteFile(filepath.Join(dir, f), junk, 0o644))
		}
	}
	c.corrupted = corruption{name: in.name, log: in.log, from: in.proc.logSize()}
	in.protectUntil = time.Now().Add(30 * time.Second)
}

// restartPostgres stops the sink's Postgres and starts it again 1.5-3 s later.
func (c *chaos) restartPostgres() {
	c.pg.Stop(c.t)
	down := time.Now()
	c.after(1500*time.Millisecond+c.jitter(1500*time.Millisecond), func() {
		c.pg.Start(c.t)
		c.pgDown = time.Since(down)
	})
}

// owned returns the partitions of the commands topic the group assigned to
// the named instance (its member's client id ends in "@<name>:1").
func (c *chaos) owned(name string) []int32 {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	groups, err := c.adm.DescribeGroups(ctx, c.group)
	if err != nil {
		return nil
	}
	var parts []int32
	for _, m := range groups[c.group].Members {
		if !strings.HasSuffix(m.ClientID, "@"+name+":1") {
			continue
		}
		if a, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range a.Topics {
				if t.Topic == c.names.Commands {
					parts = append(parts, t.Partitions...)
				}
			}
		}
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	return parts
}
