package processor

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/reservations/reservations/schemas"
)

// The sweep's clock: nothing until the partition consumed a record or waited
// streamGrace; then the stream time moved on by the processing time since the
// last records were consumed, never past now.
func TestStreamClock(t *testing.T) {
	const t0 = schemas.Millis(1_000_000_000)
	at := func(ms schemas.Millis) *kgo.Record { return &kgo.Record{Timestamp: ms.Time()} }
	for _, tc := range []struct {
		name    string
		batches [][]*kgo.Record // observed at t0, t0+1s, ...
		now     schemas.Millis
		want    schemas.Millis
	}{
		{"never started", nil, t0, 0},
		{"nothing consumed, within the grace", [][]*kgo.Record{nil}, t0 + streamGrace - 1, 0},
		{"nothing consumed, past the grace", [][]*kgo.Record{nil}, t0 + streamGrace, t0 + streamGrace},
		{"working through a backlog: the stream time", [][]*kgo.Record{{at(t0 - 95_000), at(t0 - 90_000)}}, t0, t0 - 90_000},
		{"a batch later: one batch gap past it", [][]*kgo.Record{{at(t0 - 95_000)}, {at(t0 - 94_000)}}, t0 + 1_200, t0 - 94_000 + 200},
		{"caught up and idle: moves with the clock", [][]*kgo.Record{{at(t0 - 10)}}, t0 + 3_600_000, t0 + 3_600_000 - 10},
		{"a timestamp ahead of the clock is ignored", [][]*kgo.Record{{at(t0 - 5_000), at(t0 + 50_000)}}, t0 + 1_000, t0 - 4_000},
		{"an older record does not move it back", [][]*kgo.Record{{at(t0 - 5_000)}, {at(t0 - 60_000)}}, t0 + 1_000, t0 - 5_000},
		{"records without timestamps: as if none", [][]*kgo.Record{{{}}}, t0 + streamGrace, t0 + streamGrace},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s streamClock
			for i, b := range tc.batches {
				s.observe(b, t0+schemas.Millis(i*1000))
			}
			assert.Equal(t, tc.want, s.clock(tc.now, 1_000_000_000))
		})
	}
	// Producers whose clocks lag hold the sweep back by at most holdback.
	var s streamClock
	s.observe([]*kgo.Record{at(t0 - 7_200_000)}, t0)
	assert.Equal(t, t0-7_200_000, s.clock(t0, 1_000_000_000))
	assert.Equal(t, t0-3_600_000, s.clock(t0, 3_600_000), "never more than holdback behind now")
}
