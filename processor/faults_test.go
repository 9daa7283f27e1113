package processor_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Broker faults injected with kfake while a stream is processed: failed
// produces, fetches, offset commits and transaction ends are retried, or the
// transaction is aborted and redone, never half-applied. Every decision still
// matches the reference model, exactly once.
func TestBrokerFaultsNeverHalfApply(t *testing.T) {
	h := newHarness(t, 4)
	fake := h.c.RequireFake(t) // fault injection needs the in-process kfake broker
	in := h.start("")
	h.waitReady(in)
	w := genWorkload(4, 25, 2400)
	h.sendConcurrently(w.sets, 1, 0)
	h.waitDecided(30*time.Second, idsOf(w.sets)...)

	faults := []kfake.Fault{
		{Keys: []kmsg.Key{kmsg.Produce}, Topic: h.names.Results, Err: kerr.NotLeaderForPartition, Count: 3},
		{Keys: []kmsg.Key{kmsg.Produce}, Topic: h.names.Changelog, Err: kerr.UnknownServerError, Count: 2},
		{Keys: []kmsg.Key{kmsg.Fetch}, Topic: h.names.Commands, Err: kerr.NotLeaderForPartition, Count: 3},
		// No AddOffsetsToTxn fault: with KIP-890 part 2 the client lets
		// TxnOffsetCommit add the group to the transaction implicitly.
		{Keys: []kmsg.Key{kmsg.TxnOffsetCommit}, Err: kerr.CoordinatorLoadInProgress, Count: 2},
		{Keys: []kmsg.Key{kmsg.EndTxn}, Err: kerr.CoordinatorNotAvailable, Count: 2, TopLevel: true},
		{Keys: []kmsg.Key{kmsg.EndTxn}, Err: kerr.UnknownServerError, Count: 1, TopLevel: true},
	}
	chunk := len(w.cmds) / len(faults)
	var handles []*kfake.FaultHandle
	for i, f := range faults {
		handles = append(handles, fake.Fault(f))
		part := w.cmds[i*chunk : min((i+1)*chunk, len(w.cmds))]
		if i == len(faults)-1 {
			part = w.cmds[i*chunk:]
		}
		h.sendConcurrently(part, 2, 10)
		h.waitDecided(60*time.Second, idsOf(part)...)
	}
	h.sendConcurrently(w.dupes, 1, 0)
	h.waitDecided(60*time.Second, w.ids()...)
	h.read(30*time.Second, func() bool { return h.duplicates() >= len(w.dupes) })
	for i, hd := range handles {
		assert.Positive(t, hd.Hits(), "fault %d (%v) was injected", i, faults[i].Keys)
		hd.Remove()
	}
	h.checkAgainstModel(w)
}
