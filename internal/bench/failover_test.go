package bench

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFailoverPhase is the smoke run of the failover measurement: a small
// changelog, three processor processes, one SIGKILL per standby setting the
// binary supports (one, without standby, until --standby-replicas exists) and
// a rolling restart. `make bench` runs it with 1M holds and the binary's
// default session timeout.
func TestFailoverPhase(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds two binaries and runs five processes (make test runs it)")
	}
	_, err := exec.LookPath("go")
	require.NoError(t, err, "the failover measurement builds the reservations binary with the go command")
	cfg, err := Preset(ModeTiny)
	require.NoError(t, err)
	cfg.Partitions = 6
	cfg.FailoverHolds = 3000
	cfg.FailoverSessionTimeout = 6 * time.Second
	cfg.FailoverRate = 100
	cfg, err = cfg.withDefaults()
	require.NoError(t, err)
	r := &run{cfg: cfg, out: logWriter{t}, rep: newReport(cfg)}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	require.NoError(t, r.failoverPhase(ctx))

	fo := r.rep.Failover
	require.NotNil(t, fo)
	require.Len(t, fo.Kills, 2, "without and with a standby replica (measured or not)")
	k := fo.Kills[0]
	assert.Empty(t, k.NotMeasured)
	assert.NotEmpty(t, k.Partitions)
	// Nobody leaves the group on SIGKILL: detection is the session timeout.
	assert.GreaterOrEqual(t, k.DetectionSeconds, 5.0)
	assert.Less(t, k.DetectionSeconds, 20.0)
	assert.Positive(t, k.TakeoverSeconds)
	assert.InDelta(t, k.FailoverSeconds, k.DetectionSeconds+k.TakeoverSeconds, 1e-9)
	assert.GreaterOrEqual(t, k.ReadySeconds, k.DetectionSeconds)
	if s := fo.Kills[1]; s.NotMeasured == "" {
		assert.Positive(t, s.FailoverSeconds)
	} else {
		assert.Contains(t, s.NotMeasured, "--standby-replicas")
	}
	rl := fo.Rolling
	require.NotNil(t, rl)
	assert.Len(t, rl.RestartSeconds, failoverProcessors)
	assert.Zero(t, rl.PartitionMoves, "static members restarted within the session timeout keep their partitions")
	assert.GreaterOrEqual(t, rl.PartitionStarts, int(cfg.Partitions), "every partition started again on its restarted owner")
	assert.Positive(t, rl.Step.Completed)
	assert.Positive(t, rl.Step.P99)
	assert.NoError(t, fo.Check.verdict())

	r.rep.finish()
	h := r.rep.Headline
	for _, key := range []string{"failover_seconds_without_standby", "failover_detection_seconds_without_standby",
		"failover_takeover_seconds_without_standby", "rolling_restart_p99_ms", "failover_holds"} {
		assert.Positive(t, h[key], key)
	}
	assert.Contains(t, h, "rolling_restart_partition_moves")
	assert.Zero(t, h["failover_violations"])
	if fo.Kills[1].NotMeasured != "" {
		assert.NotContains(t, h, "failover_seconds_with_standby")
		assert.Contains(t, fo.Notes, "failover_seconds_with_standby not measured: "+fo.Kills[1].NotMeasured)
	}
	md := r.rep.markdown()
	assert.Contains(t, md, "## Failover and rolling restarts")
	assert.Contains(t, md, "partitions moved")
}
