package processor

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// A long restore logs, every restoreLogEvery, how far it got with a
// percentage and the time left; its hooks see every position.
func TestRestoreTrackerLogsPercentAndETA(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var seen []int64
	tr := newRestoreTracker(log, 100, 1100, &restoreHooks{pos: func(next int64) { seen = append(seen, next) }})
	now := tr.started
	tr.now = func() time.Time { return now }

	now = now.Add(time.Second)
	tr.at(200, 90) // too soon to log
	assert.Empty(t, buf.String())
	now = now.Add(restoreLogEvery) // 6s for 250 of 1000
	tr.at(350, 240)
	line := buf.String()
	assert.Contains(t, line, "msg=restoring")
	assert.Contains(t, line, "percent=25")
	assert.Contains(t, line, "eta=18s", "750 left at 250 per 6s")
	assert.Contains(t, line, "offset=350 end=1100")
	tr.at(1100, 990) // the end is not logged: "partition restored" follows
	assert.Equal(t, 1, strings.Count(buf.String(), "\n"))
	assert.Equal(t, []int64{200, 350, 1100}, seen)

	var nilTracker *restoreTracker
	nilTracker.at(5, 5) // no hooks, no log
}

func TestETA(t *testing.T) {
	for _, tc := range []struct {
		elapsed     time.Duration
		done, total int64
		want        time.Duration
		known       bool
	}{
		{10 * time.Second, 0, 100, 0, false},
		{10 * time.Second, 25, 100, 30 * time.Second, true},
		{10 * time.Second, 100, 100, 0, true},
		{0, 0, 0, 0, true},
	} {
		got, known := eta(tc.elapsed, tc.done, tc.total)
		assert.Equal(t, tc.known, known, "%+v", tc)
		assert.Equal(t, tc.want, got, "%+v", tc)
	}
}
