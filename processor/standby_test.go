package processor_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/schemas"
)

// gauges returns a gauge's value per partition label (no entry: no series).
func (in *instance) gauges(name string) map[string]float64 {
	mfs, _ := in.reg.Gather()
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "partition" {
					out[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return out
}

// A standby copy gets warm (its lag reaches 0), answers no query, and when
// the owner dies (SIGKILL: no leave, no clean close) the standby's instance
// takes the partition over replaying only the changelog tail the copy had
// not read, not the whole partition.
func TestStandbyTakesOverWithTheTailOnly(t *testing.T) {
	h := newHarness(t, 2)
	withStandby := func(c *processor.Config) { c.StandbyReplicas = 1 }
	skus := h.skuPerPartition("S")
	a := h.startChildConf(childConfig{StateDir: t.TempDir(), StandbyReplicas: 1})
	require.True(t, a.waitAssigned(30*time.Second), "A joined")

	// Enough history that a full restore differs clearly from a tail.
	var cmds []schemas.Command
	for i, sku := range skus {
		cmds = append(cmds, stockSet(fmt.Sprintf("set-%d", i), sku, 1_000_000))
	}
	for i := range 600 {
		sku := skus[i%len(skus)]
		cmds = append(cmds, reserve(fmt.Sprintf("r-%d", i), sku, fmt.Sprintf("h-%d", i), 1))
	}
	h.send(cmds...)
	h.waitDecided(60*time.Second, idsOf(cmds)...)

	b := h.start("", withStandby)
	// B owns one partition and keeps a warm copy of A's.
	var standbyPart int32 = -1
	require.Eventually(t, func() bool {
		st := b.p.Status()
		lag := b.gauges("reservations_standby_lag_records")
		if len(st) != 1 || len(lag) != 1 || !b.p.Ready() {
			return false
		}
		for l, v := range lag {
			var n int32
			fmt.Sscan(l, &n)
			if _, owned := st[n]; owned || v != 0 {
				return false
			}
			standbyPart = n
		}
		return true
	}, 60*time.Second, 50*time.Millisecond, "B owns one partition and its standby of the other has lag 0")
	assert.Equal(t, 1.0, b.gaugeSum("reservations_standby_partitions"))

	// The standby never answers as the owner.
	_, err := b.p.Stock(context.Background(), skus[standbyPart])
	var notOwner *processor.NotOwnerError
	require.True(t, errors.As(err, &notOwner), "a query of the standby's partition: %v", err)
	assert.Equal(t, standbyPart, notOwner.Partition)

	// More traffic on A's partition: the copy follows.
	caughtUp := b.counter("reservations_standby_records_total")
	assert.Positive(t, caughtUp, "the standby's catch-up counts as standby records")
	var more []schemas.Command
	for i := range 50 {
		more = append(more, reserve(fmt.Sprintf("m-%d", i), skus[standbyPart], fmt.Sprintf("m-%d", i), 1))
	}
	h.send(more...)
	h.waitDecided(30*time.Second, idsOf(more)...)
	require.Eventually(t, func() bool {
		return b.counter("reservations_standby_records_total")-caughtUp >= float64(len(more)) &&
			b.gauges("reservations_standby_lag_records")[fmt.Sprint(standbyPart)] == 0
	}, 30*time.Second, 50*time.Millisecond, "the standby tailed the new records and caught up again")
	applied := b.counter("reservations_standby_records_total") - caughtUp

	adm := kadm.NewClient(h.c.Client(t))
	ends, err := adm.ListEndOffsets(context.Background(), h.names.Changelog)
	require.NoError(t, err)
	end, ok := ends.Lookup(h.names.Changelog, standbyPart)
	require.True(t, ok)
	restoredBefore := b.counter("reservations_restored_records_total")
	wipesBefore := b.counter("reservations_state_wipes_total")

	a.kill()
	h.waitReady(b) // B owns both partitions once the group expired A
	restored := b.counter("reservations_restored_records_total") - restoredBefore
	t.Logf("changelog partition %d: end %d; the takeover restored %v records; the standby had applied %v while tailing",
		standbyPart, end.Offset, restored, applied)
	assert.Less(t, restored*10, float64(end.Offset), "only the tail was restored")
	assert.Equal(t, wipesBefore, b.counter("reservations_state_wipes_total"), "no full rebuild")
	assert.Equal(t, 0.0, b.gaugeSum("reservations_standby_partitions"), "no standby left: B owns everything")

	// Exactly once across the failover: re-sent commands are duplicates, new
	// ones are decided on the state the standby kept.
	h.send(more[:5]...)
	last := reserve("after", skus[standbyPart], "after", 1)
	h.send(last)
	h.waitDecided(30*time.Second, "after")
	h.read(30*time.Second, func() bool { return h.duplicates() >= 5 })
	require.Equal(t, schemas.OutcomeAccepted, h.decisive("after").Outcome)
	holds := int64(0)
	for _, c := range append(append(cmds, more...), last) {
		if c.SKU == skus[standbyPart] && c.Type == schemas.TypeReserve {
			holds++
		}
	}
	var st schemas.StockEntity
	assert.Eventually(t, func() bool { // the result commits before the store does
		st, err = b.p.Stock(context.Background(), skus[standbyPart])
		return err == nil && st.Reserved == holds
	}, 10*time.Second, 20*time.Millisecond, "every hold of the partition counted once: reserved %d (%v), want %d", st.Reserved, err, holds)
	b.stop(t)
	h.drain()
	assertInvariants(t, h.changelogState())
}

// Three instances, one partition each, one standby per partition: when A is
// killed, the group gives its partition to the instance with the warm copy
// (the sticky plan alone may pick the other one, which would restore it in
// full), so the survivors restore only a tail between them.
func TestFailoverGoesToTheWarmCopy(t *testing.T) {
	h := newHarness(t, 3)
	withStandby := func(c *processor.Config) { c.StandbyReplicas = 1 }
	skus := h.skuPerPartition("F")
	a := h.startChildConf(childConfig{StateDir: t.TempDir(), StandbyReplicas: 1})
	require.True(t, a.waitAssigned(30*time.Second), "A joined")
	var cmds []schemas.Command
	for i, sku := range skus {
		cmds = append(cmds, stockSet(fmt.Sprintf("set-%d", i), sku, 1_000_000))
	}
	for i := range 600 {
		cmds = append(cmds, reserve(fmt.Sprintf("r-%d", i), skus[i%len(skus)], fmt.Sprintf("h-%d", i), 1))
	}
	h.send(cmds...)
	h.waitDecided(60*time.Second, idsOf(cmds)...)

	b := h.start("", withStandby)
	c := h.start("", withStandby)
	// Each owns one partition; A's partition has a caught-up standby on B or C.
	var aPart int32 = -1
	var warm *instance
	require.Eventually(t, func() bool {
		sb, sc := b.p.Status(), c.p.Status()
		if len(sb) != 1 || len(sc) != 1 || !b.p.Ready() || !c.p.Ready() {
			return false
		}
		for n := range int32(3) {
			_, inB := sb[n]
			_, inC := sc[n]
			if !inB && !inC {
				aPart = n
			}
		}
		warm = nil
		for _, in := range []*instance{b, c} {
			if v, ok := in.gauges("reservations_standby_lag_records")[fmt.Sprint(aPart)]; ok && v == 0 {
				warm = in
			}
		}
		return aPart >= 0 && warm != nil
	}, 60*time.Second, 50*time.Millisecond, "B and C own one partition each, and A's has a warm standby")
	t.Logf("A owns partition %d; its standby is on %s", aPart, map[bool]string{true: "B", false: "C"}[warm == b])

	adm := kadm.NewClient(h.c.Client(t))
	ends, err := adm.ListEndOffsets(context.Background(), h.names.Changelog)
	require.NoError(t, err)
	end, ok := ends.Lookup(h.names.Changelog, aPart)
	require.True(t, ok)
	before := b.counter("reservations_restored_records_total") + c.counter("reservations_restored_records_total")

	a.kill()
	h.waitReady(b, c)
	restored := b.counter("reservations_restored_records_total") + c.counter("reservations_restored_records_total") - before
	_, took := warm.p.Status()[aPart]
	assert.True(t, took, "the instance with the warm copy took partition %d over", aPart)
	assert.Less(t, restored*10, float64(end.Offset), "the takeover restored %v records of %d: only a tail", restored, end.Offset)

	last := reserve("after", skus[aPart], "after", 1)
	h.send(last)
	h.waitDecided(30*time.Second, "after")
	require.Equal(t, schemas.OutcomeAccepted, h.decisive("after").Outcome)
	b.stop(t)
	c.stop(t)
	h.drain()
	assertInvariants(t, h.changelogState())
}
